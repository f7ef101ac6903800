package cuda

// The fused attention operators' forms: what each asks of the kernel, read off its
// inputs, outputs and attributes, and refused with the reason where the kernel does
// not compute it.

import (
	"fmt"
	"math"
	"slices"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// attnForm is what an attention block's fused operator asks of the kernel: the
// layouts of Q, K and V, the masks and the output. The plan reads it from the
// operator's own inputs and attributes, so a form the kernel does not compute
// (past state, present outputs, ...) is refused here, with the reason.
type attnForm struct {
	op *ir.Node
	// packed: com.microsoft.Attention, whose QKV GEMM (X W + b) writes the
	// [batch, seq, 3 * hidden] buffer the kernel reads; x, w and qkvB name it.
	packed       bool
	x, w, qkvB   *ir.Value
	q, k, v      *ir.Value // the operator's Q, K, V otherwise
	kvHeads      int64
	dv           int64 // V's head size (and the output's): Q's and K's, or its own
	kvBNSH       bool  // K and V are [batch, kv_heads, seq, head_size]
	causal       bool
	window       int64     // 0, or the keys a causal query sees, its own included
	softcap      float64   // 0, or c in c * tanh(scores / c) on the scaled scores
	sink         *ir.Value // [heads]: a logit per head joined to every row's softmax
	scores       *ir.Value // [batch, heads, seq, kv_seq]: scale * Q K^T, an output read downstream
	mask         *ir.Value // a [batch, seq] integer key padding mask
	maskFilter   float64
	bias         *ir.Value // [batch|1, heads|1, seq|1, seq] added to the scores
	biasAxes     [3]bool   // the bias has a batch, heads, query axis (else broadcast)
	rowScale     *ir.Value // [batch, seq, 1] multiplied into the output rows
	output       *ir.Value
	maskReadable string // how the caller passes the mask, when not as the model holds it
}

// attnOp finds the fused attention operator of a block.
func attnOp(bl *transformer.Block) *ir.Node {
	for _, n := range bl.Nodes {
		switch {
		case n.OpType == "Attention" && (n.Domain == msDomain || n.Domain == "" || n.Domain == "ai.onnx"),
			(n.OpType == "MultiHeadAttention" || n.OpType == "GroupQueryAttention") && n.Domain == msDomain:
			return n
		}
	}
	return nil
}

// usedOutput names the first of n's outputs from index from on (up to, not
// including, to; to < 0: all) that something reads.
func usedOutput(n *ir.Node, from, to int) string {
	if to < 0 || to > len(n.Outputs()) {
		to = len(n.Outputs())
	}
	for i := from; i < to; i++ {
		if o := n.Output(i); o != nil && (len(o.Uses()) > 0 || o.IsGraphOutput()) {
			return o.Name
		}
	}
	return ""
}

// usedValue is n's output i when something reads it, else nil.
func usedValue(n *ir.Node, i int) *ir.Value {
	if usedOutput(n, i, i+1) == "" {
		return nil
	}
	return n.Output(i)
}

func rankOf(v *ir.Value) int {
	if v == nil || v.Type == nil || !v.Type.HasShape {
		return -1
	}
	return v.Type.Rank()
}

func isIntMask(v *ir.Value) bool {
	if v == nil || v.Type == nil {
		return false
	}
	switch v.Type.DType {
	case ir.Int32, ir.Int64, ir.Bool:
		return true
	}
	return false
}

// isFloat reports whether dt is a float type the kernels read as their element
// type (float, half, bfloat16).
func isFloat(dt ir.DataType) bool { return dt == ir.Float || dt == ir.Float16 || dt == ir.BFloat16 }

// fromORT reads com.microsoft.Attention: X, [Wq|Wk|Wv], [bq|bk|bv], mask_index,
// past, attention_bias, past_sequence_length; outputs output, present.
func (f *attnForm) fromORT(n *ir.Node, heads, hidden int64) string {
	switch {
	case n.Input(4) != nil || n.Input(6) != nil:
		return "past state (past, past_sequence_length): the kernel has no incremental decoding"
	case usedOutput(n, 1, -1) != "":
		return fmt.Sprintf("present output %s is used: the kernel does not write it", usedOutput(n, 1, -1))
	case n.AttrInt("do_rotary", 0) != 0:
		return "rotary embedding inside the operator (do_rotary) has no kernel"
	case n.Input(5) != nil:
		return "attention_bias input: only a [batch, seq] mask_index has a kernel"
	}
	if hs, ok := n.AttrInts("qkv_hidden_sizes"); ok && (len(hs) != 3 || hs[0] != hidden || hs[1] != hidden || hs[2] != hidden) {
		return fmt.Sprintf("qkv_hidden_sizes %v are not three equal sizes %d", hs, hidden)
	}
	f.packed, f.x, f.w, f.qkvB = true, n.Input(0), n.Input(1), n.Input(2)
	if wd := constDims(f.w); len(wd) != 2 || wd[1] != 3*hidden {
		return fmt.Sprintf("weights %s are not a constant [input, 3 * %d]", typeString(f.w), hidden)
	}
	if f.qkvB != nil {
		if bd := constDims(f.qkvB); len(bd) != 1 || bd[0] != 3*hidden {
			return fmt.Sprintf("bias %s is not a constant [3 * %d]", typeString(f.qkvB), hidden)
		}
	}
	f.kvHeads, f.dv = heads, hidden/heads
	f.causal = n.AttrInt("unidirectional", 0) != 0
	if m := n.Input(3); m != nil {
		if rankOf(m) != 2 || m.Type.DType != ir.Int32 {
			return fmt.Sprintf("mask_index %s is not an int32 [batch, seq] key padding mask (key lengths and 3-D/4-D masks have no kernel)", typeString(m))
		}
		f.mask, f.maskFilter = m, float64(n.AttrFloat("mask_filter_value", -10000))
	}
	f.output = n.Output(0)
	return ""
}

// fromONNX reads Attention-23: Q, K, V, attn_mask, past_key, past_value; outputs
// Y, present_key, present_value, qk_matmul_output.
func (f *attnForm) fromONNX(n *ir.Node, bl *transformer.Block, heads, d int64) string {
	switch {
	case n.Input(4) != nil || n.Input(5) != nil:
		return "past_key/past_value: the kernel has no incremental decoding"
	case usedOutput(n, 1, 3) != "":
		return fmt.Sprintf("output %s is used: the kernel writes only Y and the scores", usedOutput(n, 1, 3))
	case usedOutput(n, 3, -1) != "" && n.AttrInt("qk_matmul_output_mode", 0) != 0:
		return fmt.Sprintf("qk_matmul_output in mode %d (the scores after the mask, the soft cap or the softmax): the kernel writes them only as scale * Q K^T (mode 0)", n.AttrInt("qk_matmul_output_mode", 0))
	case n.AttrInt("q_num_heads", 0) != heads:
		return fmt.Sprintf("q_num_heads %d is not the block's %d heads", n.AttrInt("q_num_heads", 0), heads)
	}
	f.q, f.k, f.v = n.Input(0), n.Input(1), n.Input(2)
	if w, ok := lastDim(f.q); rankOf(f.q) != 3 || !ok || w != heads*d {
		return fmt.Sprintf("Q %s is not [batch, seq, %d]", typeString(f.q), heads*d)
	}
	if why := f.groupedKV(n.AttrInt("kv_num_heads", heads), heads, d); why != "" {
		return why
	}
	f.causal = n.AttrInt("is_causal", 0) != 0
	f.softcap = max(float64(n.AttrFloat("softcap", 0)), 0)
	f.scores = usedValue(n, 3) // qk_matmul_output, mode 0: scale * Q K^T
	am, m := n.Input(3), bl.Role("mask")
	switch {
	case am == nil:
	case m != nil && rankOf(m) == 2 && isIntMask(m) && computedFrom(am, m):
		// A [batch, seq] key padding mask the block turns into attn_mask: the
		// kernel reads the mask.
		f.mask, f.maskFilter = m, bl.Param("mask_filter_value", -10000)
		if f.maskFilter <= -math.MaxFloat32 {
			// ONNX Runtime's Attention-23 leaves a query row whose every key is masked
			// with the lowest float at 0, as with -inf (not the uniform row that adding
			// -FLT_MAX to each score would give).
			f.maskFilter = math.Inf(-1)
		}
		if m.Type.DType != ir.Int32 {
			f.maskReadable = "(passed as int32)"
		}
	case am.Type == nil || !isFloat(am.Type.DType):
		return fmt.Sprintf("attn_mask %s is not float: a boolean attn_mask has no kernel", typeString(am))
	default:
		// The sum of the model's additive score terms (the general attention family),
		// or a mask computed from more than a [batch, seq] integer padding mask: the
		// kernel adds the operator's own attn_mask.
		f.bias = am
	}
	f.output = n.Output(0)
	return ""
}

// fromMHA reads DeBERTa's com.microsoft.MultiHeadAttention: query, key, value,
// bias, key_padding_mask, attention_bias, past_key, past_value; and the Mul after
// it that zeroes fully masked query rows, when there is one.
func (f *attnForm) fromMHA(n *ir.Node, bl *transformer.Block, heads, d int64) string {
	switch {
	case n.Input(3) != nil || n.Input(4) != nil:
		return "MultiHeadAttention bias or key_padding_mask input has no kernel"
	case len(n.Inputs()) > 6:
		return "MultiHeadAttention past state or further inputs have no kernel"
	case usedOutput(n, 1, 3) != "":
		return fmt.Sprintf("output %s is used: the kernel writes only the output and the scores", usedOutput(n, 1, 3))
	}
	// Causal over keys of the queries' own length, as com.microsoft.Attention's
	// unidirectional (the same CPU base in ONNX Runtime); cross-length is refused below.
	f.causal = n.AttrInt("unidirectional", 0) != 0
	f.scores = usedValue(n, 3) // output_qk: scale * Q K^T
	f.q, f.k, f.v, f.kvHeads = n.Input(0), n.Input(1), n.Input(2), heads
	if w, ok := lastDim(f.q); rankOf(f.q) != 3 || !ok || w != heads*d {
		return fmt.Sprintf("query %s is not [batch, seq, %d]", typeString(f.q), heads*d)
	}
	if f.k == nil || f.v == nil {
		return "MultiHeadAttention with packed query/key/value (no key or value input) has no kernel"
	}
	switch rankOf(f.k) {
	case 3:
		if why := f.groupedKV(heads, heads, d); why != "" {
			return why
		}
	case 4:
		f.kvBNSH = true
		if s := f.k.Type.Shape; !s[1].Known || s[1].Value != heads || !s[3].Known || s[3].Value != d {
			return fmt.Sprintf("key %s is not [batch, %d, seq, %d]", typeString(f.k), heads, d)
		}
		if f.dv = valueHeadSize(f.v, 4, heads); f.dv == 0 {
			return fmt.Sprintf("value %s is not [batch, %d, seq, v_head_size]", typeString(f.v), heads)
		}
	default:
		return fmt.Sprintf("key %s is neither [batch, seq, hidden] nor [batch, heads, seq, head_size]", typeString(f.k))
	}
	f.bias = n.Input(5)
	f.output = n.Output(0)
	if root := bl.Root; root != f.output {
		p, _ := root.Producer()
		if p == nil || p.OpType != "Mul" || p.Domain != "" || len(p.Inputs()) != 2 || p.Input(0) != f.output && p.Input(1) != f.output {
			return fmt.Sprintf("the block's output %s is not MultiHeadAttention's output or its product with a row mask", sanitize(root.Name))
		}
		keep := p.Input(1)
		if keep == f.output {
			keep = p.Input(0)
		}
		if s := keep.Type; rankOf(keep) != 3 || !isFloat(keep.Type.DType) || !s.Shape[2].Known || s.Shape[2].Value != 1 {
			return fmt.Sprintf("the row mask %s multiplied into the output is not float [batch, seq, 1]", typeString(keep))
		}
		f.rowScale, f.output = keep, root
	}
	return ""
}

// fromGQA reads com.microsoft.GroupQueryAttention as fuse writes it for a prompt
// with no cache (soft-capped scores, attention sinks, sliding windows): query, key,
// value, past_key, past_value, seqlens_k, total_sequence_length, cos_cache,
// sin_cache, position_ids, attention_bias, head_sink; outputs output, present_key,
// present_value, output_qk. It is causal, over a window of local_window_size keys
// when that is > 0.
func (f *attnForm) fromGQA(n *ir.Node, heads, d int64) string {
	switch {
	case n.Input(3) != nil || n.Input(4) != nil:
		return "past_key/past_value: the kernel has no incremental decoding"
	case n.AttrInt("do_rotary", 0) != 0 || n.Input(7) != nil || n.Input(8) != nil || n.Input(9) != nil:
		return "rotary embedding inside the operator (do_rotary, cos/sin caches, position_ids) has no kernel"
	case n.AttrInt("smooth_softmax", 0) != 0:
		return "smooth_softmax has no kernel"
	case usedOutput(n, 1, -1) != "":
		return fmt.Sprintf("output %s is used: the kernel writes only the first", usedOutput(n, 1, -1))
	}
	f.q, f.k, f.v = n.Input(0), n.Input(1), n.Input(2)
	if f.k == nil || f.v == nil {
		return "GroupQueryAttention with packed query/key/value (no key or value input) has no kernel"
	}
	if why := f.groupedKV(n.AttrInt("kv_num_heads", 0), heads, d); why != "" {
		return why
	}
	if !promptLengths(n.Input(5), n.Input(6), f.q) {
		return "seqlens_k and total_sequence_length are not S - 1 and S for the query's length S (a prompt with no cache): per-sequence lengths have no kernel"
	}
	f.causal = true
	f.window = max(n.AttrInt("local_window_size", -1), 0)
	f.softcap = max(float64(n.AttrFloat("softcap", 0)), 0)
	f.bias = n.Input(10)
	if f.sink = n.Input(11); f.sink != nil {
		if s := f.sink.Type; rankOf(f.sink) != 1 || !isFloat(s.DType) || !s.Shape[0].Known || s.Shape[0].Value != heads {
			return fmt.Sprintf("head_sink %s is not [%d]", typeString(f.sink), heads)
		}
	}
	f.output = n.Output(0)
	return ""
}

// groupedKV reads key and value as [batch, seq, kvHeads * d] and [batch, seq,
// kvHeads * dv], kvHeads dividing the query's heads, the value heads' width dv their
// own (valueHeadSize).
func (f *attnForm) groupedKV(kvHeads, heads, d int64) string {
	if kvHeads <= 0 || heads%kvHeads != 0 {
		return fmt.Sprintf("kv_num_heads %d does not divide the %d query heads", kvHeads, heads)
	}
	f.kvHeads = kvHeads
	if w, ok := lastDim(f.k); rankOf(f.k) != 3 || !ok || w != kvHeads*d {
		return fmt.Sprintf("key %s is not [batch, seq, %d key/value heads * head size %d]", typeString(f.k), kvHeads, d)
	}
	if f.dv = valueHeadSize(f.v, 3, kvHeads); f.dv == 0 {
		return fmt.Sprintf("value %s is not [batch, seq, %d key/value heads * v_head_size]", typeString(f.v), kvHeads)
	}
	return ""
}

// promptLengths proves that GroupQueryAttention's seqlens_k and
// total_sequence_length describe a prompt with no cache and no padding: total is
// the query's length S and every entry of seqlens_k is S - 1, as fuse writes them
// from Shape(query), or as constants once the length is known. Then the operator is
// causal attention over the S keys. Lengths from the model's inputs (a padded batch)
// are not proved, and have no kernel.
func promptLengths(seqlens, total, q *ir.Value) bool {
	if rankOf(q) != 3 {
		return false
	}
	s := q.Type.Shape[1]
	ints := func(v *ir.Value) []int64 {
		if t := patterns.ConstOf(v); t != nil {
			if xs, err := t.Int64s(); err == nil {
				return xs
			}
		}
		return nil
	}
	// isLen: v is S, a constant or Cast(Gather(Shape(x), 1)) of an x whose axis 1 is S.
	isLen := func(v *ir.Value) bool {
		if xs := ints(v); xs != nil {
			return len(xs) == 1 && s.Known && xs[0] == s.Value
		}
		n, _ := v.Producer()
		if n != nil && n.OpType == "Cast" && n.Domain == "" {
			n, _ = n.Input(0).Producer()
		}
		if n == nil || n.OpType != "Gather" || n.Domain != "" || n.AttrInt("axis", 0) != 0 || !slices.Equal(ints(n.Input(1)), []int64{1}) {
			return false
		}
		sh, _ := n.Input(0).Producer()
		if sh == nil || sh.OpType != "Shape" || sh.Domain != "" || sh.AttrInt("start", 0) != 0 || rankOf(sh.Input(0)) < 2 {
			return false
		}
		return ir.SameDim(sh.Input(0).Type.Shape[1], s)
	}
	// isLast: every entry of v is S - 1: constants, or Sub(S, 1) (expanded).
	isLast := func(v *ir.Value) bool {
		if xs := ints(v); xs != nil {
			for _, x := range xs {
				if !s.Known || x != s.Value-1 {
					return false
				}
			}
			return len(xs) > 0
		}
		n, _ := v.Producer()
		if n != nil && n.OpType == "Expand" && n.Domain == "" {
			n, _ = n.Input(0).Producer()
		}
		return n != nil && n.OpType == "Sub" && n.Domain == "" && isLen(n.Input(0)) && slices.Equal(ints(n.Input(1)), []int64{1})
	}
	return seqlens != nil && total != nil && isLen(total) && isLast(seqlens)
}

// valueHeadSize is the width of v's heads: v is [batch, seq, heads * width] (rank
// 3) or [batch, heads, seq, width] (rank 4), the width known; 0 when it is not.
// It may differ from Q's and K's (DeepSeek's multi-head latent attention, LeViT).
func valueHeadSize(v *ir.Value, rank int, heads int64) int64 {
	if rankOf(v) != rank {
		return 0
	}
	w, ok := lastDim(v)
	if rank == 4 {
		if s := v.Type.Shape[1]; !s.Known || s.Value != heads {
			return 0
		}
		heads = 1
	}
	if !ok || w <= 0 || w%heads != 0 {
		return 0
	}
	return w / heads
}

// attnSizes reads the heads off the fused operator (num_heads, or Attention-23's
// q_num_heads) and the width of Q (the QKV weight's for com.microsoft.Attention);
// the head size is width / heads. The block's own params, where it has them, must
// agree.
func attnSizes(bl *transformer.Block, n *ir.Node) (heads, d, hidden int64, why string) {
	switch {
	case n.OpType == "Attention" && n.Domain == msDomain:
		heads = n.AttrInt("num_heads", 0)
		if hs, ok := n.AttrInts("qkv_hidden_sizes"); ok && len(hs) == 3 {
			hidden = hs[0]
		} else if wd := constDims(n.Input(1)); len(wd) == 2 && wd[1]%3 == 0 {
			hidden = wd[1] / 3
		}
	case n.OpType == "Attention":
		heads = n.AttrInt("q_num_heads", 0)
		if rankOf(n.Input(0)) == 3 {
			hidden, _ = lastDim(n.Input(0))
		}
	default:
		heads = n.AttrInt("num_heads", 0)
		if rankOf(n.Input(0)) == 3 {
			hidden, _ = lastDim(n.Input(0))
		}
	}
	switch {
	case heads <= 0:
		return 0, 0, 0, fmt.Sprintf("%s has no head count attribute", n.OpType)
	case n.Domain != msDomain || n.OpType != "Attention":
		if r := rankOf(n.Input(0)); r != 3 {
			return 0, 0, 0, fmt.Sprintf("%s's query %s is not [batch, seq, hidden] (4-D and packed inputs have no kernel)", n.OpType, typeString(n.Input(0)))
		}
	case hidden <= 0:
		return 0, 0, 0, fmt.Sprintf("the width of %s's query (%s) is unknown", n.OpType, typeString(n.Input(0)))
	case hidden%heads != 0:
		return 0, 0, 0, fmt.Sprintf("query width %d is not a multiple of %d heads", hidden, heads)
	}
	d = hidden / heads
	for _, c := range []struct {
		name string
		want int64
	}{{"num_heads", heads}, {"head_size", d}, {"hidden", hidden}} {
		if v := int64(bl.Param(c.name, 0)); v != 0 && v != c.want {
			return 0, 0, 0, fmt.Sprintf("the block's %s %d is not the operator's %d", c.name, v, c.want)
		}
	}
	return heads, d, hidden, ""
}

// biasAxes reads which axes of an additive bias [batch|1, heads|1, seq|1, seq]
// (right-aligned: Attention-23's attn_mask may have fewer) are there and which are
// broadcast; a dim of unknown size counts as there.
func biasAxes(v *ir.Value, heads int64) (axes [3]bool, why string) {
	r := rankOf(v)
	if r < 2 || r > 4 {
		return axes, fmt.Sprintf("attention bias %s is not [batch|1, heads|1, seq|1, seq]", typeString(v))
	}
	s := v.Type.Shape
	if last := s[r-1]; last.Known && last.Value == 1 {
		return axes, fmt.Sprintf("attention bias %s is broadcast over keys: the kernel reads one value per key", typeString(v))
	}
	for a := 0; a < 3; a++ {
		i := a - (4 - r) // the axis in v, negative when v lacks it
		if i < 0 {
			continue
		}
		axes[a] = !(s[i].Known && s[i].Value == 1)
		if a == 1 && s[i].Known && s[i].Value != 1 && s[i].Value != heads {
			return axes, fmt.Sprintf("attention bias %s has %d heads, not 1 or %d", typeString(v), s[i].Value, heads)
		}
	}
	return axes, ""
}
