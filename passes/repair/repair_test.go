package repair

import (
	"context"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/eval/evaltest"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
)

func model(g *ir.Graph, opset int64) *ir.Model {
	return &ir.Model{IRVersion: 7, Opsets: []ir.OpsetID{{Domain: "", Version: opset}}, Graph: g}
}

func run(t *testing.T, m *ir.Model) *pass.Stat {
	t.Helper()
	pl := &pass.Pipeline{Steps: []pass.Step{{Pass: Pass}}}
	r, err := pl.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true})
	if err != nil {
		t.Fatal(err)
	}
	return &r.Stats[0]
}

func ints(t *testing.T, x *ir.Tensor) []int64 {
	t.Helper()
	v, err := x.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// deberta builds the opset-11 pattern: Clip(int64 x, float 0, Cast<float>(len*2-1)) -> Cast<int64>.
func deberta(t *testing.T, opset int64) (*ir.Model, *ir.Node) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Int64, ir.D(5)))
	n, _ := g.AddInput("n", ir.TensorOf(ir.Int64))
	lo, _ := g.AddInitializer("lo", ir.FloatTensor(nil, []float32{0}))
	two, _ := g.AddInitializer("two", ir.Int64Tensor(nil, []int64{2}))
	one, _ := g.AddInitializer("one", ir.Int64Tensor(nil, []int64{1}))
	mul := g.Add("Mul", []*ir.Value{n, two}, 1, "mul")
	sub := g.Add("Sub", []*ir.Value{mul.Output(0), one}, 1, "sub")
	hi := g.Add("Cast", []*ir.Value{sub.Output(0)}, 1, "hi", ir.IntAttr("to", int64(ir.Float)))
	clip := g.Add("Clip", []*ir.Value{x, lo, hi.Output(0)}, 1, "clip")
	clip.Name = "Clip_1"
	back := g.Add("Cast", []*ir.Value{clip.Output(0)}, 1, "y", ir.IntAttr("to", int64(ir.Int64)))
	g.Outputs = []*ir.Value{back.Output(0)}
	return model(g, opset), clip
}

func TestIntClip(t *testing.T) {
	m, clip := deberta(t, 11)
	st := run(t, m)
	if len(st.Notes) != 1 || !strings.Contains(st.Notes[0], "Clip_1") || !strings.Contains(st.Notes[0], "int64") {
		t.Fatalf("notes: %v", st.Notes)
	}
	if st.Counts["repair: int Clip rewritten"] != 1 {
		t.Errorf("counts: %v", st.Counts)
	}
	var c *ir.Node
	for _, n := range m.Graph.Nodes() {
		if n.OpType == "Clip" {
			c = n
		}
	}
	if c == nil {
		t.Fatal("Clip gone")
	}
	if ElemType(c.Input(0)) != ir.Float || ElemType(c.Input(1)) != ir.Float || ElemType(c.Input(2)) != ir.Float {
		t.Errorf("Clip inputs not float: %v", c.Inputs())
	}
	if ElemType(c.Output(0)) != ir.Float && c.Output(0).Type != nil {
		t.Errorf("Clip output typed %v", c.Output(0).Type)
	}
	// The original output value keeps its name and is now produced by a Cast back to int64.
	out := clip.Output(0)
	p, _ := out.Producer()
	if p == nil || p.OpType != "Cast" || p.AttrInt("to", 0) != int64(ir.Int64) || out.Name != "clip" {
		t.Fatalf("clip output produced by %v", p)
	}
	// Numbers: positions clamped to [0, 2n-1].
	res, err := evaltest.Run(m, map[string]*ir.Tensor{
		"x": ir.Int64Tensor([]int64{5}, []int64{-4, 0, 3, 7, 100}),
		"n": ir.Int64Tensor(nil, []int64{4}),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := ints(t, res["y"])
	want := []int64{0, 0, 3, 7, 7}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("y = %v, want %v", got, want)
		}
	}
}

func TestIntClipIntBoundsAndGraphOutput(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Int32, ir.D(3)))
	lo, _ := g.AddInitializer("lo", ir.NewTensor(ir.Int32, nil, []byte{0xfe, 0xff, 0xff, 0xff})) // -2
	hi, _ := g.AddInput("hi", ir.TensorOf(ir.Int32))
	clip := g.Add("Clip", []*ir.Value{x, lo, hi}, 1, "out")
	g.Outputs = []*ir.Value{clip.Output(0)}
	m := model(g, 11)
	st := run(t, m)
	if len(st.Notes) != 1 {
		t.Fatalf("notes %v", st.Notes)
	}
	if g.Outputs[0].Name != "out" || ElemType(g.Outputs[0]) != ir.Int32 {
		t.Fatalf("output %v %v", g.Outputs[0], ElemType(g.Outputs[0]))
	}
	i32 := func(v ...int32) *ir.Tensor {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			u := uint32(x)
			b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		}
		return ir.NewTensor(ir.Int32, []int64{int64(len(v))}, b)
	}
	hiT := i32(4)
	hiT.Dims = nil
	res, err := evaltest.Run(m, map[string]*ir.Tensor{"x": i32(-5, 1, 9), "hi": hiT})
	if err != nil {
		t.Fatal(err)
	}
	got := ints(t, res["out"])
	if got[0] != -2 || got[1] != 1 || got[2] != 4 || res["out"].DType != ir.Int32 {
		t.Errorf("out = %v %s", got, res["out"].DType)
	}
}

func TestIntClipConstantFolded(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInitializer("x", ir.Int64Tensor([]int64{3}, []int64{-300, 5, 300}))
	lo, _ := g.AddInitializer("lo", ir.FloatTensor(nil, []float32{0}))
	hi, _ := g.AddInitializer("hi", ir.FloatTensor(nil, []float32{255}))
	clip := g.Add("Clip", []*ir.Value{x, lo, hi}, 1, "c")
	neg := g.Add("Neg", []*ir.Value{clip.Output(0)}, 1, "y")
	g.Outputs = []*ir.Value{neg.Output(0)}
	m := model(g, 11)
	st := run(t, m)
	if len(st.Notes) != 1 || !strings.Contains(st.Notes[0], "computed") {
		t.Fatalf("notes %v", st.Notes)
	}
	c := neg.Input(0)
	if c.Const == nil {
		t.Fatalf("Clip not folded: %v", neg.Input(0))
	}
	got := ints(t, c.Const)
	if c.Const.DType != ir.Int64 || got[0] != 0 || got[1] != 5 || got[2] != 255 {
		t.Errorf("folded %s %v", c.Const.DType, got)
	}
}

// Valid Clips are left alone: float at opset 11, int64 at opset 13.
func TestIntClipUntouched(t *testing.T) {
	m, _ := deberta(t, 13)
	before := m.Graph.NumNodes()
	st := run(t, m)
	if len(st.Notes) != 0 || st.Changed || m.Graph.NumNodes() != before {
		t.Errorf("opset 13 changed: %v", st.Notes)
	}
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(3)))
	lo, _ := g.AddInitializer("lo", ir.FloatTensor(nil, []float32{0}))
	c := g.Add("Clip", []*ir.Value{x, lo}, 1, "c")
	g.Outputs = []*ir.Value{c.Output(0)}
	st = run(t, model(g, 11))
	if st.Changed {
		t.Error("float Clip changed")
	}
}
