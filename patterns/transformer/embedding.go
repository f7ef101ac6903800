package transformer

import (
	"fmt"
	"math"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/shape"
)

// EmbeddingFamily recognises the embedding block of BERT-like encoders: the LayerNorm of
// a sum of embedding lookups, and fuses it into com.microsoft.EmbedLayerNormalization.
var EmbeddingFamily = &Family{
	Kind: Embedding,
	Doc: `Embedding: y = LayerNorm(word_emb[input_ids] + position_emb[position_ids] + segment_emb[segment_ids])
over the last axis, optionally followed by DeBERTa's y * Cast(Unsqueeze(mask, 2)).

The sum has 1 to 4 terms, added in any order and association; each is a Gather (axis 0) of
a constant 2-D table (a position lookup by [seq] ids may be unsqueezed to [1, seq, hidden]) or a constant (a lookup that fold evaluated: a static model's position
embeddings, RoBERTa's zero token-type lookup). The lookups are told apart by their ids:
position ids are a constant arange (or a Slice of one from 0, or a Range from 0, the BERT
buffer, possibly plus a constant offset: BART's arange(S) + 2), or are computed from a CumSum or Range (RoBERTa's padding-aware positions), or
are an input named like "position"; a lookup with ids that are provably one value (an
Expand of a constant zero buffer) is a constant row; of the lookups by input ids, the
larger table is the word embedding and the other the segment (token type) embedding (an
input named like "token_type"/"segment" is the segment ids). The LayerNorm is the
LayerNormalization op (LayerNormFamily's output, torch at opset 17),
com.microsoft.SkipLayerNormalization of two partial sums (SkipFamily's output), or the
decomposed torch form (Pow or Mul square, Div or Reciprocal).

Rules: "embedding/layernorm", "embedding/skip-layernorm", "embedding/decomposed", each
also "+mask" (with DeBERTa's mask multiply after it), and "embedding/fused" (the
EmbedLayerNormalization op, "+mask" too). Without a LayerNorm after the sum (decoders,
pre-norm models): "embedding/token+positions" and "embedding/token", described in
embedding_decoder.go; those stay decomposed, recognised.

Checks: tables constant 2-D float of one width; input ids an integer [batch, seq] tensor,
segment ids of the same shape; position ids [1 or batch, seq] (or [seq] when 0..S-1); a
per-position constant only for a static sequence of its length; the LayerNorm over the
last axis, a decomposed one with eps in (0, 1e-3], gamma and beta constant 1-D of the
hidden size; the mask unsqueezed at the last axis and cast to float; a match must not stop
short of the mask multiply or of a decomposed LayerNorm's affine Mul/Add; no intermediate
value is read outside the block, except a lookup's (DistilBERT takes its word lookup's
shape), which then stays for its other reader.

Roles: input_ids, segment_ids (opt), position_ids (opt: the value feeding the position
Gather), word_embedding, position_embedding (opt), segment_embedding (opt), gamma, beta,
output, mask (opt). Params: epsilon, hidden, vocab, max_positions, type_vocab, positions
(0 none, 1 0..S-1, 2 computed ids, 3 folded constant), position_offset (k of 0..S-1 + k).

Fuse: ORT gets com.microsoft.EmbedLayerNormalization(Cast<int32>(input_ids),
Cast<int32>(segment_ids) or "", word, position, segment or "", gamma, beta, "",
[Cast<int32>(position_ids)]) with epsilon and a second, unused output (mask_index: ORT's
type inference needs it), and a third (embedding_sum) where the sum is read besides the
LayerNorm (a pre-norm model's residual stream, kept as SkipLayerNormalization's sum);
position_ids is passed only when they are not 0..S-1 (RoBERTa), since the op assumes
0..S-1 without them; positions 0..S-1 + k look up a position table that starts at row k.
Constant terms that are the
same at every position (a constant-id segment lookup, a uniform constant) are added to
the position table; a per-position constant becomes (part of) the position table when the
sequence length is static and positions are 0..S-1. A block without position embeddings
(DeBERTa) is left with the reason. ONNX has no standard operator: the block is left with
the reason (LayerNormFamily still fuses its LayerNorm).`,
	Rules:    embRules(),
	Describe: describeEmbedding,
	Fuse:     fuseEmbedding,
}

// embMaxTerms bounds the terms of the embedding sum (word, position, segment and one
// folded constant).
const embMaxTerms = 4

// ---- patterns ----

// embLeaf is term i of the sum: a Gather of a constant table, or a constant.
func embLeaf(i int, constOK bool) patterns.Pattern {
	Op, Bind, Const, Any := patterns.Op, patterns.Bind, patterns.Const, patterns.Any
	gather := Op("Gather", Bind(fmt.Sprintf("table%d", i), Const()), Bind(fmt.Sprintf("ids%d", i), Any())).
		AttrIs("axis", 0, 0).As(fmt.Sprintf("gather%d", i))
	// A [seq] position lookup made [1, seq, hidden] (torch's pos_emb(arange(S))[None]).
	unsq := fmt.Sprintf("unsqueeze%d", i)
	// Or the first S rows of a position table sliced off (XLM's position_table[:S]).
	sl := fmt.Sprintf("slice%d", i)
	table := Bind(fmt.Sprintf("table%d", i), Const())
	slice := patterns.Or(Op("Slice", table, Any(), Any(), Any(), Any()).As(sl), Op("Slice", table, Any(), Any(), Any()).As(sl))
	lookup := patterns.Or(gather, Op("Unsqueeze", gather).As(unsq), Op("Unsqueeze", gather, Const()).As(unsq),
		slice, Op("Unsqueeze", slice).As(unsq), Op("Unsqueeze", slice, Const()).As(unsq))
	if !constOK {
		return lookup
	}
	return patterns.Or(lookup, Bind(fmt.Sprintf("addend%d", i), Const()))
}

// embSums are the Add trees over n terms numbered from base. The terms are all alike and
// Add is commutative, so one tree per shape covers every order and association. A
// two-input Sum counts as an Add (fuse<provider=cpu> writes residual-shaped sums so).
func embSums(n, base int) []patterns.Pattern {
	Add := func(a, b patterns.Pattern) patterns.Pattern {
		return patterns.Or(patterns.Op("Add", a, b), patterns.Op("Sum", a, b))
	}
	l := func(i int) patterns.Pattern { return embLeaf(base+i, true) }
	switch n {
	case 1:
		return []patterns.Pattern{embLeaf(base, false)} // a lone term must be a lookup
	case 2:
		return []patterns.Pattern{Add(l(0), l(1))}
	case 3:
		return []patterns.Pattern{Add(Add(l(0), l(1)), l(2))}
	case 4:
		return []patterns.Pattern{Add(Add(Add(l(0), l(1)), l(2)), l(3)), Add(Add(l(0), l(1)), Add(l(2), l(3)))}
	}
	return nil
}

// embSum is any sum of 1..embMaxTerms terms numbered from base.
func embSum(base int) patterns.Pattern {
	var alts []patterns.Pattern
	for n := embMaxTerms; n >= 1; n-- {
		alts = append(alts, embSums(n, base)...)
	}
	return patterns.Or(alts...)
}

// embLayerNorm matches a LayerNorm of a sum in one of the forms, binding "ln" (the node
// whose output is the normalised value), "gamma", "beta" (optional), and for the
// decomposed form "ln_eps", "ln_mean", "ln_var".
func embLayerNorm(form string) patterns.Pattern {
	Op, Var, Bind, Or, Const, ConstNear, Optional := patterns.Op, patterns.Var, patterns.Bind, patterns.Or,
		patterns.Const, patterns.ConstNear, patterns.Optional
	ms := "com.microsoft"
	switch form {
	case "layernorm":
		x := patterns.SingleUse(embSum(0))
		return Or(
			Op("LayerNormalization", x, Var("gamma"), Var("beta")).As("ln"),
			Op("LayerNormalization", x, Var("gamma")).As("ln"))
	case "skip-layernorm":
		// SkipLayerNormalization(a, b, gamma[, beta[, bias]]) normalises a + b (+ bias).
		su := patterns.SingleUse
		var alts []patterns.Pattern
		for n := 2; n <= embMaxTerms; n++ {
			for k := 1; k < n; k++ {
				for _, a := range embSums(k, 0) {
					for _, b := range embSums(n-k, embMaxTerms) {
						alts = append(alts,
							Op("SkipLayerNormalization", su(a), su(b), Var("gamma"), Var("beta"), Bind("skip_bias", Const())).In(ms).As("ln"),
							Op("SkipLayerNormalization", su(a), su(b), Var("gamma"), Var("beta")).In(ms).As("ln"),
							Op("SkipLayerNormalization", su(a), su(b), Var("gamma")).In(ms).As("ln"))
					}
				}
			}
		}
		return Or(alts...)
	}
	// The decomposed torch LayerNorm:
	//   d = x - mean(x); y = d / sqrt(mean(d²) + eps) * gamma + beta
	x := Bind("sum", patterns.Where("read only by the normalisation", embSum(0), embNormalisedOnly))
	mean := Or(Op("ReduceMean", x).As("ln_mean"), Op("ReduceMean", x, Var("ln_mean_axes")).As("ln_mean"))
	d := Op("Sub", x, mean)
	sq := Or(Op("Pow", d, ConstNear(2, 0)), Op("Mul", d, d))
	variance := Or(Op("ReduceMean", sq).As("ln_var"), Op("ReduceMean", sq, Var("ln_var_axes")).As("ln_var"))
	std := Op("Sqrt", Op("Add", variance, Bind("ln_eps", Const())))
	norm := Or(Op("Div", d, std), Op("Mul", d, Op("Reciprocal", std)))
	return Optional(Op("Add", Optional(Op("Mul", norm, Var("gamma"))), Var("beta")).As("ln"))
}

// embNormalisedOnly reports whether every reader of v is a step of a decomposed
// LayerNorm (the mean and the subtraction). The sum of a pre-norm model is also the
// residual stream: it is no embedding+LayerNorm block, and the LayerNorm forms do not
// match it (the token forms in embedding_decoder.go do). The fused forms ask the same
// with SingleUse.
func embNormalisedOnly(v *ir.Value) bool {
	if v.IsGraphOutput() {
		return false
	}
	for _, u := range v.Uses() {
		if n := u.Node; n.Domain != "" || (n.OpType != "ReduceMean" && n.OpType != "Sub") {
			return false
		}
	}
	return true
}

// embMasked is DeBERTa's y * Cast(Unsqueeze(mask, 2)).
func embMasked(y patterns.Pattern) patterns.Pattern {
	Op, Var, Or := patterns.Op, patterns.Var, patterns.Or
	mask := Or(Op("Unsqueeze", Var("mask")).As("mask_unsqueeze"), Op("Unsqueeze", Var("mask"), Var("mask_axes")).As("mask_unsqueeze"))
	return Op("Mul", y, Op("Cast", mask).As("mask_cast")).As("mask_mul")
}

func embRules() []*patterns.Rule {
	// A lookup may be read elsewhere (DistilBERT takes the shape of its word lookup), and
	// so may the mask's cast (XLM multiplies every layer's output by it): the fused op
	// replaces the LayerNorm's output and the mask multiply stays.
	internal := []string{"mask_cast", "mask_unsqueeze"}
	for i := 0; i < 2*embMaxTerms; i++ {
		internal = append(internal, fmt.Sprintf("gather%d", i))
	}
	fused := patterns.Op("EmbedLayerNormalization").In("com.microsoft").As("fused")
	rules := []*patterns.Rule{
		{Name: "embedding/fused+mask", Pattern: embMasked(fused), Check: checkEmbeddingMask},
		{Name: "embedding/fused", Pattern: fused},
	}
	for _, form := range []string{"layernorm", "skip-layernorm", "decomposed"} {
		ln := embLayerNorm(form)
		rules = append(rules,
			&patterns.Rule{Name: "embedding/" + form + "+mask", Pattern: embMasked(ln), Check: checkEmbedding, Internal: internal},
			&patterns.Rule{Name: "embedding/" + form, Pattern: ln, Check: checkEmbedding, Internal: internal})
	}
	return append(rules, decRules()...)
}

// ---- analysis ----

// embLookup is one Gather term of the sum.
type embLookup struct {
	table, ids *ir.Value // ids nil: the first S rows of the table sliced off
	node       *ir.Node
	unsqueeze  *ir.Node // a sliced lookup's Unsqueeze to [1, S, hidden], if any
}

// Position forms (the "positions" param).
const (
	embNoPositions       = 0
	embDefaultPositions  = 1 // 0..S-1: the op's own assumption
	embComputedPositions = 2 // passed as position_ids
	embFoldedPositions   = 3 // the position table is a folded constant
)

// embInfo is what a match means: the lookups by role, the constant terms, the LayerNorm.
type embInfo struct {
	word, pos, seg *embLookup
	// uniform is the sum of the constant terms that are the same at every position
	// (nil: none); perPos the sum of those that differ, [S0, hidden] (nil: none).
	uniform []float64
	perPos  [][]float64
	// positions is one of the position forms; offset is k for ids 0..S-1 + k (BART's
	// learned positions start at row 2), which then look up rows k.. of the table.
	positions int
	offset    int64
	hidden    int64
	dtype     ir.DataType

	lnOut       *ir.Value // the normalised value (the root, or the mask Mul's input)
	gamma, beta *ir.Value
	eps         float64
	mask        *ir.Value
}

// embAnalyse reads a match of a decomposed rule; it returns why it is not an embedding
// block, or what it is.
func embAnalyse(m *patterns.Match) (*embInfo, string) {
	info := &embInfo{lnOut: m.Root}
	if m.Has("mask_mul") {
		info.lnOut = m.N("mask_mul").Input(0)
		if p, _ := info.lnOut.Producer(); p == m.N("mask_cast") {
			info.lnOut = m.N("mask_mul").Input(1)
		}
		info.mask = m.V("mask")
	}
	var lookups []*embLookup
	var consts []*ir.Tensor
	for i := 0; i < 2*embMaxTerms; i++ {
		if n := m.N(fmt.Sprintf("slice%d", i)); n != nil {
			if info.pos != nil {
				return nil, "two position lookups"
			}
			info.pos = &embLookup{table: n.Input(0), node: n, unsqueeze: m.N(fmt.Sprintf("unsqueeze%d", i))}
			continue
		}
		if n := m.N(fmt.Sprintf("gather%d", i)); n != nil {
			if u := m.N(fmt.Sprintf("unsqueeze%d", i)); u != nil {
				ids := m.V(fmt.Sprintf("ids%d", i))
				if axes, ok := reduceAxes(u); !ok || len(axes) != 1 || axes[0] != 0 || ids.Type.Rank() != 1 || !embIsPositionIDs(ids) {
					return nil, fmt.Sprintf("lookup %s is unsqueezed (%s): only a [seq] position lookup made [1, seq, hidden] is a term", n.Output(0).Name, u.Output(0).Name)
				}
			}
			lookups = append(lookups, &embLookup{table: m.V(fmt.Sprintf("table%d", i)), ids: m.V(fmt.Sprintf("ids%d", i)), node: n})
		} else if t := m.Const(fmt.Sprintf("addend%d", i)); t != nil {
			consts = append(consts, t)
		}
	}
	if len(lookups) == 0 {
		return nil, "no embedding lookup in the sum"
	}
	// Tables: constant 2-D float of one width and type.
	for _, l := range lookups {
		t := patterns.ConstOf(l.table)
		if len(t.Dims) != 2 {
			return nil, fmt.Sprintf("table %s has shape %v, not [rows, hidden]", l.table.Name, t.Dims)
		}
		if !t.DType.IsFloat() {
			return nil, fmt.Sprintf("table %s is %s, not float", l.table.Name, t.DType)
		}
		if info.hidden == 0 {
			info.hidden, info.dtype = t.Dims[1], t.DType
		} else if t.Dims[1] != info.hidden || t.DType != info.dtype {
			return nil, fmt.Sprintf("tables of different widths or types (%s %v, %s %d)", l.table.Name, t.Dims, info.dtype, info.hidden)
		}
	}
	// Position lookups first, then lookups by a constant id (constant rows), then the
	// lookups by input ids: the larger table is the word embedding.
	var byInput []*embLookup
	for _, l := range lookups {
		if k, ok := embConstIndex(l.ids); ok {
			row, why := embRow(l.table, k)
			if why != "" {
				return nil, why
			}
			info.uniform = embAddRow(info.uniform, row)
			continue
		}
		if embIsPositionIDs(l.ids) {
			if info.pos != nil {
				return nil, "two position lookups"
			}
			info.pos = l
			continue
		}
		byInput = append(byInput, l)
	}
	switch len(byInput) {
	case 0:
		return nil, "no lookup by input ids (word embedding)"
	case 1:
		info.word = byInput[0]
	case 2:
		a, b := byInput[0], byInput[1]
		ra, rb := patterns.ConstOf(a.table).Dims[0], patterns.ConstOf(b.table).Dims[0]
		switch {
		case embNamedSegment(a.ids) && !embNamedSegment(b.ids):
			a, b = b, a
		case embNamedSegment(b.ids) && !embNamedSegment(a.ids):
		case ra > rb:
		case rb > ra:
			a, b = b, a
		default:
			return nil, fmt.Sprintf("two lookups by input ids with tables of %d rows: cannot tell the word embedding from the segment embedding", ra)
		}
		info.word, info.seg = a, b
	default:
		return nil, fmt.Sprintf("%d lookups by input ids: more than word and segment embeddings", len(byInput))
	}
	ids := info.word.ids
	if ids.Type == nil || !ids.Type.DType.IsInt() || ids.Type.Rank() != 2 {
		return nil, fmt.Sprintf("input ids are %s, not an integer [batch, sequence] tensor", ids.Type)
	}
	if info.seg != nil {
		if s := info.seg.ids; s.Type == nil || !s.Type.DType.IsInt() || !ir.SameShape(s.Type.Shape, ids.Type.Shape) {
			return nil, fmt.Sprintf("segment ids are %s, input ids %s", s.Type, ids.Type)
		}
	}
	// Positions.
	if info.pos != nil && info.pos.ids == nil {
		if why := embSlicedPositions(info.pos.node, info.pos.unsqueeze, ids); why != "" {
			return nil, why
		}
		info.positions = embDefaultPositions
	} else if info.pos != nil {
		p := info.pos.ids
		off, base := decOffset(p)
		rows := patterns.ConstOf(info.pos.table).Dims[0]
		switch {
		case embArangeIDs(p, ids):
			info.positions = embDefaultPositions
		case off != 0 && embArangeIDs(base, ids):
			if off < 0 || off >= rows {
				return nil, fmt.Sprintf("position ids 0..S-1 + %d outside the table of %d rows", off, rows)
			}
			info.positions, info.offset = embDefaultPositions, off
		case p.Type != nil && p.Type.DType.IsInt() && p.Type.Rank() == 2:
			info.positions = embComputedPositions
		default:
			return nil, fmt.Sprintf("position ids are %s, not [batch or 1, sequence]", p.Type)
		}
	}
	// Constant terms: uniform ones fold into the position table; per-position ones are
	// the position table of a static sequence.
	for _, t := range consts {
		rows, why := embConstRows(t, info.hidden)
		if why != "" {
			return nil, why
		}
		if len(rows) == 1 {
			info.uniform = embAddRow(info.uniform, rows[0])
			continue
		}
		if info.perPos != nil {
			if len(info.perPos) != len(rows) {
				return nil, fmt.Sprintf("constant terms of %d and %d positions", len(info.perPos), len(rows))
			}
			for s := range rows {
				info.perPos[s] = embAddRow(info.perPos[s], rows[s])
			}
		} else {
			info.perPos = rows
		}
	}
	if info.perPos != nil {
		seq := ids.Type.Shape[1]
		if !seq.Known || seq.Param != "" || seq.Value != int64(len(info.perPos)) {
			return nil, fmt.Sprintf("a constant term of %d positions, and the sequence length is %s", len(info.perPos), seq)
		}
		if info.pos != nil && info.positions != embDefaultPositions {
			return nil, "a per-position constant term besides computed position ids"
		}
		info.positions = embFoldedPositions
	}
	// The LayerNorm.
	if why := embCheckLayerNorm(m, info); why != "" {
		return nil, why
	}
	return info, ""
}

// embSlicedPositions checks that a Slice of the position table takes its rows 0..S-1, S
// the input ids' sequence length: from 0, along axis 0, step 1, as many rows as the ids
// have positions (and an Unsqueeze after it adds the leading axis).
func embSlicedPositions(sl, unsq *ir.Node, ids *ir.Value) string {
	ints := func(i int, def int64) (int64, bool) {
		if sl.Input(i) == nil {
			return def, true
		}
		v, ok := constInts(sl.Input(i))
		if !ok || len(v) != 1 {
			return 0, false
		}
		return v[0], true
	}
	start, ok1 := ints(1, 0)
	axis, ok2 := ints(3, 0)
	step, ok3 := ints(4, 1)
	out := sl.Output(0)
	switch {
	case !ok1 || !ok2 || !ok3 || start != 0 || axis != 0 || step != 1:
		return fmt.Sprintf("slice %s of the position table does not take its first rows (start 0, axis 0, step 1)", out.Name)
	case out.Type == nil || out.Type.Rank() != 2 || ids.Type.Rank() != 2 || !ir.SameDim(out.Type.Shape[0], ids.Type.Shape[1]):
		return fmt.Sprintf("slice %s of the position table is %v, not the input ids' %v positions", out.Name, out.Type, ids.Type)
	}
	if unsq != nil {
		if axes, ok := reduceAxes(unsq); !ok || len(axes) != 1 || axes[0] != 0 {
			return fmt.Sprintf("the sliced positions are unsqueezed by %s, not at axis 0", unsq.Output(0).Name)
		}
	}
	return ""
}

// embCheckLayerNorm reads the normalisation's parameters into info.
func embCheckLayerNorm(m *patterns.Match, info *embInfo) string {
	ln := m.N("ln")
	switch {
	case m.Has("ln_eps"):
		if why := embCheckDecomposed(m, info); why != "" {
			return why
		}
	case ln.OpType == "LayerNormalization":
		if axis := ln.AttrInt("axis", -1); axis != -1 && axis != 2 {
			return fmt.Sprintf("normalised from axis %d, not the last", axis)
		}
		info.eps = float64(ln.AttrFloat("epsilon", 1e-5))
	case ln.OpType == "SkipLayerNormalization":
		info.eps = float64(ln.AttrFloat("epsilon", 1e-12))
		if m.Has("skip_bias") {
			row, why := embConstRows(m.Const("skip_bias"), info.hidden)
			if why != "" || len(row) != 1 {
				return "skip bias is not a constant of the hidden size"
			}
			info.uniform = embAddRow(info.uniform, row[0])
		}
	}
	info.gamma, info.beta = m.V("gamma"), m.V("beta")
	for _, p := range []struct {
		role string
		v    *ir.Value
	}{{"gamma", info.gamma}, {"beta", info.beta}} {
		if p.v == nil {
			continue
		}
		t := patterns.ConstOf(p.v)
		if t == nil {
			return p.role + " is not a constant"
		}
		if len(t.Dims) != 1 || t.Dims[0] != info.hidden || t.DType != info.dtype {
			return fmt.Sprintf("%s is %s%v, not %s[%d]", p.role, t.DType, t.Dims, info.dtype, info.hidden)
		}
	}
	return ""
}

// embCheckDecomposed checks the decomposed LayerNorm: statistics over the last axis, a
// small positive epsilon.
func embCheckDecomposed(m *patterns.Match, info *embInfo) string {
	for _, r := range []string{"ln_mean", "ln_var"} {
		n := m.N(r)
		if n.AttrInt("keepdims", 1) != 1 {
			return r + " ReduceMean drops the axis"
		}
		axes, _ := n.AttrInts("axes")
		if a := n.Input(1); a != nil {
			t := patterns.ConstOf(a)
			if t == nil {
				return r + " axes are not constant"
			}
			axes, _ = t.Int64s()
		}
		if len(axes) != 1 || (axes[0] != -1 && axes[0] != 2) {
			return fmt.Sprintf("normalised over axes %v, not the last", axes)
		}
	}
	eps, why := lnEpsilon(m.Const("ln_eps"))
	if why != "" {
		return why
	}
	info.eps = eps
	return ""
}

// embConstIndex reports whether every element of an ids value is one known integer: a
// constant, or an Expand/Slice/Reshape/Unsqueeze/Squeeze/Identity/Cast/Tile of one, or
// ConstantOfShape.
func embConstIndex(v *ir.Value) (int64, bool) {
	for depth := 0; depth < 8 && v != nil; depth++ {
		if t := patterns.ConstOf(v); t != nil {
			if t.NumElements() == 0 || !t.DType.IsInt() {
				return 0, false
			}
			vals, err := t.Int64s()
			if err != nil {
				return 0, false
			}
			for _, x := range vals {
				if x != vals[0] {
					return 0, false
				}
			}
			return vals[0], true
		}
		n, _ := v.Producer()
		if n == nil || n.Domain != "" {
			return 0, false
		}
		switch n.OpType {
		case "Expand", "Slice", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast", "Tile", "Flatten":
			v = n.Input(0)
		case "ConstantOfShape":
			a := n.Attr("value")
			if a == nil || a.Tensor == nil {
				return 0, true // default zero
			}
			vals, err := a.Tensor.Int64s()
			if err != nil || len(vals) != 1 {
				return 0, false
			}
			return vals[0], true
		default:
			return 0, false
		}
	}
	return 0, false
}

// embIsPositionIDs recognises position ids: a constant (arange) or computed from a
// constant through Slice/Unsqueeze/Expand (the BERT buffer), computed with CumSum or
// Range (RoBERTa, arange), or an input named like "position".
func embIsPositionIDs(v *ir.Value) bool {
	if v.IsGraphInput() {
		return strings.Contains(strings.ToLower(v.Name), "position")
	}
	// Walk back a few producers looking for the tell-tale ops.
	seen := map[*ir.Value]bool{}
	var walk func(v *ir.Value, depth int) bool
	walk = func(v *ir.Value, depth int) bool {
		if v == nil || seen[v] || depth > 8 {
			return false
		}
		seen[v] = true
		if patterns.ConstOf(v) != nil {
			return depth <= 3 && embIsArangeConst(patterns.ConstOf(v)) // the buffer itself, sliced
		}
		n, _ := v.Producer()
		if n == nil {
			return false
		}
		switch n.OpType {
		case "CumSum", "Range":
			return true
		case "NonZero":
			return shape.NonZeroOfOnes(n) // arange before Range (opset < 11)
		case "Gather", "Shape":
			return false // shape arithmetic, or another lookup
		}
		for _, in := range n.Inputs() {
			if walk(in, depth+1) {
				return true
			}
		}
		return false
	}
	if n, _ := v.Producer(); n == nil && patterns.ConstOf(v) == nil {
		return false
	}
	return walk(v, 0)
}

// embIsArangeConst reports whether an integer constant is 0, 1, 2, ... along its last
// axis, with every leading dimension 1.
func embIsArangeConst(t *ir.Tensor) bool {
	if !t.DType.IsInt() || len(t.Dims) == 0 || t.NumElements() < 2 || t.NumElements() > 1<<20 {
		return false
	}
	for _, d := range t.Dims[:len(t.Dims)-1] {
		if d != 1 {
			return false
		}
	}
	vals, err := t.Int64s()
	if err != nil {
		return false
	}
	for i, x := range vals {
		if x != int64(i) {
			return false
		}
	}
	return true
}

// embArangeIDs reports whether position ids ([1 or batch, S] or [S]) are provably 0..S-1
// along the sequence of ids, the same for every row: an arange constant of the static
// sequence length, a Slice of an arange constant from 0 with step 1 along its last axis
// whose result has the sequence length, or Range(0, S, 1) (optionally unsqueezed or
// expanded).
func embArangeIDs(p, ids *ir.Value) bool {
	r := p.Type.Rank()
	if (r != 1 && r != 2) || ids.Type.Rank() != 2 {
		return false
	}
	if !ir.SameDim(p.Type.Shape[r-1], ids.Type.Shape[1]) {
		return false
	}
	if t := patterns.ConstOf(p); t != nil {
		return embIsArangeConst(t)
	}
	n, _ := p.Producer()
	for n != nil && n.Domain == "" && (n.OpType == "Unsqueeze" || n.OpType == "Expand" || n.OpType == "Cast") {
		n, _ = n.Input(0).Producer()
	}
	if n == nil || n.Domain != "" {
		return false
	}
	switch n.OpType {
	case "Slice":
		src := patterns.ConstOf(n.Input(0))
		if src == nil || !embIsArangeConst(src) {
			return false
		}
		rank := int64(len(src.Dims))
		starts, ok1 := embInts(n.Input(1))
		axes, ok3 := embInts(n.Input(3))
		steps, ok4 := embInts(n.Input(4))
		if !ok1 || len(starts) != 1 || starts[0] != 0 {
			return false
		}
		if n.Input(3) != nil && (!ok3 || len(axes) != 1 || (axes[0] != rank-1 && axes[0] != -1)) {
			return false
		}
		if n.Input(3) == nil && rank != 1 {
			return false
		}
		if n.Input(4) != nil && (!ok4 || len(steps) != 1 || steps[0] != 1) {
			return false
		}
		return true
	case "Range":
		start, ok1 := embInts(n.Input(0))
		delta, ok2 := embInts(n.Input(2))
		return ok1 && ok2 && len(start) == 1 && start[0] == 0 && len(delta) == 1 && delta[0] == 1
	case "NonZero", "Squeeze", "Transpose", "Reshape":
		return embNonZeroArange(n, ids.Type.Shape[1])
	}
	return false
}

// embNonZeroArange recognises arange(seq) as exporters write it without Range (opset < 11):
// NonZero of a [seq] ConstantOfShape filled with a non-zero value gives [[0 .. seq-1]], and
// Transpose, Squeeze and Reshape keep that order while one axis at most is longer than 1.
func embNonZeroArange(n *ir.Node, seq ir.Dim) bool {
	for n != nil && n.Domain == "" && n.OpType != "NonZero" {
		switch n.OpType {
		case "Squeeze", "Transpose", "Reshape":
		default:
			return false
		}
		if !embOneLongAxis(n.Output(0)) {
			return false
		}
		n, _ = n.Input(0).Producer()
	}
	if n == nil || n.Domain != "" {
		return false
	}
	out := n.Output(0)
	return shape.NonZeroOfOnes(n) && n.Input(0).Type.Rank() == 1 && out.Type != nil && out.Type.Rank() == 2 && ir.SameDim(out.Type.Shape[1], seq)
}

// embOneLongAxis reports whether every axis of v but one is provably 1.
func embOneLongAxis(v *ir.Value) bool {
	if v.Type == nil || v.Type.Rank() < 0 {
		return false
	}
	long := 0
	for _, d := range v.Type.Shape {
		if !(d.Known && d.Value == 1) {
			long++
		}
	}
	return long <= 1
}

func embInts(v *ir.Value) ([]int64, bool) {
	t := patterns.ConstOf(v)
	if t == nil || !t.DType.IsInt() {
		return nil, false
	}
	vals, err := t.Int64s()
	return vals, err == nil
}

// embNamedSegment reports whether ids come from an input named like token types.
func embNamedSegment(v *ir.Value) bool {
	for depth := 0; depth < 3 && v != nil; depth++ {
		if v.IsGraphInput() {
			name := strings.ToLower(v.Name)
			return strings.Contains(name, "token_type") || strings.Contains(name, "segment")
		}
		n, _ := v.Producer()
		if n == nil || n.OpType != "Cast" {
			return false
		}
		v = n.Input(0)
	}
	return false
}

// embRow reads row k of a constant table.
func embRow(table *ir.Value, k int64) ([]float64, string) {
	t := patterns.ConstOf(table)
	if k < 0 || k >= t.Dims[0] {
		return nil, fmt.Sprintf("constant id %d outside table %s of %d rows", k, table.Name, t.Dims[0])
	}
	vals, err := t.Float64s()
	if err != nil {
		return nil, err.Error()
	}
	h := t.Dims[1]
	return vals[k*h : (k+1)*h], ""
}

// embConstRows reads a constant term as rows of the hidden size: one row when it is the
// same at every position ([h], [1,h], [1,1,h], or [1,S,h] with equal rows), S rows for a
// [1,S,h] or [S,h] constant that varies along the sequence.
func embConstRows(t *ir.Tensor, hidden int64) ([][]float64, string) {
	if t == nil {
		return nil, "a term is not a constant"
	}
	if !t.DType.IsFloat() {
		return nil, fmt.Sprintf("constant term is %s, not float", t.DType)
	}
	n := len(t.Dims)
	if n == 0 || t.Dims[n-1] != hidden {
		return nil, fmt.Sprintf("constant term of shape %v does not end in the hidden size %d", t.Dims, hidden)
	}
	seq := int64(1)
	for i, d := range t.Dims[:n-1] {
		switch {
		case d == 1:
		case i == n-2 && n <= 3:
			seq = d
		default:
			return nil, fmt.Sprintf("constant term of shape %v varies along the batch", t.Dims)
		}
	}
	vals, err := t.Float64s()
	if err != nil {
		return nil, err.Error()
	}
	rows := make([][]float64, seq)
	uniform := true
	for s := int64(0); s < seq; s++ {
		rows[s] = vals[s*hidden : (s+1)*hidden]
		for j := range rows[s] {
			if rows[s][j] != rows[0][j] {
				uniform = false
			}
		}
	}
	if uniform {
		return rows[:1], ""
	}
	return rows, ""
}

// embAddRow returns acc + row (acc nil: a copy of row).
func embAddRow(acc, row []float64) []float64 {
	out := make([]float64, len(row))
	copy(out, row)
	for i := range acc {
		out[i] += acc[i]
	}
	return out
}

// ---- check, describe ----

func checkEmbedding(m *patterns.Match) string {
	info, why := embAnalyse(m)
	if why != "" {
		return why
	}
	if m.Has("mask_mul") {
		return checkEmbeddingMask(m)
	}
	// Without the mask multiply, the block must not stop short of one: Find sweeps nodes
	// backwards in list order, and a node added by an earlier family's rewrite comes last
	// until the graph is sorted again.
	if uses := info.lnOut.Uses(); len(uses) == 1 && !info.lnOut.IsGraphOutput() {
		if mm := patterns.MatchValue(embMasked(patterns.Var("y")), uses[0].Node.Output(0)); mm != nil && mm.V("y") == info.lnOut && checkEmbeddingMask(mm) == "" {
			return "the normalised value is masked next; the block ends at the mask multiply"
		}
	}
	// A decomposed LayerNorm must not stop short of its affine Mul/Add (when that one was
	// refused, a match of the plain normalisation would be a different, partial block).
	if m.Has("ln_eps") && (!m.Has("ln") || !m.Has("gamma")) {
		if uses := info.lnOut.Uses(); len(uses) == 1 && !info.lnOut.IsGraphOutput() {
			if n := uses[0].Node; n.Domain == "" && (n.OpType == "Mul" || n.OpType == "Add") {
				return fmt.Sprintf("the normalisation continues into %s; the block is not its prefix", n.OpType)
			}
		}
	}
	return ""
}

// checkEmbeddingMask accepts y * Cast(Unsqueeze(mask, 2)): the mask [batch, seq] spread
// over the hidden axis.
func checkEmbeddingMask(m *patterns.Match) string {
	mask := m.V("mask")
	if mask.Type == nil || mask.Type.Rank() != 2 {
		return fmt.Sprintf("mask is %s, not [batch, sequence]", mask.Type)
	}
	n := m.N("mask_unsqueeze")
	axes, _ := n.AttrInts("axes")
	if a := n.Input(1); a != nil {
		axes, _ = embInts(a)
	}
	if len(axes) != 1 || (axes[0] != 2 && axes[0] != -1) {
		return fmt.Sprintf("mask unsqueezed at %v, not the last axis", axes)
	}
	if !ir.DataType(m.N("mask_cast").AttrInt("to", 0)).IsFloat() {
		return "mask is not cast to float"
	}
	return ""
}

func describeEmbedding(m *patterns.Match, b *Block) {
	if m.Has("tok_gather") {
		describeDecoderEmbedding(m, b)
		return
	}
	b.Roles["output"] = m.Root
	if m.Has("mask") {
		b.Roles["mask"] = m.V("mask")
	}
	if m.Has("fused") {
		describeFusedEmbedding(m.N("fused"), b)
		return
	}
	info, why := embAnalyse(m)
	if why != "" {
		return
	}
	b.Roles["input_ids"] = info.word.ids
	b.Roles["word_embedding"] = info.word.table
	b.Params["vocab"] = float64(patterns.ConstOf(info.word.table).Dims[0])
	if info.pos != nil {
		if info.pos.ids != nil {
			b.Roles["position_ids"] = info.pos.ids
		}
		b.Roles["position_embedding"] = info.pos.table
		b.Params["max_positions"] = float64(patterns.ConstOf(info.pos.table).Dims[0])
	}
	if info.seg != nil {
		b.Roles["segment_ids"] = info.seg.ids
		b.Roles["segment_embedding"] = info.seg.table
		b.Params["type_vocab"] = float64(patterns.ConstOf(info.seg.table).Dims[0])
	}
	if info.gamma != nil {
		b.Roles["gamma"] = info.gamma
	}
	if info.beta != nil {
		b.Roles["beta"] = info.beta
	}
	b.Params["epsilon"] = info.eps
	b.Params["hidden"] = float64(info.hidden)
	b.Params["positions"] = float64(info.positions)
	if info.offset != 0 {
		b.Params["position_offset"] = float64(info.offset)
	}
}

// describeFusedEmbedding reads an EmbedLayerNormalization node's inputs.
func describeFusedEmbedding(n *ir.Node, b *Block) {
	b.Fused = true
	uncast := func(v *ir.Value) *ir.Value {
		if p, _ := v.Producer(); p != nil && p.OpType == "Cast" && p.Domain == "" {
			return p.Input(0)
		}
		return v
	}
	roles := []string{"input_ids", "segment_ids", "word_embedding", "position_embedding", "segment_embedding", "gamma", "beta", "mask", "position_ids"}
	for i, r := range roles {
		v := n.Input(i)
		if v == nil {
			continue
		}
		if strings.HasSuffix(r, "_ids") || r == "mask" {
			v = uncast(v)
		}
		if r == "mask" && b.Roles["mask"] != nil {
			continue
		}
		b.Roles[r] = v
	}
	b.Params["epsilon"] = float64(n.AttrFloat("epsilon", 1e-12))
	if t := patterns.ConstOf(n.Input(2)); t != nil && len(t.Dims) == 2 {
		b.Params["hidden"] = float64(t.Dims[1])
		b.Params["vocab"] = float64(t.Dims[0])
	}
	if n.Input(8) != nil {
		b.Params["positions"] = embComputedPositions
	} else {
		b.Params["positions"] = embDefaultPositions
	}
}

// ---- fuse ----

func fuseEmbedding(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error) {
	if b.Match.Has("tok_gather") {
		return nil, decNoOperator, nil
	}
	switch env.Target {
	case ORT:
	case ONNX:
		return nil, "no standard EmbedLayerNormalization operator; the LayerNorm is fused on its own", nil
	default:
		return nil, fmt.Sprintf("unknown target %q", env.Target), nil
	}
	info, why := embAnalyse(b.Match)
	if why != "" {
		return nil, why, nil
	}
	if why := loweredDType(ORT, info.dtype, "embedding"); why != "" {
		return nil, why, nil
	}
	if info.pos == nil && info.perPos == nil {
		return nil, "no position embedding (DeBERTa-style relative positions): EmbedLayerNormalization needs a position table", nil
	}
	base := embBase(info.lnOut, "EmbedLayerNormalization")
	// The position table, with the constant terms folded in.
	posTable := (*ir.Value)(nil)
	if info.pos != nil {
		posTable = info.pos.table
	}
	if info.uniform != nil || info.perPos != nil || info.offset != 0 {
		rows, why := embPositionRows(info)
		if why != "" {
			return nil, why, nil
		}
		data := make([]float64, 0, len(rows)*int(info.hidden))
		for _, r := range rows {
			data = append(data, r...)
		}
		// Summed exactly and rounded once: a half-precision graph rounds after each
		// term, a difference below the fused operator's own (it sums in float32).
		t, _ := ir.FloatsTensor(info.dtype, []int64{int64(len(rows)), info.hidden}, data) // a float type: checked above
		posTable = rw.Const(base+"_position_table", t)
	}
	int32ids := func(v *ir.Value, what string) *ir.Value {
		if v.Type != nil && v.Type.DType == ir.Int32 {
			return v
		}
		return rw.Node("Cast", "", []*ir.Value{v}, 1, base+"_"+what+"_int32", ir.IntAttr("to", int64(ir.Int32))).Output(0)
	}
	gamma, beta := info.gamma, info.beta
	if gamma == nil {
		ones, err := lnOnes(info.dtype, info.hidden)
		if err != nil {
			return nil, err.Error(), nil
		}
		gamma = rw.Const(base+"_gamma", ones)
	}
	if beta == nil {
		beta = rw.Const(base+"_beta", ir.NewTensor(info.dtype, []int64{info.hidden}, make([]byte, int(info.hidden)*info.dtype.Bits()/8)))
	}
	inputs := make([]*ir.Value, 9)
	inputs[0] = int32ids(info.word.ids, "input_ids")
	if info.seg != nil {
		inputs[1] = int32ids(info.seg.ids, "segment_ids")
		inputs[4] = info.seg.table
	}
	inputs[2] = info.word.table
	inputs[3] = posTable
	inputs[5], inputs[6] = gamma, beta
	if info.positions == embComputedPositions {
		inputs[8] = int32ids(info.pos.ids, "position_ids")
	}
	for len(inputs) > 7 && inputs[len(inputs)-1] == nil {
		inputs = inputs[:len(inputs)-1]
	}
	// ORT's type inference sets the mask_index output's type, so the node has two outputs
	// (the second unused). A pre-norm model also reads the sum itself (the residual
	// stream): SkipLayerNormalization's fourth output becomes the op's embedding_sum.
	nOut, sum := 2, (*ir.Value)(nil)
	if ln := b.Match.N("ln"); ln != nil && ln.OpType == "SkipLayerNormalization" {
		if o := ln.Output(3); o != nil && (len(o.Uses()) > 0 || o.IsGraphOutput()) {
			nOut, sum = 3, o
		}
	}
	n := rw.Node("EmbedLayerNormalization", "com.microsoft", inputs, nOut, base,
		ir.FloatAttr("epsilon", float32(info.eps)))
	rw.Replace(info.lnOut, n.Output(0))
	if sum != nil {
		rw.Replace(sum, n.Output(2))
	}
	EnsureOpset(env.Model, "com.microsoft", 1)
	return n, "", nil
}

// embBase names a new value after the node computing v: for op "EmbedLayerNormalization",
// "/embeddings/LayerNorm/Add_1" gives "/embeddings/LayerNorm/EmbedLayerNormalization".
func embBase(v *ir.Value, op string) string {
	name := v.Name
	if p, _ := v.Producer(); p != nil && p.Name != "" {
		name = p.Name
	}
	if i := strings.LastIndex(name, "/"); i >= 0 {
		return name[:i+1] + op
	}
	return name + "_" + op
}

// embPositionRows builds the position table with the constant terms folded in: the
// position embeddings (or the per-position constant) plus the uniform row.
func embPositionRows(info *embInfo) ([][]float64, string) {
	var rows [][]float64
	if info.pos != nil {
		t := patterns.ConstOf(info.pos.table)
		vals, err := t.Float64s()
		if err != nil {
			return nil, err.Error()
		}
		h := int(info.hidden)
		for r := int(info.offset); r < int(t.Dims[0]); r++ {
			rows = append(rows, vals[r*h:(r+1)*h])
		}
	}
	if info.perPos != nil {
		if rows == nil {
			rows = info.perPos
		} else {
			// Default positions over a static sequence: row s is looked up at position s.
			if len(rows) < len(info.perPos) {
				return nil, fmt.Sprintf("position table of %d rows for a sequence of %d", len(rows), len(info.perPos))
			}
			sum := make([][]float64, len(info.perPos))
			for s := range info.perPos {
				sum[s] = embAddRow(rows[s], info.perPos[s])
			}
			rows = sum
		}
	}
	if info.uniform != nil {
		out := make([][]float64, len(rows))
		for s := range rows {
			out[s] = embAddRow(rows[s], info.uniform)
		}
		rows = out
	}
	if len(rows) == 0 {
		return nil, "no position rows"
	}
	for _, r := range rows {
		for _, x := range r {
			if math.IsNaN(x) {
				return nil, "NaN in the folded position table"
			}
		}
	}
	return rows, ""
}
