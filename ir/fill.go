package ir

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/qcc-dev/qcc/ndarray"
)

// Float32ToBFloat16 rounds f to bfloat16, nearest even; NaN stays a quiet NaN.
func Float32ToBFloat16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// Filled returns a tensor of the float type dt with every element v: the constants a
// rewrite adds beside values of that type (a zero, a scale, a mask floor).
func Filled(dt DataType, dims []int64, v float64) (*Tensor, error) {
	n := (&Tensor{Dims: dims}).NumElements()
	vs := make([]float64, n)
	for i := range vs {
		vs[i] = v
	}
	return FloatsTensor(dt, dims, vs)
}

// FloatsTensor returns a tensor of the float type dt holding vs, each rounded to dt once.
func FloatsTensor(dt DataType, dims []int64, vs []float64) (*Tensor, error) {
	var put func(b []byte, v float64) []byte
	switch dt {
	case Float:
		put = func(b []byte, v float64) []byte {
			return binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(v)))
		}
	case Double:
		put = func(b []byte, v float64) []byte { return binary.LittleEndian.AppendUint64(b, math.Float64bits(v)) }
	case Float16:
		put = func(b []byte, v float64) []byte {
			return binary.LittleEndian.AppendUint16(b, ndarray.Float32ToHalf(float32(v)))
		}
	case BFloat16:
		put = func(b []byte, v float64) []byte {
			return binary.LittleEndian.AppendUint16(b, Float32ToBFloat16(float32(v)))
		}
	default:
		return nil, fmt.Errorf("no %s constants: not a float type", dt)
	}
	t := &Tensor{DType: dt, Dims: append([]int64{}, dims...)}
	if n := t.NumElements(); n != int64(len(vs)) {
		return nil, fmt.Errorf("%d values for a %v tensor", len(vs), dims)
	}
	t.raw = make([]byte, 0, dt.ByteSize(int64(len(vs))))
	for _, v := range vs {
		t.raw = put(t.raw, v)
	}
	return t, nil
}
