package ndarray

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Array is a dense tensor in C (row-major) order. Data holds Len()*DType.Size()
// bytes, little-endian. A zero-length Shape is a scalar (one element).
type Array struct {
	DType DType
	Shape []int64
	Data  []byte
}

// NumElements returns the product of shape's dimensions, or an error if a
// dimension is negative or the product overflows an int.
func NumElements(shape []int64) (int, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("ndarray: negative dimension in shape %v", shape)
		}
		if d != 0 && n > math.MaxInt/d {
			return 0, fmt.Errorf("ndarray: shape %v has too many elements", shape)
		}
		n *= d
	}
	return int(n), nil
}

// New returns a zero-filled array. It panics on an unsupported dtype or an
// invalid shape, which are programming errors; use Validate on untrusted
// input.
func New(dt DType, shape []int64) *Array {
	if !dt.Supported() {
		panic(fmt.Sprintf("ndarray.New: unsupported dtype %v", dt))
	}
	n, err := NumElements(shape)
	if err != nil {
		panic(err.Error())
	}
	return &Array{DType: dt, Shape: cloneShape(shape), Data: make([]byte, n*dt.Size())}
}

func cloneShape(s []int64) []int64 {
	return append(make([]int64, 0, len(s)), s...)
}

// Len returns the number of elements.
func (a *Array) Len() int {
	n, err := NumElements(a.Shape)
	if err != nil {
		return 0
	}
	return n
}

// Validate checks that the dtype is supported and Data has exactly the bytes
// the shape calls for.
func (a *Array) Validate() error {
	if a == nil {
		return errors.New("ndarray: nil array")
	}
	if !a.DType.Supported() {
		return fmt.Errorf("ndarray: unsupported dtype %v", a.DType)
	}
	n, err := NumElements(a.Shape)
	if err != nil {
		return err
	}
	if want := n * a.DType.Size(); len(a.Data) != want {
		return fmt.Errorf("ndarray: %v%v needs %d bytes, have %d", a.DType, a.Shape, want, len(a.Data))
	}
	return nil
}

// Clone returns a deep copy.
func (a *Array) Clone() *Array {
	return &Array{DType: a.DType, Shape: cloneShape(a.Shape), Data: append([]byte(nil), a.Data...)}
}

// String gives a short description such as "float32[2 16 64]" (no data).
func (a *Array) String() string {
	return fmt.Sprintf("%v%v", a.DType, a.Shape)
}

// SameShape reports whether two shapes are equal.
func SameShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func checkLen(fn string, shape []int64, n int) {
	want, err := NumElements(shape)
	if err != nil {
		panic(fn + ": " + err.Error())
	}
	if want != n {
		panic(fmt.Sprintf("%s: shape %v needs %d elements, got %d", fn, shape, want, n))
	}
}

// FromFloat32 builds a float32 array; it panics if len(v) does not match shape.
func FromFloat32(shape []int64, v []float32) *Array {
	checkLen("ndarray.FromFloat32", shape, len(v))
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return &Array{DType: Float32, Shape: cloneShape(shape), Data: b}
}

// FromFloat64 builds a float64 array; it panics if len(v) does not match shape.
func FromFloat64(shape []int64, v []float64) *Array {
	checkLen("ndarray.FromFloat64", shape, len(v))
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return &Array{DType: Float64, Shape: cloneShape(shape), Data: b}
}

// FromInt64 builds an int64 array; it panics if len(v) does not match shape.
func FromInt64(shape []int64, v []int64) *Array {
	checkLen("ndarray.FromInt64", shape, len(v))
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return &Array{DType: Int64, Shape: cloneShape(shape), Data: b}
}

// FromInt32 builds an int32 array; it panics if len(v) does not match shape.
func FromInt32(shape []int64, v []int32) *Array {
	checkLen("ndarray.FromInt32", shape, len(v))
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return &Array{DType: Int32, Shape: cloneShape(shape), Data: b}
}

// FromBool builds a bool array; it panics if len(v) does not match shape.
func FromBool(shape []int64, v []bool) *Array {
	checkLen("ndarray.FromBool", shape, len(v))
	b := make([]byte, len(v))
	for i, x := range v {
		if x {
			b[i] = 1
		}
	}
	return &Array{DType: Bool, Shape: cloneShape(shape), Data: b}
}

// FromFloat16 builds a float16 array by rounding v to half precision
// (round-to-nearest-even); it panics if len(v) does not match shape.
func FromFloat16(shape []int64, v []float32) *Array {
	checkLen("ndarray.FromFloat16", shape, len(v))
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], Float32ToHalf(x))
	}
	return &Array{DType: Float16, Shape: cloneShape(shape), Data: b}
}

// Float64s returns every element converted to float64. It works for every
// numeric dtype (bool as 0/1, float16/bfloat16 decoded); int64 and uint64
// values above 2^53 lose precision.
func (a *Array) Float64s() []float64 {
	n := len(a.Data) / max(a.DType.Size(), 1)
	out := make([]float64, n)
	d := a.Data
	le := binary.LittleEndian
	switch a.DType {
	case Float32:
		for i := range out {
			out[i] = float64(math.Float32frombits(le.Uint32(d[4*i:])))
		}
	case Float64:
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(d[8*i:]))
		}
	case Float16:
		for i := range out {
			out[i] = float64(HalfToFloat32(le.Uint16(d[2*i:])))
		}
	case BFloat16:
		for i := range out {
			out[i] = float64(math.Float32frombits(uint32(le.Uint16(d[2*i:])) << 16))
		}
	case Uint8, Bool:
		for i := range out {
			out[i] = float64(d[i])
		}
	case Int8:
		for i := range out {
			out[i] = float64(int8(d[i]))
		}
	case Uint16:
		for i := range out {
			out[i] = float64(le.Uint16(d[2*i:]))
		}
	case Int16:
		for i := range out {
			out[i] = float64(int16(le.Uint16(d[2*i:])))
		}
	case Uint32:
		for i := range out {
			out[i] = float64(le.Uint32(d[4*i:]))
		}
	case Int32:
		for i := range out {
			out[i] = float64(int32(le.Uint32(d[4*i:])))
		}
	case Uint64:
		for i := range out {
			out[i] = float64(le.Uint64(d[8*i:]))
		}
	case Int64:
		for i := range out {
			out[i] = float64(int64(le.Uint64(d[8*i:])))
		}
	default:
		panic(fmt.Sprintf("ndarray: Float64s on unsupported dtype %v", a.DType))
	}
	return out
}

// Float32s returns the elements as float32: a plain decode for float32
// arrays, a conversion (see Float64s) for every other numeric dtype.
func (a *Array) Float32s() []float32 {
	if a.DType == Float32 {
		out := make([]float32, len(a.Data)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(a.Data[4*i:]))
		}
		return out
	}
	f := a.Float64s()
	out := make([]float32, len(f))
	for i, x := range f {
		out[i] = float32(x)
	}
	return out
}

// Int64s returns the elements of an integer or bool array as int64 (uint64
// values above MaxInt64 wrap). It panics on float arrays, where silent
// truncation would hide bugs.
func (a *Array) Int64s() []int64 {
	if !a.DType.IsInteger() && a.DType != Bool {
		panic(fmt.Sprintf("ndarray: Int64s on %v array", a.DType))
	}
	size := a.DType.Size()
	out := make([]int64, len(a.Data)/size)
	d := a.Data
	le := binary.LittleEndian
	signed := dtypes[a.DType].kind == kindInt
	for i := range out {
		var u uint64
		switch size {
		case 1:
			u = uint64(d[i])
			if signed {
				u = uint64(int64(int8(d[i])))
			}
		case 2:
			u = uint64(le.Uint16(d[2*i:]))
			if signed {
				u = uint64(int64(int16(u)))
			}
		case 4:
			u = uint64(le.Uint32(d[4*i:]))
			if signed {
				u = uint64(int64(int32(u)))
			}
		case 8:
			u = le.Uint64(d[8*i:])
		}
		out[i] = int64(u)
	}
	return out
}

// Bools returns the elements of a bool array.
func (a *Array) Bools() []bool {
	if a.DType != Bool {
		panic(fmt.Sprintf("ndarray: Bools on %v array", a.DType))
	}
	out := make([]bool, len(a.Data))
	for i, b := range a.Data {
		out[i] = b != 0
	}
	return out
}

// HalfToFloat32 decodes an IEEE 754 binary16 value.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0: // signed zero
		return math.Float32frombits(sign)
	default: // subnormal: exact in float32
		f := float32(mant) / (1 << 24)
		if sign != 0 {
			f = -f
		}
		return f
	}
}

// Float32ToHalf encodes f as IEEE 754 binary16 with round-to-nearest-even;
// out-of-range values become ±Inf, NaN stays NaN.
func Float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 // quiet NaN
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal half (or zero): shift the implicit-1 mantissa into place.
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		half := m >> shift
		rem := m & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 != 0) {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 != 0) {
		half++ // may carry into the exponent, which rounds up correctly (to Inf at most)
	}
	return sign | uint16(half)
}
