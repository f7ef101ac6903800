package eval

import (
	"errors"
	"fmt"
	"math"

	"github.com/qcc-dev/qcc/ir"
)

// errNaN refuses inputs whose result would depend on a NaN convention.
var errNaN = errors.New("NaN input (result depends on the runtime's convention)")

// binary decodes two inputs of the same numeric type and their broadcast shape.
func (c *call) binary(in []*ir.Tensor) (a, b *num, dims []int64, ia, ib []int, err error) {
	at, bt, err := c.in2(in)
	if err != nil {
		return
	}
	if at.DType != bt.DType {
		err = fmt.Errorf("mixed types %s and %s", at.DType, bt.DType)
		return
	}
	if dims, err = c.broadcast(at.Dims, bt.Dims); err != nil {
		return
	}
	if a, err = decode(at); err != nil {
		return
	}
	if b, err = decode(bt); err != nil {
		return
	}
	ia, ib = bcastIndex(dims, at.Dims), bcastIndex(dims, bt.Dims)
	return
}

// arith applies an elementwise binary operation in the inputs' own type. fi may return an
// error to refuse (integer division by zero). Bool is refused.
func arith(f32 func(x, y float32) float32, f64 func(x, y float64) float64, fi func(x, y int64) (int64, error)) evalFunc {
	return func(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
		a, b, dims, ia, ib, err := c.binary(in)
		if err != nil {
			return nil, err
		}
		return arithApply(a, b, dims, ia, ib, f32, f64, fi)
	}
}

func arithApply(a, b *num, dims []int64, ia, ib []int, f32 func(x, y float32) float32, f64 func(x, y float64) float64, fi func(x, y int64) (int64, error)) ([]*ir.Tensor, error) {
	switch {
	case a.dt == ir.Bool:
		return nil, fmt.Errorf("arithmetic on bool")
	case a.isF32():
		return zipNum(a, b, dims, ia, ib, noErr(f32))
	case a.isF64():
		return zipNum(a, b, dims, ia, ib, noErr(f64))
	}
	return zipNum(a, b, dims, ia, ib, fi)
}

// zipNum computes f(a[ia[i]], b[ib[i]]) for every output element i in the element type T
// of a and b; a nil f refuses the type.
func zipNum[T elem](a, b *num, dims []int64, ia, ib []int, f func(x, y T) (T, error)) ([]*ir.Tensor, error) {
	if f == nil {
		return nil, fmt.Errorf("unsupported type %s", a.dt)
	}
	av, bv := values[T](a), values[T](b)
	out := make([]T, len(ia))
	var err error
	for i := range out {
		if out[i], err = f(av[ia[i]], bv[ib[i]]); err != nil {
			return nil, err
		}
		out[i] = wrapAs(a.dt, out[i])
	}
	return []*ir.Tensor{encode(a.dt, dims, out)}, nil
}

// noErr lifts a binary function that cannot fail; nil stays nil.
func noErr[T elem](f func(x, y T) T) func(x, y T) (T, error) {
	if f == nil {
		return nil
	}
	return func(x, y T) (T, error) { return f(x, y), nil }
}

// wrap reduces v to the range of dt as two's complement storage does, so that chained
// operations on narrow types see what a runtime would.
func wrap(dt ir.DataType, v int64) int64 {
	switch dt {
	case ir.Int8:
		return int64(int8(v))
	case ir.Uint8:
		return int64(uint8(v))
	case ir.Int16:
		return int64(int16(v))
	case ir.Uint16:
		return int64(uint16(v))
	case ir.Int32:
		return int64(int32(v))
	case ir.Uint32:
		return int64(uint32(v))
	}
	return v
}

// wrapAs is wrap for a value computed in the element type T of dt: floats are kept as
// they are.
func wrapAs[T elem](dt ir.DataType, v T) T {
	if dt == ir.Float || dt == ir.Double {
		return v
	}
	return T(wrap(dt, int64(v)))
}

var errDivZero = errors.New("integer division by zero")

func add[T elem](x, y T) T              { return x + y }
func sub[T elem](x, y T) T              { return x - y }
func mul[T elem](x, y T) T              { return x * y }
func quo[T float32 | float64](x, y T) T { return x / y }

var (
	evalAdd = arith(add[float32], add[float64], noErr(add[int64]))
	evalSub = arith(sub[float32], sub[float64], noErr(sub[int64]))
	evalMul = arith(mul[float32], mul[float64], noErr(mul[int64]))
	evalDiv = arith(quo[float32], quo[float64],
		func(x, y int64) (int64, error) {
			if y == 0 {
				return 0, errDivZero
			}
			return x / y, nil // Go truncates toward zero, as C does
		})
)

func evalMod(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	a, b, dims, ia, ib, err := c.binary(in)
	if err != nil {
		return nil, err
	}
	fmod := c.n.AttrInt("fmod", 0) != 0
	if !a.isInt() && !fmod {
		return nil, fmt.Errorf("fmod must be 1 for floating-point inputs")
	}
	return arithApply(a, b, dims, ia, ib,
		func(x, y float32) float32 { return float32(math.Mod(float64(x), float64(y))) }, // exact
		math.Mod,
		func(x, y int64) (int64, error) {
			if y == 0 {
				return 0, errDivZero
			}
			r := x % y
			if !fmod && r != 0 && (r < 0) != (y < 0) {
				r += y // the sign of the divisor, as Python's %
			}
			return r, nil
		})
}

func evalPow(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	xt, yt, err := c.in2(in)
	if err != nil {
		return nil, err
	}
	dims, err := c.broadcast(xt.Dims, yt.Dims)
	if err != nil {
		return nil, err
	}
	if xt.DType == ir.Bool || yt.DType == ir.Bool {
		return nil, fmt.Errorf("Pow on bool")
	}
	x, err := decode(xt)
	if err != nil {
		return nil, err
	}
	yv, err := decode(yt)
	if err != nil {
		return nil, err
	}
	ys := convert[float64](yv) // every exponent type converts exactly to float64 except huge ints
	ix, iy := bcastIndex(dims, xt.Dims), bcastIndex(dims, yt.Dims)
	switch {
	case x.isF32():
		return powFloat[float32](x, ys, dims, ix, iy), nil
	case x.isF64():
		return powFloat[float64](x, ys, dims, ix, iy), nil
	}
	out := make([]int64, len(ix))
	for i := range out {
		p := math.Trunc(math.Pow(float64(x.i64[ix[i]]), ys[iy[i]]))
		if math.IsNaN(p) || math.Abs(p) >= 1<<53 {
			return nil, fmt.Errorf("integer Pow result %v is not exact", p)
		}
		out[i] = wrap(x.dt, int64(p))
	}
	return []*ir.Tensor{intTensor(x.dt, dims, out)}, nil
}

// powFloat computes x[ix[i]] ** ys[iy[i]] in the float type T. As ONNX Runtime, it
// computes x*x and x*x*x for the exponents 2 and 3 (math.Pow(x, 1) is x exactly).
func powFloat[T float32 | float64](x *num, ys []float64, dims []int64, ix, iy []int) []*ir.Tensor {
	xs := values[T](x)
	out := make([]T, len(ix))
	for i := range out {
		v, e := xs[ix[i]], ys[iy[i]]
		switch e {
		case 1:
			out[i] = v
		case 2:
			out[i] = v * v
		case 3:
			out[i] = v * v * v
		default:
			out[i] = T(math.Pow(float64(v), e))
		}
	}
	return []*ir.Tensor{encode(x.dt, dims, out)}
}

// variadic folds Min/Max over all inputs with broadcasting.
func variadic(pick32 func(a, b float32) float32, pick64 func(a, b float64) float64, picki func(a, b int64) int64) evalFunc {
	return func(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
		ts, err := present(in)
		if err != nil {
			return nil, err
		}
		acc := ts[0]
		if len(ts) == 1 {
			acc = acc.Clone()
			acc.Name = ""
		}
		for _, t := range ts[1:] {
			r, err := arith(nanOr(pick32), nanOr(pick64), noErr(picki))(c, []*ir.Tensor{acc, t})
			if err != nil {
				return nil, err
			}
			acc = r[0]
		}
		if hasNaN(acc) {
			return nil, errNaN
		}
		return []*ir.Tensor{acc}, nil
	}
}

// nanOr returns pick, except that a NaN operand gives NaN.
func nanOr[T float32 | float64](pick func(a, b T) T) func(x, y T) T {
	return func(x, y T) T {
		if x != x || y != y {
			return T(math.NaN())
		}
		return pick(x, y)
	}
}

func hasNaN(t *ir.Tensor) bool {
	if t.DType != ir.Float && t.DType != ir.Double {
		return false
	}
	f, err := t.Float64s()
	if err != nil {
		return false
	}
	for _, v := range f {
		if v != v {
			return true
		}
	}
	return false
}

func minOf[T elem](a, b T) T { return min(a, b) }
func maxOf[T elem](a, b T) T { return max(a, b) }

var (
	evalMin = variadic(minOf[float32], minOf[float64], minOf[int64])
	evalMax = variadic(maxOf[float32], maxOf[float64], maxOf[int64])
)

func evalClip(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	xt, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	x, err := decodeArith(xt, "Clip")
	if err != nil {
		return nil, err
	}
	bound := func(i int, attr string) (*num, error) {
		if c.opset < 11 {
			a := c.n.Attr(attr)
			if a == nil {
				return nil, nil
			}
			if !x.isF32() {
				return nil, fmt.Errorf("opset %d Clip on %s", c.opset, x.dt)
			}
			return newF32(nil, []float32{a.Float}), nil
		}
		t := opt(in, i)
		if t == nil {
			if c.n.Input(i) != nil {
				return nil, fmt.Errorf("input %d is missing", i)
			}
			return nil, nil
		}
		if t.DType != xt.DType || t.NumElements() != 1 {
			return nil, fmt.Errorf("bound %d must be a scalar of type %s", i, xt.DType)
		}
		return decode(t)
	}
	lo, err := bound(1, "min")
	if err != nil {
		return nil, err
	}
	hi, err := bound(2, "max")
	if err != nil {
		return nil, err
	}
	dims := cloneDims(xt.Dims)
	switch {
	case x.isF32():
		return clip[float32](x, lo, hi, dims), nil
	case x.isF64():
		return clip[float64](x, lo, hi, dims), nil
	}
	return clip[int64](x, lo, hi, dims), nil
}

// clip limits the elements of x to the one-element bounds lo and hi (nil: none).
func clip[T elem](x, lo, hi *num, dims []int64) []*ir.Tensor {
	var l, h []T
	if lo != nil {
		l = values[T](lo)
	}
	if hi != nil {
		h = values[T](hi)
	}
	xs := values[T](x)
	out := make([]T, len(xs))
	for i, v := range xs {
		if lo != nil && v < l[0] {
			v = l[0]
		}
		if hi != nil && v > h[0] {
			v = h[0]
		}
		out[i] = v
	}
	return []*ir.Tensor{encode(x.dt, dims, out)}
}

// unary applies an elementwise function in the input's own type; nil refuses that class.
func unary(f32 func(float32) float32, f64 func(float64) float64, fi func(int64) int64) evalFunc {
	return func(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
		xt, err := c.in(in, 0)
		if err != nil {
			return nil, err
		}
		x, err := decode(xt)
		if err != nil {
			return nil, err
		}
		dims := cloneDims(xt.Dims)
		switch {
		case x.dt == ir.Bool:
			return nil, fmt.Errorf("unsupported type bool")
		case x.isF32() && f32 != nil:
			return mapNum(x, dims, f32), nil
		case x.isF64() && f64 != nil:
			return mapNum(x, dims, f64), nil
		case x.isInt() && fi != nil:
			return mapNum(x, dims, fi), nil
		}
		return nil, fmt.Errorf("unsupported type %s", x.dt)
	}
}

// mapNum applies f to every element of x in its element type T.
func mapNum[T elem](x *num, dims []int64, f func(T) T) []*ir.Tensor {
	xs := values[T](x)
	out := make([]T, len(xs))
	for i, v := range xs {
		out[i] = wrapAs(x.dt, f(v))
	}
	return []*ir.Tensor{encode(x.dt, dims, out)}
}

// floatUnary applies f to float64 inputs, and to float32 ones as the float64 result
// rounded to float32 (see viaF64); integers are refused.
func floatUnary(f func(float64) float64) evalFunc {
	return unary(viaF64(f), f, nil)
}

// viaF64 computes a float32 function as the float64 result rounded to float32. For sqrt,
// ceil, floor and abs that is the correctly rounded float32 result (rounding the float64
// square root once more is exact).
func viaF64(f func(float64) float64) func(float32) float32 {
	return func(x float32) float32 { return float32(f(float64(x))) }
}

func sigmoid64(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// reciprocal64 is 1/x; through float64 it is the correctly rounded float32 quotient too.
func reciprocal64(x float64) float64 { return 1 / x }

func neg[T elem](x T) T { return -x }

// sign is -1, 0 or 1 as x is negative, zero or positive; NaN stays NaN.
func sign[T elem](x T) T {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	case x == 0:
		return 0
	}
	return x // NaN
}

var (
	evalNeg = unary(neg[float32], neg[float64], neg[int64])
	evalAbs = unary(viaF64(math.Abs), math.Abs,
		func(x int64) int64 {
			if x < 0 {
				return -x
			}
			return x
		})
	evalSign = unary(sign[float32], sign[float64], sign[int64])
)

// cmpOp builds a comparison. pred receives -1, 0 or 1; NaN compares false throughout.
func cmpOp(pred func(c int) bool) evalFunc {
	return func(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
		a, b, dims, ia, ib, err := c.binary(in)
		if err != nil {
			return nil, err
		}
		if a.dt == ir.Bool && c.n.OpType != "Equal" {
			return nil, fmt.Errorf("%s on bool", c.n.OpType)
		}
		var out []bool
		switch {
		case a.isF32():
			out = compare[float32](a, b, ia, ib, pred)
		case a.isF64():
			out = compare[float64](a, b, ia, ib, pred)
		default:
			out = compare[int64](a, b, ia, ib, pred)
		}
		return []*ir.Tensor{boolTensor(dims, out)}, nil
	}
}

// compare computes pred(sign of a[ia[i]] - b[ib[i]]) in the element type T; NaN gives false.
func compare[T elem](a, b *num, ia, ib []int, pred func(c int) bool) []bool {
	av, bv := values[T](a), values[T](b)
	out := make([]bool, len(ia))
	for i := range out {
		switch x, y := av[ia[i]], bv[ib[i]]; {
		case x < y:
			out[i] = pred(-1)
		case x > y:
			out[i] = pred(1)
		case x == y:
			out[i] = pred(0)
		}
	}
	return out
}
func evalNot(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	xt, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	if xt.DType != ir.Bool {
		return nil, fmt.Errorf("Not on %s", xt.DType)
	}
	b, err := xt.Bytes()
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(b))
	for i, v := range b {
		out[i] = v == 0
	}
	return []*ir.Tensor{boolTensor(cloneDims(xt.Dims), out)}, nil
}

func logicOp(f func(a, b bool) bool) evalFunc {
	return func(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
		a, b, dims, ia, ib, err := c.binary(in)
		if err != nil {
			return nil, err
		}
		if a.dt != ir.Bool {
			return nil, fmt.Errorf("%s on %s", c.n.OpType, a.dt)
		}
		out := make([]bool, len(ia))
		for i := range out {
			out[i] = f(a.i64[ia[i]] != 0, b.i64[ib[i]] != 0)
		}
		return []*ir.Tensor{boolTensor(dims, out)}, nil
	}
}

func evalCumSum(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	xt, at, err := c.in2(in)
	if err != nil {
		return nil, err
	}
	a, err := scalarInt(at)
	if err != nil {
		return nil, fmt.Errorf("axis: %w", err)
	}
	if len(xt.Dims) == 0 {
		return nil, fmt.Errorf("input must have rank >= 1")
	}
	axis, err := normAxis(a, len(xt.Dims))
	if err != nil {
		return nil, err
	}
	x, err := decodeArith(xt, "CumSum")
	if err != nil {
		return nil, err
	}
	exclusive := c.n.AttrInt("exclusive", 0) != 0
	reverse := c.n.AttrInt("reverse", 0) != 0
	outer := numel(xt.Dims[:axis])
	dim := int(xt.Dims[axis])
	inner := numel(xt.Dims[axis+1:])
	// run visits the flat offsets along the axis in accumulation order.
	run := func(add func(dst, src int, first bool)) {
		for o := 0; o < outer; o++ {
			for j := 0; j < inner; j++ {
				base := o*dim*inner + j
				prev := -1
				for k := 0; k < dim; k++ {
					kk := k
					if reverse {
						kk = dim - 1 - k
					}
					pos := base + kk*inner
					add(pos, prev, k == 0)
					prev = pos
				}
			}
		}
	}
	dims := cloneDims(xt.Dims)
	switch {
	case x.isF32():
		return cumSum[float32](x, dims, exclusive, run), nil
	case x.isF64():
		return cumSum[float64](x, dims, exclusive, run), nil
	}
	return cumSum[int64](x, dims, exclusive, run), nil
}

// cumSum accumulates x in its element type T along the order run visits.
func cumSum[T elem](x *num, dims []int64, exclusive bool, run func(add func(dst, src int, first bool))) []*ir.Tensor {
	xs := values[T](x)
	out := make([]T, len(xs))
	run(func(dst, src int, first bool) {
		switch {
		case first && exclusive:
			out[dst] = 0
		case first:
			out[dst] = xs[dst]
		case exclusive:
			out[dst] = wrapAs(x.dt, out[src]+xs[src])
		default:
			out[dst] = wrapAs(x.dt, out[src]+xs[dst])
		}
	})
	return []*ir.Tensor{encode(x.dt, dims, out)}
}

// maxMatMulMACs bounds the work of one MatMul: the evaluator folds small constants only.
const maxMatMulMACs = 1 << 24

func evalMatMul(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	at, bt, err := c.in2(in)
	if err != nil {
		return nil, err
	}
	if at.DType != bt.DType {
		return nil, fmt.Errorf("mixed types %s and %s", at.DType, bt.DType)
	}
	if len(at.Dims) == 0 || len(bt.Dims) == 0 {
		return nil, fmt.Errorf("scalar operand")
	}
	ad, bd := cloneDims(at.Dims), cloneDims(bt.Dims)
	aVec, bVec := len(ad) == 1, len(bd) == 1
	if aVec {
		ad = []int64{1, ad[0]}
	}
	if bVec {
		bd = []int64{bd[0], 1}
	}
	m, k, k2, n := ad[len(ad)-2], ad[len(ad)-1], bd[len(bd)-2], bd[len(bd)-1]
	if k != k2 {
		return nil, fmt.Errorf("inner dimensions %d and %d differ", k, k2)
	}
	batch, err := broadcast(ad[:len(ad)-2], bd[:len(bd)-2])
	if err != nil {
		return nil, err
	}
	outFull := append(cloneDims(batch), m, n)
	total, err := c.check(outFull)
	if err != nil {
		return nil, err
	}
	if int64(total)*k > maxMatMulMACs {
		return nil, fmt.Errorf("MatMul of %v x %v: %w", at.Dims, bt.Dims, ErrTooLarge)
	}
	a, err := decodeArith(at, "MatMul") // bt has the same type
	if err != nil {
		return nil, err
	}
	b, err := decode(bt)
	if err != nil {
		return nil, err
	}
	mm := matMul{
		outDims: outFull, total: total, nb: numel(batch),
		ia: bcastIndex(batch, ad[:len(ad)-2]), ib: bcastIndex(batch, bd[:len(bd)-2]),
		M: int(m), K: int(k), N: int(n),
	}
	var t *ir.Tensor
	switch {
	case a.isF32():
		t = matMulIn[float32](mm, a, b)
	case a.isF64():
		t = matMulIn[float64](mm, a, b)
	default:
		t = matMulIn[int64](mm, a, b)
	}
	// Drop the dimensions added for 1-D operands.
	dims := cloneDims(batch)
	if !aVec {
		dims = append(dims, m)
	}
	if !bVec {
		dims = append(dims, n)
	}
	t.Dims = dims
	return []*ir.Tensor{t}, nil
}

// matMul is the geometry of a batched MatMul: nb products of M x K by K x N matrices,
// product bi taking the matrices ia[bi] of a and ib[bi] of b.
type matMul struct {
	outDims []int64
	total   int
	nb      int
	ia, ib  []int
	M, K, N int
}

// matMulIn multiplies in the element type T, accumulating each dot product sequentially.
func matMulIn[T elem](mm matMul, a, b *num) *ir.Tensor {
	M, K, N := mm.M, mm.K, mm.N
	av, bv := values[T](a), values[T](b)
	out := make([]T, mm.total)
	for bi := 0; bi < mm.nb; bi++ {
		A, B, O := av[mm.ia[bi]*M*K:], bv[mm.ib[bi]*K*N:], out[bi*M*N:]
		for i := 0; i < M; i++ {
			for j := 0; j < N; j++ {
				var s T
				for l := 0; l < K; l++ {
					p := A[i*K+l] * B[l*N+j]
					s += p
				}
				O[i*N+j] = wrapAs(a.dt, s)
			}
		}
	}
	return encode(a.dt, mm.outDims, out)
}

// reduceOp builds ReduceSum/Mean/Prod/Max/Min. Axes are an attribute before opset 13
// (ReduceSum) or 18 (the others), an input from then on.
func reduceOp(kind string) evalFunc {
	return func(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
		xt, err := c.in(in, 0)
		if err != nil {
			return nil, err
		}
		attrUntil := int64(18)
		if kind == "sum" {
			attrUntil = 13
		}
		axes, _, err := c.axesOf(in, 1, attrUntil)
		if err != nil {
			return nil, err
		}
		keep := c.n.AttrInt("keepdims", 1) != 0
		rank := len(xt.Dims)
		if len(axes) == 0 {
			if c.opset >= attrUntil && c.n.AttrInt("noop_with_empty_axes", 0) != 0 {
				t := xt.Clone()
				t.Name = ""
				return []*ir.Tensor{t}, nil
			}
			for i := 0; i < rank; i++ {
				axes = append(axes, int64(i))
			}
		}
		ax, err := sortedAxes(axes, rank)
		if err != nil {
			return nil, err
		}
		red := make([]bool, rank)
		for _, a := range ax {
			red[a] = true
		}
		keptDims := make([]int64, rank) // output shape with kept 1s
		var outDims []int64
		for i, d := range xt.Dims {
			if red[i] {
				keptDims[i] = 1
				if keep {
					outDims = append(outDims, 1)
				}
			} else {
				keptDims[i] = d
				outDims = append(outDims, d)
			}
		}
		if outDims == nil {
			outDims = []int64{}
		}
		nOut, err := c.check(keptDims)
		if err != nil {
			return nil, err
		}
		x, err := decodeArith(xt, "reduction")
		if err != nil {
			return nil, err
		}
		count := 1
		for _, a := range ax {
			count *= int(xt.Dims[a])
		}
		if count == 0 && (kind == "max" || kind == "min" || kind == "mean") {
			return nil, fmt.Errorf("reduction over an empty axis")
		}
		// For each output element, the input elements in row-major order.
		ost := strides(keptDims)
		dst := make([]int, x.len())
		iterIndex(xt.Dims, func(flat int, ix []int64) {
			o := 0
			for k, v := range ix {
				if !red[k] {
					o += int(v) * ost[k]
				}
			}
			dst[flat] = o
		})
		r := reduction{kind: kind, dst: dst, nOut: nOut, count: count, outDims: outDims}
		switch {
		case x.isF32():
			return reduceIn[float32](r, x)
		case x.isF64():
			return reduceIn[float64](r, x)
		}
		return reduceIn[int64](r, x)
	}
}

// reduction describes a reduction: element i of the input goes to output element dst[i],
// count input elements to each.
type reduction struct {
	kind    string
	dst     []int
	nOut    int
	count   int
	outDims []int64
}

// reduceIn reduces x in its element type T, sequentially in row-major order.
func reduceIn[T elem](r reduction, x *num) ([]*ir.Tensor, error) {
	kind := r.kind
	out := make([]T, r.nOut)
	seen := make([]bool, r.nOut)
	for i, v := range values[T](x) {
		o := r.dst[i]
		if !seen[o] {
			out[o], seen[o] = v, true
			continue
		}
		switch kind {
		case "sum", "mean":
			out[o] += v
		case "prod":
			out[o] *= v
		case "max":
			out[o] = max(out[o], v) // NaN if either is NaN
		case "min":
			out[o] = min(out[o], v)
		}
	}
	for o := range out {
		switch {
		case !seen[o] && kind == "prod":
			out[o] = 1
		case kind == "mean":
			out[o] /= T(r.count)
		}
		out[o] = wrapAs(x.dt, out[o])
		if (kind == "max" || kind == "min") && out[o] != out[o] {
			return nil, errNaN
		}
	}
	return []*ir.Tensor{encode(x.dt, r.outDims, out)}, nil
}

// evalGemm is alpha·A'·B' + beta·C, A' and B' transposed where transA and transB say,
// composed of the Transpose, MatMul, Mul and Add evaluators so that it rounds as they do.
func evalGemm(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	if len(in) < 2 || in[0] == nil || in[1] == nil {
		return nil, fmt.Errorf("A and B are required")
	}
	sub := func(op string, attrs ...*ir.Attr) *call {
		return &call{n: &ir.Node{OpType: op, Attrs: attrs}, opset: c.opset, max: c.max}
	}
	one := func(f evalFunc, cl *call, ts ...*ir.Tensor) (*ir.Tensor, error) {
		out, err := f(cl, ts)
		if err != nil {
			return nil, err
		}
		return out[0], nil
	}
	scaled := func(t *ir.Tensor, k float32) (*ir.Tensor, error) {
		if k == 1 {
			return t, nil
		}
		s, err := ir.Filled(t.DType, nil, float64(k))
		if err != nil {
			return nil, err
		}
		return one(evalMul, sub("Mul"), t, s)
	}
	a, b := in[0], in[1]
	if len(a.Dims) != 2 || len(b.Dims) != 2 {
		return nil, fmt.Errorf("A %v and B %v are not matrices", a.Dims, b.Dims)
	}
	var err error
	for i, t := range []**ir.Tensor{&a, &b} {
		if c.n.AttrInt([]string{"transA", "transB"}[i], 0) != 0 {
			if *t, err = one(evalTranspose, sub("Transpose", ir.IntsAttr("perm", 1, 0)), *t); err != nil {
				return nil, err
			}
		}
	}
	y, err := one(evalMatMul, sub("MatMul"), a, b)
	if err != nil {
		return nil, err
	}
	if y, err = scaled(y, c.n.AttrFloat("alpha", 1)); err != nil {
		return nil, err
	}
	if len(in) > 2 && in[2] != nil {
		bias, err := scaled(in[2], c.n.AttrFloat("beta", 1))
		if err != nil {
			return nil, err
		}
		if y, err = one(evalAdd, sub("Add"), y, bias); err != nil {
			return nil, err
		}
	}
	return []*ir.Tensor{y}, nil
}
