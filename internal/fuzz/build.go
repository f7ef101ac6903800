// Package fuzz is qcc's differential fuzzer: a generator of valid ONNX models
// (deterministic by seed) — random DAGs over the operators the evaluator and the shape
// engine know, and transformer blocks written out the ways exporters write them, with
// mutations that keep the math and near-misses that change it — and an oracle that runs
// every pipeline on them and checks the result with ONNX Runtime: outputs agree, no pass
// panics, the IR verifies, passes are idempotent, round trips are stable, and a near-miss
// is never recognised as the block it imitates. Failures shrink to minimal models stored
// under testdata/fuzz, which a test replays.
package fuzz

import (
	"fmt"
	"math"
	"math/rand"
	"strings"

	"github.com/qcc-dev/qcc/ir"
)

// dim is one dimension as the generator tracks it: a known size or a symbol that stays
// symbolic in the model (a graph input's dim_param).
type dim struct {
	n   int64
	sym string
}

func (d dim) static() bool { return d.sym == "" }

func (d dim) same(e dim) bool { return d.sym == e.sym && (d.sym != "" || d.n == e.n) }

// irDim is the model's dim: an internal symbol (a size the generator cannot name, such
// as the rows of a flattened symbolic shape; "_" first) is written as unknown.
func (d dim) irDim() ir.Dim {
	if strings.HasPrefix(d.sym, "_") {
		return ir.Dim{}
	}
	if d.sym != "" {
		return ir.Sym(d.sym)
	}
	return ir.D(d.n)
}

func sd(n int64) dim { return dim{n: n} }

type shape []dim

func (s shape) clone() shape { return append(shape(nil), s...) }

// static returns the sizes when every dim is known.
func (s shape) static() ([]int64, bool) {
	out := make([]int64, len(s))
	for i, d := range s {
		if !d.static() {
			return nil, false
		}
		out[i] = d.n
	}
	return out, true
}

// broadcast is the numpy broadcast of a and b, ok false when they do not broadcast
// provably (a symbolic dim only meets itself or a static 1).
func broadcast(a, b shape) (shape, bool) {
	n := max(len(a), len(b))
	out := make(shape, n)
	for i := 0; i < n; i++ {
		var da, db dim = sd(1), sd(1)
		if j := len(a) - n + i; j >= 0 {
			da = a[j]
		}
		if j := len(b) - n + i; j >= 0 {
			db = b[j]
		}
		switch {
		case da.same(db):
			out[i] = da
		case da.static() && da.n == 1:
			out[i] = db
		case db.static() && db.n == 1:
			out[i] = da
		default:
			return nil, false
		}
	}
	return out, true
}

// val is a generated value with the type the generator knows it has.
type val struct {
	v  *ir.Value
	dt ir.DataType
	sh shape
}

func (x val) rank() int { return len(x.sh) }

// builder appends nodes to a model's main graph, naming every node (witnesses refer to
// nodes by name) and keeping the generator's types.
type builder struct {
	r     *rand.Rand
	m     *ir.Model
	g     *ir.Graph
	opset int64
	nodes int
	syms  int
}

// fresh returns a new internal symbol for a size the generator does not track.
func (b *builder) fresh(base string) string {
	b.syms++
	return fmt.Sprintf("_%s%d", base, b.syms)
}

func newBuilder(r *rand.Rand, opset int64) *builder {
	g := ir.NewGraph("fuzz")
	m := &ir.Model{IRVersion: 8, Opsets: []ir.OpsetID{{Domain: "", Version: opset}}, ProducerName: "qcc-fuzz", Graph: g}
	return &builder{r: r, m: m, g: g, opset: opset}
}

func irType(dt ir.DataType, sh shape) *ir.Type {
	ds := make([]ir.Dim, len(sh))
	for i, d := range sh {
		ds[i] = d.irDim()
	}
	return ir.TensorOf(dt, ds...)
}

func (b *builder) input(name string, dt ir.DataType, sh shape) val {
	v, err := b.g.AddInput(name, irType(dt, sh))
	if err != nil {
		panic(err) // generator bug: names are chosen fresh
	}
	return val{v, dt, sh}
}

func (b *builder) output(x val) {
	x.v.Type = irType(x.dt, x.sh)
	b.g.Outputs = append(b.g.Outputs, x.v)
}

// node adds op and returns its outputs typed as given, and the node.
func (b *builder) node(op string, ins []val, outs []val, attrs ...*ir.Attr) (*ir.Node, []val) {
	iv := make([]*ir.Value, len(ins))
	for i, x := range ins {
		iv[i] = x.v
	}
	n := b.g.Add(op, iv, len(outs), "t", attrs...)
	b.nodes++
	n.Name = fmt.Sprintf("%s_%d", op, b.nodes)
	for i := range outs {
		outs[i].v = n.Output(i)
	}
	return n, outs
}

// op1 adds a one-output node.
func (b *builder) op1(op string, ins []val, dt ir.DataType, sh shape, attrs ...*ir.Attr) val {
	_, o := b.node(op, ins, []val{{dt: dt, sh: sh}}, attrs...)
	return o[0]
}

// opN is op1 that also returns the node (for witnesses).
func (b *builder) opN(op string, ins []val, dt ir.DataType, sh shape, attrs ...*ir.Attr) (val, *ir.Node) {
	n, o := b.node(op, ins, []val{{dt: dt, sh: sh}}, attrs...)
	return o[0], n
}

func dims64(sh []int64) shape {
	out := make(shape, len(sh))
	for i, n := range sh {
		out[i] = sd(n)
	}
	return out
}

func (b *builder) constF(dims []int64, v []float32) val {
	return val{b.g.NewConst("c", ir.FloatTensor(dims, v)), ir.Float, dims64(dims)}
}

func (b *builder) constI(dims []int64, v []int64) val {
	return val{b.g.NewConst("c", ir.Int64Tensor(dims, v)), ir.Int64, dims64(dims)}
}

func (b *builder) scalarF(f float32) val { return b.constF(nil, []float32{f}) }

func (b *builder) ints(v ...int64) val { return b.constI([]int64{int64(len(v))}, v) }

func numel(dims []int64) int {
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	return n
}

// randF returns n values uniform in [-scale, scale).
func (b *builder) randF(n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32((2*b.r.Float64() - 1) * scale)
	}
	return v
}

// weight is a random constant of the given dims scaled so that a product over its first
// axis keeps magnitudes near 1.
func (b *builder) weight(dims ...int64) val {
	return b.constF(dims, b.randF(numel(dims), math.Sqrt(3/float64(dims[0]))))
}

func (b *builder) randConst(dims []int64, scale float64) val {
	return b.constF(dims, b.randF(numel(dims), scale))
}

// reduce builds a reduction with axes as the attribute or input its opset wants.
func (b *builder) reduce(op string, x val, axes []int64, keep bool) (val, *ir.Node) {
	sh := shape{}
	for i, d := range x.sh {
		in := false
		for _, a := range axes {
			if norm(a, x.rank()) == i {
				in = true
			}
		}
		switch {
		case !in:
			sh = append(sh, d)
		case keep:
			sh = append(sh, sd(1))
		}
	}
	k := int64(0)
	if keep {
		k = 1
	}
	if b.opset >= 18 || (op == "ReduceSum" && b.opset >= 13) {
		return b.opN(op, []val{x, b.ints(axes...)}, x.dt, sh, ir.IntAttr("keepdims", k))
	}
	return b.opN(op, []val{x}, x.dt, sh, ir.IntsAttr("axes", axes...), ir.IntAttr("keepdims", k))
}

func (b *builder) unsqueeze(x val, axes ...int64) val {
	r := x.rank() + len(axes)
	sh := make(shape, 0, r)
	src := 0
	for i := 0; i < r; i++ {
		ins := false
		for _, a := range axes {
			if norm(a, r) == i {
				ins = true
			}
		}
		if ins {
			sh = append(sh, sd(1))
		} else {
			sh = append(sh, x.sh[src])
			src++
		}
	}
	if b.opset < 13 {
		return b.op1("Unsqueeze", []val{x}, x.dt, sh, ir.IntsAttr("axes", axes...))
	}
	return b.op1("Unsqueeze", []val{x, b.ints(axes...)}, x.dt, sh)
}

func (b *builder) transpose(x val, perm ...int64) val {
	sh := make(shape, len(perm))
	for i, p := range perm {
		sh[i] = x.sh[p]
	}
	return b.op1("Transpose", []val{x}, x.dt, sh, ir.IntsAttr("perm", perm...))
}

func (b *builder) cast(x val, to ir.DataType) val {
	return b.op1("Cast", []val{x}, to, x.sh, ir.IntAttr("to", int64(to)))
}

func norm(a int64, r int) int {
	if a < 0 {
		return int(a) + r
	}
	return int(a)
}

// shapeOf returns Shape(x) (int64[rank]).
func (b *builder) shapeOf(x val) val {
	return b.op1("Shape", []val{x}, ir.Int64, shape{sd(int64(x.rank()))})
}

// dimOf returns Gather(Shape(x), axis) as a 1-D int64[1] (Unsqueeze of the scalar, as
// exporters write it).
func (b *builder) dimOf(x val, axis int) val {
	g := b.op1("Gather", []val{b.shapeOf(x), b.constI(nil, []int64{int64(axis)})}, ir.Int64, shape{}, ir.IntAttr("axis", 0))
	return b.unsqueeze(g, 0)
}
