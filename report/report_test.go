package report

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/qdq"
	"github.com/qcc-dev/qcc/quant/calib"
)

// TestAmax: the range a scale stands for depends on the type and the zero point.
func TestAmax(t *testing.T) {
	zp := func(dt ir.DataType, b byte) *ir.Value { return &ir.Value{Const: ir.NewTensor(dt, nil, []byte{b})} }
	for _, tc := range []struct {
		dt   ir.DataType
		zp   *ir.Value
		want float64
	}{
		{ir.Int8, zp(ir.Int8, 0), 127},
		{ir.Int8, nil, 127},
		{ir.Uint8, zp(ir.Uint8, 128), 128},
		{ir.Uint8, zp(ir.Uint8, 0), 255},
		{ir.Float8E4M3FN, nil, 448},
	} {
		if got := amax(0.5, tc.dt, tc.zp); got != 0.5*tc.want {
			t.Errorf("%v: amax %g, want %g", tc.dt, got, 0.5*tc.want)
		}
	}
}

// TestReduce: merging bins keeps every sample and the range the bins cover.
func TestReduce(t *testing.T) {
	h := calib.NewHistogram(2048)
	v := make([]float32, 10000)
	for i := range v {
		v[i] = float32(math.Sin(float64(i))) * 3
	}
	h.Add(v)
	r := reduce(h)
	var n int64
	for _, c := range r.Bins {
		n += c
	}
	if n != h.Count || len(r.Bins) > histBins || r.Width*float64(len(r.Bins)) < h.AbsMax {
		t.Errorf("%d bins of width %g hold %d of %d samples up to %g", len(r.Bins), r.Width, n, h.Count, h.AbsMax)
	}
}

// TestBuildSmall: a quantized MatMul reads as int8, the quantizers as q/dq, shape
// arithmetic as index; the summary counts the pair and the weight.
func TestBuildSmall(t *testing.T) {
	m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13]>
g (float[2,4] x) => (float[2,3] y, int64[2] s) <int8[4,3] w = {1,2,3,4,5,6,7,8,9,10,11,12}, float[3] ws = {0.1, 0.1, 0.1}, int8[3] wz = {0,0,0}, float xs = {0.05}, int8 xz = {0}> {
  xq = QuantizeLinear (x, xs, xz)
  xd = DequantizeLinear (xq, xs, xz)
  wd = DequantizeLinear <axis = 1> (w, ws, wz)
  y = MatMul (xd, wd)
  s = Shape (y)
}
`)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Build(m, nil, m.Graph.NumNodes())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(r.Classes, " ") != "q/dq q/dq q/dq int8 index" {
		t.Errorf("classes %q", r.Classes)
	}
	s := r.Summary
	if s.QDQ != 1 || s.Activations != 1 || s.Weights != 1 || s.Regions["int8"] != 1 {
		t.Errorf("summary %+v", s)
	}
	if len(r.Tensors) != 2 || r.Tensors[0].Kind != "activation" || math.Abs(r.Tensors[0].Amax-0.05*127) > 1e-6 || r.Tensors[1].Channels != 3 {
		t.Errorf("tensors %+v", r.Tensors)
	}
	var b strings.Builder
	r.WriteSummary(&b)
	if !strings.Contains(b.String(), "1 activation Q/DQ pairs on 1 tensors, 1 weights") {
		t.Errorf("summary text:\n%s", b.String())
	}
}

// TestLayerErrorsFromReport: qdq's error report becomes one chart entry per layer, its
// largest block error, in layer order; and -stats counts the GEMMs by output type.
func TestLayerErrorsFromReport(t *testing.T) {
	m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13]>
g (float[2,4] x) => (float[2,3] y) <float[4,3] w = {1,2,3,4,5,6,7,8,9,10,11,12}> {
  y = MatMul (x, w)
}
`)
	if err != nil {
		t.Fatal(err)
	}
	er := &qdq.ErrorReport{Blocks: []qdq.BlockError{
		{Block: "attention.1", Layer: 1, RelError: 0.02}, {Block: "ffn.1", Layer: 1, RelError: 0.05},
		{Block: "layernorm.0", Layer: -1, RelError: 0.01}, {Block: "ffn.0", Layer: 0, RelError: 0.03},
	}}
	rep := &pass.Report{Stats: []pass.Stat{{Pass: "qdq", Data: []any{er}}}}
	r, err := Build(m, rep, 1)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range r.LayerErrors {
		got = append(got, fmt.Sprintf("%d:%g", e.Layer, e.Value))
	}
	if strings.Join(got, " ") != "-1:0.01 0:0.03 1:0.05" {
		t.Errorf("layer errors %v", got)
	}
	if r.Summary.GEMMs["fp32"] != 1 {
		t.Errorf("GEMMs %v", r.Summary.GEMMs)
	}
	var b strings.Builder
	r.WriteSummary(&b)
	if !strings.Contains(b.String(), "MatMul/Gemm  fp32 1 by output type") {
		t.Errorf("summary:\n%s", b.String())
	}
}
