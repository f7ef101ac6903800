package cuda

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// A merged decoder (Optimum's decoder_model_merged) holds its whole model in both
// branches of an If on use_cache_branch: the emitter plans the blocks of every body
// like the main graph's, and checks them on the body's own subgraph.

// cIdent is a C identifier.
var cIdent = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// checkNames holds a plan's generated names to what C and the check folder need:
// every check function a unique C identifier, every data file a unique name in
// check/ itself.
func checkNames(t *testing.T, p *plan) {
	t.Helper()
	fns, files := map[string]string{}, map[string]string{}
	for _, in := range p.Instances {
		if !cIdent.MatchString(in.Fn) {
			t.Errorf("%s: check function %q is not a C identifier", in.ID, in.Fn)
		}
		if prev, ok := fns[in.Fn]; ok {
			t.Errorf("%s and %s share the check function %s", prev, in.ID, in.Fn)
		}
		fns[in.Fn] = in.ID
		for _, tt := range in.Tensors {
			if tt.File == "" || strings.ContainsAny(tt.File, `/\`) {
				t.Errorf("%s: data file %q is not a name in check/", in.ID, tt.File)
			}
			if prev, ok := files[tt.File]; ok {
				t.Errorf("%s and %s share the data file %s", prev, in.ID, tt.File)
			}
			files[tt.File] = in.ID
		}
	}
}

// byBody splits block ids ("then/attention.0") by the body that holds them ("then";
// "" for the main graph) and maps each id within its body to what it got.
func byBody(ids []string, got func(i int) string) map[string]map[string]string {
	out := map[string]map[string]string{}
	for i, id := range ids {
		body, rest := "", id
		if j := strings.LastIndex(id, "/"); j >= 0 {
			body, rest = id[:j], id[j+1:]
		}
		if out[body] == nil {
			out[body] = map[string]string{}
		}
		out[body][rest] = got(i)
	}
	return out
}

func instanceKernels(p *plan) map[string]map[string]string {
	ids := make([]string, len(p.Instances))
	for i, in := range p.Instances {
		ids[i] = in.ID
	}
	return byBody(ids, func(i int) string { return p.Instances[i].Kernel.Name })
}

// skippedReasons maps each skipped block, by body, to its reason.
func skippedReasons(p *plan) map[string]map[string]string {
	var ids, whys []string
	for _, s := range p.Skipped {
		id, why, _ := strings.Cut(s, " (")
		ids, whys = append(ids, id), append(whys, why)
	}
	return byBody(ids, func(i int) string { return whys[i] })
}

func kernelNames(p *plan) []string {
	var out []string
	for _, k := range p.Kernels {
		out = append(out, k.Name)
	}
	sort.Strings(out)
	return out
}

// TestMergedDecoder: gpt2-merged is gpt2-causal in both branches of an If. Each branch
// gets the instances gpt2-causal gets, with the same kernels (shared by the branches),
// and the blocks without one say why, as gpt2-causal's do; the names stay C identifiers
// and file names. With ONNX Runtime, the check data Emit writes is that of the bodies'
// subgraphs, and the kernels' emulation agrees with it.
func TestMergedDecoder(t *testing.T) {
	for _, pl := range probePipelines {
		for _, opset := range []string{"opset10", "opset13", "opset17"} {
			t.Run(pl.name+"/"+opset, func(t *testing.T) {
				causal := planOf(t, loadWith(t, filepath.Join(probeDir, "gpt2-causal."+opset+".onnx"), pl.passes), "gpt2-causal")
				path := filepath.Join(probeDir, "gpt2-merged."+opset+".onnx")
				m := loadWith(t, path, pl.passes)
				merged := planOf(t, m, filepath.Base(path))
				want := instanceKernels(causal)[""]
				got := instanceKernels(merged)
				if len(want) == 0 {
					t.Fatalf("gpt2-causal has no instances (skipped: %v)", causal.Skipped)
				}
				if len(got) != 2 || got["then"] == nil || got["else"] == nil {
					t.Fatalf("instances by body %v, want the If's two branches (skipped: %v)", got, merged.Skipped)
				}
				wantSkips := skippedReasons(causal)[""]
				for body, kernels := range got {
					if diff := cmp.Diff(want, kernels); diff != "" {
						t.Errorf("branch %s: instances and kernels differ from gpt2-causal's (-causal +branch):\n%s", body, diff)
					}
					if diff := cmp.Diff(wantSkips, skippedReasons(merged)[body]); diff != "" {
						t.Errorf("branch %s: skipped blocks differ from gpt2-causal's (-causal +branch):\n%s", body, diff)
					}
				}
				if diff := cmp.Diff(kernelNames(causal), kernelNames(merged)); diff != "" {
					t.Errorf("kernels differ from gpt2-causal's (-causal +merged):\n%s", diff)
				}
				checkNames(t, merged)
				if opset != "opset17" {
					return
				}
				t.Run("check data", func(t *testing.T) {
					orttest.RequireLib(t)
					dir := t.TempDir()
					res, err := Emit(m, dir, Options{Source: filepath.Base(path), CheckData: true})
					if err != nil {
						t.Fatal(err)
					}
					if !res.CheckData {
						t.Fatal("no check data written")
					}
					verifyCheckData(t, merged, dir)
				})
			})
		}
	}
}

// TestBodyBlocks: blocks and Q/DQ nodes in the branches of an If get instances
// numbered per branch, the ones without a kernel (attention with past key/values in the
// cache branch, a uint8 Q/DQ pair) say why, and every instance's emulation agrees with
// ONNX Runtime on its subgraph, whose inputs, initializers and activation come from
// the main graph.
func TestBodyBlocks(t *testing.T) {
	m := load(t, "testdata/probe-bodies.onnx.txt")
	p := planOf(t, m, "probe-bodies")
	wantInstances := map[string]map[string]string{
		"then": {"layernorm.0": "qcc_layernorm_h10", "quantize.0": "qcc_quantize_pt"},
		"else": {"attention.0": "qcc_attention_n2_d6", "quantize.1": "qcc_quantize_pt"},
	}
	if diff := cmp.Diff(wantInstances, instanceKernels(p)); diff != "" {
		t.Errorf("instances (-want +got):\n%s", diff)
	}
	wantSkips := map[string]map[string]string{
		"then": {"attention.0": "attention/fused-onnx): past_key/past_value: the kernel has no incremental decoding"},
		"else": {
			"quantize.0":   "QuantizeLinear): zero point is not an int8 constant (only INT8 has kernels)",
			"dequantize.0": "DequantizeLinear): zero point is not an int8 constant (only INT8 has kernels)",
		},
	}
	if diff := cmp.Diff(wantSkips, skippedReasons(p)); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}
	checkNames(t, p)
	orttest.RequireLib(t)
	for _, in := range p.Instances {
		for param, e := range emulateInstance(t, m, in) {
			if e.bad > 0 {
				t.Errorf("%s (%s): %d of %d elements of %s disagree; first %s", in.ID, in.Kernel.Name, e.bad, e.n, param, e.first)
			}
			t.Logf("%s (%s): %s max abs/rel error %.1e/%.1e", in.ID, in.Kernel.Name, param, e.maxAbs, e.maxRel)
		}
	}
}

// TestBodyOuterValues: a body's block reads, besides its bound input, an activation
// and an initializer of the main graph. Its subgraph takes the activation as an input
// (drawn) and the initializer as a constant, and stops there: the main graph's nodes
// are not the block's.
func TestBodyOuterValues(t *testing.T) {
	m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 17]>
outer (bool c, float[2,3] x) => (float[2,3] y) <float[3] w = {0.5, -1, 2}> {
  s = Sigmoid (x)
  y = If (c) <then_branch = then () => (float[2,3] o) {
    h = Add (x, s)
    o = Mul (h, w)
  }, else_branch = else () => (float[2,3] o2) {
    o2 = Neg (x)
  }>
}`)
	if err != nil {
		t.Fatal(err)
	}
	then := m.Graph.Nodes()[1].Subgraphs()[0]
	x, s, o := m.Graph.Value("x"), m.Graph.Value("s"), then.Value("o")
	if x == nil || s == nil || o == nil {
		t.Fatal("model has no x, s or then/o")
	}
	s.Type = x.Type // as shape inference types it
	in := &instance{ID: "then/t.0", sz: sizer{2, 3},
		Tensors: []*tensor{random("input", ir.Float, []int64{2, 3}, uniform("x", -2, 2)), expected("output", ir.Float, []int64{2, 3})},
		bound:   map[string]*ir.Value{"input": x, "output": o},
	}
	sub, err := in.extract(m, false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"Add", "Mul"}, sub.ops); diff != "" {
		t.Errorf("subgraph operators (-want +got):\n%s", diff)
	}
	var feeds []string
	for name := range sub.feeds {
		feeds = append(feeds, name)
	}
	sort.Strings(feeds)
	if diff := cmp.Diff([]string{"s", "x"}, feeds); diff != "" {
		t.Fatalf("subgraph inputs (-want +got):\n%s", diff)
	}
	orttest.RequireLib(t)
	_, got, err := in.runSubgraph(m, false)
	if err != nil {
		t.Fatal(err)
	}
	xs, ss, ys := sub.feeds["x"].Float64s(), sub.feeds["s"].Float64s(), got["o"].Float64s()
	w := []float64{0.5, -1, 2}
	for i := range ys {
		if want := float64(float32(float32(xs[i]+ss[i]) * float32(w[i%3]))); math.Abs(ys[i]-want) > 1e-6 {
			t.Errorf("o[%d] = %g, want (x + s) * w = %g", i, ys[i], want)
		}
	}
	if t.Failed() {
		t.Log(fmt.Sprint("feeds: x ", xs, " s ", ss))
	}
}
