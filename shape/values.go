package shape

import (
	"math"

	"github.com/qcc-dev/qcc/ir"
)

// Contents of small integer tensors ("shape values"). Each element is a Dim: a known
// number, a symbol (the runtime size a Shape node read) or unknown. Only integer and bool
// tensors of rank 0 or 1 with at most maxValueLen elements are followed.

const maxValueLen = 1024

func intLike(dt ir.DataType) bool { return dt.IsInt() || dt == ir.Bool }

// value returns v's contents, computing them from its producer on first use.
func (e *engine) value(v *ir.Value) (ir.Shape, bool) {
	if s, ok := e.vals[v]; ok {
		return s, true
	}
	if e.noVal[v] {
		return nil, false
	}
	e.noVal[v] = true // also stops recursion through a cycle
	s, ok := e.computeValue(v)
	if !ok || len(s) > maxValueLen {
		return nil, false
	}
	delete(e.noVal, v)
	e.vals[v] = s
	return s, true
}

func (e *engine) computeValue(v *ir.Value) (ir.Shape, bool) {
	if v.Const != nil {
		return tensorValue(v.Const)
	}
	if t := v.Type; t != nil {
		if !isTensor(t) || (t.DType != ir.Undefined && !intLike(t.DType)) || t.Rank() > 1 {
			return nil, false
		}
	}
	p, idx := v.Producer()
	if p == nil || (p.Domain != "" && p.Domain != "ai.onnx") {
		return nil, false
	}
	f := valueRules[p.OpType]
	if f == nil {
		return nil, false
	}
	return f(&nctx{e: e, n: p, opset: e.opset}, idx)
}

func tensorValue(t *ir.Tensor) (ir.Shape, bool) {
	if t == nil || !intLike(t.DType) || len(t.Dims) > 1 || t.NumElements() > maxValueLen {
		return nil, false
	}
	xs, err := t.Int64s()
	if err != nil {
		return nil, false
	}
	return knownDims(xs), true
}

func knownDims(xs []int64) ir.Shape {
	s := make(ir.Shape, len(xs))
	for i, x := range xs {
		s[i] = ir.D(x)
	}
	return s
}

type valueRule func(c *nctx, out int) (ir.Shape, bool)

// valueRules compute the contents of an op's output from its inputs' contents. Filled by
// init: the rules call back into the engine, which reads the table.
var valueRules map[string]valueRule

func init() { valueRules = valueRuleTable() }

func valueRuleTable() map[string]valueRule {
	return map[string]valueRule{
		"Constant": func(c *nctx, _ int) (ir.Shape, bool) {
			if a := c.n.Attr("value"); a != nil && a.Tensor != nil {
				return tensorValue(a.Tensor)
			}
			if a := c.n.Attr("value_int"); a != nil {
				return ir.Shape{ir.D(a.Int)}, true
			}
			if a := c.n.Attr("value_ints"); a != nil {
				return knownDims(a.Ints), true
			}
			return nil, false
		},
		"Shape": func(c *nctx, _ int) (ir.Shape, bool) {
			s, ok := c.shape(0)
			if !ok {
				return nil, false
			}
			if c.opset >= 15 {
				start, end := shapeRange(c, len(s))
				return s[start:end], true
			}
			return s, true
		},
		"Size": func(c *nctx, _ int) (ir.Shape, bool) {
			s, ok := c.shape(0)
			if !ok {
				return nil, false
			}
			return ir.Shape{product(s)}, true
		},
		"Identity":  passValue,
		"Unsqueeze": passValue,
		"Squeeze":   passValue,
		"Reshape":   passValue,
		"Flatten":   passValue,
		"Cast": func(c *nctx, _ int) (ir.Shape, bool) {
			to := ir.DataType(c.attrInt("to", 0))
			if !intLike(to) {
				return nil, false
			}
			s, ok := c.value(0)
			if !ok {
				return nil, false
			}
			if to == ir.Bool {
				return mapDims(s, func(d ir.Dim) ir.Dim { return boolDim(d.Known, d.Known && d.Value != 0) }), true
			}
			return s, true
		},
		"Gather": func(c *nctx, _ int) (ir.Shape, bool) {
			if r := c.rank(0); r > 1 || c.attrInt("axis", 0) != 0 && c.attrInt("axis", 0) != -1 {
				return nil, false
			}
			data, ok := c.value(0)
			if !ok {
				return nil, false
			}
			idx, ok := c.ints(1)
			if !ok {
				return nil, false
			}
			out := make(ir.Shape, len(idx))
			for i, k := range idx {
				if k < 0 {
					k += int64(len(data))
				}
				if k < 0 || k >= int64(len(data)) {
					return nil, false
				}
				out[i] = data[k]
			}
			return out, true
		},
		"Concat": func(c *nctx, _ int) (ir.Shape, bool) {
			var out ir.Shape
			for i := range c.nin() {
				s, ok := c.value(i)
				if !ok {
					return nil, false
				}
				out = append(out, s...)
			}
			return out, true
		},
		"Slice": func(c *nctx, _ int) (ir.Shape, bool) {
			data, ok := c.value(0)
			if !ok || c.rank(0) == 0 {
				return nil, false
			}
			sp, ok := sliceParams(c)
			if !ok || !sp.known {
				return nil, false
			}
			starts, _ := sp.starts.Ints()
			ends, _ := sp.ends.Ints()
			out := cloneShape(data)
			for i, ax := range sp.axes {
				if ax != 0 && ax != -1 {
					return nil, false
				}
				lo, n := sliceRange(int64(len(out)), starts[i], ends[i], sp.steps[i])
				var picked ir.Shape
				for k := int64(0); k < n; k++ {
					picked = append(picked, out[lo+k*sp.steps[i]])
				}
				out = append(ir.Shape{}, picked...)
			}
			return out, true
		},
		"ConstantOfShape": func(c *nctx, _ int) (ir.Shape, bool) {
			dims, ok := c.ints(0)
			if !ok || len(dims) > 1 {
				return nil, false
			}
			n := int64(1)
			if len(dims) == 1 {
				n = dims[0]
			}
			if n < 0 || n > maxValueLen {
				return nil, false
			}
			var fill ir.Dim = ir.D(0)
			if a := c.n.Attr("value"); a != nil && a.Tensor != nil {
				v, ok := tensorValue(a.Tensor)
				if !ok || len(v) != 1 {
					return nil, false
				}
				fill = v[0]
			}
			out := make(ir.Shape, n)
			for i := range out {
				out[i] = fill
			}
			return out, true
		},
		"Range": func(c *nctx, _ int) (ir.Shape, bool) {
			start, ok1 := c.ints(0)
			limit, ok2 := c.ints(1)
			delta, ok3 := c.ints(2)
			if !ok1 || !ok2 || !ok3 || len(start) != 1 || len(limit) != 1 || len(delta) != 1 || delta[0] == 0 {
				return nil, false
			}
			n := rangeLen(start[0], limit[0], delta[0])
			if n > maxValueLen {
				return nil, false
			}
			out := make(ir.Shape, n)
			for i := range out {
				out[i] = ir.D(start[0] + int64(i)*delta[0])
			}
			return out, true
		},
		"Add": arith(addDims),
		"Sub": arith(subDims),
		"Mul": arith(mulDims),
		"Div": arith(func(a, b ir.Dim) ir.Dim {
			if a.Known && b.Known {
				if b.Value == 0 {
					return unknownDim()
				}
				return ir.D(a.Value / b.Value) // integer division truncates
			}
			if q := divDims(a, b); q.Known || q.Param != "" {
				return q
			}
			if b.Known && b.Value > 0 && nonNegative(a) {
				return floorDiv(a, b.Value) // sizes are not negative: truncation is floor
			}
			return unknownDim()
		}),
		"Mod": arith(func(a, b ir.Dim) ir.Dim {
			if a.Known && b.Known && b.Value != 0 {
				return ir.D(a.Value % b.Value)
			}
			return unknownDim()
		}),
		"Min": arith(func(a, b ir.Dim) ir.Dim {
			if a.Known && b.Known {
				return ir.D(min(a.Value, b.Value))
			}
			if sameDim(a, b) {
				return a
			}
			return unknownDim()
		}),
		"Max": arith(func(a, b ir.Dim) ir.Dim {
			if a.Known && b.Known {
				return ir.D(max(a.Value, b.Value))
			}
			if sameDim(a, b) {
				return a
			}
			return unknownDim()
		}),
		"Equal": arith(func(a, b ir.Dim) ir.Dim {
			if a.Known && b.Known || sameDim(a, b) {
				return boolDim(true, sameDim(a, b))
			}
			// A size read by Shape is never negative: it differs from a negative number.
			if nonNegative(a) && b.Known && b.Value < 0 || nonNegative(b) && a.Known && a.Value < 0 {
				return ir.D(0)
			}
			return unknownDim()
		}),
		"Less":           compare(func(a, b int64) bool { return a < b }),
		"LessOrEqual":    compare(func(a, b int64) bool { return a <= b }),
		"Greater":        compare(func(a, b int64) bool { return a > b }),
		"GreaterOrEqual": compare(func(a, b int64) bool { return a >= b }),
		"Neg":            unaryValue(func(a int64) int64 { return -a }),
		"Abs": unaryValue(func(a int64) int64 {
			if a < 0 {
				return -a
			}
			return a
		}),
		"Not": unaryValue(func(a int64) int64 {
			if a == 0 {
				return 1
			}
			return 0
		}),
		"Where": func(c *nctx, _ int) (ir.Shape, bool) {
			cond, ok := c.ints(0)
			if !ok {
				return nil, false
			}
			x, ok1 := c.value(1)
			y, ok2 := c.value(2)
			if !ok1 || !ok2 {
				return nil, false
			}
			n := max(len(cond), len(x), len(y))
			for _, l := range []int{len(cond), len(x), len(y)} {
				if l != n && l != 1 {
					return nil, false
				}
			}
			at := func(s []ir.Dim, i int) ir.Dim {
				if len(s) == 1 {
					return s[0]
				}
				return s[i]
			}
			out := make(ir.Shape, n)
			for i := range out {
				k := cond[0]
				if len(cond) > 1 {
					k = cond[i]
				}
				if k != 0 {
					out[i] = at(x, i)
				} else {
					out[i] = at(y, i)
				}
			}
			return out, true
		},
		"Clip": func(c *nctx, _ int) (ir.Shape, bool) {
			s, ok := c.value(0)
			if !ok {
				return nil, false
			}
			lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
			if c.opset < 11 {
				// min and max were float attributes; clipping a tensor of integers by them
				// is not something an exporter writes: follow only the no-op case.
				if c.hasAttr("min") || c.hasAttr("max") {
					return nil, false
				}
			} else {
				if c.has(1) {
					v, ok := c.ints(1)
					if !ok || len(v) != 1 {
						return nil, false
					}
					lo = v[0]
				}
				if c.has(2) {
					v, ok := c.ints(2)
					if !ok || len(v) != 1 {
						return nil, false
					}
					hi = v[0]
				}
			}
			return mapDims(s, func(d ir.Dim) ir.Dim {
				if !d.Known {
					if lo <= 0 && hi == math.MaxInt64 && isSym(d) {
						return d // sizes are not negative
					}
					return unknownDim()
				}
				return ir.D(min(max(d.Value, lo), hi))
			}), true
		},
	}
}

func passValue(c *nctx, _ int) (ir.Shape, bool) { return c.value(0) }

func mapDims(s ir.Shape, f func(ir.Dim) ir.Dim) ir.Shape {
	out := make(ir.Shape, len(s))
	for i, d := range s {
		out[i] = f(d)
	}
	return out
}

func boolDim(known, v bool) ir.Dim {
	switch {
	case !known:
		return unknownDim()
	case v:
		return ir.D(1)
	}
	return ir.D(0)
}

// arith applies f elementwise with broadcasting of one-element operands.
func arith(f func(a, b ir.Dim) ir.Dim) valueRule {
	return func(c *nctx, _ int) (ir.Shape, bool) {
		if c.nin() != 2 {
			return nil, false
		}
		a, ok1 := c.value(0)
		b, ok2 := c.value(1)
		if !ok1 || !ok2 {
			return nil, false
		}
		n := max(len(a), len(b))
		if (len(a) != n && len(a) != 1) || (len(b) != n && len(b) != 1) {
			return nil, false
		}
		out := make(ir.Shape, n)
		for i := range out {
			x, y := a[0], b[0]
			if len(a) > 1 {
				x = a[i]
			}
			if len(b) > 1 {
				y = b[i]
			}
			out[i] = f(x, y)
		}
		return out, true
	}
}

func compare(f func(a, b int64) bool) valueRule {
	return arith(func(a, b ir.Dim) ir.Dim {
		return boolDim(a.Known && b.Known, a.Known && b.Known && f(a.Value, b.Value))
	})
}

func unaryValue(f func(int64) int64) valueRule {
	return func(c *nctx, _ int) (ir.Shape, bool) {
		s, ok := c.value(0)
		if !ok {
			return nil, false
		}
		return mapDims(s, func(d ir.Dim) ir.Dim {
			if d.Known {
				return ir.D(f(d.Value))
			}
			return unknownDim()
		}), true
	}
}

// shapeRange is the [start, end) that Shape-15 selects from a rank-r shape.
func shapeRange(c *nctx, r int) (int, int) {
	clamp := func(x int64) int {
		if x < 0 {
			x += int64(r)
		}
		return int(min(max(x, 0), int64(r)))
	}
	start := clamp(c.attrInt("start", 0))
	end := r
	if c.hasAttr("end") {
		end = clamp(c.attrInt("end", 0))
	}
	if end < start {
		end = start
	}
	return start, end
}

// rangeLen is the element count of Range(start, limit, delta).
func rangeLen(start, limit, delta int64) int64 {
	n := (limit - start + delta - sign(delta)) / delta
	return max(n, 0)
}

func sign(x int64) int64 {
	if x < 0 {
		return -1
	}
	return 1
}

// sliceRange applies ONNX Slice clamping to one axis of length d: the first index and the
// number of elements taken.
func sliceRange(d, start, end, step int64) (int64, int64) {
	if start < 0 {
		start += d
	}
	if end < 0 {
		end += d
	}
	if step > 0 {
		start = min(max(start, 0), d)
		end = min(max(end, 0), d)
		if end <= start {
			return start, 0
		}
		return start, (end - start + step - 1) / step
	}
	start = min(max(start, 0), d-1)
	end = min(max(end, -1), d-1)
	if start <= end {
		return start, 0
	}
	return start, (start - end + (-step) - 1) / (-step)
}
