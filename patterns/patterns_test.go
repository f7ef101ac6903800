package patterns_test

import (
	"strings"
	"testing"

	_ "github.com/qcc-dev/qcc/internal/update"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	. "github.com/qcc-dev/qcc/patterns"
)

func parse(t *testing.T, src string) *ir.Graph {
	t.Helper()
	m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13]>` + "\n" + src)
	if err != nil {
		t.Fatal(err)
	}
	return m.Graph
}

// centered is x - mean(x): a DAG pattern (x used twice).
func centered() Pattern {
	x := Var("x")
	return Op("Sub", x, Op("ReduceMean", x).As("mean")).As("d")
}

func TestDAGMatch(t *testing.T) {
	g := parse(t, `g (float[2,4] x, float[2,4] z) => (float[2,4] d, float[2,4] e) {
  m = ReduceMean <axes = [-1]> (x)
  d = Sub (x, m)
  e = Sub (z, m)
}`)
	m := MatchValue(centered(), g.Value("d"))
	if m == nil || m.V("x") != g.Value("x") || m.N("mean") == nil || len(m.All) != 2 {
		t.Fatalf("d = x - mean(x) did not match: %+v", m)
	}
	if MatchValue(centered(), g.Value("e")) != nil {
		t.Fatal("e = z - mean(x) matched although the two uses differ")
	}
}

func TestCommutativeAndOr(t *testing.T) {
	g := parse(t, `g (float[4] x) => (float[4] y, float[4] w) <float c = {2}> {
  y = Mul (c, x)
  w = Div (x, c)
}`)
	two := ConstNear(2, 1e-6)
	p := Or(Op("Mul", Var("x"), two), Op("Div", Var("x"), two))
	if m := MatchValue(p, g.Value("y")); m == nil || m.V("x") != g.Value("x") {
		t.Fatal("Mul(c, x) should match Mul(x, c) by commutativity")
	}
	if m := MatchValue(p, g.Value("w")); m == nil {
		t.Fatal("Or did not try its second alternative")
	}
	if MatchValue(Op("Div", two, Var("x")), g.Value("w")) != nil {
		t.Fatal("Div is not commutative")
	}
	if MatchValue(Op("Mul", Var("x"), ConstNear(3, 1e-6)), g.Value("y")) != nil {
		t.Fatal("ConstNear(3) matched 2")
	}
}

func TestOptionalAndBacktracking(t *testing.T) {
	g := parse(t, `g (float[4] x) => (float[4] y, float[4] y2) {
  c = Cast <to = 1> (x)
  y = Relu (c)
  y2 = Relu (x)
}`)
	p := Op("Relu", Optional(Op("Cast", Var("x"))))
	if m := MatchValue(p, g.Value("y")); m == nil || m.V("x") != g.Value("x") {
		t.Fatal("Optional did not match the Cast")
	}
	if m := MatchValue(p, g.Value("y2")); m == nil || m.V("x") != g.Value("x") {
		t.Fatal("Optional did not match without the Cast")
	}
}

func TestApplyRefusalAndEscape(t *testing.T) {
	g := parse(t, `g (float[2,4] x, float[2,4] a) => (float[2,4] d, float[2,4] d2, float[2] k) {
  m = ReduceMean <axes = [-1], keepdims = 1> (x)
  d = Sub (x, m)
  m2 = ReduceMean <axes = [-1], keepdims = 1> (a)
  d2 = Sub (a, m2)
  k = Squeeze (m2)
}`)
	rule := &Rule{
		Name:    "center/sub-mean",
		Pattern: centered(),
		Check: func(m *Match) string {
			if ax, _ := m.N("mean").AttrInts("axes"); len(ax) != 1 || ax[0] != -1 {
				return "mean is not over the last axis"
			}
			return ""
		},
		Rewrite: func(rw *Rewriter, m *Match) error {
			n := rw.Node("Center", "qcc.test", []*ir.Value{m.V("x")}, 1, "centered")
			rw.Replace(m.Root, n.Output(0))
			return nil
		},
	}
	res, err := Apply(g, []*Rule{rule}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied["center/sub-mean"] != 1 {
		t.Fatalf("applied %v, want once (the second match escapes)", res.Applied)
	}
	if len(res.Refusals) != 1 || !strings.Contains(res.Refusals[0].Reason, `"m2" is also used outside the block`) {
		t.Fatalf("refusals %v", res.Refusals)
	}
	if err := g.Verify(); err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for _, n := range g.Nodes() {
		ops[n.OpType]++
	}
	if ops["Center"] != 1 || ops["ReduceMean"] != 1 || ops["Sub"] != 1 {
		t.Fatalf("ops after rewrite: %v", ops)
	}
	// The graph output keeps its name.
	if out := g.Outputs[0]; out.Name != "d" {
		t.Fatalf("graph output renamed to %q", out.Name)
	}
}

func TestFind(t *testing.T) {
	g := parse(t, `g (float[2,4] x) => (float[2,4] d) {
  m = ReduceMean <axes = [-1]> (x)
  d = Sub (x, m)
}`)
	found, refs := Find(g, []*Rule{{Name: "c", Pattern: centered()}})
	if len(found) != 1 || len(refs) != 0 || g.NumNodes() != 2 {
		t.Fatalf("found %d, refusals %v, nodes %d", len(found), refs, g.NumNodes())
	}
}

// TestTraceThrough: the recogniser's nodes, names and plan join the match, which goes on
// at the inner value it returns; when the inner pattern fails, nothing stays bound.
func TestTraceThrough(t *testing.T) {
	g := parse(t, `g (float[4] x) => (float[4] y, float[4] w) {
  r = Relu (x)
  n = Neg (r)
  y = Abs (n)
  s = Sigmoid (x)
  u = Neg (s)
  w = Abs (u)
}`)
	negs := func(v *ir.Value) (*Traced, *ir.Value) {
		n, _ := v.Producer()
		if n == nil || n.OpType != "Neg" {
			return nil, nil
		}
		return &Traced{Nodes: []*ir.Node{n}, Values: map[string]*ir.Value{"negated": v}, Plan: "neg"}, n.Input(0)
	}
	p := Op("Abs", TraceThrough("neg", negs, Op("Relu", Var("x")).As("relu"))).As("abs")
	m := MatchValue(p, g.Value("y"))
	if m == nil || m.V("x") != g.Value("x") || m.V("negated") != g.Value("n") || m.Plan != "neg" || len(m.All) != 3 {
		t.Fatalf("Abs(Neg(Relu(x))) did not match through the Neg: %+v", m)
	}
	if m := MatchValue(p, g.Value("w")); m != nil {
		t.Fatalf("Abs(Neg(Sigmoid(x))) matched: %+v", m)
	}
}
