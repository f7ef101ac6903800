package transformer

import (
	"fmt"
	"math"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// attnFuseQuantORT rewrites an attention block whose projections are QDQ-quantized into
// com.microsoft.QAttention, which keeps their numbers: X quantized per tensor (as uint8,
// an int8 zero point z becoming z+128), the packed [Wq|Wk|Wv] int8 or uint8 weights with
// per-column scales and zero points, the float biases added in the GEMM's epilogue; the
// scores, softmax and context are float, as in the QDQ graph. Blocks whose Q·Kᵀ or
// probs·V matmuls are quantized too, or whose Q, K and V read X through differently
// quantized pairs, keep their decomposed form (reason given).
func attnFuseQuantORT(rw *patterns.Rewriter, b *Block, env *Env, mi attnMaskInfo, quantized string) (*ir.Node, string, error) {
	m := b.Match
	for _, p := range []string{"scores_a", "scores_b", "context_a", "context_b"} {
		if m.Has(p + "_dq") {
			return nil, quantized + "; QAttention computes Q·Kᵀ and probs·V in float", nil
		}
	}
	if mi.kind == attnAdditiveInput {
		return nil, quantized + "; QAttention takes no additive mask", nil
	}
	var (
		scale  float32
		zero   uint8
		ws     [3]*ir.Tensor // weights
		scales [3]*ir.Tensor // per-column weight scales, [H] each
		zeros  [3]*ir.Tensor // per-column weight zero points, [H] each
	)
	var x *ir.Value // what the Q/DQ pairs quantize
	for i, p := range []string{"q", "k", "v"} {
		q, dq := m.N(p+"_q"), m.N(p+"_dq")
		if dq == nil { // one pair shared by Q, K and V: the block's input is its output
			dq, _ = m.V("input").Producer()
			if dq != nil && dq.OpType == "DequantizeLinear" {
				q, _ = dq.Input(0).Producer()
			}
		}
		if q == nil || q.OpType != "QuantizeLinear" || dq.OpType != "DequantizeLinear" {
			return nil, quantized + "; but " + p + "'s input is not a Q/DQ pair", nil
		}
		s, z, why := activationQuant(q, dq)
		if why != "" {
			return nil, quantized + "; " + why, nil
		}
		if i > 0 && (s != scale || z != zero || q.Input(0) != x) {
			return nil, quantized + "; Q, K and V quantize X differently", nil
		}
		x = q.Input(0)
		scale, zero = s, z
		wdq, _ := m.V(p + "_weight").Producer()
		if wdq == nil || wdq.OpType != "DequantizeLinear" {
			return nil, quantized + "; " + p + " weight is not a DequantizeLinear of a constant", nil
		}
		wp, why := weightQuant(wdq)
		if why != "" {
			return nil, quantized + "; " + p + " " + why, nil
		}
		ws[i] = patterns.ConstOf(wdq.Input(0))
		if i > 0 && ws[i].DType != ws[0].DType {
			return nil, quantized + "; Q, K and V weights have different types", nil
		}
		scales[i], zeros[i] = attnPerColumn(wp, ws[i].Dims[1])
	}
	var packed [3]*ir.Tensor // weight, per-column scales, per-column zero points
	for i, parts := range [][3]*ir.Tensor{ws, scales, zeros} {
		what := "bias" // a vector per projection
		if i == 0 {
			what = "weight"
		}
		var err error
		if packed[i], err = attnPackQKV(parts, what); err != nil {
			return nil, "", err
		}
	}
	w, wscale, wzero := packed[0], packed[1], packed[2]
	bias, err := attnConcatQKV(m, "bias")
	if err != nil {
		return nil, "", err
	}
	if bias.DType != ir.Float {
		return nil, quantized + "; biases are not float", nil
	}
	prefix := attnNamePrefix(m)
	qx := quantU8(rw, x, scale, zero)
	inputs := []*ir.Value{qx.Output(0), attnSharedConst(rw, prefix, "qkv_weight_quantized", w),
		attnSharedConst(rw, prefix, "qkv_bias", bias), qx.Input(1),
		attnSharedConst(rw, prefix, "qkv_weight_scale", wscale), nil, qx.Input(2)}
	if !attnAllZero(wzero) {
		inputs = append(inputs, attnSharedConst(rw, prefix, "qkv_weight_zero_point", wzero))
	}
	attrs := []*ir.Attr{
		ir.IntAttr("num_heads", int64(b.Params["num_heads"])),
		ir.FloatAttr("scale", float32(b.Params["scale"])),
	}
	if mi.kind == attnRawMaskKind {
		inputs[5] = attnMaskIndex(rw, mi.raw)
		attrs = append(attrs, ir.FloatAttr("mask_filter_value", float32(mi.filter)))
	}
	n := rw.Node("QAttention", "com.microsoft", inputs, 1, prefix+"QAttention_output_0", attrs...)
	n.Name = rw.Graph().FreshName(prefix + "QAttention")
	EnsureOpset(env.Model, "com.microsoft", 1)
	rw.Replace(m.Root, attnUnmerge(rw, m, b, n.Output(0)))
	return n, "", nil
}

// attnPerColumn spells a weight's scale and zero point out per column (QAttention packs
// three weights, whose per-tensor scales may differ).
func attnPerColumn(p quantParams, cols int64) (scale, zero *ir.Tensor) {
	sv := make([]float32, cols)
	zv := make([]byte, cols)
	for c := range sv {
		i := 0
		if !p.perTensor() {
			i = c
		}
		sv[c] = p.scale[i]
		zv[c] = byte(p.zero[i]) // int8 and uint8 alike: the low byte
	}
	return ir.FloatTensor([]int64{cols}, sv), ir.NewTensor(p.dtype, []int64{cols}, zv)
}

func attnAllZero(t *ir.Tensor) bool {
	raw, err := t.Bytes()
	if err != nil {
		return false
	}
	for _, c := range raw {
		if c != 0 {
			return false
		}
	}
	return true
}

// attnDescribeQuantParams records a QAttention's input scale.
func attnDescribeQuantParams(n *ir.Node, b *Block) {
	if s := patterns.ConstOf(n.Input(3)); s != nil {
		if v, err := s.Float32s(); err == nil && len(v) == 1 && !math.IsNaN(float64(v[0])) {
			b.Params["input_scale"] = float64(v[0])
		}
	}
}

// attnCheckFusedQuant accepts a QAttention without past state.
func attnCheckFusedQuant(m *patterns.Match) string {
	n := m.N("attention")
	if n.Input(8) != nil {
		return fmt.Sprintf("QAttention %s has past state", n.Name)
	}
	return ""
}
