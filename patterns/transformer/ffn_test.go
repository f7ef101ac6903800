package transformer_test

import (
	"fmt"
	"math"
	"math/rand"
	"strconv"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/shape"
)

// FFN test graphs are written from the math: y = x + down(act(up(x))), or gated
// y = x + down(act(gate(x)) ⊙ up(x)), with hidden 8 and intermediate 16, on a [2,3,8]
// input ([2,8,3] channel-first for 1×1 convolutions).

const ffnH, ffnF = 8, 16

// ffnGraph accumulates a test graph's initializers and nodes.
type ffnGraph struct {
	inits, nodes []string
	rng          *rand.Rand
}

func (g *ffnGraph) init(decl string, vals ...float64) {
	s := make([]string, len(vals))
	for i, v := range vals {
		s[i] = strconv.FormatFloat(v, 'f', -1, 64)
	}
	g.inits = append(g.inits, fmt.Sprintf("  %s = {%s}", decl, strings.Join(s, ", ")))
}

func (g *ffnGraph) random(decl string, n int, scale float64) {
	vals := make([]float64, n)
	for i := range vals {
		vals[i] = math.Round(g.rng.NormFloat64()*scale*1e4) / 1e4
	}
	g.init(decl, vals...)
}

func (g *ffnGraph) node(f string, args ...any) {
	g.nodes = append(g.nodes, "  "+fmt.Sprintf(f, args...))
}

// proj writes out = projection p of in, from k to n features, in one of the forms.
func (g *ffnGraph) proj(form, p, in, out string, k, n int) {
	switch form {
	case "matmul-add":
		g.random(fmt.Sprintf("float[%d,%d] w_%s", k, n, p), k*n, 0.3)
		g.random(fmt.Sprintf("float[%d] b_%s", n, p), n, 0.1)
		g.node("%s_mm = MatMul (%s, w_%s)", out, in, p)
		g.node("%s = Add (b_%s, %s_mm)", out, p, out)
	case "matmul":
		g.random(fmt.Sprintf("float[%d,%d] w_%s", k, n, p), k*n, 0.3)
		g.node("%s = MatMul (%s, w_%s)", out, in, p)
	case "gemm": // GPT-2's Conv1D and nn.Linear on the 2-D view: Reshape, Gemm, Reshape
		g.random(fmt.Sprintf("float[%d,%d] w_%s", n, k, p), k*n, 0.3)
		g.random(fmt.Sprintf("float[%d] b_%s", n, p), n, 0.1)
		g.init(fmt.Sprintf("int64[2] s2_%s", p), -1, float64(k))
		g.init(fmt.Sprintf("int64[3] s3_%s", p), 2, 3, float64(n))
		g.node("%s_2d = Reshape (%s, s2_%s)", out, in, p)
		g.node("%s_g = Gemm <transB = 1> (%s_2d, w_%s, b_%s)", out, out, p, p)
		g.node("%s = Reshape (%s_g, s3_%s)", out, out, p)
	case "conv": // a 1×1 convolution on channel-first [B, C, S]
		g.random(fmt.Sprintf("float[%d,%d,1] w_%s", n, k, p), k*n, 0.3)
		g.random(fmt.Sprintf("float[%d] b_%s", n, p), n, 0.1)
		g.node("%s = Conv <kernel_shape = [1]> (%s, w_%s, b_%s)", out, in, p, p)
	}
}

// act writes out = act(in).
func (g *ffnGraph) act(a, in, out string) {
	switch a {
	case "relu":
		g.node("%s = Relu (%s)", out, in)
	case "gelu":
		g.node("%s_d = Div (%s, c_sqrt2)", out, in)
		g.node("%s_e = Erf (%s_d)", out, out)
		g.node("%s_p = Add (%s_e, c_one)", out, out)
		g.node("%s_m = Mul (%s, %s_p)", out, in, out)
		g.node("%s = Mul (%s_m, c_half)", out, out)
	case "gelu_tanh":
		g.node("%s_c = Pow (%s, c_three)", out, in)
		g.node("%s_k = Mul (c_kappa, %s_c)", out, out)
		g.node("%s_s = Add (%s, %s_k)", out, in, out)
		g.node("%s_b = Mul (%s_s, c_beta)", out, out)
		g.node("%s_t = Tanh (%s_b)", out, out)
		g.node("%s_p = Add (c_one, %s_t)", out, out)
		g.node("%s_h = Mul (c_half, %s)", out, in)
		g.node("%s = Mul (%s_h, %s_p)", out, out, out)
	case "quick_gelu":
		g.node("%s_a = Mul (c_alpha, %s)", out, in)
		g.node("%s_s = Sigmoid (%s_a)", out, out)
		g.node("%s = Mul (%s, %s_s)", out, in, out)
	case "silu":
		g.node("%s_s = Sigmoid (%s)", out, in)
		g.node("%s = Mul (%s_s, %s)", out, out, in)
	case "hardswish": // x·HardSigmoid(x) with α = 1/6 (torch before opset 14)
		g.node("%s_s = HardSigmoid <alpha = 0.16666667> (%s)", out, in)
		g.node("%s = Mul (%s, %s_s)", out, in, out)
	case "relu_squared": // torch.square(relu(x))
		g.node("%s_r = Relu (%s)", out, in)
		g.node("%s = Mul (%s_r, %s_r)", out, out, out)
	case "relu_squared-pow": // relu(x) ** 2
		g.node("%s_r = Relu (%s)", out, in)
		g.node("%s = Pow (%s_r, c_two)", out, out)
	case "relu-cubed": // relu(x) ** 3: no activation of these
		g.node("%s_r = Relu (%s)", out, in)
		g.node("%s = Pow (%s_r, c_three)", out, out)
	case "hardsigmoid-default": // x·HardSigmoid(x) with the default α = 0.2: not HardSwish
		g.node("%s_s = HardSigmoid (%s)", out, in)
		g.node("%s = Mul (%s, %s_s)", out, in, out)
	case "silu-div": // x / (1 + exp(-x))
		g.node("%s_n = Neg (%s)", out, in)
		g.node("%s_e = Exp (%s_n)", out, out)
		g.node("%s_p = Add (%s_e, c_one)", out, out)
		g.node("%s = Div (%s, %s_p)", out, in, out)
	}
}

// ffnSource writes the graph of one FFN: structure plain, gated, packed-split,
// packed-split-second (the second half through the activation), packed-slice or
// packed-slice-second (packed-slice-same: both Slices take the first half). The
// packed halves are cut on the features: the last axis, a 1×1 Conv's channels (axis 1).
func ffnSource(structure, act, form string, residual bool) string {
	g := &ffnGraph{rng: rand.New(rand.NewSource(int64(len(structure)*31 + len(act)*7 + len(form))))}
	axis := -1
	if form == "conv" {
		axis = 1
	}
	g.init("float c_sqrt2", math.Sqrt2)
	g.init("float c_one", 1)
	g.init("float c_half", 0.5)
	g.init("float c_two", 2)
	g.init("float c_three", 3)
	g.init("float c_kappa", 0.044715)
	g.init("float c_beta", math.Sqrt(2/math.Pi))
	g.init("float c_alpha", 1.702)
	switch structure {
	case "plain":
		g.proj(form, "up", "x", "u", ffnH, ffnF)
		g.act(act, "u", "h")
	case "gated":
		g.proj(form, "gate", "x", "gt", ffnH, ffnF)
		g.proj(form, "up", "x", "u", ffnH, ffnF)
		g.act(act, "gt", "a")
		g.node("h = Mul (a, u)")
	case "packed-split", "packed-split-second":
		g.proj(form, "up", "x", "p", ffnH, 2*ffnF)
		g.init("int64[2] halves", ffnF, ffnF)
		if structure == "packed-split" {
			g.node("gt, u = Split <axis = %d> (p, halves)", axis)
		} else {
			g.node("u, gt = Split <axis = %d> (p, halves)", axis)
		}
		g.act(act, "gt", "a")
		g.node("h = Mul (u, a)")
	case "packed-slice", "packed-slice-second", "packed-slice-same":
		g.proj(form, "up", "x", "p", ffnH, 2*ffnF)
		g.init("int64[1] s_lo", 0)
		g.init("int64[1] s_mid", ffnF)
		g.init("int64[1] s_hi", 1<<40)
		g.init("int64[1] s_ax", float64(axis))
		switch structure {
		case "packed-slice":
			g.node("gt = Slice (p, s_lo, s_mid, s_ax)")
			g.node("u = Slice (p, s_mid, s_hi, s_ax)")
		case "packed-slice-second":
			g.node("u = Slice (p, s_lo, s_mid, s_ax)")
			g.node("gt = Slice (p, s_mid, s_hi, s_ax)")
		default: // both the first half
			g.node("gt = Slice (p, s_lo, s_mid, s_ax)")
			g.node("u = Slice (p, s_lo, s_mid, s_ax)")
		}
		g.act(act, "gt", "a")
		g.node("h = Mul (a, u)")
	}
	g.proj(form, "down", "h", "o", ffnF, ffnH)
	shape := "[2,3,8]"
	if form == "conv" {
		shape = "[2,8,3]"
	}
	if residual {
		g.node("y = Add (x, o)")
	} else {
		g.node("y = Identity (o)")
	}
	return fmt.Sprintf("g (float%s x) => (float%s y) <\n%s\n> {\n%s\n}", shape, shape,
		strings.Join(g.inits, ",\n"), strings.Join(g.nodes, "\n"))
}

func ffnInputs(form string) map[string]*ndarray.Array {
	rng := rand.New(rand.NewSource(7))
	v := make([]float32, 2*3*ffnH)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	shape := []int64{2, 3, ffnH}
	if form == "conv" {
		shape = []int64{2, ffnH, 3}
	}
	return map[string]*ndarray.Array{"x": ndarray.FromFloat32(shape, v)}
}

// ffnRecognize infers shapes and recognises m's FFN blocks.
func ffnRecognize(t *testing.T, m *ir.Model) ([]*transformer.Block, []string) {
	t.Helper()
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	blocks, refs := transformer.Recognize(m.Graph, []*transformer.Family{transformer.FFNFamily})
	var reasons []string
	for _, r := range refs {
		reasons = append(reasons, r.Reason)
	}
	return blocks, reasons
}

var ffnActCode = map[string]float64{
	"relu": transformer.FFNRelu, "gelu": transformer.FFNGelu, "gelu_tanh": transformer.FFNGeluTanh,
	"quick_gelu": transformer.FFNQuickGelu, "silu": transformer.FFNSilu, "silu-div": transformer.FFNSilu,
	"hardswish": transformer.FFNHardSwish, "relu_squared": transformer.FFNReluSq, "relu_squared-pow": transformer.FFNReluSq,
}

type ffnCase struct {
	structure, act, form string
}

func (c ffnCase) name() string { return c.structure + "-" + c.act + "-" + c.form }

// ffnCases covers every structure with every activation (MatMul + Add projections),
// every projection form with a plain and a gated FFN, and the packed halves in both
// orders and both node forms on the channels of 1×1 convolutions.
func ffnCases() []ffnCase {
	var cs []ffnCase
	for _, s := range []string{"plain", "gated", "packed-split", "packed-split-second", "packed-slice"} {
		for _, a := range []string{"relu", "gelu", "gelu_tanh", "quick_gelu", "silu", "silu-div", "hardswish", "relu_squared", "relu_squared-pow"} {
			cs = append(cs, ffnCase{s, a, "matmul-add"})
		}
	}
	for _, f := range []string{"matmul", "gemm", "conv"} {
		cs = append(cs, ffnCase{"plain", "gelu", f}, ffnCase{"gated", "silu", f})
	}
	return append(cs, ffnCase{"packed-slice-second", "silu", "matmul-add"},
		ffnCase{"packed-split", "silu", "conv"}, ffnCase{"packed-split-second", "gelu", "conv"},
		ffnCase{"packed-slice", "gelu_tanh", "conv"}, ffnCase{"packed-slice-second", "silu", "conv"})
}

// TestFFNReluCubedNotSquared: Relu(x) to the power 3 is no activation of these.
func TestFFNReluCubedNotSquared(t *testing.T) {
	m := geParse(t, `"" : 13`, ffnSource("plain", "relu-cubed", "matmul-add", true))
	if blocks, refs := ffnRecognize(t, m); len(blocks) != 0 {
		t.Errorf("%d FFN blocks (%s), want none; refusals %v", len(blocks), blocks[0].Variant, refs)
	}
}

// TestFFNHardSigmoidNotHardSwish: x·HardSigmoid(x) is HardSwish only with α = 1/6 and
// β = 1/2; with HardSigmoid's default α = 0.2 it is another function and no FFN.
func TestFFNHardSigmoidNotHardSwish(t *testing.T) {
	m := geParse(t, `"" : 13`, ffnSource("plain", "hardsigmoid-default", "matmul-add", true))
	if blocks, refs := ffnRecognize(t, m); len(blocks) != 0 {
		t.Errorf("%d FFN blocks (%s), want none; refusals %v", len(blocks), blocks[0].Variant, refs)
	}
}

// TestFFNVariants: each structure, activation and projection form is recognised as one
// FFN block with its roles and params; fused with every family for ORT (and ONNX with the
// opset raised to 20) it computes what it did (ONNX Runtime, 1e-4), fusing again changes
// nothing, the FFN is still recognised over the fused activation, and the activations
// with an ONNX Runtime operator become it.
func TestFFNVariants(t *testing.T) {
	orttest.RequireLib(t)
	for _, c := range ffnCases() {
		c := c
		t.Run(c.name(), func(t *testing.T) {
			src := ffnSource(c.structure, c.act, c.form, true)
			m := geParse(t, `"" : 13`, src)
			blocks, refs := ffnRecognize(t, m)
			if len(blocks) != 1 {
				t.Fatalf("%d FFN blocks, want 1; refusals %v\n%s", len(blocks), refs, src)
			}
			b := blocks[0]
			structure, _, _ := strings.Cut(c.structure, "-")
			act, _, _ := strings.Cut(c.act, "-") // silu-div, relu_squared-pow: another form
			wantVariant := "ffn/" + structure + "-" + act
			if base, _, _ := strings.Cut(b.Variant, "+"); base != wantVariant {
				t.Errorf("variant %s, want %s", b.Variant, wantVariant)
			}
			if c.form == "gemm" && !strings.Contains(b.Variant, "+gemm") {
				t.Errorf("variant %s lacks +gemm", b.Variant)
			}
			if b.Params["activation"] != ffnActCode[c.act] {
				t.Errorf("activation %g, want %g", b.Params["activation"], ffnActCode[c.act])
			}
			gated := structure != "plain"
			if (b.Params["gated"] == 1) != gated || (b.Params["packed"] == 1) != (structure == "packed") {
				t.Errorf("gated %g packed %g for %s", b.Params["gated"], b.Params["packed"], c.structure)
			}
			if b.Params["intermediate"] != ffnF {
				t.Errorf("intermediate %g, want %d", b.Params["intermediate"], ffnF)
			}
			if half := b.Params["gate_half"]; structure == "packed" && (half == 1) != strings.HasSuffix(c.structure, "-second") {
				t.Errorf("gate_half %g for %s", half, c.structure)
			}
			if b.Role(transformer.RoleInput).Name != "x" || b.Role(transformer.RoleHidden).Name != "h" && structure != "plain" {
				t.Errorf("input %s hidden %s", b.Role(transformer.RoleInput).Name, b.Role(transformer.RoleHidden).Name)
			}
			for r, w := range map[string]string{transformer.RoleUpWeight: "w_up", transformer.RoleDownWeight: "w_down"} {
				if v := b.Role(r); v == nil || v.Name != w {
					t.Errorf("role %s = %v, want %s", r, v, w)
				}
			}
			if gated && b.Role(transformer.RoleGateWeight) == nil {
				t.Errorf("gated FFN without gate_weight")
			}
			if c.form != "matmul" && b.Role(transformer.RoleDownBias) == nil {
				t.Errorf("no down_bias")
			}

			inputs := ffnInputs(c.form)
			want := ortcheck.RunModel(t, m, inputs, ort.OptDisabled)
			for _, env := range []transformer.Env{{Target: transformer.ORT}, {Target: transformer.ONNX, RaiseOpset: 20}} {
				fm := geParse(t, `"" : 13`, src)
				env.Model = fm
				geFuse(t, fm, transformer.Families, &env)
				after, _ := ffnRecognize(t, fm)
				if len(after) != 1 || after[0].Params["activation"] != ffnActCode[c.act] {
					t.Errorf("%s: after fuse %d FFN blocks (%v)", env.Target, len(after), after)
				}
				ops := ortcheck.Ops(fm.Graph)
				if env.Target == transformer.ORT {
					switch act {
					case "quick_gelu":
						if ops["com.microsoft.QuickGelu"] != 1 {
							t.Errorf("quick-GELU not fused into QuickGelu: %v", ops)
						}
					case "gelu", "gelu_tanh":
						if ops["com.microsoft.BiasGelu"]+ops["com.microsoft.Gelu"]+ops["com.microsoft.FastGelu"] != 1 && c.form != "conv" {
							t.Errorf("GELU not fused: %v", ops)
						}
					}
				}
				for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptExtended} {
					ortcheck.CheckOutputs(t, fmt.Sprintf("%s (level %d)", env.Target, level), want, ortcheck.RunModel(t, fm, inputs, level), 1e-4)
				}
			}
		})
	}
}

// TestFFNPackedAxisWritten: the feature axis a packed projection is cut on may be written
// from either end (rank 3: the last is 2 or -1, a Conv's channels 1 or -2).
func TestFFNPackedAxisWritten(t *testing.T) {
	cases := []struct {
		structure, form, from, to string
		gateHalf                  float64
	}{
		{"packed-split", "matmul-add", "Split <axis = -1>", "Split <axis = 2>", 0},
		{"packed-split-second", "conv", "Split <axis = 1>", "Split <axis = -2>", 1},
		{"packed-slice", "conv", "int64[1] s_ax = {1}", "int64[1] s_ax = {-2}", 0},
		{"packed-slice-second", "matmul", "int64[1] s_ax = {-1}", "int64[1] s_ax = {2}", 1},
	}
	for _, c := range cases {
		src := editSrc(t, ffnSource(c.structure, "silu", c.form, true), c.from, c.to)
		blocks, refs := ffnRecognize(t, geParse(t, `"" : 13`, src))
		if len(blocks) != 1 {
			t.Errorf("%s %s, %s: %d blocks, refusals %q; want one packed FFN", c.structure, c.form, c.to, len(blocks), refs)
			continue
		}
		b := blocks[0]
		if b.Params["packed"] != 1 || b.Params["gate_half"] != c.gateHalf || b.Role(transformer.RoleGateWeight) != b.Role(transformer.RoleUpWeight) {
			t.Errorf("%s %s, %s: %s packed %g gate_half %g (want %g), gate weight %v, up weight %v", c.structure, c.form, c.to, b.Variant,
				b.Params["packed"], b.Params["gate_half"], c.gateHalf, b.Role(transformer.RoleGateWeight), b.Role(transformer.RoleUpWeight))
		}
	}
}

// TestFFNRefusals: what is not a layer's FFN, or not one of these forms, is refused with
// its reason.
func TestFFNRefusals(t *testing.T) {
	plain := ffnSource("plain", "gelu", "matmul-add", true)
	cases := []struct{ name, src, reason string }{
		{"head", ffnSource("plain", "gelu", "matmul-add", false), "the output is not added to a residual: a head of this shape, not a layer's FFN"},
		{"same-half", ffnSource("packed-slice-same", "silu", "matmul-add", true), "the gate and up slices take the same half"},
		{"silu-two", strings.Replace(ffnSource("plain", "silu-div", "matmul-add", true), "h_p = Add (h_e, c_one)", "h_p = Add (h_e, c_three)", 1),
			"sigmoid written as x / (3 + exp(-x)), not 1 + exp(-x)"},
		{"gelu-constant", strings.Replace(plain, "h_d = Div (u, c_sqrt2)", "h_d = Div (u, c_three)", 1), "erf argument divided by 3, not √2"},
		{"gemm-alpha", strings.Replace(ffnSource("plain", "relu", "gemm", true), "Gemm <transB = 1> (u_2d", "Gemm <transB = 1, alpha = 0.5> (u_2d", 1),
			"up Gemm scales by alpha 0.5, beta 1"},
		{"gemm-transA", strings.Replace(strings.Replace(ffnSource("plain", "relu", "gemm", true), "Gemm <transB = 1> (o_2d", "Gemm <transA = 1, transB = 1> (o_2d", 1),
			"s2_down = {-1, 16}", "s2_down = {16, -1}", 1), "down Gemm transposes its input"},
		{"conv-kernel", strings.Replace(strings.Replace(ffnSource("plain", "relu", "conv", true), "float[16,8,1] w_up", "float[16,8,3] w_up", 1),
			"u = Conv <kernel_shape = [1]>", "u = Conv <kernel_shape = [3], pads = [1, 1]>", 1), "up Conv kernel is [3], not 1×1"},
		{"escaping", strings.Replace(plain, "=> (float[2,3,8] y)", "=> (float[2,3,8] y, float[2,3,16] u)", 1), `intermediate value "u" is a graph output`},
		{"batched-weight", strings.Replace(plain, "float[8,16] w_up", "float[1,8,16] w_up", 1), "up weight has shape [1 8 16], not 2-D"},
		{"bias-2d", strings.Replace(plain, "float[16] b_up", "float[1,16] b_up", 1), "up bias is float[1 16], not 1-D float of 16"},
		{"quickgelu-alpha", plain, "QuickGelu alpha 1, not 1.702"},
		{"gate-broadcast", ffnGateBroadcast(), "gate weight [8, 1] and up weight [8, 16] differ"},
		{"conv-groups", strings.Replace(strings.Replace(ffnSource("plain", "relu", "conv", true), "float[16,8,1] w_up", "float[16,4,1] w_up", 1),
			"u = Conv <kernel_shape = [1]>", "u = Conv <kernel_shape = [1], group = 2>", 1), "up Conv has 2 groups"},
	}
	for _, c := range cases {
		c := c
		t.Run(c.name, func(t *testing.T) {
			src := c.src
			switch c.name {
			case "conv-kernel": // three times the weights
				src = ffnTripleConvWeight(src)
			case "conv-groups": // half the weights
				src = ffnHalveConvWeight(src)
			case "quickgelu-alpha": // the decomposed GELU's other nodes read the QuickGelu
				src = ffnOnlyQuickGelu(src)
			}
			m := geParse(t, `"" : 13`, src)
			blocks, refs := ffnRecognize(t, m)
			if len(blocks) != 0 {
				t.Errorf("recognised %s, want it refused", blocks[0].Variant)
			}
			expectExactReason(t, refs, c.reason)
		})
	}
}

// ffnTripleConvWeight repeats the values of w_up three times (a [16,8,3] kernel).
func ffnTripleConvWeight(src string) string {
	i := strings.Index(src, "w_up = {")
	j := strings.Index(src[i:], "}")
	vals := src[i+len("w_up = {") : i+j]
	return src[:i] + "w_up = {" + vals + ", " + vals + ", " + vals + src[i+j:]
}

// TestFFNFusedActivations: the FFN is recognised over the activation operators fuse emits
// and over ONNX Runtime's own: BiasGelu and FastGelu taking the up projection's bias,
// Gelu, QuickGelu and the standard Gelu.
func TestFFNFusedActivations(t *testing.T) {
	cases := []struct {
		act, variant string
		code         float64
	}{
		{"hb = com.microsoft.BiasGelu (u_mm, b_up)", "ffn/plain-gelu+fusedact", transformer.FFNGelu},
		{"hb = com.microsoft.FastGelu (u_mm, b_up)", "ffn/plain-gelu_tanh+fusedact", transformer.FFNGeluTanh},
		{"hb = com.microsoft.FastGelu (u)", "ffn/plain-gelu_tanh+fusedact", transformer.FFNGeluTanh},
		{"hb = com.microsoft.Gelu (u)", "ffn/plain-gelu+fusedact", transformer.FFNGelu},
		{"hb = com.microsoft.QuickGelu <alpha = 1.702> (u)", "ffn/plain-quick_gelu+fusedact", transformer.FFNQuickGelu},
		{`hb = Gelu <approximate = "tanh"> (u)`, "ffn/plain-gelu_tanh+fusedact", transformer.FFNGeluTanh},
		{"hb = Gelu (u)", "ffn/plain-gelu+fusedact", transformer.FFNGelu},
	}
	for _, c := range cases {
		src := ffnSource("plain", "relu", "matmul-add", true)
		src = strings.Replace(src, "h = Relu (u)", c.act, 1)
		src = strings.Replace(src, "o_mm = MatMul (h, w_down)", "o_mm = MatMul (hb, w_down)", 1)
		if strings.Contains(c.act, "u_mm, b_up") {
			src = strings.Replace(src, "  u = Add (b_up, u_mm)\n", "", 1)
		}
		m := geParse(t, `"" : 20, "com.microsoft" : 1`, src)
		blocks, refs := ffnRecognize(t, m)
		if len(blocks) != 1 || blocks[0].Variant != c.variant || blocks[0].Params["activation"] != c.code {
			t.Errorf("%s: blocks %v (refusals %v), want %s", c.act, blocks, refs, c.variant)
			continue
		}
		if blocks[0].Role(transformer.RoleUpBias) == nil {
			t.Errorf("%s: no up_bias", c.act)
		}
	}
}

// ffnHalveConvWeight keeps the first half of w_up's values (a grouped [16,4,1] kernel).
func ffnHalveConvWeight(src string) string {
	i := strings.Index(src, "w_up = {")
	j := strings.Index(src[i:], "}")
	vals := strings.Split(src[i+len("w_up = {"):i+j], ", ")
	return src[:i] + "w_up = {" + strings.Join(vals[:len(vals)/2], ", ") + src[i+j:]
}

// ffnOnlyQuickGelu replaces the erf GELU's nodes with h = QuickGelu(u), alpha 1.
func ffnOnlyQuickGelu(src string) string {
	var keep []string
	for _, l := range strings.Split(src, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "h_") || strings.HasPrefix(strings.TrimSpace(l), "h = ") {
			continue
		}
		keep = append(keep, l)
	}
	out := strings.Join(keep, "\n")
	return strings.Replace(out, "  o_mm", "  h = com.microsoft.QuickGelu <alpha = 1.0> (u)\n  o_mm", 1)
}

// ffnGateBroadcast is a gated FFN whose gate projects to one feature: act(x·Wg) [B,S,1]
// broadcast over x·Wu [B,S,16] is a per-token scale, not a gate per feature.
func ffnGateBroadcast() string {
	src := ffnSource("gated", "silu", "matmul-add", true)
	i := strings.Index(src, "float[8,16] w_gate = {")
	j := strings.Index(src[i:], "}")
	vals := strings.Split(src[i+len("float[8,16] w_gate = {"):i+j], ", ")
	src = src[:i] + "float[8,1] w_gate = {" + strings.Join(vals[:8], ", ") + src[i+j:]
	i = strings.Index(src, "float[16] b_gate = {")
	j = strings.Index(src[i:], "}")
	return src[:i] + "float[1] b_gate = {0.1" + src[i+j:]
}

// TestFFNRowWeighted: an expert of a mixture, its output weighted per token by a
// computed gate before it reaches the residual, is a layer's FFN; weighted by a
// computed tensor of every feature it is not (the rows would be mixed with another value).
func TestFFNRowWeighted(t *testing.T) {
	src := ffnSource("gated", "silu", "matmul", true)
	gate := "  r = Sigmoid (r_mm)\n  ow = Mul (o, r)\n  y = Add (x, ow)"
	src = strings.Replace(src, "  y = Add (x, o)", "  r_mm = MatMul (x, w_r)\n"+gate, 1)
	src = strings.Replace(src, "float c_sqrt2", "float[8,1] w_r = {0.1, -0.2, 0.3, 0.1, 0.2, -0.1, 0.05, 0.4},\n  float c_sqrt2", 1)
	blocks, refs := ffnRecognize(t, geParse(t, `"" : 13`, src))
	if len(blocks) != 1 {
		t.Fatalf("%d FFN blocks, refusals %q; want the routed expert", len(blocks), refs)
	}
	wide := strings.Replace(src, "float[8,1] w_r = {0.1, -0.2, 0.3, 0.1, 0.2, -0.1, 0.05, 0.4}",
		"float[8,8] w_r = {"+strings.TrimSuffix(strings.Repeat("0.1, ", 64), ", ")+"}", 1)
	blocks, refs = ffnRecognize(t, geParse(t, `"" : 13`, wide))
	if len(blocks) != 0 {
		t.Errorf("recognised %s weighted by a tensor of every feature, want it refused", blocks[0].Variant)
	}
	expectExactReason(t, refs, "the output is not added to a residual: a head of this shape, not a layer's FFN")
}

// ffnSubNormSource is a gated SiLU FFN whose down projection reads sub(h) instead of h:
// sub writes nodes from h to "hs" (the hidden norms are Magneto's Sub-LN, NormFormer's
// LayerNorm after the activation, BitNet's ffn_sub_norm and absmax quantisation).
func ffnSubNormSource(sub ...string) string {
	g := &ffnGraph{rng: rand.New(rand.NewSource(11))}
	g.random(fmt.Sprintf("float[%d] sn_gamma", ffnF), ffnF, 0.2)
	g.random(fmt.Sprintf("float[%d] sn_beta", ffnF), ffnF, 0.1)
	g.init("float sn_eps", 1e-5)
	g.init("float q_127", 127)
	g.init("float q_m128", -128)
	src := ffnSource("gated", "silu", "matmul", true)
	src = strings.Replace(src, "\n> {\n", ",\n"+strings.Join(g.inits, ",\n")+"\n> {\n", 1)
	return strings.Replace(src, "  o = MatMul (h, w_down)", "  "+strings.Join(sub, "\n  ")+"\n  o = MatMul (hs, w_down)", 1)
}

// The hidden's normalisations, each written out as the norm families know them.
var (
	ffnSubLayerNorm = []string{
		"sn_mu = ReduceMean <axes = [-1]> (h)", "sn_d = Sub (h, sn_mu)", "sn_sq = Pow (sn_d, c_two)",
		"sn_var = ReduceMean <axes = [-1]> (sn_sq)", "sn_ve = Add (sn_var, sn_eps)", "sn_sd = Sqrt (sn_ve)",
		"sn_nm = Div (sn_d, sn_sd)", "sn_sc = Mul (sn_nm, sn_gamma)", "hn = Add (sn_sc, sn_beta)",
	}
	ffnSubRMSNorm = []string{
		"sn_sq = Pow (h, c_two)", "sn_ms = ReduceMean <axes = [-1]> (sn_sq)", "sn_ve = Add (sn_ms, sn_eps)",
		"sn_sd = Sqrt (sn_ve)", "sn_nm = Div (h, sn_sd)", "hn = Mul (sn_nm, sn_gamma)",
	}
)

// ffnAbsmax is BitNet's per-row absmax quantisation of in to 8 bits and back, over axis.
func ffnAbsmax(in, axis string) []string {
	return []string{
		"q_abs = Abs (" + in + ")", "q_max = ReduceMax <axes = [" + axis + "]> (q_abs)", "q_fl = Clip (q_max, sn_eps)",
		"q_rc = Reciprocal (q_fl)", "q_s = Mul (q_rc, q_127)", "q_m = Mul (" + in + ", q_s)", "q_r = Round (q_m)",
		"q_c = Clip (q_r, q_m128, q_127)", "hs = Div (q_c, q_s)",
	}
}

// ffnInto has lines' last node write hs, what the down projection reads.
func ffnInto(lines []string) []string {
	out := append([]string{}, lines...)
	out[len(out)-1] = strings.Replace(out[len(out)-1], "hn =", "hs =", 1)
	return out
}

func ffnSubNormCases() []struct {
	name, opsets string
	sub          []string
	norm, quant  float64
} {
	return []struct {
		name, opsets string
		sub          []string
		norm, quant  float64
	}{
		{"layernorm", `"" : 13`, ffnInto(ffnSubLayerNorm), transformer.FFNHiddenLayerNorm, 0},
		{"layernorm-fused", `"" : 17`, []string{"hs = LayerNormalization <axis = -1, epsilon = 1e-5> (h, sn_gamma, sn_beta)"}, transformer.FFNHiddenLayerNorm, 0},
		{"rmsnorm", `"" : 13`, ffnInto(ffnSubRMSNorm), transformer.FFNHiddenRMSNorm, 0},
		{"rmsnorm-fused-ms", `"" : 17, "com.microsoft" : 1`, []string{"hs = com.microsoft.SimplifiedLayerNormalization <axis = -1, epsilon = 1e-6> (h, sn_gamma)"}, transformer.FFNHiddenRMSNorm, 0},
		{"rmsnorm-absmax", `"" : 13`, append(append([]string{}, ffnSubRMSNorm...), ffnAbsmax("hn", "-1")...), transformer.FFNHiddenRMSNorm, 1},
		{"absmax", `"" : 13`, ffnAbsmax("h", "-1"), 0, 1},
	}
}

// TestFFNHiddenNorm: a normalisation of the hidden over the last axis, or BitNet's absmax
// quantisation, before the down projection leaves the FFN one.
func TestFFNHiddenNorm(t *testing.T) {
	for _, c := range ffnSubNormCases() {
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, c.opsets, ffnSubNormSource(c.sub...))
			blocks, refs := ffnRecognize(t, m)
			if len(blocks) != 1 {
				t.Fatalf("%d FFN blocks, want one; refusals %v", len(blocks), refs)
			}
			b := blocks[0]
			if b.Params["hidden_norm"] != c.norm || b.Params["hidden_quant"] != c.quant {
				t.Errorf("%s: hidden_norm %g, hidden_quant %g; want %g, %g", b.Variant, b.Params["hidden_norm"], b.Params["hidden_quant"], c.norm, c.quant)
			}
			if b.Role(transformer.RoleHidden).Name != "h" {
				t.Errorf("hidden %s, want h", b.Role(transformer.RoleHidden).Name)
			}
			if hn := b.Role(transformer.RoleHiddenNorm); (hn != nil) != (c.norm != 0) {
				t.Errorf("hidden_norm role %v with norm %g", hn, c.norm)
			}
		})
	}
}

// TestFFNHiddenNormNearMiss: a norm or an absmax over another axis mixes positions, and a
// softmax is no normalisation: the FFN is not taken.
func TestFFNHiddenNormNearMiss(t *testing.T) {
	axis1 := strings.ReplaceAll(strings.Join(ffnSubRMSNorm, "\n"), "axes = [-1]", "axes = [1]")
	cases := []struct {
		name, opsets string
		sub          []string
		reason       string
	}{
		{"rmsnorm-axis", `"" : 13`, ffnInto(strings.Split(axis1, "\n")), "normalised over axis 1, not the last (rank 3)"},
		{"layernorm-fused-axis", `"" : 17`, []string{"hs = LayerNormalization <axis = 1, epsilon = 1e-5> (h, sn_gamma, sn_beta)"}, "normalised from axis 1, not the last (rank 3)"},
		{"absmax-axis", `"" : 13`, ffnAbsmax("h", "1"), "the hidden's absmax is taken over axes [1] (keepdims 1), not per row"},
		{"softmax", `"" : 13`, []string{"hs = Softmax <axis = -1> (h)"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, c.opsets, ffnSubNormSource(c.sub...))
			blocks, refs := ffnRecognize(t, m)
			if len(blocks) != 0 {
				t.Fatalf("recognised %s, want none", blocks[0].Variant)
			}
			if c.reason != "" {
				expectExactReason(t, refs, c.reason)
			}
		})
	}
}
