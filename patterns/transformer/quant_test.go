package transformer_test

import (
	"fmt"
	"testing"

	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/shape"
)

// qlinGraph is one quantized linear layer y = DQ(Q(x))·DQ(w) + b with the activation
// pair, the weight's DequantizeLinear and the bias written by the caller.
func qlinGraph(inits, body string) string {
	return fmt.Sprintf(`<ir_version: 8, opset_import: ["" : 13]>
g (float[batch,seq,4] x) => (float[batch,seq,2] y) <
  int8[4,2] w = {12, -7, 100, 3, -127, 64, 5, 9},
  float[2] ws = {0.01, 0.02},
  int8[2] wz = {0, 0},
  float[4] ws4 = {0.01, 0.02, 0.03, 0.04},
  int8[4] wz4 = {0, 0, 0, 0},
  float[2] b = {0.5, -0.25},
  float xs = {0.05},
  float xs2 = {0.06},
  int8 xz = {0},
  float[4] xs4 = {0.05, 0.05, 0.05, 0.05},
  int8[4] xz4 = {0, 0, 0, 0}%s
> {
%s
}`, inits, body)
}

// TestQLinearRefusals: each reason QLinearRules give for leaving a Q/DQ MatMul alone, and
// the MatMul left as it was; the target onnx and provider any leave every form alone.
func TestQLinearRefusals(t *testing.T) {
	for _, c := range []struct {
		name, inits, body, why string
	}{
		{"weight per row", "", `
  xq = QuantizeLinear (x, xs, xz)
  xd = DequantizeLinear (xq, xs, xz)
  wd = DequantizeLinear <axis = 0> (w, ws4, wz4)
  mm = MatMul (xd, wd)
  y = Add (mm, b)`, "weight quantized along axis 0 with 4 scales, not per output column"},
		{"pair disagrees", "", `
  xq = QuantizeLinear (x, xs, xz)
  xd = DequantizeLinear (xq, xs2, xz)
  wd = DequantizeLinear <axis = 1> (w, ws, wz)
  mm = MatMul (xd, wd)
  y = Add (mm, b)`, "QuantizeLinear and DequantizeLinear of the activation disagree"},
		{"activation per axis", "", `
  xq = QuantizeLinear <axis = 2> (x, xs4, xz4)
  xd = DequantizeLinear <axis = 2> (xq, xs4, xz4)
  wd = DequantizeLinear <axis = 1> (w, ws, wz)
  y = MatMul (xd, wd)`, "activation quantized per axis"},
		{"scale not constant", "", `
  s = Identity (xs)
  xq = QuantizeLinear (x, s, xz)
  xd = DequantizeLinear (xq, s, xz)
  wd = DequantizeLinear <axis = 1> (w, ws, wz)
  y = MatMul (xd, wd)`, "QuantizeLinear scale is not constant"},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := qlinGraph(c.inits, c.body)
			m, err := text.Parse(src)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := shape.Infer(m); err != nil {
				t.Fatal(err)
			}
			rep, err := transformer.Fuse(m, nil, &transformer.Env{Model: m, Target: transformer.ORT, Provider: "cpu"})
			if err != nil {
				t.Fatal(err)
			}
			expectReason(t, refusalReasons(rep.Refusals), c.why)
			if n := rep.Ops["com.microsoft.MatMulIntegerToFloat"]; n != 0 {
				t.Errorf("%d MatMulIntegerToFloat made of a refused layer", n)
			}
		})
	}
	// A MatMul whose output is also read elsewhere keeps its bias Add: qlinear/plain.
	m, err := text.Parse(qlinGraph("", `
  xq = QuantizeLinear (x, xs, xz)
  xd = DequantizeLinear (xq, xs, xz)
  wd = DequantizeLinear <axis = 1> (w, ws, wz)
  mm = MatMul (xd, wd)
  a = Add (mm, b)
  y = Mul (a, mm)`))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := transformer.Fuse(m, nil, &transformer.Env{Model: m, Target: transformer.ORT, Provider: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops["com.microsoft.MatMulIntegerToFloat"] != 1 {
		t.Errorf("shared MatMul output: %v, want one MatMulIntegerToFloat (qlinear/plain)", rep.Ops)
	}
	adds := 0
	for _, n := range m.Graph.Nodes() {
		if n.OpType == "Add" {
			adds++
		}
	}
	if adds != 1 {
		t.Errorf("%d Adds left, want the bias Add kept", adds)
	}

	// The accepted form, for contrast: provider=cpu rewrites it, the others do not.
	src := qlinGraph("", `
  xq = QuantizeLinear (x, xs, xz)
  xd = DequantizeLinear (xq, xs, xz)
  wd = DequantizeLinear <axis = 1> (w, ws, wz)
  mm = MatMul (xd, wd)
  y = Add (mm, b)`)
	for _, env := range []transformer.Env{{Target: transformer.ORT, Provider: "cpu"}, {Target: transformer.ORT}, {Target: transformer.ONNX, Provider: "cpu"}} {
		m, err := text.Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		env := env
		env.Model = m
		rep, err := transformer.Fuse(m, nil, &env)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		if env.Target == transformer.ORT && env.Provider == "cpu" {
			want = 1
		}
		if got := rep.Ops["com.microsoft.MatMulIntegerToFloat"]; got != want {
			t.Errorf("target %s provider %q: %d MatMulIntegerToFloat, want %d", env.Target, env.Provider, got, want)
		}
	}
}
