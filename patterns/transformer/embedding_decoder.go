package transformer

import (
	"fmt"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// Token embeddings without a LayerNorm after them: decoders (GPT-2, BART, OPT, Marian,
// Llama) and pre-norm models, whose first layer normalises the embeddings itself.
//
//	y = s * tok_emb[input_ids] + P       (s optional, usually sqrt(hidden))
//
// P, the position term, is optional (rotary and relative-position models add none):
//   - a lookup pos_emb[position_ids] of a learned table, with position ids 0..S-1 (a Range
//     or a slice of an arange buffer), offset by a constant (BART's arange(S) + 2), an
//     input, or computed (fairseq's cumulative sum over the padding mask);
//   - rows 0..S-1 of a constant table (sinusoidal), sliced to the sequence length and
//     unsqueezed, or the folded constant of a static sequence.
//
// The rules are part of EmbeddingFamily so that they compete with its LayerNorm forms for
// the same nodes: where a LayerNorm of the sum is the sum's only reader, the LayerNorm
// forms apply and these refuse. Rules: "embedding/token+positions", "embedding/token".
// Roles: input_ids, word_embedding, position_ids (a lookup's ids), position_embedding
// (the table, looked up or sliced), output. Params: hidden, vocab, scale (1 when none),
// max_positions, positions (0 none, 1 rows 0..S-1, 2 computed ids, 3 folded constant),
// position_offset (the constant added to 0..S-1 ids).
//
// No operator of either target computes an embedding without a LayerNorm: fuse leaves
// the block as it is, with the reason, and it counts as recognised.

// decIDs matches ids read from a graph input (possibly cast) not named like positions:
// the token ids.
func decIDs() patterns.Pattern {
	return patterns.Where("input ids", patterns.Any(), func(v *ir.Value) bool {
		for range 3 {
			if v.IsGraphInput() {
				return !strings.Contains(strings.ToLower(v.Name), "position")
			}
			n, _ := v.Producer()
			if n == nil || n.Domain != "" || n.OpType != "Cast" {
				return false
			}
			v = n.Input(0)
		}
		return false
	})
}

// decToken is the token lookup, optionally scaled: binds "tok_table", "tok_ids",
// "tok_gather" and "tok_scale"/"tok_mul".
func decToken() patterns.Pattern {
	Op, Bind, Const := patterns.Op, patterns.Bind, patterns.Const
	gather := Op("Gather", Bind("tok_table", Const()), Bind("tok_ids", decIDs())).AttrIs("axis", 0, 0).As("tok_gather")
	return patterns.Or(Op("Mul", gather, Bind("tok_scale", Const())).As("tok_mul"), gather)
}

// decPosition is the position term: a lookup (binds "pos_table", "pos_ids",
// "pos_gather") or any other value ("pos_term"), which the check reads.
func decPosition() patterns.Pattern {
	Op, Bind, Const, Any := patterns.Op, patterns.Bind, patterns.Const, patterns.Any
	return patterns.Or(
		Op("Gather", Bind("pos_table", Const()), Bind("pos_ids", Any())).AttrIs("axis", 0, 0).As("pos_gather"),
		Bind("pos_term", patterns.Where("computed from constants", Any(), decFromConstants)))
}

// decFromConstants reports whether v is computed from constants and sizes alone (every
// path back ends in a constant or a Shape node): a position term, not an activation.
func decFromConstants(v *ir.Value) bool {
	seen := map[*ir.Value]bool{}
	var walk func(v *ir.Value, depth int) bool
	walk = func(v *ir.Value, depth int) bool {
		if v == nil || seen[v] {
			return true
		}
		seen[v] = true
		if patterns.ConstOf(v) != nil {
			return true
		}
		n, _ := v.Producer()
		if n == nil || depth > 12 {
			return false
		}
		if n.OpType == "Shape" || n.OpType == "Size" {
			return true
		}
		for _, in := range n.Inputs() {
			if !walk(in, depth+1) {
				return false
			}
		}
		return true
	}
	return walk(v, 0)
}

func decRules() []*patterns.Rule {
	return []*patterns.Rule{
		{Name: "embedding/token+positions", Pattern: patterns.Op("Add", decToken(), decPosition()).As("dec_sum"), Check: checkDecoderEmbedding},
		{Name: "embedding/token", Pattern: decToken(), Check: checkDecoderEmbedding},
	}
}

// decInfo is what a match of a decoder rule means.
type decInfo struct {
	ids, table *ir.Value
	hidden     int64
	scale      float64
	// posTable is the position table (looked up or sliced), posIDs the lookup's ids.
	posTable, posIDs *ir.Value
	positions        int
	offset           int64
}

func decAnalyse(m *patterns.Match) (*decInfo, string) {
	info := &decInfo{ids: m.V("tok_ids"), table: m.V("tok_table"), scale: 1}
	t := patterns.ConstOf(info.table)
	if len(t.Dims) != 2 || !t.DType.IsFloat() || t.Dims[0] < 2 {
		return nil, fmt.Sprintf("token table %s is %s%v, not float [vocab, hidden]", info.table.Name, t.DType, t.Dims)
	}
	info.hidden = t.Dims[1]
	ids := info.ids
	if ids.Type == nil || !ids.Type.DType.IsInt() || ids.Type.Rank() != 2 {
		return nil, fmt.Sprintf("input ids are %s, not an integer [batch, sequence] tensor", ids.Type)
	}
	if m.Has("tok_scale") {
		s := m.Const("tok_scale")
		vals, err := s.Float64s()
		if err != nil || len(vals) != 1 || !s.DType.IsFloat() {
			return nil, fmt.Sprintf("token scale is %s%v, not a float scalar", s.DType, s.Dims)
		}
		info.scale = vals[0]
	}
	seq := ids.Type.Shape[1]
	switch {
	case m.Has("pos_gather"):
		pt := patterns.ConstOf(m.V("pos_table"))
		if len(pt.Dims) != 2 || pt.Dims[1] != info.hidden || pt.DType != t.DType {
			return nil, fmt.Sprintf("position table %s is %s%v, not %s[positions, %d]", m.V("pos_table").Name, pt.DType, pt.Dims, t.DType, info.hidden)
		}
		info.posTable, info.posIDs = m.V("pos_table"), m.V("pos_ids")
		p := info.posIDs
		if p.Type == nil || !p.Type.DType.IsInt() || p.Type.Rank() < 1 || p.Type.Rank() > 2 {
			return nil, fmt.Sprintf("position ids are %s, not [batch or 1, sequence] or [sequence]", p.Type)
		}
		if !ir.SameDim(p.Type.Shape[p.Type.Rank()-1], seq) {
			return nil, fmt.Sprintf("position ids %s do not provably run along the sequence of %s", p.Type.Shape, ids.Type.Shape)
		}
		off, base := decOffset(p)
		switch {
		case embArangeIDs(base, ids):
			info.positions, info.offset = embDefaultPositions, off
		case embIsPositionIDs(p):
			info.positions = embComputedPositions
		default:
			return nil, fmt.Sprintf("the second lookup's ids %q are not position ids (an arange, an input named like positions, or computed by Range or CumSum)", p.Name)
		}
	case m.Has("pos_term"):
		if why := decConstPositions(m.V("pos_term"), seq, info); why != "" {
			return nil, why
		}
	}
	// The sum has the token lookup's shape: the position term only broadcasts.
	if m.Has("dec_sum") {
		tok := m.V("tok_gather")
		if !ir.SameShape(m.Root.Type.Shape, tok.Type.Shape) {
			return nil, fmt.Sprintf("the sum %s is not provably the shape of the token lookup %s", typeOrNone(m.Root), typeOrNone(tok))
		}
	}
	return info, ""
}

func typeOrNone(v *ir.Value) string {
	if v.Type == nil {
		return "(untyped)"
	}
	return v.Type.String()
}

// decOffset splits position ids into base + k for a constant integer k (BART's learned
// positions are arange(S) + 2); k is 0 when there is no such Add.
func decOffset(p *ir.Value) (int64, *ir.Value) {
	n, _ := p.Producer()
	if n == nil || n.Domain != "" || n.OpType != "Add" {
		return 0, p
	}
	for i, c := range []*ir.Value{n.Input(1), n.Input(0)} {
		t := patterns.ConstOf(c)
		if t == nil || !t.DType.IsInt() || t.NumElements() != 1 {
			continue
		}
		k, err := t.Int64s()
		if err != nil {
			continue
		}
		base := n.Input(i)
		if base.Type == nil || !ir.SameShape(base.Type.Shape, p.Type.Shape) {
			return 0, p
		}
		return k[0], base
	}
	return 0, p
}

// decConstPositions reads a position term computed from a constant table alone: rows
// 0..S-1 sliced off the table (through Slice, Unsqueeze, Reshape, Squeeze, Expand, Cast
// and Identity), or the folded constant of a static sequence.
func decConstPositions(v *ir.Value, seq ir.Dim, info *decInfo) string {
	if t := patterns.ConstOf(v); t != nil {
		rows, why := embConstRows(t, info.hidden)
		if why != "" {
			return why
		}
		if len(rows) == 1 {
			return "the added constant is the same at every position: a bias, not position embeddings"
		}
		if !seq.Known || seq.Value != int64(len(rows)) {
			return fmt.Sprintf("a constant term of %d positions, and the sequence length is %s", len(rows), seq)
		}
		info.posTable, info.positions = v, embFoldedPositions
		return ""
	}
	if v.Type == nil || v.Type.Rank() < 2 {
		return fmt.Sprintf("position term %q is %s, not [.., sequence, hidden]", v.Name, typeOrNone(v))
	}
	s := v.Type.Shape
	if !ir.SameDim(s[len(s)-2], seq) || !ir.SameDim(s[len(s)-1], ir.D(info.hidden)) {
		return fmt.Sprintf("position term %q is %s, not provably [.., %s, %d]", v.Name, s, seq, info.hidden)
	}
	for depth := 0; depth < 8; depth++ {
		n, _ := v.Producer()
		if n == nil || n.Domain != "" {
			break
		}
		switch n.OpType {
		case "Unsqueeze", "Reshape", "Squeeze", "Expand", "Cast", "Identity":
			v = n.Input(0)
			continue
		case "Slice":
			if !decSliceFromZero(n) {
				return fmt.Sprintf("position term %q slices its table other than from row 0", n.Output(0).Name)
			}
			src := n.Input(0)
			if t := patterns.ConstOf(src); t != nil && t.DType.IsFloat() && len(t.Dims) >= 2 && t.Dims[len(t.Dims)-1] == info.hidden {
				info.posTable, info.positions = src, embDefaultPositions
				return ""
			}
			v = src
			continue
		}
		break
	}
	return fmt.Sprintf("position term %q is neither a lookup nor rows of a constant table", v.Name)
}

// decSliceFromZero reports whether a Slice takes rows from 0 with step 1 on every axis
// it slices (the sequence axis of a position table).
func decSliceFromZero(n *ir.Node) bool {
	starts, ok := embInts(n.Input(1))
	if !ok {
		return false
	}
	for _, s := range starts {
		if s != 0 {
			return false
		}
	}
	if n.Input(4) != nil {
		steps, ok := embInts(n.Input(4))
		if !ok {
			return false
		}
		for _, s := range steps {
			if s != 1 {
				return false
			}
		}
	}
	return true
}

// decNormalisedNext reports the LayerNorm that is the only reader of v, if any.
func decNormalisedNext(v *ir.Value) string {
	uses := v.Uses()
	if v.IsGraphOutput() {
		return ""
	}
	if len(uses) == 2 && uses[0].Node.OpType != uses[1].Node.OpType && normOf(v) != nil {
		// (v - mean(v)) / σ: only the LayerNorm's ReduceMean and Sub read v.
		for _, u := range uses {
			if op := u.Node.OpType; op != "ReduceMean" && op != "Sub" {
				return ""
			}
		}
		return uses[0].Node.OpType + "+" + uses[1].Node.OpType
	}
	if len(uses) != 1 {
		return ""
	}
	n := uses[0].Node
	switch {
	case n.OpType == "LayerNormalization" && n.Domain == "",
		n.OpType == "ReduceMean" && n.Domain == "",
		strings.HasSuffix(n.OpType, "LayerNormalization") && n.Domain == "com.microsoft":
		return n.OpType
	}
	return ""
}

// decStepPositions reports whether the lookup adds positions computed at run time as a
// [sequence] vector.
func decStepPositions(m *patterns.Match) bool {
	info, why := decAnalyse(m)
	return why == "" && info.positions == embComputedPositions && info.posIDs != nil &&
		info.posIDs.Type != nil && info.posIDs.Type.Rank() == 1
}

func checkDecoderEmbedding(m *patterns.Match) string {
	// The embedding+LayerNorm forms take ids that count from a constant, or
	// [batch or 1, sequence] ones; a [sequence] vector computed otherwise (a decoding
	// step's arange from the cache length) stays this form's, LayerNorm next or not.
	if op := decNormalisedNext(m.Root); op != "" && !decStepPositions(m) {
		return fmt.Sprintf("the sum's only reader is a LayerNorm (%s): the embedding+LayerNorm forms apply", op)
	}
	if !m.Has("dec_sum") {
		// A lone lookup whose only reader is a sum: the block would stop short of it.
		if uses := m.Root.Uses(); len(uses) == 1 && !m.Root.IsGraphOutput() {
			if n := uses[0].Node; n.Domain == "" && (n.OpType == "Add" || n.OpType == "Sum") {
				return fmt.Sprintf("the lookup is summed next (into %s) with a term that is not position embeddings", n.Output(0).Name)
			}
		}
	}
	_, why := decAnalyse(m)
	return why
}

func describeDecoderEmbedding(m *patterns.Match, b *Block) {
	info, why := decAnalyse(m)
	if why != "" {
		return
	}
	b.Roles["output"] = m.Root
	b.Roles["input_ids"] = info.ids
	b.Roles["word_embedding"] = info.table
	b.Params["vocab"] = float64(patterns.ConstOf(info.table).Dims[0])
	b.Params["hidden"] = float64(info.hidden)
	b.Params["scale"] = info.scale
	b.Params["positions"] = float64(info.positions)
	if info.posTable != nil {
		b.Roles["position_embedding"] = info.posTable
		if t := patterns.ConstOf(info.posTable); len(t.Dims) >= 2 {
			b.Params["max_positions"] = float64(t.Dims[len(t.Dims)-2])
		}
	}
	if info.posIDs != nil {
		b.Roles["position_ids"] = info.posIDs
	}
	if info.offset != 0 {
		b.Params["position_offset"] = float64(info.offset)
	}
}

// decNoOperator is why fuse leaves a decoder embedding as it is.
const decNoOperator = "no LayerNorm after the sum: neither target has an embedding operator without one; left as is"
