package fold

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

const ortTol = 1e-5

// halfTol bounds a float16 chain that fold rounds between ops: a few float16 ulps of the
// chain's values (below 8).
const halfTol = 1e-2

// TestFoldORT checks with ONNX Runtime that folding preserves every corpus model's
// outputs, and that the repaired DeBERTa opset-11 exports (which ORT refuses as exported)
// load and compute what their opset-13 siblings compute.
func TestFoldORT(t *testing.T) {
	orttest.RequireLib(t)
	tmp := t.TempDir()
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		if cm.Inputs == "" {
			continue
		}
		t.Run(cm.Name, func(t *testing.T) {
			in := ortcheck.Inputs(t, cm)
			m := ortcheck.Load(t, cm.Path)
			if _, err := Run(m, Options{}); err != nil {
				t.Fatal(err)
			}
			folded := ortcheck.Save(t, m, tmp, cm.Name+".folded.onnx")
			got := ortcheck.Run(t, folded, in, ort.OptDisabled)
			if cm.Sub == "invalid" {
				if s, err := ort.NewSession(cm.Path, ort.Options{}); err == nil {
					s.Close()
					t.Errorf("ONNX Runtime accepts the unrepaired %s; the test no longer shows the repair", cm.Name)
				}
				sibling := ortcheck.Reference(cm)
				if _, err := os.Stat(sibling); err != nil {
					t.Fatalf("no opset-13 sibling for %s", cm.Name)
				}
				want := ortcheck.Run(t, sibling, in, ort.OptDisabled)
				ortcheck.CheckOutputs(t, "repaired vs opset-13 export (ORT)", want, got, ortTol)
				ref, err := npz.Read(strings.TrimSuffix(sibling, ".onnx") + ".outputs.npz")
				if err != nil {
					t.Fatal(err)
				}
				ortcheck.CheckOutputs(t, "repaired vs opset-13 reference outputs", ref, got, ortTol)
				return
			}
			want := ortcheck.Run(t, cm.Path, in, ort.OptDisabled)
			ortcheck.CheckOutputs(t, "folded vs original (ORT)", want, got, ortTol)
		})
	}
}

// halfCase is one op on the narrow float type whose inputs are all initializers.
type halfCase struct {
	op    string
	dims  [][]int64 // of the narrow float inputs
	axes  []int64   // an int64 input after them when not nil
	attrs []*ir.Attr
}

// halfModel builds a graph computing each case from seeded random initializers of the
// narrow float type dt, times an input one of shape [1] (exact, and not foldable: the
// case's value reaches a graph output unchanged), then chain = ReduceMean(MatMul) + x,
// whose intermediate rounding fold keeps. Two calls build the same model.
func halfModel(t *testing.T, opset int64, dt ir.DataType, cases []halfCase) *ir.Model {
	t.Helper()
	r := rand.New(rand.NewPCG(1, uint64(opset)))
	g := ir.NewGraph("g")
	one, _ := g.AddInput("one", ir.TensorOf(dt, ir.D(1)))
	x, _ := g.AddInput("x", ir.TensorOf(dt, ir.D(3), ir.D(1)))
	random := func(dims ...int64) *ir.Value {
		n, _ := ndarray.NumElements(dims)
		vs := make([]float64, n)
		for i := range vs {
			vs[i] = 2*r.Float64() - 1
		}
		return g.NewConst("w", narrow(t, dt, dims, vs...))
	}
	node := func(c halfCase, ins ...*ir.Value) *ir.Value {
		for _, d := range c.dims {
			ins = append(ins, random(d...))
		}
		if c.axes != nil {
			ins = append(ins, g.NewConst("axes", i64([]int64{int64(len(c.axes))}, c.axes...)))
		}
		return g.Add(c.op, ins, 1, c.op, c.attrs...).Output(0)
	}
	for i, c := range cases {
		y := g.Add("Mul", []*ir.Value{node(c), one}, 1, fmt.Sprintf("y%d", i))
		g.Outputs = append(g.Outputs, y.Output(0))
	}
	mean := halfCase{op: "ReduceMean", axes: []int64{1}}
	if opset < 18 {
		mean = halfCase{op: "ReduceMean", attrs: []*ir.Attr{ir.IntsAttr("axes", 1)}}
	}
	mm := node(halfCase{op: "MatMul", dims: [][]int64{{3, 40}, {40, 6}}})
	chain := g.Add("Add", []*ir.Value{node(mean, mm), x}, 1, "chain")
	g.Outputs = append(g.Outputs, chain.Output(0))
	return model(g, opset)
}

// narrow is a tensor of the narrow float type dt holding vs, each rounded once.
func narrow(t *testing.T, dt ir.DataType, dims []int64, vs ...float64) *ir.Tensor {
	c, err := ir.FloatsTensor(dt, dims, vs)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFoldHalfORT folds float16 and bfloat16 MatMuls and reductions of initializers and
// checks with ONNX Runtime that every folded value is the one it computes, bit for bit
// (checkNarrowFold).
func TestFoldHalfORT(t *testing.T) {
	orttest.RequireLib(t)
	keep := func(k int64) *ir.Attr { return ir.IntAttr("keepdims", k) }
	matmuls := []halfCase{
		{op: "MatMul", dims: [][]int64{{3, 5}, {5, 7}}},
		{op: "MatMul", dims: [][]int64{{2, 1, 3, 4}, {3, 4, 5}}}, // batch broadcast both ways
		{op: "MatMul", dims: [][]int64{{9}, {2, 9, 3}}},          // vector times a batch
		{op: "MatMul", dims: [][]int64{{4, 300}, {300}}},         // long sums
	}
	for _, tc := range []struct {
		opset int64
		cases []halfCase
	}{
		{13, append(matmuls,
			halfCase{op: "ReduceSum", dims: [][]int64{{3, 7, 5}}, axes: []int64{1}, attrs: []*ir.Attr{keep(0)}},
			halfCase{op: "ReduceSum", dims: [][]int64{{3, 7, 5}}, axes: []int64{}},
			halfCase{op: "ReduceMean", dims: [][]int64{{3, 7, 5}}, attrs: []*ir.Attr{ir.IntsAttr("axes", -1)}},
			halfCase{op: "ReduceMean", dims: [][]int64{{3, 7, 5}}, attrs: []*ir.Attr{ir.IntsAttr("axes", 0, 2), keep(0)}},
			halfCase{op: "ReduceMax", dims: [][]int64{{4, 9}}, attrs: []*ir.Attr{ir.IntsAttr("axes", 1)}},
			halfCase{op: "ReduceMin", dims: [][]int64{{4, 9}}, attrs: []*ir.Attr{keep(0)}},
			halfCase{op: "ReduceProd", dims: [][]int64{{5, 3}}, attrs: []*ir.Attr{ir.IntsAttr("axes", 0)}},
		)},
		{18, []halfCase{
			{op: "ReduceSum", dims: [][]int64{{2, 200}}, axes: []int64{-1}, attrs: []*ir.Attr{keep(0)}},
			{op: "ReduceMean", dims: [][]int64{{3, 7, 5}}, axes: []int64{0, 2}},
			{op: "ReduceMean", dims: [][]int64{{6, 130}}, axes: []int64{1}, attrs: []*ir.Attr{keep(0)}},
			{op: "ReduceMax", dims: [][]int64{{4, 9}}, axes: []int64{0}},
			{op: "ReduceMin", dims: [][]int64{{4, 9}}, axes: []int64{1}, attrs: []*ir.Attr{keep(0)}},
			{op: "ReduceProd", dims: [][]int64{{5, 3}}, axes: []int64{1}},
		}},
	} {
		for _, dt := range []ir.DataType{ir.Float16, ir.BFloat16} {
			t.Run(fmt.Sprintf("%s-opset%d", dt, tc.opset), func(t *testing.T) {
				checkNarrowFold(t, dt, len(tc.cases)+2, func() *ir.Model { return halfModel(t, tc.opset, dt, tc.cases) })
			})
		}
	}
}

// TestFoldNarrowCastORT: a Cast of float32 constants to float16 and bfloat16 folds to the
// bits ONNX Runtime's Cast computes: ties to even, overflow to infinity, subnormals.
func TestFoldNarrowCastORT(t *testing.T) {
	orttest.RequireLib(t)
	vals := []float32{1 + 1.0/256, 1 + 3.0/256, -(1 + 1.0/256), 1 + 1.0/2048, 1 + 3.0/2048, 3.4028235e38, 65520, 1e-40, 1e-7, 0.1}
	for _, dt := range []ir.DataType{ir.Float16, ir.BFloat16} {
		t.Run(dt.String(), func(t *testing.T) {
			checkNarrowFold(t, dt, 1, func() *ir.Model {
				g := ir.NewGraph("g")
				one, _ := g.AddInput("one", ir.TensorOf(dt, ir.D(1)))
				x, _ := g.AddInput("x", ir.TensorOf(dt, ir.D(3), ir.D(1)))
				c := g.Add("Cast", []*ir.Value{g.NewConst("c", f32([]int64{int64(len(vals))}, vals...))}, 1, "cast", ir.IntAttr("to", int64(dt)))
				y := g.Add("Mul", []*ir.Value{c.Output(0), one}, 1, "y")
				g.Outputs = []*ir.Value{y.Output(0), g.Add("Mul", []*ir.Value{x, one}, 1, "x1").Output(0)}
				return model(g, 13)
			})
		})
	}
}

// checkNarrowFold folds a model of build (inputs one [1] and x [3,1] of the narrow float
// type dt), expects folded nodes fewer, and checks its outputs against the original's in
// ONNX Runtime: equal with every dt node computed in float32 and rounded
// (ortcheck.Emulate, how GPU kernels compute; ORT's CPU provider has no bfloat16
// kernels), and for float16 equal as the CPU provider computes them natively, but for an
// output named chain, which stays within halfTol (ORT drops the float16 rounding between
// the chain's ops, which fold keeps).
func checkNarrowFold(t *testing.T, dt ir.DataType, folded int, build func() *ir.Model) {
	t.Helper()
	in := map[string]*ndarray.Array{}
	for name, c := range map[string]*ir.Tensor{"one": narrow(t, dt, []int64{1}, 1), "x": narrow(t, dt, []int64{3, 1}, 0.5, -1.25, 2)} {
		b, _ := c.Bytes()
		in[name] = &ndarray.Array{DType: ndarray.DType(dt), Shape: c.Dims, Data: b}
	}
	orig, m := build(), build()
	before := m.Graph.NumNodes()
	runFold(t, m, "fold")
	if after := m.Graph.NumNodes(); after != before-folded {
		t.Errorf("%d nodes folded to %d, want %d:\n%s", before, after, before-folded, ortcheck.Text(t, m))
	}
	want := ortcheck.RunEmulated(t, orig, dt, in, ort.OptDisabled)
	ortcheck.CheckOutputs(t, "folded vs original (ORT, emulated)", want, ortcheck.RunEmulated(t, m, dt, in, ort.OptDisabled), 0)
	if dt != ir.Float16 {
		return
	}
	want = ortcheck.RunModel(t, orig, in, ort.OptDisabled)
	got := ortcheck.RunModel(t, m, in, ort.OptDisabled)
	if w, ok := want["chain"]; ok {
		ortcheck.CheckOutputs(t, "folded chain vs original (ORT)", map[string]*ndarray.Array{"chain": w}, got, halfTol)
		delete(want, "chain")
	}
	ortcheck.CheckOutputs(t, "folded vs original (ORT)", want, got, 0)
}

// TestFoldHalfCorpusORT folds each corpus model exported in float16 (ortcheck.Halve) and
// checks that it keeps no more MatMuls and reductions than the float32 export folded (the
// constant ones, such as DeBERTa-v2's projected relative embeddings, are computed), and
// that ONNX Runtime computes the same outputs from both, every float16 node computed in
// float32 and rounded (ortcheck.Emulate, as fold computes them).
func TestFoldHalfCorpusORT(t *testing.T) {
	orttest.RequireLib(t)
	summed := []string{"MatMul", "Gemm", "ReduceSum", "ReduceMean", "ReduceProd", "ReduceMax", "ReduceMin"}
	for _, cm := range corpus.Models(t, "", "trained") {
		if cm.Inputs == "" {
			continue
		}
		t.Run(cm.Name, func(t *testing.T) {
			in := map[string]*ndarray.Array{}
			for k, a := range ortcheck.Inputs(t, cm) {
				if a.DType == ndarray.Float32 {
					a = ndarray.FromFloat16(a.Shape, a.Float32s())
				}
				in[k] = a
			}
			full := ortcheck.Load(t, cm.Path)
			if _, err := Run(full, Options{}); err != nil {
				t.Fatal(err)
			}
			orig, err := ortcheck.Halve(ortcheck.Load(t, cm.Path))
			if err != nil {
				t.Fatal(err)
			}
			want := ortcheck.RunEmulated(t, orig, ir.Float16, in, ort.OptDisabled)
			m, _ := ortcheck.Halve(ortcheck.Load(t, cm.Path))
			if _, err := Run(m, Options{}); err != nil {
				t.Fatal(err)
			}
			before, after, float32s := ortcheck.Ops(orig.Graph), ortcheck.Ops(m.Graph), ortcheck.Ops(full.Graph)
			for _, op := range summed {
				if after[op] > float32s[op] {
					t.Errorf("%d %s left in float16, %d in float32 (%d before folding)", after[op], op, float32s[op], before[op])
				} else if after[op] < before[op] {
					t.Logf("%s: %d folded to %d", op, before[op], after[op])
				}
			}
			got := ortcheck.RunEmulated(t, m, ir.Float16, in, ort.OptDisabled)
			ortcheck.CheckOutputs(t, "folded vs original float16 (ORT, emulated)", want, got, 0)
		})
	}
}
