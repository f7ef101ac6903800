package transformer

import (
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/shape"
)

// GeneralAttentionFamily recognises attention from its math wherever the encoder
// families' fixed forms do not apply: decoders, encoder–decoders, vision models.
var GeneralAttentionFamily = &Family{
	Kind: Attention,
	Doc: `Attention recognised from its math: softmax(scale·Q·Kᵀ + Σ terms)·V.

Anchored on a Softmax: its output reaches a matmul (probs·V) through layout ops; its
input comes from a matmul (Q·Kᵀ) through layout ops, scalar scales and additive terms.
Q, K and V are followed back through layout ops (Reshape, Transpose, Split, Slice,
Gather, Squeeze/Unsqueeze, Expand, Tile, scalar Mul/Div, Q/DQ) to the op that computed
them, and the layouts are replayed forward as atoms (batch, sequence, channel factors,
repeats), which prove which axis is batch, heads, sequence and head size: 4-D [B,N,S,D]
or 3-D [B·N,S,D] heads, channel-first projections, packed QKV split or gathered, K/V
heads repeated for grouped-query attention, Q and K/V from different tensors. Sources
made by an elementwise op (a rotary embedding) keep the layout of their input.

Terms: every tensor added to the scores (Add) or filled into them (Where with a large
negative constant) that does not depend on the block's Q or K: padding masks, causal
masks (sliced buffers, Trilu, Range comparisons), relative-position biases; their scale
(the factors applied after them) is kept. A term computed from Q or K is refused. A soft
cap c·tanh(scores·a) (Gemma 2) before the terms is kept as the cap c and the scale a·c.
A maximum, minimum or mean of the scores over the keys subtracted from them (a stable
softmax written out, LayoutLMv3's PB-Relax) changes no weight and is read through.
Attention sinks (GPT-OSS): a constant logit per head joined to the scores on the key
axis, the softmax over the joined row, exactly that column sliced off after it.

Lowering: target ort → com.microsoft.MultiHeadAttention(query, key, value,
attention_bias = Σ terms as [B|1, N|1, S, T]); target onnx → Attention-23 (q_num_heads =
kv_num_heads, attn_mask = Σ terms, softcap). A soft-capped block is, for target ort,
com.microsoft.GroupQueryAttention (softcap, attention_bias = the terms but the causal
one, or all of them when one masks every later key already, as Gemma 2's local layers'
does; causal only, head size a multiple of 8), the one contrib attention with a soft cap, and
a block with sinks is GroupQueryAttention with them as head_sink (target onnx refuses
it: Attention-23 has no sink). For GroupQueryAttention a sliding-window causal term (a
query sees its W latest keys, from Range comparisons: Mistral's and GPT-OSS's local
layers) becomes local_window_size = W, the rest of the terms its bias. Q, K and V are read where the fewest ops bring them to
[B,S,N·D] (at most a Transpose and a Reshape); the output is reshaped to the block's own
output layout. A block with Q/DQ inside its core is recognised and left decomposed.

Residual attention (PatchTST): one value of the scores read outside the block (the next
layer adds it to its own) comes out of the fused operator when it is exactly what the
operator outputs, in [B, N, S, T]: Attention-23's qk_matmul_output (mode 0) for the scaled
Q·Kᵀ with no term added; MultiHeadAttention's qk for the softmax's input, every term
added (a causal term then goes to attention_bias). Other scores read outside are refused.

Roles: query, key, value (the fused operator's inputs), scores, probs, context, output,
and for each of q, k, v the projection (q_matmul, q_weight, q_bias, ...) when a MatMul or
Gemm on a constant weight computes it. Params: num_heads, kv_num_heads, head_size, scale,
terms.`,
	Rules: []*patterns.Rule{
		{Name: "attention/general-mha", Pattern: patterns.Op("MultiHeadAttention").In("com.microsoft").As("attention")},
		{Name: "attention/general-gqa", Pattern: patterns.Op("GroupQueryAttention").In("com.microsoft").As("attention")},
		{Name: "attention/general-onnx", Pattern: patterns.Op("Attention").As("attention")},
		{Name: "attention/general", Pattern: patterns.Trace("attention", traceAttention), Check: generalCheck, Escapes: generalEscapes},
	},
	Describe: generalDescribe,
	Fuse:     generalFuse,
}

func planOf(m *patterns.Match) *attnPlan {
	p, _ := m.Plan.(*attnPlan)
	return p
}

func generalCheck(m *patterns.Match) string {
	if p := planOf(m); p != nil && p.why != "" {
		return p.why
	}
	return ""
}

// generalEscapes refuses a block whose intermediate values are read outside it, except
// by Shape nodes (exporters read sizes off Q, K and the scores), by the score terms
// computed from Q, K or V, which stay to compute the fused operator's bias, and by the
// readers of one value of the scores (residual attention), which the lowering outputs
// or refuses.
func generalEscapes(m *patterns.Match) string {
	p := planOf(m)
	if p == nil || p.why != "" {
		return ""
	}
	also := maps.Clone(p.termReaders)
	if also == nil {
		also = map[*ir.Node]bool{}
	}
	maps.Copy(also, p.readScores(m))
	return escapesButShape(m.All, m.Root, also)
}

func generalDescribe(m *patterns.Match, b *Block) {
	if n := m.N("attention"); n != nil {
		b.Fused = true
		b.Roles["query"], b.Roles["key"], b.Roles["value"] = n.Input(0), n.Input(1), n.Input(2)
		bias, heads, kv := n.Input(5), n.AttrInt("num_heads", 0), n.AttrInt("num_heads", 0)
		switch {
		case n.Domain == "": // Attention-23
			bias, heads, kv = n.Input(3), n.AttrInt("q_num_heads", 0), n.AttrInt("kv_num_heads", 0)
		case n.OpType == "GroupQueryAttention":
			bias, kv = n.Input(10), n.AttrInt("kv_num_heads", 0)
		}
		if bias != nil {
			b.Roles["attention_bias"] = bias
		}
		b.Roles["output"] = n.Output(0)
		b.Params["num_heads"] = float64(heads)
		b.Params["kv_num_heads"] = float64(kv)
		b.Params["scale"] = float64(n.AttrFloat("scale", 0))
		return
	}
	p := planOf(m)
	if p == nil || p.why != "" {
		return
	}
	b.Variant = p.variant()
	for _, r := range []string{"query", "key", "value", "scores", "probs", "context", "output"} {
		b.Roles[r] = m.V(r)
	}
	for _, o := range []*attnOperand{p.q, p.k, p.v} {
		describeProjection(b, o)
	}
	b.Params["num_heads"] = float64(p.heads)
	b.Params["kv_num_heads"] = float64(p.kvHeads)
	b.Params["head_size"] = float64(p.headSize)
	b.Params["scale"] = p.scale
	b.Params["terms"] = float64(len(p.terms))
}

// scaleHeads multiplies the [B, S, N·D] query by the scores' per-head factor: s_h·(q·k)
// is (s_h·q)·k, so head h's D channels of Q take s_h.
func scaleHeads(rw *patterns.Rewriter, q *ir.Value, p *attnPlan, dt ir.DataType) *ir.Value {
	s, _ := patterns.ConstOf(p.headScale.value).Float64s() // one per head: headFactors checked
	r := make([]float64, 0, len(s)*int(p.headSize))
	for _, x := range s {
		for d := int64(0); d < p.headSize; d++ {
			r = append(r, x)
		}
	}
	t, _ := ir.FloatsTensor(dt, []int64{int64(len(r))}, r)
	return rw.Node("Mul", "", []*ir.Value{q, rw.Const(p.headScale.value.Name+"_per_channel", t)}, 1, q.Name+"_head_scaled").Output(0)
}

// loweredDType says why the target's fused operator for what (attention, rotary) cannot
// compute in dt, or "": ONNX Runtime's contrib kernels take float and float16; the
// ONNX-23 operators every float type but double.
func loweredDType(target Target, dt ir.DataType, what string) string {
	switch {
	case dt == ir.Float || dt == ir.Float16:
		return ""
	case dt == ir.BFloat16 && target == ONNX:
		return ""
	}
	return fmt.Sprintf("%s computes in %v: the target's fused operators take float and float16 (and bfloat16 for the ONNX-23 ones)", what, dt)
}

// projection is the MatMul or Gemm on a constant weight (or a DequantizeLinear of one)
// that computes v, directly or through an Add of a constant bias; nil when none does.
func projection(v *ir.Value) *ir.Node {
	n, _ := v.Producer()
	if n != nil && n.OpType == "Add" {
		for i := 0; i < 2; i++ {
			if mm, _ := n.Input(i).Producer(); mm != nil && mm.OpType == "MatMul" && patterns.ConstOf(n.Input(1-i)) != nil {
				n = mm
				break
			}
		}
	}
	if n == nil || n.OpType != "MatMul" && n.OpType != "Gemm" {
		return nil
	}
	if patterns.ConstOf(n.Input(1)) == nil {
		if dq, _ := n.Input(1).Producer(); dq == nil || dq.OpType != "DequantizeLinear" {
			return nil
		}
	}
	return n
}

// sourceProjection is the projection behind an operand's source: the source's own, or
// the one behind what a rotary embedding or a Q/K norm applied to the heads read (through
// the layout steps before it), as layoutOf follows them.
func sourceProjection(v *ir.Value, depth int) (*ir.Node, *ir.Value) {
	if n := projection(v); n != nil || depth >= 4 {
		return n, v
	}
	for _, in := range headOpInputs(v) {
		_, src := walkBack(in, anyStep)
		if n, w := sourceProjection(src, depth+1); n != nil {
			return n, w
		}
	}
	return nil, nil
}

// describeProjection names the projection that computes an operand's source: MatMul (+
// Add) or Gemm on a constant weight, before any rotary embedding or Q/K norm.
func describeProjection(b *Block, o *attnOperand) {
	p := map[string]string{"Q": "q", "K": "k", "V": "v"}[o.name]
	n, v := sourceProjection(o.values[0], 0)
	if n == nil {
		return
	}
	if add, _ := v.Producer(); add != n {
		for i := 0; i < 2; i++ {
			if add.Input(i) == n.Output(0) {
				b.Roles[p+"_bias"] = add.Input(1 - i)
			}
		}
	}
	b.Roles[p+"_matmul"] = n.Output(0)
	b.Roles[p+"_weight"] = n.Input(1)
	if n.OpType == "Gemm" && n.Input(2) != nil {
		b.Roles[p+"_bias"] = n.Input(2)
	}
	if _, ok := b.Roles["input"]; !ok {
		b.Roles["input"] = n.Input(0)
	}
}

func generalFuse(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error) {
	p := planOf(b.Match)
	if p == nil || p.why != "" {
		// generalCheck refused every match without a proof; a trace always has a plan.
		return nil, "", fmt.Errorf("attention at %s has no proof", b.Root.Name)
	}
	for _, o := range []*attnOperand{p.q, p.k, p.v} {
		if o.quantizedAfter() {
			return nil, "Q/DQ pairs inside the attention core (a fused float operator would drop them)", nil
		}
	}
	if p.softmax.Attr("axis") == nil && env.Model.Opset("") < 13 {
		return nil, "softmax over axis 1 (the default before opset 13), not the last", nil
	}
	dt := p.q.input().Type.DType
	if why := loweredDType(env.Target, dt, "attention"); why != "" {
		return nil, why, nil
	}
	if env.Target == ONNX {
		if why := RequireOpset(env, 23, "Attention", b.Nodes); why != "" {
			return nil, why, nil
		}
	} else if env.Target != ORT {
		return nil, fmt.Sprintf("no attention operator for target %q", env.Target), nil
	}
	if p.scoresRead != nil {
		if why := p.scoresReadWhy(env.Target); why != "" {
			return nil, why, nil
		}
	}
	var sink *ir.Tensor
	if p.sink != nil {
		if why := p.sinkLowering(env); why != "" {
			return nil, why, nil
		}
		// loweredDType let float and float16 through for target ort.
		if sink = p.sinkTensor(dt); sink == nil {
			return nil, "", fmt.Errorf("attention at %s: no head_sink of %v", b.Root.Name, dt)
		}
	}
	q := materialise(rw, p.q)
	if p.headScale != nil {
		q = scaleHeads(rw, q, p, dt)
	}
	var k, v *ir.Value
	kvHeads := p.heads
	// Soft-capped scores: target ort has GroupQueryAttention's softcap, which reads K and
	// V before their repeat too.
	gqa := env.Target == ORT && (p.softcap != 0 || sink != nil)
	if env.Target == ONNX || gqa {
		kp, kc, kn, kok := p.k.kvNative()
		vp, vc, vn, vok := p.v.kvNative()
		if kok && vok && kn == vn {
			k, v, kvHeads = materialiseAt(rw, p.k, kp, kc), materialiseAt(rw, p.v, vp, vc), kn
		}
	}
	if k == nil {
		k, v = materialise(rw, p.k), materialise(rw, p.v)
	}
	// A causal term becomes the operator's causal attribute, but for MultiHeadAttention
	// outputting the scores: its qk output holds the bias alone.
	p.splitCausal(env.Model.Opset(""))
	causal := -1
	for i := range p.terms {
		if p.isCausal(&p.terms[i], env.Model.Opset("")) && !(env.Target == ORT && p.scoresRead != nil) {
			causal = i
			break
		}
	}
	// GroupQueryAttention's local_window_size computes a sliding-window causal term: a
	// query sees its window latest keys.
	window := int64(0)
	if gqa && causal < 0 {
		p.splitWindow(env.Model.Opset(""))
		for i := range p.terms {
			if w, ok := p.slidingWindow(&p.terms[i], env.Model.Opset("")); ok {
				causal, window = i, w
				break
			}
		}
	}
	// Attention-23 has no filter value to set: with a padding mask beside the causal
	// term, a query whose earlier keys are all padding (left padding) would not weigh
	// them as the graph does, so the causal term stays in the additive mask.
	if causal >= 0 && env.Target == ONNX && p.hasMaskTerm() {
		causal = -1
	}
	// GroupQueryAttention masks the later keys by itself: with no causal term split off, a
	// term that masks them already (and maybe more) goes whole into its bias.
	covered := causal >= 0
	for i := 0; gqa && !covered && i < len(p.terms); i++ {
		covered = p.masksFuture(&p.terms[i], env.Model.Opset(""))
	}
	switch {
	case sink != nil && !covered:
		return nil, sinkWhat + " and the block is not causal: of ORT's attention operators only GroupQueryAttention has a head_sink, and it is causal only", nil
	case sink != nil && p.headSize%8 != 0:
		return nil, fmt.Sprintf("%s and the head size %d is not a multiple of 8: ORT's GroupQueryAttention, the only attention with a head_sink, needs one", sinkWhat, p.headSize), nil
	case gqa && !covered:
		return nil, "the scores are soft-capped and not causal: of ORT's contrib attention operators only GroupQueryAttention has a softcap, and it is causal only (use target=onnx, opset 23)", nil
	case gqa && p.headSize%8 != 0:
		return nil, fmt.Sprintf("the scores are soft-capped and the head size %d is not a multiple of 8: ORT's GroupQueryAttention, the only contrib attention with a softcap, needs one (use target=onnx, opset 23)", p.headSize), nil
	}
	bias, why := p.bias(rw, env.Model.Opset(""), q, k, causal)
	if why != "" {
		return nil, why, nil
	}
	if (env.Target == ONNX || gqa) && bias != nil && p.hasMaskTerm() && dt == ir.Float {
		bias = floorLowest(rw, bias)
	}
	var causalAttr []*ir.Attr
	if causal >= 0 && !gqa {
		name := map[Target]string{ORT: "unidirectional", ONNX: "is_causal"}[env.Target]
		causalAttr = append(causalAttr, ir.IntAttr(name, 1))
		if env.Target == ORT {
			// The lowest float, as the graph's mask: a query whose every earlier key is
			// padding then weighs them as the graph does, not the later keys.
			causalAttr = append(causalAttr, ir.FloatAttr("mask_filter_value", -math.MaxFloat32))
		}
	}
	name := rw.Graph().FreshName(nodePrefix(p.softmax) + "Attention")
	var n *ir.Node
	if gqa {
		n = groupQueryAttention(rw, name, q, k, v, bias, sink, p, kvHeads, window)
		EnsureOpset(env.Model, "com.microsoft", 1)
	} else if env.Target == ORT {
		ins := []*ir.Value{q, k, v}
		if bias != nil {
			ins = append(ins, nil, nil, bias)
		}
		// output, present_key, present_value, qk
		n = rw.NodeOptional("MultiHeadAttention", "com.microsoft", ins, []bool{true, false, false, p.scoresRead != nil}, name+"_output_0",
			append([]*ir.Attr{ir.IntAttr("num_heads", p.heads), ir.FloatAttr("scale", float32(p.scale))}, causalAttr...)...)
		EnsureOpset(env.Model, "com.microsoft", 1)
	} else {
		ins := []*ir.Value{q, k, v}
		if bias != nil {
			ins = append(ins, bias)
		}
		attrs := []*ir.Attr{ir.IntAttr("q_num_heads", p.heads), ir.IntAttr("kv_num_heads", kvHeads), ir.FloatAttr("scale", float32(p.scale))}
		if p.softcap != 0 {
			// Attention-23 caps the scaled scores before it adds attn_mask, as the graph does.
			attrs = append(attrs, ir.FloatAttr("softcap", float32(p.softcap)))
		}
		if p.scoresRead != nil {
			// qk_matmul_output: scale·Q·Kᵀ (mode 0).
			attrs = append(attrs, ir.IntAttr("qk_matmul_output_mode", 0))
		}
		// Y, present_key, present_value, qk_matmul_output
		n = rw.NodeOptional("Attention", "", ins, []bool{true, false, false, p.scoresRead != nil}, name+"_output_0", append(attrs, causalAttr...)...)
	}
	n.Name = name
	if p.scoresRead != nil {
		qk := n.Output(3)
		rw.Replace(p.scoresRead, qk)
		if n.OpType == "MultiHeadAttention" {
			// The qk output's type is a constraint of its own: ONNX Runtime reads it from
			// value_info, not from the inputs.
			rw.Graph().ValueInfo = append(rw.Graph().ValueInfo, qk)
		}
	}
	out := n.Output(0)
	if p.outSplit != nil {
		split := rw.Const("attention_output_atoms", ir.Int64Tensor([]int64{int64(len(p.outSplit))}, p.outSplit))
		out = rw.Node("Reshape", "", []*ir.Value{out, split}, 1, name+"_atoms").Output(0)
		out = rw.Node("Transpose", "", []*ir.Value{out}, 1, name+"_transposed", ir.IntsAttr("perm", p.outPerm...)).Output(0)
	}
	if p.outShape != nil {
		shape := rw.Const("attention_output_shape", ir.Int64Tensor([]int64{int64(len(p.outShape))}, p.outShape))
		out = rw.Node("Reshape", "", []*ir.Value{out, shape}, 1, name+"_reshaped").Output(0)
	}
	rebuildShapes(rw, b, []*ir.Value{p.q.input(), p.k.input(), p.v.input(), b.Root})
	rw.Replace(b.Root, out)
	return n, "", nil
}

// sinkLowering proves the sink logits and says whether target can lower them: only ORT's
// GroupQueryAttention has a sink input (head_sink), Attention-23 none.
func (p *attnPlan) sinkLowering(env *Env) string {
	if why := p.proveSink(env.Model.Opset("")); why != "" {
		return why
	}
	if env.Target != ORT {
		return sinkWhat + ": Attention-23 has no sink input (use target=ort: GroupQueryAttention's head_sink, on a causal block)"
	}
	return ""
}

// groupQueryAttention is com.microsoft.GroupQueryAttention computing a causal block
// without a cache: every query sees the keys up to its own position (and, for a sliding
// window w > 0, none w or more before it), softcap bounds the scaled scores before the
// other terms (attention_bias) are added. With no past, seqlens_k is S-1 for every
// sequence and total_sequence_length S, read off Q.
func groupQueryAttention(rw *patterns.Rewriter, name string, q, k, v, bias *ir.Value, sink *ir.Tensor, p *attnPlan, kvHeads, window int64) *ir.Node {
	shp := reuseNode(rw, "Shape", []*ir.Value{q}, q.Name+"_shape")
	one := rw.Const("attention_axis", ir.Int64Tensor(nil, []int64{1}))
	s := reuseNode(rw, "Gather", []*ir.Value{shp, one}, q.Name+"_seq", ir.IntAttr("axis", 0))
	total := reuseNode(rw, "Cast", []*ir.Value{s}, q.Name+"_total", ir.IntAttr("to", int64(ir.Int32)))
	one32 := rw.Const("attention_one", ir.NewTensor(ir.Int32, nil, []byte{1, 0, 0, 0}))
	last := reuseNode(rw, "Sub", []*ir.Value{total, one32}, q.Name+"_last")
	zero := rw.Const("attention_axis", ir.Int64Tensor([]int64{1}, []int64{0}))
	b := reuseNode(rw, "Gather", []*ir.Value{shp, zero}, q.Name+"_batch", ir.IntAttr("axis", 0))
	seqlens := reuseNode(rw, "Expand", []*ir.Value{last, b}, q.Name+"_seqlens_k")
	ins := []*ir.Value{q, k, v, nil, nil, seqlens, total}
	if bias != nil || sink != nil {
		ins = append(ins, nil, nil, nil, bias)
	}
	if sink != nil {
		// head_sink: each head's logit joins the softmax's normaliser, as the graph's
		// dropped column does.
		ins = append(ins, rw.Const(name+"_head_sink", sink))
	}
	attrs := []*ir.Attr{ir.IntAttr("num_heads", p.heads), ir.IntAttr("kv_num_heads", kvHeads),
		ir.FloatAttr("scale", float32(p.scale)), ir.FloatAttr("softcap", float32(p.softcap))}
	if window > 0 {
		// local_window_size counts the keys a query sees, its own included, as the
		// graph's window does (microsoft/onnxruntime#25927; before it, ORT kept one key
		// more).
		attrs = append(attrs, ir.IntAttr("local_window_size", window))
	}
	return rw.Node("GroupQueryAttention", "com.microsoft", ins, 3, name+"_output_0", attrs...)
}

// rebuildShapes gives the Shape readers of the block's intermediate values (an exporter's
// size() calls on Q, K or the scores) the same sizes read off tensors that stay: a known
// dim as a constant, a symbolic one gathered from the shape of a kept value that has it
// (times a number, for a merged [B·N] dim). The replaced nodes are then dead; a reader
// whose dims cannot all be found keeps them alive, which costs work but not correctness.
func rebuildShapes(rw *patterns.Rewriter, b *Block, kept []*ir.Value) {
	in := map[*ir.Node]bool{}
	for _, n := range b.Nodes {
		in[n] = true
	}
	for _, n := range b.Nodes {
		for _, o := range n.Outputs() {
			if o == nil || o == b.Root {
				continue
			}
			for _, u := range o.Uses() {
				if u.Node.OpType != "Shape" || u.Node.Domain != "" || in[u.Node] {
					continue
				}
				if v := shapeReadBy(rw, o, u.Node, kept); v != nil {
					rw.Replace(u.Node.Output(0), v)
				}
			}
		}
	}
}

// shapeReadBy builds what Shape (with its start and end) of v gives, from kept values; nil
// when a dim is not found.
func shapeReadBy(rw *patterns.Rewriter, v *ir.Value, sh *ir.Node, kept []*ir.Value) *ir.Value {
	s := attnShape(v)
	if s == nil {
		return nil
	}
	r := int64(len(s))
	clamp := func(i int64) int64 { return max(0, min(r, map[bool]int64{true: i + r, false: i}[i < 0])) }
	start, end := clamp(sh.AttrInt("start", 0)), clamp(sh.AttrInt("end", r))
	var parts []*ir.Value
	for _, d := range s[start:max(start, end)] {
		p := dimOf(rw, d, kept)
		if p == nil {
			return nil
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return nil
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return reuseNode(rw, "Concat", parts, sh.Output(0).Name+"_rebuilt", ir.IntAttr("axis", 0))
}

// dimOf is one dim as a 1-element int64 tensor.
func dimOf(rw *patterns.Rewriter, d ir.Dim, kept []*ir.Value) *ir.Value {
	if d.Known {
		return rw.Const("attention_dim", ir.Int64Tensor([]int64{1}, []int64{d.Value}))
	}
	if d.Param == "" {
		return nil
	}
	for _, k := range kept {
		for i, kd := range attnShape(k) {
			if kd.Known {
				continue
			}
			f, ok := shape.DivDims(d, kd)
			if !ok || !f.Known || f.Value < 1 {
				continue
			}
			idx := rw.Const("attention_axis", ir.Int64Tensor([]int64{1}, []int64{int64(i)}))
			g := reuseNode(rw, "Gather", []*ir.Value{reuseNode(rw, "Shape", []*ir.Value{k}, k.Name+"_shape"), idx}, k.Name+"_dim", ir.IntAttr("axis", 0))
			if f.Value == 1 {
				return g
			}
			c := rw.Const("attention_factor", ir.Int64Tensor([]int64{1}, []int64{f.Value}))
			return reuseNode(rw, "Mul", []*ir.Value{g, c}, k.Name+"_dims")
		}
	}
	return nil
}

// nodePrefix is the exporter's scope of a node ("/h.0/attn/" of "/h.0/attn/Softmax").
func nodePrefix(n *ir.Node) string {
	for i := len(n.Name) - 1; i >= 0; i-- {
		if n.Name[i] == '/' {
			return n.Name[:i+1]
		}
	}
	return ""
}

// materialise brings an operand's point to [B,S,N·D]: a Transpose into canonical order
// and a Reshape merging heads and head size, each only when needed.
func materialise(rw *patterns.Rewriter, o *attnOperand) *ir.Value {
	x := materialiseAt(rw, o, o.point, o.pointCanon())
	if len(o.synth) > 0 {
		n := axis(o.synth).size().Value
		d := axis(o.canon[2+len(o.headLeaves):]).size().Value
		kv := axis(o.headLeaves[:len(o.headLeaves)-len(o.synth)]).size().Value
		if kv == 1 {
			// One K/V head for all query heads: [B,T,D] → [B,T,1,D] → [B,T,N,D] → [B,T,N·D].
			split := rw.Const("attention_one_head", ir.Int64Tensor([]int64{4}, []int64{0, 0, 1, d}))
			x = rw.Node("Reshape", "", []*ir.Value{x, split}, 1, x.Name+"_1hd").Output(0)
			rep := rw.Const("attention_repeat_heads", ir.Int64Tensor([]int64{4}, []int64{1, 1, n, 1}))
			x = rw.Node("Expand", "", []*ir.Value{x, rep}, 1, x.Name+"_nhd").Output(0)
		} else {
			// Each K/V head for n consecutive query heads: [B,T,KV·D] → [B,T,KV,1,D] →
			// [B,T,KV,n,D] → [B,T,KV·n·D].
			split := rw.Const("attention_group_heads", ir.Int64Tensor([]int64{5}, []int64{0, 0, kv, 1, d}))
			x = rw.Node("Reshape", "", []*ir.Value{x, split}, 1, x.Name+"_g1d").Output(0)
			rep := rw.Const("attention_repeat_group", ir.Int64Tensor([]int64{5}, []int64{1, 1, 1, n, 1}))
			x = rw.Node("Expand", "", []*ir.Value{x, rep}, 1, x.Name+"_gnd").Output(0)
		}
		merge := rw.Const("attention_merge_heads", ir.Int64Tensor([]int64{3}, []int64{0, 0, kv * n * d}))
		x = rw.Node("Reshape", "", []*ir.Value{x, merge}, 1, x.Name+"_bsh").Output(0)
	}
	return x
}

// materialiseAt brings the value at an operand's point i, whose atoms are canon, to
// [B,S,rest]: a Transpose into canonical order and a Reshape, each only when needed.
func materialiseAt(rw *patterns.Rewriter, o *attnOperand, i int, canon []*atom) *ir.Value {
	x := o.values[i]
	l, perm, split, _ := materialOrder(o.layouts[i], canon)
	if split {
		dims := make([]int64, len(l))
		for j, ax := range l {
			dims[j] = -1
			if d := ax[0].size; d.Known {
				dims[j] = d.Value
			}
		}
		shape := rw.Const("attention_unfold", ir.Int64Tensor([]int64{int64(len(dims))}, dims))
		x = rw.Node("Reshape", "", []*ir.Value{x, shape}, 1, x.Name+"_unfolded").Output(0)
	}
	ident := true
	for i, p := range perm {
		ident = ident && p == i
	}
	if !ident {
		ps := make([]int64, len(perm))
		for i, p := range perm {
			ps[i] = int64(p)
		}
		x = rw.Node("Transpose", "", []*ir.Value{x}, 1, x.Name+"_bsnd", ir.IntsAttr("perm", ps...)).Output(0)
	}
	if len(l) != 3 || len(l[perm[2]].leaves()) == 0 || !widthInferable(x) {
		// The width spelled out, not -1: ONNX's shape inference of Attention-23 reads
		// V's last dim as a number and writes 0 when it is not one (a value computed
		// through Shape arithmetic has none for it).
		width := axis(canon[2:]).size().Value
		shape := rw.Const("attention_merge_heads", ir.Int64Tensor([]int64{3}, []int64{0, 0, width}))
		x = rw.Node("Reshape", "", []*ir.Value{x, shape}, 1, x.Name+"_bsh").Output(0)
	}
	return x
}

// widthInferable reports whether ONNX's own shape inference gets x's last dim as a
// number: a projection's output (MatMul or Gemm by a constant weight), a graph input or a
// constant of static width, or an elementwise op all of whose inputs are such values (a
// broadcast against an unknown dim leaves it unknown).
func widthInferable(x *ir.Value) bool { return widthInferableAt(x, 0) }

func widthInferableAt(x *ir.Value, depth int) bool {
	if x == nil || depth > 8 {
		return false
	}
	if x.IsConst() || x.IsGraphInput() {
		s := attnShape(x)
		return len(s) > 0 && s[len(s)-1].Known
	}
	n, _ := x.Producer()
	if n == nil || n.Domain != "" {
		return false
	}
	switch n.OpType {
	case "MatMul", "Gemm":
		return n.Input(1) != nil && n.Input(1).IsConst()
	case "Add", "Sub", "Mul", "Div", "Cast", "Relu", "Identity", "Neg":
		for _, in := range n.Inputs() {
			if !widthInferableAt(in, depth+1) {
				return false
			}
		}
		return true
	}
	return false
}

// kvNative is where Attention-23 reads K or V when their heads are repeated for
// grouped- or multi-query attention: the tensor before the repeat (Attention-23 repeats
// each K/V head over consecutive query heads, kv_num_heads of them), when the repeat is
// the minor part of the heads and nothing between that tensor and the operand's own
// point scales or quantizes. ok is false when there is no repeat or no such tensor.
func (o *attnOperand) kvNative() (point int, canon []*atom, kvHeads int64, ok bool) {
	var kv, rep []*atom
	for _, a := range o.headLeaves {
		switch {
		case a.kind == atomRepeat:
			rep = append(rep, a)
		case len(rep) > 0:
			return 0, nil, 0, false // a repeat major to a kv head: not Attention-23's grouping
		default:
			kv = append(kv, a)
		}
	}
	if len(rep) == 0 {
		return 0, nil, 0, false
	}
	for _, a := range o.canon {
		if !slices.Contains(rep, a) {
			canon = append(canon, a)
		}
	}
	best, cost := -1, 0
	for i, l := range o.layouts {
		if c, ok := materialCost(l, canon); ok && (best < 0 || c < cost) {
			best, cost = i, c
		}
	}
	if best < 0 || best > o.point {
		return 0, nil, 0, false
	}
	for _, st := range o.steps[best:o.point] {
		if st.scale != 1 || st.quant {
			return 0, nil, 0, false
		}
	}
	return best, canon, axis(kv).size().Value, true
}

// hasMaskTerm reports whether a score term comes from a graph input (a padding mask):
// one that can mask every key of a query.
func (p *attnPlan) hasMaskTerm() bool {
	for _, t := range p.terms {
		if t.kind == "mask" {
			return true
		}
	}
	return false
}

// maskFloor stands in for the lowest float in a float mask given to Attention-23.
const maskFloor = -1e30

// floorLowest raises a float32 mask's finite values below maskFloor to it, keeping -inf:
// ONNX Runtime's Attention-23 returns zeros for a query whose every key has the lowest
// float, where the graph's softmax weighs those keys alike (scores added to the lowest
// float round to it). At -1e30 they round alike too, and the softmax is the graph's.
func floorLowest(rw *patterns.Rewriter, bias *ir.Value) *ir.Value {
	floor := rw.Const("attention_mask_floor", ir.FloatTensor(nil, []float32{maskFloor}))
	raised := rw.Node("Max", "", []*ir.Value{bias, floor}, 1, "attention_mask_floored").Output(0)
	inf := rw.Node("IsInf", "", []*ir.Value{bias}, 1, "attention_mask_inf", ir.IntAttr("detect_positive", 0)).Output(0)
	return rw.Node("Where", "", []*ir.Value{inf, bias, raised}, 1, "attention_mask").Output(0)
}
