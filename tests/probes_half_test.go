package tests

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
)

// TestProbeHalf: each probe form exported in float16 (the export of model.half(), made by
// ortcheck.Halve from its newest-opset file) fuses as its architecture says, as in
// float32 (checkHalf).
func TestProbeHalf(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	newest := map[string]*probe{}
	for _, p := range loadProbes(t) {
		if q := newest[p.Form]; q == nil || p.Opset > q.Opset {
			newest[p.Form] = p
		}
	}
	forms := make([]string, 0, len(newest))
	for f := range newest {
		forms = append(forms, f)
	}
	sort.Strings(forms)
	var rows []string
	for _, form := range forms {
		p := newest[form]
		t.Run(p.name, func(t *testing.T) {
			want := func(i int) (probeCounts, bool) {
				if gap, ok := probeGaps[p.Form]; ok {
					t.Logf("gap: %s", gap) // counts as far as float32 gets, not checked
					return probeCounts{}, false
				}
				return p.wantFor(probePipelines[i].spec), true
			}
			rows = append(rows, checkHalf(t, p.path, p.sidecar(t, "inputs"), filepath.Join(dir, p.name), want)...)
		})
	}
	sort.Strings(rows)
	t.Logf("float16 probes:\n%s", strings.Join(rows, "\n"))
}

// TestCorpusHalf: every corpus model exported in float16 fuses at least what its float32
// export does (checkHalf), DeBERTa's disentangled attention and the embeddings included.
// fold computes float16 matmuls and reductions on constants as it does float32 ones
// (passes/fold's TestFoldHalfCorpusORT), so the LayerNorm of DeBERTa-v2's relative
// embeddings folds away in both and the counts match.
func TestCorpusHalf(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	var rows []string
	for _, cm := range corpus.Models(t, "", "trained") {
		t.Run(cm.Name, func(t *testing.T) {
			sub := filepath.Join(dir, cm.Name)
			os.MkdirAll(sub, 0o755)
			want := func(i int) (probeCounts, bool) {
				_, out, _ := compile(t, cm.Path, probePipelines[i].spec, sub)
				return fusedCounts(recognisedAll(t, out)), false
			}
			rows = append(rows, checkHalf(t, cm.Path, ortcheck.Inputs(t, cm), sub, want)...)
		})
	}
	sort.Strings(rows)
	t.Logf("float16 corpus:\n%s", strings.Join(rows, "\n"))
}

// checkHalf exports the float32 model at path in float16 (ortcheck.Halve) and, for each
// probe pipeline, checks that the fused float16 model has want's block counts (exactly,
// when want says so, else at least), fuses idempotently, runs natively in ONNX Runtime with finite
// outputs, and is as close to the float32 reference as the unfused float16 model, at the
// positions the attention mask keeps: at most twice its error plus 1e-3. Both run through
// ortcheck.Emulate, which computes every float16 node in float32 and rounds its outputs, as
// a GPU kernel stores them (ONNX Runtime's CPU provider would otherwise skip float16
// roundings between nodes it lacks kernels for, and refuses some unfused float16 graphs
// outright). It returns a line per pipeline for the log.
func checkHalf(t *testing.T, path string, inputs map[string]*ndarray.Array, dir string, want func(pipeline int) (probeCounts, bool)) []string {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	ref := ortcheck.Run(t, path, inputs, ort.OptDisabled)
	half, err := ortcheck.Halve(ortcheck.Load(t, path))
	if err != nil {
		t.Fatal(err)
	}
	halfPath := ortcheck.Save(t, half, dir, "half.onnx")
	halfIn := halveInputs(inputs)
	refErr := halfError(t, ref, ortcheck.RunEmulated(t, half, ir.Float16, halfIn, ort.OptDisabled), inputs)
	name := strings.TrimSuffix(filepath.Base(path), ".onnx")
	var rows []string
	for i, pl := range probePipelines {
		out := filepath.Join(dir, fmt.Sprint(i))
		os.MkdirAll(out, 0o755)
		_, fused, fusedPath := compile(t, halfPath, pl.spec, out)
		// Natively, the fused operators' type constraints hold (Emulate would hide a
		// float32 bias beside float16 Q): the model loads, runs and stays finite.
		for name, a := range ortcheck.Run(t, fusedPath, halfIn, ort.OptDisabled) {
			for _, x := range a.Float64s() {
				if math.IsNaN(x) || math.IsInf(x, 0) {
					t.Fatalf("%s: output %q is not finite when ORT runs the float16 operators", pl.spec, name)
				}
			}
		}
		fusedErr := 0.0
		for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptAll} {
			got := halfError(t, ref, ortcheck.RunEmulated(t, fused, ir.Float16, halfIn, level), inputs)
			fusedErr = math.Max(fusedErr, got)
			if bound := 2*refErr + 1e-3; got > bound {
				t.Errorf("%s, ORT level %d: float16 error %.3g to the float32 reference, unfused %.3g (bound %.3g)", pl.spec, level, got, refErr, bound)
			}
		}
		before := ortcheck.Text(t, fused)
		ortcheck.Pipeline(t, fused, pl.again, passes.All, &pass.Instrumentation{VerifyEach: true})
		if after := ortcheck.Text(t, fused); after != before {
			t.Errorf("%s: %s again changes the model (not idempotent):\n%s", pl.spec, pl.again, firstDiff(before, after, 3))
		}
		got := fusedCounts(recognisedAll(t, fused))
		w, exact := want(i)
		if exact && got != w || got.attention < w.attention || got.norms < w.norms || got.activations < w.activations || got.rotaries < w.rotaries {
			t.Errorf("%s: fused %v in float16, want %v", pl.spec, got, w)
		}
		rows = append(rows, fmt.Sprintf("%-36s %-32s fused %v of %v; float16 error %.2g fused, %.2g unfused", name, pl.spec, got, w, fusedErr, refErr))
	}
	return rows
}

// halveInputs rounds the float32 inputs to float16, as a float16 model takes them.
func halveInputs(in map[string]*ndarray.Array) map[string]*ndarray.Array {
	out := map[string]*ndarray.Array{}
	for k, a := range in {
		if a.DType == ndarray.Float32 {
			a = ndarray.FromFloat16(a.Shape, a.Float32s())
		}
		out[k] = a
	}
	return out
}

// halfError is the largest difference between a float32 reference output and the same
// output of a float16 run, over the positions the attention mask keeps: a padded query
// whose every key is masked weighs them alike in a float16 graph only because score +
// finfo(float16).min rounds to one value for every key, which no fused kernel (computing
// the scores in float32, as GPU kernels do) repeats; what it outputs there is unused.
// A missing output or another shape fails t.
func halfError(t *testing.T, want, got map[string]*ndarray.Array, inputs map[string]*ndarray.Array) float64 {
	t.Helper()
	var keep []float64 // [B, S] of the attention mask, when there is one
	var ks []int64
	if a := inputs["attention_mask"]; a != nil && len(a.Shape) == 2 {
		keep, ks = a.Float64s(), a.Shape
	}
	worst := 0.0
	for name, w := range want {
		g := got[name]
		if g == nil {
			t.Fatalf("output %q missing", name)
		}
		if w.DType == ndarray.Float32 && g.DType == ndarray.Float16 {
			g = ndarray.FromFloat32(g.Shape, g.Float32s())
		}
		if keep != nil && len(w.Shape) >= 2 && w.Shape[0] == ks[0] && w.Shape[1] == ks[1] && w.DType == ndarray.Float32 {
			x, y := w.Float32s(), g.Float32s()
			inner := len(x) / len(keep)
			for i, k := range keep {
				if k == 0 {
					for j := i * inner; j < (i+1)*inner && j < len(y); j++ {
						y[j] = x[j]
					}
				}
			}
			g = ndarray.FromFloat32(g.Shape, y)
		}
		d, err := ndarray.MaxAbsDiff(w, g)
		if err != nil {
			t.Fatalf("output %q: %v", name, err)
		}
		worst = math.Max(worst, d)
	}
	return worst
}
