package opsets

import (
	"slices"
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

// A raise past opset 18 moves a reduction's axes attribute to its input instead of
// refusing; a node whose change has no upgrade still blocks the raise.
func TestRequireUpgradesReductions(t *testing.T) {
	m := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 7}
	m.SetOpset("", 13)
	x, _ := m.Graph.AddInput("x", ir.TensorOf(ir.Float, ir.Sym("b"), ir.D(4)))
	n := m.Graph.Add("ReduceMean", []*ir.Value{x}, 1, "mean", ir.IntsAttr("axes", -1))
	if why := Require(m, 23, 23, "Attention", nil); why != "" {
		t.Fatalf("raise refused: %s", why)
	}
	if m.Opset("") != 23 || n.Attr("axes") != nil || len(n.Inputs()) != 2 {
		t.Fatalf("opset %d, axes attr %v, inputs %d", m.Opset(""), n.Attr("axes"), len(n.Inputs()))
	}
	if got, _ := n.Input(1).Const.Int64s(); len(got) != 1 || got[0] != -1 {
		t.Fatalf("axes input %v", got)
	}
	m2 := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 7}
	m2.SetOpset("", 13)
	y, _ := m2.Graph.AddInput("y", ir.TensorOf(ir.Float, ir.D(4)))
	m2.Graph.Add("GroupNormalization", []*ir.Value{y}, 1, "gn")
	if why := Require(m2, 23, 23, "Attention", nil); why == "" || m2.Opset("") != 13 {
		t.Fatalf("GroupNormalization (changed at 21, no upgrade) did not block the raise")
	}
}

// Raising an opset-11 model to 23 upgrades each change on the way: axes and split sizes
// become inputs (13), a Split without sizes gets num_outputs (18), a softmax over the
// last axis gets its axis written out (the default moved from 1 to -1 at 13), Dropout's
// ratio becomes an input (12). A softmax whose old 2-D coercion spans several axes
// cannot be written at 13 and blocks the raise.
func TestRequireRaisesFromOpset11(t *testing.T) {
	m := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 6}
	m.SetOpset("", 11)
	x, _ := m.Graph.AddInput("x", ir.TensorOf(ir.Float, ir.Sym("b"), ir.D(4)))
	un := m.Graph.Add("Unsqueeze", []*ir.Value{x}, 1, "un", ir.IntsAttr("axes", 0))
	sized := m.Graph.Add("Split", []*ir.Value{x}, 2, "sized", ir.IntAttr("axis", 1), ir.IntsAttr("split", 1, 3))
	even := m.Graph.Add("Split", []*ir.Value{x}, 2, "even", ir.IntAttr("axis", 1))
	sm := m.Graph.Add("Softmax", []*ir.Value{x}, 1, "sm") // axis 1 of rank 2: the last
	drop := m.Graph.Add("Dropout", []*ir.Value{x}, 1, "drop", ir.FloatAttr("ratio", 0.25))
	if why := Require(m, 23, 23, "Attention", nil); why != "" {
		t.Fatalf("raise refused: %s", why)
	}
	if m.Opset("") != 23 || m.IRVersion != 11 {
		t.Fatalf("opset %d, IR %d", m.Opset(""), m.IRVersion)
	}
	ints := func(v *ir.Value) []int64 {
		if v == nil || v.Const == nil {
			return nil
		}
		x, _ := v.Const.Int64s()
		return x
	}
	if un.Attr("axes") != nil || !slices.Equal(ints(un.Input(1)), []int64{0}) {
		t.Errorf("Unsqueeze: axes attr %v, input %v", un.Attr("axes"), ints(un.Input(1)))
	}
	if sized.Attr("split") != nil || !slices.Equal(ints(sized.Input(1)), []int64{1, 3}) || sized.Attr("num_outputs") != nil {
		t.Errorf("Split with sizes: attrs %v, sizes %v", sized.Attrs, ints(sized.Input(1)))
	}
	if len(even.Inputs()) != 1 || even.AttrInt("num_outputs", 0) != 2 {
		t.Errorf("Split without sizes: inputs %d, num_outputs %d", len(even.Inputs()), even.AttrInt("num_outputs", 0))
	}
	if sm.AttrInt("axis", 0) != -1 {
		t.Errorf("Softmax axis %d, want -1", sm.AttrInt("axis", 0))
	}
	if drop.Attr("ratio") != nil || len(drop.Inputs()) != 2 {
		t.Errorf("Dropout: ratio attr %v, inputs %d", drop.Attr("ratio"), len(drop.Inputs()))
	} else if r, _ := drop.Input(1).Const.Float32s(); len(r) != 1 || r[0] != 0.25 {
		t.Errorf("Dropout ratio input %v", r)
	}

	m2 := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 6}
	m2.SetOpset("", 11)
	y, _ := m2.Graph.AddInput("y", ir.TensorOf(ir.Float, ir.D(2), ir.D(3), ir.D(4)))
	m2.Graph.Add("Softmax", []*ir.Value{y}, 1, "sm") // axis 1 of rank 3: over [3, 4] at 11
	if why := Require(m2, 23, 23, "Attention", nil); why == "" || m2.Opset("") != 11 {
		t.Fatalf("a Softmax over two axes (opset 11) did not block the raise")
	}
	m3 := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 5}
	m3.SetOpset("", 10)
	if why := Require(m3, 23, 23, "Attention", nil); why == "" {
		t.Fatalf("an opset-10 model was raised")
	}
}

// A skipped node (one of the block being replaced) is upgraded when it can be: it
// survives the rewrite when another node shares it, a mean of squares read by an RMSNorm
// and by a plain product (found by the fuzzer, seed 252568119274). One that cannot be
// upgraded still does not block the raise.
func TestRequireUpgradesSkippedNodes(t *testing.T) {
	m := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 7}
	m.SetOpset("", 17)
	x, _ := m.Graph.AddInput("x", ir.TensorOf(ir.Float, ir.D(1), ir.D(3)))
	sq := m.Graph.Add("Mul", []*ir.Value{x, x}, 1, "sq")
	mean := m.Graph.Add("ReduceMean", []*ir.Value{sq.Output(0)}, 1, "mean", ir.IntsAttr("axes", -1))
	root := m.Graph.Add("Sqrt", []*ir.Value{mean.Output(0)}, 1, "root")
	m.Graph.Add("Mul", []*ir.Value{x, mean.Output(0)}, 1, "other")
	if why := Require(m, 23, 23, "RMSNormalization", []*ir.Node{sq, mean, root}); why != "" {
		t.Fatalf("raise refused: %s", why)
	}
	if mean.Attr("axes") != nil || len(mean.Inputs()) != 2 {
		t.Fatalf("the shared ReduceMean was not upgraded: axes attr %v, inputs %d", mean.Attr("axes"), len(mean.Inputs()))
	}
	m2 := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 7}
	m2.SetOpset("", 13)
	y, _ := m2.Graph.AddInput("y", ir.TensorOf(ir.Float, ir.D(4)))
	gn := m2.Graph.Add("GroupNormalization", []*ir.Value{y}, 1, "gn")
	if why := Require(m2, 23, 23, "Attention", []*ir.Node{gn}); why != "" || m2.Opset("") != 23 {
		t.Fatalf("a skipped node without an upgrade blocked the raise: %q", why)
	}
}
