package qdq

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	"github.com/qcc-dev/qcc/quant/calib"
)

// ifAttention is the attention layer in both branches of an If on the boolean input
// branch, as a merged decoder holds its model: the weights in the main graph, each
// branch's values named after it (a_then, a_else, ...).
func ifAttention(t *testing.T) string {
	t.Helper()
	head, rest, _ := strings.Cut(attention, "> {\n")
	body := strings.TrimSuffix(strings.TrimSpace(rest), "}")
	local := regexp.MustCompile(`\b(qm|qa|km|ka|vm|va|qr|qt|kr|kt|vr|vt|s|sd|p|c|ct|a|om|y)\b`)
	branch := func(name string) string {
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
			node, ops, _ := strings.Cut(l, "] ")
			node = strings.Replace(node, "/L/", "/"+name+"/", 1)
			lines = append(lines, "    "+strings.TrimSpace(node)+"] "+local.ReplaceAllString(ops, "${1}_"+name))
		}
		return fmt.Sprintf("%s () => (float[batch,seq,4] y_%s) {\n%s\n  }", name, name, strings.Join(lines, "\n"))
	}
	head = strings.Replace(head, "attention (float[batch,seq,4] x)", "merged (bool branch, float[batch,seq,4] x)", 1)
	return head + "> {\n  y = If (branch) <then_branch = " + branch("then") + ", else_branch = " + branch("else") + ">\n}\n"
}

// ifCache writes ranges for ifAttention: a good one for x, and for each branch's a
// (the output projection's input) one 100 times too small, as budgetCache does.
func ifCache(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "ranges.json")
	r := map[string]float32{"x": 4, "y.then_branch/a_then": 0.02, "y.else_branch/a_else": 0.02}
	if err := calib.WriteJSON(path, r, calib.Meta{Method: "test"}); err != nil {
		t.Fatal(err)
	}
	return path
}

// dequantizers counts the DequantizeLinear nodes in every graph of m.
func dequantizers(m *ir.Model) int {
	n := 0
	_ = m.Graph.Walk(func(g *ir.Graph) error {
		for _, nd := range g.Nodes() {
			if nd.OpType == "DequantizeLinear" {
				n++
			}
		}
		return nil
	})
	return n
}

// nodeIn finds a node by name in any graph of m.
func nodeIn(m *ir.Model, name string) *ir.Node {
	var out *ir.Node
	_ = m.Graph.Walk(func(g *ir.Graph) error {
		for _, n := range g.Nodes() {
			if n.Name == name {
				out = n
			}
		}
		return nil
	})
	return out
}

// checkBranchesAgree runs the float and the quantized model in ORT with each value of
// the branch input and wants cosine ≥ 0.99 on every output.
func checkBranchesAgree(t *testing.T, float, quant *ir.Model, in map[string]*ndarray.Array) {
	t.Helper()
	path, qpath := save(t, float, "float.onnx"), save(t, quant, "quantized.onnx")
	for _, c := range []bool{true, false} {
		feed := map[string]*ndarray.Array{"branch": ndarray.FromBool(nil, []bool{c})}
		for k, a := range in {
			feed[k] = a
		}
		want, got := runORT(t, path, feed), runORT(t, qpath, feed)
		for name, w := range want {
			cos, err := ndarray.CosineSimilarity(w, got[name])
			if err != nil {
				t.Fatal(err)
			}
			if cos < 0.99 {
				t.Errorf("branch=%v: %s has cosine %.5f to float, want ≥ 0.99", c, name, cos)
			}
		}
	}
}

// TestBudgetIfBranches: budget=D counts the quantizers of an If's branches and decides
// a branch's group with its twin in the other branch: the clipped output projection is
// turned off in both branches as one decision ({then,else}/layer0/attn_out), every
// quantizer of either branch counts, each branch runs on the data (once per value of
// the condition), qdqcheck passes, a run over the output keeps both off, and ORT agrees
// with the float model on either branch.
func TestBudgetIfBranches(t *testing.T) {
	orttest.RequireLib(t)
	src := ifAttention(t)
	m := parse(t, src)
	rep, err := runPipeline(t, m, "qdq<min-gemm=2;data=random:4;cache="+ifCache(t)+";budget=0.01>")
	if err != nil {
		t.Fatal(err)
	}
	st := lastStat(rep)
	notes := strings.Join(st.Notes, "\n")
	t.Logf("counts %v\nnotes:\n%s", st.Counts, notes)
	// In each branch (the int8 weights are in the main graph, their DequantizeLinear in
	// the reader's graph) one for x, three for Q, K and V's weights, two for the output
	// projection's input and weight: 12, none of them in the main graph. The output
	// projections' 4 go.
	if st.Counts["qdq: budget groups measured"] != 2 || st.Counts["qdq: budget groups turned off"] != 1 ||
		st.Counts["qdq: budget quantizers total"] != 12 || st.Counts["qdq: budget quantizers kept"] != 8 {
		t.Errorf("counts %v", st.Counts)
	}
	for _, want := range []string{
		"budget: 2 groups in If branches decided with their twins in the other branches: 2 decisions for 4 groups",
		"result: 1 of 2 groups off ({then,else}/layer0/attn_out); 8 of 12 quantizers kept",
		"budget: {then,else}/layer0/attn_out (4 quantizers): cos",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q", want)
		}
	}
	for _, b := range []string{"then", "else"} {
		n := nodeIn(m, "/"+b+"/o/MatMul")
		if why, _ := n.Meta(qdqcheck.SkipKey); !strings.HasPrefix(why, "group {then,else}/layer0/attn_out disabled by budget=0.01 (cos ") {
			t.Errorf("%s: skip mark %q", b, why)
		}
		if q := nodeIn(m, "/"+b+"/q/MatMul"); !qdqcheck.Dequantized(q.Input(0)) {
			t.Errorf("%s: Q projection not quantized", b)
		}
	}
	if n := dequantizers(m); n != 8 {
		t.Errorf("%d DequantizeLinear in the model, want 8", n)
	}
	if err := qdqcheck.Check(m); err != nil {
		t.Error(err)
	}
	// A run over the output measures nothing and keeps both branches' projections off.
	got := printModel(t, m)
	rep, err = runPipeline(t, m, "qdq<min-gemm=2;data=random:4;cache="+ifCache(t)+";budget=0.01>")
	if err != nil {
		t.Fatal(err)
	}
	if st := lastStat(rep); st.Counts["qdq: budget evaluations"] != 0 || !strings.Contains(strings.Join(st.Notes, "\n"), "the 2 nodes a budget left float stay float") {
		t.Errorf("rerun: %v %v", st.Counts, st.Notes)
	}
	if again := printModel(t, m); again != got {
		t.Errorf("a run over the output changed it")
	}
	checkBranchesAgree(t, parse(t, src), m, map[string]*ndarray.Array{"x": randn(rand.New(rand.NewPCG(7, 8)), 2, 7, 4)})
}

// TestErrorReportIfBranches: report=FILE.json lists the groups and blocks of both
// branches of an If with their graph named, measures each (every batch runs once per
// value of the condition, so a branch's clipped group shows its harm), and with budget=D
// its disable= list names both twins the budget turned off.
func TestErrorReportIfBranches(t *testing.T) {
	orttest.RequireLib(t)
	m := parse(t, ifAttention(t))
	_, rep, b := runReport(t, m, "min-gemm=2;data=random:4;cache="+ifCache(t)+";budget=0.01")
	t.Logf("%s", b)
	groups := map[string]GroupError{}
	for _, g := range rep.Groups {
		groups[g.Group] = g
	}
	for _, br := range []string{"then", "else"} {
		for _, k := range []string{KindQKV, KindAttnOut} {
			g, ok := groups[br+"/layer0/"+k]
			if !ok {
				t.Errorf("no group %s/layer0/%s", br, k)
				continue
			}
			if g.Graph != br || g.Quantizers == 0 {
				t.Errorf("group %s: graph %q, %d quantizers", g.Group, g.Graph, g.Quantizers)
			}
		}
		// The clipped projection costs: turning it off gains.
		if g := groups[br+"/layer0/attn_out"]; !(g.Gain > 0) {
			t.Errorf("group %s: gain %g, want > 0", g.Group, g.Gain)
		}
	}
	if len(rep.Groups) != 4 {
		t.Errorf("%d groups, want 4", len(rep.Groups))
	}
	blocks := map[string]BlockError{}
	for _, bl := range rep.Blocks {
		blocks[bl.Block] = bl
	}
	for _, br := range []string{"then", "else"} {
		bl, ok := blocks[br+"/attention.0"]
		if !ok {
			t.Errorf("no block %s/attention.0 in %v", br, rep.Blocks)
			continue
		}
		if bl.Graph != br || !(bl.RelError > 0) {
			t.Errorf("block %s: graph %q, relative error %g", bl.Block, bl.Graph, bl.RelError)
		}
	}
	if want := `^({then,else}/layer0/attn_out)$`; len(rep.Off) != 1 || rep.Off[0] != "{then,else}/layer0/attn_out" {
		t.Errorf("off %v, want the one unit %s", rep.Off, want)
	}
	if want := `^(then/layer0/attn_out|else/layer0/attn_out)$`; rep.Disable != want {
		t.Errorf("disable=%s, want %s", rep.Disable, want)
	}
	// The disable= expression leaves float what the budget did.
	m2 := parse(t, ifAttention(t))
	if _, err := runPipeline(t, m2, "qdq<min-gemm=2;data=random:4;cache="+ifCache(t)+";disable="+rep.Disable+">"); err != nil {
		t.Fatal(err)
	}
	if d1, d2 := dequantizers(m), dequantizers(m2); d1 != d2 {
		t.Errorf("disable=%s leaves %d DequantizeLinear, the budget %d", rep.Disable, d2, d1)
	}
	if err := qdqcheck.Check(m); err != nil {
		t.Error(err)
	}
}

// TestErrorReportLoopBody: report=FILE.json on a model with a block inside a Loop body
// (a GELU, which stays float as every loop body does) measures the main graph's blocks
// and leaves the body's out: a loop body passes out only its loop outputs.
func TestErrorReportLoopBody(t *testing.T) {
	orttest.RequireLib(t)
	src := strings.Replace(strings.Replace(ffn, "=> (float[batch,seq,4] y) <", "=> (float[batch,seq,4] y, float[batch,seq,4] z) <\n  int64 n = {2},\n  bool go = {1},", 1),
		"  [\"/F/out/Add\"] y = Add (b2, o)\n", `  ["/F/out/Add"] y = Add (b2, o)
  z = Loop (n, go, y) <body = body_g (int64 i, bool c, float[batch,seq,4] a) => (bool co, float[batch,seq,4] b) {
    co = Identity (c)
    ld = Div (a, sqrt2)
    le = Erf (ld)
    le1 = Add (le, one)
    lm = Mul (a, le1)
    b = Mul (lm, half)
  }>
`, 1)
	m := parse(t, src)
	_, rep, b := runReport(t, m, "min-gemm=2;data=random:2")
	var blocks []string
	for _, bl := range rep.Blocks {
		blocks = append(blocks, bl.Block)
		if bl.Graph != "" {
			t.Errorf("block %s of graph %s measured", bl.Block, bl.Graph)
		}
	}
	if len(blocks) == 0 {
		t.Errorf("no main-graph block measured:\n%s", b)
	}
	t.Logf("blocks %v", blocks)
}
