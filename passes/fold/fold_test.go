package fold

import (
	"bytes"
	"context"
	"math"
	"slices"
	"testing"

	"github.com/qcc-dev/qcc/eval/evaltest"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
)

func i64(dims []int64, v ...int64) *ir.Tensor   { return ir.Int64Tensor(dims, v) }
func f32(dims []int64, v ...float32) *ir.Tensor { return ir.FloatTensor(dims, v) }

func model(g *ir.Graph, opset int64) *ir.Model {
	return &ir.Model{IRVersion: 8, Opsets: []ir.OpsetID{{Domain: "", Version: opset}}, Graph: g}
}

// runFold runs fold through the pass manager (so options, counts and the verifier are
// exercised) and returns its statistics.
func runFold(t *testing.T, m *ir.Model, spec string) *pass.Stat {
	t.Helper()
	pl, err := pass.Parse(spec, []*pass.Pass{Pass})
	if err != nil {
		t.Fatal(err)
	}
	r, err := pl.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true})
	if err != nil {
		t.Fatal(err)
	}
	return &r.Stats[len(r.Stats)-1]
}

func count(g *ir.Graph, op string) int {
	k := 0
	for _, n := range g.Nodes() {
		if n.OpType == op {
			k++
		}
	}
	return k
}

func constInts(t *testing.T, v *ir.Value) []int64 {
	t.Helper()
	if v == nil || v.Const == nil {
		t.Fatalf("%v is not constant", v)
	}
	x, err := v.Const.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestConstantNodes(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(2)))
	c := g.Add("Constant", nil, 1, "c", ir.TensorAttr("value", f32([]int64{2}, 1, 2)))
	a := g.Add("Add", []*ir.Value{x, c.Output(0)}, 1, "a")
	// A Constant that is itself a graph output stays a node (its name is the interface).
	co := g.Add("Constant", nil, 1, "co", ir.TensorAttr("value", f32([]int64{1}, 3)))
	g.Outputs = []*ir.Value{a.Output(0), co.Output(0)}
	m := model(g, 13)
	st := runFold(t, m, "fold")
	if st.Counts["fold: constant nodes"] != 1 {
		t.Errorf("counts %v", st.Counts)
	}
	in := a.Input(1)
	if in.Const == nil || in.Name != "c" || len(g.Initializers) != 1 || g.Initializers[0] != in {
		t.Errorf("Constant not turned into initializer c: %v %v", in, g.Initializers)
	}
	if count(g, "Constant") != 1 || g.Outputs[1].Name != "co" {
		t.Errorf("graph-output Constant changed")
	}
	if count(g, "Add") != 1 {
		t.Error("non-constant Add folded")
	}
}

// A BERT-style Reshape target: batch and sequence stay symbolic, the hidden size folds.
func TestPartialShape(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.Sym("batch"), ir.Sym("seq"), ir.D(64)))
	zero, _ := g.AddInitializer("zero", i64(nil, 0))
	two, _ := g.AddInitializer("two", i64(nil, 2))
	axes, _ := g.AddInitializer("axes", i64([]int64{1}, 0))
	heads, _ := g.AddInitializer("heads", i64([]int64{1}, 4))
	shape := g.Add("Shape", []*ir.Value{x}, 1, "shape")
	g0 := g.Add("Gather", []*ir.Value{shape.Output(0), zero}, 1, "g0", ir.IntAttr("axis", 0))
	g2 := g.Add("Gather", []*ir.Value{shape.Output(0), two}, 1, "g2", ir.IntAttr("axis", 0))
	u0 := g.Add("Unsqueeze", []*ir.Value{g0.Output(0), axes}, 1, "u0")
	u2 := g.Add("Unsqueeze", []*ir.Value{g2.Output(0), axes}, 1, "u2")
	div := g.Add("Div", []*ir.Value{u2.Output(0), heads}, 1, "div")
	minus1, _ := g.AddInitializer("minus1", i64([]int64{1}, -1))
	cat := g.Add("Concat", []*ir.Value{u0.Output(0), minus1, heads, div.Output(0)}, 1, "cat", ir.IntAttr("axis", 0))
	r := g.Add("Reshape", []*ir.Value{x, cat.Output(0)}, 1, "r")
	// Slice of the known tail of the shape: [seq, 64][1:] = [64].
	one, _ := g.AddInitializer("one", i64([]int64{1}, 1))
	big, _ := g.AddInitializer("big", i64([]int64{1}, math.MaxInt64))
	sl := g.Add("Slice", []*ir.Value{shape.Output(0), two, big}, 1, "sl")
	_ = one
	e := g.Add("Reshape", []*ir.Value{x, sl.Output(0)}, 1, "flat")
	g.Outputs = []*ir.Value{r.Output(0), e.Output(0)}
	m := model(g, 13)
	st := runFold(t, m, "fold")
	// div = 64/4 = 16 is known; the Concat keeps the batch but reads folded constants.
	if count(g, "Div") != 0 {
		t.Errorf("Div of the known hidden size not folded: %v", st.Counts)
	}
	if got := constInts(t, sl.Output(0)); !slices.Equal(got, []int64{64}) {
		t.Errorf("Slice folded to %v", got)
	}
	c := r.Input(1)
	p, _ := c.Producer()
	if p == nil || p.OpType != "Concat" {
		t.Fatalf("Reshape target %v", p)
	}
	if got := constInts(t, p.Input(3)); !slices.Equal(got, []int64{16}) {
		t.Errorf("Concat input 3 = %v", got)
	}
	if count(g, "Shape") != 1 || count(g, "Gather") != 1 {
		t.Errorf("symbolic part changed: %d Shape, %d Gather", count(g, "Shape"), count(g, "Gather"))
	}
	if st.Counts["fold: folded Gather (known shape)"] != 1 {
		t.Errorf("counts %v", st.Counts)
	}
}

func TestStaticShape(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(2), ir.D(3)))
	shape := g.Add("Shape", []*ir.Value{x}, 1, "shape")
	r := g.Add("Reshape", []*ir.Value{x, shape.Output(0)}, 1, "r")
	size := g.Add("Size", []*ir.Value{x}, 1, "size")
	cast := g.Add("Cast", []*ir.Value{size.Output(0)}, 1, "sizef", ir.IntAttr("to", int64(ir.Float)))
	mul := g.Add("Mul", []*ir.Value{r.Output(0), cast.Output(0)}, 1, "y")
	g.Outputs = []*ir.Value{mul.Output(0)}
	m := model(g, 13)
	st := runFold(t, m, "fold")
	if g.NumNodes() != 1 || count(g, "Mul") != 1 {
		t.Fatalf("left %d nodes; counts %v", g.NumNodes(), st.Counts)
	}
	if mul.Input(0) != x {
		t.Errorf("Reshape to the same shape not removed")
	}
	v, _ := mul.Input(1).Const.Float32s()
	if len(v) != 1 || v[0] != 6 {
		t.Errorf("size folded to %v", v)
	}
	if g.Outputs[0].Name != "y" {
		t.Errorf("output renamed to %s", g.Outputs[0].Name)
	}
}

func TestIdentity(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(2)))
	w, _ := g.AddInitializer("w", f32([]int64{2}, 1, 2))
	// input -> output and initializer -> output Identities must stay.
	id1 := g.Add("Identity", []*ir.Value{x}, 1, "out_x")
	id2 := g.Add("Identity", []*ir.Value{w}, 1, "out_w")
	// An Identity of a shared weight: users read the weight directly.
	id3 := g.Add("Identity", []*ir.Value{w}, 1, "w_shared")
	a := g.Add("Add", []*ir.Value{x, id3.Output(0)}, 1, "a")
	// intermediate -> output: the Add output takes the output name.
	id4 := g.Add("Identity", []*ir.Value{a.Output(0)}, 1, "out_a")
	g.Outputs = []*ir.Value{id1.Output(0), id2.Output(0), id4.Output(0)}
	m := model(g, 13)
	st := runFold(t, m, "fold")
	if st.Counts["fold: Identity removed"] != 2 {
		t.Errorf("counts %v", st.Counts)
	}
	if id1.Graph() == nil || id2.Graph() == nil {
		t.Error("input/initializer -> output Identity removed")
	}
	if a.Input(1) != w {
		t.Error("Add does not read the shared weight")
	}
	if g.Outputs[2].Name != "out_a" {
		t.Errorf("output name %q", g.Outputs[2].Name)
	}
	if p, _ := g.Outputs[2].Producer(); p != a {
		t.Errorf("out_a produced by %v", p)
	}
	if g.Outputs[0].Name != "out_x" || g.Outputs[1].Name != "out_w" {
		t.Errorf("outputs %v", g.Outputs)
	}
	// A second run changes nothing (and does not loop).
	st = runFold(t, m, "fold")
	if st.Changed {
		t.Errorf("second run changed: %v", st.Counts)
	}
}

func TestDropout(t *testing.T) {
	build := func(opset int64, setup func(g *ir.Graph, x *ir.Value) *ir.Node) (*ir.Model, *ir.Node) {
		g := ir.NewGraph("g")
		x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(2)))
		d := setup(g, x)
		r := g.Add("Relu", []*ir.Value{d.Output(0)}, 1, "y")
		g.Outputs = append([]*ir.Value{r.Output(0)}, g.Outputs...)
		return model(g, opset), d
	}
	cases := []struct {
		name    string
		opset   int64
		setup   func(g *ir.Graph, x *ir.Value) *ir.Node
		removed bool
	}{
		{"13 no training_mode", 13, func(g *ir.Graph, x *ir.Value) *ir.Node {
			return g.Add("Dropout", []*ir.Value{x}, 1, "d")
		}, true},
		{"13 training_mode false", 13, func(g *ir.Graph, x *ir.Value) *ir.Node {
			r, _ := g.AddInitializer("ratio", f32(nil, 0.1))
			tm, _ := g.AddInitializer("tm", ir.NewTensor(ir.Bool, nil, []byte{0}))
			return g.Add("Dropout", []*ir.Value{x, r, tm}, 2, "d")
		}, true},
		{"13 training_mode true", 13, func(g *ir.Graph, x *ir.Value) *ir.Node {
			r, _ := g.AddInitializer("ratio", f32(nil, 0.1))
			tm, _ := g.AddInitializer("tm", ir.NewTensor(ir.Bool, nil, []byte{1}))
			return g.Add("Dropout", []*ir.Value{x, r, tm}, 1, "d")
		}, false},
		{"13 training_mode input", 13, func(g *ir.Graph, x *ir.Value) *ir.Node {
			r, _ := g.AddInitializer("ratio", f32(nil, 0.1))
			tm, _ := g.AddInput("tm", ir.TensorOf(ir.Bool))
			return g.Add("Dropout", []*ir.Value{x, r, tm}, 1, "d")
		}, false},
		{"11 mask used", 11, func(g *ir.Graph, x *ir.Value) *ir.Node {
			d := g.Add("Dropout", []*ir.Value{x}, 2, "d")
			n := g.Add("Not", []*ir.Value{d.Output(1)}, 1, "mask")
			g.Outputs = append(g.Outputs, n.Output(0))
			return d
		}, false},
		{"11 mask unused", 11, func(g *ir.Graph, x *ir.Value) *ir.Node {
			return g.Add("Dropout", []*ir.Value{x}, 2, "d", ir.FloatAttr("ratio", 0.5))
		}, true},
		{"6 is_test=0", 6, func(g *ir.Graph, x *ir.Value) *ir.Node {
			return g.Add("Dropout", []*ir.Value{x}, 1, "d")
		}, false},
		{"6 is_test=1", 6, func(g *ir.Graph, x *ir.Value) *ir.Node {
			return g.Add("Dropout", []*ir.Value{x}, 1, "d", ir.IntAttr("is_test", 1))
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, d := build(c.opset, c.setup)
			runFold(t, m, "fold")
			if removed := d.Graph() == nil; removed != c.removed {
				t.Errorf("removed = %v, want %v", removed, c.removed)
			}
		})
	}
}

func TestNoOps(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.Sym("b"), ir.D(3)))
	xi, _ := g.AddInput("xi", ir.TensorOf(ir.Int64, ir.Sym("b")))
	one, _ := g.AddInitializer("one", f32([]int64{1}, 1))
	ones3, _ := g.AddInitializer("ones3", f32([]int64{1, 1, 1}, 1)) // broadcasts x to rank 3
	zero, _ := g.AddInitializer("zero", f32(nil, 0))
	negZero, _ := g.AddInitializer("negzero", f32(nil, float32(math.Copysign(0, -1))))
	izero, _ := g.AddInitializer("izero", i64(nil, 0))
	ax, _ := g.AddInitializer("ax", i64([]int64{1}, 1))

	var outs []*ir.Value
	chain := func(op string, in []*ir.Value, attrs ...*ir.Attr) *ir.Node {
		n := g.Add(op, in, 1, op, attrs...)
		outs = append(outs, g.Add("Neg", []*ir.Value{n.Output(0)}, 1, "o").Output(0))
		return n
	}
	mul1 := chain("Mul", []*ir.Value{one, x})
	mul3 := chain("Mul", []*ir.Value{x, ones3})
	div1 := chain("Div", []*ir.Value{x, one})
	sub0 := chain("Sub", []*ir.Value{x, zero})
	add0 := chain("Add", []*ir.Value{x, zero})
	addNeg0 := chain("Add", []*ir.Value{negZero, x})
	addI0 := chain("Add", []*ir.Value{xi, izero})
	cast := chain("Cast", []*ir.Value{x}, ir.IntAttr("to", int64(ir.Float)))
	castD := chain("Cast", []*ir.Value{x}, ir.IntAttr("to", int64(ir.Double)))
	tr := chain("Transpose", []*ir.Value{x}, ir.IntsAttr("perm", 0, 1))
	tr2 := chain("Transpose", []*ir.Value{x}, ir.IntsAttr("perm", 1, 0))
	un := g.Add("Unsqueeze", []*ir.Value{x, ax}, 1, "un")
	sq := chain("Squeeze", []*ir.Value{un.Output(0), ax})
	g.Outputs = outs
	m := model(g, 13)
	st := runFold(t, m, "fold")
	for _, n := range []*ir.Node{mul1, div1, sub0, addNeg0, addI0, cast, tr, sq, un} {
		if n.Graph() != nil {
			t.Errorf("%s not removed", n)
		}
	}
	for _, n := range []*ir.Node{mul3, add0, castD, tr2} {
		if n.Graph() == nil {
			t.Errorf("%s removed", n)
		}
	}
	if st.Counts["fold: Unsqueeze/Squeeze pair removed"] != 1 || st.Counts["fold: no-op Mul removed"] != 1 {
		t.Errorf("counts %v", st.Counts)
	}
}

func TestMaxSize(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(100), ir.D(100)))
	s, _ := g.AddInitializer("s", i64([]int64{2}, 100, 100))
	c := g.Add("ConstantOfShape", []*ir.Value{s}, 1, "c", ir.TensorAttr("value", f32([]int64{1}, 1)))
	a := g.Add("Add", []*ir.Value{x, c.Output(0)}, 1, "y")
	g.Outputs = []*ir.Value{a.Output(0)}
	st := runFold(t, model(g, 13), "fold<max-size=1000>")
	if c.Graph() == nil || st.Counts["fold: too large to fold"] == 0 {
		t.Errorf("large ConstantOfShape folded: %v", st.Counts)
	}
	st = runFold(t, model(g, 13), "fold")
	if c.Graph() != nil || st.Counts["fold: folded ConstantOfShape"] != 1 {
		t.Errorf("ConstantOfShape not folded: %v", st.Counts)
	}
	if _, err := pass.Parse("fold<max-size=0>", []*pass.Pass{Pass}); err == nil {
		t.Error("max-size=0 accepted")
	}
}

// Graph outputs computed from constants keep their node (and name).
func TestConstantGraphOutput(t *testing.T) {
	g := ir.NewGraph("g")
	a, _ := g.AddInitializer("a", i64([]int64{1}, 2))
	n := g.Add("Add", []*ir.Value{a, a}, 1, "y")
	g.Outputs = []*ir.Value{n.Output(0)}
	runFold(t, model(g, 13), "fold")
	if n.Graph() == nil || g.Outputs[0].Name != "y" {
		t.Error("graph output folded away")
	}
}

// Folding preserves the computed function: run both graphs with the evaluator.
func TestFoldPreservesValues(t *testing.T) {
	build := func() *ir.Model {
		g := ir.NewGraph("g")
		x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(2), ir.D(3)))
		ids, _ := g.AddInput("ids", ir.TensorOf(ir.Int64, ir.D(2), ir.D(3)))
		c3 := g.Add("Constant", nil, 1, "c3", ir.TensorAttr("value", f32(nil, 3)))
		shape := g.Add("Shape", []*ir.Value{x}, 1, "shape")
		sl := g.Add("Slice", []*ir.Value{shape.Output(0),
			g.Add("Constant", nil, 1, "st", ir.TensorAttr("value", i64([]int64{1}, -1))).Output(0),
			g.Add("Constant", nil, 1, "en", ir.TensorAttr("value", i64([]int64{1}, math.MaxInt64))).Output(0)}, 1, "sl")
		cf := g.Add("Cast", []*ir.Value{sl.Output(0)}, 1, "cf", ir.IntAttr("to", int64(ir.Float)))
		mul := g.Add("Mul", []*ir.Value{cf.Output(0), c3.Output(0)}, 1, "mul")
		sq := g.Add("Sqrt", []*ir.Value{mul.Output(0)}, 1, "sq")
		div := g.Add("Div", []*ir.Value{x, sq.Output(0)}, 1, "scaled")
		ne := g.Add("Equal", []*ir.Value{ids, g.Add("Constant", nil, 1, "z", ir.TensorAttr("value", i64(nil, 0))).Output(0)}, 1, "eq")
		not := g.Add("Not", []*ir.Value{ne.Output(0)}, 1, "not")
		ci := g.Add("Cast", []*ir.Value{not.Output(0)}, 1, "ci", ir.IntAttr("to", int64(ir.Int64)))
		cs := g.Add("CumSum", []*ir.Value{ci.Output(0), g.Add("Constant", nil, 1, "one", ir.TensorAttr("value", i64(nil, 1))).Output(0)}, 1, "cs")
		id := g.Add("Identity", []*ir.Value{div.Output(0)}, 1, "y")
		g.Outputs = []*ir.Value{id.Output(0), cs.Output(0)}
		return model(g, 13)
	}
	in := map[string]*ir.Tensor{
		"x":   f32([]int64{2, 3}, 1, -2, 3.5, 0.25, 1e-3, -7),
		"ids": i64([]int64{2, 3}, 5, 0, 2, 0, 0, 9),
	}
	want, err := evaltest.Run(build(), in)
	if err != nil {
		t.Fatal(err)
	}
	m := build()
	before := m.Graph.NumNodes()
	runFold(t, m, "fold")
	if m.Graph.NumNodes() >= before {
		t.Errorf("nothing folded: %d -> %d", before, m.Graph.NumNodes())
	}
	got, err := evaltest.Run(m, in)
	if err != nil {
		t.Fatal(err)
	}
	for name, w := range want {
		gt := got[name]
		if gt == nil {
			t.Fatalf("output %s missing", name)
		}
		gb, _ := gt.Bytes()
		wb, _ := w.Bytes()
		if gt.DType != w.DType || !bytes.Equal(gb, wb) {
			t.Errorf("output %s differs", name)
		}
	}
}

// Absent optional inputs at the end of a node's list are dropped (the same node; ORT's
// optimizer crashes on LayerNormalization with its bias spelled ""); one in the middle
// stays, and a second run changes nothing.
func TestTrailingAbsentInputs(t *testing.T) {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(2), ir.D(4)))
	w, _ := g.AddInitializer("w", f32([]int64{4}, 1, 2, 3, 4))
	ln := g.Add("LayerNormalization", []*ir.Value{x, w, nil}, 1, "ln")
	clip := g.Add("Clip", []*ir.Value{ln.Output(0), nil, g.NewConst("hi", f32(nil, 1))}, 1, "clip")
	g.Outputs = []*ir.Value{clip.Output(0)}
	m := model(g, 17)
	st := runFold(t, m, "fold")
	if st.Counts["fold: trailing absent inputs dropped"] != 1 || len(ln.Inputs()) != 2 {
		t.Errorf("counts %v, LayerNormalization has %d inputs", st.Counts, len(ln.Inputs()))
	}
	if len(clip.Inputs()) != 3 || clip.Input(1) != nil {
		t.Errorf("Clip's absent min moved: %v", clip.Inputs())
	}
	if st = runFold(t, m, "fold"); st.Changed {
		t.Errorf("second run changed: %v", st.Counts)
	}
}
