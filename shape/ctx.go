package shape

import (
	"fmt"

	"github.com/qcc-dev/qcc/ir"
)

// nctx is what a rule sees: the node, its inputs' types and contents, and the output
// types it sets.
type nctx struct {
	e     *engine
	n     *ir.Node
	opset int64
	out   []*ir.Type
}

// rule types a node's outputs. A rule sets what it can and leaves the rest nil; it returns
// an error only for a node that cannot be valid (incompatible shapes, bad axes).
type rule func(c *nctx) error

func (c *nctx) in(i int) *ir.Value { return c.n.Input(i) }

func (c *nctx) has(i int) bool { return c.n.Input(i) != nil }

func (c *nctx) nin() int { return len(c.n.Inputs()) }

func (c *nctx) nout() int { return len(c.n.Outputs()) }

func (c *nctx) typ(i int) *ir.Type {
	if v := c.in(i); v != nil {
		return v.Type
	}
	return nil
}

func isTensor(t *ir.Type) bool {
	return t != nil && (t.Kind == ir.TensorType || t.Kind == ir.SparseTensorType)
}

// dtype is input i's element type, Undefined when unknown.
func (c *nctx) dtype(i int) ir.DataType {
	if t := c.typ(i); isTensor(t) {
		return t.DType
	}
	return ir.Undefined
}

// shape is a copy of input i's shape; ok is false when its rank is unknown.
func (c *nctx) shape(i int) (ir.Shape, bool) {
	t := c.typ(i)
	if !isTensor(t) || !t.HasShape {
		return nil, false
	}
	return cloneShape(t.Shape), true
}

// rank is input i's rank, -1 when unknown.
func (c *nctx) rank(i int) int {
	if s, ok := c.shape(i); ok {
		return len(s)
	}
	return -1
}

// value is the symbolic contents of input i.
func (c *nctx) value(i int) (ir.Shape, bool) {
	v := c.in(i)
	if v == nil {
		return nil, false
	}
	return c.e.value(v)
}

// ints is the contents of input i when every element is a known number.
func (c *nctx) ints(i int) ([]int64, bool) {
	s, ok := c.value(i)
	if !ok {
		return nil, false
	}
	return s.Ints()
}

// length is the number of elements of a 1-D input (from its contents or its shape).
func (c *nctx) length(i int) (int, bool) {
	if s, ok := c.value(i); ok {
		return len(s), true
	}
	if s, ok := c.shape(i); ok {
		if len(s) == 0 {
			return 1, true
		}
		if len(s) == 1 && s[0].Known {
			return int(s[0].Value), true
		}
	}
	return 0, false
}

// set records output i as a tensor of dt; the shape is used when ok.
func (c *nctx) set(i int, dt ir.DataType, s ir.Shape, ok bool) {
	if i >= len(c.out) || c.n.Output(i) == nil {
		return
	}
	t := &ir.Type{Kind: ir.TensorType, DType: dt}
	if ok {
		t.Shape, t.HasShape = cloneShape(s), true
		if t.Shape == nil {
			t.Shape = ir.Shape{}
		}
	}
	c.out[i] = t
}

// setType records output i as a copy of t.
func (c *nctx) setType(i int, t *ir.Type) {
	if i >= len(c.out) || c.n.Output(i) == nil || t == nil {
		return
	}
	c.out[i] = t.Clone()
}

// like sets output o to input i's type (dtype and shape), whatever it is.
func (c *nctx) like(o, i int) {
	t := c.typ(i)
	if t == nil {
		return
	}
	if isTensor(t) {
		s, ok := c.shape(i)
		c.set(o, t.DType, s, ok)
		return
	}
	c.setType(o, t)
}

func (c *nctx) attrInt(name string, def int64) int64 { return c.n.AttrInt(name, def) }

func (c *nctx) hasAttr(name string) bool { return c.n.Attr(name) != nil }

// axes reads an axes list that is an attribute before opset since and input idx from it.
// present says whether axes were given at all; known whether their values are known.
func (c *nctx) axes(since int64, idx int) (axes []int64, present, known bool) {
	if c.opset < since {
		a, ok := c.n.AttrInts("axes")
		return a, ok, ok
	}
	if !c.has(idx) {
		return nil, false, true
	}
	a, ok := c.ints(idx)
	return a, true, ok
}

func errf(format string, args ...any) error { return fmt.Errorf(format, args...) }
