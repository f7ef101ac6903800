package qdq

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	"github.com/qcc-dev/qcc/quant/calib"
)

// weightKey is a weight quantized along axis, as read in graph g (nil for the quantized
// constants, which every graph that sees the weight shares).
type weightKey struct {
	v    *ir.Value
	axis int64
	g    *ir.Graph
}

// actKey is an activation as read in graph g: a pair made in one If branch is out of
// scope in the other.
type actKey struct {
	v *ir.Value
	g *ir.Graph
}

// quantWeight are the constants of a quantized weight, in the weight's own graph: its
// per-channel scale and zero point, and the quantized tensor (weights=int8).
type quantWeight struct{ scale, zp, q *ir.Value }

// inserter adds the Q/DQ nodes, sharing one pair per activation tensor and one
// dequantized weight per (weight, axis) in each graph. g is the graph of the node whose
// inputs are being quantized: the new nodes go there, and an activation's scale.
type inserter struct {
	m        *ir.Model
	g        *ir.Graph
	o        *options
	ranges   map[string]float32 // by rangeKey
	weightDQ map[weightKey]*ir.Value
	weightQ  map[weightKey]*quantWeight
	actDQ    map[actKey]*ir.Value
	groups   map[*ir.Node]map[string]bool // new Q/DQ nodes → the groups they serve
	replaced []*ir.Value                  // float weights now read through a DQ
	made     map[actKey]int               // pairs this run made per activation (pairs=per-reader)
	scales   Scales

	pairs, int8W, fp8W, qdqW, already int
}

// qtype is the quantized type dtype selects.
func (o *options) qtype() ir.DataType {
	if o.fp8 {
		return ir.Float8E4M3FN
	}
	return ir.Int8
}

// scaleOf maps a calibrated |max| onto the quantized type's largest value: 127 for
// int8 (symmetric, -128 unused), 448 for float8e4m3fn.
func (o *options) scaleOf(amax float32) float32 {
	if o.fp8 {
		return float32(float64(amax) / ir.Float8E4M3FNMax)
	}
	return calib.Int8Scale(amax)
}

// zeroPoint is a zero point of n zeros in the quantized type (0x00 is 0 in both).
func (o *options) zeroPoint(dims []int64, n int64) *ir.Tensor {
	return ir.NewTensor(o.qtype(), dims, make([]byte, n))
}

// Scales names, for each activation scale qdq made, the tensor it was calibrated on,
// which later passes may rename (fuse does): by the scale initializer's name, and by its
// value for lowerings that remake the initializer (fuse's uint8 form keeps the scale).
// The pass records it for reports, beside the calibration statistics.
type Scales struct {
	ByName  map[string]string
	ByValue map[float32][]string
}

// insert quantizes the inputs of every target that is not skipped.
func (in *inserter) insert(ts []*target) (bool, error) {
	in.groups = map[*ir.Node]map[string]bool{}
	changed := false
	for _, t := range ts {
		if t.skip != "" {
			continue
		}
		group := t.Group()
		in.g = t.node.Graph()
		for _, i := range t.acts {
			x := t.node.Input(i)
			if qdqcheck.Dequantized(x) {
				in.already++
				continue
			}
			t.node.SetInput(i, in.activation(x, group))
			changed = true
		}
		if t.weight < 0 {
			continue
		}
		w := t.node.Input(t.weight)
		if qdqcheck.Dequantized(w) {
			in.already++
			continue
		}
		tensor, _, _ := qdqcheck.WeightTensor(w)
		axis := qdqcheck.WeightAxis(t.node, len(tensor.Dims))
		dq, err := in.weight(w, tensor, axis, group)
		if err != nil {
			return changed, err
		}
		t.node.SetInput(t.weight, dq)
		changed = true
	}
	for n, gs := range in.groups {
		var names []string
		for g := range gs {
			names = append(names, g)
		}
		sort.Strings(names)
		n.SetMeta(qdqcheck.GroupKey, strings.Join(names, ","))
	}
	// Float weights nothing reads any more go.
	for _, w := range in.replaced {
		if len(w.Uses()) > 0 || w.IsGraphOutput() || w.IsGraphInput() || w.Graph() == nil {
			continue
		}
		if p, _ := w.Producer(); p != nil {
			w.Graph().RemoveNode(p)
		} else {
			w.Graph().RemoveValue(w)
		}
	}
	return changed, nil
}

func (in *inserter) serve(group string, nodes ...*ir.Node) {
	for _, n := range nodes {
		if in.groups[n] == nil {
			in.groups[n] = map[string]bool{}
		}
		in.groups[n][group] = true
	}
}

// activation returns x's dequantized value: the pair this run made for x, a pair x
// already has, or a new per-tensor pair. With pairs=per-reader every reader gets a pair
// of its own (same scale), except where x came with a pair.
func (in *inserter) activation(x *ir.Value, group string) *ir.Value {
	key := actKey{x, in.g}
	if dq := in.actDQ[key]; dq != nil && !in.o.perReader {
		p, _ := dq.Producer()
		q, _ := p.Input(0).Producer()
		in.serve(group, q, p)
		return dq
	}
	if in.made[key] == 0 {
		if dq := reusablePair(x, in.g); dq != nil {
			in.actDQ[key] = dq
			in.already++
			return dq
		}
	}
	if in.made == nil {
		in.made = map[actKey]int{}
	}
	base := x.Name
	if k := in.made[key]; k > 0 {
		base = fmt.Sprintf("%s_%d", x.Name, k)
	}
	in.made[key]++
	g := in.g
	rk := rangeKey(x)
	scale := g.NewConst(base+"_scale", ir.FloatTensor(nil, []float32{in.o.scaleOf(in.ranges[rk])}))
	zp := g.NewConst(base+"_zero_point", in.o.zeroPoint(nil, 1))
	in.scales.ByName[scale.Name] = rk
	if v := in.o.scaleOf(in.ranges[rk]); !slices.Contains(in.scales.ByValue[v], rk) {
		in.scales.ByValue[v] = append(in.scales.ByValue[v], rk)
	}
	q, dq := in.pair(x, base, scale, zp, nil)
	in.pairs++
	in.actDQ[key] = dq.Output(0)
	in.serve(group, q, dq)
	return dq.Output(0)
}

// pair adds QuantizeLinear and DequantizeLinear on x, named after base.
func (in *inserter) pair(x *ir.Value, base string, scale, zp *ir.Value, axis *ir.Attr) (q, dq *ir.Node) {
	g := in.g
	qt, dt := (*ir.Type)(nil), (*ir.Type)(nil)
	if x.Type != nil {
		qt, dt = x.Type.Clone(), x.Type.Clone()
		qt.DType = in.o.qtype()
	}
	qo := g.NewValue(base+"_quantized", qt)
	q, _ = g.AddNode(&ir.Node{Name: base + "_QuantizeLinear", OpType: "QuantizeLinear"}, []*ir.Value{x, scale, zp}, []*ir.Value{qo})
	dq = in.dequantize(base, qo, scale, zp, axis, dt)
	if axis != nil {
		q.SetAttr(axis)
	}
	return q, dq
}

func (in *inserter) dequantize(base string, x, scale, zp *ir.Value, axis *ir.Attr, t *ir.Type) *ir.Node {
	out := in.g.NewValue(base+"_dequantized", t)
	dq, _ := in.g.AddNode(&ir.Node{Name: base + "_DequantizeLinear", OpType: "DequantizeLinear"}, []*ir.Value{x, scale, zp}, []*ir.Value{out})
	if axis != nil {
		dq.SetAttr(axis)
	}
	return dq
}

// weight returns w dequantized per output channel (axis): an int8 (dtype=fp8:
// float8e4m3fn) initializer read by a DequantizeLinear (weights=int8), or the float
// weight through a QuantizeLinear/DequantizeLinear pair (weights=qdq). Scales are max|w|
// per channel / 127 (fp8: / 448).
func (in *inserter) weight(w *ir.Value, t *ir.Tensor, axis int64, group string) (*ir.Value, error) {
	key := weightKey{w, axis, in.g}
	if dq := in.weightDQ[key]; dq != nil {
		p, _ := dq.Producer()
		in.serve(group, p)
		if q, _ := p.Input(0).Producer(); q != nil {
			in.serve(group, q)
		}
		return dq, nil
	}
	qw, err := in.weightConsts(w, t, axis)
	if err != nil {
		return nil, err
	}
	ax := ir.IntAttr("axis", axis)
	var dq *ir.Node
	if qw.q != nil {
		dq = in.dequantize(w.Name, qw.q, qw.scale, qw.zp, ax, w.Type.Clone())
		in.serve(group, dq)
	} else {
		var qn *ir.Node
		qn, dq = in.pair(w, w.Name, qw.scale, qw.zp, ax)
		in.qdqW++
		in.serve(group, qn, dq)
	}
	in.weightDQ[key] = dq.Output(0)
	in.replaced = append(in.replaced, w)
	return dq.Output(0), nil
}

// weightConsts makes (once per weight and axis, in the weight's graph, so that every
// branch reading it shares them) the per-channel scale and zero point of w, and with
// weights=int8 the quantized tensor.
func (in *inserter) weightConsts(w *ir.Value, t *ir.Tensor, axis int64) (*quantWeight, error) {
	key := weightKey{w, axis, nil}
	if qw := in.weightQ[key]; qw != nil {
		return qw, nil
	}
	// Read through a clone, so that t keeps no bytes it had to read; the int8 weight is
	// quantized again when a save wants its bytes, and let go once written.
	src := t.Clone()
	vals, err := src.Clone().Float32s()
	if err != nil {
		return nil, fmt.Errorf("quantizing weight %s: %w", w.Name, err)
	}
	scales, _ := quantizeWeight(vals, t.Dims, int(axis), in.o.fp8)
	g := w.Graph()
	channels := t.Dims[axis]
	qw := &quantWeight{
		scale: g.NewConst(w.Name+"_scale", ir.FloatTensor([]int64{channels}, scales)),
		zp:    g.NewConst(w.Name+"_zero_point", in.o.zeroPoint([]int64{channels}, channels)),
	}
	if in.o.int8Weights {
		suffix := "_int8"
		if in.o.fp8 {
			suffix = "_fp8"
			in.fp8W++
		} else {
			in.int8W++
		}
		fp8 := in.o.fp8
		qw.q = g.NewConst(w.Name+suffix, ir.NewLazyTensor(in.o.qtype(), t.Dims, func() ([]byte, error) {
			vals, err := src.Clone().Float32s()
			if err != nil {
				return nil, fmt.Errorf("quantizing weight %s: %w", src.Name, err)
			}
			_, q := quantizeWeight(vals, src.Dims, int(axis), fp8)
			return q, nil
		}))
	}
	in.weightQ[key] = qw
	return qw, nil
}

// quantizeWeight computes per-channel symmetric int8: scale_c = max|w_c|/127 (1 for an
// all-zero channel) and q = round-half-even(w/scale_c) in [-127, 127], the division in
// float32 as QuantizeLinear does it; with fp8, scale_c = max|w_c|/448 and q is w/scale_c
// rounded to float8e4m3fn (to nearest, ties to even, saturating). It returns the scales
// and q's bytes.
func quantizeWeight(w []float32, dims []int64, axis int, fp8 bool) ([]float32, []byte) {
	channels := int(dims[axis])
	inner := 1
	for _, d := range dims[axis+1:] {
		inner *= int(d)
	}
	ch := func(i int) int { return (i / inner) % channels }
	amax := make([]float64, channels)
	for i, v := range w {
		if a := math.Abs(float64(v)); a > amax[ch(i)] {
			amax[ch(i)] = a
		}
	}
	o := &options{fp8: fp8}
	scales := make([]float32, channels)
	for c, a := range amax {
		scales[c] = o.scaleOf(float32(a))
		if !(scales[c] > 0) || math.IsInf(float64(scales[c]), 0) {
			scales[c] = 1
		}
	}
	q := make([]byte, len(w))
	for i, v := range w {
		if fp8 {
			q[i] = ir.Float32ToFloat8E4M3FN(v/scales[ch(i)], true)
			continue
		}
		r := math.RoundToEven(float64(v / scales[ch(i)]))
		q[i] = byte(int8(max(-127, min(127, r))))
	}
	return scales, q
}

// reusablePair returns the DequantizeLinear output of a symmetric int8 or fp8 per-tensor
// Q/DQ pair already on x that a node of graph g can read (in g or a graph around it),
// nil when there is none.
func reusablePair(x *ir.Value, g *ir.Graph) *ir.Value {
	if x == nil {
		return nil
	}
	for _, u := range x.Uses() {
		q := u.Node
		if !qdqcheck.IsOp(q, "QuantizeLinear") || u.Index != 0 || !symmetricZero(q.Input(2)) || !encloses(q.Graph(), g) {
			continue
		}
		if s := constOf(q.Input(1)); s == nil || s.NumElements() != 1 {
			continue
		}
		for _, w := range q.Output(0).Uses() {
			if qdqcheck.IsOp(w.Node, "DequantizeLinear") && w.Index == 0 {
				return w.Node.Output(0)
			}
		}
	}
	return nil
}

// encloses reports whether a value of graph outer is in scope in graph g.
func encloses(outer, g *ir.Graph) bool {
	for ; g != nil; g = g.Parent {
		if g == outer {
			return true
		}
	}
	return false
}

func symmetricZero(zp *ir.Value) bool {
	t := constOf(zp)
	if t == nil || t.DType != ir.Int8 && t.DType != ir.Float8E4M3FN {
		return false
	}
	vals, err := t.Float64s()
	if err != nil {
		return false
	}
	for _, v := range vals {
		if v != 0 {
			return false
		}
	}
	return true
}

func constOf(v *ir.Value) *ir.Tensor {
	if v == nil {
		return nil
	}
	if v.Const != nil {
		return v.Const
	}
	if n, _ := v.Producer(); qdqcheck.IsOp(n, "Constant") {
		if a := n.Attr("value"); a != nil && a.Tensor != nil {
			return a.Tensor
		}
	}
	return nil
}

// foldWeights replaces QuantizeLinear→DequantizeLinear on constant float weights by the
// quantized constant read by the DequantizeLinear nodes (fold-weights=true). It returns
// how many QuantizeLinear nodes it folded.
func foldWeights(g *ir.Graph) int {
	folded := 0
	for _, q := range g.NodesCopy() {
		if !qdqcheck.IsOp(q, "QuantizeLinear") || q.Output(0) == nil {
			continue
		}
		x, s, zp := constOf(q.Input(0)), constOf(q.Input(1)), q.Input(2)
		if x == nil || s == nil || x.DType != ir.Float || !s.DType.IsFloat() || (zp != nil && constOf(zp) == nil) || q.Output(0).IsGraphOutput() {
			continue
		}
		uses := q.Output(0).Uses()
		ok := len(uses) > 0
		for _, u := range uses {
			ok = ok && qdqcheck.IsOp(u.Node, "DequantizeLinear") && u.Index == 0
		}
		if !ok {
			continue
		}
		t, err := quantizeLike(q, x, s, constOf(zp))
		if err != nil {
			continue
		}
		c := g.NewConst(q.Input(0).Name+"_quantized", t)
		for _, u := range uses {
			u.Node.SetInput(0, c)
		}
		w := q.Input(0)
		g.RemoveNode(q)
		if wg := w.Graph(); wg != nil && len(w.Uses()) == 0 && !w.IsGraphInput() && !w.IsGraphOutput() {
			if p, _ := w.Producer(); p != nil {
				wg.RemoveNode(p)
			} else {
				wg.RemoveValue(w)
			}
		}
		folded++
	}
	return folded
}

// quantizeLike computes QuantizeLinear(x, scale, zp) on constants: saturate(round(x/scale)
// + zp), per tensor or along the node's axis, into the zero point's type (uint8 when there
// is none); into float8e4m3fn with a zero zero point only, rounded and saturated as
// QuantizeLinear-19 does.
func quantizeLike(q *ir.Node, x, s, zp *ir.Tensor) (*ir.Tensor, error) {
	xv, err := x.Float32s()
	if err != nil {
		return nil, err
	}
	sv, err := s.Float64s()
	if err != nil {
		return nil, err
	}
	dt := ir.Uint8
	zv := make([]int64, len(sv))
	fp8 := zp != nil && zp.DType == ir.Float8E4M3FN
	if fp8 {
		zf, err := zp.Float64s()
		if err != nil {
			return nil, err
		}
		for _, z := range zf {
			if z != 0 {
				return nil, fmt.Errorf("float8 zero point %g", z)
			}
		}
		zv = make([]int64, len(zf))
	} else if zp != nil {
		dt = zp.DType
		if zv, err = zp.Int64s(); err != nil {
			return nil, err
		}
	}
	lo, hi := int64(0), int64(255)
	switch {
	case fp8:
		dt = ir.Float8E4M3FN
	case dt == ir.Int8:
		lo, hi = -128, 127
	case dt != ir.Uint8:
		return nil, fmt.Errorf("zero point type %s", dt)
	}
	if len(zv) != len(sv) {
		return nil, fmt.Errorf("scale and zero point differ in size")
	}
	ch := func(int) int { return 0 }
	if len(sv) > 1 {
		axis := q.AttrInt("axis", 1)
		if axis < 0 {
			axis += int64(len(x.Dims))
		}
		if axis < 0 || int(axis) >= len(x.Dims) || x.Dims[axis] != int64(len(sv)) {
			return nil, fmt.Errorf("axis does not fit")
		}
		inner := 1
		for _, d := range x.Dims[axis+1:] {
			inner *= int(d)
		}
		ch = func(i int) int { return (i / inner) % len(sv) }
	}
	b := make([]byte, len(xv))
	for i, v := range xv {
		c := ch(i)
		if fp8 {
			b[i] = ir.Float32ToFloat8E4M3FN(v/float32(sv[c]), true)
			continue
		}
		r := int64(math.RoundToEven(float64(v/float32(sv[c])))) + zv[c]
		b[i] = byte(max(lo, min(hi, r)))
	}
	return ir.NewTensor(dt, x.Dims, b), nil
}
