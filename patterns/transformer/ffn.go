package transformer

import (
	"fmt"
	"math"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// FFN activations, as the block's "activation" parameter.
const (
	FFNRelu      = 1 // max(x, 0)
	FFNGelu      = 2 // 0.5·x·(1 + erf(x/√2))
	FFNGeluTanh  = 3 // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
	FFNQuickGelu = 4 // x·sigmoid(1.702·x)
	FFNSilu      = 5 // x·sigmoid(x)
	FFNHardSwish = 6 // x·min(max(x/6 + 1/2, 0), 1)
	FFNReluSq    = 7 // max(x, 0)²
)

// Normalisations of the hidden before the down projection, as the block's "hidden_norm"
// parameter.
const (
	FFNHiddenLayerNorm = 1 // (h - mean(h)) / √(var(h) + ε)·γ + β: Magneto's Sub-LN, NormFormer
	FFNHiddenRMSNorm   = 2 // h / √(mean(h²) + ε)·γ: BitNet's ffn_sub_norm
)

// FFNFamily recognises the feed-forward sublayer of a transformer layer.
var FFNFamily = &Family{
	Kind: FFN,
	Doc: `FFN: y = act(x·W_up + b_up)·W_down + b_down, or gated,
y = (act(x·W_gate + b_gate) ⊙ (x·W_up + b_up))·W_down + b_down (SwiGLU, GeGLU).

Rules "ffn/<structure>-<activation>": structure "plain", "gated" (two projections of x),
or "packed" (one projection of x to 2·F, halved by Split or two Slices of its feature
axis, one half through the activation: torch's chunk(2, -1), or chunk(2, 1) after a
channel-first 1×1 Conv); activation "relu", "gelu" (any erf form GeluFamily knows,
com.microsoft Gelu/BiasGelu, Gelu-20), "gelu_tanh" (the tanh forms, FastGelu, Gelu-20
tanh), "quick_gelu" (x·sigmoid(1.702·x), QuickGelu), "silu" (x·sigmoid(x), or
x / (1 + exp(-x))), "hardswish" (HardSwish, or x·HardSigmoid(x) with α = 1/6: LeViT,
MobileViT), "relu_squared" (Relu(x)·Relu(x) or Pow(Relu(x), 2): Primer, Persimmon,
Nemotron's relu2). A projection is MatMul(x, W) with or without a bias Add (either
operand order), Gemm(x, W[, b]) (transB either way; with the Reshapes to and from 2-D
that GPT-2's Conv1D writes), a 1×1 Conv on channel-first [B, C, S] (SqueezeBERT), or
MatMulIntegerToFloat (fuse's CPU form of a Q/DQ linear layer); x may come through a
QuantizeLinear/DequantizeLinear pair and W be a DequantizeLinear of a constant.
Between the hidden and the down projection may come a normalisation over the last axis
(Magneto's Sub-LN, NormFormer, BitNet's ffn_sub_norm: any form LayerNormFamily or
RMSNormFamily knows, decomposed or fused) and BitNet's absmax fake quantisation of
activations (s = 127 / max(|h|, eps) over the last axis, clamp(round(h·s), -128, 127) / s),
each optional: both act per row, so the down projection is still h's.
Modifiers: "+gemm", "+quant" (Q/DQ or integer matmuls), "+fusedact" (the activation is
a fused operator), "+subnorm" (the hidden normalised), "+actquant" (absmax-quantised).

Checks: x a float tensor; weights 2-D constants whose sizes chain (x's last axis = up's
input = gate's input, up's output = gate's output = down's input; packed: 2·F); Gemm with
transA=0 and alpha = beta = 1; biases 1-D of their projection's output size; the GELU
and SiLU constants as GeluFamily checks them; packed halves that cut the feature axis
(the last; a 1×1 Conv's channels, axis 1) in two equal halves; the output added to a
residual (Add or Sum with a non-constant operand, or a fused skip normalisation, through
a bias Add or a per-channel scale), which tells a layer's FFN from a classifier head of
the same shape; a hidden's normalisation passes its family's checks, the absmax's floor
is an eps and its maximum is taken over the last axis alone.

Roles: input, output, up_weight, up_bias, gate_weight and gate_bias (gated; packed: the
packed weight is both up_weight and gate_weight), down_weight, down_bias, hidden (what
the down projection multiplies, or normalises first), hidden_norm (the normalised
hidden, when normalised). Params: activation (FFNRelu, FFNGelu, FFNGeluTanh,
FFNQuickGelu, FFNSilu, FFNHardSwish, FFNReluSq), gated and packed (0/1), gate_half (packed: 0 when the first half
goes through the activation, 1 for the second), intermediate (F, when known),
hidden_norm (FFNHiddenLayerNorm, FFNHiddenRMSNorm; absent when none), hidden_quant (1 when
absmax-quantised).

Fuse: none here. The block is an annotation for qdq and codegen: its projections are
quantization sites and kernels. Activations with an ONNX Runtime operator (GELU in every
form, quick-GELU) are fused by GeluFamily; SiLU stays Mul(x, Sigmoid(x)), which ONNX
Runtime's optimizer fuses itself; ReLU is an operator already.`,
	Rules:    ffnRules(),
	Describe: describeFFN,
}

// ffnActivation is one activation: its name in variants, its parameter, and its forms
// applied to x (the projection's output, bound). biased, when not nil, is the projection
// without its bias Add, for the fused forms that take the bias themselves (BiasGelu).
type ffnActivation struct {
	name  string
	code  int
	forms func(x, biased patterns.Pattern, bias patterns.Pattern) []patterns.Pattern
}

const msDomain = "com.microsoft"

var ffnActivations = []ffnActivation{
	{"gelu", FFNGelu, func(x, biased, bias patterns.Pattern) []patterns.Pattern {
		ps := ffnGeluForms("erf", x)
		ps = append(ps,
			gOp("Gelu", x).In(msDomain).As("act_fused"),
			gOp("Gelu", x).If("approximate=none", func(n *ir.Node) bool { return n.AttrString("approximate", "none") == "none" }).As("act_fused"))
		if biased != nil {
			ps = append(ps, gOp("BiasGelu", biased, bias).In(msDomain).As("act_fused"))
		}
		return ps
	}},
	{"gelu_tanh", FFNGeluTanh, func(x, biased, bias patterns.Pattern) []patterns.Pattern {
		ps := ffnGeluForms("tanh", x)
		ps = append(ps,
			gOp("FastGelu", x).In(msDomain).As("act_fused"),
			gOp("Gelu", x).If("approximate=tanh", func(n *ir.Node) bool { return n.AttrString("approximate", "none") == "tanh" }).As("act_fused"))
		if biased != nil {
			ps = append(ps, gOp("FastGelu", biased, bias).In(msDomain).As("act_fused"))
		}
		return ps
	}},
	{"quick_gelu", FFNQuickGelu, func(x, _, _ patterns.Pattern) []patterns.Pattern {
		return append(ffnGeluForms("sigmoid", x), gOp("QuickGelu", x).In(msDomain).As("act_fused"))
	}},
	{"silu", FFNSilu, func(x, _, _ patterns.Pattern) []patterns.Pattern {
		return []patterns.Pattern{
			gOp("Mul", x, gOp("Sigmoid", x)),
			gOp("Div", x, gOp("Add", gOp("Exp", gOp("Neg", x)), gBind("c_silu_one", gConst()))),
		}
	}},
	{"relu", FFNRelu, func(x, _, _ patterns.Pattern) []patterns.Pattern {
		return []patterns.Pattern{gOp("Relu", x)}
	}},
	// torch.square writes r·r, ** 2 a Pow.
	{"relu_squared", FFNReluSq, func(x, _, _ patterns.Pattern) []patterns.Pattern {
		r := gBind("act_relu", gOp("Relu", x))
		return []patterns.Pattern{gOp("Mul", r, r), gOp("Pow", r, patterns.ConstNear(2, 0))}
	}},
	// HardSwish from opset 14; before it torch writes x·HardSigmoid(x) with α = 1/6.
	{"hardswish", FFNHardSwish, func(x, _, _ patterns.Pattern) []patterns.Pattern {
		return []patterns.Pattern{
			gOp("HardSwish", x),
			gOp("Mul", x, gOp("HardSigmoid", x).If("alpha=1/6, beta=1/2", func(n *ir.Node) bool {
				return math.Abs(float64(n.AttrFloat("alpha", 0.2))-1.0/6) < 1e-6 && n.AttrFloat("beta", 0.5) == 0.5
			})),
		}
	}},
}

// ffnGeluForms are GeluFamily's decomposed forms of one approximation ("erf", "tanh",
// "sigmoid") applied to x.
func ffnGeluForms(prefix string, x patterns.Pattern) []patterns.Pattern {
	var ps []patterns.Pattern
	for _, f := range geluForms() {
		if strings.HasPrefix(f.name, prefix) {
			ps = append(ps, f.build(x))
		}
	}
	return ps
}

// ffnIn is x, or x through a QuantizeLinear/DequantizeLinear pair.
func ffnIn(p string, x patterns.Pattern) patterns.Pattern {
	return patterns.Or(quantPair(p+"_a", x), x)
}

// ffnWeight is a projection's weight: a constant, or a DequantizeLinear of one.
func ffnWeight(p string) patterns.Pattern {
	Op, Any, Const := patterns.Op, patterns.Any, patterns.Const
	return gBind(p+"_weight", gOr(Const(),
		Op("DequantizeLinear", Const(), Any(), Any()),
		Op("DequantizeLinear", Const(), Any())))
}

// ffnMatMul is the bias-free x·W of projection p.
func ffnMatMul(p string, x patterns.Pattern) patterns.Pattern {
	return gOr(
		gOp("MatMul", ffnIn(p, x), ffnWeight(p)).As(p+"_matmul"),
		qlinFused(p, x))
}

// ffnProj is projection p of x: x·W with or without a bias Add, or Gemm.
func ffnProj(p string, x patterns.Pattern) patterns.Pattern {
	Op, Any, Optional := patterns.Op, patterns.Any, patterns.Optional
	bias := gBind(p+"_bias", gConst())
	in := Optional(Op("Reshape", ffnIn(p, x), Any()).As(p + "_reshape_in"))
	gemm := gOr(
		Op("Gemm", in, ffnWeight(p), bias).As(p+"_matmul"),
		Op("Gemm", in, ffnWeight(p)).As(p+"_matmul"))
	// A 1×1 convolution over channel-first [B, C, S] (SqueezeBERT) is x·W on axis 1.
	conv := gOr(
		Op("Conv", ffnIn(p, x), ffnWeight(p), bias).As(p+"_matmul"),
		Op("Conv", ffnIn(p, x), ffnWeight(p)).As(p+"_matmul"))
	return gOr(
		Op("Add", ffnMatMul(p, x), bias).As(p+"_add"),
		ffnMatMul(p, x),
		Optional(Op("Reshape", gemm, Any()).As(p+"_reshape_out")),
		conv)
}

// ffnAct is act(x) in every form, bound to "act"; p names x's projection (for the forms
// that take its bias).
func ffnAct(a ffnActivation, x patterns.Pattern, biased patterns.Pattern, p string) patterns.Pattern {
	return gBind("act", gOr(a.forms(x, biased, gBind(p+"_bias", gConst()))...))
}

// ffnHalf is half i of the packed projection: output i of a Split, or a Slice (which
// half is checked).
func ffnHalf(name string, packed patterns.Pattern, i int) patterns.Pattern {
	Op, Any := patterns.Op, patterns.Any
	return gBind(name, gOr(
		Op("Split", packed).Out(i).As("split"),
		Op("Split", packed, Any()).Out(i).As("split"),
		Op("Slice", packed, Any(), Any(), Any()).As(name+"_slice"),
		Op("Slice", packed, Any(), Any(), Any(), Any()).As(name+"_slice")))
}

// ffnHidden is what the down projection multiplies, for one structure and activation.
func ffnHidden(structure string, a ffnActivation) patterns.Pattern {
	x := gVar("x")
	switch structure {
	case "plain":
		up := gBind("up", ffnProj("up", x))
		return ffnAct(a, up, ffnMatMul("up", x), "up")
	case "gated":
		gate := gBind("gate", ffnProj("gate", x))
		up := gBind("up", ffnProj("up", x))
		return gOp("Mul", ffnAct(a, gate, ffnMatMul("gate", x), "gate"), up).As("gate_mul")
	default: // packed
		packed := gBind("packed", ffnProj("up", x))
		var alts []patterns.Pattern
		for i := 0; i < 2; i++ {
			gate, up := ffnHalf("gate", packed, i), ffnHalf("up", packed, 1-i)
			alts = append(alts, gOp("Mul", ffnAct(a, gate, nil, "gate"), up).As("gate_mul"))
		}
		return gOr(alts...)
	}
}

func ffnRules() []*patterns.Rule {
	var rules []*patterns.Rule
	for _, s := range []string{"packed", "gated", "plain"} {
		for _, a := range ffnActivations {
			hidden := gBind("hidden", ffnHidden(s, a))
			rules = append(rules, &patterns.Rule{
				Name:    "ffn/" + s + "-" + a.name,
				Pattern: ffnProj("down", gOr(hidden, patterns.TraceThrough("hidden norm", ffnSubNormOf, hidden))),
				Check:   checkFFN,
				// The Q/DQ pairs of x may be shared with its other readers.
				Internal: []string{"up_a_q", "up_a_dq", "gate_a_q", "gate_a_dq", "up_qu8", "gate_qu8"},
			})
		}
	}
	return rules
}

// ffnSubNorm is what lies between the hidden and the down projection: a normalisation
// over the last axis, BitNet's absmax fake quantisation, or both; why is the first
// check that refuses it.
type ffnSubNorm struct {
	norm  int // FFNHiddenLayerNorm, FFNHiddenRMSNorm, or 0
	quant bool
	why   string
}

// ffnNormRules are the norm families' rules, tried on the value the down projection
// reads: fuse applies the norms first, so the FFN sees them fused or decomposed.
var ffnNormRules = append(append([]*patterns.Rule{}, layerNormRules...), rmsNormRules...)

// ffnAbsmax is BitNet's 8-bit fake quantisation of activations, elementwise per row:
// s = 127 / max(|q_in|, eps) over the last axis, clamp(round(q_in·s), -128, 127) / s.
var ffnAbsmax = func() patterns.Pattern {
	Op, Var, ConstNear := patterns.Op, patterns.Var, patterns.ConstNear
	x := Var("q_in")
	amax := gOr(Op("ReduceMax", Op("Abs", x)).As("q_max"), Op("ReduceMax", Op("Abs", x), Var("q_axes")).As("q_max"))
	floor := Op("Clip", amax, gBind("q_eps", gConst()))
	s := gBind("q_scale", gOr(
		Op("Mul", Op("Reciprocal", floor), ConstNear(127, 0)),
		Op("Div", ConstNear(127, 0), floor)))
	return Op("Div", Op("Clip", Op("Round", Op("Mul", x, s)), ConstNear(-128, 0), ConstNear(127, 0)), s)
}()

// ffnSubNormOf walks back from v, the down projection's input, through the absmax
// quantisation and the normalisation (either optional, one present) to the hidden.
func ffnSubNormOf(v *ir.Value) (*patterns.Traced, *ir.Value) {
	t := &patterns.Traced{Values: map[string]*ir.Value{}}
	plan := &ffnSubNorm{}
	if m := patterns.MatchValue(ffnAbsmax, v); m != nil {
		plan.quant, plan.why = true, ffnCheckAbsmax(m)
		t.Nodes = append(t.Nodes, m.All...)
		v = m.V("q_in")
	}
	if m, kind, why := ffnNormOf(v); m != nil {
		plan.norm = kind
		if plan.why == "" {
			plan.why = why
		}
		t.Nodes = append(t.Nodes, m.All...)
		t.Values["hidden_norm"] = v
		v = m.V("x")
	}
	if plan.norm == 0 && !plan.quant {
		return nil, nil
	}
	t.Plan = plan
	return t, v
}

// ffnNormOf matches the norm families' rules at v: the match, the norm's kind, and why
// the family's check refuses it.
func ffnNormOf(v *ir.Value) (*patterns.Match, int, string) {
	for _, r := range ffnNormRules {
		if m := r.Match(v); m != nil {
			kind := FFNHiddenRMSNorm
			if strings.HasPrefix(r.Name, "layernorm/") {
				kind = FFNHiddenLayerNorm
			}
			return m, kind, r.Check(m)
		}
	}
	return nil, 0, ""
}

// ffnCheckAbsmax requires the quantisation's scale to be per row, its floor an epsilon.
func ffnCheckAbsmax(m *patterns.Match) string {
	if _, why := lnEpsilon(m.Const("q_eps")); why != "" {
		return why
	}
	n := m.N("q_max")
	axes, ok := reduceAxes(n)
	rank := m.V("q_in").Type.Rank()
	if k := n.AttrInt("keepdims", 1); !ok || k != 1 || len(axes) != 1 || !(axes[0] == -1 || rank > 0 && axes[0] == int64(rank-1)) {
		return fmt.Sprintf("the hidden's absmax is taken over axes %v (keepdims %d), not per row", axes, k)
	}
	return ""
}

// ---- checks ----

// ffnShape is a projection's weight shape as [in, out], read from the constant (through
// a DequantizeLinear), with Gemm's transB applied.
func ffnShape(m *patterns.Match, p string) (in, out int64, why string) {
	w := m.V(p + "_weight")
	t := patterns.ConstOf(w)
	if t == nil {
		if n, _ := w.Producer(); n != nil && n.OpType == "DequantizeLinear" {
			t = patterns.ConstOf(n.Input(0))
		}
	}
	if t == nil {
		return 0, 0, p + " weight is not a constant"
	}
	n := m.N(p + "_matmul")
	if n != nil && n.OpType == "Conv" {
		return ffnConvShape(n, p, t.Dims)
	}
	if len(t.Dims) != 2 {
		return 0, 0, fmt.Sprintf("%s weight has shape %v, not 2-D", p, t.Dims)
	}
	in, out = t.Dims[0], t.Dims[1]
	if n != nil && n.OpType == "Gemm" {
		if n.AttrInt("transA", 0) != 0 {
			return 0, 0, p + " Gemm transposes its input"
		}
		if a, b := n.AttrFloat("alpha", 1), n.AttrFloat("beta", 1); a != 1 || (n.Input(2) != nil && b != 1) {
			return 0, 0, fmt.Sprintf("%s Gemm scales by alpha %g, beta %g", p, a, b)
		}
		if n.AttrInt("transB", 0) != 0 {
			in, out = out, in
		}
	}
	return in, out, ""
}

// ffnConvShape reads a 1×1 convolution's weight [out, in, 1, ...] as [in, out], or says
// why the convolution is not a per-position projection.
func ffnConvShape(n *ir.Node, p string, dims []int64) (in, out int64, why string) {
	if len(dims) < 3 {
		return 0, 0, fmt.Sprintf("%s Conv weight has shape %v", p, dims)
	}
	for _, d := range dims[2:] {
		if d != 1 {
			return 0, 0, fmt.Sprintf("%s Conv kernel is %v, not 1×1", p, dims[2:])
		}
	}
	if g := n.AttrInt("group", 1); g != 1 {
		return 0, 0, fmt.Sprintf("%s Conv has %d groups", p, g)
	}
	for _, a := range []struct {
		name string
		want int64
	}{{"strides", 1}, {"dilations", 1}, {"pads", 0}} {
		vs, _ := n.AttrInts(a.name)
		for _, v := range vs {
			if v != a.want {
				return 0, 0, fmt.Sprintf("%s Conv has %s %v", p, a.name, vs)
			}
		}
	}
	// auto_pad needs no check: a 1×1 kernel with unit strides pads nothing under SAME_*.
	return dims[1], dims[0], ""
}

func checkFFN(m *patterns.Match) string {
	x := m.V("x")
	if why := lnFloatInput("input", x); why != "" {
		return why
	}
	if sub, ok := m.Plan.(*ffnSubNorm); ok && sub.why != "" {
		return sub.why
	}
	if why := geluCheckConsts(m); why != "" {
		return why
	}
	if m.Has("c_silu_one") {
		if v, why := geluScalar(m, "c_silu_one"); why != "" || v != 1 {
			return fmt.Sprintf("sigmoid written as x / (%g + exp(-x)), not 1 + exp(-x)", v)
		}
	}
	if n := m.N("act_fused"); n != nil && n.OpType == "QuickGelu" {
		if a := float64(n.AttrFloat("alpha", 1.702)); !geluNear(a, geluQuickAlpha, ir.Float) {
			return fmt.Sprintf("QuickGelu alpha %g, not 1.702", a)
		}
	}
	// x's channels and the up projection's input agree: the model's types say so.
	upIn, upOut, why := ffnShape(m, "up")
	if why != "" {
		return why
	}
	downIn, _, why := ffnShape(m, "down")
	if why != "" {
		return why
	}
	f := upOut
	switch {
	case m.Has("packed"):
		if upOut != 2*downIn {
			return fmt.Sprintf("the packed projection makes %d, the down projection takes %d (want twice)", upOut, downIn)
		}
		f = downIn
		if why := ffnCheckHalves(m, f); why != "" {
			return why
		}
	case m.Has("gate"):
		gIn, gOut, why := ffnShape(m, "gate")
		if why != "" {
			return why
		}
		if gIn != upIn || gOut != upOut {
			return fmt.Sprintf("gate weight [%d, %d] and up weight [%d, %d] differ", gIn, gOut, upIn, upOut)
		}
	}
	if f != downIn {
		return fmt.Sprintf("the up projection makes %d, the down projection takes %d", f, downIn)
	}
	for _, p := range []string{"up", "gate", "down"} {
		if !m.Has(p + "_bias") {
			continue
		}
		size := f
		if p == "up" && m.Has("packed") {
			size = 2 * f
		}
		if p == "down" {
			_, size, _ = ffnShape(m, "down")
		}
		if why := ffnBias(p, m.V(p+"_bias"), size); why != "" {
			return why
		}
	}
	if !ffnFeedsResidual(m.Root, 4) {
		return "the output is not added to a residual: a head of this shape, not a layer's FFN"
	}
	return ""
}

// ffnBias requires a 1-D float constant of n elements.
func ffnBias(p string, v *ir.Value, n int64) string {
	t := patterns.ConstOf(v)
	if t == nil {
		return p + " bias is not a constant"
	}
	if !t.DType.IsFloat() || len(t.Dims) != 1 || t.Dims[0] != n {
		return fmt.Sprintf("%s bias is %s%v, not 1-D float of %d", p, t.DType, t.Dims, n)
	}
	return ""
}

// ffnCheckHalves checks that the packed projection is cut into its two halves of f
// along its feature axis (ffnFeatureAxis), and which half is the gate.
func ffnCheckHalves(m *patterns.Match, f int64) string {
	if n := m.N("split"); n != nil {
		if a := n.AttrInt("axis", 0); !ffnOnFeatures(m, a) {
			_, want := ffnFeatureAxis(m)
			return fmt.Sprintf("the packed projection is split on axis %d, not %s", a, want)
		}
		if len(n.Outputs()) != 2 {
			return fmt.Sprintf("the packed projection is split in %d, not 2", len(n.Outputs()))
		}
		var sizes []int64
		if s := n.Input(1); s != nil {
			t := patterns.ConstOf(s)
			if t == nil {
				return "the split sizes are not a constant"
			}
			sizes, _ = t.Int64s()
		} else if a, ok := n.AttrInts("split"); ok {
			sizes = a
		}
		if len(sizes) > 0 && (len(sizes) != 2 || sizes[0] != f || sizes[1] != f) {
			return fmt.Sprintf("the packed projection is split as %v, not two halves of %d", sizes, f)
		}
		return ""
	}
	gate, why := ffnSliceHalf(m, m.N("gate_slice"), f)
	if why != "" {
		return why
	}
	up, why := ffnSliceHalf(m, m.N("up_slice"), f)
	if why != "" {
		return why
	}
	if gate == up {
		return "the gate and up slices take the same half"
	}
	return ""
}

// ffnSliceHalf reads which half (0 or 1) of the packed projection's features a Slice
// takes.
func ffnSliceHalf(m *patterns.Match, n *ir.Node, f int64) (int, string) {
	ints := func(i int) []int64 {
		if t := patterns.ConstOf(n.Input(i)); t != nil {
			v, _ := t.Int64s()
			return v
		}
		return nil
	}
	starts, ends, axes := ints(1), ints(2), ints(3)
	if len(starts) != 1 || len(ends) != 1 || len(axes) != 1 {
		return 0, "a packed half is not a constant one-axis Slice"
	}
	if !ffnOnFeatures(m, axes[0]) {
		_, want := ffnFeatureAxis(m)
		return 0, fmt.Sprintf("a packed half is sliced on axis %d, not %s", axes[0], want)
	}
	if n.Input(4) != nil {
		if st := ints(4); len(st) != 1 || st[0] != 1 {
			return 0, "a packed half is sliced with a step"
		}
	}
	s, e := starts[0], ends[0]
	if s < 0 {
		s += 2 * f
	}
	if e < 0 {
		e += 2 * f
	}
	e = min(e, 2*f)
	switch {
	case s == 0 && e == f:
		return 0, ""
	case s == f && e == 2*f:
		return 1, ""
	}
	return 0, fmt.Sprintf("a packed half is [%d:%d], not a half of %d", starts[0], ends[0], 2*f)
}

// ffnFeatureAxis is the packed projection's output-feature axis, where its halves are
// cut, and its name for reasons: the last for x·W, the channels for a 1×1 Conv on
// channel-first [B, C, S].
func ffnFeatureAxis(m *patterns.Match) (int64, string) {
	if n := m.N("up_matmul"); n != nil && n.OpType == "Conv" {
		return 1, "the channels (axis 1)"
	}
	return -1, "the last"
}

// ffnOnFeatures says whether axis a of the packed projection is its feature axis; an
// axis written the other way round (rank-1 for -1, 1-rank for 1) needs the rank.
func ffnOnFeatures(m *patterns.Match, a int64) bool {
	feature, _ := ffnFeatureAxis(m)
	if a == feature {
		return true
	}
	rank := m.V("packed").Type.Rank()
	i, ok := normAxis(a, rank)
	j, _ := normAxis(feature, rank)
	return rank >= 0 && ok && i == j
}

// ffnFeedsResidual reports whether v is added to a residual: read by an Add or Sum with a
// non-constant other operand or by a fused skip normalisation, directly or through a bias
// Add, a per-channel scale, a Cast or a Q/DQ pair.
func ffnFeedsResidual(v *ir.Value, depth int) bool {
	if depth == 0 {
		return false
	}
	for _, u := range v.Uses() {
		n := u.Node
		switch {
		case n.Domain == msDomain && (n.OpType == "SkipLayerNormalization" || n.OpType == "SkipSimplifiedLayerNormalization"):
			if u.Index < 2 {
				return true
			}
		case n.Domain == "" && (n.OpType == "Add" || n.OpType == "Sum" || n.OpType == "Mul"):
			constOther := false
			for i, in := range n.Inputs() {
				if i != u.Index && in != nil && patterns.ConstOf(in) != nil {
					constOther = true
				}
			}
			if n.OpType != "Mul" && !constOther {
				return true
			}
			if constOther && ffnFeedsResidual(n.Output(0), depth-1) {
				return true
			}
			if n.OpType == "Mul" && ffnRowWeighted(n, u.Index) && ffnFeedsResidual(n.Output(0), depth-1) {
				return true
			}
		case n.Domain == "" && (n.OpType == "Cast" || n.OpType == "QuantizeLinear" || n.OpType == "DequantizeLinear"):
			if ffnFeedsResidual(n.Output(0), depth-1) {
				return true
			}
		}
	}
	// A norm between the FFN and the residual (Swin V2's res-post-norm: x + norm(ffn(x))).
	if out := normOf(v); out != nil && ffnFeedsResidual(out, depth-1) {
		return true
	}
	return false
}

// ffnRowWeighted reports whether Mul n scales its input i by a computed weight of one
// feature per row (a mixture of experts' routing weight, a shared expert's sigmoid gate):
// the FFN's rows are weighted, not mixed, so it is still a layer's FFN.
func ffnRowWeighted(n *ir.Node, i int) bool {
	if len(n.Inputs()) != 2 {
		return false
	}
	x, w := n.Input(i), n.Input(1-i)
	if w == nil || patterns.ConstOf(w) != nil || x.Type == nil || w.Type == nil || !x.Type.HasShape || !w.Type.HasShape {
		return false
	}
	xs, ws := x.Type.Shape, w.Type.Shape
	last := ws[len(ws)-1]
	return len(xs) > 0 && len(ws) > 0 && len(ws) <= len(xs) && last.Known && last.Value == 1 &&
		!(xs[len(xs)-1].Known && xs[len(xs)-1].Value == 1)
}

// normOf is the output of the LayerNorm that normalises v: a fused norm operator, or the
// decomposed form ((v - mean(v)) / sqrt(var + eps), times gamma, plus beta), or nil.
func normOf(v *ir.Value) *ir.Value {
	for _, u := range v.Uses() {
		n := u.Node
		if u.Index == 0 && (n.Domain == "" || n.Domain == msDomain) &&
			(n.OpType == "LayerNormalization" || n.OpType == "SimplifiedLayerNormalization" || n.OpType == "RMSNormalization") {
			return n.Output(0)
		}
	}
	// The centred value d = v - mean(v) is divided by the deviation; the quotient takes
	// the optional constant scale and shift.
	var d *ir.Value
	for _, u := range v.Uses() {
		if n := u.Node; n.OpType == "Sub" && u.Index == 0 {
			if m, _ := n.Input(1).Producer(); m != nil && m.OpType == "ReduceMean" && m.Input(0) == v {
				d = n.Output(0)
			}
		}
	}
	if d == nil {
		return rmsOf(v)
	}
	var out *ir.Value
	for _, u := range d.Uses() {
		if u.Node.OpType == "Div" && u.Index == 0 {
			out = u.Node.Output(0)
		}
	}
	for _, op := range []string{"Mul", "Add"} {
		if out == nil || len(out.Uses()) != 1 {
			break
		}
		n := out.Uses()[0].Node
		if n.OpType != op || patterns.ConstOf(n.Input(1-out.Uses()[0].Index)) == nil {
			break
		}
		out = n.Output(0)
	}
	return out
}

// rmsOf is the output of the decomposed RMSNorm of v: x·1/√(mean(x²)+ε) (Pow or Mul
// for x², Sqrt and Div, or Reciprocal, or a Div of 1), x being v or a float Cast of it,
// then the optional Casts and constant weight.
func rmsOf(v *ir.Value) *ir.Value {
	xs := []*ir.Value{v}
	for _, u := range v.Uses() {
		if u.Node.OpType == "Cast" {
			xs = append(xs, u.Node.Output(0))
		}
	}
	for _, x := range xs {
		for _, u := range x.Uses() {
			n := u.Node
			if n.OpType != "Mul" && n.OpType != "Div" || n.Input(0) == n.Input(1) || n.OpType == "Div" && u.Index != 0 {
				continue
			}
			if !fromMeanSquare(n.Input(1-u.Index), x) {
				continue
			}
			out := n.Output(0)
			for len(out.Uses()) == 1 {
				m := out.Uses()[0].Node
				if m.OpType != "Cast" && !(m.OpType == "Mul" && patterns.ConstOf(m.Input(1-out.Uses()[0].Index)) != nil) {
					break
				}
				out = m.Output(0)
			}
			return out
		}
	}
	return nil
}

// fromMeanSquare says whether r is 1/√(mean(x²)+ε) or √(mean(x²)+ε): a short chain of
// Add, Sqrt, Reciprocal and Div back to a ReduceMean of Pow(x, 2) or x·x.
func fromMeanSquare(r, x *ir.Value) bool {
	for i := 0; i < 6; i++ {
		n, _ := r.Producer()
		if n == nil {
			return false
		}
		switch n.OpType {
		case "ReduceMean":
			sq, _ := n.Input(0).Producer()
			if sq == nil {
				return false
			}
			two, ok := scalarConst(sq.Input(1))
			return sq.OpType == "Mul" && sq.Input(0) == x && sq.Input(1) == x ||
				sq.OpType == "Pow" && sq.Input(0) == x && ok && two == 2
		case "Add", "Div":
			if patterns.ConstOf(n.Input(0)) != nil {
				r = n.Input(1)
			} else {
				r = n.Input(0)
			}
		case "Sqrt", "Reciprocal", "Cast":
			r = n.Input(0)
		default:
			return false
		}
	}
	return false
}

// ---- describe ----

func describeFFN(m *patterns.Match, b *Block) {
	b.Roles[RoleInput] = m.V("x")
	b.Roles[RoleOutput] = m.Root
	b.Roles[RoleHidden] = m.V("hidden")
	for _, r := range [][2]string{
		{"up_weight", RoleUpWeight}, {"up_bias", RoleUpBias},
		{"gate_weight", RoleGateWeight}, {"gate_bias", RoleGateBias},
		{"down_weight", RoleDownWeight}, {"down_bias", RoleDownBias},
	} {
		if v := m.V(r[0]); v != nil {
			b.Roles[r[1]] = v
		}
	}
	name := strings.TrimPrefix(b.Variant, "ffn/")
	structure, act, _ := strings.Cut(name, "-")
	for _, a := range ffnActivations {
		if a.name == act {
			b.Params["activation"] = float64(a.code)
		}
	}
	b.Params["gated"], b.Params["packed"] = 0, 0
	if structure != "plain" {
		b.Params["gated"] = 1
	}
	if structure == "packed" {
		b.Params["packed"] = 1
		b.Roles[RoleGateWeight] = b.Roles[RoleUpWeight]
		b.Params["gate_half"] = float64(ffnGateHalf(m))
	}
	if _, f, why := ffnShape(m, "up"); why == "" {
		if structure == "packed" {
			f /= 2
		}
		b.Params["intermediate"] = float64(f)
	}
	var mods []string
	for _, p := range []string{"up", "gate", "down"} {
		if n := m.N(p + "_matmul"); n != nil && n.OpType == "Gemm" {
			mods = append(mods, "gemm")
			break
		}
	}
	for _, n := range m.All {
		if n.OpType == "QuantizeLinear" || n.OpType == "DequantizeLinear" || n.OpType == "MatMulIntegerToFloat" {
			mods = append(mods, "quant")
			break
		}
	}
	if m.Has("act_fused") {
		mods = append(mods, "fusedact")
	}
	if sub, ok := m.Plan.(*ffnSubNorm); ok {
		mods = append(mods, ffnDescribeSubNorm(sub, m, b)...)
	}
	if len(mods) > 0 {
		b.Variant += "+" + strings.Join(mods, "+")
	}
}

// ffnDescribeSubNorm records the hidden's normalisation and quantisation before the down
// projection, and returns their variant modifiers.
func ffnDescribeSubNorm(sub *ffnSubNorm, m *patterns.Match, b *Block) []string {
	var mods []string
	if sub.norm != 0 {
		b.Params["hidden_norm"] = float64(sub.norm)
		b.Roles[RoleHiddenNorm] = m.V("hidden_norm")
		mods = append(mods, "subnorm")
	}
	if sub.quant {
		b.Params["hidden_quant"] = 1
		mods = append(mods, "actquant")
	}
	return mods
}

// ffnGateHalf says which half of a packed projection goes through the activation.
func ffnGateHalf(m *patterns.Match) int {
	if n := m.N("split"); n != nil {
		if n.Output(1) == m.V("gate") {
			return 1
		}
		return 0
	}
	_, out, _ := ffnShape(m, "up")
	if h, _ := ffnSliceHalf(m, m.N("gate_slice"), out/2); h == 1 {
		return 1
	}
	return 0
}
