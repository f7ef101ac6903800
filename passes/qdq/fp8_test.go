package qdq

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
)

// TestFP8RoundingMatchesORT: the float8e4m3fn rounding qcc quantizes weights with
// (ir.Float32ToFloat8E4M3FN after a float32 division, as in quantizeWeight) gives what
// ONNX Runtime's QuantizeLinear-19 gives, on every code, every midpoint between two
// codes (ties to even), values just off them, subnormals, values beyond 448 (saturated)
// and random values, at two scales.
func TestFP8RoundingMatchesORT(t *testing.T) {
	orttest.RequireLib(t)
	var xs []float32
	for c := 0; c < 0x7e; c++ {
		lo, hi := ir.Float8E4M3FNToFloat32(uint8(c)), ir.Float8E4M3FNToFloat32(uint8(c+1))
		mid := (lo + hi) / 2
		xs = append(xs, lo, mid, math.Nextafter32(mid, 0), math.Nextafter32(mid, 1000))
	}
	xs = append(xs, 448, 460, 464, 470, 1e6, float32(math.Inf(1)))
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		xs = append(xs, float32(math.Exp(r.Float64()*16-10)))
	}
	for _, x := range append([]float32(nil), xs...) {
		xs = append(xs, -x)
	}
	for _, scale := range []float32{1, 0.37} {
		src := fmt.Sprintf(`<ir_version: 9, opset_import: ["" : 19]>
g (float[%d] x) => (float[%d] y) <
  float s = {%g},
  float8e4m3fn z = {0}
> {
  q = QuantizeLinear (x, s, z)
  y = DequantizeLinear (q, s, z)
}`, len(xs), len(xs), scale)
		m := ortcheck.Parse(t, src)
		got := ortcheck.RunModel(t, m, map[string]*ndarray.Array{"x": ndarray.FromFloat32([]int64{int64(len(xs))}, xs)}, ort.OptDisabled)["y"].Float32s()
		bad := 0
		for i, x := range xs {
			want := ir.Float8E4M3FNToFloat32(ir.Float32ToFloat8E4M3FN(x/scale, true)) * scale
			if got[i] != want && bad < 10 {
				t.Errorf("scale %g: x = %g (x/scale %g): ORT %g, qcc %g", scale, x, x/scale, got[i], want)
				bad++
			}
		}
	}
}

// TestFP8Placement: dtype=fp8 quantizes the FFN's activations per tensor and its weights
// per channel as float8e4m3fn initializers, raises the opset to 19, passes qdqcheck, and
// ONNX Runtime's outputs stay close to the float model's.
func TestFP8Placement(t *testing.T) {
	orttest.RequireLib(t)
	m := parse(t, ffn)
	float := ortcheck.Parse(t, ffn)
	if _, err := runPipeline(t, m, "qdq<dtype=fp8;min-gemm=2;data=random:4>"); err != nil {
		t.Fatal(err)
	}
	if v := m.Opset(""); v != 19 {
		t.Errorf("opset %d, want 19", v)
	}
	var q, wq int
	for _, n := range m.Graph.Nodes() {
		switch n.OpType {
		case "QuantizeLinear":
			q++
			if zp := n.Input(2).Const; zp == nil || zp.DType != ir.Float8E4M3FN {
				t.Errorf("%s: zero point %v, want float8e4m3fn", n.Name, n.Input(2))
			}
		case "DequantizeLinear":
			if c := n.Input(0).Const; c != nil {
				wq++
				if c.DType != ir.Float8E4M3FN || !strings.HasSuffix(n.Input(0).Name, "_fp8") {
					t.Errorf("%s: weight %s is %s", n.Name, n.Input(0).Name, c.DType)
				}
			}
		}
	}
	if q != 2 || wq != 2 {
		t.Errorf("%d activation pairs, %d fp8 weights; want 2 and 2", q, wq)
	}
	if err := qdqcheck.Check(m); err != nil {
		t.Error(err)
	}
	in := map[string]*ndarray.Array{"x": ndarray.FromFloat32([]int64{2, 3, 4}, []float32{
		0.5, -1, 0.25, 2, -0.75, 1.5, 0.1, -0.3, 1, 1, -2, 0.6,
		-0.2, 0.9, -1.1, 0.05, 0.4, -0.6, 1.3, -0.8, 0.7, 0, 1.8, -1.4})}
	want := ortcheck.RunModel(t, float, in, ort.OptDisabled)["y"]
	for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptBasic} {
		got := ortcheck.RunModel(t, m, in, level)["y"]
		cos, err := ndarray.CosineSimilarity(want, got)
		if err != nil || !(cos >= 0.99) {
			t.Errorf("level %v: cosine %.5f to float (%v)", level, cos, err)
		}
		if d := ortcheck.MaxDiff(t, map[string]*ndarray.Array{"y": want}, map[string]*ndarray.Array{"y": got}); d == 0 {
			t.Errorf("level %v: no difference from float: nothing quantized?", level)
		}
	}
}
