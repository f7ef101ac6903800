package ir

import (
	"strconv"
	"strings"
)

// Dim is one dimension of a tensor shape: a known size, a symbolic name, or unknown.
type Dim struct {
	Value int64  // valid when Param == "" and Known
	Param string // symbolic name such as "batch"
	Known bool   // Value is meaningful
}

// D returns a known dimension.
func D(v int64) Dim { return Dim{Value: v, Known: true} }

// Sym returns a symbolic dimension.
func Sym(name string) Dim { return Dim{Param: name} }

func (d Dim) String() string {
	switch {
	case d.Known:
		return strconv.FormatInt(d.Value, 10)
	case d.Param != "":
		return d.Param
	}
	return "?"
}

// Shape is a tensor shape. A nil Shape in a Type means the rank is unknown.
type Shape []Dim

// Static reports whether every dimension is a known number.
func (s Shape) Static() bool {
	for _, d := range s {
		if !d.Known {
			return false
		}
	}
	return true
}

// Ints returns the dimensions as numbers; ok is false unless the shape is static.
func (s Shape) Ints() ([]int64, bool) {
	out := make([]int64, len(s))
	for i, d := range s {
		if !d.Known {
			return nil, false
		}
		out[i] = d.Value
	}
	return out, true
}

// SameDim reports whether two dims are provably equal: the same known number, or the
// same symbol. An unknown dim equals nothing, itself included. Symbols compare by name:
// the shape inference writes products in one canonical form ("4*batch"), so equal
// products of symbols have equal names. This is the one place that decides it; passes
// and patterns ask it rather than comparing dims themselves.
func SameDim(a, b Dim) bool {
	if a.Known || b.Known {
		return a.Known && b.Known && a.Value == b.Value
	}
	return a.Param != "" && a.Param == b.Param
}

// SameShape reports whether two shapes are provably equal: known ranks (non-nil), equal,
// and every dim provably equal (SameDim).
func SameShape(a, b Shape) bool {
	if a == nil || b == nil || len(a) != len(b) {
		return false
	}
	for i := range a {
		if !SameDim(a[i], b[i]) {
			return false
		}
	}
	return true
}

func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = d.String()
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// TypeKind says which TypeProto case a Type is.
type TypeKind int

const (
	TensorType TypeKind = iota
	SparseTensorType
	SequenceType
	MapType
	OptionalType
	OpaqueType
)

// Type is the static type of a value. Tensor and sparse tensor types are modelled; the
// container types keep their element type in Elem (sequence, optional) or Key/Elem (map).
type Type struct {
	Kind       TypeKind
	DType      DataType // element type of a tensor; key type of a map
	Shape      Shape    // nil: rank unknown
	HasShape   bool     // a shape field was present (even with rank 0)
	Elem       *Type    // element of sequence/optional, value of map
	Denotation string
	// Opaque types keep their domain and name.
	Domain, Name string
}

// TensorOf returns a tensor type.
func TensorOf(dt DataType, dims ...Dim) *Type {
	return &Type{Kind: TensorType, DType: dt, Shape: Shape(dims), HasShape: true}
}

// Rank is the number of dimensions, -1 when unknown.
func (t *Type) Rank() int {
	if t == nil || !t.HasShape {
		return -1
	}
	return len(t.Shape)
}

// Clone returns a deep copy.
func (t *Type) Clone() *Type {
	if t == nil {
		return nil
	}
	c := *t
	if t.Shape != nil {
		c.Shape = append(Shape{}, t.Shape...)
	}
	c.Elem = t.Elem.Clone()
	return &c
}

// Equal reports whether two types are the same.
func (t *Type) Equal(u *Type) bool {
	if t == nil || u == nil {
		return t == u
	}
	if t.Kind != u.Kind || t.DType != u.DType || t.HasShape != u.HasShape || len(t.Shape) != len(u.Shape) ||
		t.Denotation != u.Denotation || t.Domain != u.Domain || t.Name != u.Name {
		return false
	}
	for i := range t.Shape {
		if t.Shape[i] != u.Shape[i] {
			return false
		}
	}
	return t.Elem.Equal(u.Elem)
}

func (t *Type) String() string {
	if t == nil {
		return "?"
	}
	switch t.Kind {
	case TensorType, SparseTensorType:
		s := t.DType.String()
		if t.HasShape {
			s += t.Shape.String()
		}
		if t.Kind == SparseTensorType {
			s = "sparse_tensor(" + s + ")"
		}
		return s
	case SequenceType:
		return "seq(" + t.Elem.String() + ")"
	case OptionalType:
		return "optional(" + t.Elem.String() + ")"
	case MapType:
		return "map(" + t.DType.String() + "," + t.Elem.String() + ")"
	}
	return "opaque(" + t.Domain + "," + t.Name + ")"
}
