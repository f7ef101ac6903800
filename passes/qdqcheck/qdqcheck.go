// Package qdqcheck checks a model's QuantizeLinear/DequantizeLinear placement against
// TensorRT's explicit-quantization rules, and holds the structural definitions the qdq
// pass places by (weighted ops and their weight axis, GEMV shapes, attention matmuls,
// residual adds), so that what qdq places and what the checker demands cannot drift.
//
// Rules (each violation names the node and the rule):
//
//	unsupported-op  QLinearMatMul, MatMulInteger, ConvInteger, QLinearConv, DynamicQuantizeLinear
//	                and com.microsoft quantized operators: TensorRT fuses only Q/DQ pairs
//	int8            zero points present, int8 (or float8e4m3fn) and 0; int8 (or float8e4m3fn)
//	                data into DequantizeLinear
//	fp8             float8e4m3fn Q/DQ only from opset 19 (no other float8 format: TensorRT's FP8
//	                is E4M3); a GEMM (MatMul, Gemm, Conv) with an FP8 input has every
//	                input FP8: its activation and its weight, or both activations
//	scale           scales constant, positive and finite
//	axis            a per-channel scale only on a weight, on its output-channel axis, with one
//	                value per channel (opset 13 or later)
//	pairing         every QuantizeLinear read only by DequantizeLinear nodes with its scale;
//	                every DequantizeLinear reading a QuantizeLinear or an int8 constant
//	chain           no DequantizeLinear output quantized again (Q→DQ→Q→DQ)
//	interior        no dequantized value read inside a LayerNorm, Softmax or GELU (GELU's
//	                x/√2 or x·c that feeds its Erf or Tanh counts as inside)
//	matmul-inputs   an activation×activation MatMul (attention's BMMs, DeBERTa's c2p/p2c)
//	                has both inputs quantized or neither
//	scores          no Q/DQ pair between Q·Kᵀ and its Softmax (on the scores before or after
//	                the scale and the mask)
//	residual        the Add of a skip connection reads the weighted layer's output in float
//	                (only the skip input is quantized), unless qcc.qdq.residual is both
//	coverage        under the policy recorded in the model's metadata (qcc.qdq.policy):
//	                linear     every input of every weighted MatMul/Gemm/Conv
//	                attention  also both inputs of the Q·Kᵀ and probs·V matmuls
//	                full       also the residual Add that feeds a LayerNorm: its skip input
//	                           (qcc.qdq.residual skip, the default), both inputs (both)
//	                           or neither (none)
//	                except nodes marked qcc.qdq.skip (left float on purpose, with the reason)
//	                and GEMV-shaped matmuls (m or n is 1).
package qdqcheck

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
)

// Metadata keys qdq writes and the checker reads.
const (
	// PolicyKey (model metadata) is the placement policy the model was quantized with.
	PolicyKey = "qcc.qdq.policy"
	// SkipKey (node metadata) marks a node the policy covers that was left float, with why.
	SkipKey = "qcc.qdq.skip"
	// GroupKey (node metadata) names the quantizer groups a Q/DQ node serves.
	GroupKey = "qcc.qdq.group"
	// ResidualKey (model metadata) is the residual placement of policy full: skip (the
	// default), both or none.
	ResidualKey = "qcc.qdq.residual"
	// LoweredKey (model metadata) names the runtime a pass lowered the Q/DQ form for
	// ("ort-cpu": fuse<target=ort;provider=cpu> made QAttention and MatMulIntegerToFloat).
	LoweredKey = "qcc.lowered"
)

// Policies are the placement presets, from conservative to aggressive.
var Policies = []string{"linear", "attention", "full"}

// Residuals are the residual placements of policy full.
var Residuals = []string{"skip", "both", "none"}

// The TensorRT guide's rules the messages cite ("Explicit Quantization", Q/DQ layer
// placement recommendations, in TensorRT's developer guide).
const (
	ruleResidual = `TensorRT guide: "quantize the residual input in skip connections", not the outputs of weighted layers, so the Add fuses into the GEMM's epilogue; an Add with an INT8 GEMM-side input and a float output forces a reformat ("non-weighted layers that have INT8 inputs also require INT8 outputs")`
	ruleMatMul   = `TensorRT guide: a MatMul runs in INT8 only when all its inputs are quantized ("quantize all inputs of weighted operations"; the same holds for the batched MatMuls of attention); one quantized input only adds a dequantization`
	ruleInterior = `TensorRT guide: LayerNorm, Softmax and GELU are not fused with Q/DQ on their inputs and run in higher precision; quantize where a weighted op reads their output, not inside them`
	ruleFP8      = `TensorRT guide: an FP8 GEMM (MatMul, Gemm, Conv) needs both its inputs quantized to FP8, activations per tensor and weights per channel; an FP8 input beside a float or INT8 one is only dequantized`
	ruleScores   = `TensorRT guide: Q/DQ go on the inputs of the attention BMMs; the scores between Q·Kᵀ and the Softmax (scale, mask) stay in higher precision, and a pair there splits the fused attention`
)

// Pass is the checker as a pass: it fails the pipeline with the violations.
var Pass = &pass.Pass{
	Name: "qdqcheck",
	Doc: `check QuantizeLinear/DequantizeLinear placement against TensorRT's explicit-quantization rules
Symmetric int8 (zero points 0), positive finite constant scales, per-channel scales only on
weights along their output-channel axis, Q/DQ in pairs without requantization chains, nothing
dequantized inside LayerNorm/Softmax/GELU, no QLinearMatMul/MatMulInteger/ConvInteger/QLinearConv,
and every input quantized that the policy in the model's qcc.qdq.policy metadata covers.`,
	Analysis: true,
	Run: func(ctx *pass.Context) error {
		s := Summarize(ctx.Model)
		ctx.Count("qdqcheck: QuantizeLinear", s.Q)
		ctx.Count("qdqcheck: DequantizeLinear", s.DQ)
		return Check(ctx.Model)
	},
}

// Violation is one broken rule.
type Violation struct {
	Node string // the node's name (Op(->output) when it has none), or "model"
	Rule string
	Msg  string
}

func (v Violation) String() string { return fmt.Sprintf("%s: %s: %s", v.Node, v.Rule, v.Msg) }

// Error lists the violations of a model.
type Error struct{ Violations []Violation }

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "qdqcheck: %d violation(s) of TensorRT's explicit-quantization rules:", len(e.Violations))
	for _, v := range e.Violations {
		b.WriteString("\n  " + v.String())
	}
	return b.String()
}

// Stats counts Q and DQ nodes.
type Stats struct{ Q, DQ int }

// Summarize counts the Q and DQ nodes of every graph.
func Summarize(m *ir.Model) Stats {
	var s Stats
	m.Graph.Walk(func(g *ir.Graph) error {
		for _, n := range g.Nodes() {
			switch {
			case IsOp(n, "QuantizeLinear"):
				s.Q++
			case IsOp(n, "DequantizeLinear"):
				s.DQ++
			}
		}
		return nil
	})
	return s
}

// Check returns nil when m follows the rules, and an *Error listing every violation
// otherwise. A model without Q/DQ nodes and without a policy passes.
func Check(m *ir.Model) error {
	c := &checker{m: m, policy: m.Meta(PolicyKey), residual: m.Meta(ResidualKey)}
	if c.policy != "" && !validPolicy(c.policy) {
		c.add(nil, "coverage", fmt.Sprintf("unknown policy %q in %s (want %s)", c.policy, PolicyKey, strings.Join(Policies, ", ")))
	}
	switch c.residual {
	case "":
		c.residual = "skip"
	case "skip", "both", "none":
	default:
		c.add(nil, "residual", fmt.Sprintf("unknown residual placement %q in %s (want %s)", c.residual, ResidualKey, strings.Join(Residuals, ", ")))
		c.residual = "skip"
	}
	m.Graph.Walk(func(g *ir.Graph) error {
		for _, n := range g.Nodes() {
			c.node(n)
		}
		return nil
	})
	if len(c.vs) == 0 {
		return nil
	}
	return &Error{Violations: c.vs}
}

func validPolicy(p string) bool {
	for _, q := range Policies {
		if p == q {
			return true
		}
	}
	return false
}

// Verifier is Check for -verify-each: it holds from the quantization on, until a pass
// lowers the Q/DQ form to a runtime's own quantized operators (LoweredKey), after which
// TensorRT's rules no longer describe the model.
func Verifier(m *ir.Model) error {
	if m.Meta(LoweredKey) != "" {
		return nil
	}
	return Check(m)
}

type checker struct {
	m        *ir.Model
	policy   string
	residual string
	vs       []Violation
}

// NodeName is how violations and notes name a node.
func NodeName(n *ir.Node) string {
	if n == nil {
		return "model"
	}
	if n.Name != "" {
		return n.Name
	}
	return n.String()
}

func (c *checker) add(n *ir.Node, rule, msg string) {
	c.vs = append(c.vs, Violation{Node: NodeName(n), Rule: rule, Msg: msg})
}

// IsOp reports whether n is the default-domain operator op.
func IsOp(n *ir.Node, op string) bool {
	return n != nil && n.OpType == op && (n.Domain == "" || n.Domain == "ai.onnx")
}

// unsupported lists default-domain operators TensorRT's explicit quantization rejects.
var unsupported = map[string]string{
	"QLinearMatMul":         "an already-quantized operator",
	"MatMulInteger":         "an already-quantized operator",
	"ConvInteger":           "an already-quantized operator",
	"QLinearConv":           "an already-quantized operator",
	"DynamicQuantizeLinear": "dynamic quantization",
}

func (c *checker) node(n *ir.Node) {
	if why, ok := unsupported[n.OpType]; ok && (n.Domain == "" || n.Domain == "ai.onnx") {
		c.add(n, "unsupported-op", fmt.Sprintf("%s is %s; TensorRT accepts only QuantizeLinear/DequantizeLinear pairs", n.OpType, why))
		return
	}
	if n.Domain == "com.microsoft" && (strings.HasPrefix(n.OpType, "QLinear") || strings.HasPrefix(n.OpType, "Q") && strings.HasSuffix(n.OpType, "Attention") ||
		n.OpType == "QGemm" || strings.Contains(n.OpType, "Integer") || strings.Contains(n.OpType, "Quantize")) {
		c.add(n, "unsupported-op", fmt.Sprintf("com.microsoft.%s is an ONNX Runtime quantized operator; TensorRT accepts only standard QuantizeLinear/DequantizeLinear pairs", n.OpType))
		return
	}
	switch {
	case IsOp(n, "QuantizeLinear"):
		c.quantize(n)
	case IsOp(n, "DequantizeLinear"):
		c.dequantize(n)
	}
	c.matmulInputs(n)
	c.fp8GEMM(n)
	c.residualAdd(n)
	c.coverage(n)
}

// matmulInputs: an activation×activation MatMul has both inputs quantized or neither.
func (c *checker) matmulInputs(n *ir.Node) {
	if !IsOp(n, "MatMul") || !isActivation(n.Input(0)) || !isActivation(n.Input(1)) {
		return
	}
	a, b := Dequantized(n.Input(0)), Dequantized(n.Input(1))
	if a == b {
		return
	}
	q, f := n.Input(0), n.Input(1)
	if b {
		q, f = f, q
	}
	c.add(n, "matmul-inputs", fmt.Sprintf("input %s is quantized, input %s is float: %s", q.Name, f.Name, ruleMatMul))
}

// fp8GEMM: a GEMM with an FP8 input has every input FP8 (TensorRT runs FP8 GEMMs only
// with both operands FP8; an FP8 operand beside a float or INT8 one is only dequantized).
func (c *checker) fp8GEMM(n *ir.Node) {
	if !IsOp(n, "MatMul") && !IsOp(n, "Gemm") && !IsOp(n, "Conv") {
		return
	}
	ins := []int{0, 1}
	types := make([]ir.DataType, len(ins))
	fp8 := false
	for i, k := range ins {
		types[i] = QuantType(n.Input(k))
		fp8 = fp8 || types[i] == ir.Float8E4M3FN
	}
	if !fp8 {
		return
	}
	for i, k := range ins {
		if types[i] == ir.Float8E4M3FN {
			continue
		}
		what := "float"
		if types[i] != ir.Undefined {
			what = types[i].String()
		}
		c.add(n, "fp8", fmt.Sprintf("input %d (%s) is %s beside an FP8 input: %s", k, name(n.Input(k)), what, ruleFP8))
	}
}

// QuantType is the quantized type behind a DequantizeLinear output (the type of the
// constant it reads, or of its QuantizeLinear's zero point; uint8 without one), and
// Undefined for any other value.
func QuantType(v *ir.Value) ir.DataType {
	p, _ := producer(v)
	if !IsOp(p, "DequantizeLinear") {
		return ir.Undefined
	}
	if t := constOf(p.Input(0)); t != nil {
		return t.DType
	}
	q, _ := producer(p.Input(0))
	if !IsOp(q, "QuantizeLinear") {
		return ir.Undefined
	}
	if a := q.Attr("output_dtype"); a != nil && a.Int != 0 {
		return ir.DataType(a.Int)
	}
	if zp := constOf(q.Input(2)); zp != nil {
		return zp.DType
	}
	return ir.Uint8
}

// residualAdd: the weighted layer's side of a skip connection's Add stays float unless
// the model says residual=both.
func (c *checker) residualAdd(n *ir.Node) {
	if c.residual == "both" || !ResidualAdd(n) {
		return
	}
	skip := SkipInput(n)
	if skip < 0 {
		return
	}
	gemm := n.Input(1 - skip)
	if Dequantized(gemm) {
		c.add(n, "residual", fmt.Sprintf("the weighted layer's output %s (input %d) is quantized, the skip input %s is %s: %s",
			name(throughQDQ(gemm)), 1-skip, name(n.Input(skip)), map[bool]string{true: "quantized too", false: "float"}[Dequantized(n.Input(skip))], ruleResidual))
	}
}

// SkipInput is the index of a residual Add's skip input (the one that is not a weighted
// layer's output), -1 when both or neither are.
func SkipInput(n *ir.Node) int {
	a, b := IsSublayer(n.Input(0)), IsSublayer(n.Input(1))
	switch {
	case a && !b:
		return 1
	case b && !a:
		return 0
	}
	return -1
}

func (c *checker) quantize(n *ir.Node) {
	x := n.Input(0)
	c.scale(n, n.Input(1))
	zp := n.Input(2)
	if zp == nil {
		c.add(n, "int8", "no zero point: QuantizeLinear's output defaults to uint8; TensorRT needs int8 with zero point 0")
	} else {
		c.zeroPoint(n, zp)
	}
	if a := n.Attr("output_dtype"); a != nil && a.Int != 0 && ir.DataType(a.Int) != ir.Int8 && ir.DataType(a.Int) != ir.Float8E4M3FN {
		c.add(n, "int8", fmt.Sprintf("output_dtype is %s, not int8 or float8e4m3fn", ir.DataType(a.Int)))
	}
	if perChannel(n.Input(1)) && constOf(x) == nil {
		c.add(n, "axis", fmt.Sprintf("per-channel scale on activation %s: activations take one scale per tensor", name(x)))
	} else if perChannel(n.Input(1)) {
		c.axisRange(n, x)
	}
	out := n.Output(0)
	if out == nil {
		return
	}
	if out.IsGraphOutput() {
		c.add(n, "pairing", fmt.Sprintf("output %s is a graph output, not dequantized", out.Name))
	}
	if len(out.Uses()) == 0 && !out.IsGraphOutput() {
		c.add(n, "pairing", fmt.Sprintf("output %s is not read by a DequantizeLinear", out.Name))
	}
	for _, u := range out.Uses() {
		if !IsOp(u.Node, "DequantizeLinear") || u.Index != 0 {
			c.add(n, "pairing", fmt.Sprintf("output %s is read by %s, not by a DequantizeLinear", out.Name, NodeName(u.Node)))
		}
	}
}

func (c *checker) dequantize(n *ir.Node) {
	x := n.Input(0)
	c.scale(n, n.Input(1))
	if zp := n.Input(2); zp != nil {
		c.zeroPoint(n, zp)
	}
	q, _ := producer(x)
	switch {
	case IsOp(q, "QuantizeLinear"):
		if !sameConst(q.Input(1), n.Input(1)) {
			c.add(n, "pairing", fmt.Sprintf("scale %s differs from the scale %s of its QuantizeLinear %s", name(n.Input(1)), name(q.Input(1)), NodeName(q)))
		}
		if n.Input(2) != nil && q.Input(2) != nil && !sameConst(q.Input(2), n.Input(2)) {
			c.add(n, "pairing", fmt.Sprintf("zero point %s differs from the zero point %s of its QuantizeLinear %s", name(n.Input(2)), name(q.Input(2)), NodeName(q)))
		}
	case constOf(x) != nil:
		dt := constOf(x).DType
		if dt != ir.Int8 && dt != ir.Float8E4M3FN {
			c.add(n, "int8", fmt.Sprintf("input %s is %s, not int8 or float8e4m3fn", name(x), dt))
		} else if zp := constOf(n.Input(2)); zp != nil && zp.DType != dt {
			c.add(n, "int8", fmt.Sprintf("input %s is %s, its zero point %s is %s", name(x), dt, name(n.Input(2)), zp.DType))
		}
	default:
		c.add(n, "pairing", fmt.Sprintf("input %s comes from neither a QuantizeLinear nor an int8 constant", name(x)))
	}
	out := n.Output(0)
	if out == nil {
		return
	}
	pc := perChannel(n.Input(1))
	if pc {
		c.axisRange(n, x)
	}
	if reachesSoftmax(out, 8) && fromScores(n) {
		c.add(n, "scores", fmt.Sprintf("output %s is on the way from Q·Kᵀ to the Softmax: %s", out.Name, ruleScores))
	}
	for _, u := range out.Uses() {
		un := u.Node
		switch {
		case IsOp(un, "QuantizeLinear"):
			c.add(n, "chain", fmt.Sprintf("output %s is quantized again by %s (Q→DQ→Q→DQ)", out.Name, NodeName(un)))
		case interiorOps[un.OpType] && (un.Domain == "" || un.Domain == "com.microsoft"):
			c.add(n, "interior", fmt.Sprintf("output %s is read by %s %s: nothing is quantized inside LayerNorm, Softmax or GELU (%s)", out.Name, un.OpType, NodeName(un), ruleInterior))
		case geluScaling(un) != nil:
			c.add(n, "interior", fmt.Sprintf("output %s is read by %s %s, which feeds GELU's %s %s: nothing is quantized inside LayerNorm, Softmax or GELU (%s)", out.Name, un.OpType, NodeName(un), geluScaling(un).OpType, NodeName(geluScaling(un)), ruleInterior))
		}

		if !pc {
			continue
		}
		idx, ok := WeightInput(un)
		if !ok || idx != u.Index {
			c.add(n, "axis", fmt.Sprintf("per-channel scale on %s, which %s reads as an activation: activations take one scale per tensor", out.Name, NodeName(un)))
			continue
		}
		rank := rankOf(x)
		if rank < 0 {
			continue
		}
		want := WeightAxis(un, rank)
		if got := normAxis(n.AttrInt("axis", 1), rank); got != want {
			c.add(n, "axis", fmt.Sprintf("axis %d is not the output-channel axis %d of %s's weight", n.AttrInt("axis", 1), want, NodeName(un)))
		}
	}
}

// interiorOps are the operators of LayerNorm, Softmax and GELU (fused or decomposed) that
// must not read a dequantized value.
var interiorOps = map[string]bool{
	"Softmax": true, "LogSoftmax": true, "LayerNormalization": true, "SimplifiedLayerNormalization": true,
	"RMSNormalization": true, "Gelu": true, "FastGelu": true, "BiasGelu": true, "QuickGelu": true,
	"Erf": true, "Tanh": true, "ReduceMean": true, "Sqrt": true, "Pow": true,
}

// geluScaling returns the Erf or Tanh that n (a Div or Mul by a constant: GELU's x/√2,
// x·0.7071 or the tanh form's scaling) feeds, nil when n is not such a node.
func geluScaling(n *ir.Node) *ir.Node {
	if !IsOp(n, "Div") && !IsOp(n, "Mul") || n.Output(0) == nil {
		return nil
	}
	if constOf(n.Input(0)) == nil && constOf(n.Input(1)) == nil {
		return nil
	}
	for _, u := range n.Output(0).Uses() {
		if IsOp(u.Node, "Erf") || IsOp(u.Node, "Tanh") {
			return u.Node
		}
	}
	return nil
}

// fromScores reports whether a DequantizeLinear's pair quantizes attention scores: its
// QuantizeLinear reads (through scaling and masking ops) the output of a MatMul of two
// activations.
func fromScores(dq *ir.Node) bool {
	q, _ := producer(dq.Input(0))
	if !IsOp(q, "QuantizeLinear") {
		return false
	}
	v := q.Input(0)
	for d := 0; d < 6; d++ {
		p, _ := producer(v)
		if p == nil || p.Domain != "" {
			return false
		}
		switch p.OpType {
		case "MatMul":
			return isActivation(p.Input(0)) && isActivation(p.Input(1))
		case "Div", "Mul", "Add", "Sub", "Cast", "Reshape", "DequantizeLinear", "QuantizeLinear":
			v = p.Input(0)
			if (p.OpType == "Add" || p.OpType == "Mul") && constOf(v) != nil {
				v = p.Input(1)
			}
		case "Where":
			v = p.Input(2)
			if constOf(v) != nil {
				v = p.Input(1)
			}
		default:
			return false
		}
	}
	return false
}

func (c *checker) scale(n *ir.Node, s *ir.Value) {
	if s == nil {
		c.add(n, "scale", "no scale input")
		return
	}
	t := constOf(s)
	if t == nil {
		c.add(n, "scale", fmt.Sprintf("scale %s is not a constant", s.Name))
		return
	}
	if !t.DType.IsFloat() {
		c.add(n, "scale", fmt.Sprintf("scale %s is %s, not a float", s.Name, t.DType))
		return
	}
	vals, err := t.Float64s()
	if err != nil {
		c.add(n, "scale", fmt.Sprintf("scale %s: %v", s.Name, err))
		return
	}
	for _, v := range vals {
		if !(v > 0) || math.IsInf(v, 0) {
			c.add(n, "scale", fmt.Sprintf("scale %s holds %g: scales must be positive and finite", s.Name, v))
			return
		}
	}
}

func (c *checker) zeroPoint(n *ir.Node, zp *ir.Value) {
	t := constOf(zp)
	if t == nil {
		c.add(n, "int8", fmt.Sprintf("zero point %s is not a constant", zp.Name))
		return
	}
	switch t.DType {
	case ir.Int8:
	case ir.Float8E4M3FN:
		if v := c.m.Opset(""); v < 19 {
			c.add(n, "fp8", fmt.Sprintf("zero point %s is float8e4m3fn, which QuantizeLinear/DequantizeLinear take from opset 19; the model imports opset %d", zp.Name, v))
		}
	case ir.Float8E4M3FNUZ, ir.Float8E5M2, ir.Float8E5M2FNUZ:
		c.add(n, "fp8", fmt.Sprintf("zero point %s is %s: TensorRT's FP8 quantization is float8e4m3fn", zp.Name, t.DType))
		return
	default:
		c.add(n, "int8", fmt.Sprintf("zero point %s is %s, not int8", zp.Name, t.DType))
		return
	}
	vals, err := t.Float64s()
	if err != nil {
		c.add(n, "int8", fmt.Sprintf("zero point %s: %v", zp.Name, err))
		return
	}
	for _, v := range vals {
		if v != 0 {
			c.add(n, "int8", fmt.Sprintf("zero point %s holds %g, not 0: TensorRT quantization is symmetric", zp.Name, v))
			return
		}
	}
}

// axisRange checks a per-channel Q/DQ: opset 13, axis within the rank, one scale (and
// zero point) per channel.
func (c *checker) axisRange(n *ir.Node, x *ir.Value) {
	if v := c.m.Opset(""); v < 13 {
		c.add(n, "axis", fmt.Sprintf("per-channel scales need the axis attribute of opset 13; the model imports opset %d", v))
	}
	s := constOf(n.Input(1))
	if s == nil {
		return
	}
	if len(s.Dims) != 1 {
		c.add(n, "axis", fmt.Sprintf("scale %s has shape %v; a per-channel scale is 1-D", n.Input(1).Name, s.Dims))
		return
	}
	if zp := constOf(n.Input(2)); zp != nil && (len(zp.Dims) != 1 || zp.Dims[0] != s.Dims[0]) {
		c.add(n, "axis", fmt.Sprintf("zero point %s has shape %v, scale %v", n.Input(2).Name, zp.Dims, s.Dims))
	}
	rank := rankOf(x)
	if rank < 0 {
		return
	}
	a := n.AttrInt("axis", 1)
	if a < -int64(rank) || a >= int64(rank) {
		c.add(n, "axis", fmt.Sprintf("axis %d is out of range for rank %d", a, rank))
		return
	}
	if d, ok := dimOf(x, int(normAxis(a, rank))); ok && d != s.Dims[0] {
		c.add(n, "axis", fmt.Sprintf("scale %s has %d values for axis %d of size %d", n.Input(1).Name, s.Dims[0], a, d))
	}
}

func (c *checker) coverage(n *ir.Node) {
	if c.policy == "" || !validPolicy(c.policy) {
		return
	}
	if _, skip := n.Meta(SkipKey); skip {
		return
	}
	var inputs []int
	var what string
	if idx, ok := WeightInput(n); ok {
		inputs = append(ActivationInputs(n), idx)
		what = "every input of a weighted " + n.OpType
	} else if c.policy != "linear" && AttentionMatMul(n) {
		inputs = []int{0, 1}
		what = "both inputs of the attention matmuls"
	} else if c.policy == "full" && ResidualAdd(n) {
		switch skip := SkipInput(n); {
		case c.residual == "both":
			inputs = []int{0, 1}
			what = "both inputs of the residual Add that feeds a LayerNorm (residual=both)"
		case c.residual == "skip" && skip >= 0:
			inputs = []int{skip}
			what = "the skip input of the residual Add that feeds a LayerNorm"
		default:
			return
		}
	} else {
		return
	}
	if why := GEMV(n); why != "" {
		return
	}
	for _, i := range inputs {
		if !Dequantized(n.Input(i)) {
			c.add(n, "coverage", fmt.Sprintf("input %d (%s) is not quantized: policy %s quantizes %s", i, name(n.Input(i)), c.policy, what))
		}
	}
}

// ---- structural definitions shared with the qdq pass ----

// Dequantized reports whether v is a DequantizeLinear output.
func Dequantized(v *ir.Value) bool {
	p, _ := producer(v)
	return IsOp(p, "DequantizeLinear")
}

// WeightTensor returns the float weight behind v: a float constant, or the constant a
// DequantizeLinear (of an int8 constant, or of a QuantizeLinear of a float constant)
// reads. quantized says whether v is already a DequantizeLinear output.
func WeightTensor(v *ir.Value) (t *ir.Tensor, quantized, ok bool) {
	if t := constOf(v); t != nil {
		return t, false, t.DType.IsFloat()
	}
	p, _ := producer(v)
	if !IsOp(p, "DequantizeLinear") {
		return nil, false, false
	}
	x := p.Input(0)
	if t := constOf(x); t != nil {
		return t, true, true
	}
	q, _ := producer(x)
	if IsOp(q, "QuantizeLinear") {
		if t := constOf(q.Input(0)); t != nil {
			return t, true, true
		}
	}
	return nil, false, false
}

// isWeight reports whether v is a weight (constant, or a dequantized constant).
func isWeight(v *ir.Value) bool {
	_, _, ok := WeightTensor(v)
	return ok
}

// isActivation reports whether v is computed at run time (not a weight or a constant).
func isActivation(v *ir.Value) bool {
	return v != nil && constOf(v) == nil && !isWeight(v)
}

// WeightInput returns the weight input of a weighted op: MatMul(activation, weight),
// Gemm(activation, weight[, bias]) and Conv(activation, weight[, bias]).
func WeightInput(n *ir.Node) (int, bool) {
	switch {
	case IsOp(n, "MatMul"), IsOp(n, "Gemm"), IsOp(n, "Conv"):
		if len(n.Inputs()) >= 2 && isActivation(n.Input(0)) && isWeight(n.Input(1)) {
			return 1, true
		}
	}
	return 0, false
}

// ActivationInputs are the inputs of a weighted op quantized per tensor.
func ActivationInputs(n *ir.Node) []int { return []int{0} }

// WeightAxis is the output-channel axis of a weighted op's weight of the given rank as
// stored: MatMul's (K,N) weight → the last axis; Gemm → 0 with transB=1, else 1; Conv → 0.
func WeightAxis(n *ir.Node, rank int) int64 {
	switch n.OpType {
	case "Gemm":
		if n.AttrInt("transB", 0) != 0 {
			return 0
		}
		return 1
	case "Conv":
		return 0
	}
	return int64(rank - 1)
}

// GEMV returns why a MatMul or Gemm is matrix-vector shaped (m or n known to be 1), ""
// otherwise. TensorRT runs those in float either way.
func GEMV(n *ir.Node) string {
	var m, k ir.Dim
	switch {
	case IsOp(n, "MatMul"):
		a, b := shapeOf(n.Input(0)), shapeOf(n.Input(1))
		switch {
		case a != nil && len(a) == 1:
			m = ir.D(1)
		case len(a) >= 2:
			m = a[len(a)-2]
		}
		switch {
		case b != nil && len(b) == 1:
			k = ir.D(1)
		case len(b) >= 2:
			k = b[len(b)-1]
		}
	case IsOp(n, "Gemm"):
		a, b := shapeOf(n.Input(0)), shapeOf(n.Input(1))
		if len(a) == 2 {
			m = a[n.AttrInt("transA", 0)&1]
		}
		if len(b) == 2 {
			k = b[1-n.AttrInt("transB", 0)&1]
		}
	default:
		return ""
	}
	switch {
	case m.Known && m.Value == 1:
		return "GEMV-shaped (m = 1)"
	case k.Known && k.Value == 1:
		return "GEMV-shaped (n = 1)"
	}
	return ""
}

// SmallGEMM returns why a MatMul or Gemm has M or N that is, or can be at run time,
// below min ("" otherwise): such GEMMs cannot use tensor cores, and NVIDIA's BERT
// recipes and Model Optimizer leave them float (pooler, classifier). M is the rows of the
// GEMM as TensorRT runs it: every leading dim of the activation when the weight is a
// constant, the second-to-last of a batched MatMul. A symbolic dim counts as its least
// possible value when it is a product of known factors and batch dims (axis 0 of the
// graph's inputs, which can be 1), and as large otherwise (a sequence).
func SmallGEMM(g *ir.Graph, n *ir.Node, min int64) string {
	var ms []ir.Dim
	var nd ir.Dim
	switch {
	case IsOp(n, "MatMul"):
		a, b := shapeOf(n.Input(0)), shapeOf(n.Input(1))
		switch {
		case a == nil:
			return ""
		case len(a) == 1:
			ms = []ir.Dim{ir.D(1)}
		case isWeight(n.Input(1)):
			ms = a[:len(a)-1]
		default:
			ms = a[len(a)-2 : len(a)-1]
		}
		switch {
		case b != nil && len(b) == 1:
			nd = ir.D(1)
		case len(b) >= 2:
			nd = b[len(b)-1]
		}
	case IsOp(n, "Gemm"):
		a, b := shapeOf(n.Input(0)), shapeOf(n.Input(1))
		if len(a) == 2 {
			ms = []ir.Dim{a[n.AttrInt("transA", 0)&1]}
		}
		if len(b) == 2 {
			nd = b[1-n.AttrInt("transB", 0)&1]
		}
	default:
		return ""
	}
	batch := g.BatchDims()
	if len(ms) > 0 {
		least, ok := int64(1), true
		var names []string
		for _, d := range ms {
			v, k := leastDim(d, batch)
			least, ok = least*v, ok && k
			names = append(names, d.String())
		}
		if ok && least < min {
			if least == 1 && len(names) == 1 && names[0] == "1" {
				return "GEMV-shaped (m = 1)"
			}
			return fmt.Sprintf("small GEMM: M = %s can be %d, below %d (no tensor cores; NVIDIA's recipes leave it float)", strings.Join(names, "·"), least, min)
		}
	}
	if v, ok := leastDim(nd, batch); ok && (nd.Known || nd.Param != "") && v < min {
		if nd.Known && v == 1 {
			return "GEMV-shaped (n = 1)"
		}
		return fmt.Sprintf("small GEMM: N = %s can be %d, below %d (no tensor cores; NVIDIA's recipes leave it float)", nd, v, min)
	}
	return ""
}

// leastDim is the least value d can take: its value when known; for a product of known
// factors and batch dims, the product with the batch dims at 1. ok is false for an
// unknown dim or one with another symbolic factor.
func leastDim(d ir.Dim, batch map[string]bool) (int64, bool) {
	if d.Known {
		return d.Value, true
	}
	if d.Param == "" {
		return 0, false
	}
	v := int64(1)
	for _, f := range strings.Split(d.Param, "*") {
		f = strings.TrimSpace(f)
		if batch[f] {
			continue
		}
		k, err := strconv.ParseInt(f, 10, 64)
		if err != nil || k <= 0 {
			return 0, false
		}
		v *= k
	}
	return v, true
}

// AttentionMatMul reports whether n is one of attention's two activation matmuls: Q·Kᵀ
// (its output reaches a Softmax through scaling, masking and reshapes) or probs·V (its
// first input comes from a Softmax through dropout, masking and reshapes).
func AttentionMatMul(n *ir.Node) bool {
	if !IsOp(n, "MatMul") || !isActivation(n.Input(0)) || !isActivation(n.Input(1)) {
		return false
	}
	return reachesSoftmax(n.Output(0), 8) || fromSoftmax(n.Input(0), 5)
}

// toSoftmax are the ops between a scores MatMul and its Softmax: scaling, masking,
// layout, and GatherElements (DeBERTa's c2p and p2c terms are gathered from a
// Q·pos_Kᵀ or K·pos_Qᵀ product before they join the scores).
var toSoftmax = map[string]bool{"Div": true, "Mul": true, "Add": true, "Sub": true, "Where": true, "Cast": true, "Reshape": true,
	"QuantizeLinear": true, "DequantizeLinear": true, "GatherElements": true, "Transpose": true}

func reachesSoftmax(v *ir.Value, depth int) bool {
	if v == nil || depth == 0 {
		return false
	}
	for _, u := range v.Uses() {
		n := u.Node
		if n.Domain != "" {
			continue
		}
		if n.OpType == "Softmax" && u.Index == 0 {
			return true
		}
		if toSoftmax[n.OpType] && !(n.OpType == "Where" && u.Index == 0) && !((n.OpType == "Reshape" || n.OpType == "GatherElements") && u.Index != 0) &&
			reachesSoftmax(n.Output(0), depth-1) {
			return true
		}
	}
	return false
}

var fromSoftmaxOps = map[string]bool{"Dropout": true, "Cast": true, "Where": true, "Reshape": true, "Identity": true,
	"QuantizeLinear": true, "DequantizeLinear": true}

func fromSoftmax(v *ir.Value, depth int) bool {
	p, _ := producer(v)
	if p == nil || depth == 0 || p.Domain != "" {
		return false
	}
	if p.OpType == "Softmax" {
		return true
	}
	if !fromSoftmaxOps[p.OpType] {
		return false
	}
	if p.OpType == "Where" {
		return fromSoftmax(p.Input(1), depth-1) || fromSoftmax(p.Input(2), depth-1)
	}
	return fromSoftmax(p.Input(0), depth-1)
}

// ResidualAdd reports whether n is a residual Add feeding a LayerNorm: two activations,
// one of them a sublayer's output (a MatMul or Gemm, or its bias Add), the sum read by a
// LayerNormalization (or the ReduceMean of a decomposed one).
func ResidualAdd(n *ir.Node) bool {
	if !IsOp(n, "Add") || !isActivation(n.Input(0)) || !isActivation(n.Input(1)) || n.Output(0) == nil {
		return false
	}
	if !feedsNorm(n.Output(0)) {
		return false
	}
	return IsSublayer(n.Input(0)) || IsSublayer(n.Input(1))
}

func feedsNorm(v *ir.Value) bool {
	for _, u := range v.Uses() {
		switch u.Node.OpType {
		case "LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization":
			if u.Index == 0 {
				return true
			}
		case "ReduceMean":
			return true
		case "Pow":
			if o := u.Node.Output(0); o != nil {
				for _, w := range o.Uses() {
					if w.Node.OpType == "ReduceMean" {
						return true
					}
				}
			}
		}
	}
	return false
}

// throughQDQ follows v back through a DequantizeLinear and its QuantizeLinear.
func throughQDQ(v *ir.Value) *ir.Value {
	if p, _ := producer(v); IsOp(p, "DequantizeLinear") {
		if q, _ := producer(p.Input(0)); IsOp(q, "QuantizeLinear") {
			return q.Input(0)
		}
	}
	return v
}

// IsSublayer reports whether v (looked at through a Q/DQ pair) is a MatMul or Gemm
// output, or a bias Add of one.
func IsSublayer(v *ir.Value) bool {
	p, _ := producer(throughQDQ(v))
	if p == nil || p.Domain != "" {
		return false
	}
	switch p.OpType {
	case "MatMul", "Gemm":
		return true
	case "Add":
		for i := 0; i < 2; i++ {
			if constOf(p.Input(i)) != nil {
				q, _ := producer(throughQDQ(p.Input(1 - i)))
				return q != nil && q.Domain == "" && (q.OpType == "MatMul" || q.OpType == "Gemm")
			}
		}
	}
	return false
}

// ---- small helpers ----

func producer(v *ir.Value) (*ir.Node, int) {
	if v == nil {
		return nil, 0
	}
	return v.Producer()
}

func name(v *ir.Value) string {
	if v == nil {
		return `""`
	}
	return v.Name
}

func constOf(v *ir.Value) *ir.Tensor {
	if v == nil {
		return nil
	}
	if v.Const != nil {
		return v.Const
	}
	if n, _ := v.Producer(); IsOp(n, "Constant") {
		if a := n.Attr("value"); a != nil && a.Tensor != nil {
			return a.Tensor
		}
	}
	return nil
}

func perChannel(s *ir.Value) bool {
	t := constOf(s)
	return t != nil && t.NumElements() > 1
}

func shapeOf(v *ir.Value) ir.Shape {
	if t := constOf(v); t != nil {
		s := make(ir.Shape, len(t.Dims))
		for i, d := range t.Dims {
			s[i] = ir.D(d)
		}
		return s
	}
	if v != nil {
		if p, _ := v.Producer(); IsOp(p, "DequantizeLinear") {
			if s := shapeOf(p.Input(0)); s != nil {
				return s
			}
		}
		if v.Type != nil && v.Type.HasShape {
			return v.Type.Shape
		}
	}
	return nil
}

func rankOf(v *ir.Value) int {
	if s := shapeOf(v); s != nil {
		return len(s)
	}
	if v != nil && v.Type != nil && v.Type.HasShape {
		return 0
	}
	return -1
}

func dimOf(v *ir.Value, i int) (int64, bool) {
	s := shapeOf(v)
	if i < 0 || i >= len(s) || !s[i].Known {
		return 0, false
	}
	return s[i].Value, true
}

func normAxis(a int64, rank int) int64 {
	if a < 0 {
		return a + int64(rank)
	}
	return a
}

// sameConst reports whether two values are the same constant (the same value, or
// constants with equal type, shape and bytes).
func sameConst(a, b *ir.Value) bool {
	if a == b {
		return true
	}
	ta, tb := constOf(a), constOf(b)
	if ta == nil || tb == nil || ta.DType != tb.DType || fmt.Sprint(ta.Dims) != fmt.Sprint(tb.Dims) {
		return false
	}
	x, err1 := ta.Bytes()
	y, err2 := tb.Bytes()
	return err1 == nil && err2 == nil && string(x) == string(y)
}
