package eval

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/qcc-dev/qcc/ir"
)

// num is a tensor decoded for arithmetic: exactly one of f32, f64, i64 is used, chosen
// by the data type (integers of every width and bool are widened to int64).
type num struct {
	dt   ir.DataType
	dims []int64
	f32  []float32
	f64  []float64
	i64  []int64
}

func (x *num) isF32() bool { return x.dt == ir.Float }
func (x *num) isF64() bool { return x.dt == ir.Double }
func (x *num) isInt() bool { return !x.isF32() && !x.isF64() }

func (x *num) len() int {
	switch {
	case x.isF32():
		return len(x.f32)
	case x.isF64():
		return len(x.f64)
	}
	return len(x.i64)
}

// intType reports whether dt is an integer type (or bool) the evaluator computes with.
// uint64 is left out: its values do not fit int64.
func intType(dt ir.DataType) bool {
	switch dt {
	case ir.Int8, ir.Uint8, ir.Int16, ir.Uint16, ir.Int32, ir.Uint32, ir.Int64, ir.Bool:
		return true
	}
	return false
}

// numericType reports whether decode accepts dt.
func numericType(dt ir.DataType) bool { return dt == ir.Float || dt == ir.Double || intType(dt) }

// decode reads a tensor for arithmetic.
func decode(t *ir.Tensor) (*num, error) {
	x := &num{dt: t.DType, dims: t.Dims}
	var err error
	switch {
	case t.DType == ir.Float:
		x.f32, err = t.Float32s()
	case t.DType == ir.Double:
		x.f64, err = t.Float64s()
	case intType(t.DType):
		x.i64, err = t.Int64s()
	default:
		return nil, fmt.Errorf("unsupported type %s", t.DType)
	}
	if err != nil {
		return nil, err
	}
	return x, nil
}

// decodeArith is decode for an op that refuses bool with "<what> on bool".
func decodeArith(t *ir.Tensor, what string) (*num, error) {
	x, err := decode(t)
	if err != nil {
		return nil, err
	}
	if x.dt == ir.Bool {
		return nil, fmt.Errorf("%s on bool", what)
	}
	return x, nil
}

func newF32(dims []int64, v []float32) *num {
	return &num{dt: ir.Float, dims: dims, f32: v}
}

func newF64(dims []int64, v []float64) *num {
	return &num{dt: ir.Double, dims: dims, f64: v}
}

func newInt(dt ir.DataType, dims []int64, v []int64) *num {
	return &num{dt: dt, dims: dims, i64: v}
}

// elem is the element types a num computes in. Generic code over elem is written once and
// instantiated per type, so float32 arithmetic stays float32.
type elem interface{ float32 | float64 | int64 }

// values returns the elements of x as []T; T must be x's element type.
func values[T elem](x *num) []T {
	var v any
	switch {
	case x.isF32():
		v = x.f32
	case x.isF64():
		v = x.f64
	default:
		v = x.i64
	}
	return v.([]T)
}

// encode encodes values computed for a num of type dt (see tensor).
func encode[T elem](dt ir.DataType, dims []int64, v []T) *ir.Tensor {
	switch v := any(v).(type) {
	case []float32:
		return newF32(dims, v).tensor()
	case []float64:
		return newF64(dims, v).tensor()
	}
	return intTensor(dt, dims, any(v).([]int64))
}

// convert converts every element of x to D as a Go conversion does.
func convert[D elem](x *num) []D {
	switch {
	case x.isF32():
		return convertSlice[D](x.f32)
	case x.isF64():
		return convertSlice[D](x.f64)
	}
	return convertSlice[D](x.i64)
}

func convertSlice[D, S elem](v []S) []D {
	out := make([]D, len(v))
	for i, x := range v {
		out[i] = D(x)
	}
	return out
}

// tensor encodes x; integers are wrapped to the width of their type (as a C cast does).
func (x *num) tensor() *ir.Tensor {
	switch {
	case x.isF32():
		return ir.FloatTensor(x.dims, x.f32)
	case x.isF64():
		b := make([]byte, 8*len(x.f64))
		for i, v := range x.f64 {
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(v))
		}
		return ir.NewTensor(ir.Double, x.dims, b)
	}
	return intTensor(x.dt, x.dims, x.i64)
}

// intTensor encodes integers (or bools) as dt.
func intTensor(dt ir.DataType, dims []int64, v []int64) *ir.Tensor {
	size := dt.Bits() / 8
	b := make([]byte, size*len(v))
	for i, x := range v {
		switch size {
		case 1:
			if dt == ir.Bool && x != 0 {
				x = 1
			}
			b[i] = byte(x)
		case 2:
			binary.LittleEndian.PutUint16(b[2*i:], uint16(x))
		case 4:
			binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
		case 8:
			binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
		}
	}
	return ir.NewTensor(dt, dims, b)
}

// boolTensor encodes bools.
func boolTensor(dims []int64, v []bool) *ir.Tensor {
	b := make([]byte, len(v))
	for i, x := range v {
		if x {
			b[i] = 1
		}
	}
	return ir.NewTensor(ir.Bool, dims, b)
}

// int64s reads an integer tensor as int64 (shape inputs, indices, axes).
func int64s(t *ir.Tensor) ([]int64, error) {
	if t.DType != ir.Int64 && t.DType != ir.Int32 {
		return nil, fmt.Errorf("expected int64 or int32, got %s", t.DType)
	}
	return t.Int64s()
}

// scalarInt reads a one-element integer tensor.
func scalarInt(t *ir.Tensor) (int64, error) {
	v, err := int64s(t)
	if err != nil {
		return 0, err
	}
	if len(v) != 1 {
		return 0, fmt.Errorf("expected one element, got shape %v", t.Dims)
	}
	return v[0], nil
}

// raw returns the bytes of a fixed-size type and its element size, for ops that move
// elements without looking at them.
func raw(t *ir.Tensor) ([]byte, int, error) {
	bits := t.DType.Bits()
	if t.DType == ir.String || bits == 0 || bits%8 != 0 {
		return nil, 0, fmt.Errorf("unsupported type %s", t.DType)
	}
	b, err := t.Bytes()
	if err != nil {
		return nil, 0, err
	}
	return b, bits / 8, nil
}

func numel(dims []int64) int {
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	return n
}

func cloneDims(d []int64) []int64 { return append([]int64{}, d...) }

// normAxis maps a possibly negative axis into [0, rank).
func normAxis(axis int64, rank int) (int, error) {
	if axis < -int64(rank) || axis >= int64(rank) {
		return 0, fmt.Errorf("axis %d out of range for rank %d", axis, rank)
	}
	if axis < 0 {
		axis += int64(rank)
	}
	return int(axis), nil
}

// broadcast returns the numpy-style broadcast of shapes.
func broadcast(shapes ...[]int64) ([]int64, error) {
	rank := 0
	for _, s := range shapes {
		rank = max(rank, len(s))
	}
	out := make([]int64, rank)
	for i := range out {
		out[i] = 1
	}
	for _, s := range shapes {
		off := rank - len(s)
		for i, d := range s {
			switch o := out[off+i]; {
			case d == o || d == 1:
			case o == 1:
				out[off+i] = d
			default:
				return nil, fmt.Errorf("shapes %v do not broadcast", shapes)
			}
		}
	}
	return out, nil
}

// strides returns row-major strides of dims.
func strides(dims []int64) []int {
	s := make([]int, len(dims))
	acc := 1
	for i := len(dims) - 1; i >= 0; i-- {
		s[i] = acc
		acc *= int(dims[i])
	}
	return s
}

// bcastIndex maps each flat index of out to the flat index of in, which broadcasts to out.
func bcastIndex(out, in []int64) []int {
	n := numel(out)
	idx := make([]int, n)
	if slices.Equal(in, out) {
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	// Strides of in, aligned to out's rank, 0 on broadcast axes.
	st := make([]int, len(out))
	is := strides(in)
	off := len(out) - len(in)
	for i := range in {
		if in[i] != 1 {
			st[off+i] = is[i]
		}
	}
	ctr := make([]int64, len(out))
	cur := 0
	for i := 0; i < n; i++ {
		idx[i] = cur
		for k := len(out) - 1; k >= 0; k-- {
			ctr[k]++
			cur += st[k]
			if ctr[k] < out[k] {
				break
			}
			cur -= st[k] * int(ctr[k])
			ctr[k] = 0
		}
	}
	return idx
}
