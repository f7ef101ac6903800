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
	var one []byte
	switch dt {
	case Float:
		one = binary.LittleEndian.AppendUint32(nil, math.Float32bits(float32(v)))
	case Double:
		one = binary.LittleEndian.AppendUint64(nil, math.Float64bits(v))
	case Float16:
		one = binary.LittleEndian.AppendUint16(nil, ndarray.Float32ToHalf(float32(v)))
	case BFloat16:
		one = binary.LittleEndian.AppendUint16(nil, Float32ToBFloat16(float32(v)))
	default:
		return nil, fmt.Errorf("no %s constants: not a float type", dt)
	}
	t := &Tensor{DType: dt, Dims: append([]int64{}, dims...)}
	n := t.NumElements()
	t.raw = make([]byte, 0, n*int64(len(one)))
	for i := int64(0); i < n; i++ {
		t.raw = append(t.raw, one...)
	}
	return t, nil
}
