package cuda

import (
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// probeModels hold the forms the corpus lacks: causal com.microsoft.Attention (head
// size 5, hidden 10, an explicit scale 0, which means the default), grouped-query Attention-23 (4 query heads over 2 key/value heads),
// causal Attention-23 (head size 6, hidden 12), and rows of 10 (not a multiple of 8)
// for LayerNorm, skip+LayerNorm, BiasGelu and INT8 Q/DQ with power-of-two scales.
var probeModels = []struct{ name, path string }{
	{"probe-causal-ort", "testdata/probe-causal-ort.onnx.txt"},
	{"probe-gqa", "testdata/probe-gqa.onnx.txt"},
	{"probe-causal23", "testdata/probe-causal23.onnx.txt"},
	{"probe-edges", "testdata/probe-edges.onnx.txt"},
}

// errs is how far the emulation is from ONNX Runtime on one output.
type errs struct {
	maxAbs, maxRel float64
	bad, n         int
	first          string
}

// compareOutputs compares the emulated outputs with ONNX Runtime's under the
// instance's tolerance, as check.cuh's Matches does on a GPU: a NaN is only equal to
// a NaN, an infinity only to itself.
func compareOutputs(in *instance, got, want map[string][]float64) map[string]*errs {
	res := map[string]*errs{}
	atol, rtol := in.Tol[in.Elem][0], in.Tol[in.Elem][1]
	for param, w := range want {
		e := &errs{n: len(w)}
		res[param] = e
		g := got[param]
		if len(g) != len(w) {
			e.bad, e.first = len(w), "no emulated output"
			continue
		}
		for i := range w {
			ok := math.IsNaN(w[i]) && math.IsNaN(g[i])
			if math.IsInf(w[i], 0) || math.IsInf(g[i], 0) {
				ok = g[i] == w[i]
			} else if !ok {
				d := abs(g[i] - w[i])
				ok = d <= atol+rtol*abs(w[i])
				if !math.IsNaN(d) {
					e.maxAbs = math.Max(e.maxAbs, d)
					e.maxRel = math.Max(e.maxRel, d/math.Max(abs(w[i]), 1e-3))
				}
			}
			if !ok {
				if e.bad == 0 {
					e.first = fmt.Sprintf("%s[%d]: emulated %g, ONNX Runtime %g", param, i, g[i], w[i])
				}
				e.bad++
			}
		}
	}
	return res
}

// tally keeps the largest errors per launcher, a float block's run in half (the
// outputs emulateInstance names "param in half") apart from its run in float.
func tally(worst map[string]*errs, in *instance, param string, e *errs) {
	key := strings.TrimPrefix(in.Kernel.Launcher, "qcc::")
	if _, elem, ok := strings.Cut(param, " in "); ok {
		key += " in " + elem
	}
	w := worst[key]
	if w == nil {
		w = &errs{}
		worst[key] = w
	}
	w.maxAbs, w.maxRel, w.n = math.Max(w.maxAbs, e.maxAbs), math.Max(w.maxRel, e.maxRel), w.n+1
}

func sortedKeys(m map[string]*errs) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// emulateInstance runs the instance's reference (the model's subgraph in ONNX Runtime)
// and the emulation of its kernel on the same inputs, and compares them.
// A float block is also emulated in half, as check.cu runs it (instance.checked), under
// half's tolerance against the same float outputs, unless an input leaves half's range
// (check.cuh skips that case: Representable); those outputs are named "param in half".
func emulateInstance(t *testing.T, m *ir.Model, in *instance) map[string]*errs {
	t.Helper()
	a, want := referenceValues(t, m, in)
	res := compareOutputs(in, emulate(t, in, a), want)
	for _, e := range in.checked() {
		if in.Elem != elemFloat || e != elemHalf || !representable(in, a, e) {
			continue
		}
		v := *in
		v.Elem = e
		for param, er := range compareOutputs(&v, emulate(t, &v, a), want) {
			res[param+" in "+elemNames[e]] = er
		}
	}
	return res
}

// representable reports whether every finite value of the instance's typed inputs stays
// finite in element type e.
func representable(in *instance, a map[string][]float64, e int) bool {
	rnd := elemRound(e)
	if rnd == nil { // float holds every float
		return true
	}
	for _, p := range in.Kernel.Params {
		if p.Elem != "T" || p.Out {
			continue
		}
		for _, x := range a[p.Name] {
			if !math.IsInf(x, 0) && !math.IsNaN(x) && math.IsInf(rnd(x), 0) {
				return false
			}
		}
	}
	return true
}

// referenceValues runs the instance's reference and returns its inputs and outputs by
// parameter, as float64.
func referenceValues(t *testing.T, m *ir.Model, in *instance) (inputs, outputs map[string][]float64) {
	t.Helper()
	ref, err := in.reference(m)
	if err != nil {
		t.Fatalf("%s: %v", in.ID, err)
	}
	inputs, outputs = map[string][]float64{}, map[string][]float64{}
	for p, arr := range ref.Inputs {
		inputs[p] = arr.Float64s()
	}
	for p, arr := range ref.Outputs {
		outputs[p] = arr.Float64s()
	}
	return inputs, outputs
}

// TestEmulation is the oracle: for every kernel instance of the golden, probe and corpus
// models, the Go emulation of the kernel specialisation, run on check data, agrees with
// ONNX Runtime running the model's own subgraph for the block. It logs the largest
// errors per model.
func TestEmulation(t *testing.T) {
	orttest.RequireLib(t)
	models := append(append([]struct{ name, path string }{}, goldenModels...), probeModels...)
	for _, cm := range corpus.Models(t, "") {
		models = append(models, struct{ name, path string }{cm.Name, cm.Path})
	}
	for _, mm := range models {
		t.Run(mm.name, func(t *testing.T) {
			m := load(t, mm.path)
			p := planOf(t, m, filepath.Base(mm.path))
			if len(p.Instances) == 0 {
				t.Fatalf("no instances (skipped: %v)", p.Skipped)
			}
			worst := map[string]*errs{}
			for _, in := range p.Instances {
				for param, e := range emulateInstance(t, m, in) {
					if e.bad > 0 {
						t.Errorf("%s (%s): %d of %d elements of %s disagree; first %s", in.ID, in.Kernel.Name, e.bad, e.n, param, e.first)
					}
					tally(worst, in, param, e)
				}
			}
			var line []string
			for _, l := range sortedKeys(worst) {
				line = append(line, fmt.Sprintf("%s %.1e/%.1e", l, worst[l].maxAbs, worst[l].maxRel))
			}
			t.Logf("%d instances; max abs/rel error per kernel: %s", len(p.Instances), strings.Join(line, ", "))
		})
	}
}
