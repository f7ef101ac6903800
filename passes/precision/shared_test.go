package precision

import (
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/quant/calib"
)

// TestSharedDQRange: the range sharedRange gives a DequantizeLinear output from the
// float range its QuantizeLinear reads (int8 rounding, int8 saturation at +127 and
// -128, float8e4m3fn saturation at 448) and from a per-channel int8 weight is the one
// ONNX Runtime's calibration of the quantized model measures, to the bit.
func TestSharedDQRange(t *testing.T) {
	orttest.RequireLib(t)
	m, err := text.Parse(`<ir_version: 9, opset_import: ["" : 19]>
g (float[16,32] x) => (float[16,32] sat, float[16,32] fine, float[16,32] f8, float[2,3] w) <
  float s1 = {0.01}, int8 z1 = {0},
  float s2 = {0.1}, int8 z2 = {0},
  float s3 = {0.001}, float8e4m3fn z3 = {0},
  int8[2,3] wq = {-128, 5, 127, 90, -7, 3}, float[3] ws = {0.5, 0.25, 0.125}, int8[3] wz = {0, 0, 0}
> {
  q1 = QuantizeLinear (x, s1, z1)
  sat = DequantizeLinear (q1, s1, z1)
  q2 = QuantizeLinear (x, s2, z2)
  fine = DequantizeLinear (q2, s2, z2)
  q3 = QuantizeLinear (x, s3, z3)
  f8 = DequantizeLinear (q3, s3, z3)
  w = DequantizeLinear <axis = 1> (wq, ws, wz)
}`)
	if err != nil {
		t.Fatal(err)
	}
	const data = "random:4:3"
	xs, err := calib.CollectModel(m, []string{"x"}, data, 0, calib.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sh := calib.NewShared(m, xs, data, 0)
	outs := []string{"sat", "fine", "f8", "w"}
	got, err := calib.CollectModel(m, outs, data, 0, calib.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if h := xs.Tensors["x"]; !(h.AbsMax/0.01 > 128 && h.AbsMax/0.001 > 448) {
		t.Fatalf("x's range %g does not saturate the test's scales", h.AbsMax)
	}
	for _, name := range outs {
		r, ok := sharedRange(sh, m.Graph.Value(name))
		h := got.Tensors[name]
		if !ok || !r.known || r.abs != h.AbsMax || r.max != h.Max {
			t.Errorf("%s: derived |max| %g max %g (%v), ORT measures %g %g", name, r.abs, r.max, ok, h.AbsMax, h.Max)
		}
	}
	if v := m.Graph.Value("x"); v.Type.DType != ir.Float {
		t.Fatal("x")
	}
}
