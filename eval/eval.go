// Package eval computes the outputs of single ONNX nodes whose inputs are constants.
//
// It exists so that fold can replace constant subgraphs (mostly the shape arithmetic that
// exporters leave behind) by initializers. It is not a runtime: it covers the ops those
// subgraphs use, keeps every value in memory, and refuses (returns an error) whenever it
// is unsure of the exact result instead of guessing: unsupported data types, division by
// zero, out-of-range indices, float-to-int casts of NaN or out-of-range values, ...
//
// Arithmetic is done in the tensor's own type: float32 values are computed with float32
// operations (+, -, *, /, sqrt, comparisons, casts are therefore bit-identical to what
// ONNX Runtime computes on the same constants), float64 in float64, integers in int64 and
// wrapped to their width. Transcendental functions (Exp, Log, Erf, Tanh, Sigmoid, Pow with
// a general exponent) are the correctly rounded float64 result rounded to float32, which
// may differ from ONNX Runtime's vectorised approximations in the last place; reductions
// and MatMul accumulate sequentially in the element type. Element-wise ops, MatMul and
// reductions on float16 and bfloat16 compute in float32 and round each result once, as
// ONNX Runtime's CPU kernels do for float16.
package eval

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/qcc-dev/qcc/ir"
)

// ErrTooLarge is returned (wrapped) by EvalLimit when an output would exceed the limit.
var ErrTooLarge = errors.New("result too large")

// evalFunc computes one op. inputs has one entry per node input (nil for omitted ones).
type evalFunc func(c *call, inputs []*ir.Tensor) ([]*ir.Tensor, error)

// call is what an evalFunc sees besides its inputs.
type call struct {
	n     *ir.Node
	opset int64
	max   int64 // largest number of elements an output may have; <= 0: no limit
}

// ops is the op table (default ONNX domain only).
var ops map[string]evalFunc

func init() {
	// A literal map referring to functions that read ops (none do) would be fine too; the
	// table is built here to keep Go's initialisation-cycle check quiet for Constant.
	ops = map[string]evalFunc{
		// shape and data movement
		"Shape":           evalShape,
		"Size":            evalSize,
		"Gather":          evalGather,
		"Unsqueeze":       evalUnsqueeze,
		"Squeeze":         evalSqueeze,
		"Concat":          evalConcat,
		"Slice":           evalSlice,
		"Split":           evalSplit,
		"Reshape":         evalReshape,
		"Expand":          evalExpand,
		"Tile":            evalTile,
		"Transpose":       evalTranspose,
		"Trilu":           evalTrilu,
		"Identity":        evalIdentity,
		"Constant":        evalConstant,
		"ConstantOfShape": evalConstantOfShape,
		"Where":           evalWhere,
		"Range":           evalRange,
		"Cast":            evalCast,
		// comparisons and logic
		"Equal":          cmpOp(func(c int) bool { return c == 0 }),
		"Less":           cmpOp(func(c int) bool { return c < 0 }),
		"Greater":        cmpOp(func(c int) bool { return c > 0 }),
		"LessOrEqual":    cmpOp(func(c int) bool { return c <= 0 }),
		"GreaterOrEqual": cmpOp(func(c int) bool { return c >= 0 }),
		"Not":            evalNot,
		"And":            logicOp(func(a, b bool) bool { return a && b }),
		"Or":             logicOp(func(a, b bool) bool { return a || b }),
		"Xor":            logicOp(func(a, b bool) bool { return a != b }),
		// arithmetic
		"Add":        evalAdd,
		"Sub":        evalSub,
		"Mul":        evalMul,
		"Div":        evalDiv,
		"Mod":        evalMod,
		"Pow":        evalPow,
		"Min":        evalMin,
		"Max":        evalMax,
		"Clip":       evalClip,
		"Neg":        evalNeg,
		"Abs":        evalAbs,
		"Sign":       evalSign,
		"Sqrt":       floatUnary(math.Sqrt),
		"Ceil":       floatUnary(math.Ceil),
		"Floor":      floatUnary(math.Floor),
		"Round":      floatUnary(math.RoundToEven), // ONNX rounds halves to even
		"Reciprocal": floatUnary(reciprocal64),
		"Log":        floatUnary(math.Log),
		"Exp":        floatUnary(math.Exp),
		"Erf":        floatUnary(math.Erf),
		"Tanh":       floatUnary(math.Tanh),
		"Sigmoid":    floatUnary(sigmoid64),
		"CumSum":     evalCumSum,
		"MatMul":     evalMatMul,
		"Gemm":       evalGemm,
		// reductions
		"ReduceSum":  reduceOp("sum"),
		"ReduceMean": reduceOp("mean"),
		"ReduceProd": reduceOp("prod"),
		"ReduceMax":  reduceOp("max"),
		"ReduceMin":  reduceOp("min"),
	}
}

// Supported reports whether the evaluator knows the op (default ONNX domain). It may still
// refuse a particular node (data type, attribute, size).
func Supported(op string) bool { _, ok := ops[op]; return ok }

// Ops returns the supported op types, sorted.
func Ops() []string {
	out := make([]string, 0, len(ops))
	for k := range ops {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Eval computes the outputs of n from constant inputs (one per node input, nil for an
// omitted optional input) at the given default-domain opset. Outputs that the node omits
// are returned as nil.
func Eval(n *ir.Node, inputs []*ir.Tensor, opset int64) ([]*ir.Tensor, error) {
	return EvalLimit(n, inputs, opset, 0)
}

// EvalLimit is Eval with a cap on the number of elements of each output: when an output
// would be larger it returns an error wrapping ErrTooLarge before allocating it.
// maxElems <= 0 means no cap.
func EvalLimit(n *ir.Node, inputs []*ir.Tensor, opset int64, maxElems int64) (res []*ir.Tensor, err error) {
	defer func() {
		// Malformed inputs must not bring qcc down: a bug here refuses the fold.
		if r := recover(); r != nil {
			res, err = nil, fmt.Errorf("eval: %s: internal error: %v", n.OpType, r)
		}
	}()
	if n.Domain != "" && n.Domain != "ai.onnx" {
		return nil, fmt.Errorf("eval: %s: domain %q is not supported", n.OpType, n.Domain)
	}
	f := ops[n.OpType]
	if f == nil {
		return nil, fmt.Errorf("eval: op %s is not supported", n.OpType)
	}
	if len(n.Subgraphs()) > 0 {
		return nil, fmt.Errorf("eval: %s: nodes with subgraphs are not supported", n.OpType)
	}
	for _, a := range n.Attrs {
		if a.RefAttrName != "" {
			return nil, fmt.Errorf("eval: %s: attribute %s refers to a function attribute", n.OpType, a.Name)
		}
	}
	c := &call{n: n, opset: opset, max: maxElems}
	narrow := ir.Undefined
	if halfWidened[n.OpType] {
		narrow = narrowData(n.OpType, inputs)
	}
	if narrow != ir.Undefined {
		if inputs, err = castAll(inputs, narrow, ir.Float); err != nil {
			return nil, fmt.Errorf("eval: %s: %w", n.OpType, err)
		}
	}
	outs, err := f(c, inputs)
	if err == nil && narrow != ir.Undefined {
		outs, err = castAll(outs, ir.Float, narrow)
	}
	if err != nil {
		return nil, fmt.Errorf("eval: %s: %w", n.OpType, err)
	}
	// Keep the output list aligned with the node's.
	res = make([]*ir.Tensor, len(n.Outputs()))
	for i := range res {
		if n.Output(i) != nil && i < len(outs) {
			res[i] = outs[i]
		}
	}
	if len(res) == 0 && len(outs) > 0 {
		res = outs
	}
	return res, nil
}

// halfWidened are the ops computed for float16 and bfloat16 inputs as ONNX Runtime's CPU
// provider computes float16 ones: widened to float32, computed, each result rounded once
// to the narrow type (to nearest even). For MatMul and the reductions that means float32
// sums rounded at the end, not narrow ones (passes/fold's TestFoldHalfORT checks the bits
// against ORT). ORT's CPU provider has no bfloat16 kernels; GPU kernels compute bfloat16
// the same way.
var halfWidened = map[string]bool{
	"Add": true, "Sub": true, "Mul": true, "Div": true, "Pow": true, "Neg": true, "Abs": true,
	"Sqrt": true, "Reciprocal": true, "Exp": true, "Log": true, "Erf": true, "Tanh": true,
	"Sigmoid": true, "Relu": true, "Max": true, "Min": true, "Where": true, "Equal": true,
	"Less": true, "Greater": true, "Clip": true, "Round": true,
	"MatMul": true, "ReduceSum": true, "ReduceMean": true, "ReduceProd": true,
	"ReduceMax": true, "ReduceMin": true,
}

// narrowData returns the type of the op's data input (which its float output takes the
// type of: input 0, Where's input 1) when it is float16 or bfloat16, else Undefined. With
// a float input of another type beside it (which only Pow's exponent may be) it returns
// Undefined too, nothing is widened, and the op refuses the mix.
func narrowData(op string, ts []*ir.Tensor) ir.DataType {
	i := 0
	if op == "Where" {
		i = 1
	}
	if i >= len(ts) || ts[i] == nil || (ts[i].DType != ir.Float16 && ts[i].DType != ir.BFloat16) {
		return ir.Undefined
	}
	dt := ts[i].DType
	for _, t := range ts {
		if t != nil && op != "Pow" && t.DType.IsFloat() && t.DType != dt {
			return ir.Undefined
		}
	}
	return dt
}

// castAll casts the tensors of type from to type to, leaving the others.
func castAll(ts []*ir.Tensor, from, to ir.DataType) ([]*ir.Tensor, error) {
	out := make([]*ir.Tensor, len(ts))
	for i, t := range ts {
		out[i] = t
		if t != nil && t.DType == from {
			c, err := Cast(t, to)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
	}
	return out, nil
}

// in returns input i or an error when it is missing.
func (c *call) in(inputs []*ir.Tensor, i int) (*ir.Tensor, error) {
	if i >= len(inputs) || inputs[i] == nil {
		return nil, fmt.Errorf("input %d is missing", i)
	}
	return inputs[i], nil
}

// in2 returns inputs 0 and 1, or an error for the first one missing.
func (c *call) in2(inputs []*ir.Tensor) (*ir.Tensor, *ir.Tensor, error) {
	a, err := c.in(inputs, 0)
	if err != nil {
		return nil, nil, err
	}
	b, err := c.in(inputs, 1)
	if err != nil {
		return nil, nil, err
	}
	return a, b, nil
}

// ints returns input i, an int64 or int32 tensor, as int64s.
func (c *call) ints(inputs []*ir.Tensor, i int) ([]int64, error) {
	t, err := c.in(inputs, i)
	if err != nil {
		return nil, err
	}
	return int64s(t)
}

// present returns the inputs that are not omitted, or an error when all are.
func present(inputs []*ir.Tensor) ([]*ir.Tensor, error) {
	var ts []*ir.Tensor
	for _, t := range inputs {
		if t != nil {
			ts = append(ts, t)
		}
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("no inputs")
	}
	return ts, nil
}

// opt returns input i or nil.
func opt(inputs []*ir.Tensor, i int) *ir.Tensor {
	if i < len(inputs) {
		return inputs[i]
	}
	return nil
}

// broadcast returns the broadcast of shapes, refused as check refuses it.
func (c *call) broadcast(shapes ...[]int64) ([]int64, error) {
	dims, err := broadcast(shapes...)
	if err != nil {
		return nil, err
	}
	if _, err := c.check(dims); err != nil {
		return nil, err
	}
	return dims, nil
}

// check refuses outputs larger than the cap, and shapes with negative dimensions.
func (c *call) check(dims []int64) (int, error) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in output shape %v", dims)
		}
		if d != 0 && n > (1<<62)/d {
			return 0, fmt.Errorf("output shape %v: %w", dims, ErrTooLarge)
		}
		n *= d
	}
	if c.max > 0 && n > c.max {
		return 0, fmt.Errorf("output shape %v has %d elements, more than %d: %w", dims, n, c.max, ErrTooLarge)
	}
	return int(n), nil
}
