package qdqcheck_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
)

// model builds a text model: opset, policy metadata ("" for none), initializers and nodes
// over x: float[batch,seq,4].
func model(opset, policy, inits, nodes string) string {
	meta := ""
	if policy != "" {
		meta = `, metadata_props: ["qcc.qdq.policy": "` + policy + `"]`
	}
	return `<ir_version: 8, opset_import: ["" : ` + opset + `]` + meta + `>
g (float[batch,seq,4] x) => (float[batch,seq,4] y) <
  float s = {0.1},
  int8 z = {0},
  float[4] ws = {0.01, 0.02, 0.03, 0.04},
  int8[4] wz = {0, 0, 0, 0},
  int8[4,4] wi = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
  float[4,4] w = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}` + inits + `
> {
` + nodes + `
}
`
}

// quantizedMatMul is a correctly quantized y = x·W.
const quantizedMatMul = `
  [xq] xq = QuantizeLinear (x, s, z)
  [xd] xd = DequantizeLinear (xq, s, z)
  [wd] wd = DequantizeLinear <axis = 1> (wi, ws, wz)
  [mm] y = MatMul (xd, wd)`

// attention is a bare attention core on x: softmax(x·xᵀ)·x with quantized inputs.
const attention = `
  [t] xt = Transpose <perm = [0, 2, 1]> (x)
  [aq] aq = QuantizeLinear (x, s, z)
  [ad] ad = DequantizeLinear (aq, s, z)
  [bq] bq = QuantizeLinear (xt, s, z)
  [bd] bd = DequantizeLinear (bq, s, z)
  [scores] sc = MatMul (ad, bd)
  [softmax] p = Softmax <axis = -1> (sc)
  [pq] pq = QuantizeLinear (p, s, z)
  [pd] pd = DequantizeLinear (pq, s, z)
  [context] y = MatMul (pd, ad)`

// The TensorRT rules the messages cite (their text is checked once, here).
const (
	residualRule = `TensorRT guide: "quantize the residual input in skip connections", not the outputs of weighted layers, so the Add fuses into the GEMM's epilogue; an Add with an INT8 GEMM-side input and a float output forces a reformat ("non-weighted layers that have INT8 inputs also require INT8 outputs")`
	matmulRule   = `TensorRT guide: a MatMul runs in INT8 only when all its inputs are quantized ("quantize all inputs of weighted operations"; the same holds for the batched MatMuls of attention); one quantized input only adds a dequantization`
	interiorRule = `TensorRT guide: LayerNorm, Softmax and GELU are not fused with Q/DQ on their inputs and run in higher precision; quantize where a weighted op reads their output, not inside them`
	fp8Rule      = `TensorRT guide: an FP8 GEMM (MatMul, Gemm, Conv) needs both its inputs quantized to FP8, activations per tensor and weights per channel; an FP8 input beside a float or INT8 one is only dequantized`
	scoresRule   = `TensorRT guide: Q/DQ go on the inputs of the attention BMMs; the scores between Q·Kᵀ and the Softmax (scale, mask) stay in higher precision, and a pair there splits the fused attention`
)

// fp8Inits and fp8MatMul are quantizedMatMul in FP8 (float8e4m3fn bit patterns).
const fp8Inits = `,
  float8e4m3fn f8z = {0},
  float8e4m3fn[4] wf8z = {0, 0, 0, 0},
  float8e4m3fn[4,4] wf8 = {56, 64, 68, 72, 74, 76, 78, 80, 81, 82, 83, 84, 85, 86, 87, 88}`

const fp8MatMul = `
  [xq] xq = QuantizeLinear (x, s, f8z)
  [xd] xd = DequantizeLinear (xq, s, f8z)
  [wd] wd = DequantizeLinear <axis = 1> (wf8, ws, wf8z)
  [mm] y = MatMul (xd, wd)`

func TestCheck(t *testing.T) {
	cases := []struct {
		name  string
		model string
		want  []string // violations, "" for none
	}{
		{"clean", model("13", "linear", "", quantizedMatMul), nil},
		{"clean attention", model("13", "attention", "", attention), nil},
		{"no policy, nothing covered", model("13", "", "", `  [mm] y = MatMul (x, w)`), nil},
		{"unsupported op", model("13", "", ",\n  uint8 uz = {0}", `
  [dq] xq, xs, xz = DynamicQuantizeLinear (x)
  [mi] y = MatMulInteger (xq, wi, xz, z)`), []string{
			"dq: unsupported-op: DynamicQuantizeLinear is dynamic quantization; TensorRT accepts only QuantizeLinear/DequantizeLinear pairs",
			"mi: unsupported-op: MatMulInteger is an already-quantized operator; TensorRT accepts only QuantizeLinear/DequantizeLinear pairs",
		}},
		{"qlinearmatmul", model("13", "", "", `  [ql] y = QLinearMatMul (x, s, z, wi, s, z, s, z)`), []string{
			"ql: unsupported-op: QLinearMatMul is an already-quantized operator; TensorRT accepts only QuantizeLinear/DequantizeLinear pairs",
		}},
		{"uint8 zero point", model("13", "", ",\n  uint8 uz = {0}", `
  [xq] xq = QuantizeLinear (x, s, uz)
  [xd] xd = DequantizeLinear (xq, s, uz)
  [mm] y = MatMul (xd, w)`), []string{
			"xq: int8: zero point uz is uint8, not int8",
			"xd: int8: zero point uz is uint8, not int8",
		}},
		{"no zero point", model("13", "", "", `
  [xq] xq = QuantizeLinear (x, s)
  [xd] xd = DequantizeLinear (xq, s)
  [mm] y = MatMul (xd, w)`), []string{
			"xq: int8: no zero point: QuantizeLinear's output defaults to uint8; TensorRT needs int8 with zero point 0",
		}},
		{"nonzero zero point", model("13", "", ",\n  int8 z3 = {3}", `
  [xq] xq = QuantizeLinear (x, s, z3)
  [xd] xd = DequantizeLinear (xq, s, z3)
  [mm] y = MatMul (xd, w)`), []string{
			"xq: int8: zero point z3 holds 3, not 0: TensorRT quantization is symmetric",
			"xd: int8: zero point z3 holds 3, not 0: TensorRT quantization is symmetric",
		}},
		{"negative scale", model("13", "", ",\n  float neg = {-0.5}", `
  [xq] xq = QuantizeLinear (x, neg, z)
  [xd] xd = DequantizeLinear (xq, neg, z)
  [mm] y = MatMul (xd, w)`), []string{
			"xq: scale: scale neg holds -0.5: scales must be positive and finite",
			"xd: scale: scale neg holds -0.5: scales must be positive and finite",
		}},
		{"infinite weight scale", model("13", "", ",\n  float[4] infs = {0.1, inf, 0.1, 0.1}", `
  [wd] wd = DequantizeLinear <axis = 1> (wi, infs, wz)
  [mm] y = MatMul (x, wd)`), []string{
			"wd: scale: scale infs holds +Inf: scales must be positive and finite",
		}},
		{"computed scale", model("13", "", "", `
  [abs] sa = Abs (s)
  [xq] xq = QuantizeLinear (x, sa, z)
  [xd] xd = DequantizeLinear (xq, sa, z)
  [mm] y = MatMul (xd, w)`), []string{
			"xq: scale: scale sa is not a constant",
			"xd: scale: scale sa is not a constant",
		}},
		{"weight axis not the output channels", model("13", "", "", `
  [wd] wd = DequantizeLinear <axis = 0> (wi, ws, wz)
  [mm] y = MatMul (x, wd)`), []string{
			"wd: axis: axis 0 is not the output-channel axis 1 of mm's weight",
		}},
		{"gemm transB axis", model("13", "", "", `
  [x2] x2 = Reshape (x, shape)
  [wd] wd = DequantizeLinear <axis = 1> (wi, ws, wz)
  [gemm] y2 = Gemm <transB = 1> (x2, wd)
  [y] y = Reshape (y2, back)`), []string{
			"wd: axis: axis 1 is not the output-channel axis 0 of gemm's weight",
		}},
		{"scale length", model("13", "", ",\n  float[3] ws3 = {0.1, 0.1, 0.1},\n  int8[3] wz3 = {0, 0, 0}", `
  [wd] wd = DequantizeLinear <axis = 1> (wi, ws3, wz3)
  [mm] y = MatMul (x, wd)`), []string{
			"wd: axis: scale ws3 has 3 values for axis 1 of size 4",
		}},
		{"per-channel activation", model("13", "", "", `
  [xq] xq = QuantizeLinear <axis = 2> (x, ws, wz)
  [xd] xd = DequantizeLinear <axis = 2> (xq, ws, wz)
  [mm] y = MatMul (xd, w)`), []string{
			"xq: axis: per-channel scale on activation x: activations take one scale per tensor",
			"xd: axis: per-channel scale on xd, which mm reads as an activation: activations take one scale per tensor",
		}},
		{"per-channel below opset 13", model("11", "", "", `
  [wd] wd = DequantizeLinear <axis = 1> (wi, ws, wz)
  [mm] y = MatMul (x, wd)`), []string{
			"wd: axis: per-channel scales need the axis attribute of opset 13; the model imports opset 11",
		}},
		{"Q without DQ", model("13", "", "", `
  [xq] xq = QuantizeLinear (x, s, z)
  [c] xc = Cast <to = 1> (xq)
  [mm] y = MatMul (xc, w)`), []string{
			"xq: pairing: output xq is read by c, not by a DequantizeLinear",
		}},
		{"DQ of a float", model("13", "", "", `
  [xd] xd = DequantizeLinear (x, s, z)
  [mm] y = MatMul (xd, w)`), []string{
			"xd: pairing: input x comes from neither a QuantizeLinear nor an int8 constant",
		}},
		{"DQ of an int32 constant", model("13", "", ",\n  int32[4] bi = {1, 2, 3, 4}", `
  [bd] bd = DequantizeLinear (bi, s)
  [y] y = Add (x, bd)`), []string{
			"bd: int8: input bi is int32, not int8 or float8e4m3fn",
		}},
		{"mismatched pair", model("13", "", ",\n  float s2 = {0.2}", `
  [xq] xq = QuantizeLinear (x, s, z)
  [xd] xd = DequantizeLinear (xq, s2, z)
  [mm] y = MatMul (xd, w)`), []string{
			"xd: pairing: scale s2 differs from the scale s of its QuantizeLinear xq",
		}},
		{"requantization chain", model("13", "", "", `
  [q1] q1 = QuantizeLinear (x, s, z)
  [d1] d1 = DequantizeLinear (q1, s, z)
  [q2] q2 = QuantizeLinear (d1, s, z)
  [d2] d2 = DequantizeLinear (q2, s, z)
  [mm] y = MatMul (d2, w)`), []string{
			"d1: chain: output d1 is quantized again by q2 (Q→DQ→Q→DQ)",
		}},
		{"inside softmax", model("13", "", "", `
  [xq] xq = QuantizeLinear (x, s, z)
  [xd] xd = DequantizeLinear (xq, s, z)
  [sm] y = Softmax <axis = -1> (xd)`), []string{
			"xd: interior: output xd is read by Softmax sm: nothing is quantized inside LayerNorm, Softmax or GELU (" + interiorRule + ")",
		}},
		{"linear: weighted MatMul left float", model("13", "linear", "", `
  [mm] h = MatMul (x, w)
  [xq] xq = QuantizeLinear (h, s, z)
  [xd] xd = DequantizeLinear (xq, s, z)
  [wd] wd = DequantizeLinear <axis = 1> (wi, ws, wz)
  [mm2] y = MatMul (xd, wd)`), []string{
			"mm: coverage: input 0 (x) is not quantized: policy linear quantizes every input of a weighted MatMul",
			"mm: coverage: input 1 (w) is not quantized: policy linear quantizes every input of a weighted MatMul",
		}},
		{"linear: skip mark exempts", model("13", "linear", "", `
  [mm] y = MatMul (x, w)  #@ metadata_props: ["qcc.qdq.skip": "excluded"]`), nil},
		{"linear: GEMV exempt", model("13", "linear", ",\n  float[4,1] wv = {1, 2, 3, 4},\n  float[1,4] wb = {1, 1, 1, 1}", `
  [mm] h = MatMul (x, wv)
  [b] y = MatMul (h, wb)`), []string{
			"b: coverage: input 0 (h) is not quantized: policy linear quantizes every input of a weighted MatMul",
			"b: coverage: input 1 (wb) is not quantized: policy linear quantizes every input of a weighted MatMul",
		}},
		{"attention: matmuls left float", model("13", "attention", "", `
  [t] xt = Transpose <perm = [0, 2, 1]> (x)
  [scores] sc = MatMul (x, xt)
  [softmax] p = Softmax <axis = -1> (sc)
  [context] y = MatMul (p, x)`), []string{
			"scores: coverage: input 0 (x) is not quantized: policy attention quantizes both inputs of the attention matmuls",
			"scores: coverage: input 1 (xt) is not quantized: policy attention quantizes both inputs of the attention matmuls",
			"context: coverage: input 0 (p) is not quantized: policy attention quantizes both inputs of the attention matmuls",
			"context: coverage: input 1 (x) is not quantized: policy attention quantizes both inputs of the attention matmuls",
		}},
		{"linear ignores attention matmuls", model("13", "linear", "", `
  [t] xt = Transpose <perm = [0, 2, 1]> (x)
  [scores] sc = MatMul (x, xt)
  [softmax] p = Softmax <axis = -1> (sc)
  [context] y = MatMul (p, x)`), nil},
		{"full: residual add left float", model("13", "full", ",\n  float[4] bias = {1, 2, 3, 4}", quantizedMatMul[:strings.LastIndex(quantizedMatMul, "y = ")]+`h = MatMul (xd, wd)
  [bias] hb = Add (bias, h)
  [residual] r = Add (hb, x)
  [ln] y = LayerNormalization <axis = -1> (r, ws)`), []string{
			"residual: coverage: input 1 (x) is not quantized: policy full quantizes the skip input of the residual Add that feeds a LayerNorm",
		}},
		{"full: skip-only residual", model("13", "full", ",\n  float[4] bias = {1, 2, 3, 4}", quantizedMatMul[:strings.LastIndex(quantizedMatMul, "y = ")]+`h = MatMul (xd, wd)
  [bias] hb = Add (bias, h)
  [residual] r = Add (hb, xd)
  [ln] y = LayerNormalization <axis = -1> (r, ws)`), nil},
		{"full: both residual inputs quantized", model("13", "full", ",\n  float[4] bias = {1, 2, 3, 4}", quantizedMatMul[:strings.LastIndex(quantizedMatMul, "y = ")]+`h = MatMul (xd, wd)
  [bias] hb = Add (bias, h)
  [hq] hq = QuantizeLinear (hb, s, z)
  [hd] hd = DequantizeLinear (hq, s, z)
  [residual] r = Add (hd, xd)
  [ln] y = LayerNormalization <axis = -1> (r, ws)`), []string{
			"residual: residual: the weighted layer's output hb (input 0) is quantized, the skip input xd is quantized too: " + residualRule,
		}},
		{"full, residual=both: both residual inputs quantized", strings.Replace(model("13", "full", ",\n  float[4] bias = {1, 2, 3, 4}", quantizedMatMul[:strings.LastIndex(quantizedMatMul, "y = ")]+`h = MatMul (xd, wd)
  [bias] hb = Add (bias, h)
  [hq] hq = QuantizeLinear (hb, s, z)
  [hd] hd = DequantizeLinear (hq, s, z)
  [residual] r = Add (hd, xd)
  [ln] y = LayerNormalization <axis = -1> (r, ws)`), `"full"`, `"full", "qcc.qdq.residual": "both"`, 1), nil},
		{"linear: residual Add with only the GEMM side quantized", model("13", "linear", ",\n  float[4] bias = {1, 2, 3, 4}", quantizedMatMul[:strings.LastIndex(quantizedMatMul, "y = ")]+`h = MatMul (xd, wd)
  [bias] hb = Add (bias, h)
  [hq] hq = QuantizeLinear (hb, s, z)
  [hd] hd = DequantizeLinear (hq, s, z)
  [residual] r = Add (x, hd)
  [ln] y = LayerNormalization <axis = -1> (r, ws)`), []string{
			"residual: residual: the weighted layer's output hb (input 1) is quantized, the skip input x is float: " + residualRule,
		}},
		{"unknown residual placement", strings.Replace(model("13", "full", "", quantizedMatMul), `"full"`, `"full", "qcc.qdq.residual": "gemm"`, 1), []string{
			`model: residual: unknown residual placement "gemm" in qcc.qdq.residual (want skip, both, none)`,
		}},
		{"linear: BMM with one input quantized", model("13", "linear", "", `
  [t] xt = Transpose <perm = [0, 2, 1]> (x)
  [aq] aq = QuantizeLinear (x, s, z)
  [ad] ad = DequantizeLinear (aq, s, z)
  [scores] sc = MatMul (ad, xt)
  [softmax] p = Softmax <axis = -1> (sc)
  [context] y = MatMul (p, x)`), []string{
			"scores: matmul-inputs: input ad is quantized, input xt is float: " + matmulRule,
		}},
		{"attention: stray pair on the scores before the mask", model("13", "attention", ",\n  float[1,1,4] mask = {0, 0, 0, -10000},\n  float two = {2}", strings.Replace(attention, `[softmax] p = Softmax <axis = -1> (sc)`, `[div] sd = Div (sc, two)
  [sq] sq = QuantizeLinear (sd, s, z)
  [sdq] sdq = DequantizeLinear (sq, s, z)
  [mask] sm = Add (sdq, mask)
  [softmax] p = Softmax <axis = -1> (sm)`, 1)), []string{
			"sdq: scores: output sdq is on the way from Q·Kᵀ to the Softmax: " + scoresRule,
		}},
		{"stray pair right before the Softmax", model("13", "attention", "", strings.Replace(attention, `[softmax] p = Softmax <axis = -1> (sc)`, `[sq] sq = QuantizeLinear (sc, s, z)
  [sdq] sdq = DequantizeLinear (sq, s, z)
  [softmax] p = Softmax <axis = -1> (sdq)`, 1)), []string{
			"sdq: scores: output sdq is on the way from Q·Kᵀ to the Softmax: " + scoresRule,
			"sdq: interior: output sdq is read by Softmax softmax: nothing is quantized inside LayerNorm, Softmax or GELU (" + interiorRule + ")",
		}},
		{"dequantized value into GELU's Div", model("13", "", ",\n  float sqrt2 = {1.4142135},\n  float one = {1},\n  float half = {0.5}", quantizedMatMul[:strings.LastIndex(quantizedMatMul, "y = ")]+`h = MatMul (xd, wd)
  [hq] hq = QuantizeLinear (h, s, z)
  [hd] hd = DequantizeLinear (hq, s, z)
  [gelu_Div] d = Div (hd, sqrt2)
  [gelu_Erf] e = Erf (d)
  [gelu_Add] e1 = Add (e, one)
  [gelu_Mul] m = Mul (hd, e1)
  [gelu_Mul_1] y = Mul (m, half)`), []string{
			"hd: interior: output hd is read by Div gelu_Div, which feeds GELU's Erf gelu_Erf: nothing is quantized inside LayerNorm, Softmax or GELU (" + interiorRule + ")",
		}},
		{"attention: DeBERTa c2p half quantized", model("13", "attention", ",\n  int64[1,1,4] idx = {3, 2, 1, 0}", attention+`
  [pk] pk = Transpose <perm = [0, 2, 1]> (x)
  [c2p] c2 = MatMul (ad, pk)
  [gather] g = GatherElements <axis = -1> (c2, idx)
  [bias] y2 = Add (sc, g)
  [softmax2] p2 = Softmax <axis = -1> (y2)`), []string{
			"c2p: matmul-inputs: input ad is quantized, input pk is float: " + matmulRule,
			"c2p: coverage: input 1 (pk) is not quantized: policy attention quantizes both inputs of the attention matmuls",
		}},
		{"clean fp8", model("19", "linear", fp8Inits, fp8MatMul), nil},
		{"fp8 below opset 19", model("17", "", fp8Inits, fp8MatMul), []string{
			"xq: fp8: zero point f8z is float8e4m3fn, which QuantizeLinear/DequantizeLinear take from opset 19; the model imports opset 17",
			"xd: fp8: zero point f8z is float8e4m3fn, which QuantizeLinear/DequantizeLinear take from opset 19; the model imports opset 17",
			"wd: fp8: zero point wf8z is float8e4m3fn, which QuantizeLinear/DequantizeLinear take from opset 19; the model imports opset 17",
		}},
		{"fp8 activation, float weight", model("19", "", fp8Inits, `
  [xq] xq = QuantizeLinear (x, s, f8z)
  [xd] xd = DequantizeLinear (xq, s, f8z)
  [mm] y = MatMul (xd, w)`), []string{
			"mm: fp8: input 1 (w) is float beside an FP8 input: " + fp8Rule,
		}},
		{"fp8 activation, int8 weight", model("19", "", fp8Inits, `
  [xq] xq = QuantizeLinear (x, s, f8z)
  [xd] xd = DequantizeLinear (xq, s, f8z)
  [wd] wd = DequantizeLinear <axis = 1> (wi, ws, wz)
  [mm] y = MatMul (xd, wd)`), []string{
			"mm: fp8: input 1 (wd) is int8 beside an FP8 input: " + fp8Rule,
		}},
		{"fp8 BMM with an int8 input", model("19", "", fp8Inits, `
  [t] xt = Transpose <perm = [0, 2, 1]> (x)
  [aq] aq = QuantizeLinear (x, s, f8z)
  [ad] ad = DequantizeLinear (aq, s, f8z)
  [bq] bq = QuantizeLinear (xt, s, z)
  [bd] bd = DequantizeLinear (bq, s, z)
  [scores] sc = MatMul (ad, bd)
  [softmax] y = Softmax <axis = -1> (sc)`), []string{
			"scores: fp8: input 1 (bd) is int8 beside an FP8 input: " + fp8Rule,
		}},
		{"e5m2 zero point", model("19", "", ",\n  float8e5m2 e5z = {0}", `
  [xq] xq = QuantizeLinear (x, s, e5z)
  [xd] xd = DequantizeLinear (xq, s, e5z)
  [mm] y = MatMul (xd, w)`), []string{
			"xq: fp8: zero point e5z is float8e5m2: TensorRT's FP8 quantization is float8e4m3fn",
			"xd: fp8: zero point e5z is float8e5m2: TensorRT's FP8 quantization is float8e4m3fn",
		}},
		{"fp8 weight, int8 zero point", model("19", "", fp8Inits, `
  [wd] wd = DequantizeLinear <axis = 1> (wf8, ws, wz)
  [mm] y = MatMul (x, wd)`), []string{
			"wd: int8: input wf8 is float8e4m3fn, its zero point wz is int8",
			"mm: fp8: input 0 (x) is float beside an FP8 input: " + fp8Rule,
		}},
		{"unknown policy", model("13", "everything", "", `  [mm] y = MatMul (x, w)`), []string{
			`model: coverage: unknown policy "everything" in qcc.qdq.policy (want linear, attention, full)`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := strings.Replace(c.model, "float[4,4] w =", "int64[2] shape = {-1, 4},\n  int64[3] back = {-1, 1, 4},\n  float[4,4] w =", 1)
			m, err := text.Parse(src)
			if err != nil {
				t.Fatalf("parse: %v\n%s", err, src)
			}
			err = qdqcheck.Check(m)
			var got []string
			var ce *qdqcheck.Error
			switch {
			case err == nil:
			case errors.As(err, &ce):
				for _, v := range ce.Violations {
					got = append(got, v.String())
				}
			default:
				t.Fatalf("Check: %v", err)
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("violations (-want +got):\n%s", diff)
			}
		})
	}
}

// TestErrorText: the error lists every violation under one header.
func TestErrorText(t *testing.T) {
	m, err := text.Parse(model("13", "", ",\n  uint8 uz = {0}", `
  [xq] xq = QuantizeLinear (x, s, uz)
  [xd] xd = DequantizeLinear (xq, s, uz)
  [mm] y = MatMul (xd, w)`))
	if err != nil {
		t.Fatal(err)
	}
	want := "qdqcheck: 2 violation(s) of TensorRT's explicit-quantization rules:\n" +
		"  xq: int8: zero point uz is uint8, not int8\n" +
		"  xd: int8: zero point uz is uint8, not int8"
	if err := qdqcheck.Check(m); err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
}
