package transformer

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/patterns"
)

// AttentionFamily recognises multi-head self-attention written out from the math, in the
// shapes encoder exporters leave it, and fuses it into com.microsoft.Attention (target
// ort) or the standard Attention-23 (target onnx, when the model's opset allows it).
var AttentionFamily = &Family{
	Kind: Attention,
	Doc: `Multi-head self-attention: softmax(scale·QKᵀ + mask)·V with the heads split and merged.

Matched from the math, one input X feeding three projections:
  Q = X·Wq + bq, K = X·Wk + bk, V = X·Wv + bv     MatMul, then Add with the bias first or
                                                   second (no Add: no bias)
  heads: Reshape to [B,S,N,D], Transpose [0,2,1,3] (K: [0,2,3,1] at once, or [0,2,1,3]
         then [0,1,3,2])
  scores = Q·Kᵀ, scaled by Div or Mul with a constant on the scores, or on Q or K (before
         or after the head split, or on Kᵀ) — the factors multiply into "scale"
  mask:  attention/add-mask    scores + M, M computed elementwise from a [B,S] 0/1 mask
                               (BERT's (1 − m)·finfo.min or ·−10000, boolean Where forms,
                               an all-ones mask), or a float [B|1,1,1|S,S] additive mask
                               graph input
         attention/where-mask  Where(c, fill, scores) or Where(c, scores, fill) with c a
                               boolean function of the [B,S] mask (DistilBERT masked_fill)
         attention/no-mask     nothing
  probs = Softmax over the last axis (Dropout allowed after it); context = probs·V;
  output = Reshape(Transpose(context, [0,2,1,3]), [B,S,N·D]), or the transposed context
  itself when the output projection reads [B,S,N,D] (older ALBERT's einsum; the fused
  output is reshaped back).
Q/DQ pairs on X (per projection or shared) or on the inputs of Q·Kᵀ and probs·V, and
DequantizeLinear weights, are recognised too. A float Attention would drop those numerics:
for target ort with provider=cpu, a block quantized on X and the weights only becomes
attention/fused-onnx when Env.RaiseOpset allows opset 23 (Attention-23 on the Q/K/V
projections, which QLinearRules turn into MatMulIntegerToFloat: ORT's CPU kernel for it
runs the core faster), else attention/fused-quantized (com.microsoft.QAttention: X as
uint8 per tensor, packed int8/uint8 weights with per-column scales, float biases); both
keep the Q/DQ graph's numbers. Any other quantized block is annotated but not rewritten.
The output projection (·Wo + bo) is not part of the block. Shape arithmetic that reads
the block's values (Shape nodes) may stay outside the match; it is dead after fusion.

Checks: the head split is [B,S,N,D] of X's [B,S,·] and the merge [B,S,N·D]; Q, K and V
have the same N and D; Softmax is over the last axis; the mask depends on one [B,S] graph
input and broadcasts as [B,1,1,S] over the keys (a mask that cannot be read that way is
"mask of an unknown form": recognised, left decomposed).

Mask analysis evaluates the mask subgraph (Cast, Unsqueeze, Reshape, Expand, arithmetic,
comparisons, Not, Where, constants) for a kept (1) and a masked (0) position of the one
graph input it reads: the Add form needs 0 at kept positions and takes the masked value as
mask_filter_value; the Where form needs a condition that selects the masked positions and
a fill ≤ -1000 (Where replaces a score, Attention adds to it).

Roles: input (X), output, mask (the raw [B,S] mask graph input, or the additive mask
input), q_weight, q_bias, k_weight, k_bias, v_weight, v_bias, q_matmul, k_matmul,
v_matmul (the projection MatMul outputs), scores (Q·Kᵀ), probs (softmax output), context
(probs·V). Fused forms add qkv_weight, qkv_bias. Params: num_heads, head_size, hidden
(N·D), scale, mask_filter_value (when masked).

Fused forms: attention/fused-quantized (com.microsoft.QAttention, above),
attention/fused (com.microsoft.Attention: X, [Wq|Wk|Wv], [bq|bk|bv],
mask_index = Cast(mask, int32), attributes num_heads, scale, mask_filter_value set to the
graph's own fill constant; an additive mask input goes to attention_bias, expanded to
[B,1,S,S] as ORT requires) and attention/fused-onnx (Attention-23 on the projected Q, K, V
with q_num_heads = kv_num_heads = N and an additive attn_mask: the graph's own mask, or
Where(c, fill, 0), expanded to [B,1,S,S]; the opset import is raised only as far as
Env.RaiseOpset allows and only when no other operator changes meaning). Attention fits better than MultiHeadAttention here:
it takes X and the packed weights, as ORT's own BERT fusion emits it, so QAttention and
the Q/K/V weight roles map onto it directly.`,
	Rules: []*patterns.Rule{
		{Name: "attention/fused", Pattern: patterns.Op("Attention").In("com.microsoft").As("attention"), Check: attnCheckFusedORT},
		{Name: "attention/fused-onnx", Pattern: patterns.Op("Attention").As("attention"), Check: attnCheckFusedONNX},
		{Name: "attention/fused-quantized", Pattern: patterns.Op("QAttention").In("com.microsoft").As("attention"), Check: attnCheckFusedQuant},
		attnRule("attention/add-mask", attnAddForm),
		attnRule("attention/where-mask", attnWhereForm),
		attnRule("attention/no-mask", attnNoMaskForm),
	},
	Describe: attnDescribe,
	Fuse:     attnFuse,
}

type attnMaskForm int

const (
	attnNoMaskForm attnMaskForm = iota
	attnAddForm
	attnWhereForm
)

// attnNames are the names the attention patterns bind; all of them may be read by
// Shape nodes outside the block (attnEscapes looks at the other uses).
var attnNames = []string{
	"q_dq", "k_dq", "v_dq", "q_q", "k_q", "v_q", "scores_a_q", "scores_a_dq", "scores_b_q", "scores_b_dq",
	"context_a_q", "context_a_dq", "context_b_q", "context_b_dq",
	"q_matmul", "k_matmul", "v_matmul", "q_add", "k_add", "v_add",
	"q_reshape", "k_reshape", "v_reshape", "q_heads", "k_heads", "v_heads", "k_t",
	"q_proj_div", "q_proj_mul", "q_heads_div", "q_heads_mul",
	"k_proj_div", "k_proj_mul", "k_heads_div", "k_heads_mul", "k_t_div", "k_t_mul",
	"scores", "scores_div", "scores_mul", "mask_add", "mask_where", "probs", "dropout",
	"context", "context_t", "output",
}

func attnRule(name string, form attnMaskForm) *patterns.Rule {
	return &patterns.Rule{
		Name:     name,
		Pattern:  attnPattern(form),
		Internal: attnNames,
		Check:    attnCheck,
	}
}

// attnScalar matches a constant holding one value (a scalar or a filled tensor).
func attnScalar() patterns.Pattern {
	return patterns.ConstWhere("scalar", func(vals []float64) bool {
		for _, v := range vals {
			if v != vals[0] {
				return false
			}
		}
		return len(vals) > 0
	})
}

// attnScaled is p, or p divided or multiplied by a constant (bound to name+"_div_c" or
// name+"_mul_c").
func attnScaled(name string, p patterns.Pattern) patterns.Pattern {
	op, bind := patterns.Op, patterns.Bind
	return patterns.Or(
		op("Div", p, bind(name+"_div_c", attnScalar())).As(name+"_div"),
		op("Mul", p, bind(name+"_mul_c", attnScalar())).As(name+"_mul"),
		p,
	)
}

// permIs matches a Transpose whose perm attribute is exactly want.
func permIs(want ...int64) func(n *ir.Node) bool {
	return func(n *ir.Node) bool {
		p, ok := n.AttrInts("perm")
		return ok && slices.Equal(p, want)
	}
}

// attnQDQ is x, or x through a QuantizeLinear/DequantizeLinear pair (zero points optional).
func attnQDQ(p string, x patterns.Pattern) patterns.Pattern { return patterns.Or(x, quantPair(p, x)) }

func attnPattern(form attnMaskForm) patterns.Pattern {
	op, v, anything, or := patterns.Op, patterns.Var, patterns.Any, patterns.Or
	x := v("input")
	proj := func(p string) patterns.Pattern { // X·W + b: [B,S,H]
		mm := op("MatMul", attnQDQ(p, x), v(p+"_weight")).As(p + "_matmul")
		return or(patterns.Optional(op("Add", mm, v(p+"_bias")).As(p+"_add")), qlinFused(p, x))
	}
	split := func(p string, in patterns.Pattern) *patterns.OpPat { // [B,S,H] -> [B,N,S,D]
		return op("Transpose", op("Reshape", in, anything()).As(p+"_reshape")).As(p+"_heads").
			If("perm=[0,2,1,3]", permIs(0, 2, 1, 3))
	}
	q := attnScaled("q_heads", split("q", attnScaled("q_proj", proj("q"))))
	k := attnScaled("k_proj", proj("k"))
	kt := attnScaled("k_t", or( // [B,N,D,S]
		op("Transpose", op("Reshape", k, anything()).As("k_reshape")).As("k_t").
			If("perm=[0,2,3,1]", permIs(0, 2, 3, 1)),
		op("Transpose", attnScaled("k_heads", split("k", k))).As("k_t").
			If("perm=[0,1,3,2]", permIs(0, 1, 3, 2)),
	))
	val := split("v", proj("v"))
	// A QDQ-quantized model has Q/DQ pairs on the inputs of both matmuls too.
	scores := attnScaled("scores", op("MatMul", attnQDQ("scores_a", q), attnQDQ("scores_b", kt)).As("scores"))
	var masked patterns.Pattern
	switch form {
	case attnAddForm:
		masked = op("Add", scores, v("mask_term")).As("mask_add")
	case attnWhereForm:
		fill := patterns.Bind("mask_fill", attnScalar())
		masked = or(
			op("Where", v("mask_cond"), fill, scores).As("mask_where"), // masked_fill
			op("Where", v("mask_keep"), scores, fill).As("mask_where"),
		)
	default:
		masked = scores
	}
	probs := op("Softmax", masked).As("probs")
	dropped := or(op("Dropout", probs).As("dropout"), op("Dropout", probs, anything()).As("dropout"),
		op("Dropout", probs, anything(), anything()).As("dropout"), probs)
	ctx := op("MatMul", attnQDQ("context_a", dropped), attnQDQ("context_b", val)).As("context")
	ctxT := op("Transpose", ctx).As("context_t").If("perm=[0,2,1,3]", permIs(0, 2, 1, 3))
	// The heads are merged by a Reshape to [B,S,N·D], or not at all when the output
	// projection reads [B,S,N,D] itself (older ALBERT's einsum "bfnd,ndh->bfh").
	return or(op("Reshape", ctxT, anything()).As("output"), ctxT)
}

// attnEscapes refuses a match whose intermediate values are used outside it, except by
// Shape nodes: exporters read the batch and sequence sizes off the projections and the
// context, and that shape arithmetic is dead once the block is fused.
func attnEscapes(m *patterns.Match) string { return escapesButShape(m.All, m.Root, nil) }

// escapesButShape says which value computed by nodes (other than out) a node outside
// them reads, other than for its shape (readsShapeOnly) or a reader in also, or that is a
// graph output.
func escapesButShape(nodes []*ir.Node, out *ir.Value, also map[*ir.Node]bool) string {
	in := map[*ir.Node]bool{}
	for _, n := range nodes {
		in[n] = true
	}
	for _, n := range nodes {
		for _, o := range n.Outputs() {
			if o == nil || o == out {
				continue
			}
			if o.IsGraphOutput() {
				return fmt.Sprintf("intermediate value %q is a graph output", o.Name)
			}
			for _, u := range o.Uses() {
				if !in[u.Node] && !also[u.Node] && !readsShapeOnly(u.Node, 0) {
					return fmt.Sprintf("intermediate value %q is also used outside the block by %s", o.Name, u.Node)
				}
			}
		}
	}
	return ""
}

// readsShapeOnly reports whether only the shape of n's input matters to the graph: n is
// a Shape, or a layout op whose outputs reach nothing but such nodes (nn.MultiheadAttention
// reads the key length off a transposed K).
func readsShapeOnly(n *ir.Node, depth int) bool {
	if n.OpType == "Shape" {
		return true
	}
	switch n.OpType {
	case "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten":
	default:
		return false
	}
	if depth > 4 || n.Domain != "" {
		return false
	}
	for _, o := range n.Outputs() {
		if o == nil || o.IsGraphOutput() {
			return false
		}
		for _, u := range o.Uses() {
			if !readsShapeOnly(u.Node, depth+1) {
				return false
			}
		}
	}
	return true
}

func attnShape(v *ir.Value) ir.Shape {
	if v == nil || v.Type == nil || !v.Type.HasShape {
		return nil
	}
	return v.Type.Shape
}

// attnHeads reads N and D off a head split's Reshape output [B,S,N,D] and checks B and S
// against X's.
func attnHeads(m *patterns.Match, p string, x ir.Shape) (n, d int64, why string) {
	s := attnShape(m.V(p + "_reshape"))
	if len(s) != 4 {
		return 0, 0, fmt.Sprintf("%s head split has unknown shape or rank %d, not [B,S,N,D]", p, len(s))
	}
	if !ir.SameDim(s[0], x[0]) || !ir.SameDim(s[1], x[1]) {
		return 0, 0, fmt.Sprintf("%s head split %v does not keep the input's batch and sequence %v", p, s, x)
	}
	if !s[2].Known || !s[3].Known {
		return 0, 0, fmt.Sprintf("%s head split %v: heads or head size unknown", p, s)
	}
	return s[2].Value, s[3].Value, ""
}

func attnCheck(m *patterns.Match) string {
	if why := attnEscapes(m); why != "" {
		return why
	}
	x := attnShape(m.V("input"))
	if len(x) != 3 {
		return fmt.Sprintf("input has shape %v, not [B,S,H]", x)
	}
	n, d, why := attnHeads(m, "q", x)
	if why != "" {
		return why
	}
	for _, p := range []string{"k", "v"} {
		n2, d2, why := attnHeads(m, p, x)
		if why != "" {
			return why
		}
		if n2 != n || d2 != d {
			return fmt.Sprintf("%s is split into %d heads of %d, Q into %d of %d", p, n2, d2, n, d)
		}
	}
	if m.Has("output") {
		out := attnShape(m.Root)
		if len(out) != 3 || !ir.SameDim(out[0], x[0]) || !ir.SameDim(out[1], x[1]) || !out[2].Known || out[2].Value != n*d {
			return fmt.Sprintf("heads are merged into %v, not [B,S,%d]", out, n*d)
		}
	}
	for _, p := range []string{"q", "k", "v"} {
		w := attnShape(m.V(p + "_weight"))
		if len(w) != 2 || !w[1].Known || w[1].Value != n*d || !ir.SameDim(w[0], x[2]) {
			return fmt.Sprintf("%s weight has shape %v, not [%v,%d]", p, w, x[2], n*d)
		}
		if b := m.V(p + "_bias"); b != nil {
			if s := attnShape(b); len(s) != 1 || !s[0].Known || s[0].Value != n*d {
				return fmt.Sprintf("%s bias has shape %v, not [%d]", p, s, n*d)
			}
		}
	}
	if sm := m.N("probs"); sm.Attr("axis") != nil {
		if a := sm.AttrInt("axis", -1); a != -1 && a != 3 {
			return fmt.Sprintf("softmax over axis %d, not the last", a)
		}
	}
	if s := attnScaleOf(m); s == 0 || math.IsInf(s, 0) || math.IsNaN(s) {
		return fmt.Sprintf("scale %g is not a finite non-zero number", s)
	}
	return ""
}

// attnScaleOf multiplies the constant factors found on Q, Kᵀ and the scores.
func attnScaleOf(m *patterns.Match) float64 {
	s := 1.0
	for _, p := range []string{"q_proj", "q_heads", "k_proj", "k_heads", "k_t", "scores"} {
		if t := m.Const(p + "_div_c"); t != nil && m.Has(p+"_div") {
			if v, err := t.Float64s(); err == nil && len(v) > 0 {
				s /= v[0]
			}
		}
		if t := m.Const(p + "_mul_c"); t != nil && m.Has(p+"_mul") {
			if v, err := t.Float64s(); err == nil && len(v) > 0 {
				s *= v[0]
			}
		}
	}
	return s
}

// ---- masks ----

// attnMaskInfo is what attnAnalyseMask makes of a block's mask.
type attnMaskInfo struct {
	// raw is the [B,S] 0/1 mask graph input (kind attnRawMaskKind), or the float additive mask
	// graph input (kind attnAdditiveInput).
	raw    *ir.Value
	kind   attnMaskKind
	filter float64 // the value masked scores get (added or filled in)
	why    string  // kind attnUnknownMask: what was not understood
}

type attnMaskKind int

const (
	attnNoMask attnMaskKind = iota
	attnRawMaskKind
	attnAdditiveInput
	attnUnknownMask
)

// attnAnalyseMask reads the block's mask: it evaluates the mask subgraph for a kept (1) and a
// masked (0) position of the one graph input it depends on, and checks that the mask
// broadcasts over the keys as [B,1,1,S].
func attnAnalyseMask(m *patterns.Match, form attnMaskForm) attnMaskInfo {
	scores := attnShape(m.V("scores"))
	switch form {
	case attnAddForm:
		term := m.V("mask_term")
		if in := attnAdditiveMaskInput(term); in != nil {
			s := attnShape(in)
			if len(s) == 4 && len(scores) == 4 && (s[0].Known && s[0].Value == 1 || ir.SameDim(s[0], scores[0])) &&
				s[1].Known && s[1].Value == 1 && (s[2].Known && s[2].Value == 1 || ir.SameDim(s[2], scores[2])) &&
				ir.SameDim(s[3], scores[3]) {
				return attnMaskInfo{raw: in, kind: attnAdditiveInput}
			}
			return attnMaskInfo{kind: attnUnknownMask, why: fmt.Sprintf("additive mask input %s has shape %v", in.Name, s)}
		}
		e := &attnMaskEval{}
		val, dep, ok := e.eval(term, 0)
		if !ok {
			return attnMaskInfo{kind: attnUnknownMask, why: e.why}
		}
		if !dep {
			// A mask that does not depend on any input adds one constant to every score:
			// softmax cancels it.
			if val[0] == val[1] && !math.IsInf(val[0], 0) && !math.IsNaN(val[0]) {
				return attnMaskInfo{kind: attnNoMask}
			}
			return attnMaskInfo{kind: attnUnknownMask, why: "constant mask is not finite"}
		}
		if r := term.Type.Rank(); r != 4 {
			return attnMaskInfo{kind: attnUnknownMask, why: fmt.Sprintf("a rank-%d mask is added to the rank-4 scores", r)}
		}
		if val[1] != 0 {
			return attnMaskInfo{kind: attnUnknownMask, why: fmt.Sprintf("kept positions get %g, not 0", val[1])}
		}
		if math.IsNaN(val[0]) {
			return attnMaskInfo{kind: attnUnknownMask, why: "masked positions get NaN"}
		}
		if why := e.checkLeaf(scores); why != "" {
			return attnMaskInfo{kind: attnUnknownMask, why: why}
		}
		return attnMaskInfo{raw: e.leaf, kind: attnRawMaskKind, filter: val[0]}
	case attnWhereForm:
		fill, _ := m.Const("mask_fill").Float64s()
		if len(fill) == 0 {
			return attnMaskInfo{kind: attnUnknownMask, why: "mask fill is not a constant"}
		}
		cond, keepIf := m.V("mask_cond"), 0.0 // Where(c, fill, scores): c is true where masked
		if cond == nil {
			cond, keepIf = m.V("mask_keep"), 1 // Where(c, scores, fill): c is true where kept
		}
		e := &attnMaskEval{}
		val, dep, ok := e.eval(cond, 0)
		if !ok {
			return attnMaskInfo{kind: attnUnknownMask, why: e.why}
		}
		if !dep {
			return attnMaskInfo{kind: attnUnknownMask, why: "mask condition does not depend on an input"}
		}
		if r := cond.Type.Rank(); r != 4 {
			return attnMaskInfo{kind: attnUnknownMask, why: fmt.Sprintf("a rank-%d mask condition selects among the rank-4 scores", r)}
		}
		truth := func(x float64) float64 {
			if x != 0 {
				return 1
			}
			return 0
		}
		if truth(val[1]) != keepIf || truth(val[0]) == keepIf {
			return attnMaskInfo{kind: attnUnknownMask, why: "mask condition does not select the masked positions"}
		}
		if why := e.checkLeaf(scores); why != "" {
			return attnMaskInfo{kind: attnUnknownMask, why: why}
		}
		// Where replaces a masked score by fill, Attention adds fill to it: the same after
		// softmax only when fill drowns every score.
		if fill[0] > -1000 {
			return attnMaskInfo{kind: attnUnknownMask, why: fmt.Sprintf("mask fill %g is not a large negative value", fill[0])}
		}
		return attnMaskInfo{raw: e.leaf, kind: attnRawMaskKind, filter: fill[0]}
	}
	return attnMaskInfo{kind: attnNoMask}
}

// attnAdditiveMaskInput returns the float graph input that v is (through Identity or a float
// Cast), or nil.
func attnAdditiveMaskInput(v *ir.Value) *ir.Value {
	for v != nil {
		n, _ := v.Producer()
		if n == nil {
			break
		}
		if n.OpType != "Identity" && !(n.OpType == "Cast" && ir.DataType(n.AttrInt("to", 0)).IsFloat()) {
			return nil
		}
		v = n.Input(0)
	}
	if v == nil || !v.IsGraphInput() || v.IsConst() || v.Type == nil || !v.Type.DType.IsFloat() || v.Type.Rank() != 4 {
		return nil
	}
	return v
}

// attnMaskEval evaluates a mask subgraph elementwise for the two values of its one input
// (index 0: a masked position, mask 0; index 1: a kept position, mask 1).
type attnMaskEval struct {
	leaf *ir.Value
	why  string
}

type attnPair [2]float64

func (e *attnMaskEval) fail(format string, args ...any) (attnPair, bool, bool) {
	if e.why == "" {
		e.why = fmt.Sprintf(format, args...)
	}
	return attnPair{}, false, false
}

// eval returns v's values for a masked and a kept position, and whether v depends on the
// mask input at all.
func (e *attnMaskEval) eval(v *ir.Value, depth int) (attnPair, bool, bool) {
	if v == nil {
		return e.fail("missing value")
	}
	if depth > 24 {
		return e.fail("mask expression too deep")
	}
	if t := patterns.ConstOf(v); t != nil {
		if t.NumElements() > 64 {
			return e.fail("mask constant %s is not a scalar", v.Name)
		}
		vals, err := t.Float64s()
		if err != nil || len(vals) == 0 {
			return e.fail("mask constant %s is unreadable", v.Name)
		}
		for _, x := range vals {
			if x != vals[0] {
				return e.fail("mask constant %s is not uniform", v.Name)
			}
		}
		return attnPair{vals[0], vals[0]}, false, true
	}
	n, _ := v.Producer()
	if n == nil {
		if !v.IsGraphInput() {
			return e.fail("mask reads %s, not a graph input", v.Name)
		}
		if e.leaf != nil && e.leaf != v {
			return e.fail("mask depends on two inputs, %s and %s", e.leaf.Name, v.Name)
		}
		e.leaf = v
		return attnPair{0, 1}, true, true
	}
	if n.Domain != "" && n.Domain != "ai.onnx" {
		return e.fail("mask uses %s.%s", n.Domain, n.OpType)
	}
	in := func(i int) (attnPair, bool, bool) { return e.eval(n.Input(i), depth+1) }
	switch n.OpType {
	case "ConstantOfShape":
		c := 0.0
		if a := n.Attr("value"); a != nil && a.Tensor != nil {
			vals, err := a.Tensor.Float64s()
			if err != nil || len(vals) != 1 {
				return e.fail("unreadable ConstantOfShape value")
			}
			c = vals[0]
		}
		return attnPair{c, c}, false, true
	case "Identity", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Flatten":
		x, dep, ok := in(0)
		if !ok {
			return x, dep, ok
		}
		if dep && n.OpType != "Expand" && n.OpType != "Identity" {
			if why := e.checkBroadcast(v); why != "" {
				return e.fail("%s", why)
			}
		}
		return x, dep, ok
	case "Cast":
		x, dep, ok := in(0)
		if !ok {
			return x, dep, ok
		}
		to := ir.DataType(n.AttrInt("to", 0))
		for i := range x {
			switch {
			case to == ir.Bool:
				if x[i] != 0 {
					x[i] = 1
				}
			case to.IsInt():
				x[i] = math.Trunc(x[i])
			case to == ir.Float16:
				x[i] = float64(ir.HalfToFloat32(ndarray.Float32ToHalf(float32(x[i]))))
			case to == ir.Float:
				x[i] = float64(float32(x[i]))
			}
		}
		return x, dep, ok
	case "Neg", "Not", "Abs":
		x, dep, ok := in(0)
		for i := range x {
			switch n.OpType {
			case "Neg":
				x[i] = -x[i]
			case "Abs":
				x[i] = math.Abs(x[i])
			default:
				x[i] = attnBool(x[i] == 0)
			}
		}
		return x, dep, ok
	case "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "And", "Or", "Xor",
		"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual":
		if len(n.Inputs()) != 2 {
			return e.fail("mask uses %s with %d inputs", n.OpType, len(n.Inputs()))
		}
		a, da, ok := in(0)
		if !ok {
			return a, false, false
		}
		b, db, ok := in(1)
		if !ok {
			return b, false, false
		}
		if why := e.checkOperandRanks(n, da, db); why != "" {
			return e.fail("%s", why)
		}
		var r attnPair
		for i := range r {
			r[i] = attnBinary(n.OpType, a[i], b[i])
		}
		return r, da || db, true
	case "Where":
		c, dc, ok := in(0)
		if !ok {
			return c, false, false
		}
		a, da, ok := in(1)
		if !ok {
			return a, false, false
		}
		b, db, ok := in(2)
		if !ok {
			return b, false, false
		}
		if why := e.checkOperandRanks(n, dc, da, db); why != "" {
			return e.fail("%s", why)
		}
		var r attnPair
		for i := range r {
			if c[i] != 0 {
				r[i] = a[i]
			} else {
				r[i] = b[i]
			}
		}
		return r, dc || da || db, true
	}
	return e.fail("mask uses %s", n.OpType)
}

func attnBool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func attnBinary(op string, a, b float64) float64 {
	switch op {
	case "Add":
		return a + b
	case "Sub":
		return a - b
	case "Mul":
		return a * b
	case "Div":
		return a / b
	case "Pow":
		return math.Pow(a, b)
	case "Max":
		return math.Max(a, b)
	case "Min":
		return math.Min(a, b)
	case "And":
		return attnBool(a != 0 && b != 0)
	case "Or":
		return attnBool(a != 0 || b != 0)
	case "Xor":
		return attnBool((a != 0) != (b != 0))
	case "Equal":
		return attnBool(a == b)
	case "Greater":
		return attnBool(a > b)
	case "Less":
		return attnBool(a < b)
	case "GreaterOrEqual":
		return attnBool(a >= b)
	case "LessOrEqual":
		return attnBool(a <= b)
	}
	return math.NaN()
}

// checkBroadcast checks a rank-4 value computed from the mask by a reshaping op: it must
// be [B,1,1,S] of the [B,S] mask (the mask selects keys, the same for every head and
// query).
func (e *attnMaskEval) checkBroadcast(v *ir.Value) string {
	s := attnShape(v)
	if len(s) < 4 {
		return ""
	}
	l := attnShape(e.leaf)
	if len(s) != 4 || len(l) != 2 || !ir.SameDim(s[0], l[0]) || !s[1].Known || s[1].Value != 1 ||
		!s[2].Known || s[2].Value != 1 || !ir.SameDim(s[3], l[1]) {
		return fmt.Sprintf("mask %v is broadcast as %v, not [B,1,1,S]", l, s)
	}
	return ""
}

// checkOperandRanks refuses an elementwise op that broadcasts a mask-dependent operand of
// rank below 4 into a rank-4 result (numpy broadcasting would align [B,S] with the last
// two axes, queries and keys).
func (e *attnMaskEval) checkOperandRanks(n *ir.Node, deps ...bool) string {
	if n.Output(0).Type.Rank() < 4 {
		return ""
	}
	for i, d := range deps {
		if r := n.Input(i).Type.Rank(); d && r > 0 && r < 4 {
			return fmt.Sprintf("%s broadcasts a rank-%d mask into rank 4", n.OpType, r)
		}
	}
	return ""
}

// checkLeaf checks the mask input: a [B,S] tensor of the scores' batch and key length.
func (e *attnMaskEval) checkLeaf(scores ir.Shape) string {
	l := attnShape(e.leaf)
	if len(l) != 2 {
		return fmt.Sprintf("mask input %s has shape %v, not [B,S]", e.leaf.Name, l)
	}
	if len(scores) == 4 && (!ir.SameDim(l[0], scores[0]) || !ir.SameDim(l[1], scores[3])) {
		return fmt.Sprintf("mask input %s %v does not match the scores %v", e.leaf.Name, l, scores)
	}
	if dt := e.leaf.Type.DType; !(dt.IsInt() || dt.IsFloat() || dt == ir.Bool) {
		return fmt.Sprintf("mask input %s is %s", e.leaf.Name, dt)
	}
	return ""
}

// ---- describe ----

func attnDescribe(m *patterns.Match, b *Block) {
	switch b.Variant {
	case "attention/fused":
		attnDescribeFusedORT(m, b)
		return
	case "attention/fused-onnx":
		attnDescribeFusedONNX(m, b)
		return
	case "attention/fused-quantized":
		attnDescribeFusedORT(m, b)
		return
	}
	for _, r := range []string{"input", "q_weight", "q_bias", "k_weight", "k_bias", "v_weight", "v_bias",
		"q_matmul", "k_matmul", "v_matmul", "scores", "probs", "context"} {
		if v := m.V(r); v != nil {
			b.Roles[r] = v
		}
	}
	b.Roles["output"] = m.Root
	s := attnShape(m.V("q_reshape"))
	if len(s) == 4 {
		b.Params["num_heads"] = float64(s[2].Value)
		b.Params["head_size"] = float64(s[3].Value)
		b.Params["hidden"] = float64(s[2].Value * s[3].Value)
	}
	b.Params["scale"] = attnScaleOf(m)
	mi := attnAnalyseMask(m, attnFormOf(b.Variant))
	switch mi.kind {
	case attnRawMaskKind:
		b.Roles["mask"] = mi.raw
		b.Params["mask_filter_value"] = mi.filter
	case attnAdditiveInput:
		b.Roles["mask"] = mi.raw
	case attnUnknownMask:
		if v := m.V("mask_term"); v != nil {
			b.Roles["mask"] = v
		} else if v := m.V("mask_cond"); v != nil {
			b.Roles["mask"] = v
		} else {
			b.Roles["mask"] = m.V("mask_keep")
		}
	}
}

func attnFormOf(variant string) attnMaskForm {
	switch variant {
	case "attention/add-mask":
		return attnAddForm
	case "attention/where-mask":
		return attnWhereForm
	}
	return attnNoMaskForm
}

// ---- fused forms ----

// attnCheckFusedORT accepts a com.microsoft.Attention whose attention_bias, if any, is an
// additive mask input (a computed bias is another family's, e.g. DeBERTa's).
func attnCheckFusedORT(m *patterns.Match) string {
	n := m.N("attention")
	if bias := n.Input(5); bias != nil && attnAdditiveMaskInput(attnStripExpand(bias)) == nil {
		return "attention_bias is not an additive mask input"
	}
	return ""
}

// attnCheckFusedONNX accepts an Attention-23 on 3-D Q, K and V whose attn_mask, if any, is a
// function of one mask input.
func attnCheckFusedONNX(m *patterns.Match) string {
	n := m.N("attention")
	for i := 0; i < 3; i++ {
		if n.Input(i).Type.Rank() != 3 {
			return "Q, K and V are not [B,S,H]"
		}
	}
	if mask := n.Input(3); mask != nil && attnAdditiveMaskInput(mask) == nil {
		e := &attnMaskEval{}
		if _, dep, ok := e.eval(mask, 0); !ok || !dep {
			return "attn_mask is not a function of a mask input"
		}
	}
	return ""
}

func attnStripExpand(v *ir.Value) *ir.Value {
	for v != nil {
		n, _ := v.Producer()
		if n == nil || n.OpType != "Expand" {
			break
		}
		v = n.Input(0)
	}
	return v
}

// attnRawMask follows a mask back through Cast, Unsqueeze, Reshape and Expand to a graph
// input.
func attnRawMask(v *ir.Value) *ir.Value {
	for v != nil {
		n, _ := v.Producer()
		if n == nil {
			break
		}
		switch n.OpType {
		case "Cast", "Unsqueeze", "Reshape", "Expand", "Identity", "Not":
			v = n.Input(0)
			continue
		}
		return v
	}
	return v
}

func attnDescribeFusedORT(m *patterns.Match, b *Block) {
	n := m.N("attention")
	b.Fused = true
	b.Roles["input"] = n.Input(0)
	b.Roles["qkv_weight"] = n.Input(1)
	if v := n.Input(2); v != nil {
		b.Roles["qkv_bias"] = v
	}
	b.Roles["output"] = m.Root
	heads := n.AttrInt("num_heads", 0)
	hidden := int64(0)
	if hs, ok := n.AttrInts("qkv_hidden_sizes"); ok && len(hs) == 3 {
		hidden = hs[0]
	} else if w := attnShape(n.Input(1)); len(w) == 2 && w[1].Known {
		hidden = w[1].Value / 3
	}
	attnFusedParams(b, n, heads, hidden)
	maskIndex, attnBias := 3, 5
	if n.OpType == "QAttention" {
		maskIndex, attnBias = 5, -1
		attnDescribeQuantParams(n, b)
	}
	if v := n.Input(maskIndex); v != nil {
		b.Roles["mask"] = attnRawMask(v)
		b.Params["mask_filter_value"] = float64(n.AttrFloat("mask_filter_value", -10000))
	} else if v := n.Input(attnBias); attnBias > 0 && v != nil {
		b.Roles["mask"] = attnStripExpand(v)
	}
}

func attnFusedParams(b *Block, n *ir.Node, heads, hidden int64) {
	if heads <= 0 {
		return
	}
	b.Params["num_heads"] = float64(heads)
	if hidden > 0 {
		d := hidden / heads
		b.Params["hidden"] = float64(hidden)
		b.Params["head_size"] = float64(d)
		b.Params["scale"] = float64(n.AttrFloat("scale", float32(1/math.Sqrt(float64(d)))))
	}
}

func attnDescribeFusedONNX(m *patterns.Match, b *Block) {
	n := m.N("attention")
	b.Fused = true
	b.Roles["output"] = m.Root
	// Q, K and V are X's projections: name their weights when they are X·W + b.
	for i, p := range []string{"q", "k", "v"} {
		// The integer kernel QLinearRules leave (X quantized), or X·W (+ b) in float.
		float := patterns.Optional(patterns.Op("Add", patterns.Op("MatMul", patterns.Var("input"), patterns.Var(p+"_weight")).As(p+"_matmul"), patterns.Var(p+"_bias")))
		proj := patterns.Or(qlinFused(p, patterns.Var("input")), float)
		if pm := patterns.MatchValue(proj, n.Input(i)); pm != nil {
			if b.Roles["input"] == nil {
				b.Roles["input"] = pm.V("input")
			}
			for _, r := range []string{p + "_weight", p + "_matmul", p + "_bias"} {
				if v := pm.V(r); v != nil {
					b.Roles[r] = v
				}
			}
		}
	}
	hidden := int64(0)
	if s := attnShape(n.Input(0)); len(s) == 3 && s[2].Known {
		hidden = s[2].Value
	}
	attnFusedParams(b, n, n.AttrInt("q_num_heads", 0), hidden)
	if v := n.Input(3); v != nil {
		e := &attnMaskEval{}
		if val, dep, ok := e.eval(v, 0); ok && dep {
			b.Roles["mask"] = e.leaf
			if v.Type != nil && v.Type.DType == ir.Bool {
				b.Params["mask_filter_value"] = math.Inf(-1)
			} else {
				b.Params["mask_filter_value"] = val[0]
			}
		} else {
			b.Roles["mask"] = v
		}
	}
}

// ---- fuse ----

func attnFuse(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error) {
	m := b.Match
	quantized := attnQuantized(m)
	if quantized != "" && (env.Target != ORT || env.Provider != "cpu") {
		return nil, quantized, nil // QAttention is for x86 CPUs; TensorRT and CUDA want Q/DQ
	}
	if sm := m.N("probs"); sm.Attr("axis") == nil && env.Model.Opset("") < 13 {
		return nil, "softmax over axis 1 (the default before opset 13), not the last", nil
	}
	mi := attnAnalyseMask(m, attnFormOf(b.Variant))
	if mi.kind == attnUnknownMask {
		return nil, "mask of an unknown form: " + mi.why, nil
	}
	if quantized != "" {
		if n, why, err := attnFuseQuantONNX(rw, b, env, mi); n != nil || err != nil {
			return n, why, err
		}
		return attnFuseQuantORT(rw, b, env, mi, quantized)
	}
	switch env.Target {
	case ORT:
		return attnFuseORT(rw, b, env, mi)
	case ONNX:
		return attnFuseONNX(rw, b, env, mi)
	}
	return nil, fmt.Sprintf("no attention operator for target %q", env.Target), nil
}

// attnQuantized says why a block with quantized inputs or non-constant weights must keep
// its decomposed form (a fused float Attention would drop the Q/DQ numerics).
func attnQuantized(m *patterns.Match) string {
	for _, p := range []string{"q", "k", "v"} {
		if n := m.N(p + "_matmul"); n != nil && n.OpType == "MatMulIntegerToFloat" {
			return "Q/K/V projections are MatMulIntegerToFloat (quantized)"
		}
	}
	for _, p := range []string{"q", "k", "v"} {
		if patterns.ConstOf(m.V(p+"_weight")) == nil {
			return "Q/K/V weights are not constant (quantized?)"
		}
		if bias := m.V(p + "_bias"); bias != nil && patterns.ConstOf(bias) == nil {
			return "Q/K/V biases are not constant (quantized?)"
		}
	}
	if x := m.V("input"); m.Has("q_dq") || m.Has("k_dq") || m.Has("v_dq") || attnProducedBy(x, "DequantizeLinear") {
		return "input is quantized (QuantizeLinear/DequantizeLinear on X)"
	}
	for _, p := range []string{"scores_a", "scores_b", "context_a", "context_b"} {
		if m.Has(p + "_dq") {
			return "the attention matmuls are quantized (QuantizeLinear/DequantizeLinear inside the block)"
		}
	}
	return ""
}

func attnProducedBy(v *ir.Value, op string) bool {
	n, _ := v.Producer()
	return n != nil && n.OpType == op
}

func attnFuseORT(rw *patterns.Rewriter, b *Block, env *Env, mi attnMaskInfo) (*ir.Node, string, error) {
	m := b.Match
	w, err := attnConcatQKV(m, "weight")
	if err != nil {
		return nil, "", err
	}
	bias, err := attnConcatQKV(m, "bias")
	if err != nil {
		return nil, "", err
	}
	prefix := attnNamePrefix(m)
	inputs := []*ir.Value{m.V("input"), attnSharedConst(rw, prefix, "qkv_weight", w), attnSharedConst(rw, prefix, "qkv_bias", bias)}
	attrs := []*ir.Attr{
		ir.IntAttr("num_heads", int64(b.Params["num_heads"])),
		ir.FloatAttr("scale", float32(b.Params["scale"])),
	}
	switch mi.kind {
	case attnRawMaskKind:
		inputs = append(inputs, attnMaskIndex(rw, mi.raw))
		attrs = append(attrs, ir.FloatAttr("mask_filter_value", float32(mi.filter)))
	case attnAdditiveInput: // the graph's own term (after any Cast), as attention_bias
		inputs = append(inputs, nil, nil, attnExpandKeys(rw, m.V("mask_term")))
	}
	n := rw.Node("Attention", "com.microsoft", inputs, 1, prefix+"Attention_output_0", attrs...)
	n.Name = rw.Graph().FreshName(prefix + "Attention")
	EnsureOpset(env.Model, "com.microsoft", 1)
	rw.Replace(m.Root, attnUnmerge(rw, m, b, n.Output(0)))
	return n, "", nil
}

// attnUnmerge gives a block whose heads were never merged (the root is the [B,S,N,D]
// context) its shape back: Reshape(out, [0,0,N,D]).
func attnUnmerge(rw *patterns.Rewriter, m *patterns.Match, b *Block, out *ir.Value) *ir.Value {
	if m.Has("output") {
		return out
	}
	shape := rw.Const("attention_heads_shape", ir.Int64Tensor([]int64{4},
		[]int64{0, 0, int64(b.Params["num_heads"]), int64(b.Params["head_size"])}))
	return rw.Node("Reshape", "", []*ir.Value{out, shape}, 1, out.Name+"_heads").Output(0)
}

// attnConcatQKV packs Q, K and V's weights ([H_in,H] each, into [H_in,3H]: each row is
// q|k|v) or biases ([H] each, into [3H]; a missing bias is zeros).
func attnConcatQKV(m *patterns.Match, what string) (*ir.Tensor, error) {
	var ts [3]*ir.Tensor
	for i, p := range []string{"q", "k", "v"} {
		ts[i] = patterns.ConstOf(m.V(p + "_" + what))
	}
	if ts == [3]*ir.Tensor{} {
		// No bias at all: zeros of the weights' type, float for weights a
		// DequantizeLinear makes (QAttention's bias is float).
		w := m.V("q_weight")
		dt := ir.Float
		if wt := patterns.ConstOf(w); wt != nil {
			dt = wt.DType
		}
		if w.Type == nil || w.Type.Rank() != 2 || !w.Type.Shape[1].Known {
			return nil, fmt.Errorf("q weight %s has no known width", w.Name)
		}
		cols := w.Type.Shape[1].Value
		return ir.NewTensor(dt, []int64{3 * cols}, make([]byte, 3*dt.ByteSize(cols))), nil
	}
	return attnPackQKV(ts, what)
}

// attnPackQKV packs three [H_in,H] weights (what "weight") or [H] vectors side by side;
// a missing part is zeros. The packed bytes are computed when first needed (a save writes
// them and lets them go), reading the parts without keeping them.
func attnPackQKV(ts [3]*ir.Tensor, what string) (*ir.Tensor, error) {
	var parts [3]*ir.Tensor
	var dt ir.DataType
	var rows, cols int64
	for i, t := range ts {
		if t == nil {
			continue
		}
		if dt != 0 && t.DType != dt {
			return nil, fmt.Errorf("Q/K/V %ss have different types", what)
		}
		dt = t.DType
		rank := 1
		if what == "weight" {
			rank = 2
		}
		if len(t.Dims) != rank {
			return nil, fmt.Errorf("Q/K/V %s %s has rank %d, want %d", what, t.Name, len(t.Dims), rank)
		}
		if what == "weight" {
			rows, cols = t.Dims[0], t.Dims[1]
		} else {
			rows, cols = 1, t.Dims[0]
		}
		parts[i] = t.Clone() // what the parts hold now, whatever later happens to them
	}
	es := dt.ByteSize(1)
	row := cols * es
	for _, p := range parts {
		if p != nil && dt.ByteSize(p.NumElements()) != rows*row {
			return nil, fmt.Errorf("Q/K/V %ss have different shapes", what)
		}
	}
	dims := []int64{3 * cols}
	if what == "weight" {
		dims = []int64{rows, 3 * cols}
	}
	compute := func() ([]byte, error) {
		var b bytes.Buffer
		b.Grow(int(3 * rows * row))
		err := packRows(&b, parts, rows, row)
		return b.Bytes(), err
	}
	stream := func(w io.Writer) error { return packRows(w, parts, rows, row) }
	return ir.NewStreamedTensor(dt, dims, "pack-qkv-"+what, parts[:], compute, stream), nil
}

// packRows writes the rows of the parts side by side, [q_r k_r v_r] for each row r (zeros
// for an absent part), a block of rows at a time: each part's rows are read straight
// into their places in the block (a scatter read from the file they lie in), so the
// bytes are copied once into the block and once into the output, and a few MiB are
// held whatever the weights' size.
func packRows(w io.Writer, parts [3]*ir.Tensor, rows, row int64) error {
	var src [3]ir.ScatterReader
	for i, p := range parts {
		if p == nil {
			continue
		}
		r, done, err := p.OpenScatter()
		if err != nil {
			return fmt.Errorf("packing Q/K/V: %s: %w", p.Name, err)
		}
		defer done()
		src[i] = r
	}
	n := max(1, min(rows, packBlock/max(3*row, 1)))
	buf := packBuf(3 * n * row)
	defer packBufs.Put(&buf)
	dst := make([][]byte, n)
	for r0 := int64(0); r0 < rows; r0 += n {
		k := min(n, rows-r0)
		for i, r := range src {
			for j := range k {
				dst[j] = buf[(3*j+int64(i))*row : (3*j+int64(i)+1)*row]
			}
			if r == nil {
				for _, d := range dst[:k] {
					clear(d)
				}
				continue
			}
			if err := r.ReadScattered(r0*row, dst[:k]); err != nil {
				return fmt.Errorf("packing Q/K/V: %s: %w", parts[i].Name, err)
			}
		}
		if _, err := w.Write(buf[:3*k*row]); err != nil {
			return err
		}
	}
	return nil
}

// packBlock is the bytes of packed rows packRows holds at a time: a block per system
// call is enough to make the calls' cost negligible, and a larger one only adds fresh
// pages, each a page fault (3 MiB cost BERT-large's compile 768 faults, about 12 ms).
const packBlock = 1 << 20

// packBufs keeps packRows' block between the weights of a save (fresh large buffers
// are zeroed, page by page, each time).
var packBufs sync.Pool

func packBuf(n int64) []byte {
	if b, ok := packBufs.Get().(*[]byte); ok && int64(cap(*b)) >= n {
		return (*b)[:n]
	}
	return make([]byte, n, max(n, packBlock))
}

// attnSharedConst returns an initializer holding t: an existing packed one (its name holds
// kind) with the same contents, as when layers share weights (ALBERT), or a new one named
// prefix+kind.
func attnSharedConst(rw *patterns.Rewriter, prefix, kind string, t *ir.Tensor) *ir.Value {
	for _, v := range rw.Graph().Initializers {
		if !strings.Contains(v.Name, kind) {
			continue
		}
		if same, err := v.Const.Equal(t); err == nil && same {
			return v
		}
	}
	return rw.Const(prefix+kind, t)
}

// attnMaskIndex returns the raw mask as int32 (Attention's mask_index), reusing a Cast that an
// earlier layer's fusion added.
func attnMaskIndex(rw *patterns.Rewriter, raw *ir.Value) *ir.Value {
	if raw.Type != nil && raw.Type.DType == ir.Int32 {
		return raw
	}
	for _, u := range raw.Uses() {
		if n := u.Node; n.OpType == "Cast" && n.Domain == "" && n.AttrInt("to", 0) == int64(ir.Int32) {
			return n.Output(0)
		}
	}
	return rw.Node("Cast", "", []*ir.Value{raw}, 1, raw.Name+"_int32", ir.IntAttr("to", int64(ir.Int32))).Output(0)
}

// attnFuseONNX emits the standard Attention (opset 23) on the projected Q, K and V.
func attnFuseONNX(rw *patterns.Rewriter, b *Block, env *Env, mi attnMaskInfo) (*ir.Node, string, error) {
	m := b.Match
	if why := RequireOpset(env, 23, "Attention", b.Nodes); why != "" {
		return nil, why, nil
	}
	proj := func(p string) *ir.Value {
		if v := m.V(p + "_add"); v != nil {
			return v
		}
		return m.V(p + "_matmul")
	}
	inputs := []*ir.Value{proj("q"), proj("k"), proj("v")}
	switch mi.kind {
	case attnRawMaskKind, attnAdditiveInput:
		inputs = append(inputs, attnMaskBias(rw, m, attnFormOf(b.Variant)))
	}
	nh := int64(b.Params["num_heads"])
	prefix := attnNamePrefix(m)
	n := rw.Node("Attention", "", inputs, 1, prefix+"Attention_output_0",
		ir.IntAttr("q_num_heads", nh), ir.IntAttr("kv_num_heads", nh),
		ir.FloatAttr("scale", float32(b.Params["scale"])))
	n.Name = rw.Graph().FreshName(prefix + "Attention")
	rw.Replace(m.Root, attnUnmerge(rw, m, b, n.Output(0)))
	return n, "", nil
}

// attnFuseQuantONNX is attnFuseONNX for a block quantized on X and the weights, for ORT's
// CPU provider: Attention-23 reads the projections, which QLinearRules then turn into
// MatMulIntegerToFloat, so the numbers are those of the Q/DQ graph as with QAttention,
// while ORT's CPU kernel for Attention-23 runs the core (scores, softmax, context) faster
// than QAttention's or MultiHeadAttention's (0.45 against 0.62 ms per BERT-base layer at
// 1 x 128). It needs the opset raised to 23; without that it returns no node and
// QAttention is tried.
func attnFuseQuantONNX(rw *patterns.Rewriter, b *Block, env *Env, mi attnMaskInfo) (*ir.Node, string, error) {
	if env.Model.Opset("") < 23 && env.RaiseOpset < 23 {
		return nil, "", nil
	}
	m := b.Match
	for _, p := range []string{"scores_a", "scores_b", "context_a", "context_b"} {
		if m.Has(p + "_dq") {
			return nil, "", nil // a quantized core: QAttention's refusal says why
		}
	}
	return attnFuseONNX(rw, b, env, mi)
}

// attnNamePrefix is the exporter's scope of the block ("/encoder/layer.0/attention/self/"
// from its Softmax node's name), for the names of what fusion adds; "" when the nodes are
// not named that way.
func attnNamePrefix(m *patterns.Match) string {
	return nodePrefix(m.N("probs"))
}

// attnMaskBias is the additive mask as [B,1,S,S]: the graph's own additive mask (the Add
// form), or Where(c, fill, 0) of the condition before its expansion to the scores' shape
// (the Where form), expanded over the queries.
func attnMaskBias(rw *patterns.Rewriter, m *patterns.Match, form attnMaskForm) *ir.Value {
	if form == attnAddForm {
		return attnExpandKeys(rw, attnStripExpand(m.V("mask_term")))
	}
	fill := m.V("mask_fill")
	dt := patterns.ConstOf(fill).DType
	zero := rw.Const("attention_mask_zero", ir.NewTensor(dt, nil, make([]byte, dt.ByteSize(1))))
	var bias *ir.Value
	if c := m.V("mask_cond"); c != nil {
		bias = rw.Node("Where", "", []*ir.Value{attnStripExpand(c), fill, zero}, 1, "attention_mask_bias").Output(0)
	} else {
		bias = rw.Node("Where", "", []*ir.Value{attnStripExpand(m.V("mask_keep")), zero, fill}, 1, "attention_mask_bias").Output(0)
	}
	return attnExpandKeys(rw, bias)
}

// attnExpandKeys expands a [B|1,1,1|S,S] mask to [B|1,1,S,S] (ONNX Runtime wants the query
// axis spelled out, in Attention's attention_bias as in Attention-23's attn_mask) with the
// key length read off the mask itself, reusing the Expand an earlier layer added.
func attnExpandKeys(rw *patterns.Rewriter, mask *ir.Value) *ir.Value {
	if s := attnShape(mask); len(s) == 4 && ir.SameDim(s[2], s[3]) {
		return mask
	}
	mine := patterns.Op("Expand", patterns.Var("mask"), patterns.Op("Concat", patterns.Const(), patterns.Op("Gather", patterns.Op("Shape", patterns.Var("mask")), patterns.Const()), patterns.Const()))
	for _, u := range mask.Uses() {
		if n := u.Node; n.OpType == "Expand" && u.Index == 0 {
			if em := patterns.MatchValue(mine, n.Output(0)); em != nil && em.V("mask") == mask {
				return n.Output(0)
			}
		}
	}
	shape := rw.Node("Shape", "", []*ir.Value{mask}, 1, mask.Name+"_shape").Output(0)
	three := rw.Const("attention_keys_axis", ir.Int64Tensor([]int64{1}, []int64{3}))
	keys := rw.Node("Gather", "", []*ir.Value{shape, three}, 1, mask.Name+"_keys", ir.IntAttr("axis", 0)).Output(0)
	ones := rw.Const("attention_ones", ir.Int64Tensor([]int64{2}, []int64{1, 1}))
	one := rw.Const("attention_one", ir.Int64Tensor([]int64{1}, []int64{1}))
	target := rw.Node("Concat", "", []*ir.Value{ones, keys, one}, 1, mask.Name+"_target", ir.IntAttr("axis", 0)).Output(0)
	return rw.Node("Expand", "", []*ir.Value{mask, target}, 1, mask.Name+"_expanded").Output(0)
}
