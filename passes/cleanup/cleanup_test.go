package cleanup

import (
	"context"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
)

func f32(dims []int64, v ...float32) *ir.Tensor { return ir.FloatTensor(dims, v) }

func model(g *ir.Graph) *ir.Model {
	return &ir.Model{IRVersion: 8, Opsets: []ir.OpsetID{{Domain: "", Version: 13}}, Graph: g}
}

func run(t *testing.T, p *pass.Pass, m *ir.Model) *pass.Stat {
	t.Helper()
	pl := &pass.Pipeline{Steps: []pass.Step{{Pass: p}}}
	r, err := pl.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true})
	if err != nil {
		t.Fatal(err)
	}
	return &r.Stats[len(r.Stats)-1]
}

func ops(g *ir.Graph) []string {
	var out []string
	for _, n := range g.Nodes() {
		out = append(out, n.OpType)
	}
	return out
}

func TestDCE(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(2)))
	g.AddInput("unused", ir.TensorOf(ir.Float, ir.D(2)))
	w, _ := g.AddInitializer("w", f32([]int64{2}, 1, 2))
	w2, _ := g.AddInitializer("w2", f32([]int64{2}, 3, 4))
	g.AddInitializer("w3", f32([]int64{2}, 5, 6))
	a := g.Add("Add", []*ir.Value{x, w}, 1, "a")
	b := g.Add("Mul", []*ir.Value{x, w2}, 1, "b")
	c := g.Add("Neg", []*ir.Value{b.Output(0)}, 1, "c")
	g.ValueInfo = append(g.ValueInfo, c.Output(0))
	g.Outputs = []*ir.Value{a.Output(0)}
	m := model(g)
	st := run(t, DCE, m)
	if got := ops(g); len(got) != 1 || got[0] != "Add" {
		t.Fatalf("nodes left: %v", got)
	}
	if st.Counts["dce: nodes removed"] != 2 || st.Counts["dce: initializers removed"] != 2 {
		t.Errorf("counts: %v", st.Counts)
	}
	if len(g.Inputs) != 2 {
		t.Errorf("graph inputs removed: %v", g.Inputs)
	}
	if len(g.Initializers) != 1 || g.Initializers[0] != w {
		t.Errorf("initializers: %v", g.Initializers)
	}
	if len(g.ValueInfo) != 0 {
		t.Errorf("stale value_info: %v", g.ValueInfo)
	}
	if g.Value("w2") != nil || g.Value("b") != nil {
		t.Error("dead values still defined")
	}
}

// A value used only inside a subgraph, or named directly as a subgraph output, is live.
func TestDCESubgraphUses(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(2)))
	cond, _ := g.AddInput("cond", ir.TensorOf(ir.Bool))
	t1 := g.Add("Neg", []*ir.Value{x}, 1, "t1").Output(0)
	t2 := g.Add("Abs", []*ir.Value{x}, 1, "t2").Output(0)
	g.Add("Sqrt", []*ir.Value{x}, 1, "dead")

	then := ir.NewGraph("then")
	r := then.Add("Relu", []*ir.Value{t1}, 1, "r").Output(0)
	then.Outputs = []*ir.Value{r}
	els := ir.NewGraph("else")
	els.Outputs = []*ir.Value{t2}

	out := g.NewValue("y", nil)
	ifn, err := g.AddNode(&ir.Node{OpType: "If", Attrs: []*ir.Attr{
		{Name: "then_branch", Type: ir.AttrGraph, Graph: then},
		{Name: "else_branch", Type: ir.AttrGraph, Graph: els},
	}}, []*ir.Value{cond}, []*ir.Value{out})
	if err != nil {
		t.Fatal(err)
	}
	then.Parent, then.Owner = g, ifn
	els.Parent, els.Owner = g, ifn
	then.Add("Exp", []*ir.Value{x}, 1, "deadinside")
	g.Outputs = []*ir.Value{out}
	m := model(g)
	st := run(t, DCE, m)
	if got := ops(g); len(got) != 3 || got[0] != "Neg" || got[1] != "Abs" || got[2] != "If" {
		t.Fatalf("nodes left: %v", got)
	}
	if got := ops(then); len(got) != 1 {
		t.Errorf("subgraph nodes left: %v", got)
	}
	if st.Counts["dce: nodes removed"] != 2 {
		t.Errorf("counts: %v", st.Counts)
	}
}

func TestCSE(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(2), ir.D(2)))
	w1, _ := g.AddInitializer("w1", f32([]int64{2}, 1, 2))
	w2, _ := g.AddInitializer("w2", f32([]int64{2}, 1, 2)) // same as w1
	w3, _ := g.AddInitializer("w3", f32([]int64{2}, 1, 3))
	def, _ := g.AddInitializer("def", f32([]int64{2}, 1, 2)) // also a graph input: overridable
	g.Inputs = append(g.Inputs, def)

	a1 := g.Add("Add", []*ir.Value{x, w1}, 1, "a1")
	a2 := g.Add("Add", []*ir.Value{x, w2}, 1, "a2") // same after w2 -> w1
	a3 := g.Add("Add", []*ir.Value{x, w3}, 1, "a3")
	a4 := g.Add("Add", []*ir.Value{x, def}, 1, "a4")
	p1 := g.Add("Transpose", []*ir.Value{x}, 1, "p1", ir.IntsAttr("perm", 1, 0))
	p2 := g.Add("Transpose", []*ir.Value{x}, 1, "p2", ir.IntsAttr("perm", 1, 0))
	p3 := g.Add("Transpose", []*ir.Value{x}, 1, "p3", ir.IntsAttr("perm", 0, 1))
	c1 := g.Add("Constant", nil, 1, "c1", ir.TensorAttr("value", ir.Int64Tensor([]int64{1}, []int64{7})))
	c2 := g.Add("Constant", nil, 1, "c2", ir.TensorAttr("value", ir.Int64Tensor([]int64{1}, []int64{7})))
	c3 := g.Add("Constant", nil, 1, "c3", ir.TensorAttr("value", ir.Int64Tensor([]int64{1}, []int64{8})))
	r1 := g.Add("RandomNormalLike", []*ir.Value{x}, 1, "r1")
	r2 := g.Add("RandomNormalLike", []*ir.Value{x}, 1, "r2")
	// Chains merge transitively: m1 and m2 read a1 and a2.
	m1 := g.Add("Mul", []*ir.Value{a1.Output(0), c1.Output(0)}, 1, "m1")
	m2 := g.Add("Mul", []*ir.Value{a2.Output(0), c2.Output(0)}, 1, "m2")
	var outs []*ir.Value
	for _, n := range []*ir.Node{a3, a4, p1, p2, p3, c3, r1, r2, m1} {
		s := g.Add("Sum", []*ir.Value{n.Output(0)}, 1, "s")
		outs = append(outs, s.Output(0))
	}
	g.Outputs = append(outs, m2.Output(0))
	m := model(g)
	st := run(t, CSE, m)

	if st.Counts["cse: initializers merged"] != 1 {
		t.Errorf("initializers merged: %v", st.Counts)
	}
	// a2, p2, c2, m2 merged.
	if st.Counts["cse: nodes merged"] != 4 {
		t.Errorf("nodes merged: %v", st.Counts)
	}
	if g.Value("w2") != nil || g.Value("w1") == nil || g.Value("def") == nil {
		t.Error("wrong initializers merged")
	}
	if a2.Graph() != nil || p2.Graph() != nil || c2.Graph() != nil || m2.Graph() != nil {
		t.Error("duplicates still in the graph")
	}
	if a4.Graph() == nil || p3.Graph() == nil || c3.Graph() == nil || r1.Graph() == nil || r2.Graph() == nil {
		t.Error("distinct nodes merged")
	}
	// m2's output was a graph output: m1's output now carries its name.
	last := g.Outputs[len(g.Outputs)-1]
	if last.Name != "m2" {
		t.Errorf("graph output renamed to %q", last.Name)
	}
	if p, _ := last.Producer(); p != m1 {
		t.Errorf("graph output produced by %v", p)
	}
}

// Duplicates that are both graph outputs stay apart (merging would add an Identity).
func TestCSEKeepsTwoOutputs(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(2)))
	a := g.Add("Neg", []*ir.Value{x}, 1, "a")
	b := g.Add("Neg", []*ir.Value{x}, 1, "b")
	g.Outputs = []*ir.Value{a.Output(0), b.Output(0)}
	m := model(g)
	run(t, CSE, m)
	if g.NumNodes() != 2 || g.Outputs[0].Name != "a" || g.Outputs[1].Name != "b" {
		t.Errorf("outputs changed: %v, %d nodes", g.Outputs, g.NumNodes())
	}
}

func TestFunctions(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(2)))
	a := g.Add("Neg", []*ir.Value{x}, 1, "a")
	b := g.Add("Neg", []*ir.Value{x}, 1, "b")
	s := g.Add("Add", []*ir.Value{a.Output(0), b.Output(0)}, 1, "s")
	g.Outputs = []*ir.Value{s.Output(0)}
	if n := Dedupe(g); n != 1 {
		t.Errorf("Dedupe = %d", n)
	}
	if n := RemoveDead(g); n != 0 {
		t.Errorf("RemoveDead = %d", n)
	}
	if err := model(g).Verify(); err != nil {
		t.Fatal(err)
	}
}
