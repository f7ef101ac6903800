package cuda

import (
	"fmt"
	"math"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// attention plans a block's attention kernel from its fused operator's form
// (attn_form.go): the kernel's name and Spec, its parameters bound to the model's
// values, and the check data; or the reason the block has none.
func (b *builder) attention(bl *transformer.Block) {
	n := attnOp(bl)
	if n == nil {
		b.skip(bl.ID, bl.Variant, "only fused attention (Attention, Attention-23, MultiHeadAttention, GroupQueryAttention) has a kernel: the block was left decomposed (-stats says why)")
		return
	}
	heads, d, hidden, why := attnSizes(bl, n)
	if why != "" {
		b.skip(bl.ID, bl.Variant, why)
		return
	}
	f := &attnForm{op: n}
	switch {
	case n.OpType == "Attention" && n.Domain == msDomain:
		why = f.fromORT(n, heads, hidden)
	case n.OpType == "Attention":
		why = f.fromONNX(n, bl, heads, d)
	case n.OpType == "GroupQueryAttention":
		why = f.fromGQA(n, heads, d)
	default:
		why = f.fromMHA(n, bl, heads, d)
	}
	if why == "" && bl.Root != f.output {
		why = fmt.Sprintf("the block's output %s is computed after the operator's: the kernel computes only the operator", sanitize(bl.Root.Name))
	}
	if why != "" {
		b.skip(bl.ID, bl.Variant, why)
		return
	}
	// Cross-attention: keys and values from a sequence of their own (the memory).
	var kvDim ir.Dim
	cross := false
	if !f.packed {
		seqAxis := 1
		if f.kvBNSH {
			seqAxis = 2
		}
		kvDim = f.k.Type.Shape[seqAxis]
		if v := f.v.Type.Shape[seqAxis]; differ(kvDim, v) {
			b.skip(bl.ID, bl.Variant, fmt.Sprintf("key %s and value %s differ in sequence length", typeString(f.k), typeString(f.v)))
			return
		}
		cross = differ(f.q.Type.Shape[1], kvDim)
		if cross && f.causal {
			b.skip(bl.ID, bl.Variant, fmt.Sprintf("causal attention of query %s over keys %s of another length has no kernel", typeString(f.q), typeString(f.k)))
			return
		}
	}
	// The operator's scale, or its default 1/sqrt(head_size) when it has none (or, for
	// com.microsoft's operators, 0): what the operator computes, whatever the block's
	// own parameters say.
	scale := 1 / math.Sqrt(float64(d))
	if a := n.Attr("scale"); a != nil && (a.Float != 0 || n.Domain != msDomain) {
		scale = float64(a.Float)
	}
	in := f.q
	if f.packed {
		in = f.x
	}
	shape, ok := b.sz.shape(in)
	if !ok || len(shape) != 3 {
		b.skip(bl.ID, bl.Variant, fmt.Sprintf("input %s is not [batch, seq, hidden]", typeString(in)))
		return
	}
	batch, seq := shape[0], min(shape[1], maxSeq)
	kvSeq := seq
	switch {
	case kvDim.Known && cross:
		kvSeq = kvDim.Value
	case cross:
		kvSeq = crossSeq(seq) // a length of its own, so the check data tells them apart
	}
	if kvSeq > maxSeq {
		b.skip(bl.ID, bl.Variant, fmt.Sprintf("keys %s are longer than the kernel's %d", typeString(f.k), maxSeq))
		return
	}
	var biasShape []int64
	if f.bias != nil {
		if f.biasAxes, why = biasAxes(f.bias, heads); why != "" {
			b.skip(bl.ID, bl.Variant, why)
			return
		}
		// The bias as the model holds it: its own rank, the broadcast axes 1.
		full := []int64{batch, heads, seq, kvSeq}
		for a := 4 - rankOf(f.bias); a < 4; a++ {
			if a < 3 && !f.biasAxes[a] {
				full[a] = 1
			}
			biasShape = append(biasShape, full[a])
		}
	}
	elem := elemOf(in)
	dv := f.dv
	flash, path := attnPath(elem, d, dv, f.scores != nil)
	b.note(bl.ID, bl.Variant, path)
	name := fmt.Sprintf("qcc_attention_n%d_d%d", heads, d)
	if flash {
		name = fmt.Sprintf("qcc_flash_attention_n%d_d%d", heads, d)
	}
	if dv != d {
		name += fmt.Sprintf("_v%d", dv)
	}
	ld, kvLd, vLd := hidden, f.kvHeads*d, f.kvHeads*dv
	layout := "separate [batch, seq, hidden] tensors"
	switch {
	case f.packed:
		name += "_qkv"
		ld, kvLd, vLd = 3*hidden, 3*hidden, 3*hidden
		layout = "the [batch, seq, 3 * hidden] QKV GEMM output: q = qkv, k = qkv + hidden, v = qkv + 2 * hidden"
	case f.kvBNSH:
		name += "_kvbnsh"
		layout = "q [batch, seq, hidden], k and v [batch, heads, seq, head_size]"
	case f.kvHeads != heads:
		name += fmt.Sprintf("_kv%d", f.kvHeads)
		layout = fmt.Sprintf("q [batch, seq, hidden], k and v [batch, seq, %d] (%d key/value heads, each shared by %d query heads)", kvLd, f.kvHeads, heads/f.kvHeads)
	}
	if f.causal {
		name += "_causal"
	}
	if f.window > 0 {
		name += fmt.Sprintf("_window%d", f.window)
	}
	if f.softcap > 0 {
		name += "_softcap"
	}
	if f.sink != nil {
		name += "_sink"
	}
	if f.scores != nil {
		name += "_scores"
	}
	maskKind, filter := "qcc::kMaskNone", f.maskFilter
	if f.mask != nil {
		name += "_mask"
		maskKind = "qcc::kMaskKeyPadding"
	} else {
		filter = -10000 // unused
	}
	if f.bias != nil {
		name += "_bias"
	}
	if f.rowScale != nil {
		name += "_rowscale"
	}
	kShape, vShape := fmt.Sprintf("[batch, kv_seq, %d]", kvLd), fmt.Sprintf("[batch, kv_seq, %d]", vLd)
	if f.kvBNSH {
		kShape, vShape = "[batch, heads, kv_seq, head_size]", "[batch, heads, kv_seq, v_head_size]"
	}
	if dv != d {
		layout += fmt.Sprintf("; value heads %d wide", dv)
	}
	k := &kernel{
		Name: name, Launcher: "qcc::Attention", Header: "qcc/attention.cuh",
		Doc: fmt.Sprintf("softmax(%s%s%s%s%s%s) V%s for %d heads of %d, up to %d tokens; %s.", scoreTerm(scale, f.softcap),
			plusIf(f.bias != nil, " + bias"), plusIf(f.mask != nil, " + mask"), plusIf(f.causal, ", causal"),
			plusIf(f.window > 0, fmt.Sprintf(" over the %d latest keys", f.window)), plusIf(f.sink != nil, ", a sink logit per head"),
			plusIf(f.rowScale != nil, " * row_scale"), heads, d, maxSeq, layout) +
			plusIf(f.scores != nil, " Also writes the scores scale * Q K^T.") +
			plusIf(flash, " On tensor cores (flash-style: online softmax over tiles of 64 keys, float sums)."),
		Consts: []constant{
			{"kHeads", "int", cInt(heads)},
			{"kHeadSize", "int", cInt(d)},
			{"kScale", "float", cFloat(scale)},
			{"kLd", "int", cInt(ld)},
			{"kKvHeads", "int", cInt(f.kvHeads)},
			{"kKvLd", "int", cInt(kvLd)},
			{"kVHeadSize", "int", cInt(dv)},
			{"kVLd", "int", cInt(vLd)},
			{"kKvLayout", "int", map[bool]string{false: "qcc::kLayoutBSH", true: "qcc::kLayoutBNSH"}[f.kvBNSH]},
			{"kCausal", "bool", cBool(f.causal)},
			{"kWindow", "int", cInt(f.window)},
			{"kSoftcap", "float", cFloat(f.softcap)},
			{"kHasSink", "bool", cBool(f.sink != nil)},
			{"kWriteScores", "bool", cBool(f.scores != nil)},
			{"kMaskKind", "int", maskKind},
			{"kMaskFilter", "float", cFloat(filter)},
			{"kHasBias", "bool", cBool(f.bias != nil)},
			{"kBiasBatch", "bool", cBool(f.biasAxes[0])},
			{"kBiasHeads", "bool", cBool(f.biasAxes[1])},
			{"kBiasRows", "bool", cBool(f.biasAxes[2])},
			{"kHasRowScale", "bool", cBool(f.rowScale != nil)},
			{"kEmptyRow", "int", emptyRow(n)},
			{"kMaxSeq", "int", cInt(maxSeq)},
		},
		Params: []param{
			{Name: "q", Elem: "T", Present: true, Doc: fmt.Sprintf("[batch, seq, %d]", ld)},
			{Name: "k", Elem: "T", Present: true, Doc: kShape},
			{Name: "v", Elem: "T", Present: true, Doc: vShape},
			{Name: "mask", Elem: "int32_t", Present: f.mask != nil, Doc: "[batch, kv_seq], <= 0: padding key"},
			{Name: "bias", Elem: "T", Present: f.bias != nil, Doc: biasDoc(f.biasAxes)},
			{Name: "row_scale", Elem: "T", Present: f.rowScale != nil, Doc: "[batch, seq]: multiplies each output row"},
			{Name: "sink", Elem: "T", Present: f.sink != nil, Doc: "[heads]: each head's sink logit"},
			{Name: "output", Elem: "T", Out: true, Present: true, Doc: fmt.Sprintf("[batch, seq, %d]", heads*dv)},
			{Name: "scores", Elem: "T", Out: true, Present: f.scores != nil, Doc: "[batch, heads, seq, kv_seq]: scale * Q K^T"},
		},
		Scalars: []scalar{{"int", "batch"}, {"int", "seq"}, {"int", "kv_seq"}},
	}
	if flash {
		k.Launcher, k.Header, k.Elems = "qcc::FlashAttention", "qcc/flash_attention.cuh", []int{elem}
	}
	inst := b.newInstance(bl)
	inst.Packed, inst.Hidden = f.packed, hidden
	inst.Dims = []dim{{"int", "batch", batch}, {"int", "seq", seq}, {"int", "kv_seq", kvSeq}}
	inst.sz = sizer{batch: batch, seq: seq}
	act, out := []int64{batch, seq, hidden}, []int64{batch, seq, heads * dv}
	kv, vs := []int64{batch, kvSeq, kvLd}, []int64{batch, kvSeq, vLd}
	if f.kvBNSH {
		kv, vs = []int64{batch, heads, kvSeq, d}, []int64{batch, heads, kvSeq, dv}
	}
	if f.packed {
		kv, vs = act, act
	}
	// The check data's masks: padding keys, one fully padded sequence; the raw mask of
	// com.microsoft.Attention also holds a negative value (ORT keeps keys > 0).
	pad := paddingMask(batch, kvSeq, f.packed)
	inst.Tensors = []*tensor{
		random("q", ir.Float, act, uniform(bl.ID+".q", -2, 2)),
		random("k", ir.Float, kv, uniform(bl.ID+".k", -2, 2)),
		random("v", ir.Float, vs, uniform(bl.ID+".v", -2, 2)),
	}
	if f.packed {
		for _, t := range inst.Tensors {
			t.Source = "X W + b" // the operator's QKV GEMM on the model's weights
		}
	}
	if f.mask != nil {
		inst.Tensors = append(inst.Tensors, random("mask", ir.Int32, []int64{batch, kvSeq}, pad))
	}
	if f.bias != nil {
		gen := maskedBias(bl.ID+".bias", batch, heads, seq, true)
		if f.rowScale == nil || kvSeq != seq {
			gen = additiveBias(bl.ID+".bias", biasShape)
		}
		inst.Tensors = append(inst.Tensors, random("bias", ir.Float, biasShape, gen))
	}
	if f.rowScale != nil {
		inst.Tensors = append(inst.Tensors, random("row_scale", ir.Float, []int64{batch, seq, 1}, rowKeep(batch, seq)))
	}
	if f.sink != nil {
		inst.Tensors = append(inst.Tensors, constOrRandom("sink", f.sink, []int64{heads}, uniform(bl.ID+".sink", -1, 3)))
	}
	inst.Tensors = append(inst.Tensors, expected("output", ir.Float, out))
	scoreShape := []int64{batch, heads, seq, kvSeq}
	if f.scores != nil {
		inst.Tensors = append(inst.Tensors, expected("scores", ir.Float, scoreShape))
	}
	inst.bytes = func(e int) float64 {
		n := float64(e) * float64(prod(act)+prod(out)+prod(kv)+prod(vs))
		if f.mask != nil {
			n += float64(4 * batch * kvSeq)
		}
		if f.bias != nil {
			n += float64(e) * float64(prod(biasShape))
		}
		if f.rowScale != nil {
			n += float64(e) * float64(batch*seq)
		}
		if f.scores != nil {
			n += float64(e) * float64(prod(scoreShape))
		}
		return n
	}
	inst.Tol = tolAttention
	if flash {
		inst.Tol = tolFlash
	}
	inst.flops = float64(2 * batch * heads * seq * kvSeq * (d + dv)) // Q K^T and P V
	values := map[string]*ir.Value{"mask": f.mask, "bias": f.bias, "row_scale": f.rowScale, "sink": f.sink, "output": f.output, "scores": f.scores}
	if f.packed {
		inst.gemm = &gemm{x: f.x, w: f.w, b: f.qkvB, hidden: hidden}
		// The QKV GEMM is part of com.microsoft.Attention: its output is not a graph value.
		inst.Bind = append(inst.Bind, binding{"q, k, v", fmt.Sprintf("%s x %s + %s", sanitize(nameOf(f.x)),
			sanitize(nameOf(f.w)), sanitize(nameOf(f.qkvB))), fmt.Sprintf("[batch, seq, %d] (not a graph value)", 3*hidden)})
	} else {
		values["q"], values["k"], values["v"] = f.q, f.k, f.v
	}
	b.bind(inst, k, values)
	if f.maskReadable != "" {
		for i := range inst.Bind {
			if inst.Bind[i].Param == "mask" {
				inst.Bind[i].Type += " " + f.maskReadable
			}
		}
	}
	b.add(inst, k)
}

// scoreTerm is the kernel doc's score term: scale * Q K^T, soft-capped when softcap > 0.
func scoreTerm(scale, softcap float64) string {
	s := trimF(cFloat(scale)) + " * Q K^T"
	if softcap > 0 {
		c := trimF(cFloat(softcap))
		return fmt.Sprintf("%s * tanh(%s / %s)", c, s, c)
	}
	return s
}

// attnPath chooses the attention kernel for a block whose values are of the
// element type elem, whose query and key heads are d wide and value heads dv, and
// which writes its scores or not: the tensor-core kernel for half and bfloat16 when
// its 16-wide tiles fit the head, else the FP32-arithmetic kernel (float sums of the
// values widened to float). It says which and why.
func attnPath(elem int, d, dv int64, scores bool) (flash bool, why string) {
	switch {
	case elem == elemFloat:
		return false, "attention in float arithmetic (qcc::Attention): the model's values are float; half or bfloat16 models (precision<type=fp16|bf16>) get the tensor-core kernel"
	case scores:
		return false, fmt.Sprintf("attention in float arithmetic (qcc::Attention) on %s values: the model reads the scores, which the tensor-core kernel does not write", elemNames[elem])
	case dv != d:
		return false, fmt.Sprintf("attention in float arithmetic (qcc::Attention) on %s values: the tensor-core kernel takes value heads as wide as query and key heads, not %d and %d", elemNames[elem], dv, d)
	case d%16 != 0 || d > 128:
		return false, fmt.Sprintf("attention in float arithmetic (qcc::Attention) on %s values: the tensor-core kernel takes head sizes that are multiples of 16 up to 128, not %d", elemNames[elem], d)
	}
	return true, fmt.Sprintf("tensor-core attention (qcc::FlashAttention, %s in, float sums): the model's values are %s and the head size %d is a multiple of 16 up to 128", elemNames[elem], elemNames[elem], d)
}

// differ reports whether two dims are provably different: known and unequal, or
// named differently.
func differ(a, b ir.Dim) bool {
	switch {
	case a.Known && b.Known:
		return a.Value != b.Value
	case a.Known != b.Known:
		return false // a symbol may take the value
	}
	return a.Param != "" && b.Param != "" && a.Param != b.Param
}

// biasDoc is the bias parameter's shape.
func biasDoc(axes [3]bool) string {
	dims := []string{"batch", "heads", "seq"}
	for a, there := range axes {
		if !there {
			dims[a] = "1"
		}
	}
	return "[" + strings.Join(dims, ", ") + ", kv_seq]"
}

// crossSeq is the check data's key length for cross-attention whose key and query
// lengths are symbols of their own: not a multiple of the key tile, and not seq.
func crossSeq(seq int64) int64 { return seq*3/4 + 1 }

// emptyRow is how the operator computes a query row with no admissible key: ONNX
// Runtime's Attention-23 gives 0 where every score is <= the lowest float; its
// com.microsoft operators compute the plain softmax (NaN for a row of -inf).
func emptyRow(n *ir.Node) string {
	if n.Domain == msDomain {
		return "qcc::kEmptyRowNaN"
	}
	return "qcc::kEmptyRowZero"
}

// computedFrom reports whether v is computed from leaf and constants alone.
func computedFrom(v, leaf *ir.Value) bool {
	if leaf == nil {
		return false
	}
	seen := map[*ir.Value]bool{}
	var walk func(x *ir.Value) bool
	walk = func(x *ir.Value) bool {
		if x == nil || x == leaf || x.Const != nil || seen[x] {
			return true
		}
		seen[x] = true
		n, _ := x.Producer()
		if n == nil {
			return false
		}
		for _, in := range n.Inputs() {
			if !walk(in) {
				return false
			}
		}
		return true
	}
	return walk(v)
}
