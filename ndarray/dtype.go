// Package ndarray holds dense, little-endian, C-order tensors as raw bytes.
//
// Keeping the data as bytes (rather than one Go slice type per dtype) lets the
// npz reader, the ONNX Runtime bridge and the compiler pass tensors of any
// element type through one struct without copies or type switches.
package ndarray

import (
	"fmt"
	"strings"
)

// DType is an element type. Its values are the ONNX TensorProto.DataType
// codes, so a DType can be stored in or read from an ONNX model as is.
type DType int32

// The ONNX TensorProto.DataType codes. Complex and 8-bit/4-bit float types
// are not listed: nothing in qcc produces or consumes them yet.
const (
	Undefined DType = 0
	Float32   DType = 1  // FLOAT
	Uint8     DType = 2  // UINT8
	Int8      DType = 3  // INT8
	Uint16    DType = 4  // UINT16
	Int16     DType = 5  // INT16
	Int32     DType = 6  // INT32
	Int64     DType = 7  // INT64
	String    DType = 8  // STRING: variable-length, so an Array cannot hold it
	Bool      DType = 9  // BOOL, one byte per element (0 or 1)
	Float16   DType = 10 // FLOAT16, IEEE half
	Float64   DType = 11 // DOUBLE
	Uint32    DType = 12 // UINT32
	Uint64    DType = 13 // UINT64
	BFloat16  DType = 16 // BFLOAT16, the top half of a float32
)

type kind uint8

const (
	kindNone kind = iota
	kindFloat
	kindInt
	kindUint
	kindBool
)

type dtypeInfo struct {
	name  string // numpy-style name, used by String and ParseDType
	onnx  string // TensorProto.DataType enum name
	size  int    // bytes per element; 0 when an Array cannot hold the type
	descr string // numpy .npy descr; "" when numpy has no such dtype
	kind  kind
}

var dtypes = map[DType]dtypeInfo{
	Undefined: {"undefined", "UNDEFINED", 0, "", kindNone},
	Float32:   {"float32", "FLOAT", 4, "<f4", kindFloat},
	Uint8:     {"uint8", "UINT8", 1, "|u1", kindUint},
	Int8:      {"int8", "INT8", 1, "|i1", kindInt},
	Uint16:    {"uint16", "UINT16", 2, "<u2", kindUint},
	Int16:     {"int16", "INT16", 2, "<i2", kindInt},
	Int32:     {"int32", "INT32", 4, "<i4", kindInt},
	Int64:     {"int64", "INT64", 8, "<i8", kindInt},
	String:    {"string", "STRING", 0, "", kindNone},
	Bool:      {"bool", "BOOL", 1, "|b1", kindBool},
	Float16:   {"float16", "FLOAT16", 2, "<f2", kindFloat},
	Float64:   {"float64", "DOUBLE", 8, "<f8", kindFloat},
	Uint32:    {"uint32", "UINT32", 4, "<u4", kindUint},
	Uint64:    {"uint64", "UINT64", 8, "<u8", kindUint},
	// numpy has no bfloat16; ml_dtypes' is not portable, so npz refuses it.
	BFloat16: {"bfloat16", "BFLOAT16", 2, "", kindFloat},
}

// Size returns the bytes per element, or 0 for types an Array cannot hold
// (undefined, string, unknown codes).
func (d DType) Size() int { return dtypes[d].size }

// String returns the numpy-style name ("float32", "int64", ...).
func (d DType) String() string {
	if info, ok := dtypes[d]; ok {
		return info.name
	}
	return fmt.Sprintf("dtype(%d)", int32(d))
}

// ONNXName returns the TensorProto.DataType enum name ("FLOAT", "INT64", ...).
func (d DType) ONNXName() string {
	if info, ok := dtypes[d]; ok {
		return info.onnx
	}
	return fmt.Sprintf("DataType(%d)", int32(d))
}

// Supported reports whether an Array can hold elements of this type.
func (d DType) Supported() bool { return d.Size() > 0 }

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool { return dtypes[d].kind == kindFloat }

// IsInteger reports whether d is a signed or unsigned integer type.
func (d DType) IsInteger() bool { k := dtypes[d].kind; return k == kindInt || k == kindUint }

// NumpyDescr returns the .npy descr (e.g. "<f4"), or "" if numpy has no
// equivalent type.
func (d DType) NumpyDescr() string { return dtypes[d].descr }

// FromNumpyDescr maps a little-endian or byte-order-free .npy descr ("<f4",
// "|b1", "<i8", ...) to a DType. Byte-order handling is the caller's: pass the
// descr with '<' (or '|' for one-byte types).
func FromNumpyDescr(descr string) (DType, bool) {
	for d, info := range dtypes {
		if info.descr != "" && info.descr == descr {
			return d, true
		}
	}
	return Undefined, false
}

// ParseDType accepts a numpy-style name ("float32") or an ONNX enum name
// ("FLOAT"), case-insensitively.
func ParseDType(name string) (DType, error) {
	for d, info := range dtypes {
		if d != Undefined && (strings.EqualFold(name, info.name) || strings.EqualFold(name, info.onnx)) {
			return d, nil
		}
	}
	return Undefined, fmt.Errorf("ndarray: unknown dtype %q", name)
}
