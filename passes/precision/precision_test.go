package precision_test

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/passes/precision"
)

// overflowModel has activations beyond float16's 65504: h = x·W1 reaches about 1e5; it
// is scaled down (Div) before the next GEMM, goes through a Softmax, and an Exp of a
// tenth of it overflows float16 too.
func overflowModel() string {
	var w1, w2 []string
	for i := 0; i < 8; i++ {
		for j := 0; j < 8; j++ {
			w1 = append(w1, fmt.Sprint(30000*float64((i*3+j*5)%7-3)/3))
			w2 = append(w2, fmt.Sprint(float64((i*5+j*3)%11-5)/10))
		}
	}
	return `<ir_version: 8, opset_import: ["" : 13]>
overflow (float[2,8] x) => (float[2,8] y, float[2,8] p, float[2,8] z) <
  float[8,8] w1 = {` + strings.Join(w1, ", ") + `},
  float[8,8] w2 = {` + strings.Join(w2, ", ") + `},
  float k = {1000},
  float k2 = {10000}
> {
  [h_mm] h = MatMul (x, w1)
  [div] hs = Div (h, k)
  [out_mm] y = MatMul (hs, w2)
  [sm] p = Softmax <axis = -1> (h)
  [div2] ht = Div (h, k2)
  [exp] z = Exp (ht)
}`
}

// TestOverflow (numbers through ortcheck.Emulate): typed with calibration, the nodes that make or read the values beyond
// float16 stay float32 (the GEMM making h, the Div and the Softmax reading it, the Exp
// whose output overflows) and the outputs stay finite and close to float32; converting
// everything (data=none: no calibrated range) gives inf/NaN.
func TestOverflow(t *testing.T) {
	orttest.RequireLib(t)
	src := overflowModel()
	x := make([]float32, 16)
	for i := range x {
		x[i] = 2 * float32(math.Sin(float64(3*i+1))) // in [-2, 2]
	}
	in := map[string]*ndarray.Array{"x": ndarray.FromFloat32([]int64{2, 8}, x)}
	want := ortcheck.RunModel(t, ortcheck.Parse(t, src), in, ort.OptDisabled)
	if a := maxAbs(want["y"]) * 1000; !(a > 65504) {
		t.Fatalf("test model: |h| up to about %g, within float16", a)
	}

	m := ortcheck.Parse(t, src)
	ortcheck.Pipeline(t, m, "precision<type=fp16;data=random:8>", passes.All, &pass.Instrumentation{VerifyEach: true})
	kept := map[string]bool{}
	for _, n := range m.Graph.Nodes() {
		if why, ok := n.Meta(precision.MarkKey); ok {
			kept[n.Name] = true
			t.Logf("%s: %s", n.Name, why)
		}
	}
	for _, name := range []string{"h_mm", "div", "sm", "div2", "exp"} {
		if !kept[name] {
			t.Errorf("%s runs in float16; it makes or reads a value beyond float16", name)
		}
	}
	if kept["out_mm"] {
		t.Errorf("out_mm stays float32; its input is in range")
	}
	if w := m.Graph.Initializer("w2"); w == nil || w.DType != ir.Float16 {
		t.Errorf("w2 (read by a float16 GEMM only) is not float16")
	}
	got := ortcheck.RunModel(t, emulate(t, m), in, ort.OptDisabled)
	for name, w := range want {
		g := got[name]
		if n := nonFinite(g); n > 0 {
			t.Errorf("output %s: %d non-finite values", name, n)
		}
		cos, err := ndarray.CosineSimilarity(w, g)
		if err != nil || !(cos > 0.999) {
			t.Errorf("output %s: cosine %.6f to float32 (%v)", name, cos, err)
		}
	}

	all := ortcheck.Parse(t, src)
	ortcheck.Pipeline(t, all, "precision<type=fp16;data=none>", passes.All, &pass.Instrumentation{VerifyEach: true})
	bad := ortcheck.RunModel(t, emulate(t, all), in, ort.OptDisabled)
	total := 0
	for _, name := range []string{"y", "p", "z"} {
		total += nonFinite(bad[name])
	}
	if total == 0 {
		t.Errorf("converting everything kept the outputs finite; the model does not overflow float16")
	}
	t.Logf("everything in float16: %d non-finite output values", total)
}

// emulate rounds every float16 node's outputs explicitly (ortcheck.Emulate): ONNX
// Runtime's CPU provider would compute float16 nodes without kernels in float32 and skip
// the overflow between them.
func emulate(t *testing.T, m *ir.Model) *ir.Model {
	t.Helper()
	e, err := ortcheck.Emulate(m, ir.Float16)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func nonFinite(a *ndarray.Array) int {
	n := 0
	for _, v := range a.Float64s() {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			n++
		}
	}
	return n
}

func maxAbs(a *ndarray.Array) float64 {
	m := 0.0
	for _, v := range a.Float64s() {
		m = math.Max(m, math.Abs(v))
	}
	return m
}
