package tests

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
)

// TestProbeHalf: each probe form exported in float16 (the export of model.half(), made by
// ortcheck.Halve from its newest-opset file) fuses as its float32 export does, under both
// targets and idempotently, and the fused model's float16 outputs are as close to the
// float32 reference as the unfused float16 model's, at the positions the attention mask
// keeps: at most twice its error plus 1e-3.
// Both run through ortcheck.Emulate, which computes every float16 node in float32 and
// rounds its outputs, as a GPU kernel stores them (ONNX Runtime's CPU provider would
// otherwise skip float16 roundings between nodes it lacks kernels for, and refuses some of
// the unfused float16 graphs outright); the fused model also runs as it is.
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
			inputs := p.sidecar(t, "inputs")
			want := ortcheck.Run(t, p.path, inputs, ort.OptDisabled)
			half, err := ortcheck.Halve(ortcheck.Load(t, p.path))
			if err != nil {
				t.Fatal(err)
			}
			sub := filepath.Join(dir, p.name)
			os.MkdirAll(sub, 0o755)
			halfPath := ortcheck.Save(t, half, sub, "half.onnx")
			halfIn := halveInputs(inputs)
			refErr := halfError(t, want, emulated(t, half, halfIn, ort.OptDisabled), inputs)
			gap, inGaps := probeGaps[p.Form]
			for i, pl := range probePipelines {
				out := filepath.Join(sub, fmt.Sprint(i))
				os.MkdirAll(out, 0o755)
				_, fused, fusedPath := compile(t, halfPath, pl.spec, out)
				// Natively, the fused operators' type constraints hold (Emulate would hide a
				// float32 bias beside float16 Q): the model loads, runs and stays finite.
				native := ortcheck.Run(t, fusedPath, halfIn, ort.OptDisabled)
				for name, a := range native {
					for _, x := range a.Float64s() {
						if math.IsNaN(x) || math.IsInf(x, 0) {
							t.Fatalf("%s: output %q is not finite when ORT runs the float16 operators", pl.spec, name)
						}
					}
				}
				for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptAll} {
					got := halfError(t, want, emulated(t, fused, halfIn, level), inputs)
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
				if got != p.want() && !inGaps {
					t.Errorf("%s: fused %v in float16, the architecture has %v", pl.spec, got, p.want())
				}
				rows = append(rows, fmt.Sprintf("%-36s %-32s fused %v of %v; unfused error %.2g", p.name, pl.spec, got, p.want(), refErr))
			}
			if inGaps {
				t.Logf("gap: %s", gap)
			}
		})
	}
	sort.Strings(rows)
	t.Logf("float16 probes:\n%s", strings.Join(rows, "\n"))
}

// emulated runs m's float16 computation through ortcheck.Emulate.
func emulated(t *testing.T, m *ir.Model, inputs map[string]*ndarray.Array, level ort.OptLevel) map[string]*ndarray.Array {
	t.Helper()
	e, err := ortcheck.Emulate(m, ir.Float16)
	if err != nil {
		t.Fatal(err)
	}
	return ortcheck.RunModel(t, e, inputs, level)
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
