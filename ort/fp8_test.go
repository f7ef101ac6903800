package ort_test

import (
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// TestFP8ExtraOutputsAtBasic: a session of in-memory bytes with extra outputs (whose
// types the bytes do not declare, so ORT is asked through a temporary session) opens at
// the level asked for. At ORT's default level its CPU provider fuses these FP8 Q/DQ
// around a float32 MatMul into an integer operator that takes no float8 and refuses
// the graph (microsoft/onnxruntime#22269); at basic the model runs.
func TestFP8ExtraOutputsAtBasic(t *testing.T) {
	orttest.RequireLib(t)
	m, err := text.Parse(`<ir_version: 9, opset_import: ["" : 19]>
g (float[2,4] x) => (float[2,3] y) <
  float s = {0.01},
  float8e4m3fn z = {0},
  float8e4m3fn[4,3] w = {56, 64, 68, 72, 74, 76, 78, 80, 81, 82, 83, 84},
  float[3] ws = {0.01, 0.02, 0.03},
  float8e4m3fn[3] wz = {0, 0, 0}
> {
  xq = QuantizeLinear (x, s, z)
  xd = DequantizeLinear (xq, s, z)
  wd = DequantizeLinear <axis = 1> (w, ws, wz)
  y = MatMul (xd, wd)
}`)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ir.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSessionFromBytes(b, ort.Options{OptLevel: ort.OptBasic, ExtraOutputs: []string{"xd"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Run(map[string]*ndarray.Array{"x": ndarray.FromFloat32([]int64{2, 4}, []float32{1, 0.5, -0.25, 0.125, 0, 1, 2, 3})})
	if err != nil {
		t.Fatal(err)
	}
	x := []float32{1, 0.5, -0.25, 0.125, 0, 1, 2, 3}
	for i, got := range out["xd"].Float32s() {
		if want := ir.Float8E4M3FNToFloat32(ir.Float32ToFloat8E4M3FN(x[i]/0.01, true)) * 0.01; got != want {
			t.Errorf("xd[%d] = %g, want %g", i, got, want)
		}
	}
	if out["y"] == nil {
		t.Errorf("no y")
	}
}
