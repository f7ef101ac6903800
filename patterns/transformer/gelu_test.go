package transformer_test

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/prune"
	"github.com/qcc-dev/qcc/shape"
)

// ---- helpers shared by the GELU and embedding tests (prefix ge) ----

// geParse parses a test graph under the given opset imports.
func geParse(t *testing.T, opsets, src string) *ir.Model {
	t.Helper()
	return ortcheck.Parse(t, "<ir_version: 8, opset_import: ["+opsets+"]>\n"+src)
}

// geFuse runs transformer.Fuse with fams, removes dead nodes (as the fuse pass does),
// verifies, and checks that fusing again changes nothing.
func geFuse(t *testing.T, m *ir.Model, fams []*transformer.Family, env *transformer.Env) *transformer.Report {
	t.Helper()
	rep, err := transformer.Fuse(m, fams, env)
	if err != nil {
		t.Fatal(err)
	}
	prune.RemoveDead(m.Graph)
	if err := m.Verify(); err != nil {
		t.Fatalf("fused model does not verify: %v\n%s", err, ortcheck.Text(t, m))
	}
	before := ortcheck.Text(t, m)
	env2 := *env
	env2.Model = m
	if _, err := transformer.Fuse(m, fams, &env2); err != nil {
		t.Fatal(err)
	}
	prune.RemoveDead(m.Graph)
	if after := ortcheck.Text(t, m); after != before {
		t.Errorf("fusing twice changed the model:\n--- once\n%s\n--- twice\n%s", before, after)
	}
	return rep
}

// geCorpus folds every corpus model, fuses it with fams under each env (Model is filled
// in), checks the result against the original in ONNX Runtime (optimisations off and
// extended: max abs diff ≤ 1e-4), and logs row's summary of each model and env.
func geCorpus(t *testing.T, fams []*transformer.Family, envs []transformer.Env, row func(name string, env *transformer.Env, rep *transformer.Report, m *ir.Model) string) {
	orttest.RequireLib(t)
	models := corpus.Models(t, "", "trained", "invalid")
	var rows []string
	for _, cm := range models {
		cm := cm
		t.Run(cm.Name, func(t *testing.T) {
			inputs := ortcheck.Inputs(t, cm)
			want := geReference(t, ortcheck.Reference(cm), cm.Inputs, inputs)
			for i := range envs {
				env := envs[i]
				m := ortcheck.Fold(t, cm.Path, passes.All)
				env.Model = m
				before := fmt.Sprint(ortcheck.Ops(m.Graph))
				rep := geFuse(t, m, fams, &env)
				summary := row(cm.Name, &env, rep, m)
				if fmt.Sprint(ortcheck.Ops(m.Graph)) == before {
					// Nothing rewritten (blocks left with their reasons): annotations only.
					rows = append(rows, fmt.Sprintf("%-24s %-4s %s  (unchanged)", cm.Name, env.Target, summary))
					continue
				}
				path := ortcheck.Save(t, m, t.TempDir(), cm.Name+".onnx")
				levels := []ort.OptLevel{ort.OptDisabled, ort.OptExtended}
				if env.Target == transformer.ONNX {
					levels = levels[:1] // the ORT target is the one checked at both levels
				}
				worst := 0.0
				for _, level := range levels {
					d := ortcheck.MaxDiff(t, want, ortcheck.Run(t, path, inputs, level))
					if d > 1e-4 {
						t.Errorf("%s: ORT (level %d) outputs differ from the original by %g (> 1e-4)", env.Target, level, d)
					}
					worst = math.Max(worst, d)
				}
				rows = append(rows, fmt.Sprintf("%-24s %-4s %s  max|diff| %.1e", cm.Name, env.Target, summary, worst))
			}
		})
	}
	sort.Strings(rows)
	t.Logf("\n%s", strings.Join(rows, "\n"))
}

// geRefs caches the reference outputs of the corpus models (ORT, optimisations off)
// across the tests of this package.
var geRefs = struct {
	sync.Mutex
	out map[string]map[string]*ndarray.Array
}{out: map[string]map[string]*ndarray.Array{}}

func geReference(t *testing.T, path, inputsPath string, inputs map[string]*ndarray.Array) map[string]*ndarray.Array {
	t.Helper()
	geRefs.Lock()
	defer geRefs.Unlock()
	key := path + "|" + inputsPath
	if out, ok := geRefs.out[key]; ok {
		return out
	}
	out := ortcheck.Run(t, path, inputs, ort.OptDisabled)
	geRefs.out[key] = out
	return out
}

// geLeft summarises the blocks of a kind that were left, by reason.
func geLeft(rep *transformer.Report, kind transformer.Kind) string {
	why := map[string]int{}
	prefix := strings.ToLower(string(kind)) + "."
	for _, l := range rep.Left {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		if i := strings.Index(l, "): "); i >= 0 {
			why[l[i+3:]]++
		}
	}
	var out []string
	for w, c := range why {
		out = append(out, fmt.Sprintf("%d left: %s", c, w))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// ---- corpus ----

// TestGeluCorpus: every corpus model has one GELU per layer (two layers). For ORT all
// fuse; for ONNX with opset=20 allowed, the opset-17 models free of operators that change
// meaning up to 20 are raised and fuse into Gelu, the rest stay decomposed with the
// reason. Outputs stay within 1e-4 of the original's.
func TestGeluCorpus(t *testing.T) {
	envs := []transformer.Env{{Target: transformer.ORT}, {Target: transformer.ONNX, RaiseOpset: 20}}
	geCorpus(t, []*transformer.Family{transformer.GeluFamily}, envs, func(name string, env *transformer.Env, rep *transformer.Report, m *ir.Model) string {
		variants := map[string]bool{}
		n := 0
		for _, b := range rep.Blocks {
			if b.Kind == transformer.Gelu {
				n++
				variants[b.Variant] = true
			}
		}
		ops := ortcheck.Ops(m.Graph)
		fused := ops["com.microsoft.BiasGelu"] + ops["com.microsoft.FastGelu"] + ops["com.microsoft.Gelu"] + ops["Gelu"]
		if n != 2 {
			t.Errorf("%s %s: %d GELU blocks, want 2 (refusals %v)", name, env.Target, n, rep.Refusals)
		}
		if (env.Target == transformer.ORT && fused != 2) || fused+len(rep.Left) != 2 {
			t.Errorf("%s %s: %d fused GELU ops, left %v", name, env.Target, fused, rep.Left)
		}
		for _, r := range rep.Refusals {
			if strings.HasPrefix(r.Rule, "gelu/") {
				t.Errorf("%s refusal: %s", name, r)
			}
		}
		var vs []string
		for v := range variants {
			vs = append(vs, v)
		}
		sort.Strings(vs)
		return fmt.Sprintf("gelu %d %-28s BiasGelu %d FastGelu %d Gelu %d (opset %d) %s", n, strings.Join(vs, ","), ops["com.microsoft.BiasGelu"],
			ops["com.microsoft.FastGelu"], ops["Gelu"], m.Opset(""), geLeft(rep, transformer.Gelu))
	})
}

// ---- unit tests ----

// geluConsts are the constants the test graphs use.
const geluConsts = `
  float half = {0.5},
  float two = {2},
  float one = {1},
  float sqrt2 = {1.4142135},
  float rsqrt2 = {0.70710677},
  float three = {3},
  float kappa = {0.044715},
  float beta = {0.7978846},
  float alpha = {1.702},
  float[8] b = {0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8}`

// geluFactors compute f = 1 + erf(...) or 1 + tanh(...) from x.
var geluFactors = map[string]string{
	"erf-div": `
  d = Div (x, sqrt2)
  e = Erf (d)
  f = Add (e, one)`,
	"erf-mul": `
  d = Mul (rsqrt2, x)
  e = Erf (d)
  f = Add (one, e)`,
	"tanh-pow": `
  p = Pow (x, three)
  k = Mul (kappa, p)
  s = Add (x, k)
  t = Mul (beta, s)
  th = Tanh (t)
  f = Add (th, one)`,
	"tanh-mul": `
  xx = Mul (x, x)
  xxx = Mul (xx, x)
  k = Mul (kappa, xxx)
  s = Add (x, k)
  t = Mul (beta, s)
  th = Tanh (t)
  f = Add (one, th)`,
	"tanh-fast": `
  xb = Mul (x, beta)
  kx = Mul (kappa, x)
  kxx = Mul (kx, x)
  s = Add (one, kxx)
  t = Mul (xb, s)
  th = Tanh (t)
  f = Add (th, one)`,
}

// geluHalves put the 0.5 around x·f.
var geluHalves = map[string]string{
	"after": `
  xf = Mul (x, f)
  y = Mul (xf, half)`,
	"before": `
  xh = Div (x, two)
  y = Mul (xh, f)`,
	"inner": `
  fh = Mul (half, f)
  y = Mul (fh, x)`,
}

// geluGraph is a test graph computing y = GELU(x) with the given body; biased, x is
// Add(b, x0) (the Linear layer's bias add), else x is the input.
func geluGraph(body string, biased bool, opset int) string {
	in := "x"
	pre := ""
	if biased {
		in, pre = "x0", "\n  x = Add (b, x0)"
	}
	return fmt.Sprintf(`g (float[2,8] %s) => (float[2,8] y) <%s
> {%s%s
}`, in, geluConsts, pre, body)
}

// geluInput is deterministic input data for the test graphs.
func geluInput(name string) map[string]*ndarray.Array {
	v := make([]float32, 16)
	for i := range v {
		v[i] = float32(i-8) * 0.37
	}
	return map[string]*ndarray.Array{name: ndarray.FromFloat32([]int64{2, 8}, v)}
}

type geluCase struct {
	name    string
	src     string // the graph
	biased  bool
	variant string  // the recognised variant
	approx  float64 // the approximation param
	op      string  // the fused op for ORT ("" when left)
	refusal string  // a refusal reason that must be reported
}

func geluCases() []geluCase {
	var cases []geluCase
	ops := map[string]string{"erf": "com.microsoft.Gelu", "tanh": "com.microsoft.FastGelu"}
	biasOps := map[string]string{"erf": "com.microsoft.BiasGelu", "tanh": "com.microsoft.FastGelu"}
	for _, f := range []string{"erf-div", "erf-mul", "tanh-pow", "tanh-mul", "tanh-fast"} {
		for _, h := range []string{"after", "before", "inner"} {
			kind := strings.SplitN(f, "-", 2)[0]
			approx := 0.0
			if kind == "tanh" {
				approx = 1
			}
			body := geluFactors[f] + geluHalves[h]
			v := f + "-half-" + h
			cases = append(cases,
				geluCase{name: v, src: geluGraph(body, false, 13), variant: "gelu/" + v, approx: approx, op: ops[kind]},
				geluCase{name: v + "-bias", src: geluGraph(body, true, 13), biased: true, variant: "gelu/" + v + "-bias", approx: approx, op: biasOps[kind]})
		}
	}
	sigmoid := `
  ax = Mul (alpha, x)
  sg = Sigmoid (ax)
  y = Mul (x, sg)`
	cases = append(cases,
		geluCase{name: "sigmoid", src: geluGraph(sigmoid, false, 13), variant: "gelu/sigmoid", approx: 2, op: "com.microsoft.QuickGelu"},
		geluCase{name: "sigmoid-bias", src: geluGraph(sigmoid, true, 13), biased: true, variant: "gelu/sigmoid-bias", approx: 2, op: "com.microsoft.QuickGelu"})
	return cases
}

// TestGeluVariants: each named variant is recognised with its roles and params, fuses
// for ORT into the expected op (once: fusing again changes nothing), and ORT computes
// the same values before and after.
func TestGeluVariants(t *testing.T) {
	orttest.RequireLib(t)
	for _, c := range geluCases() {
		c := c
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, `"" : 13`, c.src)
			in := "x"
			if c.biased {
				in = "x0"
			}
			inputs := geluInput(in)
			want := ortcheck.RunModel(t, m, inputs, ort.OptDisabled)
			b := geluOnly(t, m)
			if b.Variant != c.variant || b.Params["approximation"] != c.approx || b.Fused {
				t.Fatalf("recognised %s approx %g fused %v; want %s approx %g", b.Variant, b.Params["approximation"], b.Fused, c.variant, c.approx)
			}
			if got := b.Roles["input"].Name; got != in {
				t.Errorf("input role %s, want %s", got, in)
			}
			if (b.Roles["bias"] != nil) != c.biased {
				t.Errorf("bias role %v, want biased=%v", b.Roles["bias"], c.biased)
			}
			geFuse(t, m, []*transformer.Family{transformer.GeluFamily}, &transformer.Env{Model: m, Target: transformer.ORT})
			ops := ortcheck.Ops(m.Graph)
			if ops[c.op] != 1 || ops["Erf"]+ops["Tanh"]+ops["Sigmoid"] != 0 {
				t.Fatalf("after fuse: %v, want one %s", ops, c.op)
			}
			if c.biased && c.approx == 2 && ops["Add"] != 1 {
				t.Errorf("QuickGelu takes no bias: the bias Add must stay (ops %v)", ops)
			}
			fb := geluOnly(t, m)
			if !fb.Fused || fb.Params["approximation"] != c.approx || (fb.Roles["bias"] != nil) != c.biased {
				t.Errorf("fused block %s fused=%v approx %g bias %v", fb.Variant, fb.Fused, fb.Params["approximation"], fb.Roles["bias"])
			}
			for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptExtended} {
				if d := ortcheck.MaxDiff(t, want, ortcheck.RunModel(t, m, inputs, level)); d > 1e-5 {
					t.Errorf("fused output differs by %g (level %d)", d, level)
				}
			}
		})
	}
}

// geluOnly recognises the single GELU block of m (after inferring shapes).
func geluOnly(t *testing.T, m *ir.Model) *transformer.Block {
	t.Helper()
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	blocks, refs := transformer.Recognize(m.Graph, []*transformer.Family{transformer.GeluFamily})
	if len(blocks) != 1 {
		t.Fatalf("%d GELU blocks, want 1; refusals %v", len(blocks), refs)
	}
	return blocks[0]
}

// half is src in float16, √2 written as sqrt2 (an integer literal is a float16's bit
// pattern in the text format: the whole numbers get a decimal point).
func half(src, sqrt2 string) string {
	src = strings.Replace(src, "sqrt2 = {1.4142135}", "sqrt2 = {"+sqrt2+"}", 1)
	return strings.NewReplacer("float[", "float16[", "float ", "float16 ", "{1}", "{1.0}", "{2}", "{2.0}", "{3}", "{3.0}").Replace(src)
}

// TestGeluRefusals: a wrong constant, a non-float input, an escaping intermediate and a
// bias of the wrong shape are refused with their reasons; a refused bias leaves the
// unbiased GELU.
func TestGeluRefusals(t *testing.T) {
	cases := []struct {
		name, src, reason string
		variant           string // the block recognised instead ("" none)
	}{
		{"erf-scaled-by-half", geluGraph(strings.Replace(geluFactors["erf-mul"], "rsqrt2", "half", 1)+geluHalves["after"], false, 13),
			"erf argument scaled by 0.5, not 1/√2", ""},
		{"erf-divided-by-2", geluGraph(strings.Replace(geluFactors["erf-div"], "sqrt2", "two", 1)+geluHalves["after"], false, 13),
			"erf argument divided by 2, not √2", ""},
		{"half-is-two", geluGraph(geluFactors["erf-div"]+strings.Replace(geluHalves["after"], "half", "two", 1), false, 13),
			"output scaled by 2, not 0.5", ""},
		{"cubic-coefficient", geluGraph(strings.Replace(geluFactors["tanh-pow"], "kappa", "half", 1)+geluHalves["after"], false, 13),
			"cubic coefficient 0.5, not 0.044715", ""},
		{"tanh-scale", geluGraph(strings.Replace(geluFactors["tanh-pow"], "beta", "one", 1)+geluHalves["after"], false, 13),
			"tanh argument scaled by 1, not √(2/π)", ""},
		{"square-not-cube", geluGraph(strings.Replace(geluFactors["tanh-pow"], "three", "two", 1)+geluHalves["after"], false, 13),
			"x raised to 2, not 3", ""},
		{"cube-not-integer", strings.Replace(geluGraph(geluFactors["tanh-pow"]+geluHalves["after"], false, 13), "three = {3}", "three = {3.00003}", 1),
			"x raised to 3.00003", ""},
		{"scalar-input", strings.Replace(geluGraph(geluFactors["erf-div"]+geluHalves["after"], false, 13), "float[2,8]", "float", -1),
			"input is a scalar", ""},
		{"silu", geluGraph("\n  ax = Mul (one, x)\n  sg = Sigmoid (ax)\n  y = Mul (x, sg)", false, 13),
			"sigmoid argument scaled by 1, not 1.702", ""},
		{"double-input-ok", strings.Replace(strings.Replace(geluGraph(geluFactors["erf-div"]+geluHalves["after"], false, 13), "float[2,8]", "double[2,8]", -1), "float ", "double ", -1),
			"", "gelu/erf-div-half-after"},
		// A constant stored in float16 holds √2 as 1.4140625 (half an ulp off); stored in
		// float32 the same value is off by 1.5e-4, and in float16 1.4296875 is 1% off.
		{"half-ok", half(geluGraph(geluFactors["erf-div"]+geluHalves["after"], false, 13), "1.4140625"),
			"", "gelu/erf-div-half-after"},
		{"half-constant-1%-off", half(geluGraph(geluFactors["erf-div"]+geluHalves["after"], false, 13), "1.4296875"),
			"erf argument divided by 1.4296875, not √2", ""},
		{"float-rounded-as-half", strings.Replace(geluGraph(geluFactors["erf-div"]+geluHalves["after"], false, 13), "sqrt2 = {1.4142135}", "sqrt2 = {1.4140625}", 1),
			"erf argument divided by 1.4140625, not √2", ""},
		{"escaping-erf", strings.Replace(geluGraph(geluFactors["erf-div"]+geluHalves["after"], false, 13), "=> (float[2,8] y)", "=> (float[2,8] y, float[2,8] e)", 1),
			`intermediate value "e" is a graph output`, ""},
		{"bias-read-elsewhere", strings.Replace(geluGraph(geluFactors["erf-div"]+geluHalves["after"], true, 13), "=> (float[2,8] y)", "=> (float[2,8] y, float[2,8] x)", 1),
			`intermediate value "x" is a graph output`, "gelu/erf-div-half-after"},
		{"bias-not-1d", strings.Replace(geluGraph(geluFactors["erf-div"]+geluHalves["after"], true, 13), "float[8] b", "float[1,8] b", 1),
			"bias is float[1,8], not 1-D", "gelu/erf-div-half-after"},
	}
	for _, c := range cases {
		c := c
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, `"" : 13`, c.src)
			if _, err := shape.Infer(m); err != nil {
				t.Fatal(err)
			}
			blocks, refs := transformer.Recognize(m.Graph, []*transformer.Family{transformer.GeluFamily})
			if c.reason != "" {
				var got []string
				for _, r := range refusalReasons(refs) {
					if strings.HasPrefix(r, c.reason) {
						got = append(got, r)
					}
				}
				expectReason(t, got, c.reason)
			}
			switch {
			case c.variant == "" && len(blocks) != 0:
				t.Errorf("recognised %s, want none", blocks[0].Variant)
			case c.variant != "" && (len(blocks) != 1 || blocks[0].Variant != c.variant):
				t.Errorf("recognised %v, want %s (refusals %v)", blocks, c.variant, refs)
			}
		})
	}
}

// TestGeluInputNotFloat: the input type is checked.
func TestGeluInputNotFloat(t *testing.T) {
	m := geParse(t, `"" : 13`, `g (int32[2,8] x) => (int32[2,8] y) <
  int32 c = {1},
  int32 h = {2}
> {
  d = Div (x, c)
  e = Erf (d)
  f = Add (e, c)
  xf = Mul (x, f)
  y = Div (xf, h)
}`)
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	blocks, refs := transformer.Recognize(m.Graph, []*transformer.Family{transformer.GeluFamily})
	if len(blocks) != 0 || len(refs) == 0 {
		t.Fatalf("blocks %v, refusals %v; want the int32 input refused", blocks, refs)
	}
	expectExactReason(t, refusalReasons(refs[:1]), "input is int32, not float")
}

// TestGeluFusedForms: the fused operators are recognised as fused blocks with their
// approximation, and fusing leaves them alone.
func TestGeluFusedForms(t *testing.T) {
	src := `g (float[2,8] x) => (float[2,8] y1, float[2,8] y2, float[2,8] y3, float[2,8] y4, float[2,8] y5, float[2,8] y6) <
  float[8] b = {0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8}
> {
  y1 = com.microsoft.BiasGelu (x, b)
  y2 = com.microsoft.FastGelu (x, b)
  y3 = com.microsoft.Gelu (x)
  xb = Add (b, x)
  y4 = com.microsoft.QuickGelu <alpha = 1.702> (xb)
  y5 = Gelu <approximate = "tanh"> (x)
  y6 = Gelu (x)
}`
	m := geParse(t, `"" : 20, "com.microsoft" : 1`, src)
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	blocks, refs := transformer.Recognize(m.Graph, []*transformer.Family{transformer.GeluFamily})
	want := []struct {
		variant string
		approx  float64
		bias    bool
	}{
		{"gelu/fused-biasgelu", 0, true}, {"gelu/fused-fastgelu-bias", 1, true}, {"gelu/fused-gelu", 0, false},
		{"gelu/fused-quickgelu-bias", 2, true}, {"gelu/fused-onnx-gelu", 1, false}, {"gelu/fused-onnx-gelu", 0, false},
	}
	if len(blocks) != len(want) {
		t.Fatalf("%d blocks, want %d (refusals %v)", len(blocks), len(want), refs)
	}
	for i, w := range want {
		b := blocks[i]
		if b.Variant != w.variant || !b.Fused || b.Params["approximation"] != w.approx || (b.Roles["bias"] != nil) != w.bias {
			t.Errorf("block %d: %s fused=%v approx %g bias %v; want %+v", i, b.Variant, b.Fused, b.Params["approximation"], b.Roles["bias"], w)
		}
	}
	before := fmt.Sprint(ortcheck.Ops(m.Graph))
	geFuse(t, m, []*transformer.Family{transformer.GeluFamily}, &transformer.Env{Model: m, Target: transformer.ORT})
	if after := fmt.Sprint(ortcheck.Ops(m.Graph)); after != before {
		t.Errorf("fuse changed a fused model: %s -> %s", before, after)
	}
}

// TestGeluONNXTarget: the standard Gelu needs opset 20. Without permission to raise the
// import the block stays decomposed with the reason; with it, a model free of operators
// that change meaning is raised and fused (and ORT agrees); one with a ReduceMean (axes
// moved to an input at 18) is not; the sigmoid form has no standard operator.
func TestGeluONNXTarget(t *testing.T) {
	orttest.RequireLib(t)
	fams := []*transformer.Family{transformer.GeluFamily}
	erf := geluGraph(geluFactors["erf-div"]+geluHalves["after"], true, 13)
	tanh := geluGraph(geluFactors["tanh-mul"]+geluHalves["inner"], false, 13)
	// RoiAlign's coordinate mapping changed its default at 16, which has no upgrade: it
	// blocks the raise.
	reduce := strings.Replace(strings.Replace(strings.Replace(erf, "=> (float[2,8] y)", "=> (float[2,8] y, float[1,1,1,1] r)", 1),
		"\n}", "\n  x4 = Reshape (x0, shp4)\n  r = RoiAlign <output_height = 1, output_width = 1> (x4, rois, bi)\n}", 1),
		"\n> {", ",\n  int64[4] shp4 = {1, 1, 2, 8},\n  float[1,4] rois = {0, 0, 4, 1},\n  int64[1] bi = {0}\n> {", 1)
	sigmoid := geluGraph("\n  ax = Mul (alpha, x)\n  sg = Sigmoid (ax)\n  y = Mul (x, sg)", false, 13)
	cases := []struct {
		name, src string
		raise     int64
		reason    string // "" when fused
		mode      string
	}{
		{"no-raise", erf, 0, "Gelu needs opset 20", ""},
		{"raise-erf", erf, 20, "", "none"},
		{"raise-tanh", tanh, 20, "", "tanh"},
		{"raise-blocked", reduce, 20, "RoiAlign changed at opset 16", ""},
		{"sigmoid", sigmoid, 20, "no standard operator computes x·sigmoid(1.702·x) (QuickGelu is com.microsoft)", ""},
	}
	for _, c := range cases {
		c := c
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, `"" : 13`, c.src)
			in := "x"
			if strings.Contains(c.src, "x0") {
				in = "x0"
			}
			inputs := geluInput(in)
			want := ortcheck.RunModel(t, m, inputs, ort.OptDisabled)
			rep := geFuse(t, m, fams, &transformer.Env{Model: m, Target: transformer.ONNX, RaiseOpset: c.raise})
			ops := ortcheck.Ops(m.Graph)
			if c.reason != "" {
				if len(rep.Left) != 1 || !expectReason(t, rep.Left, c.reason) {
					t.Fatalf("left %v, want the reason %q", rep.Left, c.reason)
				}
				if ops["Gelu"] != 0 || m.Opset("") != 13 {
					t.Fatalf("ops %v at opset %d: the block should stay decomposed at 13", ops, m.Opset(""))
				}
				return
			}
			if ops["Gelu"] != 1 || m.Opset("") != 20 || len(rep.Left) != 0 {
				t.Fatalf("ops %v at opset %d, left %v: want one Gelu at opset 20", ops, m.Opset(""), rep.Left)
			}
			for _, n := range m.Graph.Nodes() {
				if n.OpType == "Gelu" && n.AttrString("approximate", "none") != c.mode {
					t.Errorf("approximate=%q, want %q", n.AttrString("approximate", "none"), c.mode)
				}
			}
			if d := ortcheck.MaxDiff(t, want, ortcheck.RunModel(t, m, inputs, ort.OptDisabled)); d > 1e-5 {
				t.Errorf("fused output differs by %g", d)
			}
		})
	}
}
