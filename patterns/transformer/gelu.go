package transformer

import (
	"fmt"
	"math"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// GELU approximations, as the block's "approximation" parameter.
const (
	GeluErf     = 0 // 0.5·x·(1 + erf(x/√2)), exact
	GeluTanh    = 1 // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), gelu_new / FastGelu
	GeluSigmoid = 2 // x·sigmoid(1.702·x), quick_gelu
)

// The constants of the three forms.
var (
	geluSqrt2       = math.Sqrt2
	geluSqrt2OverPi = math.Sqrt(2 / math.Pi) // 0.7978845608
	geluCubicCoef   = 0.044715
	geluQuickAlpha  = 1.702
)

// GeluFamily recognises GELU activations in their exported forms and fuses them into
// com.microsoft Gelu / BiasGelu / FastGelu / QuickGelu (target ort) or the standard Gelu
// of opset 20 (target onnx).
var GeluFamily = &Family{
	Kind: Gelu,
	Doc: `GELU: y = 0.5·x·(1 + erf(x/√2)) (BERT, RoBERTa, ELECTRA, DistilBERT, DeBERTa), the tanh
form 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (ALBERT's gelu_new, FastGelu) and the
sigmoid form x·sigmoid(1.702·x) (quick_gelu).

Rules, most specific first: the fused ops "gelu/fused-biasgelu", "gelu/fused-fastgelu-bias",
"gelu/fused-fastgelu", "gelu/fused-gelu", "gelu/fused-quickgelu[-bias]",
"gelu/fused-onnx-gelu[-bias]" (standard Gelu-20); then "gelu/erf-<div|mul>-half-<where>"
(the erf argument divided by √2 or multiplied by 1/√2), "gelu/tanh-<pow|mul|fast>-half-<where>"
(x³ as Pow(x, 3) or x·x·x; "fast" is tanh(x·√(2/π)·(1 + 0.044715·x·x))) and "gelu/sigmoid".
<where> places the 0.5 (Mul by 0.5 or Div by 2): "after" x·(1+...), "before" on x, "inner"
on the (1+...) factor; operand orders come from the matcher. Every decomposed rule is
tried first as "<rule>-bias", with x = Add(input, bias) folded in (bias a 1-D constant of
the last-dimension size, the Linear layer's Add(bias, MatMul(...))), then without it (when
that sum is read elsewhere too).

Checks: the input is a float tensor of rank 1 or more; each constant is one value within 1e-4 (relative) of
0.5 (or 2), 1, √2 (or 1/√2), 3, 0.044715, √(2/π), 1.702 ("erf argument scaled by 0.5, not
1/√2"); the bias is 1-D of the input's last dimension; no intermediate value is read
outside the block.

Roles: input (after the bias), output, bias (optional). Params: approximation (0 erf,
1 tanh, 2 sigmoid), alpha (sigmoid form).

Fuse: ORT gets BiasGelu(input, bias) or Gelu(input) for erf, FastGelu(input[, bias]) for
tanh, QuickGelu(x, alpha) for the sigmoid form (a bias Add stays in front of it). ONNX gets
the standard Gelu (approximate "none" or "tanh"), which needs opset 20: the import is
raised only when Env.RaiseOpset allows it and no operator of the model changes meaning
(lnRequireOpset); otherwise, and for the sigmoid form, the block is left with the reason.`,
	Rules:    geluRules(),
	Describe: describeGelu,
	Fuse:     fuseGelu,
}

// ---- patterns ----

// geluForm is one decomposed arrangement: build returns the pattern of the GELU of x.
type geluForm struct {
	name  string
	build func(x patterns.Pattern) patterns.Pattern
}

// The pattern builders below write the math with these names.
var (
	gOp, gVar, gBind, gOr, gConst = patterns.Op, patterns.Var, patterns.Bind, patterns.Or, patterns.Const
)

// geluHalf applies the 0.5 factor: Mul(p, 0.5) or Div(p, 2).
func geluHalf(p patterns.Pattern) patterns.Pattern {
	return gOr(
		gOp("Mul", p, gBind("c_half", gConst())).As("half"),
		gOp("Div", p, gBind("c_two", gConst())).As("half"))
}

// geluOnePlus is Add(p, 1).
func geluOnePlus(p patterns.Pattern) patterns.Pattern {
	return gOp("Add", p, gBind("c_one", gConst()))
}

// geluErfFactor is 1 + erf(x/√2), the argument divided by √2 or multiplied by 1/√2.
func geluErfFactor(x patterns.Pattern, div bool) patterns.Pattern {
	arg := gOp("Mul", x, gBind("c_erf_mul", gConst()))
	if div {
		arg = gOp("Div", x, gBind("c_erf_div", gConst()))
	}
	return geluOnePlus(gOp("Erf", arg))
}

// geluTanhFactor is the tanh form's (1 + tanh(...)) factor in three shapes:
//
//	pow:  1 + tanh(√(2/π)·(x + 0.044715·Pow(x, 3)))        gelu_new
//	mul:  1 + tanh(√(2/π)·(x + 0.044715·x·x·x))            torch's tanh GELU export
//	fast: 1 + tanh(x·√(2/π)·(1 + 0.044715·x·x))            FastGELU
//
// Products of x's match in any association (Mul is commutative in the matcher).
func geluTanhFactor(x patterns.Pattern, shape string) patterns.Pattern {
	c := func(name string) patterns.Pattern { return gBind(name, gConst()) }
	var arg patterns.Pattern
	switch shape {
	case "pow":
		cubic := gOp("Mul", gOp("Pow", x, c("c_three")), c("c_cubic"))
		arg = gOp("Mul", gOp("Add", x, cubic), c("c_tanh"))
	case "mul":
		cubic := gOr(
			gOp("Mul", gOp("Mul", gOp("Mul", x, x), x), c("c_cubic")), // (x·x·x)·c
			gOp("Mul", gOp("Mul", gOp("Mul", x, c("c_cubic")), x), x)) // ((c·x)·x)·x
		arg = gOp("Mul", gOp("Add", x, cubic), c("c_tanh"))
	case "fast":
		square := gOr(
			gOp("Mul", gOp("Mul", x, c("c_cubic")), x), // (c·x)·x
			gOp("Mul", gOp("Mul", x, x), c("c_cubic"))) // c·(x·x)
		arg = gOp("Mul", gOp("Mul", x, c("c_tanh")), gOp("Add", square, c("c_one_inner")))
	}
	return geluOnePlus(gOp("Tanh", arg))
}

// geluArrange puts the 0.5 in one of three places around x·factor.
func geluArrange(x, factor patterns.Pattern, where string) patterns.Pattern {
	switch where {
	case "after": // (x·f)·0.5
		return geluHalf(gOp("Mul", x, factor))
	case "before": // (x·0.5)·f
		return gOp("Mul", geluHalf(x), factor)
	default: // "inner": x·(f·0.5)
		return gOp("Mul", x, geluHalf(factor))
	}
}

// geluForms lists the decomposed arrangements, erf first (the common one).
func geluForms() []geluForm {
	var forms []geluForm
	for _, where := range []string{"after", "before", "inner"} {
		for _, scale := range []string{"div", "mul"} {
			where, div := where, scale == "div"
			forms = append(forms, geluForm{
				name:  fmt.Sprintf("erf-%s-half-%s", scale, where),
				build: func(x patterns.Pattern) patterns.Pattern { return geluArrange(x, geluErfFactor(x, div), where) },
			})
		}
	}
	for _, where := range []string{"after", "before", "inner"} {
		for _, shape := range []string{"pow", "mul", "fast"} {
			where, shape := where, shape
			forms = append(forms, geluForm{
				name:  fmt.Sprintf("tanh-%s-half-%s", shape, where),
				build: func(x patterns.Pattern) patterns.Pattern { return geluArrange(x, geluTanhFactor(x, shape), where) },
			})
		}
	}
	forms = append(forms, geluForm{
		name: "sigmoid",
		build: func(x patterns.Pattern) patterns.Pattern { // x·sigmoid(1.702·x)
			return gOp("Mul", x, gOp("Sigmoid", gOp("Mul", x, gBind("c_sigmoid", gConst()))))
		},
	})
	return forms
}

// geluBiased is x = Add(input, bias) with a constant bias: the Linear layer's bias add
// (torch writes Add(bias, MatMul(...)); the matcher tries both operand orders).
func geluBiased() patterns.Pattern {
	return gBind("x", gOp("Add", gVar("input"), gBind("bias", gConst())).As("bias_add"))
}

// geluRules: the fused forms first, then each decomposed form with its bias Add folded in
// ("-bias"), then without (when the biased sum is also read elsewhere).
func geluRules() []*patterns.Rule {
	ms := "com.microsoft"
	in := gVar("input")
	bias := gBind("bias", patterns.Any())
	rule := func(name string, p patterns.Pattern) *patterns.Rule {
		return &patterns.Rule{Name: "gelu/" + name, Pattern: p, Check: checkGelu}
	}
	rules := []*patterns.Rule{
		rule("fused-biasgelu", gOp("BiasGelu", in, bias).In(ms).As("fused")),
		rule("fused-fastgelu-bias", gOp("FastGelu", in, bias).In(ms).As("fused")),
		rule("fused-fastgelu", gOp("FastGelu", in).In(ms).As("fused")),
		rule("fused-gelu", gOp("Gelu", in).In(ms).As("fused")),
		// QuickGelu and the standard Gelu take no bias: a bias Add stays in front of them.
		rule("fused-quickgelu-bias", gOp("QuickGelu", geluBiased()).In(ms).As("fused")),
		rule("fused-quickgelu", gOp("QuickGelu", in).In(ms).As("fused")),
		rule("fused-onnx-gelu-bias", gOp("Gelu", geluBiased()).As("fused")),
		rule("fused-onnx-gelu", gOp("Gelu", in).As("fused")),
	}
	for _, f := range geluForms() {
		rules = append(rules, rule(f.name+"-bias", f.build(geluBiased())), rule(f.name, f.build(in)))
	}
	return rules
}

// ---- checks ----

// geluScalar returns the value of a bound constant whose elements are all equal.
func geluScalar(m *patterns.Match, name string) (float64, string) {
	t := m.Const(name)
	if t == nil {
		return 0, name + " is not a constant"
	}
	if t.NumElements() == 0 || t.NumElements() > 64 {
		return 0, fmt.Sprintf("%s has %d elements, not one", name, t.NumElements())
	}
	vals, err := t.Float64s()
	if err != nil || len(vals) == 0 {
		return 0, fmt.Sprintf("%s cannot be read", name)
	}
	for _, v := range vals[1:] {
		if v != vals[0] {
			return 0, fmt.Sprintf("%s holds different values (%g, %g)", name, vals[0], v)
		}
	}
	return vals[0], ""
}

// geluNear reports whether got is want within a relative tolerance of 1e-4 (exporters write
// float32 constants, and some round them to 4-6 digits), or within the rounding of a
// constant stored in dt (float16 holds √2 as 1.4140625, bfloat16 as 1.4140625 too: half an
// ulp is 2⁻¹¹ and 2⁻⁸ relative, well inside the 1% a wrong constant is off by).
func geluNear(got, want float64, dt ir.DataType) bool {
	tol := math.Max(1e-4*math.Max(1, math.Abs(want)), math.Abs(want)*dt.Epsilon()/2*(1+1e-9))
	return math.Abs(got-want) <= tol
}

// geluConstChecks: a bound constant, the value it must have, how to say it when it has another.
// An exponent must be exact: Pow(x, 3.00003) is NaN for every negative x, which no fused
// GELU computes.
var geluConstChecks = []struct {
	name  string
	want  float64
	say   string
	exact bool
}{
	{"c_half", 0.5, "output scaled by %g, not 0.5", false},
	{"c_two", 2, "output divided by %g, not 2", false},
	{"c_one", 1, "erf/tanh shifted by %g, not 1", false},
	{"c_one_inner", 1, "cubic term shifted by %g, not 1", false},
	{"c_erf_div", geluSqrt2, "erf argument divided by %g, not √2", false},
	{"c_erf_mul", 1 / geluSqrt2, "erf argument scaled by %g, not 1/√2", false},
	{"c_three", 3, "x raised to %g, not 3", true},
	{"c_cubic", geluCubicCoef, "cubic coefficient %g, not 0.044715", false},
	{"c_tanh", geluSqrt2OverPi, "tanh argument scaled by %g, not √(2/π)", false},
	{"c_sigmoid", geluQuickAlpha, "sigmoid argument scaled by %g, not 1.702 (x·sigmoid(a·x) is a GELU only for a ≈ 1.702)", false},
}

// checkGelu checks the input type, each bound constant and the bias.
func checkGelu(m *patterns.Match) string {
	in := m.V("input")
	if in.Type == nil || !in.Type.DType.Known() {
		return "input type unknown"
	}
	if !in.Type.DType.IsFloat() {
		return fmt.Sprintf("input is %s, not float", in.Type.DType)
	}
	if in.Type.Rank() == 0 { // ORT's FastGelu and BiasGelu refuse rank 0
		return "input is a scalar"
	}
	if why := geluCheckConsts(m); why != "" {
		return why
	}
	if m.Has("bias") {
		return geluCheckBias(m.V("bias"), in)
	}
	return ""
}

// geluCheckConsts checks each bound constant of a decomposed GELU (the FFN family's
// patterns embed the same forms).
func geluCheckConsts(m *patterns.Match) string {
	for _, c := range geluConstChecks {
		if !m.Has(c.name) {
			continue
		}
		v, why := geluScalar(m, c.name)
		if why != "" {
			return why
		}
		if c.exact && v != c.want || !geluNear(v, c.want, m.Const(c.name).DType) {
			return fmt.Sprintf(c.say, v)
		}
	}
	return ""
}

// geluCheckBias requires a 1-D float bias of the input's last-dimension size. A fused op's bias
// need not be a constant; a decomposed one must be (a Linear layer's bias).
func geluCheckBias(b, in *ir.Value) string {
	t := b.Type
	if c := patterns.ConstOf(b); c != nil {
		t = ir.TensorOf(c.DType, geluDims(c.Dims)...)
	}
	if t == nil || t.Rank() != 1 {
		return fmt.Sprintf("bias is %s, not 1-D", t)
	}
	if !t.DType.IsFloat() {
		return fmt.Sprintf("bias is %s, not float", t.DType)
	}
	if r := in.Type.Rank(); r > 0 {
		last := in.Type.Shape[r-1]
		if !last.Known || !t.Shape[0].Known || last.Value != t.Shape[0].Value {
			return fmt.Sprintf("bias has %s elements, the input's last dimension is %s", t.Shape[0], last)
		}
	} else {
		return "input rank unknown: cannot check the bias size"
	}
	return ""
}

func geluDims(ds []int64) []ir.Dim {
	out := make([]ir.Dim, len(ds))
	for i, d := range ds {
		out[i] = ir.D(d)
	}
	return out
}

// ---- describe ----

func describeGelu(m *patterns.Match, b *Block) {
	b.Roles[RoleInput] = m.V("input")
	b.Roles[RoleOutput] = m.Root
	if m.Has("bias") {
		b.Roles[RoleBias] = m.V("bias")
	}
	approx := GeluErf
	name := strings.TrimPrefix(b.Variant, "gelu/")
	switch {
	case strings.HasPrefix(name, "tanh"), strings.HasPrefix(name, "fused-fastgelu"):
		approx = GeluTanh
	case strings.HasPrefix(name, "sigmoid"):
		approx = GeluSigmoid
		b.Params["alpha"], _ = geluScalar(m, "c_sigmoid")
	case strings.HasPrefix(name, "fused-quickgelu"):
		approx = GeluSigmoid
		b.Params["alpha"] = float64(m.N("fused").AttrFloat("alpha", 1.702))
	case strings.HasPrefix(name, "fused-onnx-gelu"):
		if m.N("fused").AttrString("approximate", "none") == "tanh" {
			approx = GeluTanh
		}
	}
	b.Params["approximation"] = float64(approx)
	if strings.HasPrefix(name, "fused") {
		b.Fused = true
	}
}

// ---- fuse ----

func fuseGelu(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error) {
	m := b.Match
	approx := int(b.Param("approximation", 0))
	in, bias := b.Role(RoleInput), b.Role(RoleBias)
	// x is the GELU's argument with the bias added (the bias Add stays when the fused op
	// cannot take the bias).
	x := in
	if bias != nil {
		x = m.V("x")
	}
	var n *ir.Node
	switch env.Target {
	case ORT:
		EnsureOpset(env.Model, "com.microsoft", 1)
		switch approx {
		case GeluErf:
			if bias != nil {
				n = rw.Node("BiasGelu", "com.microsoft", []*ir.Value{in, bias}, 1, embBase(b.Root, "BiasGelu"))
			} else {
				n = rw.Node("Gelu", "com.microsoft", []*ir.Value{in}, 1, embBase(b.Root, "Gelu"))
			}
		case GeluTanh:
			ins := []*ir.Value{in}
			if bias != nil {
				ins = append(ins, bias)
			}
			n = rw.Node("FastGelu", "com.microsoft", ins, 1, embBase(b.Root, "FastGelu"))
		case GeluSigmoid:
			n = rw.Node("QuickGelu", "com.microsoft", []*ir.Value{x}, 1, embBase(b.Root, "QuickGelu"),
				ir.FloatAttr("alpha", float32(b.Param("alpha", geluQuickAlpha))))
		}
	case ONNX:
		if approx == GeluSigmoid {
			return nil, "no standard operator computes x·sigmoid(1.702·x) (QuickGelu is com.microsoft)", nil
		}
		// Gelu is standard from opset 20; lnRequireOpset raises the import when allowed and safe.
		if why := RequireOpset(env, 20, "Gelu", b.Nodes); why != "" {
			return nil, why, nil
		}
		mode := "none"
		if approx == GeluTanh {
			mode = "tanh"
		}
		n = rw.Node("Gelu", "", []*ir.Value{x}, 1, embBase(b.Root, "Gelu"), ir.StringAttr("approximate", mode))
	default:
		return nil, fmt.Sprintf("unknown target %q", env.Target), nil
	}
	rw.Replace(b.Root, n.Output(0))
	return n, "", nil
}
