package transformer

import (
	"fmt"
	"math"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// DebertaAttentionFamily recognises DeBERTa's disentangled self-attention (v1 and v2) and,
// for target=ort, rewrites it into com.microsoft.MultiHeadAttention with the relative
// terms and the mask as its attention_bias.
//
// The block, written from the math (He et al., DeBERTa; transformers' DisentangledSelfAttention
// and XSoftmax), is
//
//	Q, K, V  = heads(x·Wq + bq), heads(x·Wk + bk), heads(x·Wv + bv)   (v1: one packed in_proj
//	           MatMul, split into heads and sliced into thirds; bq and bv added per head)
//	qk       = (Q·s_q)·(Kᵀ·s_k)·s_qk       (the 1/√(3d) scale sits on Q in v1, on Kᵀ in v2)
//	c2p      = GatherElements(Q'·pos_keyᵀ, c2p_pos, axis=-1) [·s]
//	p2c      = Transpose(GatherElements(K·pos_queryᵀ, p2c_pos, axis=-1)) [·s]
//	scores   = qk + c2p + p2c
//	probs    = Where(mask, 0, Softmax(Where(mask, finfo.min, scores)))      (XSoftmax)
//	output   = merge_heads(probs·V)
//
// v1 keeps the heads 4-D ([batch, heads, seq, head_size]); v2 flattens them to
// [batch·heads, seq, head_size] around the two bmm's and reshapes the scores to 4-D for
// the softmax. The additive-mask form (Add(scores, mask) instead of XSoftmax's Where), a
// softmax without the second masked_fill, and a model without a mask are recognised too;
// at least one relative term (c2p or p2c) is required, so that plain attention stays with
// the BERT-like family.
//
// Roles: input, output (merged heads, [batch, seq, hidden]), context (probs·V, per head),
// mask (the [batch, seq] graph input the mask is computed from, when there is one; else
// block_mask), block_mask (what the block reads: XSoftmax's boolean "masked out" tensor
// [batch, 1, seq, seq], or the additive mask), q_weight/k_weight/v_weight, q_bias/k_bias/
// v_bias, q_matmul/k_matmul/v_matmul (v1: all three name the packed in_proj MatMul, also
// qkv_weight/qkv_matmul), q_heads/k_heads/v_heads, scores (the scaled Q·Kᵀ),
// attention_scores (Q·Kᵀ + c2p + p2c, 4-D, what the mask is applied to), probs (XSoftmax's
// output, what ·V reads), c2p, p2c, rel (their sum), pos_key, pos_query (the projected
// relative embeddings the two terms read), c2p_pos, p2c_pos (the gather indices) and
// rel_embeddings (the [positions, hidden] table they come from, where it can be traced: fold
// computes v2's projected table into a constant). Params: num_heads, head_size, hidden,
// scale (the multiplier applied to Q·Kᵀ, 1/√(3d)). The fused form has query, key, value,
// attention_bias, context (the MultiHeadAttention output) and what can be traced back.
//
// target=ort: com.microsoft.MultiHeadAttention(query, key, value, attention_bias) with
// attention_bias = c2p + p2c + Where(mask, finfo.min, 0) and scale = the block's
// multiplier. The relative terms stay ordinary nodes (they read the per-head Q and K, which
// the projections still compute). XSoftmax's second masked_fill zeroes the rows of padded
// queries, where a plain softmax gives a uniform row; the output is multiplied by
// ReduceMax(Not(mask), last axis) ([batch, seq, 1]: 0 where every key is masked), which is
// exact: a row that is not fully masked gets weight exp(finfo.min - max) = 0 on its masked
// keys either way. target=onnx: left decomposed (see debertaONNXReason).
//
// Why MultiHeadAttention and not Attention: Attention projects Q/K/V itself from X and the
// packed weights, but c2p and p2c need the projected per-head Q and K, so the projections
// would run twice. MultiHeadAttention takes the projected Q, K, V (V and K of v1 as BNSH
// heads) and an additive attention_bias of [batch, heads, seq, seq]; ORT's CPU kernel
// accepts both (its packed-QKV input, which would fit v1's in_proj layout, is not
// implemented on CPU). Measured with BenchmarkDebertaAttention (ORT CPU, one thread,
// DeBERTa-base size, a shared 2-core machine): between 14% faster and 4% slower than the
// decomposed block across runs, no consistent loss; the corpus models match the original
// within 1.2e-6.
var DebertaAttentionFamily = &Family{
	Kind: Attention,
	Doc: `DeBERTa disentangled self-attention: Q·Kᵀ plus the content-to-position (c2p) and
position-to-content (p2c) terms, XSoftmax, ·V, merged heads.
Variants: attention/deberta-v1 (4-D heads; v1's packed in_proj sliced into thirds, or
separate projections), attention/deberta-v2 (heads flattened to [batch·heads, seq, d]
around the bmm's), attention/deberta-mha (the fused form below).
target=ort: com.microsoft.MultiHeadAttention(Q, K, V, attention_bias = c2p + p2c +
Where(mask, finfo.min, 0)), times a [batch, seq, 1] row-keep factor for XSoftmax's zeroed
rows; the relative terms stay ordinary nodes. target=onnx: left decomposed (no standard
operator below Attention-23).`,
	Rules:    []*patterns.Rule{debertaFusedRule(), debertaRule("attention/deberta-v1", 4), debertaRule("attention/deberta-v2", 3)},
	Describe: describeDeberta,
	Fuse:     fuseDeberta,
}

// debertaONNXReason is why target=onnx leaves the block decomposed.
const debertaONNXReason = "disentangled attention has no standard ONNX operator below opset 23 " +
	"(Attention-23's additive float mask could carry c2p+p2c, but fuse does not raise a model to opset 23); left decomposed"

// dbp builds the patterns, recording every name it binds (the rule's Internal list: the
// rule does its own escape check, see debertaEscapes) and which of them the fused operator
// replaces (core).
type dbp struct {
	names []string
	core  map[string]bool
}

func (d *dbp) name(n string, core bool) {
	d.names = append(d.names, n)
	if core {
		d.core[n] = true
	}
}

func (d *dbp) op(name string, core bool, op string, in ...patterns.Pattern) *patterns.OpPat {
	d.name(name, core)
	return patterns.Op(op, in...).As(name)
}

func (d *dbp) bind(name string, p patterns.Pattern) patterns.Pattern {
	d.name(name, false)
	return patterns.Bind(name, p)
}

func (d *dbp) v(name string) patterns.Pattern {
	d.name(name, false)
	return patterns.Var(name)
}

// scaled matches x, x/s or x·s, binding s as p_scale.
func (d *dbp) scaled(p string, core bool, x patterns.Pattern) patterns.Pattern {
	s := d.bind(p+"_scale", patterns.Any())
	return patterns.Or(d.op(p+"_scale_div", core, "Div", x, s), d.op(p+"_scale_mul", core, "Mul", x, s), x)
}

// dbSwapsLastTwo: a Transpose whose perm is the identity but for the last two axes.
func dbSwapsLastTwo(n *ir.Node) bool {
	p, ok := n.AttrInts("perm")
	r := len(p)
	if !ok || r < 2 {
		return false
	}
	for i := 0; i < r-2; i++ {
		if p[i] != int64(i) {
			return false
		}
	}
	return p[r-2] == int64(r-1) && p[r-1] == int64(r-2)
}

// dbLastAxis: the node's axis attribute names the last axis of its first input.
func dbLastAxis(def int64) func(n *ir.Node) bool {
	return func(n *ir.Node) bool {
		a := n.AttrInt("axis", def)
		if a == -1 {
			return true
		}
		in := n.Input(0)
		return in != nil && in.Type != nil && in.Type.Rank() > 0 && a == int64(in.Type.Rank()-1)
	}
}

// dbBroadcastsOverHeads: a mask whose head axis (third from the end) is absent or 1.
func dbBroadcastsOverHeads(v *ir.Value) bool {
	if v.Type == nil || v.Type.Rank() < 0 {
		return false
	}
	r := v.Type.Rank()
	if r < 3 {
		return true
	}
	d := v.Type.Shape[r-3]
	return d.Known && d.Value == 1
}

// split4 is x → Reshape(·, [batch, seq, heads, -1]) → Transpose(0,2,1,3).
func (d *dbp) split4(p string, x patterns.Pattern) patterns.Pattern {
	return d.op(p+"_split", false, "Transpose", d.op(p+"_split_reshape", false, "Reshape", x, patterns.Any())).
		If("perm=[0,2,1,3]", permIs(0, 2, 1, 3))
}

// heads4 matches the 4-D heads of projection p: its own projection split into heads, or
// a third of the packed in_proj's heads (v1), plus a per-head bias.
func (d *dbp) heads4(p string) patterns.Pattern {
	mm := d.op(p+"_mm", false, "MatMul", d.v("input"), d.bind(p+"_weight", patterns.Any()))
	proj := d.bind(p+"_proj", patterns.Or(d.op(p+"_bias_add", false, "Add", mm, d.bind(p+"_bias", patterns.Any())), mm))
	own := d.split4(p, proj)

	qkv := d.op("qkv_mm", false, "MatMul", d.v("input"), d.bind("qkv_weight", patterns.Any()))
	packed := d.bind("qkv_heads", d.split4("qkv", qkv))
	slice := patterns.Or(
		d.op(p+"_slice", false, "Slice", packed, patterns.Any(), patterns.Any(), patterns.Any()),
		d.op(p+"_slice", false, "Slice", packed, patterns.Any(), patterns.Any(), patterns.Any(), patterns.Any()))
	third := patterns.Or(d.op(p+"_slice_bias", false, "Add", slice, d.bind(p+"_bias", patterns.Any())), slice)
	return d.bind(p+"_heads4", patterns.Or(own, third))
}

// heads matches the heads the products read: 4-D, or (rank 3) flattened to [b·h, s, d].
func (d *dbp) heads(p string, rank int) patterns.Pattern {
	if rank == 4 {
		return d.bind(p+"_heads", d.heads4(p))
	}
	return d.bind(p+"_heads", d.op(p+"_heads_reshape", false, "Reshape", d.heads4(p), patterns.Any()))
}

// relTerms returns the c2p and p2c patterns. query and key are what their MatMuls read.
func (d *dbp) relTerms(query, key patterns.Pattern) (c2p, p2c patterns.Pattern) {
	zero := patterns.ConstNear(0, 0)
	c2pmm := d.op("c2p_mm", false, "MatMul", query, d.bind("pos_key", patterns.Any()))
	c2pg := d.op("c2p_gather", false, "GatherElements", c2pmm, d.bind("c2p_pos", patterns.Any())).
		If("axis=last", dbLastAxis(0))
	c2p = d.bind("c2p", patterns.Optional(d.op("c2p_add0", false, "Add", d.scaled("c2p", false, c2pg), zero)))

	p2cmm := d.op("p2c_mm", false, "MatMul", key, d.bind("pos_query", patterns.Any()))
	p2cg := d.op("p2c_gather", false, "GatherElements", p2cmm, d.bind("p2c_pos", patterns.Any())).
		If("axis=last", dbLastAxis(0))
	p2ct := d.op("p2c_t", false, "Transpose", p2cg).If("swaps the last two axes", dbSwapsLastTwo)
	p2c = d.bind("p2c", patterns.Optional(d.op("p2c_add0", false, "Add", d.scaled("p2c", false, p2ct), zero)))
	return c2p, p2c
}

// debertaRule is the decomposed block with heads of the given rank (4: v1, 3: v2).
func debertaRule(name string, rank int) *patterns.Rule {
	d := &dbp{core: map[string]bool{}}
	// Matching order matters for the Vars: the Q·Kᵀ pattern (which binds q_heads, q_op and
	// k_heads) is always matched before the relative terms that refer to them, because
	// every Add below lists qk first and the matcher matches inputs left to right (also
	// when it tries the swapped operand order of a commutative op).
	kt := d.op("kt", true, "Transpose", d.heads("k", rank)).If("swaps the last two axes", dbSwapsLastTwo)
	qop := d.bind("q_op", d.scaled("q", false, d.heads("q", rank)))
	qkmm := d.op("qk_mm", true, "MatMul", qop, d.scaled("k", true, kt))
	qk := d.bind("qk", d.scaled("qk", true, qkmm))

	c2p, p2c := d.relTerms(patterns.Or(d.v("q_op"), d.v("q_heads")), d.v("k_heads"))
	rel := d.op("rel", false, "Add", c2p, p2c)
	sum := patterns.Or(
		d.op("score_add", true, "Add", qk, rel),
		d.op("score_add", true, "Add", d.op("score_add_c2p", true, "Add", qk, c2p), p2c),
		d.op("score_add", true, "Add", d.op("score_add_p2c", true, "Add", qk, p2c), c2p),
		d.op("score_add", true, "Add", qk, c2p),
		d.op("score_add", true, "Add", qk, p2c))
	var scores patterns.Pattern
	if rank == 4 {
		scores = d.bind("scores", sum)
	} else {
		scores = d.op("scores", true, "Reshape", sum, patterns.Any())
	}
	mask := d.v("mask")
	addMask := d.bind("mask_add", patterns.Where("broadcasts over heads", patterns.Any(), dbBroadcastsOverHeads))
	masked := patterns.Or(
		d.op("mask_fill", true, "Where", mask, d.bind("mask_fill_value", patterns.Any()), scores),
		d.op("mask_add_node", true, "Add", scores, addMask),
		scores)
	sm := d.op("softmax", true, "Softmax", masked)
	probs := patterns.Or(d.op("probs", true, "Where", d.v("zero_mask"), patterns.ConstNear(0, 0), sm), sm)
	var ctx patterns.Pattern
	if rank == 4 {
		ctx = d.op("context", true, "MatMul", probs, d.heads("v", rank))
	} else {
		pv := d.op("pv", true, "MatMul", d.op("probs3", true, "Reshape", probs, patterns.Any()), d.heads("v", rank))
		ctx = d.op("context", true, "Reshape", pv, patterns.Any())
	}
	merge := d.op("merge", true, "Transpose", ctx).If("perm=[0,2,1,3]", permIs(0, 2, 1, 3))
	root := d.op("output", false, "Reshape", merge, patterns.Any())
	core := d.core
	return &patterns.Rule{
		Name:     name,
		Pattern:  root,
		Internal: d.names,
		Check:    func(m *patterns.Match) string { return checkDeberta(m, core) },
	}
}

// debertaFusedRule is what fuseDeberta produces: MultiHeadAttention whose attention_bias
// holds the relative terms, optionally with the mask and the row zeroing.
func debertaFusedRule() *patterns.Rule {
	d := &dbp{core: map[string]bool{}}
	c2p, p2c := d.relTerms(d.v("c2p_query"), d.v("p2c_key"))
	rel := patterns.Or(d.op("rel", false, "Add", c2p, p2c), c2p, p2c)
	rel4 := patterns.Or(d.op("rel_reshape", false, "Reshape", rel, patterns.Any()), rel)
	bias := d.bind("attention_bias", patterns.Or(d.op("bias_mask_add", false, "Add", rel4, d.bind("mask_bias", patterns.Any())), rel4))
	mha := d.op("mha", false, "MultiHeadAttention", d.v("query"), d.v("key"), d.v("value"), nil, nil, bias).In("com.microsoft")
	root := patterns.Or(d.op("row_zero", false, "Mul", mha, d.bind("row_keep", patterns.Any())), mha)
	return &patterns.Rule{Name: "attention/deberta-mha", Pattern: root, Internal: d.names}
}

// ---- checks ----

func checkDeberta(m *patterns.Match, core map[string]bool) string {
	if why := debertaEscapes(m, core); why != "" {
		return why
	}
	if why := checkDebertaProjections(m); why != "" {
		return why
	}
	if _, _, why := debertaHeads(m); why != "" {
		return why
	}
	if n := m.N("softmax"); n.Attr("axis") == nil {
		return "Softmax has no axis attribute (its default differs between opsets)"
	} else if !dbLastAxis(-1)(n) {
		return fmt.Sprintf("Softmax over axis %d, not the last", n.AttrInt("axis", -1))
	}
	if m.Has("mask_fill") {
		fill, ok := dbScalar(m.V("mask_fill_value"))
		if !ok {
			return "the masked-score fill value is not a constant"
		}
		if fill > -1e4 {
			return fmt.Sprintf("masked scores are filled with %g, not a large negative number (<= -1e4)", fill)
		}
	}
	if m.Has("probs") {
		mk := m.V("zero_mask")
		if m.Has("mask_fill") && !dbSameValue(m.V("mask"), mk, 8) {
			return fmt.Sprintf("XSoftmax's two masked_fills use different masks (%q and %q)", m.V("mask").Name, mk.Name)
		}
		if mk.Type == nil || mk.Type.Rank() != 4 || !dbBroadcastsOverHeads(mk) {
			return fmt.Sprintf("mask %q is typed %v, not [batch, 1, seq|1, seq]: the rows XSoftmax zeroes cannot be restored after the fused op", mk.Name, mk.Type)
		}
	}
	return ""
}

// debertaEscapes refuses a block whose replaced values (core) are used outside it, other
// than by Shape nodes (the exporter's dynamic reshape targets, dead once the block is
// fused), or are graph outputs. Projections, heads and the relative terms may be used
// anywhere: the fused block keeps them.
func debertaEscapes(m *patterns.Match, core map[string]bool) string {
	in := map[*ir.Node]bool{}
	for _, n := range m.All {
		in[n] = true
	}
	for _, name := range dbSortedKeys(core) {
		v := m.V(name)
		if v == nil || v == m.Root {
			continue
		}
		if p, _ := v.Producer(); p == nil || !in[p] {
			continue
		}
		if v.IsGraphOutput() {
			return fmt.Sprintf("intermediate value %q (%s) is a graph output", v.Name, name)
		}
		for _, u := range v.Uses() {
			if !in[u.Node] && !(u.Node.OpType == "Shape" && u.Node.Domain == "") {
				return fmt.Sprintf("intermediate value %q (%s) is also used outside the block by %s", v.Name, name, u.Node)
			}
		}
	}
	return ""
}

func dbSortedKeys(s map[string]bool) []string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func debertaPacked(m *patterns.Match) bool { return m.Has("qkv_mm") }

// checkDebertaProjections: Q, K and V come from one layout (three projections, or thirds of
// the packed in_proj, in order q, k, v).
func checkDebertaProjections(m *patterns.Match) string {
	own := 0
	for _, p := range []string{"q", "k", "v"} {
		if m.Has(p + "_mm") {
			own++
		}
	}
	if own != 0 && own != 3 {
		return "query, key and value come from different projection layouts (separate and packed)"
	}
	if own == 3 {
		if r := m.V("q_proj").Type.Rank(); r != 3 {
			return fmt.Sprintf("the query projection %q has rank %d, not [batch, seq, hidden]", m.V("q_proj").Name, r)
		}
		return ""
	}
	// Packed: [batch, heads, seq, 3·d] sliced into thirds (q, k, v) on the last axis.
	hd := m.V("qkv_heads").Type
	if hd.Rank() != 4 || !hd.Shape[3].Known || hd.Shape[3].Value%3 != 0 {
		return fmt.Sprintf("the packed in_proj heads %q are typed %v, not [batch, heads, seq, 3·head_size]", m.V("qkv_heads").Name, hd)
	}
	d := hd.Shape[3].Value / 3
	for i, p := range []string{"q", "k", "v"} {
		n := m.N(p + "_slice")
		lo, hi := int64(i)*d, int64(i+1)*d
		starts, ok1 := dbInts(n.Input(1))
		ends, ok2 := dbInts(n.Input(2))
		axes, ok3 := dbInts(n.Input(3))
		steps := []int64{1}
		ok4 := true
		if n.Input(4) != nil {
			steps, ok4 = dbInts(n.Input(4))
		}
		name := map[string]string{"q": "query", "k": "key", "v": "value"}[p]
		if !ok1 || !ok2 || !ok3 || !ok4 {
			// Bounds computed at run time (an unfolded export): the fused form reads the
			// slices as they are, so only their width matters, which the type tells.
			if t := n.Output(0).Type; t == nil || t.Rank() != 4 || !t.Shape[3].Known || t.Shape[3].Value != d {
				return fmt.Sprintf("the %s slice of the packed in_proj heads is typed %v, not %d wide on the last axis", name, t, d)
			}
			continue
		}
		if len(starts) != 1 || len(ends) != 1 || len(axes) != 1 || len(steps) != 1 ||
			starts[0] != lo || !(ends[0] == hi || (i == 2 && ends[0] >= hi)) || (axes[0] != -1 && axes[0] != 3) || steps[0] != 1 {
			return fmt.Sprintf("the %s slice of the packed in_proj heads is not [%d, %d) on the last axis", name, lo, hi)
		}
	}
	return ""
}

// debertaHeads returns the head count and size from the types of the split heads.
func debertaHeads(m *patterns.Match) (n, d int64, why string) {
	split := m.V("q_split")
	if debertaPacked(m) {
		split = m.V("qkv_split")
	}
	h4 := m.V("q_heads4")
	if split == nil || h4 == nil {
		return 0, 0, "query heads not found"
	}
	st, ht := split.Type, h4.Type
	if st == nil || ht == nil || st.Rank() != 4 || ht.Rank() != 4 || !st.Shape[1].Known || !ht.Shape[3].Known {
		return 0, 0, fmt.Sprintf("head count or size unknown (query heads %q typed %v)", h4.Name, ht)
	}
	return st.Shape[1].Value, ht.Shape[3].Value, ""
}

// debertaScale is the multiplier the block applies to Q·Kᵀ: the scales on Q, on Kᵀ and on
// the product, each a scalar constant.
func debertaScale(m *patterns.Match) (float64, string) {
	s := 1.0
	for _, p := range []string{"q", "k", "qk"} {
		div, mul := m.Has(p+"_scale_div"), m.Has(p+"_scale_mul")
		if !div && !mul {
			continue
		}
		v, ok := dbScalar(m.V(p + "_scale"))
		if !ok {
			return 0, fmt.Sprintf("the scale of Q·Kᵀ (%q) is not a scalar constant (computed at run time: run fold first)", m.V(p+"_scale").Name)
		}
		if div {
			if v == 0 {
				return 0, "Q·Kᵀ is divided by 0"
			}
			v = 1 / v
		}
		s *= v
	}
	return s, ""
}

// dbSameValue reports whether a and b are the same value, or computed by the same ops
// with the same attributes from the same (or equal constant) inputs: an unfolded export
// computes XSoftmax's mask twice.
func dbSameValue(a, b *ir.Value, depth int) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil || depth == 0 {
		return false
	}
	if ta, tb := patterns.ConstOf(a), patterns.ConstOf(b); ta != nil || tb != nil {
		if ta == nil || tb == nil || ta.DType != tb.DType || fmt.Sprint(ta.Dims) != fmt.Sprint(tb.Dims) || ta.NumElements() > 64 {
			return false
		}
		x, err1 := ta.Bytes()
		y, err2 := tb.Bytes()
		return err1 == nil && err2 == nil && string(x) == string(y)
	}
	na, ia := a.Producer()
	nb, ib := b.Producer()
	if na == nil || nb == nil || ia != ib || na.OpType != nb.OpType || na.Domain != nb.Domain ||
		len(na.Inputs()) != len(nb.Inputs()) || len(na.Attrs) != len(nb.Attrs) || len(na.Subgraphs()) > 0 {
		return false
	}
	for _, at := range na.Attrs {
		if !dbSameAttr(at, nb.Attr(at.Name)) {
			return false
		}
	}
	for i := range na.Inputs() {
		if !dbSameValue(na.Input(i), nb.Input(i), depth-1) {
			return false
		}
	}
	return true
}

// dbSameAttr compares scalar and list attributes; tensors and graphs only by identity.
func dbSameAttr(a, b *ir.Attr) bool {
	if b == nil || a.Type != b.Type || a.Float != b.Float || a.Int != b.Int || string(a.String) != string(b.String) ||
		a.Tensor != b.Tensor || a.Graph != b.Graph || a.RefAttrName != b.RefAttrName ||
		fmt.Sprint(a.Floats) != fmt.Sprint(b.Floats) || fmt.Sprint(a.Ints) != fmt.Sprint(b.Ints) ||
		fmt.Sprintf("%q", a.Strings) != fmt.Sprintf("%q", b.Strings) || len(a.Tensors)+len(a.Graphs)+len(b.Tensors)+len(b.Graphs) > 0 {
		return false
	}
	return true
}

func dbScalar(v *ir.Value) (float64, bool) {
	t := patterns.ConstOf(v)
	if t == nil || t.NumElements() != 1 {
		return 0, false
	}
	f, err := t.Float64s()
	if err != nil || len(f) != 1 {
		return 0, false
	}
	return f[0], true
}

func dbInts(v *ir.Value) ([]int64, bool) {
	t := patterns.ConstOf(v)
	if t == nil || t.NumElements() > 8 || !t.DType.IsInt() {
		return nil, false
	}
	x, err := t.Int64s()
	return x, err == nil
}

// ---- describe ----

func describeDeberta(m *patterns.Match, b *Block) {
	set := func(role string, v *ir.Value) {
		if v != nil {
			b.Roles[role] = v
		}
	}
	for _, r := range []string{"c2p", "p2c", "rel", "pos_key", "pos_query", "c2p_pos", "p2c_pos"} {
		set(r, m.V(r))
	}
	if e := dbRelEmbeddings(m.V("pos_key")); e != nil {
		set("rel_embeddings", e)
	} else if e := dbRelEmbeddings(m.V("pos_query")); e != nil {
		set("rel_embeddings", e)
	}
	set("output", m.Root)
	if b.Variant == "attention/deberta-mha" {
		describeDebertaFused(m, b, set)
		return
	}
	set("input", m.V("input"))
	set("context", m.V("context"))
	set("scores", m.V("qk"))
	set("attention_scores", m.V("scores"))
	if m.Has("probs") {
		set("probs", m.V("probs"))
	} else {
		set("probs", m.V("softmax"))
	}
	mask := m.V("mask")
	if mask == nil {
		mask = m.V("mask_add")
	}
	if mask == nil {
		mask = m.V("zero_mask")
	}
	if mask != nil {
		set("block_mask", mask)
		if raw := dbMaskSource(mask); raw != nil {
			mask = raw
		}
		set("mask", mask)
	}
	for _, p := range []string{"q", "k", "v"} {
		set(p+"_heads", m.V(p+"_heads"))
		set(p+"_bias", m.V(p+"_bias"))
		if debertaPacked(m) {
			set(p+"_weight", m.V("qkv_weight"))
			set(p+"_matmul", m.V("qkv_mm"))
		} else {
			set(p+"_weight", m.V(p+"_weight"))
			set(p+"_matmul", m.V(p+"_mm"))
		}
	}
	if debertaPacked(m) {
		set("qkv_weight", m.V("qkv_weight"))
		set("qkv_matmul", m.V("qkv_mm"))
	}
	if n, d, why := debertaHeads(m); why == "" {
		b.Params["num_heads"], b.Params["head_size"], b.Params["hidden"] = float64(n), float64(d), float64(n*d)
	}
	if s, why := debertaScale(m); why == "" {
		b.Params["scale"] = s
	}
}

func describeDebertaFused(m *patterns.Match, b *Block, set func(string, *ir.Value)) {
	b.Fused = true
	mha := m.N("mha")
	set("context", mha.Output(0))
	set("query", m.V("query"))
	set("key", m.V("key"))
	set("value", m.V("value"))
	set("attention_bias", m.V("attention_bias"))
	if mb := m.V("mask_bias"); mb != nil {
		if p, _ := mb.Producer(); p != nil && p.OpType == "Where" {
			mb = p.Input(0)
		}
		set("block_mask", mb)
		if raw := dbMaskSource(mb); raw != nil {
			mb = raw
		}
		set("mask", mb)
	}
	for _, p := range []string{"q", "k", "v"} {
		x, w, bias, mm := dbTraceProjection(m.V(map[string]string{"q": "query", "k": "key", "v": "value"}[p]))
		set("input", x)
		set(p+"_weight", w)
		set(p+"_bias", bias)
		set(p+"_matmul", mm)
	}
	n := mha.AttrInt("num_heads", 0)
	b.Params["num_heads"] = float64(n)
	if a := mha.Attr("scale"); a != nil {
		b.Params["scale"] = float64(a.Float)
	}
	if t := m.Root.Type; n > 0 && t != nil && t.Rank() == 3 && t.Shape[2].Known {
		b.Params["hidden"] = float64(t.Shape[2].Value)
		b.Params["head_size"] = float64(t.Shape[2].Value / n)
	}
}

// dbMaskSource finds the [batch, seq] graph input a block's mask is computed from (through
// the exporter's Unsqueeze/Mul/Sub/Cast chain), or nil when it depends on none or several.
func dbMaskSource(v *ir.Value) *ir.Value {
	var found *ir.Value
	seen := map[*ir.Value]bool{}
	var walk func(v *ir.Value, depth int) bool
	walk = func(v *ir.Value, depth int) bool {
		if v == nil || seen[v] || patterns.ConstOf(v) != nil {
			return true
		}
		seen[v] = true
		if v.IsGraphInput() {
			if found != nil && found != v {
				return false
			}
			found = v
			return true
		}
		n, _ := v.Producer()
		if n == nil || depth > 12 || len(seen) > 64 {
			return false
		}
		for _, in := range n.Inputs() {
			if !walk(in, depth+1) {
				return false
			}
		}
		return true
	}
	if !walk(v, 0) || found == nil || found.Type == nil || found.Type.Rank() != 2 {
		return nil
	}
	return found
}

// dbTraceProjection follows a fused operator's query/key/value back through the head
// reshapes, transposes and slices to the projection MatMul: its input, weight, the bias
// added after it, and its output.
func dbTraceProjection(v *ir.Value) (x, w, bias, mm *ir.Value) {
	for i := 0; v != nil && i < 8; i++ {
		n, _ := v.Producer()
		if n == nil || n.Domain != "" {
			return
		}
		switch n.OpType {
		case "Reshape", "Transpose", "Slice", "Identity":
			v = n.Input(0)
		case "Add":
			a, c := n.Input(0), n.Input(1)
			if patterns.ConstOf(a) != nil {
				a, c = c, a
			}
			if patterns.ConstOf(c) == nil {
				return
			}
			if bias == nil {
				bias = c
			}
			v = a
		case "MatMul":
			return n.Input(0), n.Input(1), bias, v
		default:
			return
		}
	}
	return
}

// dbRelEmbeddings follows a projected relative-embedding value back to the [positions,
// hidden] table it comes from (through the head split, Tile/Expand, the projection
// MatMul and bias, the LayerNorm of v2 and the span Slice). nil when it cannot be traced
// (fold may have computed the projection into a constant).
func dbRelEmbeddings(v *ir.Value) *ir.Value {
	for i := 0; v != nil && i < 16; i++ {
		if t := patterns.ConstOf(v); t != nil || v.IsGraphInput() {
			if v.Type != nil && v.Type.Rank() == 2 || t != nil && len(t.Dims) == 2 {
				return v
			}
			return nil
		}
		n, _ := v.Producer()
		if n == nil || n.Domain != "" {
			return nil
		}
		switch n.OpType {
		case "Reshape", "Transpose", "Tile", "Expand", "Unsqueeze", "Squeeze", "Slice", "Identity", "Cast",
			"LayerNormalization", "Div", "Mul", "Sub", "Add", "MatMul":
			// The data input is the one that is not a constant (MatMul: the activation).
			next := n.Input(0)
			if n.OpType == "Add" || n.OpType == "Mul" {
				if patterns.ConstOf(next) != nil && n.Input(1) != nil {
					next = n.Input(1)
				}
			}
			v = next
		default:
			return nil
		}
	}
	return nil
}

// ---- fuse ----

func fuseDeberta(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error) {
	if env.Target != ORT {
		return nil, debertaONNXReason, nil
	}
	m := b.Match
	model := env.Model
	// No opset guard: c2p's GatherElements (opset 11) is newer than the Slice with inputs
	// (10) the fused form adds.
	n, _, why := debertaHeads(m)
	if why != "" {
		return nil, why, nil
	}
	scale, why := debertaScale(m)
	if why != "" {
		return nil, why, nil
	}
	// Everything that can refuse comes before the first new node.
	c2p, p2c := m.V("c2p"), m.V("p2c")
	term := c2p
	if term == nil {
		term = p2c
	}
	if term.Type == nil || term.Type.Rank() < 3 || term.Type.Rank() > 4 {
		return nil, fmt.Sprintf("relative term %q is typed %v, not of rank 3 or 4", term.Name, term.Type), nil
	}
	dt := ir.Undefined
	if m.Root.Type != nil {
		dt = m.Root.Type.DType
	}
	if why := loweredDType(ORT, dt, "attention"); why != "" {
		return nil, why, nil
	}
	i64 := func(base string, v ...int64) *ir.Value {
		return rw.Const(base, ir.Int64Tensor([]int64{int64(len(v))}, v))
	}
	scalar := func(base string, v float64) *ir.Value {
		t, _ := ir.Filled(dt, []int64{}, v)
		return rw.Const(base, t)
	}
	node := func(op string, in []*ir.Value, base string, attrs ...*ir.Attr) *ir.Value {
		return rw.Node(op, "", in, 1, base, attrs...).Output(0)
	}
	base := m.Root.Name
	if p, _ := m.Root.Producer(); p != nil && p.Name != "" {
		base = p.Name
	}

	// Query, key, value: the [batch, seq, hidden] projections, or (packed in_proj) the query
	// heads merged back and the key/value heads as they are ([batch, heads, seq, d], which
	// MultiHeadAttention reads as BNSH).
	var q, k, v *ir.Value
	if debertaPacked(m) {
		qt := node("Transpose", []*ir.Value{m.V("q_heads4")}, base+"/query_bsnh", ir.IntsAttr("perm", 0, 2, 1, 3))
		q = node("Reshape", []*ir.Value{qt, i64(base+"/merge_shape", 0, 0, -1)}, base+"/query")
		k, v = m.V("k_heads4"), m.V("v_heads4")
	} else {
		q, k, v = m.V("q_proj"), m.V("k_proj"), m.V("v_proj")
	}

	// attention_bias: the relative terms (already scaled by the block), reshaped to
	// [batch, heads, seq, seq] when the heads are flattened, plus the mask.
	rel := m.V("rel")
	if rel == nil {
		switch {
		case c2p != nil && p2c != nil:
			rel = node("Add", []*ir.Value{c2p, p2c}, base+"/rel")
		case c2p != nil:
			rel = c2p
		default:
			rel = p2c
		}
	}
	if term.Type.Rank() == 3 {
		shp := node("Shape", []*ir.Value{rel}, base+"/rel_shape")
		ss := node("Slice", []*ir.Value{shp, i64(base+"/one", 1), i64(base+"/three", 3)}, base+"/rel_ss")
		tgt := node("Concat", []*ir.Value{i64(base+"/rel_heads", -1, n), ss}, base+"/rel_shape4", ir.IntAttr("axis", 0))
		rel = node("Reshape", []*ir.Value{rel, tgt}, base+"/rel4")
	}
	bias := rel
	switch {
	case m.Has("mask_fill"):
		fill, _ := dbScalar(m.V("mask_fill_value"))
		fill = math.Max(fill, -dt.MaxFinite()) // -inf would turn fully masked rows into NaN before the zeroing
		mb := dbFindMaskBias(m.V("mask"), fill, dt)
		if mb == nil {
			mb = node("Where", []*ir.Value{m.V("mask"), scalar(base+"/fill", fill), scalar(base+"/zero", 0)}, "deberta_mask_bias")
		}
		bias = node("Add", []*ir.Value{rel, mb}, base+"/attention_bias")
	case m.Has("mask_add"):
		bias = node("Add", []*ir.Value{rel, m.V("mask_add")}, base+"/attention_bias")
	}

	mha := rw.Node("MultiHeadAttention", "com.microsoft", []*ir.Value{q, k, v, nil, nil, bias}, 1, base+"/mha",
		ir.IntAttr("num_heads", n), ir.FloatAttr("scale", float32(scale)))
	out := mha.Output(0)
	out.Type = m.Root.Type.Clone()
	if m.Has("probs") {
		keep := dbFindRowKeep(m.V("zero_mask"), dt)
		if keep == nil {
			keep = dbRowKeep(rw, m.V("zero_mask"), model.Opset(""), dt)
		}
		out = node("Mul", []*ir.Value{out, keep}, base+"/zero_masked_rows")
	}
	rw.Replace(m.Root, out)
	EnsureOpset(model, "com.microsoft", 1)
	return mha, "", nil
}

// dbRowKeep builds [batch, seq, 1] = 1 where a query row has at least one unmasked key, 0
// where XSoftmax zeroes the whole row: Reshape(ReduceMax(Cast(Not(mask)), last), [0,-1,1]).
func dbRowKeep(rw *patterns.Rewriter, mask *ir.Value, opset int64, dt ir.DataType) *ir.Value {
	not := rw.Node("Not", "", []*ir.Value{mask}, 1, "deberta_keep").Output(0)
	f := rw.Node("Cast", "", []*ir.Value{not}, 1, "deberta_keep", ir.IntAttr("to", int64(dt))).Output(0)
	var mx *ir.Value
	if opset >= 18 {
		ax := rw.Const("deberta_keep_axes", ir.Int64Tensor([]int64{1}, []int64{-1}))
		mx = rw.Node("ReduceMax", "", []*ir.Value{f, ax}, 1, "deberta_keep", ir.IntAttr("keepdims", 1)).Output(0)
	} else {
		mx = rw.Node("ReduceMax", "", []*ir.Value{f}, 1, "deberta_keep", ir.IntsAttr("axes", -1), ir.IntAttr("keepdims", 1)).Output(0)
	}
	shape := rw.Const("deberta_keep_shape", ir.Int64Tensor([]int64{3}, []int64{0, -1, 1}))
	return rw.Node("Reshape", "", []*ir.Value{mx, shape}, 1, "deberta_row_keep").Output(0)
}

// dbFindMaskBias finds Where(mask, fill, 0) built for an earlier layer.
func dbFindMaskBias(mask *ir.Value, fill float64, dt ir.DataType) *ir.Value {
	for _, u := range mask.Uses() {
		n := u.Node
		if n.OpType != "Where" || n.Domain != "" || u.Index != 0 || n.Input(0) != mask {
			continue
		}
		f, ok1 := dbScalar(n.Input(1))
		z, ok2 := dbScalar(n.Input(2))
		if ok1 && ok2 && float32(f) == float32(fill) && z == 0 && patterns.ConstOf(n.Input(2)).DType == dt {
			return n.Output(0)
		}
	}
	return nil
}

// dbFindRowKeep finds the row-keep factor built for an earlier layer.
func dbFindRowKeep(mask *ir.Value, dt ir.DataType) *ir.Value {
	next := func(v *ir.Value, op string, ok func(n *ir.Node) bool) *ir.Value {
		if v == nil {
			return nil
		}
		for _, u := range v.Uses() {
			if n := u.Node; n.OpType == op && n.Domain == "" && u.Index == 0 && ok(n) {
				return n.Output(0)
			}
		}
		return nil
	}
	anyNode := func(*ir.Node) bool { return true }
	v := next(mask, "Not", anyNode)
	v = next(v, "Cast", func(n *ir.Node) bool { return n.AttrInt("to", 0) == int64(dt) })
	v = next(v, "ReduceMax", func(n *ir.Node) bool {
		ax, ok := n.AttrInts("axes")
		if !ok && len(n.Inputs()) > 1 {
			ax, ok = dbInts(n.Input(1))
		}
		return ok && len(ax) == 1 && ax[0] == -1 && n.AttrInt("keepdims", 1) == 1
	})
	return next(v, "Reshape", func(n *ir.Node) bool {
		s, ok := dbInts(n.Input(1))
		return ok && len(s) == 3 && s[0] == 0 && s[1] == -1 && s[2] == 1
	})
}
