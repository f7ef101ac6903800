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
	at, err := c.in(in, 0)
	if err != nil {
		return
	}
	bt, err := c.in(in, 1)
	if err != nil {
		return
	}
	if at.DType != bt.DType {
		err = fmt.Errorf("mixed types %s and %s", at.DType, bt.DType)
		return
	}
	if dims, err = broadcast(at.Dims, bt.Dims); err != nil {
		return
	}
	if _, err = c.check(dims); err != nil {
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
	n := len(ia)
	switch {
	case a.dt == ir.Bool:
		return nil, fmt.Errorf("arithmetic on bool")
	case a.isF32():
		if f32 == nil {
			return nil, fmt.Errorf("unsupported type %s", a.dt)
		}
		out := make([]float32, n)
		for i := range out {
			out[i] = f32(a.f32[ia[i]], b.f32[ib[i]])
		}
		return []*ir.Tensor{newF32(dims, out).tensor()}, nil
	case a.isF64():
		if f64 == nil {
			return nil, fmt.Errorf("unsupported type %s", a.dt)
		}
		out := make([]float64, n)
		for i := range out {
			out[i] = f64(a.f64[ia[i]], b.f64[ib[i]])
		}
		return []*ir.Tensor{newF64(dims, out).tensor()}, nil
	default:
		if fi == nil {
			return nil, fmt.Errorf("unsupported type %s", a.dt)
		}
		out := make([]int64, n)
		var err error
		for i := range out {
			if out[i], err = fi(a.i64[ia[i]], b.i64[ib[i]]); err != nil {
				return nil, err
			}
			out[i] = wrap(a.dt, out[i])
		}
		return []*ir.Tensor{intTensor(a.dt, dims, out)}, nil
	}
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

var errDivZero = errors.New("integer division by zero")

var (
	evalAdd = arith(func(x, y float32) float32 { return x + y }, func(x, y float64) float64 { return x + y },
		func(x, y int64) (int64, error) { return x + y, nil })
	evalSub = arith(func(x, y float32) float32 { return x - y }, func(x, y float64) float64 { return x - y },
		func(x, y int64) (int64, error) { return x - y, nil })
	evalMul = arith(func(x, y float32) float32 { return x * y }, func(x, y float64) float64 { return x * y },
		func(x, y int64) (int64, error) { return x * y, nil })
	evalDiv = arith(func(x, y float32) float32 { return x / y }, func(x, y float64) float64 { return x / y },
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
	xt, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	yt, err := c.in(in, 1)
	if err != nil {
		return nil, err
	}
	dims, err := broadcast(xt.Dims, yt.Dims)
	if err != nil {
		return nil, err
	}
	if _, err := c.check(dims); err != nil {
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
	ys := make([]float64, yv.len()) // every exponent type converts exactly to float64 except huge ints
	for i := range ys {
		switch {
		case yv.isF32():
			ys[i] = float64(yv.f32[i])
		case yv.isF64():
			ys[i] = yv.f64[i]
		default:
			ys[i] = float64(yv.i64[i])
		}
	}
	ix, iy := bcastIndex(dims, xt.Dims), bcastIndex(dims, yt.Dims)
	switch {
	case x.isF32():
		// ONNX Runtime computes x*x and x*x*x for the exponents 2 and 3.
		out := make([]float32, len(ix))
		for i := range out {
			v, e := x.f32[ix[i]], ys[iy[i]]
			switch e {
			case 1:
				out[i] = v
			case 2:
				out[i] = v * v
			case 3:
				out[i] = v * v * v
			default:
				out[i] = float32(math.Pow(float64(v), e))
			}
		}
		return []*ir.Tensor{newF32(dims, out).tensor()}, nil
	case x.isF64():
		out := make([]float64, len(ix))
		for i := range out {
			v, e := x.f64[ix[i]], ys[iy[i]]
			switch e {
			case 2:
				out[i] = v * v
			case 3:
				out[i] = v * v * v
			default:
				out[i] = math.Pow(v, e)
			}
		}
		return []*ir.Tensor{newF64(dims, out).tensor()}, nil
	default:
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
}

// variadic folds Min/Max over all inputs with broadcasting.
func variadic(pick32 func(a, b float32) float32, pick64 func(a, b float64) float64, picki func(a, b int64) int64) evalFunc {
	return func(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
		var ts []*ir.Tensor
		for _, t := range in {
			if t != nil {
				ts = append(ts, t)
			}
		}
		if len(ts) == 0 {
			return nil, fmt.Errorf("no inputs")
		}
		acc := ts[0]
		if len(ts) == 1 {
			acc = acc.Clone()
			acc.Name = ""
		}
		for _, t := range ts[1:] {
			r, err := arith(
				func(x, y float32) float32 {
					if x != x || y != y {
						return float32(math.NaN())
					}
					return pick32(x, y)
				},
				func(x, y float64) float64 {
					if x != x || y != y {
						return math.NaN()
					}
					return pick64(x, y)
				},
				func(x, y int64) (int64, error) { return picki(x, y), nil },
			)(c, []*ir.Tensor{acc, t})
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

var (
	evalMin = variadic(func(a, b float32) float32 { return min(a, b) }, func(a, b float64) float64 { return min(a, b) },
		func(a, b int64) int64 { return min(a, b) })
	evalMax = variadic(func(a, b float32) float32 { return max(a, b) }, func(a, b float64) float64 { return max(a, b) },
		func(a, b int64) int64 { return max(a, b) })
)

func evalClip(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	xt, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	x, err := decode(xt)
	if err != nil {
		return nil, err
	}
	if x.dt == ir.Bool {
		return nil, fmt.Errorf("Clip on bool")
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
	n := x.len()
	dims := cloneDims(xt.Dims)
	switch {
	case x.isF32():
		out := append([]float32{}, x.f32...)
		for i := range out {
			if lo != nil && out[i] < lo.f32[0] {
				out[i] = lo.f32[0]
			}
			if hi != nil && out[i] > hi.f32[0] {
				out[i] = hi.f32[0]
			}
		}
		return []*ir.Tensor{newF32(dims, out).tensor()}, nil
	case x.isF64():
		out := append([]float64{}, x.f64...)
		for i := range out {
			if lo != nil && out[i] < lo.f64[0] {
				out[i] = lo.f64[0]
			}
			if hi != nil && out[i] > hi.f64[0] {
				out[i] = hi.f64[0]
			}
		}
		return []*ir.Tensor{newF64(dims, out).tensor()}, nil
	default:
		out := make([]int64, n)
		for i, v := range x.i64 {
			if lo != nil && v < lo.i64[0] {
				v = lo.i64[0]
			}
			if hi != nil && v > hi.i64[0] {
				v = hi.i64[0]
			}
			out[i] = v
		}
		return []*ir.Tensor{intTensor(x.dt, dims, out)}, nil
	}
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
			out := make([]float32, len(x.f32))
			for i, v := range x.f32 {
				out[i] = f32(v)
			}
			return []*ir.Tensor{newF32(dims, out).tensor()}, nil
		case x.isF64() && f64 != nil:
			out := make([]float64, len(x.f64))
			for i, v := range x.f64 {
				out[i] = f64(v)
			}
			return []*ir.Tensor{newF64(dims, out).tensor()}, nil
		case x.isInt() && fi != nil:
			out := make([]int64, len(x.i64))
			for i, v := range x.i64 {
				out[i] = wrap(x.dt, fi(v))
			}
			return []*ir.Tensor{intTensor(x.dt, dims, out)}, nil
		}
		return nil, fmt.Errorf("unsupported type %s", x.dt)
	}
}

func floatUnary(f32 func(float32) float32, f64 func(float64) float64) evalFunc {
	return unary(f32, f64, nil)
}

// viaF64 computes a float32 function as the float64 result rounded to float32.
func viaF64(f func(float64) float64) func(float32) float32 {
	return func(x float32) float32 { return float32(f(float64(x))) }
}

// sqrt32 is the correctly rounded float32 square root (rounding the float64 root once
// more is exact for sqrt).
func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }
func sqrt64(x float64) float64 { return math.Sqrt(x) }
func ceil32(x float32) float32 { return float32(math.Ceil(float64(x))) }
func ceil64(x float64) float64 { return math.Ceil(x) }
func floor32(x float32) float32 {
	return float32(math.Floor(float64(x)))
}
func floor64(x float64) float64   { return math.Floor(x) }
func log64(x float64) float64     { return math.Log(x) }
func exp64(x float64) float64     { return math.Exp(x) }
func erf64(x float64) float64     { return math.Erf(x) }
func tanh64(x float64) float64    { return math.Tanh(x) }
func sigmoid64(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

var (
	evalNeg = unary(func(x float32) float32 { return -x }, func(x float64) float64 { return -x },
		func(x int64) int64 { return -x })
	evalAbs = unary(func(x float32) float32 { return float32(math.Abs(float64(x))) }, math.Abs,
		func(x int64) int64 {
			if x < 0 {
				return -x
			}
			return x
		})
	evalSign = unary(
		func(x float32) float32 {
			switch {
			case x > 0:
				return 1
			case x < 0:
				return -1
			case x == 0:
				return 0
			}
			return x // NaN
		},
		func(x float64) float64 {
			switch {
			case x > 0:
				return 1
			case x < 0:
				return -1
			case x == 0:
				return 0
			}
			return x
		},
		sign64)
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
		out := make([]bool, len(ia))
		for i := range out {
			var x, y float64
			switch {
			case a.isF32():
				x, y = float64(a.f32[ia[i]]), float64(b.f32[ib[i]])
			case a.isF64():
				x, y = a.f64[ia[i]], b.f64[ib[i]]
			default:
				out[i] = pred(cmpInt(a.i64[ia[i]], b.i64[ib[i]]))
				continue
			}
			if x != x || y != y {
				out[i] = false
				continue
			}
			switch {
			case x < y:
				out[i] = pred(-1)
			case x > y:
				out[i] = pred(1)
			default:
				out[i] = pred(0)
			}
		}
		return []*ir.Tensor{boolTensor(dims, out)}, nil
	}
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
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
	xt, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	at, err := c.in(in, 1)
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
	x, err := decode(xt)
	if err != nil {
		return nil, err
	}
	if x.dt == ir.Bool {
		return nil, fmt.Errorf("CumSum on bool")
	}
	exclusive := c.n.AttrInt("exclusive", 0) != 0
	reverse := c.n.AttrInt("reverse", 0) != 0
	outer := numel(xt.Dims[:axis])
	dim := int(xt.Dims[axis])
	inner := numel(xt.Dims[axis+1:])
	// order lists the flat offsets along the axis in accumulation order.
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
		out := make([]float32, len(x.f32))
		run(func(dst, src int, first bool) {
			switch {
			case first && exclusive:
				out[dst] = 0
			case first:
				out[dst] = x.f32[dst]
			case exclusive:
				out[dst] = out[src] + x.f32[src]
			default:
				out[dst] = out[src] + x.f32[dst]
			}
		})
		return []*ir.Tensor{newF32(dims, out).tensor()}, nil
	case x.isF64():
		out := make([]float64, len(x.f64))
		run(func(dst, src int, first bool) {
			switch {
			case first && exclusive:
				out[dst] = 0
			case first:
				out[dst] = x.f64[dst]
			case exclusive:
				out[dst] = out[src] + x.f64[src]
			default:
				out[dst] = out[src] + x.f64[dst]
			}
		})
		return []*ir.Tensor{newF64(dims, out).tensor()}, nil
	default:
		out := make([]int64, len(x.i64))
		run(func(dst, src int, first bool) {
			switch {
			case first && exclusive:
				out[dst] = 0
			case first:
				out[dst] = x.i64[dst]
			case exclusive:
				out[dst] = wrap(x.dt, out[src]+x.i64[src])
			default:
				out[dst] = wrap(x.dt, out[src]+x.i64[dst])
			}
		})
		return []*ir.Tensor{intTensor(x.dt, dims, out)}, nil
	}
}

// maxMatMulMACs bounds the work of one MatMul: the evaluator folds small constants only.
const maxMatMulMACs = 1 << 24

func evalMatMul(c *call, in []*ir.Tensor) ([]*ir.Tensor, error) {
	at, err := c.in(in, 0)
	if err != nil {
		return nil, err
	}
	bt, err := c.in(in, 1)
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
	a, err := decode(at)
	if err != nil {
		return nil, err
	}
	b, err := decode(bt)
	if err != nil {
		return nil, err
	}
	if a.dt == ir.Bool {
		return nil, fmt.Errorf("MatMul on bool")
	}
	nb := numel(batch)
	ia := bcastIndex(batch, ad[:len(ad)-2])
	ib := bcastIndex(batch, bd[:len(bd)-2])
	sa, sb := int(m*k), int(k*n)
	M, K, N := int(m), int(k), int(n)
	var t *ir.Tensor
	switch {
	case a.isF32():
		out := make([]float32, total)
		for bi := 0; bi < nb; bi++ {
			A, B, O := a.f32[ia[bi]*sa:], b.f32[ib[bi]*sb:], out[bi*M*N:]
			for i := 0; i < M; i++ {
				for j := 0; j < N; j++ {
					var s float32
					for l := 0; l < K; l++ {
						p := A[i*K+l] * B[l*N+j]
						s += p
					}
					O[i*N+j] = s
				}
			}
		}
		t = newF32(outFull, out).tensor()
	case a.isF64():
		out := make([]float64, total)
		for bi := 0; bi < nb; bi++ {
			A, B, O := a.f64[ia[bi]*sa:], b.f64[ib[bi]*sb:], out[bi*M*N:]
			for i := 0; i < M; i++ {
				for j := 0; j < N; j++ {
					var s float64
					for l := 0; l < K; l++ {
						p := A[i*K+l] * B[l*N+j]
						s += p
					}
					O[i*N+j] = s
				}
			}
		}
		t = newF64(outFull, out).tensor()
	default:
		out := make([]int64, total)
		for bi := 0; bi < nb; bi++ {
			A, B, O := a.i64[ia[bi]*sa:], b.i64[ib[bi]*sb:], out[bi*M*N:]
			for i := 0; i < M; i++ {
				for j := 0; j < N; j++ {
					var s int64
					for l := 0; l < K; l++ {
						s += A[i*K+l] * B[l*N+j]
					}
					O[i*N+j] = wrap(a.dt, s)
				}
			}
		}
		t = intTensor(a.dt, outFull, out)
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
		x, err := decode(xt)
		if err != nil {
			return nil, err
		}
		if x.dt == ir.Bool {
			return nil, fmt.Errorf("reduction on bool")
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
		switch {
		case x.isF32():
			out := make([]float32, nOut)
			seen := make([]bool, nOut)
			for i, v := range x.f32 {
				o := dst[i]
				if !seen[o] {
					out[o], seen[o] = v, true
					continue
				}
				out[o] = reduce32(kind, out[o], v)
			}
			for o := range out {
				switch {
				case !seen[o] && kind == "prod":
					out[o] = 1
				case kind == "mean":
					out[o] /= float32(count)
				}
				if (kind == "max" || kind == "min") && out[o] != out[o] {
					return nil, errNaN
				}
			}
			return []*ir.Tensor{newF32(outDims, out).tensor()}, nil
		case x.isF64():
			out := make([]float64, nOut)
			seen := make([]bool, nOut)
			for i, v := range x.f64 {
				o := dst[i]
				if !seen[o] {
					out[o], seen[o] = v, true
					continue
				}
				out[o] = reduce64(kind, out[o], v)
			}
			for o := range out {
				switch {
				case !seen[o] && kind == "prod":
					out[o] = 1
				case kind == "mean":
					out[o] /= float64(count)
				}
				if (kind == "max" || kind == "min") && out[o] != out[o] {
					return nil, errNaN
				}
			}
			return []*ir.Tensor{newF64(outDims, out).tensor()}, nil
		default:
			out := make([]int64, nOut)
			seen := make([]bool, nOut)
			for i, v := range x.i64 {
				o := dst[i]
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
					out[o] = max(out[o], v)
				case "min":
					out[o] = min(out[o], v)
				}
			}
			for o := range out {
				switch {
				case !seen[o] && kind == "prod":
					out[o] = 1
				case kind == "mean":
					out[o] /= int64(count)
				}
				out[o] = wrap(x.dt, out[o])
			}
			return []*ir.Tensor{intTensor(x.dt, outDims, out)}, nil
		}
	}
}

func reduce32(kind string, acc, v float32) float32 {
	switch kind {
	case "sum", "mean":
		return acc + v
	case "prod":
		return acc * v
	case "max":
		if v != v || acc != acc {
			return float32(math.NaN())
		}
		return max(acc, v)
	default:
		if v != v || acc != acc {
			return float32(math.NaN())
		}
		return min(acc, v)
	}
}

func reduce64(kind string, acc, v float64) float64 {
	switch kind {
	case "sum", "mean":
		return acc + v
	case "prod":
		return acc * v
	case "max":
		return max(acc, v)
	default:
		return min(acc, v)
	}
}
