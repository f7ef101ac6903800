package tests

import (
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/opsets"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// TestRaiseGroupNormORT: a GroupNormalization-18 (scale and bias per group) raised to 21
// (per channel) computes the same in ONNX Runtime.
func TestRaiseGroupNormORT(t *testing.T) {
	orttest.RequireLib(t)
	m := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 8}
	m.SetOpset("", 18)
	x, _ := m.Graph.AddInput("x", ir.TensorOf(ir.Float, ir.Sym("b"), ir.D(6), ir.D(4)))
	scale := m.Graph.NewConst("scale", ir.FloatTensor([]int64{3}, []float32{0.5, -2, 3}))
	bias := m.Graph.NewConst("bias", ir.FloatTensor([]int64{3}, []float32{1, 0.25, -4}))
	n := m.Graph.Add("GroupNormalization", []*ir.Value{x, scale, bias}, 1, "gn", ir.IntAttr("num_groups", 3))
	m.Graph.Outputs = append(m.Graph.Outputs, n.Output(0))
	n.Output(0).Type = ir.TensorOf(ir.Float, ir.Sym("b"), ir.D(6), ir.D(4))
	data := make([]float32, 2*6*4)
	for i := range data {
		data[i] = float32((i*7)%11) - 5 + float32(i)/16
	}
	inputs := map[string]*ndarray.Array{"x": ndarray.FromFloat32([]int64{2, 6, 4}, data)}
	want := ortcheck.RunModel(t, m, inputs, ort.OptDisabled)
	if why := opsets.Require(m, 21, 21, "the test", nil); why != "" {
		t.Fatal(why)
	}
	got := ortcheck.RunModel(t, m, inputs, ort.OptDisabled)
	ortcheck.CheckOutputs(t, "GroupNormalization raised to 21", want, got, 1e-5)
}
