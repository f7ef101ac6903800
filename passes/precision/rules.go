package precision

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/passes/blocks"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// valueRange is what calibration (or a constant's data) says about a float value.
type valueRange struct {
	abs, max float64 // max |x| and signed max over the finite samples
	known    bool
}

// plan is one run's decisions.
type plan struct {
	m     *ir.Model
	g     *ir.Graph
	o     *options
	opset int64
	limit float64 // largest finite value of the narrow type

	norms  map[*ir.Node]string // nodes of decomposed norm blocks, with the block
	ranges map[string]valueRange
	// keep holds the float32 nodes and why; low the nodes that run in the narrow type.
	keep map[*ir.Node]string
	low  map[*ir.Node]bool
	// origIO are the graph inputs' and outputs' types before the run (keep-io).
	origOut map[*ir.Value]ir.DataType
	added   bool // nodes were added: the graph needs sorting
}

func newPlan(m *ir.Model, o *options, br *blocks.Result) *plan {
	p := &plan{m: m, g: m.Graph, o: o, opset: m.Opset(""), ranges: map[string]valueRange{},
		norms: map[*ir.Node]string{}, keep: map[*ir.Node]string{}, low: map[*ir.Node]bool{},
		origOut: map[*ir.Value]ir.DataType{}}
	p.limit = 65504
	if o.low == ir.BFloat16 {
		p.limit = float64(math.Float32frombits(0x7f7f0000))
	}
	for _, b := range br.Blocks {
		switch b.Kind {
		case transformer.LayerNorm, transformer.RMSNorm, transformer.SkipLayerNorm, transformer.SkipRMSNorm:
		default:
			continue
		}
		if b.Fused || hasNormOp(b.Nodes) {
			// A residual Add in front of LayerNormalization-17 (target=onnx's skip
			// norm: ONNX has no fused one) is not decomposed statistics: the operator
			// computes them in float32 (stash_type), so the Add runs narrow too.
			continue
		}
		for _, n := range b.Nodes {
			p.norms[n] = fmt.Sprintf("%s statistics (decomposed %s): mean and variance stay float32; fuse it to run the norm in %s with float32 statistics", b.Kind, b.ID, p.typeName())
		}
	}
	for _, v := range p.g.Outputs {
		if v.Type != nil {
			p.origOut[v] = v.Type.DType
		}
	}
	return p
}

// hasNormOp reports whether a norm block's statistics are an operator's, not
// decomposed.
func hasNormOp(ns []*ir.Node) bool {
	for _, n := range ns {
		switch n.OpType {
		case "LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization":
			return true
		}
	}
	return false
}

func (p *plan) typeName() string {
	if p.o.low == ir.BFloat16 {
		return "bf16"
	}
	return "fp16"
}

// convertible reports whether v is a float value the pass types: float32 or the
// narrow type already.
func (p *plan) convertible(v *ir.Value) bool {
	return v != nil && v.Type != nil && v.Type.Kind == ir.TensorType && (v.Type.DType == ir.Float || v.Type.DType == p.o.low)
}

func isFloat(v *ir.Value) bool {
	return v != nil && v.Type != nil && v.Type.Kind == ir.TensorType && v.Type.DType.IsFloat()
}

// retargetable nodes produce a float from something else (an integer, an attribute):
// their output takes whatever type its readers want, at no cost.
func (p *plan) retargetable(n *ir.Node) bool {
	if n.Domain != "" || len(n.Outputs()) != 1 || !p.convertible(n.Output(0)) {
		return false
	}
	switch n.OpType {
	case "Constant":
		return n.Attr("value") != nil && n.Attr("value").Tensor != nil
	case "ConstantOfShape":
		return p.o.low != ir.BFloat16 || p.opset >= 20
	case "Cast":
		return !isFloat(n.Input(0))
	}
	return false
}

// border reports a Cast between float32 and the narrow type: a border an earlier run put
// (or the model's own), taken out and re-derived.
func (p *plan) border(n *ir.Node) bool {
	return n.OpType == "Cast" && n.Domain == "" && p.convertible(n.Input(0)) && p.convertible(n.Output(0)) &&
		n.Input(0).Type.DType != n.Output(0).Type.DType
}

// floatSlots reports whether n reads or writes a value the pass types.
func (p *plan) floatSlots(n *ir.Node) bool {
	for _, v := range n.Inputs() {
		if p.convertible(v) {
			return true
		}
	}
	for _, v := range n.Outputs() {
		if p.convertible(v) {
			return true
		}
	}
	return false
}

// calibrationTensors are the float32 activations whose ranges the rules read: the
// outputs of the nodes no earlier run kept for their range, and the graph's float
// inputs. Nothing when only those produce float32 (a second run).
func (p *plan) calibrationTensors() []string {
	var out []string
	for _, n := range p.g.Nodes() {
		if rangeMark(n) != "" || p.retargetable(n) || p.border(n) || n.OpType == "Constant" {
			continue
		}
		t, _ := lookup(n)
		for i, v := range n.Outputs() {
			if v != nil && v.Type != nil && v.Type.Kind == ir.TensorType && v.Type.DType == ir.Float && t.outSlot(i) == slotT {
				out = append(out, v.Name)
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	for _, v := range p.g.Inputs {
		if !v.IsConst() && v.Type != nil && v.Type.Kind == ir.TensorType && v.Type.DType == ir.Float {
			out = append(out, v.Name)
		}
	}
	sort.Strings(out)
	return out
}

// rangeOf is a value's range: calibrated, or read from a constant.
func (p *plan) rangeOf(v *ir.Value) (valueRange, bool) {
	if t := constTensor(v); t != nil {
		vals, err := t.Float64s()
		if err != nil {
			return valueRange{}, false
		}
		r := valueRange{max: math.Inf(-1), known: true}
		for _, x := range vals {
			if math.IsInf(x, 0) || math.IsNaN(x) {
				continue
			}
			r.abs, r.max = max(r.abs, math.Abs(x)), max(r.max, x)
		}
		return r, true
	}
	r, ok := p.ranges[v.Name]
	return r, ok && r.known
}

// constTensor is the data of an initializer or a Constant node's output.
func constTensor(v *ir.Value) *ir.Tensor {
	if v == nil {
		return nil
	}
	if v.Const != nil {
		return v.Const
	}
	if n, _ := v.Producer(); n != nil && n.OpType == "Constant" && n.Domain == "" {
		if a := n.Attr("value"); a != nil {
			return a.Tensor
		}
	}
	return nil
}

// decide classifies every node of the main graph that reads or writes a typed float.
func (p *plan) decide() {
	for _, n := range p.g.Nodes() {
		if !p.floatSlots(n) || p.retargetable(n) || p.border(n) {
			continue
		}
		if why := p.keepReason(n); why != "" {
			p.keep[n] = why
		} else {
			p.low[n] = true
		}
	}
}

// keepReason says why n stays float32, "" when it runs in the narrow type. The rules
// are checked in order; the first that applies is the reason.
func (p *plan) keepReason(n *ir.Node) string {
	tn := p.typeName()
	if p.o.keep != nil {
		switch {
		case n.Name != "" && p.o.keep.MatchString(n.Name):
			return fmt.Sprintf("keep: name matches keep=%s", p.o.keep)
		case p.o.keep.MatchString(n.OpType):
			return fmt.Sprintf("keep: op type %s matches keep=%s", n.OpType, p.o.keep)
		}
	}
	if len(n.Subgraphs()) > 0 {
		return "control flow: the bodies are not typed"
	}
	if why := p.qdqReason(n); why != "" {
		return why
	}
	t, ok := lookup(n)
	op := opName(n)
	switch {
	case !ok && n.Domain == "com.microsoft":
		return fmt.Sprintf("type: %s has no float16 type constraint", op)
	case !ok:
		return fmt.Sprintf("type: %s: unknown operator domain", op)
	case t.noF16:
		return fmt.Sprintf("type: %s has no float16 type", op)
	case p.o.low == ir.BFloat16 && n.Domain == "com.microsoft" && t.bf16 == 0:
		return fmt.Sprintf("type: %s has no bfloat16 type constraint", op)
	case p.o.low == ir.BFloat16 && n.Domain != "com.microsoft" && (t.bf16 == 0 || p.opset < t.bf16):
		if t.bf16 == 0 {
			return fmt.Sprintf("type: %s has no bfloat16 type", op)
		}
		return fmt.Sprintf("type: %s takes bfloat16 from opset %d; the model imports %d", op, t.bf16, p.opset)
	}
	for i, v := range n.Inputs() {
		if isFloat(v) && !p.convertible(v) && t.inSlot(i) == slotT {
			return fmt.Sprintf("type: reads %s, which is %s", v.Name, v.Type.DType)
		}
	}
	if why, ok := p.norms[n]; ok {
		return "norm: " + why
	}
	if why := p.stashReason(n); why != "" {
		return why
	}
	if why := p.squareReason(n); why != "" {
		return why
	}
	if why := p.reduceReason(n); why != "" {
		return why
	}
	if why := rangeMark(n); why != "" {
		return why
	}
	return p.rangeReason(n, t, tn)
}

// rangeMark is the range reason an earlier run recorded on n: calibration ran on the
// float32 model, and the node's float32 values are what it measured, so a second run
// trusts it rather than calibrating the typed model. (Static reasons are re-derived.)
func rangeMark(n *ir.Node) string {
	why, _ := n.Meta(MarkKey)
	why = strings.TrimPrefix(why, "fp32: ")
	if reasonClass(why) != "range" {
		return ""
	}
	return why
}

func opName(n *ir.Node) string {
	if n.Domain != "" && n.Domain != "ai.onnx" {
		return n.Domain + "." + n.OpType
	}
	return n.OpType
}

// qdqReason keeps QuantizeLinear/DequantizeLinear float32 below opset 19: their scale
// (and so DequantizeLinear's output and QuantizeLinear's input) is float32 there.
//
// So does, below 19, a node reading a DequantizeLinear output: it is the quantized
// operator TensorRT and ONNX Runtime fuse with its DequantizeLinear inputs, which a Cast
// between them would hide (qdqcheck would see an unquantized input).
func (p *plan) qdqReason(n *ir.Node) string {
	if p.opset >= 19 {
		return ""
	}
	if n.Domain == "" && (n.OpType == "QuantizeLinear" || n.OpType == "DequantizeLinear") {
		return fmt.Sprintf("Q/DQ: %s-%d scales are float32 (float16/bfloat16 from opset 19)", n.OpType, p.opset)
	}
	for _, in := range n.Inputs() {
		if in == nil {
			continue
		}
		if d, _ := in.Producer(); d != nil && d.Domain == "" && d.OpType == "DequantizeLinear" {
			return fmt.Sprintf("Q/DQ: reads DequantizeLinear-%d's float32 output (a quantized operator; float16/bfloat16 Q/DQ from opset 19)", p.opset)
		}
	}
	return ""
}

// stashReason keeps a norm whose statistics would be computed in the narrow type.
func (p *plan) stashReason(n *ir.Node) string {
	switch n.OpType {
	case "LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization":
		if n.AttrInt("stash_type", 1) != 1 {
			return fmt.Sprintf("norm: %s with stash_type=%d computes its statistics in the input type", n.OpType, n.AttrInt("stash_type", 1))
		}
	}
	return ""
}

// squareReason keeps the mean of squares of an RMSNorm (or any reduction of a square)
// and the square itself: x² overflows float16 from |x| = 256.
func (p *plan) squareReason(n *ir.Node) string {
	if isReduceSum(n) && isSquare(producer(n.Input(0))) {
		return fmt.Sprintf("norm: %s of a square (RMS statistics) stays float32", n.OpType)
	}
	if isSquare(n) {
		for _, u := range n.Output(0).Uses() {
			if isReduceSum(u.Node) {
				return fmt.Sprintf("norm: square read by %s (RMS statistics) stays float32", u.Node.OpType)
			}
		}
	}
	return ""
}

func producer(v *ir.Value) *ir.Node {
	if v == nil {
		return nil
	}
	n, _ := v.Producer()
	return n
}

func isReduceSum(n *ir.Node) bool {
	return n != nil && n.Domain == "" && (n.OpType == "ReduceMean" || n.OpType == "ReduceSum")
}

// isSquare matches Pow(x, 2) and Mul(x, x).
func isSquare(n *ir.Node) bool {
	if n == nil || n.Domain != "" {
		return false
	}
	switch n.OpType {
	case "Mul":
		return n.Input(0) != nil && n.Input(0) == n.Input(1)
	case "Pow":
		e, ok := scalarConst(n.Input(1))
		return ok && e == 2
	}
	return false
}

func scalarConst(v *ir.Value) (float64, bool) {
	t := constTensor(v)
	if t == nil || t.NumElements() != 1 {
		return 0, false
	}
	x, err := t.Float64s()
	if err != nil || len(x) != 1 {
		return 0, false
	}
	return x[0], true
}

// reduceReason keeps accumulating reductions over long or unknown extents: a float16
// sum stops growing at 2048 ones, and a long sum can overflow before the mean is taken.
// (A sum that overflows in its result is the range rule's.)
func (p *plan) reduceReason(n *ir.Node) string {
	if n.Domain != "" {
		return ""
	}
	switch n.OpType {
	case "ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceLogSum":
	default:
		return ""
	}
	x := n.Input(0)
	if x == nil || x.Type == nil || !x.Type.HasShape {
		return fmt.Sprintf("reduction: %s over an input of unknown rank", n.OpType)
	}
	axes, ok := reduceAxes(n, p.opset)
	if !ok {
		return fmt.Sprintf("reduction: %s over axes not known before run time", n.OpType)
	}
	count := int64(1)
	for _, a := range axes {
		if a < 0 {
			a += int64(len(x.Type.Shape))
		}
		if a < 0 || a >= int64(len(x.Type.Shape)) {
			return ""
		}
		d := x.Type.Shape[a]
		if !d.Known {
			if p.o.maxReduce == 0 {
				return ""
			}
			return fmt.Sprintf("reduction: %s over an axis of unknown length (%s): more than max-reduce=%d elements possible", n.OpType, d, p.o.maxReduce)
		}
		count *= d.Value
	}
	if p.o.maxReduce > 0 && count > p.o.maxReduce {
		return fmt.Sprintf("reduction: %s over %d elements (max-reduce=%d)", n.OpType, count, p.o.maxReduce)
	}
	return ""
}

// reduceAxes reads a reduction's axes (attribute, or input 1 from ReduceSum-13 and the
// others at 18); all axes when none are given.
func reduceAxes(n *ir.Node, opset int64) ([]int64, bool) {
	if a, ok := n.AttrInts("axes"); ok {
		return a, true
	}
	if v := n.Input(1); v != nil {
		t := constTensor(v)
		if t == nil {
			return nil, false
		}
		a, err := t.Int64s()
		return a, err == nil
	}
	if n.AttrInt("noop_with_empty_axes", 0) != 0 {
		return nil, true
	}
	r := n.Input(0).Type.Rank()
	all := make([]int64, r)
	for i := range all {
		all[i] = int64(i)
	}
	return all, true
}

// rangeReason applies the range rules: a value beyond the narrow type's range (divided
// by the margin for calibrated activations, which unseen data can exceed) keeps its
// producer and its readers float32.
func (p *plan) rangeReason(n *ir.Node, t opType, tn string) string {
	for i, v := range n.Outputs() {
		if !p.convertible(v) || t.outSlot(i) != slotT {
			continue
		}
		r, ok := p.rangeOf(v)
		if !ok {
			continue
		}
		thr, what := p.limit/p.o.margin, "calibrated"
		switch {
		case n.OpType == "Pow":
			if e, ok := scalarConst(n.Input(1)); ok && e > 1 {
				thr = p.limit / math.Pow(p.o.margin, e)
				what = fmt.Sprintf("Pow(x, %g) of large values: calibrated", e)
			}
		case n.OpType == "Exp":
			thr = p.limit / (p.o.margin * p.o.margin)
			what = "Exp of large values: calibrated"
		}
		if r.abs > thr {
			return fmt.Sprintf("range: %s |max| %.4g of output %s beyond %s's %.5g / margin", what, r.abs, v.Name, tn, p.limit)
		}
	}
	for i, v := range n.Inputs() {
		if !p.convertible(v) || t.inSlot(i) != slotT {
			continue
		}
		v = p.root(v)
		r, ok := p.rangeOf(v)
		if !ok {
			continue
		}
		if constTensor(v) != nil {
			if r.abs > p.limit {
				return fmt.Sprintf("range: constant %s holds |%.4g|, beyond %s", v.Name, r.abs, tn)
			}
			continue
		}
		if r.abs > p.limit/p.o.margin {
			what := "input"
			if n.OpType == "Softmax" {
				what = "Softmax input"
			}
			return fmt.Sprintf("range: calibrated |max| %.4g of %s %s beyond %s's %.5g / margin", r.abs, what, v.Name, tn, p.limit)
		}
	}
	return ""
}

// rangeSummary describes the calibrated ranges: how many, the largest, how many beyond.
func (p *plan) rangeSummary(source string, batches int) string {
	names := make([]string, 0, len(p.ranges))
	for n := range p.ranges {
		names = append(names, n)
	}
	sort.Strings(names)
	top, topName, beyond := 0.0, "", 0
	for _, n := range names {
		r := p.ranges[n]
		if r.abs > top {
			top, topName = r.abs, n
		}
		if r.abs > p.limit/p.o.margin {
			beyond++
		}
	}
	if batches > 0 {
		source += fmt.Sprintf(" (%d batches)", batches)
	}
	return fmt.Sprintf("ranges: calibrated on %s: %d tensors, |max| up to %.4g (%s); %d beyond %s's %.5g / margin %g",
		source, len(names), top, topName, beyond, p.typeName(), p.limit, p.o.margin)
}
