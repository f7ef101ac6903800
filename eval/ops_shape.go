package eval

import (
	"fmt"
	"math"
	"sort"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
)

// pick builds an output whose element i is element idx[i] of b.
func pick(b []byte, esz int, idx []int) []byte {
	out := make([]byte, len(idx)*esz)
	if esz == 1 {
		for i, j := range idx {
			out[i] = b[j]
		}
		return out
	}
	for i, j := range idx {
		copy(out[i*esz:(i+1)*esz], b[j*esz:(j+1)*esz])
	}
	return out
}

// iterIndex calls f for every multi-index of dims in row-major order, with the flat index.
func iterIndex(dims []int64, f func(flat int, ix []int64)) {
	n := numel(dims)
	ix := make([]int64, len(dims))
	for i := 0; i < n; i++ {
		f(i, ix)
		for k := len(dims) - 1; k >= 0; k-- {
			ix[k]++
			if ix[k] < dims[k] {
				break
			}
			ix[k] = 0
		}
	}
}

// ShapeRange returns the [start, end) of Shape's start/end attributes (opset 15) for a
// tensor of the given rank, after the clamping the spec prescribes.
func ShapeRange(n *ir.Node, rank int, opset int64) (int, int) {
	if opset < 15 {
		return 0, rank
	}
	clamp := func(v int64) int {
		if v < 0 {
			v += int64(rank)
		}
		return int(min(max(v, 0), int64(rank)))
	}
	s := clamp(n.AttrInt("start", 0))
	e := rank
	if a := n.Attr("end"); a != nil && a.Type == ir.AttrInt {
		e = clamp(a.Int)
	}
	if e < s {
		e = s
	}
	return s, e
}

func evalShape(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	s, e := ShapeRange(c.n, len(x.Dims), c.opset)
	dims := cloneDims(x.Dims[s:e])
	return []*ir.Tensor{ir.Int64Tensor([]int64{int64(len(dims))}, dims)}, nil
}

func evalSize(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	return []*ir.Tensor{ir.Int64Tensor(nil, []int64{x.NumElements()})}, nil
}

func evalIdentity(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	t := x.Clone()
	t.Name = ""
	return []*ir.Tensor{t}, nil
}

func evalGather(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, it, err := c.in2(in)
	if err != nil {
		return nil, err
	}
	if len(x.Dims) == 0 {
		return nil, fmt.Errorf("data must have rank >= 1")
	}
	axis, err := normAxis(c.n.AttrInt("axis", 0), len(x.Dims))
	if err != nil {
		return nil, err
	}
	idx, err := int64s(it)
	if err != nil {
		return nil, fmt.Errorf("indices: %w", err)
	}
	dim := x.Dims[axis]
	for i, v := range idx {
		if v < -dim || v >= dim {
			return nil, fmt.Errorf("index %d out of range for axis of size %d", v, dim)
		}
		if v < 0 {
			idx[i] = v + dim
		}
	}
	outDims := append(append(cloneDims(x.Dims[:axis]), it.Dims...), x.Dims[axis+1:]...)
	if _, err := c.check(outDims); err != nil {
		return nil, err
	}
	b, esz, err := raw(x)
	if err != nil {
		return nil, err
	}
	outer := numel(x.Dims[:axis])
	inner := numel(x.Dims[axis+1:])
	out := make([]byte, 0, outer*len(idx)*inner*esz)
	for o := 0; o < outer; o++ {
		for _, k := range idx {
			start := (o*int(dim) + int(k)) * inner * esz
			out = append(out, b[start:start+inner*esz]...)
		}
	}
	return []*ir.Tensor{ir.NewTensor(x.DType, outDims, out)}, nil
}

// axesOf reads the axes of Unsqueeze/Squeeze/Reduce*: an attribute before opset
// attrUntil, the input inputIdx from then on. ok is false when absent.
func (c *call) axesOf(in []*ir.Tensor, inputIdx int, attrUntil int64) ([]int64, bool, error) {
	if c.opset < attrUntil {
		a, ok := c.n.AttrInts("axes")
		return a, ok, nil
	}
	t := opt(in, inputIdx)
	if t == nil {
		return nil, false, nil
	}
	a, err := int64s(t)
	if err != nil {
		return nil, false, fmt.Errorf("axes: %w", err)
	}
	return a, true, nil
}

func reshaped(x *ir.Tensor, dims []int64) *ir.Tensor {
	t := x.Clone()
	t.Name = ""
	t.Dims = dims
	return t
}

func evalUnsqueeze(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	axes, ok, err := c.axesOf(in, 1, 13)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("axes are required")
	}
	dims, err := UnsqueezeDims(x.Dims, axes)
	if err != nil {
		return nil, err
	}
	return []*ir.Tensor{reshaped(x, dims)}, nil
}

// UnsqueezeDims returns the shape after inserting 1s at axes (relative to the output rank).
func UnsqueezeDims(dims []int64, axes []int64) ([]int64, error) {
	rank := len(dims) + len(axes)
	ks, err := normAxes(axes, rank)
	if err != nil {
		return nil, err
	}
	ins := make([]bool, rank)
	for _, k := range ks {
		ins[k] = true
	}
	out := make([]int64, 0, rank)
	j := 0
	for k := 0; k < rank; k++ {
		if ins[k] {
			out = append(out, 1)
		} else {
			out = append(out, dims[j])
			j++
		}
	}
	return out, nil
}

func evalSqueeze(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	axes, ok, err := c.axesOf(in, 1, 13)
	if err != nil {
		return nil, err
	}
	drop := make([]bool, len(x.Dims))
	if !ok {
		for i, d := range x.Dims {
			drop[i] = d == 1
		}
	}
	for _, a := range axes {
		k, err := normAxis(a, len(x.Dims))
		if err != nil {
			return nil, err
		}
		if x.Dims[k] != 1 {
			return nil, fmt.Errorf("cannot squeeze axis %d of size %d", a, x.Dims[k])
		}
		drop[k] = true
	}
	dims := []int64{}
	for i, d := range x.Dims {
		if !drop[i] {
			dims = append(dims, d)
		}
	}
	return []*ir.Tensor{reshaped(x, dims)}, nil
}

func evalConcat(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	ts, err := present(in)
	if err != nil {
		return nil, err
	}
	a := c.n.Attr("axis")
	if a == nil {
		return nil, fmt.Errorf("axis is required")
	}
	rank := len(ts[0].Dims)
	axis, err := normAxis(a.Int, rank)
	if err != nil {
		return nil, err
	}
	outDims := cloneDims(ts[0].Dims)
	outDims[axis] = 0
	for _, t := range ts {
		if t.DType != ts[0].DType {
			return nil, fmt.Errorf("mixed types %s and %s", ts[0].DType, t.DType)
		}
		if len(t.Dims) != rank {
			return nil, fmt.Errorf("rank mismatch")
		}
		for k, d := range t.Dims {
			if k != axis && d != ts[0].Dims[k] {
				return nil, fmt.Errorf("shape mismatch %v vs %v", ts[0].Dims, t.Dims)
			}
		}
		outDims[axis] += t.Dims[axis]
	}
	if _, err := c.check(outDims); err != nil {
		return nil, err
	}
	outer := numel(outDims[:axis])
	var out []byte
	bs := make([][]byte, len(ts))
	esz := 0
	for i, t := range ts {
		if bs[i], esz, err = raw(t); err != nil {
			return nil, err
		}
	}
	for o := 0; o < outer; o++ {
		for i, t := range ts {
			chunk := numel(t.Dims[axis:]) * esz
			out = append(out, bs[i][o*chunk:(o+1)*chunk]...)
		}
	}
	if out == nil {
		out = []byte{}
	}
	return []*ir.Tensor{ir.NewTensor(ts[0].DType, outDims, out)}, nil
}

// SliceIndices returns the indices Slice selects along an axis of size dim, after the
// negative-index adjustment and clamping of the ONNX spec. step must not be 0.
func SliceIndices(dim, start, end, step int64) []int64 {
	if start < 0 {
		start += dim
	}
	if end < 0 {
		end += dim
	}
	if step > 0 {
		start = min(max(start, 0), dim)
		end = min(max(end, 0), dim)
	} else {
		start = min(max(start, 0), dim-1)
		end = min(max(end, -1), dim-1)
	}
	var out []int64
	if step > 0 {
		for i := start; i < end; i += step {
			out = append(out, i)
		}
	} else {
		for i := start; i > end; i += step {
			out = append(out, i)
		}
	}
	return out
}

// SliceParams reads a Slice node's starts, ends, axes and steps (attributes before opset
// 10, inputs from then on) for a data tensor of the given rank; axes are normalised and
// omitted axes/steps filled in. get returns the value of input i, present false when the
// input is omitted (it returns an error when the value is not known).
func SliceParams(n *ir.Node, rank int, opset int64, get func(i int) (v []int64, present bool, err error)) (starts, ends, axes, steps []int64, err error) {
	if opset < 10 {
		var ok bool
		if starts, ok = n.AttrInts("starts"); !ok {
			return nil, nil, nil, nil, fmt.Errorf("starts are required")
		}
		if ends, ok = n.AttrInts("ends"); !ok {
			return nil, nil, nil, nil, fmt.Errorf("ends are required")
		}
		axes, _ = n.AttrInts("axes")
	} else {
		vals := make([][]int64, 4)
		for i := 0; i < 4; i++ {
			v, present, err := get(i + 1)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			if present {
				vals[i] = v
			}
		}
		starts, ends, axes, steps = vals[0], vals[1], vals[2], vals[3]
		if starts == nil || ends == nil {
			return nil, nil, nil, nil, fmt.Errorf("starts and ends are required")
		}
	}
	if len(starts) != len(ends) {
		return nil, nil, nil, nil, fmt.Errorf("starts and ends differ in length")
	}
	if axes == nil {
		axes = make([]int64, len(starts))
		for i := range axes {
			axes[i] = int64(i)
		}
	} else {
		axes = cloneDims(axes)
	}
	if steps == nil {
		steps = make([]int64, len(starts))
		for i := range steps {
			steps[i] = 1
		}
	}
	if len(axes) != len(starts) || len(steps) != len(starts) {
		return nil, nil, nil, nil, fmt.Errorf("axes/steps differ in length from starts")
	}
	seen := map[int64]bool{}
	for i, a := range axes {
		k, err := normAxis(a, rank)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		if seen[int64(k)] {
			return nil, nil, nil, nil, fmt.Errorf("axis %d repeated", a)
		}
		seen[int64(k)] = true
		axes[i] = int64(k)
		if steps[i] == 0 {
			return nil, nil, nil, nil, fmt.Errorf("step 0")
		}
	}
	return starts, ends, axes, steps, nil
}

func evalSlice(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	get := func(i int) ([]int64, bool, error) {
		t := opt(in, i)
		if t == nil {
			return nil, false, nil
		}
		v, err := int64s(t)
		return v, true, err
	}
	starts, ends, axes, steps, err := SliceParams(c.n, len(x.Dims), c.opset, get)
	if err != nil {
		return nil, err
	}
	sel := make([][]int64, len(x.Dims))
	for i, d := range x.Dims {
		sel[i] = make([]int64, d)
		for k := range sel[i] {
			sel[i][k] = int64(k)
		}
	}
	for i, a := range axes {
		sel[a] = SliceIndices(x.Dims[a], starts[i], ends[i], steps[i])
	}
	outDims := make([]int64, len(x.Dims))
	for i := range sel {
		outDims[i] = int64(len(sel[i]))
	}
	return selectIndices(c, x, sel, outDims)
}

// selectIndices builds the tensor whose element at multi-index ix is x[sel[0][ix0], ...].
func selectIndices(c *call, x *ir.Tensor, sel [][]int64, outDims []int64) ([]*ir.Tensor, error) {
	if _, err := c.check(outDims); err != nil {
		return nil, err
	}
	st := strides(x.Dims)
	return pickAt(x, outDims, func(ix []int64) (off int) {
		for k, v := range ix {
			off += int(sel[k][v]) * st[k]
		}
		return off
	})
}

// pickAt builds the tensor of shape outDims whose element at multi-index ix is the
// element of x at flat index at(ix).
func pickAt(x *ir.Tensor, outDims []int64, at func(ix []int64) int) ([]*ir.Tensor, error) {
	b, esz, err := raw(x)
	if err != nil {
		return nil, err
	}
	idx := make([]int, numel(outDims))
	iterIndex(outDims, func(flat int, ix []int64) { idx[flat] = at(ix) })
	return []*ir.Tensor{ir.NewTensor(x.DType, outDims, pick(b, esz, idx))}, nil
}

// ReshapeDims resolves a Reshape target (0 copies the input dim unless allowzero, -1 is
// inferred) for an input of the given shape.
func ReshapeDims(in, shape []int64, allowZero bool) ([]int64, error) {
	out := cloneDims(shape)
	infer := -1
	prod := int64(1)
	for i, d := range out {
		switch {
		case d == -1:
			if infer >= 0 {
				return nil, fmt.Errorf("more than one -1 in shape %v", shape)
			}
			infer = i
			continue
		case d == 0 && !allowZero:
			if i >= len(in) {
				return nil, fmt.Errorf("shape %v copies dim %d of a rank-%d input", shape, i, len(in))
			}
			out[i] = in[i]
		case d < 0:
			return nil, fmt.Errorf("invalid dim %d in shape %v", d, shape)
		}
		prod *= out[i]
	}
	total := int64(numel(in))
	if infer >= 0 {
		if prod == 0 || total%prod != 0 {
			return nil, fmt.Errorf("cannot reshape %v to %v", in, shape)
		}
		out[infer] = total / prod
	} else if prod != total {
		return nil, fmt.Errorf("cannot reshape %v to %v", in, shape)
	}
	return out, nil
}

func evalReshape(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	if c.opset < 5 {
		return nil, fmt.Errorf("opset %d Reshape (shape attribute) is not supported", c.opset)
	}
	shape, err := c.ints(in, 1)
	if err != nil {
		return nil, err
	}
	allowZero := c.opset >= 14 && c.n.AttrInt("allowzero", 0) != 0
	dims, err := ReshapeDims(x.Dims, shape, allowZero)
	if err != nil {
		return nil, err
	}
	return []*ir.Tensor{reshaped(x, dims)}, nil
}

func evalExpand(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	shape, err := c.ints(in, 1)
	if err != nil {
		return nil, err
	}
	outDims, err := c.broadcast(x.Dims, shape)
	if err != nil {
		return nil, err
	}
	b, esz, err := raw(x)
	if err != nil {
		return nil, err
	}
	return []*ir.Tensor{ir.NewTensor(x.DType, outDims, pick(b, esz, bcastIndex(outDims, x.Dims)))}, nil
}

func evalTile(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	reps, err := c.ints(in, 1)
	if err != nil {
		return nil, err
	}
	if len(reps) != len(x.Dims) {
		return nil, fmt.Errorf("repeats %v do not match rank %d", reps, len(x.Dims))
	}
	sel := make([][]int64, len(x.Dims))
	outDims := make([]int64, len(x.Dims))
	for i, d := range x.Dims {
		if reps[i] < 0 {
			return nil, fmt.Errorf("negative repeat %d", reps[i])
		}
		if d != 0 && reps[i] > math.MaxInt64/d {
			return nil, fmt.Errorf("repeat %d of dimension %d overflows", reps[i], d)
		}
		outDims[i] = d * reps[i]
		// Each axis's index list is allocated on its own, so it is checked on its own
		// too: a zero-sized axis elsewhere would let a huge one pass the product check.
		if _, err := c.check(outDims[:i+1]); err != nil {
			return nil, err
		}
		if _, err := c.check(outDims[i : i+1]); err != nil {
			return nil, err
		}
		sel[i] = make([]int64, outDims[i])
		for k := range sel[i] {
			sel[i][k] = int64(k) % d
		}
	}
	return selectIndices(c, x, sel, outDims)
}

func evalTranspose(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	rank := len(x.Dims)
	perm, ok := c.n.AttrInts("perm")
	if !ok {
		perm = make([]int64, rank)
		for i := range perm {
			perm[i] = int64(rank - 1 - i)
		}
	}
	if len(perm) != rank {
		return nil, fmt.Errorf("perm %v does not match rank %d", perm, rank)
	}
	seen := make([]bool, rank)
	outDims := make([]int64, rank)
	for i, p := range perm {
		if p < 0 || p >= int64(rank) || seen[p] {
			return nil, fmt.Errorf("invalid perm %v", perm)
		}
		seen[p] = true
		outDims[i] = x.Dims[p]
	}
	st := strides(x.Dims)
	return pickAt(x, outDims, func(ix []int64) (off int) {
		for k, v := range ix {
			off += int(v) * st[perm[k]]
		}
		return off
	})
}

func evalConstant(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	if len(c.n.Attrs) != 1 {
		return nil, fmt.Errorf("expected exactly one value attribute, got %d", len(c.n.Attrs))
	}
	a := c.n.Attrs[0]
	var t *ir.Tensor
	switch {
	case a.Name == "value" && a.Type == ir.AttrTensor && a.Tensor != nil:
		t = a.Tensor.Clone()
		t.Name = ""
	case a.Name == "value_float" && a.Type == ir.AttrFloat:
		t = ir.FloatTensor(nil, []float32{a.Float})
	case a.Name == "value_floats" && a.Type == ir.AttrFloats:
		t = ir.FloatTensor([]int64{int64(len(a.Floats))}, append([]float32{}, a.Floats...))
	case a.Name == "value_int" && a.Type == ir.AttrInt:
		t = ir.Int64Tensor(nil, []int64{a.Int})
	case a.Name == "value_ints" && a.Type == ir.AttrInts:
		t = ir.Int64Tensor([]int64{int64(len(a.Ints))}, append([]int64{}, a.Ints...))
	default:
		return nil, fmt.Errorf("attribute %s is not supported", a.Name)
	}
	if t.DType == ir.String {
		return nil, fmt.Errorf("string constants are not supported")
	}
	return []*ir.Tensor{t}, nil
}

func evalConstantOfShape(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	shape, err := c.ints(in, 0)
	if err != nil {
		return nil, err
	}
	n, err := c.check(shape)
	if err != nil {
		return nil, err
	}
	val := ir.FloatTensor([]int64{1}, []float32{0})
	if a := c.n.Attr("value"); a != nil && a.Tensor != nil {
		val = a.Tensor
	}
	if val.NumElements() != 1 {
		return nil, fmt.Errorf("value must have one element")
	}
	b, esz, err := raw(val)
	if err != nil {
		return nil, err
	}
	out := make([]byte, n*esz)
	for i := 0; i < n; i++ {
		copy(out[i*esz:], b)
	}
	return []*ir.Tensor{ir.NewTensor(val.DType, cloneDims(shape), out)}, nil
}

func evalWhere(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	var ts [3]*ir.Tensor
	for i := range ts {
		t, err := c.in(in, i)
		if err != nil {
			return nil, err
		}
		ts[i] = t
	}
	cond, x, y := ts[0], ts[1], ts[2]
	if cond.DType != ir.Bool {
		return nil, fmt.Errorf("condition is %s, not bool", cond.DType)
	}
	if x.DType != y.DType {
		return nil, fmt.Errorf("mixed types %s and %s", x.DType, y.DType)
	}
	outDims, err := c.broadcast(cond.Dims, x.Dims, y.Dims)
	if err != nil {
		return nil, err
	}
	cb, _, err := raw(cond)
	if err != nil {
		return nil, err
	}
	xb, esz, err := raw(x)
	if err != nil {
		return nil, err
	}
	yb, _, err := raw(y)
	if err != nil {
		return nil, err
	}
	ci, xi, yi := bcastIndex(outDims, cond.Dims), bcastIndex(outDims, x.Dims), bcastIndex(outDims, y.Dims)
	out := make([]byte, len(ci)*esz)
	for i := range ci {
		src, j := yb, yi[i]
		if cb[ci[i]] != 0 {
			src, j = xb, xi[i]
		}
		copy(out[i*esz:(i+1)*esz], src[j*esz:(j+1)*esz])
	}
	return []*ir.Tensor{ir.NewTensor(x.DType, outDims, out)}, nil
}

func evalRange(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	var v [3]*num
	for i := range v {
		t, err := c.in(in, i)
		if err != nil {
			return nil, err
		}
		if t.NumElements() != 1 {
			return nil, fmt.Errorf("input %d must be a scalar", i)
		}
		if v[i], err = decode(t); err != nil {
			return nil, err
		}
		if v[i].dt != v[0].dt {
			return nil, fmt.Errorf("mixed types")
		}
	}
	switch dt := v[0].dt; {
	case dt == ir.Float:
		return rangeFloat[float32](c, v)
	case dt == ir.Double:
		return rangeFloat[float64](c, v)
	case dt == ir.Int16 || dt == ir.Int32 || dt == ir.Int64:
		start, limit, delta := v[0].i64[0], v[1].i64[0], v[2].i64[0]
		if delta == 0 {
			return nil, fmt.Errorf("delta is 0")
		}
		cnt := int64(0)
		if d := limit - start; (d > 0) == (delta > 0) && d != 0 {
			cnt = (d + delta - sign(delta)) / delta
		}
		n, err := c.rangeCount(float64(cnt))
		if err != nil {
			return nil, err
		}
		out := make([]int64, n)
		for i := range out {
			out[i] = start + int64(i)*delta
		}
		return []*ir.Tensor{intTensor(dt, []int64{int64(n)}, out)}, nil
	default:
		return nil, fmt.Errorf("unsupported type %s", dt)
	}
}

// rangeFloat is Range in the float type T. As ONNX Runtime: the count from double
// arithmetic, values accumulated in T.
func rangeFloat[T float32 | float64](c *call, v [3]*num) ([]*ir.Tensor, error) {
	start, limit, delta := values[T](v[0])[0], values[T](v[1])[0], values[T](v[2])[0]
	if delta == 0 {
		return nil, fmt.Errorf("delta is 0")
	}
	n, err := c.rangeCount(math.Ceil(float64(limit-start) / float64(delta)))
	if err != nil {
		return nil, err
	}
	out := make([]T, n)
	val := start
	for i := range out {
		out[i] = val
		val += delta
	}
	return []*ir.Tensor{encode(v[0].dt, []int64{int64(n)}, out)}, nil
}

func (c *call) rangeCount(f float64) (int, error) {
	if math.IsNaN(f) || f > 1<<40 {
		return 0, fmt.Errorf("range of %v elements: %w", f, ErrTooLarge)
	}
	if f < 0 {
		f = 0
	}
	return c.check([]int64{int64(f)})
}

// castable lists the types Cast converts between.
var castable = map[ir.DataType]bool{
	ir.Float: true, ir.Double: true, ir.Float16: true, ir.BFloat16: true, ir.Bool: true,
	ir.Int8: true, ir.Uint8: true, ir.Int16: true, ir.Uint16: true,
	ir.Int32: true, ir.Uint32: true, ir.Int64: true,
}

// intRange is the range of values an integer type holds.
func intRange(dt ir.DataType) (lo, hi float64) {
	switch dt {
	case ir.Int8:
		return math.MinInt8, math.MaxInt8
	case ir.Uint8:
		return 0, math.MaxUint8
	case ir.Int16:
		return math.MinInt16, math.MaxInt16
	case ir.Uint16:
		return 0, math.MaxUint16
	case ir.Int32:
		return math.MinInt32, math.MaxInt32
	case ir.Uint32:
		return 0, math.MaxUint32
	}
	return math.MinInt64, math.MaxInt64
}

func evalCast(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	to := ir.DataType(c.n.AttrInt("to", 0))
	if !castable[x.DType] || !castable[to] {
		return nil, fmt.Errorf("cast from %s to %s is not supported", x.DType, to)
	}
	t, err := Cast(x, to)
	if err != nil {
		return nil, err
	}
	return []*ir.Tensor{t}, nil
}

// Cast converts a tensor to another data type with ONNX (C) semantics: float to int
// truncates toward zero, int to narrower int wraps, anything to bool is "!= 0". It
// refuses float-to-int casts of NaN, infinities and out-of-range values (undefined in C).
func Cast(x *ir.Tensor, to ir.DataType) (*ir.Tensor, error) {
	if x.DType == to {
		t := x.Clone()
		t.Name = ""
		return t, nil
	}
	if !castable[x.DType] || !castable[to] {
		return nil, fmt.Errorf("cast from %s to %s is not supported", x.DType, to)
	}
	if x.DType == ir.Float16 || x.DType == ir.BFloat16 {
		f, err := x.Float64s() // exact
		if err != nil {
			return nil, err
		}
		return Cast(newF32(x.Dims, convertSlice[float32](f)).tensor(), to)
	}
	v, err := decode(x)
	if err != nil {
		return nil, err
	}
	dims := cloneDims(x.Dims)
	switch {
	case to == ir.Float16 || to == ir.BFloat16:
		// ONNX Runtime converts double through float (two roundings); so do we. Both
		// round to nearest even.
		round := ndarray.Float32ToHalf
		if to == ir.BFloat16 {
			round = ir.Float32ToBFloat16
		}
		f32 := convert[float32](v)
		b := make([]byte, 2*len(f32))
		for i, f := range f32 {
			h := round(f)
			b[2*i], b[2*i+1] = byte(h), byte(h>>8)
		}
		return ir.NewTensor(to, dims, b), nil
	case to == ir.Float:
		return newF32(dims, convert[float32](v)).tensor(), nil
	case to == ir.Double:
		return newF64(dims, convert[float64](v)).tensor(), nil
	case to == ir.Bool:
		// Through float64, which is zero exactly when the value is.
		f := convert[float64](v)
		out := make([]int64, len(f))
		for i := range out {
			out[i] = b2i(f[i] != 0)
		}
		return intTensor(ir.Bool, dims, out), nil
	case v.isInt():
		return intTensor(to, dims, v.i64), nil // wraps when encoded
	default: // a float to an integer type
		out := make([]int64, v.len())
		lo, hi := intRange(to)
		for i, f := range convert[float64](v) {
			f = math.Trunc(f)
			// hi of int64 is 2^63 as a float64, itself out of range: compare with >=.
			if math.IsNaN(f) || f < lo || f > hi || (to == ir.Int64 && f >= hi) {
				return nil, fmt.Errorf("cast of %v to %s is out of range", f, to)
			}
			out[i] = int64(f)
		}
		return intTensor(to, dims, out), nil
	}
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// sortedAxes normalises and sorts axes.
func sortedAxes(axes []int64, rank int) ([]int, error) {
	out, err := normAxes(axes, rank)
	if err != nil {
		return nil, err
	}
	sort.Ints(out)
	return out, nil
}

// normAxes normalises axes (see normAxis), refusing one that is repeated.
func normAxes(axes []int64, rank int) ([]int, error) {
	out := make([]int, 0, len(axes))
	seen := make([]bool, rank)
	for _, a := range axes {
		k, err := normAxis(a, rank)
		if err != nil {
			return nil, err
		}
		if seen[k] {
			return nil, fmt.Errorf("axis %d repeated", a)
		}
		seen[k] = true
		out = append(out, k)
	}
	return out, nil
}

// evalTrilu keeps the upper (upper=1, the default) or lower triangle of the last two axes,
// from diagonal k (input 1, default 0), and zeroes the rest: the causal masks exporters
// build with torch.triu and torch.tril.
func evalTrilu(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	r := len(x.Dims)
	if r < 2 {
		return nil, fmt.Errorf("rank %d, want at least 2", r)
	}
	k := int64(0)
	if len(in) > 1 && in[1] != nil {
		ks, err := c.ints(in, 1)
		if err != nil {
			return nil, err
		}
		if len(ks) != 1 {
			return nil, fmt.Errorf("k has %d elements, want 1", len(ks))
		}
		k = ks[0]
	}
	if _, err := c.check(x.Dims); err != nil {
		return nil, err
	}
	upper := c.n.AttrInt("upper", 1) == 1
	b, esz, err := raw(x)
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), b...)
	rows, cols := x.Dims[r-2], x.Dims[r-1]
	if rows == 0 || cols == 0 {
		return []*ir.Tensor{ir.NewTensor(x.DType, cloneDims(x.Dims), out)}, nil
	}
	for f := int64(0); f < int64(len(b)/esz); f++ {
		j, i := f%cols, (f/cols)%rows
		if keep := upper && j-i >= k || !upper && j-i <= k; !keep {
			clear(out[int(f)*esz : int(f+1)*esz])
		}
	}
	return []*ir.Tensor{ir.NewTensor(x.DType, cloneDims(x.Dims), out)}, nil
}

// evalSplit cuts the input along axis into the node's outputs: by the split sizes (an
// input from opset 13, an attribute before), else into equal parts (the last smaller at
// opset 18, with num_outputs). Each part is a Slice.
func evalSplit(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	x, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	r := int64(len(x.Dims))
	axis := c.n.AttrInt("axis", 0)
	if axis < 0 {
		axis += r
	}
	if axis < 0 || axis >= r {
		return nil, fmt.Errorf("axis %d out of range for rank %d", c.n.AttrInt("axis", 0), r)
	}
	n := int64(len(c.n.Outputs()))
	var sizes []int64
	switch s := opt(in, 1); {
	case s != nil:
		if sizes, err = int64s(s); err != nil {
			return nil, err
		}
	case c.n.Attr("split") != nil:
		sizes, _ = c.n.AttrInts("split")
	default:
		if n == 0 {
			return nil, fmt.Errorf("no outputs")
		}
		dim := x.Dims[axis]
		part := (dim + n - 1) / n
		if c.opset < 18 && dim%n != 0 {
			return nil, fmt.Errorf("%d does not split into %d equal parts", dim, n)
		}
		for i := int64(0); i < n; i++ {
			sizes = append(sizes, max(0, min(part, dim-i*part)))
		}
	}
	if int64(len(sizes)) != n {
		return nil, fmt.Errorf("%d split sizes for %d outputs", len(sizes), n)
	}
	total := int64(0)
	for _, s := range sizes {
		if s < 0 {
			return nil, fmt.Errorf("negative split size %d", s)
		}
		total += s
	}
	if total != x.Dims[axis] {
		return nil, fmt.Errorf("split sizes %v do not add up to %d", sizes, x.Dims[axis])
	}
	slice := &call{n: &ir.Node{OpType: "Slice"}, opset: 13, max: c.max}
	one := func(v int64) *ir.Tensor { return ir.Int64Tensor([]int64{1}, []int64{v}) }
	out := make([]*ir.Tensor, 0, n)
	start := int64(0)
	for _, s := range sizes {
		part, err := evalSlice(slice, []*ir.Tensor{x, one(start), one(start + s), one(axis)})
		if err != nil {
			return nil, err
		}
		out = append(out, part[0])
		start += s
	}
	return out, nil
}
