package opsets

import (
	"slices"
	"strings"
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
	m3 := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 3}
	m3.SetOpset("", 6)
	if why := Require(m3, 23, 23, "Attention", nil); !strings.Contains(why, "below 7") {
		t.Fatalf("an opset-6 model (broadcast by attribute): %q", why)
	}
}

// Raising an opset-8 model moves what became inputs at 10 and 11: Slice's starts, ends
// and axes, TopK's k, Clip's bounds and Pad's pads and value; a per-channel
// BatchNormalization drops spatial. What has no spelling later blocks the raise, naming
// the node: Resize-10 (its coordinate mapping became an attribute with another default),
// Upsample, a Clip on float16 data, a BatchNormalization with spatial=0.
func TestRequireRaisesFromOpset8(t *testing.T) {
	m := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 5}
	m.SetOpset("", 8)
	x, _ := m.Graph.AddInput("x", ir.TensorOf(ir.Float, ir.Sym("b"), ir.D(4)))
	sl := m.Graph.Add("Slice", []*ir.Value{x}, 1, "sl", ir.IntsAttr("starts", 1), ir.IntsAttr("ends", 3), ir.IntsAttr("axes", 1))
	open := m.Graph.Add("Slice", []*ir.Value{x}, 1, "open", ir.IntsAttr("starts", 0, 1), ir.IntsAttr("ends", 1, 2))
	tk := m.Graph.Add("TopK", []*ir.Value{x}, 2, "tk", ir.IntAttr("k", 2))
	lo := m.Graph.Add("Clip", []*ir.Value{x}, 1, "lo", ir.FloatAttr("min", -1))
	both := m.Graph.Add("Clip", []*ir.Value{x}, 1, "both", ir.FloatAttr("min", -1), ir.FloatAttr("max", 2))
	pad := m.Graph.Add("Pad", []*ir.Value{x}, 1, "pad", ir.IntsAttr("pads", 0, 1, 0, 2), ir.FloatAttr("value", 0.5))
	bn := m.Graph.Add("BatchNormalization", []*ir.Value{x, x, x, x, x}, 1, "bn", ir.IntAttr("spatial", 1))
	if why := Require(m, 23, 23, "Attention", nil); why != "" {
		t.Fatalf("raise refused: %s", why)
	}
	ints := func(v *ir.Value) []int64 {
		if v == nil || v.Const == nil {
			return nil
		}
		x, _ := v.Const.Int64s()
		return x
	}
	floats := func(v *ir.Value) []float32 {
		if v == nil || v.Const == nil {
			return nil
		}
		x, _ := v.Const.Float32s()
		return x
	}
	if len(sl.Attrs) != 0 || len(sl.Inputs()) != 4 || !slices.Equal(ints(sl.Input(1)), []int64{1}) ||
		!slices.Equal(ints(sl.Input(2)), []int64{3}) || !slices.Equal(ints(sl.Input(3)), []int64{1}) {
		t.Errorf("Slice: attrs %v, %d inputs", sl.Attrs, len(sl.Inputs()))
	}
	if len(open.Inputs()) != 3 || !slices.Equal(ints(open.Input(2)), []int64{1, 2}) {
		t.Errorf("Slice without axes: %d inputs", len(open.Inputs()))
	}
	if tk.Attr("k") != nil || !slices.Equal(ints(tk.Input(1)), []int64{2}) {
		t.Errorf("TopK: attrs %v, k %v", tk.Attrs, ints(tk.Input(1)))
	}
	if len(lo.Inputs()) != 2 || !slices.Equal(floats(lo.Input(1)), []float32{-1}) || lo.Attr("min") != nil {
		t.Errorf("Clip with a lower bound: attrs %v, %d inputs", lo.Attrs, len(lo.Inputs()))
	}
	if len(both.Inputs()) != 3 || !slices.Equal(floats(both.Input(2)), []float32{2}) {
		t.Errorf("Clip with both bounds: %d inputs", len(both.Inputs()))
	}
	if pad.Attr("pads") != nil || !slices.Equal(ints(pad.Input(1)), []int64{0, 1, 0, 2}) || !slices.Equal(floats(pad.Input(2)), []float32{0.5}) {
		t.Errorf("Pad: attrs %v, pads %v, value %v", pad.Attrs, ints(pad.Input(1)), floats(pad.Input(2)))
	}
	if bn.Attr("spatial") != nil {
		t.Errorf("BatchNormalization kept spatial")
	}

	blocks := []struct {
		name  string
		opset int64
		add   func(g *ir.Graph, x, h *ir.Value)
	}{
		{"resize", 10, func(g *ir.Graph, x, _ *ir.Value) {
			g.Add("Resize", []*ir.Value{x, g.NewConst("scales", ir.FloatTensor([]int64{2}, []float32{1, 2}))}, 1, "resize")
		}},
		{"upsample", 10, func(g *ir.Graph, x, _ *ir.Value) {
			g.Add("Upsample", []*ir.Value{x, g.NewConst("scales", ir.FloatTensor([]int64{2}, []float32{1, 2}))}, 1, "upsample")
		}},
		{"clip-fp16", 10, func(g *ir.Graph, _, h *ir.Value) {
			g.Add("Clip", []*ir.Value{h}, 1, "clip-fp16", ir.FloatAttr("max", 6))
		}},
		{"bn-spatial0", 8, func(g *ir.Graph, x, _ *ir.Value) {
			g.Add("BatchNormalization", []*ir.Value{x, x, x, x, x}, 1, "bn-spatial0", ir.IntAttr("spatial", 0))
		}},
	}
	for _, b := range blocks {
		m := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 5}
		m.SetOpset("", b.opset)
		x, _ := m.Graph.AddInput("x", ir.TensorOf(ir.Float, ir.Sym("b"), ir.D(4)))
		h, _ := m.Graph.AddInput("h", ir.TensorOf(ir.Float16, ir.Sym("b"), ir.D(4)))
		b.add(m.Graph, x, h)
		if why := Require(m, 23, 23, "Attention", nil); !strings.Contains(why, "(->"+b.name+")") || m.Opset("") != b.opset {
			t.Errorf("%s: raise not refused with the node named: %q (opset %d)", b.name, why, m.Opset(""))
		}
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

// The bodies of model-local functions import the default domain themselves: raising the
// model's import past their version would leave the body of llama-hf-functions' RMSNorm
// (a ReduceMean with an axes attribute) read at 18, an invalid model. The raise is
// refused until the functions are inlined, and then upgrades what was inside them.
func TestRequireFunctionBodies(t *testing.T) {
	m, err := ir.Load("../testdata/probes/llama-hf-functions.opset17.onnx")
	if err != nil {
		t.Fatal(err)
	}
	if m.FunctionCalls() == 0 || m.FunctionOpsets("")["__main__.RMSNorm.1"] != 17 {
		t.Fatalf("the probe has %d function calls, function opsets %v", m.FunctionCalls(), m.FunctionOpsets(""))
	}
	why := Require(m, 18, 18, "Attention", nil)
	if !strings.Contains(why, "model-local function") || m.Opset("") != 17 {
		t.Fatalf("raise with functions at opset 17: opset %d, reason %q", m.Opset(""), why)
	}
	if _, err := m.InlineFunctions(); err != nil {
		t.Fatal(err)
	}
	if why := Require(m, 18, 18, "Attention", nil); why != "" {
		t.Fatalf("raise after inlining refused: %s", why)
	}
	reductions := 0
	for _, n := range m.Graph.Nodes() {
		if n.OpType == "ReduceMean" {
			reductions++
			if n.Attr("axes") != nil || len(n.Inputs()) != 2 {
				t.Errorf("%s: axes attribute %v, %d inputs", n.Name, n.Attr("axes"), len(n.Inputs()))
			}
		}
	}
	if reductions == 0 {
		t.Error("no ReduceMean inlined")
	}
}

// GroupNormalization-21 takes its scale and bias per channel, 18 per group: the raise
// repeats constant ones over each group's channels; with the channel count unknown the
// node blocks the raise. (tests/TestRaiseGroupNormORT checks the numbers in ONNX Runtime.)
func TestRequireGroupNormPerChannel(t *testing.T) {
	build := func(channels ir.Dim) (*ir.Model, *ir.Node) {
		m := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 8}
		m.SetOpset("", 18)
		x, _ := m.Graph.AddInput("x", ir.TensorOf(ir.Float, ir.Sym("b"), channels, ir.D(5)))
		scale := m.Graph.NewConst("scale", ir.FloatTensor([]int64{3}, []float32{1, 2, 3}))
		bias := m.Graph.NewConst("bias", ir.FloatTensor([]int64{3}, []float32{10, 20, 30}))
		n := m.Graph.Add("GroupNormalization", []*ir.Value{x, scale, bias}, 1, "gn", ir.IntAttr("num_groups", 3))
		return m, n
	}
	m, n := build(ir.D(6))
	if why := Require(m, 21, 21, "Attention", nil); why != "" {
		t.Fatalf("raise refused: %s", why)
	}
	for i, want := range [][]float32{{1, 1, 2, 2, 3, 3}, {10, 10, 20, 20, 30, 30}} {
		got, err := n.Input(i + 1).Const.Float32s()
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("input %d: %v (%v), want %v", i+1, got, err, want)
		}
	}
	m, _ = build(ir.Sym("c"))
	if why := Require(m, 21, 21, "Attention", nil); !strings.Contains(why, "GroupNormalization changed at opset 21") || m.Opset("") != 18 {
		t.Errorf("channel count unknown: opset %d, reason %q", m.Opset(""), why)
	}
}
