package shape

import (
	"fmt"
	"math"
	"strings"

	"github.com/qcc-dev/qcc/ir"
)

// rules is the op table, keyed by ruleKey: the op type for the default domain ("" or
// "ai.onnx"), "com.microsoft.Op" for ONNX Runtime's contrib ops. If, Loop and Scan are
// added by init (they recurse into the engine, which reads this table).
var rules = map[string]rule{
	// Unary ops whose output has the input's type.
	"Abs": same, "Acos": same, "Acosh": same, "Asin": same, "Asinh": same, "Atan": same,
	"Atanh": same, "Ceil": same, "Cos": same, "Cosh": same, "Erf": same, "Exp": same,
	"Floor": same, "Log": same, "Neg": same, "Reciprocal": same, "Round": same, "Sign": same,
	"Sin": same, "Sinh": same, "Sqrt": same, "Tan": same, "Tanh": same, "Sigmoid": same,
	"Relu": same, "LeakyRelu": same, "Elu": same, "Selu": same, "Celu": same,
	"HardSigmoid": same, "HardSwish": same, "Mish": same, "Softplus": same, "Softsign": same,
	"ThresholdedRelu": same, "Gelu": same, "Softmax": same, "LogSoftmax": same,
	"Hardmax": same, "Identity": same, "Clip": same, "CumSum": same, "Trilu": same,
	"Shrink": same, "BitwiseNot": same, "LpNormalization": same,
	"MeanVarianceNormalization": same, "InstanceNormalization": same,
	"BatchNormalization": same, "GroupNormalization": same, "ScatterElements": same,
	"Scatter": same, "ScatterND": same, "ReverseSequence": same,
	"Not": boolSame, "IsNaN": boolSame, "IsInf": boolSame,
	"Dropout": func(c *nctx) error {
		c.like(0, 0)
		s, ok := c.shape(0)
		c.set(1, ir.Bool, s, ok)
		return nil
	},

	// Broadcasting binary and variadic ops.
	"Add": elementwise(firstDType), "Sub": elementwise(firstDType), "Mul": elementwise(firstDType),
	"Div": elementwise(firstDType), "Mod": elementwise(firstDType), "Pow": elementwise(dtypeOf(0)),
	"PRelu": elementwise(firstDType), "BitShift": elementwise(firstDType),
	"BitwiseAnd": elementwise(firstDType), "BitwiseOr": elementwise(firstDType),
	"BitwiseXor": elementwise(firstDType), "Max": elementwise(firstDType),
	"Min": elementwise(firstDType), "Sum": elementwise(firstDType), "Mean": elementwise(firstDType),
	"Equal": elementwise(boolType), "Greater": elementwise(boolType), "Less": elementwise(boolType),
	"GreaterOrEqual": elementwise(boolType), "LessOrEqual": elementwise(boolType),
	"And": elementwise(boolType), "Or": elementwise(boolType), "Xor": elementwise(boolType),
	"Where": elementwise(func(c *nctx) ir.DataType { return firstOf(c, 1, 2) }),

	"Cast": func(c *nctx) error {
		s, ok := c.shape(0)
		c.set(0, ir.DataType(c.attrInt("to", 0)), s, ok)
		return nil
	},
	"CastLike": func(c *nctx) error {
		s, ok := c.shape(0)
		c.set(0, c.dtype(1), s, ok)
		return nil
	},
	"EyeLike": func(c *nctx) error {
		dt := c.dtype(0)
		if c.hasAttr("dtype") {
			dt = ir.DataType(c.attrInt("dtype", 0))
		}
		s, ok := c.shape(0)
		c.set(0, dt, s, ok)
		return nil
	},
	"Shape": func(c *nctx) error {
		s, ok := c.shape(0)
		if !ok {
			c.set(0, ir.Int64, unknownDims(1), true)
			return nil
		}
		n := len(s)
		if c.opset >= 15 {
			start, end := shapeRange(c, n)
			n = end - start
		}
		c.set(0, ir.Int64, ir.Shape{ir.D(int64(n))}, true)
		return nil
	},
	"Size": func(c *nctx) error {
		c.set(0, ir.Int64, ir.Shape{}, true)
		return nil
	},
	"Constant":        constantRule,
	"ConstantOfShape": constantOfShape,
	"Range":           rangeRule,
	"Concat":          concat,
	"Gather":          gather,
	"GatherElements": func(c *nctx) error {
		if s, ok := c.shape(1); ok {
			c.set(0, c.dtype(0), s, true)
		} else if r := c.rank(0); r >= 0 {
			c.set(0, c.dtype(0), unknownDims(r), true)
		} else {
			c.set(0, c.dtype(0), nil, false)
		}
		return nil
	},
	"GatherND":  gatherND,
	"Expand":    expand,
	"Resize":    resize,
	"Tile":      tile,
	"Reshape":   reshape,
	"Transpose": transpose,
	"Unsqueeze": unsqueeze,
	"Squeeze":   squeeze,
	"Flatten":   flatten,
	"Slice":     slice,
	"Split":     split,
	"Pad":       pad,

	"MatMul": func(c *nctx) error { return matmulRule(c, 0, 1, firstDType(c), false, false) },
	"MatMulInteger": func(c *nctx) error {
		return matmulRule(c, 0, 1, ir.Int32, false, false)
	},
	"QLinearMatMul": func(c *nctx) error {
		return matmulRule(c, 0, 3, c.dtype(7), false, false)
	},
	"Gemm":   gemm,
	"Einsum": einsum,

	"Conv":              conv,
	"ConvInteger":       func(c *nctx) error { return convLike(c, 0, 1, ir.Int32) },
	"QLinearConv":       func(c *nctx) error { return convLike(c, 0, 3, c.dtype(7)) },
	"ConvTranspose":     convTranspose,
	"MaxPool":           pool,
	"AveragePool":       pool,
	"LpPool":            pool,
	"GlobalAveragePool": globalPool,
	"GlobalMaxPool":     globalPool,
	"GlobalLpPool":      globalPool,

	"ReduceSum":       reduce(13),
	"ReduceMean":      reduce(18),
	"ReduceMax":       reduce(18),
	"ReduceMin":       reduce(18),
	"ReduceProd":      reduce(18),
	"ReduceL1":        reduce(18),
	"ReduceL2":        reduce(18),
	"ReduceLogSum":    reduce(18),
	"ReduceLogSumExp": reduce(18),
	"ReduceSumSquare": reduce(18),
	"ArgMax":          argReduce,
	"ArgMin":          argReduce,

	"LayerNormalization": layerNorm,
	"Attention":          attention23,
	"RotaryEmbedding":    same,
	// ONNX Runtime registers SimplifiedLayerNormalization in the default domain.
	"SimplifiedLayerNormalization": layerNorm,
	"RMSNormalization":             layerNorm, // opset 23; one output
	"TopK":                         topK,
	"NonZero":                      nonZero,
	"OneHot":                       oneHot,

	"QuantizeLinear":        quantize,
	"DequantizeLinear":      dequantize,
	"DynamicQuantizeLinear": dynamicQuantize,

	// ONNX Runtime contrib ops (ContribOperators.md).
	"com.microsoft.Attention":                        attention,
	"com.microsoft.MultiHeadAttention":               multiHeadAttention,
	"com.microsoft.GroupQueryAttention":              groupQueryAttention,
	"com.microsoft.RotaryEmbedding":                  same,
	"com.microsoft.SkipLayerNormalization":           skipLayerNorm,
	"com.microsoft.SkipSimplifiedLayerNormalization": skipLayerNorm,
	"com.microsoft.EmbedLayerNormalization":          embedLayerNorm,
	"com.microsoft.BiasGelu":                         same,
	"com.microsoft.FastGelu":                         same,
	"com.microsoft.Gelu":                             same,
	"com.microsoft.QuickGelu":                        same,
	"com.microsoft.BiasAdd":                          same,
	"com.microsoft.BiasSoftmax":                      same,
	"com.microsoft.FusedMatMul": func(c *nctx) error {
		return matmulRule(c, 0, 1, firstDType(c), c.attrInt("transA", 0) != 0, c.attrInt("transB", 0) != 0)
	},
	"com.microsoft.MatMulIntegerToFloat": func(c *nctx) error {
		return matmulRule(c, 0, 1, firstOf(c, 2, 3), false, false)
	},
	"com.microsoft.DynamicQuantizeMatMul": func(c *nctx) error {
		return matmulRule(c, 0, 1, firstOf(c, 0, 2), false, false)
	},
	"com.microsoft.QuantizeLinear":   quantize,
	"com.microsoft.DequantizeLinear": dequantize,
}

func init() {
	rules["If"] = ifRule
	rules["Loop"] = loopRule
	rules["Scan"] = scanRule
}

func same(c *nctx) error { c.like(0, 0); return nil }

func boolSame(c *nctx) error {
	s, ok := c.shape(0)
	c.set(0, ir.Bool, s, ok)
	return nil
}

// firstOf is the first known element type among the given inputs.
func firstOf(c *nctx, idx ...int) ir.DataType {
	for _, i := range idx {
		if dt := c.dtype(i); dt != ir.Undefined {
			return dt
		}
	}
	return ir.Undefined
}

func firstDType(c *nctx) ir.DataType {
	for i := range c.nin() {
		if dt := c.dtype(i); dt != ir.Undefined {
			return dt
		}
	}
	return ir.Undefined
}

func dtypeOf(i int) func(*nctx) ir.DataType { return func(c *nctx) ir.DataType { return c.dtype(i) } }

func boolType(*nctx) ir.DataType { return ir.Bool }

// elementwise broadcasts all present inputs.
func elementwise(result func(*nctx) ir.DataType) rule {
	return func(c *nctx) error {
		dt := result(c)
		var shapes []ir.Shape
		for i := range c.nin() {
			if !c.has(i) {
				continue
			}
			s, ok := c.shape(i)
			if !ok {
				c.set(0, dt, nil, false)
				return nil
			}
			shapes = append(shapes, s)
		}
		s, err := broadcast(shapes...)
		if err != nil {
			return err
		}
		c.set(0, dt, s, true)
		return nil
	}
}

func constantRule(c *nctx) error {
	for _, a := range c.n.Attrs {
		switch a.Name {
		case "value":
			if a.Tensor != nil {
				c.set(0, a.Tensor.DType, dimsOf(a.Tensor.Dims), true)
			}
		case "value_float":
			c.set(0, ir.Float, ir.Shape{}, true)
		case "value_floats":
			c.set(0, ir.Float, ir.Shape{ir.D(int64(len(a.Floats)))}, true)
		case "value_int":
			c.set(0, ir.Int64, ir.Shape{}, true)
		case "value_ints":
			c.set(0, ir.Int64, ir.Shape{ir.D(int64(len(a.Ints)))}, true)
		case "value_string":
			c.set(0, ir.String, ir.Shape{}, true)
		case "value_strings":
			c.set(0, ir.String, ir.Shape{ir.D(int64(len(a.Strings)))}, true)
		}
	}
	return nil
}

func dimsOf(xs []int64) ir.Shape { return knownDims(xs) }

func constantOfShape(c *nctx) error {
	dt := ir.Float
	if a := c.n.Attr("value"); a != nil && a.Tensor != nil {
		dt = a.Tensor.DType
	}
	if v, ok := c.value(0); ok {
		for _, d := range v {
			if d.Known && d.Value < 0 {
				return errf("negative dimension %d in the shape", d.Value)
			}
		}
		c.set(0, dt, v, true)
	} else if n, ok := c.length(0); ok {
		c.set(0, dt, unknownDims(n), true)
	} else {
		c.set(0, dt, nil, false)
	}
	return nil
}

// nonZero knows the count of a ConstantOfShape filled with a non-zero value: every element.
// Exporters without Range (opset < 11) write arange(n) as NonZero(ConstantOfShape([n], 1)),
// and the positions it gives carry the sequence length into every layer.
func nonZero(c *nctx) error {
	r := c.rank(0)
	d := unknownDim()
	if r >= 0 {
		d = ir.D(int64(r))
	}
	count := unknownDim()
	if s, ok := c.shape(0); ok && NonZeroOfOnes(c.n) {
		count = product(s)
	}
	c.set(0, ir.Int64, ir.Shape{d, count}, true)
	return nil
}

// NonZeroOfOnes reports whether n is NonZero of a ConstantOfShape filled with a non-zero
// value: the indices of every element, in order (arange, before Range).
func NonZeroOfOnes(n *ir.Node) bool {
	if n.OpType != "NonZero" || n.Domain != "" {
		return false
	}
	src, _ := n.Input(0).Producer()
	if src == nil || src.OpType != "ConstantOfShape" || src.Domain != "" {
		return false
	}
	fill := src.Attr("value")
	if fill == nil || fill.Tensor == nil || fill.Tensor.NumElements() != 1 {
		return false // the default fill is 0: no element is non-zero
	}
	vals, err := fill.Tensor.Float64s()
	return err == nil && vals[0] != 0
}

func rangeRule(c *nctx) error {
	dt := firstOf(c, 0, 1, 2)
	d := unknownDim()
	start, ok1 := rangeOperand(c, 0)
	limit, ok2 := rangeOperand(c, 1)
	delta, ok3 := rangeOperand(c, 2)
	if ok1 && ok2 && ok3 && len(start) == 1 && len(limit) == 1 && len(delta) == 1 {
		s, l, k := start[0], limit[0], delta[0]
		switch {
		case s.Known && l.Known && k.Known && k.Value != 0:
			d = ir.D(rangeLen(s.Value, l.Value, k.Value))
		case isOne(k):
			// Range(past, past + sequence) has sequence elements: a symbolic count is
			// taken not to be negative, as sizes are not.
			d = symbolicLen(subDims(l, s))
		case k.Known && k.Value == -1:
			d = symbolicLen(subDims(s, l))
		}
	}
	c.set(0, dt, ir.Shape{d}, true)
	return nil
}

// rangeOperand is the contents of a Range operand. Besides integer contents, a float
// Range (rotary tables: arange(S, dtype=float)) reads a float constant with an integral
// value and a Cast to float of an integer size.
func rangeOperand(c *nctx, i int) (ir.Shape, bool) {
	if s, ok := c.value(i); ok {
		return s, true
	}
	v := c.in(i)
	if v == nil {
		return nil, false
	}
	if t := constTensor(v); t != nil && t.DType.IsFloat() && t.NumElements() == 1 {
		if f, err := t.Float64s(); err == nil && f[0] == math.Trunc(f[0]) && math.Abs(f[0]) < 1<<53 {
			return ir.Shape{ir.D(int64(f[0]))}, true
		}
		return nil, false
	}
	if p, _ := v.Producer(); p != nil && p.OpType == "Cast" && p.Domain == "" {
		if s, ok := c.e.value(p.Input(0)); ok && len(s) == 1 {
			return s, true
		}
	}
	return nil, false
}

// constTensor is v's constant tensor: an initializer or a Constant node's value.
func constTensor(v *ir.Value) *ir.Tensor {
	if v == nil {
		return nil
	}
	if v.Const != nil {
		return v.Const
	}
	if p, _ := v.Producer(); p != nil && p.OpType == "Constant" && p.Domain == "" {
		if a := p.Attr("value"); a != nil {
			return a.Tensor
		}
	}
	return nil
}

func concat(c *nctx) error {
	dt := firstDType(c)
	r := -1
	all := true
	for i := range c.nin() {
		k := c.rank(i)
		if k < 0 {
			all = false
			continue
		}
		if r >= 0 && k != r {
			return errf("inputs have ranks %d and %d", r, k)
		}
		r = k
	}
	if r < 0 {
		c.set(0, dt, nil, false)
		return nil
	}
	if r == 0 {
		return errf("cannot concatenate scalars")
	}
	axis, err := normAxis(c.attrInt("axis", 0), r)
	if err != nil {
		return err
	}
	out := unknownDims(r)
	var along []ir.Dim
	for i := range c.nin() {
		s, ok := c.shape(i)
		if !ok {
			continue
		}
		for k, d := range s {
			if k == axis {
				along = append(along, d)
				continue
			}
			if out[k], err = unifyDim(out[k], d); err != nil {
				return errf("axis %d: %v", k, err)
			}
		}
	}
	if all {
		out[axis] = sumDims(along)
	}
	c.set(0, dt, out, true)
	return nil
}

func gather(c *nctx) error {
	dt := c.dtype(0)
	data, ok1 := c.shape(0)
	idx, ok2 := c.shape(1)
	if !ok1 || !ok2 {
		c.set(0, dt, nil, false)
		return nil
	}
	if len(data) == 0 {
		return errf("cannot gather from a scalar")
	}
	axis, err := normAxis(c.attrInt("axis", 0), len(data))
	if err != nil {
		return err
	}
	out := append(cloneShape(data[:axis]), idx...)
	out = append(out, data[axis+1:]...)
	c.set(0, dt, out, true)
	return nil
}

func gatherND(c *nctx) error {
	dt := c.dtype(0)
	data, ok1 := c.shape(0)
	idx, ok2 := c.shape(1)
	b := int(c.attrInt("batch_dims", 0))
	if !ok1 || !ok2 || len(idx) == 0 || !idx[len(idx)-1].Known {
		c.set(0, dt, nil, false)
		return nil
	}
	m := int(idx[len(idx)-1].Value)
	if b < 0 || m < 1 || b >= len(idx) || b+m > len(data) {
		return errf("index depth %d with %d batch dims exceeds data rank %d", m, b, len(data))
	}
	out := append(cloneShape(idx[:len(idx)-1]), data[b+m:]...)
	c.set(0, dt, out, true)
	return nil
}

func expand(c *nctx) error {
	dt := c.dtype(0)
	in, okIn := c.shape(0)
	target, okT := c.value(1)
	if !okT {
		n, ok := c.length(1)
		if !ok {
			c.set(0, dt, nil, false)
			return nil
		}
		target = unknownDims(n)
	}
	if !okIn {
		// Rank is at least len(target); dims that are not 1 are the target's.
		c.set(0, dt, nil, false)
		return nil
	}
	r := max(len(in), len(target))
	out := make(ir.Shape, r)
	for i := range out {
		a, b := ir.D(1), ir.D(1)
		if k := i - (r - len(in)); k >= 0 {
			a = in[k]
		}
		if k := i - (r - len(target)); k >= 0 {
			b = target[k]
		}
		if !b.Known && b.Param == "" {
			// The target is 1 or equal to a: a, unless a might be 1.
			if (a.Known && a.Value != 1) || isSym(a) {
				out[i] = a
			} else {
				out[i] = unknownDim()
			}
			continue
		}
		d, err := broadcastDim(a, b)
		if err != nil {
			return errf("cannot expand %s to %s: %v", in, target, err)
		}
		out[i] = d
	}
	c.set(0, dt, out, true)
	return nil
}

// resize: X resized to sizes (read symbolically: a vision model's position grid resized to
// the patch grid its input has) or by constant scales, over every axis or the axes given;
// the rank of X whatever is unknown. Opset 10's form is (X, scales).
func resize(c *nctx) error {
	dt := c.dtype(0)
	in, ok := c.shape(0)
	if !ok {
		c.set(0, dt, nil, false)
		return nil
	}
	axes := make([]int, len(in))
	for i := range axes {
		axes[i] = i
	}
	if a, ok := c.n.AttrInts("axes"); ok {
		var err error
		if axes, err = normAxes(a, len(in)); err != nil {
			return err
		}
	}
	out := cloneShape(in)
	scalesAt := 2
	if c.nin() == 2 {
		scalesAt = 1
	}
	sizes, okSizes := c.value(3)
	switch {
	case c.n.AttrString("keep_aspect_ratio_policy", "stretch") != "stretch":
		for _, a := range axes {
			out[a] = unknownDim()
		}
	case c.has(3) && okSizes && len(sizes) == len(axes):
		for k, a := range axes {
			out[a] = sizes[k]
		}
	case c.has(scalesAt) && c.in(scalesAt).Const != nil:
		scales, err := c.in(scalesAt).Const.Float64s()
		if err != nil || len(scales) != len(axes) {
			return fmt.Errorf("Resize: %d scales for %d axes", len(scales), len(axes))
		}
		for k, a := range axes {
			d := in[a]
			switch x := scales[k]; {
			case x == 1:
			case d.Known:
				out[a] = ir.D(int64(math.Floor(float64(d.Value) * x)))
			case x == math.Trunc(x) && x > 0:
				out[a] = mulDims(d, ir.D(int64(x)))
			default:
				out[a] = unknownDim()
			}
		}
	default:
		for _, a := range axes {
			out[a] = unknownDim()
		}
	}
	c.set(0, dt, out, true)
	return nil
}

func tile(c *nctx) error {
	dt := c.dtype(0)
	in, ok := c.shape(0)
	if !ok {
		c.set(0, dt, nil, false)
		return nil
	}
	reps, okR := c.value(1)
	if !okR || len(reps) != len(in) {
		c.set(0, dt, unknownDims(len(in)), true)
		return nil
	}
	out := make(ir.Shape, len(in))
	for i, d := range in {
		r := reps[i]
		switch {
		case isOne(r):
			out[i] = d
		default:
			out[i] = mulDims(d, r)
		}
	}
	c.set(0, dt, out, true)
	return nil
}

func reshape(c *nctx) error {
	dt := c.dtype(0)
	var target ir.Shape
	if c.opset < 5 {
		a, ok := c.n.AttrInts("shape")
		if !ok {
			c.set(0, dt, nil, false)
			return nil
		}
		target = knownDims(a)
	} else if v, ok := c.value(1); ok {
		target = v
	} else if n, ok := c.length(1); ok {
		target = unknownDims(n)
	} else {
		c.set(0, dt, nil, false)
		return nil
	}
	in, okIn := c.shape(0)
	allowZero := c.opset >= 14 && c.attrInt("allowzero", 0) != 0
	out := make(ir.Shape, len(target))
	infer := -1
	for i, d := range target {
		switch {
		case d.Known && d.Value == -1:
			if infer >= 0 {
				return errf("more than one -1 in the target shape %s", target)
			}
			infer = i
			out[i] = unknownDim()
		case d.Known && d.Value == 0 && !allowZero:
			if okIn && i < len(in) {
				out[i] = in[i]
			} else if okIn {
				return errf("target %s copies dim %d of a rank-%d input", target, i, len(in))
			} else {
				out[i] = unknownDim()
			}
		case d.Known && d.Value < -1:
			return errf("invalid target dimension %d", d.Value)
		default:
			out[i] = d
		}
	}
	if infer >= 0 && okIn {
		rest := append(cloneShape(out[:infer]), out[infer+1:]...)
		out[infer] = divDims(product(in), product(rest))
	}
	if okIn && infer < 0 {
		// A fully known target must hold as many elements as the input.
		pi, po := product(in), product(out)
		if pi.Known && po.Known && pi.Value != po.Value {
			return errf("cannot reshape %s (%d elements) to %s", in, pi.Value, out)
		}
	}
	c.set(0, dt, out, true)
	return nil
}

func transpose(c *nctx) error {
	dt := c.dtype(0)
	in, ok := c.shape(0)
	perm, hasPerm := c.n.AttrInts("perm")
	if !ok {
		if hasPerm {
			c.set(0, dt, unknownDims(len(perm)), true)
		} else {
			c.set(0, dt, nil, false)
		}
		return nil
	}
	if !hasPerm {
		perm = make([]int64, len(in))
		for i := range perm {
			perm[i] = int64(len(in) - 1 - i)
		}
	}
	if len(perm) != len(in) {
		return errf("perm %v for rank %d", perm, len(in))
	}
	out := make(ir.Shape, len(in))
	seen := make([]bool, len(in))
	for i, p := range perm {
		k, err := normAxis(p, len(in))
		if err != nil || seen[k] {
			return errf("invalid perm %v", perm)
		}
		seen[k] = true
		out[i] = in[k]
	}
	c.set(0, dt, out, true)
	return nil
}

func unsqueeze(c *nctx) error {
	dt := c.dtype(0)
	in, ok := c.shape(0)
	axes, present, known := c.axes(13, 1)
	if !ok || !present {
		c.set(0, dt, nil, false)
		return nil
	}
	if !known {
		if k, ok := c.length(1); ok {
			c.set(0, dt, unknownDims(len(in)+k), true)
		} else {
			c.set(0, dt, nil, false)
		}
		return nil
	}
	r := len(in) + len(axes)
	ax, err := normAxes(axes, r)
	if err != nil {
		return err
	}
	out := make(ir.Shape, 0, r)
	k := 0
	for i := range r {
		if k < len(ax) && ax[k] == i {
			out = append(out, ir.D(1))
			k++
			continue
		}
		out = append(out, in[i-k])
	}
	c.set(0, dt, out, true)
	return nil
}

func squeeze(c *nctx) error {
	dt := c.dtype(0)
	in, ok := c.shape(0)
	if !ok {
		c.set(0, dt, nil, false)
		return nil
	}
	axes, present, known := c.axes(13, 1)
	if present && !known {
		if k, ok := c.length(1); ok && k <= len(in) {
			c.set(0, dt, unknownDims(len(in)-k), true)
		} else {
			c.set(0, dt, nil, false)
		}
		return nil
	}
	out := ir.Shape{}
	if !present || len(axes) == 0 {
		for _, d := range in {
			switch {
			case isOne(d):
			case d.Known || isSym(d):
				out = append(out, d)
			default:
				c.set(0, dt, nil, false)
				return nil
			}
		}
		c.set(0, dt, out, true)
		return nil
	}
	ax, err := normAxes(axes, len(in))
	if err != nil {
		return err
	}
	k := 0
	for i, d := range in {
		if k < len(ax) && ax[k] == i {
			k++
			if d.Known && d.Value != 1 {
				return errf("cannot squeeze axis %d of size %d", i, d.Value)
			}
			continue
		}
		out = append(out, d)
	}
	c.set(0, dt, out, true)
	return nil
}

func flatten(c *nctx) error {
	dt := c.dtype(0)
	in, ok := c.shape(0)
	if !ok {
		c.set(0, dt, unknownDims(2), true)
		return nil
	}
	axis := c.attrInt("axis", 1)
	if axis < 0 {
		axis += int64(len(in))
	}
	if axis < 0 || axis > int64(len(in)) {
		return errf("axis %d out of range for rank %d", c.attrInt("axis", 1), len(in))
	}
	c.set(0, dt, ir.Shape{product(in[:axis]), product(in[axis:])}, true)
	return nil
}

// sliceSpec is what a Slice node selects; nil fields are unknown.
type sliceSpec struct {
	axes         []int64
	starts, ends ir.Shape
	steps        []int64
	known        bool // all of the above are known numbers
}

func sliceParams(c *nctx) (sliceSpec, bool) {
	var sp sliceSpec
	if c.opset < 10 {
		st, ok1 := c.n.AttrInts("starts")
		en, ok2 := c.n.AttrInts("ends")
		if !ok1 || !ok2 || len(st) != len(en) {
			return sp, false
		}
		sp.starts, sp.ends = knownDims(st), knownDims(en)
		if ax, ok := c.n.AttrInts("axes"); ok {
			sp.axes = ax
		} else {
			sp.axes = iota64(len(st))
		}
		sp.steps = ones64(len(st))
	} else {
		sp.starts, _ = c.value(1)
		sp.ends, _ = c.value(2)
		n, okN := c.length(1)
		if c.has(3) {
			sp.axes, _ = c.ints(3)
		} else if okN {
			sp.axes = iota64(n)
		}
		if c.has(4) {
			sp.steps, _ = c.ints(4)
		} else if okN {
			sp.steps = ones64(n)
		}
	}
	if sp.axes == nil {
		return sp, true
	}
	n := len(sp.axes)
	if sp.starts != nil && len(sp.starts) != n || sp.ends != nil && len(sp.ends) != n || sp.steps != nil && len(sp.steps) != n {
		return sp, false
	}
	for _, s := range sp.steps {
		if s == 0 {
			return sp, false
		}
	}
	_, ks := sp.starts.Ints()
	_, ke := sp.ends.Ints()
	sp.known = sp.starts != nil && sp.ends != nil && sp.steps != nil && ks && ke
	return sp, true
}

func iota64(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

func ones64(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = 1
	}
	return out
}

// bigEnd is a Slice end that means "to the end" (torch writes INT64_MAX; others INT32_MAX).
const bigEnd = math.MaxInt32

func slice(c *nctx) error {
	dt := c.dtype(0)
	in, ok := c.shape(0)
	if !ok {
		c.set(0, dt, nil, false)
		return nil
	}
	sp, ok := sliceParams(c)
	if !ok {
		return errf("inconsistent starts, ends, axes and steps")
	}
	if sp.axes == nil {
		c.set(0, dt, unknownDims(len(in)), true)
		return nil
	}
	out := cloneShape(in)
	for i, a := range sp.axes {
		ax, err := normAxis(a, len(in))
		if err != nil {
			return err
		}
		if sp.starts == nil || sp.ends == nil || sp.steps == nil {
			out[ax] = unknownDim()
			continue
		}
		out[ax] = sliceDim(in[ax], sp.starts[i], sp.ends[i], sp.steps[i])
	}
	c.set(0, dt, out, true)
	return nil
}

// sliceDim is the length Slice keeps of a dimension d. With symbols, for step 1: a bound
// that counts from the end (negative, or "to the end") is made d + bound, and the length
// is end - start, taken to be within the dimension: the exporter slices a fixed buffer
// (position ids, a causal mask) to the runtime length, which is assumed not to exceed
// it, and a cache's positions [past : past + sequence] to sequence.
func sliceDim(d, start, end ir.Dim, step int64) ir.Dim {
	if d.Known && start.Known && end.Known {
		_, n := sliceRange(d.Value, start.Value, end.Value, step)
		return ir.D(n)
	}
	if step == -1 && start.Known && start.Value == -1 && end.Known && end.Value <= -bigEnd {
		return d
	}
	if step != 1 {
		return unknownDim()
	}
	fromEnd := func(b ir.Dim) ir.Dim {
		switch {
		case b.Known && b.Value >= bigEnd:
			return d
		case b.Known && b.Value < 0:
			return addDims(d, b)
		}
		return b
	}
	if end.Known && end.Value >= 0 && end.Value < bigEnd {
		// [a:5] of a runtime size may hold fewer than 5 - a: unknown, unless the size is
		// provably at least 5 (x[:, :1] of any runtime length, a size being at least 1).
		if start.Known && start.Value >= 0 && start.Value <= end.Value && atLeast(d, end.Value) {
			return ir.D(end.Value - start.Value)
		}
		return unknownDim()
	}
	return symbolicLen(subDims(fromEnd(end), fromEnd(start)))
}

// symbolicLen is a count, unknown where it is negative.
func symbolicLen(d ir.Dim) ir.Dim {
	if d.Known && d.Value < 0 {
		return unknownDim()
	}
	return d
}

func split(c *nctx) error {
	dt := c.dtype(0)
	in, ok := c.shape(0)
	n := c.nout()
	if n == 0 {
		return nil
	}
	if !ok {
		for i := range n {
			c.set(i, dt, nil, false)
		}
		return nil
	}
	axis, err := normAxis(c.attrInt("axis", 0), len(in))
	if err != nil {
		return err
	}
	sizes := make([]ir.Dim, n)
	var given []int64
	havePart, known := false, true
	if c.opset < 13 {
		given, havePart = c.n.AttrInts("split")
	} else if c.has(1) {
		havePart = true
		given, known = c.ints(1)
	}
	d := in[axis]
	switch {
	case havePart && known:
		if len(given) != n {
			return errf("%d split sizes for %d outputs", len(given), n)
		}
		var sum int64
		for i, g := range given {
			sizes[i] = ir.D(g)
			sum += g
		}
		if d.Known && sum != d.Value {
			return errf("split sizes %v do not add up to %d", given, d.Value)
		}
	case havePart:
		// sizes stay unknown
	case d.Known:
		parts := int64(n)
		if c.opset >= 18 && c.hasAttr("num_outputs") {
			parts = c.attrInt("num_outputs", int64(n))
			if parts != int64(n) {
				return errf("num_outputs %d for %d outputs", parts, n)
			}
			chunk := (d.Value + parts - 1) / parts
			for i := range sizes {
				sizes[i] = ir.D(min(chunk, max(d.Value-chunk*int64(i), 0)))
			}
			break
		}
		if d.Value%parts != 0 {
			return errf("cannot split %d into %d equal parts", d.Value, parts)
		}
		for i := range sizes {
			sizes[i] = ir.D(d.Value / parts)
		}
	}
	for i := range n {
		s := cloneShape(in)
		s[axis] = sizes[i]
		c.set(i, dt, s, true)
	}
	return nil
}

func pad(c *nctx) error {
	dt := c.dtype(0)
	in, ok := c.shape(0)
	if !ok {
		c.set(0, dt, nil, false)
		return nil
	}
	var pads []int64
	known := true
	switch {
	case c.opset < 2:
		pads, known = c.n.AttrInts("paddings")
	case c.opset < 11:
		pads, known = c.n.AttrInts("pads")
	default:
		pads, known = c.ints(1)
	}
	axes := iota64(len(in))
	if c.opset >= 18 && c.has(3) {
		var okA bool
		if axes, okA = c.ints(3); !okA {
			known = false
		}
	}
	if !known || len(pads) != 2*len(axes) {
		c.set(0, dt, unknownDims(len(in)), true)
		return nil
	}
	out := cloneShape(in)
	for i, a := range axes {
		ax, err := normAxis(a, len(in))
		if err != nil {
			return err
		}
		b, e := pads[i], pads[i+len(axes)]
		switch {
		case b == 0 && e == 0:
		case in[ax].Known:
			out[ax] = ir.D(in[ax].Value + b + e)
		default:
			// A symbolic length padded (a causal conv's left padding) stays symbolic.
			out[ax] = addDims(in[ax], ir.D(b+e))
		}
	}
	c.set(0, dt, out, true)
	return nil
}

// matmulShape is numpy matmul's result shape.
func matmulShape(a, b ir.Shape, transA, transB bool) (ir.Shape, error) {
	if len(a) == 0 || len(b) == 0 {
		return nil, errf("matmul of a scalar")
	}
	a, b = cloneShape(a), cloneShape(b)
	if transA && len(a) >= 2 {
		a[len(a)-1], a[len(a)-2] = a[len(a)-2], a[len(a)-1]
	}
	if transB && len(b) >= 2 {
		b[len(b)-1], b[len(b)-2] = b[len(b)-2], b[len(b)-1]
	}
	vecA, vecB := len(a) == 1, len(b) == 1
	if vecA {
		a = ir.Shape{ir.D(1), a[0]}
	}
	if vecB {
		b = ir.Shape{b[0], ir.D(1)}
	}
	if _, err := unifyDim(a[len(a)-1], b[len(b)-2]); err != nil {
		return nil, errf("inner dimensions %s and %s differ", a[len(a)-1], b[len(b)-2])
	}
	batch, err := broadcast(a[:len(a)-2], b[:len(b)-2])
	if err != nil {
		return nil, errf("batch dimensions: %v", err)
	}
	out := batch
	if !vecA {
		out = append(out, a[len(a)-2])
	}
	if !vecB {
		out = append(out, b[len(b)-1])
	}
	return out, nil
}

func matmulRule(c *nctx, ia, ib int, dt ir.DataType, transA, transB bool) error {
	a, ok1 := c.shape(ia)
	b, ok2 := c.shape(ib)
	if !ok1 || !ok2 {
		c.set(0, dt, nil, false)
		return nil
	}
	s, err := matmulShape(a, b, transA, transB)
	if err != nil {
		return errf("%s x %s: %v", a, b, err)
	}
	c.set(0, dt, s, true)
	return nil
}

func gemm(c *nctx) error {
	dt := firstDType(c)
	a, ok1 := c.shape(0)
	b, ok2 := c.shape(1)
	m, n := unknownDim(), unknownDim()
	if ok1 {
		if len(a) != 2 {
			return errf("A has rank %d", len(a))
		}
		if c.attrInt("transA", 0) != 0 {
			a[0], a[1] = a[1], a[0]
		}
		m = a[0]
	}
	if ok2 {
		if len(b) != 2 {
			return errf("B has rank %d", len(b))
		}
		if c.attrInt("transB", 0) != 0 {
			b[0], b[1] = b[1], b[0]
		}
		n = b[1]
	}
	if ok1 && ok2 {
		if _, err := unifyDim(a[1], b[0]); err != nil {
			return errf("inner dimensions %s and %s differ", a[1], b[0])
		}
	}
	c.set(0, dt, ir.Shape{m, n}, true)
	return nil
}

// einsum parses the equation and maps each letter to the dims it labels.
func einsum(c *nctx) error {
	dt := firstDType(c)
	eq := strings.ReplaceAll(c.n.AttrString("equation", ""), " ", "")
	lhs, rhs, explicit := strings.Cut(eq, "->")
	terms := strings.Split(lhs, ",")
	if len(terms) != c.nin() {
		return errf("equation %q has %d operands for %d inputs", eq, len(terms), c.nin())
	}
	letters := map[rune]ir.Dim{}
	count := map[rune]int{}
	var ell ir.Shape
	ellKnown, allKnown := true, true
	for i, term := range terms {
		before, after, hasEll := strings.Cut(term, "...")
		for _, l := range before + after {
			count[l]++
		}
		s, ok := c.shape(i)
		if !ok {
			allKnown = false
			if hasEll {
				ellKnown = false
			}
			continue
		}
		k := len(s) - len(before) - len(after)
		if k < 0 || (!hasEll && k != 0) {
			return errf("operand %d %q does not match rank %d", i, term, len(s))
		}
		bind := func(part string, off int) error {
			for j, l := range part {
				d, err := broadcastDim(letterDim(letters, l), s[off+j])
				if err != nil {
					return errf("label %c: %v", l, err)
				}
				letters[l] = d
			}
			return nil
		}
		if err := bind(before, 0); err != nil {
			return err
		}
		if hasEll {
			var err error
			if ell, err = broadcast(ell, s[len(before):len(before)+k]); err != nil {
				return errf("ellipsis dims: %v", err)
			}
		}
		if err := bind(after, len(before)+k); err != nil {
			return err
		}
	}
	if !explicit {
		// Implicit output: the ellipsis, then the labels used once, in alphabetical order.
		var once []rune
		for l, n := range count {
			if n == 1 {
				once = append(once, l)
			}
		}
		sortRunes(once)
		rhs = string(once)
		if strings.Contains(lhs, "...") {
			rhs = "..." + rhs
		}
	}
	if !ellKnown && strings.Contains(rhs, "...") {
		c.set(0, dt, nil, false)
		return nil
	}
	var out ir.Shape
	for i, part := range strings.SplitN(rhs, "...", 2) {
		if i == 1 {
			out = append(out, ell...)
		}
		for _, l := range part {
			d := unknownDim()
			if allKnown {
				d = letterDim(letters, l)
			} else if x, ok := letters[l]; ok && !isOne(x) {
				d = x
			}
			out = append(out, d)
		}
	}
	if out == nil {
		out = ir.Shape{}
	}
	c.set(0, dt, out, true)
	return nil
}

func letterDim(m map[rune]ir.Dim, l rune) ir.Dim {
	if d, ok := m[l]; ok {
		return d
	}
	return ir.D(1)
}

func sortRunes(rs []rune) {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j] < rs[j-1]; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

// reduce types a Reduce* op whose axes move from attribute to input at opset since.
func reduce(since int64) rule {
	return func(c *nctx) error {
		dt := c.dtype(0)
		in, ok := c.shape(0)
		if !ok {
			c.set(0, dt, nil, false)
			return nil
		}
		keep := c.attrInt("keepdims", 1) != 0
		axes, present, known := c.axes(since, 1)
		noop := c.opset >= since && c.attrInt("noop_with_empty_axes", 0) != 0
		if present && known && len(axes) == 0 {
			present = false
		}
		if present && !known {
			if keep {
				c.set(0, dt, unknownDims(len(in)), true)
			} else if k, ok := c.length(1); ok && k <= len(in) {
				c.set(0, dt, unknownDims(len(in)-k), true)
			} else {
				c.set(0, dt, nil, false)
			}
			return nil
		}
		if !present {
			if noop {
				c.set(0, dt, in, true)
				return nil
			}
			axes = iota64(len(in))
		}
		ax, err := normAxes(axes, len(in))
		if err != nil {
			return err
		}
		c.set(0, dt, reduceShape(in, ax, keep), true)
		return nil
	}
}

func reduceShape(in ir.Shape, axes []int, keep bool) ir.Shape {
	out := ir.Shape{}
	k := 0
	for i, d := range in {
		if k < len(axes) && axes[k] == i {
			k++
			if keep {
				out = append(out, ir.D(1))
			}
			continue
		}
		out = append(out, d)
	}
	return out
}

func argReduce(c *nctx) error {
	in, ok := c.shape(0)
	if !ok {
		c.set(0, ir.Int64, nil, false)
		return nil
	}
	ax, err := normAxis(c.attrInt("axis", 0), len(in))
	if err != nil {
		return err
	}
	c.set(0, ir.Int64, reduceShape(in, []int{ax}, c.attrInt("keepdims", 1) != 0), true)
	return nil
}

func layerNorm(c *nctx) error {
	c.like(0, 0)
	stash := ir.DataType(c.attrInt("stash_type", int64(ir.Float)))
	in, ok := c.shape(0)
	if !ok {
		c.set(1, stash, nil, false)
		c.set(2, stash, nil, false)
		return nil
	}
	axis, err := normAxis(c.attrInt("axis", -1), len(in))
	if err != nil {
		return err
	}
	stat := cloneShape(in)
	for i := axis; i < len(stat); i++ {
		stat[i] = ir.D(1)
	}
	c.set(1, stash, stat, true)
	c.set(2, stash, stat, true)
	return nil
}

func topK(c *nctx) error {
	dt := c.dtype(0)
	in, ok := c.shape(0)
	if !ok {
		c.set(0, dt, nil, false)
		c.set(1, ir.Int64, nil, false)
		return nil
	}
	ax, err := normAxis(c.attrInt("axis", -1), len(in))
	if err != nil {
		return err
	}
	k := unknownDim()
	if c.opset < 10 {
		k = ir.D(c.attrInt("k", 0))
	} else if v, ok := c.value(1); ok && len(v) == 1 {
		k = v[0]
	}
	out := cloneShape(in)
	out[ax] = k
	c.set(0, dt, out, true)
	c.set(1, ir.Int64, out, true)
	return nil
}

func oneHot(c *nctx) error {
	dt := c.dtype(2)
	in, ok := c.shape(0)
	if !ok {
		c.set(0, dt, nil, false)
		return nil
	}
	ax, err := normAxis(c.attrInt("axis", -1), len(in)+1)
	if err != nil {
		return err
	}
	depth := unknownDim()
	if v, ok := c.value(1); ok && len(v) == 1 && v[0].Known {
		depth = v[0]
	}
	out := append(cloneShape(in[:ax]), depth)
	out = append(out, in[ax:]...)
	c.set(0, dt, out, true)
	return nil
}

func quantize(c *nctx) error {
	dt := c.dtype(2)
	if dt == ir.Undefined {
		dt = ir.DataType(c.attrInt("output_dtype", 0))
	}
	if dt == ir.Undefined && !c.has(2) {
		dt = ir.Uint8
	}
	s, ok := c.shape(0)
	c.set(0, dt, s, ok)
	return nil
}

func dequantize(c *nctx) error {
	dt := c.dtype(1)
	if a := c.attrInt("output_dtype", 0); a != 0 {
		dt = ir.DataType(a)
	}
	s, ok := c.shape(0)
	c.set(0, dt, s, ok)
	return nil
}

func dynamicQuantize(c *nctx) error {
	s, ok := c.shape(0)
	c.set(0, ir.Uint8, s, ok)
	c.set(1, ir.Float, ir.Shape{}, true)
	c.set(2, ir.Uint8, ir.Shape{}, true)
	return nil
}

// ---- ONNX Runtime contrib ops ----

// attention: input (B,S,H_in), weights (H_in, 3H), bias (3H); output (B,S,H_v);
// present (2,B,heads,past+S,head_size).
func attention(c *nctx) error {
	dt := firstOf(c, 2, 0)
	in, ok := c.shape(0)
	if !ok {
		in = unknownDims(3)
	}
	if len(in) != 3 {
		return errf("input has rank %d, want 3", len(in))
	}
	hidden := unknownDim()
	var qkv []int64
	if q, ok := c.n.AttrInts("qkv_hidden_sizes"); ok && len(q) == 3 {
		qkv = q
		hidden = ir.D(q[2])
	} else if b, ok := c.shape(2); ok && len(b) == 1 && b[0].Known && b[0].Value%3 == 0 {
		hidden = ir.D(b[0].Value / 3)
	} else if w, ok := c.shape(1); ok && len(w) == 2 && w[1].Known && w[1].Value%3 == 0 {
		hidden = ir.D(w[1].Value / 3)
	}
	c.set(0, dt, ir.Shape{in[0], in[1], hidden}, true)
	if c.nout() < 2 {
		return nil
	}
	if past, ok := c.shape(4); ok && len(past) == 5 {
		present := cloneShape(past)
		present[3] = sumDims([]ir.Dim{past[3], in[1]})
		c.set(1, dt, present, true)
		return nil
	}
	heads := c.attrInt("num_heads", 0)
	headSize := unknownDim()
	if heads > 0 && hidden.Known && qkv == nil {
		headSize = ir.D(hidden.Value / heads)
	}
	if c.has(4) {
		c.set(1, dt, unknownDims(5), true)
		return nil
	}
	c.set(1, dt, ir.Shape{ir.D(2), in[0], dimOrUnknown(heads), in[1], headSize}, true)
	return nil
}

func dimOrUnknown(x int64) ir.Dim {
	if x > 0 {
		return ir.D(x)
	}
	return unknownDim()
}

// multiHeadAttention: query (B,S,H), value (B,L,H_v) -> output (B,S,H_v).
func multiHeadAttention(c *nctx) error {
	dt := c.dtype(0)
	q, ok := c.shape(0)
	if !ok || len(q) != 3 {
		c.set(0, dt, unknownDims(3), true)
		return nil
	}
	hv := unknownDim()
	if v, ok := c.shape(2); ok && len(v) == 3 {
		hv = v[2]
	} else if !c.has(2) && !c.has(1) {
		hv = unknownDim() // packed QKV: the query holds all three
	}
	c.set(0, dt, ir.Shape{q[0], q[1], hv}, true)
	return nil
}

// skipLayerNorm: output and input_skip_bias_sum like the input; mean and inv_std_var
// float with the last dim 1.
func skipLayerNorm(c *nctx) error {
	c.like(0, 0)
	if c.nout() > 3 {
		c.like(3, 0)
	}
	if s, ok := c.shape(0); ok && len(s) > 0 {
		s[len(s)-1] = ir.D(1)
		c.set(1, ir.Float, s, true)
		c.set(2, ir.Float, s, true)
	} else {
		c.set(1, ir.Float, nil, false)
		c.set(2, ir.Float, nil, false)
	}
	return nil
}

// embedLayerNorm: input_ids (B,S), word_embedding (V,H) -> output (B,S,H), mask_index (B),
// embedding_sum (B,S,H).
func embedLayerNorm(c *nctx) error {
	dt := c.dtype(2)
	ids, ok := c.shape(0)
	if !ok {
		ids = unknownDims(2)
	}
	if len(ids) != 2 {
		return errf("input_ids has rank %d, want 2", len(ids))
	}
	h := unknownDim()
	if w, ok := c.shape(2); ok && len(w) == 2 {
		h = w[1]
	}
	c.set(0, dt, ir.Shape{ids[0], ids[1], h}, true)
	maskDT := c.dtype(0)
	if maskDT == ir.Undefined {
		maskDT = ir.Int32
	}
	c.set(1, maskDT, ir.Shape{ids[0]}, true)
	c.set(2, dt, ir.Shape{ids[0], ids[1], h}, true)
	return nil
}
