package ir

import (
	"fmt"
	"math"
)

// DataType is an ONNX TensorProto.DataType code. The numbers are wire facts.
type DataType int32

const (
	Undefined      DataType = 0
	Float          DataType = 1
	Uint8          DataType = 2
	Int8           DataType = 3
	Uint16         DataType = 4
	Int16          DataType = 5
	Int32          DataType = 6
	Int64          DataType = 7
	String         DataType = 8
	Bool           DataType = 9
	Float16        DataType = 10
	Double         DataType = 11
	Uint32         DataType = 12
	Uint64         DataType = 13
	Complex64      DataType = 14
	Complex128     DataType = 15
	BFloat16       DataType = 16
	Float8E4M3FN   DataType = 17
	Float8E4M3FNUZ DataType = 18
	Float8E5M2     DataType = 19
	Float8E5M2FNUZ DataType = 20
	Uint4          DataType = 21
	Int4           DataType = 22
	Float4E2M1     DataType = 23
	Float8E8M0     DataType = 24
	Uint2          DataType = 25
	Int2           DataType = 26
)

// dtypeInfo is one row of the data type table.
type dtypeInfo struct {
	text string // name in the ONNX textual syntax
	bits int    // storage bits per element in raw_data; 0 = not fixed size
}

var dtypes = map[DataType]dtypeInfo{
	Undefined:      {"undefined", 0},
	Float:          {"float", 32},
	Uint8:          {"uint8", 8},
	Int8:           {"int8", 8},
	Uint16:         {"uint16", 16},
	Int16:          {"int16", 16},
	Int32:          {"int32", 32},
	Int64:          {"int64", 64},
	String:         {"string", 0},
	Bool:           {"bool", 8},
	Float16:        {"float16", 16},
	Double:         {"double", 64},
	Uint32:         {"uint32", 32},
	Uint64:         {"uint64", 64},
	Complex64:      {"complex64", 64},
	Complex128:     {"complex128", 128},
	BFloat16:       {"bfloat16", 16},
	Float8E4M3FN:   {"float8e4m3fn", 8},
	Float8E4M3FNUZ: {"float8e4m3fnuz", 8},
	Float8E5M2:     {"float8e5m2", 8},
	Float8E5M2FNUZ: {"float8e5m2fnuz", 8},
	Uint4:          {"uint4", 4},
	Int4:           {"int4", 4},
	Float4E2M1:     {"float4e2m1", 4},
	Float8E8M0:     {"float8e8m0", 8},
	Uint2:          {"uint2", 2},
	Int2:           {"int2", 2},
}

// String returns the name the ONNX textual syntax uses.
func (d DataType) String() string {
	if i, ok := dtypes[d]; ok {
		return i.text
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// Bits is the storage size of one element in raw_data, 0 for strings and unknown types.
func (d DataType) Bits() int { return dtypes[d].bits }

// Known reports whether d is a data type this version of ONNX defines.
func (d DataType) Known() bool { _, ok := dtypes[d]; return ok && d != Undefined }

// IsFloat reports whether d is a floating-point type.
func (d DataType) IsFloat() bool {
	switch d {
	case Float, Double, Float16, BFloat16, Float8E4M3FN, Float8E4M3FNUZ, Float8E5M2, Float8E5M2FNUZ, Float4E2M1, Float8E8M0:
		return true
	}
	return false
}

// Epsilon is the gap between 1 and the next value of a float type (0 for the others):
// a constant stored in d is its exact value within Epsilon/2 relative.
func (d DataType) Epsilon() float64 {
	switch d {
	case Double:
		return 0x1p-52
	case Float:
		return 0x1p-23
	case Float16:
		return 0x1p-10
	case BFloat16:
		return 0x1p-7
	}
	return 0
}

// MaxFinite is the largest finite value of a float type (0 for the others); its negation
// is the lowest, what exporters write as finfo(dtype).min.
func (d DataType) MaxFinite() float64 {
	switch d {
	case Double:
		return math.MaxFloat64
	case Float:
		return math.MaxFloat32
	case Float16:
		return 65504
	case BFloat16:
		return 0x1.fep127
	}
	return 0
}

// IsInt reports whether d is an integer type (bool excluded).
func (d DataType) IsInt() bool {
	switch d {
	case Uint8, Int8, Uint16, Int16, Int32, Int64, Uint32, Uint64, Uint4, Int4, Uint2, Int2:
		return true
	}
	return false
}

// ParseDataType maps a textual-syntax name back to its code.
func ParseDataType(s string) (DataType, bool) {
	d, ok := dtypeByText[s]
	if !ok {
		return Undefined, false
	}
	return d, true
}

// dtypeByText inverts dtypes for ParseDataType, which the text printer calls for every
// name it writes (a name spelled like a type is quoted).
var dtypeByText = func() map[string]DataType {
	m := make(map[string]DataType, len(dtypes))
	for d, i := range dtypes {
		m[i.text] = d
	}
	return m
}()

// ByteSize is the raw_data length of n elements of d (sub-byte types are packed).
func (d DataType) ByteSize(n int64) int64 {
	b := int64(d.Bits())
	return (n*b + 7) / 8
}
