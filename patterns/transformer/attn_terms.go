package transformer

import (
	"fmt"
	"slices"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/prune"
	"github.com/qcc-dev/qcc/shape"
)

// The fused operators take the score terms as one bias of shape [B|1, N|1, S, T]: its four
// axes are groups of the scores' atoms (batch, heads, query sequence, key sequence).
const (
	groupBatch = iota
	groupHeads
	groupQuery
	groupKey
)

// groupOf maps the scores' atoms to the bias axes.
func (p *attnPlan) groupOf() map[*atom]int {
	g := map[*atom]int{p.q.canon[0]: groupBatch, p.q.seq: groupQuery, p.k.seq: groupKey}
	for _, a := range p.q.headLeaves {
		g[a] = groupHeads
	}
	return g
}

// termAxes aligns a term (numpy broadcasting, from the right) with the scores where it is
// added and says which bias groups each of its axes holds (none: broadcast). A group must
// sit whole in one axis, its atoms in order.
func (p *attnPlan) termAxes(t *attnTerm) ([][]int, string) {
	s := attnShape(t.value)
	at := t.at
	if v, ok := splitView(at); ok && s != nil && len(s) <= len(at) {
		_, reshape, why := v.unsplit(s)
		if why != "" {
			return nil, fmt.Sprintf("score term %s: %s", t.value.Name, why)
		}
		// The term as the merged view reads it (bias makes it so); its one unknown dim is
		// a symbol, equal to the scores' there.
		at, s = v.merged, make(ir.Shape, len(reshape))
		for j, d := range reshape {
			s[j] = ir.D(d)
			if d < 0 {
				s[j] = at[j].leaves().size()
			}
		}
	}
	rc := len(at)
	if s == nil {
		return nil, fmt.Sprintf("score term %s has an unknown shape", t.value.Name)
	}
	if len(s) > rc {
		return nil, fmt.Sprintf("score term %s has shape %v against scores of rank %d", t.value.Name, s, rc)
	}
	gr := p.groupOf()
	out := make([][]int, len(s))
	seen := map[int]bool{}
	for j, d := range s {
		ax := at[j+rc-len(s)].leaves()
		if dimIsOne(d) && !dimIsOne(ax.size()) {
			continue
		}
		// A symbol against the scores' axis: the graph's own Add makes them equal (a
		// symbol is not 1 unless the file says so), whatever the exporter named them. So
		// does a number against the keys (or the queries of self-attention, which are the
		// keys): probs·V contracts the keys with V's, so the graph runs only where they are
		// that number (BEiT's [1,H,17,17] bias in a model exported for any image size).
		pinned := d.Known && !ax.size().Known && len(ax) == 1 &&
			(ax[0] == p.k.seq || ax[0] == p.q.seq && ir.SameDim(p.q.seq.size, p.k.seq.size))
		if !ir.SameDim(d, ax.size()) && (d.Known || dimIsOne(ax.size())) && !pinned {
			return nil, fmt.Sprintf("score term %s: axis %d is %v where the scores have %v", t.value.Name, j, d, ax.size())
		}
		for k, a := range ax {
			g, ok := gr[a]
			if !ok && a.parent != nil && gr[a.parent] == groupBatch {
				if a.outer || (!a.size.Known && !a.parent.size.Known) {
					return nil, fmt.Sprintf("score term %s varies over the outer factor %v of the batch only", t.value.Name, a)
				}
				g, ok, t.inner = groupBatch, true, a
			}
			if !ok {
				return nil, fmt.Sprintf("score term %s: axis %d holds %v", t.value.Name, j, a)
			}
			if k == 0 || out[j][len(out[j])-1] != g {
				if seen[g] {
					return nil, fmt.Sprintf("score term %s splits the %s over axes", t.value.Name, []string{"batch", "heads", "queries", "keys"}[g])
				}
				seen[g] = true
				out[j] = append(out[j], g)
			}
		}
		if len(out[j]) > 1 && !slices.Equal(out[j], []int{groupBatch, groupHeads}) {
			return nil, fmt.Sprintf("score term %s: axis %d merges %v", t.value.Name, j, out[j])
		}
	}
	// The heads are the only group of several atoms: their order must be Q's.
	var hs []*atom
	for j, gs := range out {
		if slices.Contains(gs, groupHeads) {
			for _, a := range at[j+rc-len(s)].leaves() {
				if gr[a] == groupHeads {
					hs = append(hs, a)
				}
			}
		}
	}
	t.heads = nil
	if len(hs) > 0 && !slices.Equal(hs, p.q.headLeaves) {
		if !partialHeads(hs, p.q.headLeaves) {
			return nil, fmt.Sprintf("score term %s holds the heads in another order", t.value.Name)
		}
		t.heads = hs
	}
	return out, ""
}

// partialHeads reports whether hs are some of Q's head atoms all, in their order, and
// every head atom has a known size, so that a term over hs can be expanded over the rest.
func partialHeads(hs, all []*atom) bool {
	i := 0
	for _, a := range all {
		if !a.size.Known {
			return false
		}
		if i < len(hs) && hs[i] == a {
			i++
		}
	}
	return i == len(hs)
}

// expandHeads gives a [b, n, S, T] term over some of the head atoms (has, n their
// product) every head: viewed as one axis per head atom (1 where it does not vary), it
// is expanded over them and merged back, so head h of the merged heads reads the term at
// h's coordinates in the atoms it has.
func expandHeads(rw *patterns.Rewriter, x *ir.Value, has, all []*atom) *ir.Value {
	view, full := make([]int64, len(all)), make([]int64, len(all)+3)
	n := int64(1)
	for i, a := range all {
		view[i], full[i+1] = 1, a.size.Value
		if slices.Contains(has, a) {
			view[i] = a.size.Value
		}
		n *= a.size.Value
	}
	full[0], full[len(full)-2], full[len(full)-1] = 1, 1, 1
	// A term of lower rank (an [N, S, T] bias, aligned) gets its unit axes in front.
	x = reuseNode(rw, "Expand", []*ir.Value{x, rw.Const("attention_ones4", ir.Int64Tensor([]int64{4}, []int64{1, 1, 1, 1}))}, x.Name+"_rank4")
	sh := reuseNode(rw, "Shape", []*ir.Value{x}, x.Name+"_shape")
	b := reuseNode(rw, "Gather", []*ir.Value{sh, rw.Const("attention_axis_0", ir.Int64Tensor([]int64{1}, []int64{0}))}, x.Name+"_b", ir.IntAttr("axis", 0))
	st := reuseNode(rw, "Gather", []*ir.Value{sh, rw.Const("attention_axes_st", ir.Int64Tensor([]int64{2}, []int64{2, 3}))}, x.Name+"_st", ir.IntAttr("axis", 0))
	vs := reuseNode(rw, "Concat", []*ir.Value{b, rw.Const("attention_head_view", ir.Int64Tensor([]int64{int64(len(view))}, view)), st}, x.Name+"_head_view_shape", ir.IntAttr("axis", 0))
	x = reuseNode(rw, "Reshape", []*ir.Value{x, vs}, x.Name+"_head_view")
	x = reuseNode(rw, "Expand", []*ir.Value{x, rw.Const("attention_head_grid", ir.Int64Tensor([]int64{int64(len(full))}, full))}, x.Name+"_heads")
	ms := reuseNode(rw, "Concat", []*ir.Value{b, rw.Const("attention_head_count", ir.Int64Tensor([]int64{1}, []int64{n})), st}, x.Name+"_shape4", ir.IntAttr("axis", 0))
	return reuseNode(rw, "Reshape", []*ir.Value{x, ms}, x.Name+"_4d")
}

// bias builds Σ factor·term as [B|1, N|1, S, T] over the terms but skip (-1: none), or
// nil when no term is left.
func (p *attnPlan) bias(rw *patterns.Rewriter, opset int64, q, k *ir.Value, skip int) (*ir.Value, string) {
	dt := p.q.input().Type.DType // the block's float type (generalFuse checked it)
	scalar := func(name string, v float64) *ir.Value {
		t, _ := ir.Filled(dt, nil, v)
		return rw.Const(name, t)
	}
	var sum *ir.Value
	for i := range p.terms {
		if i == skip {
			continue
		}
		t := &p.terms[i]
		axes, why := p.termAxes(t)
		if why != "" {
			return nil, why
		}
		x := t.value
		if v, ok := splitView(t.at); ok {
			expand, reshape, _ := v.unsplit(attnShape(x)) // Expand gives the term the view's rank
			x = rw.Node("Expand", "", []*ir.Value{x, rw.Const("attention_term_grid", ir.Int64Tensor([]int64{int64(len(expand))}, expand))}, 1, x.Name+"_grid").Output(0)
			x = rw.Node("Reshape", "", []*ir.Value{x, rw.Const("attention_term_merged", ir.Int64Tensor([]int64{int64(len(reshape))}, reshape))}, 1, x.Name+"_merged").Output(0)
		}
		n := p.heads
		if t.heads != nil {
			n = 1
			for _, a := range t.heads {
				n *= a.size.Value
			}
		}
		x = canonTerm(rw, opset, x, axes, n)
		if t.heads != nil {
			x = expandHeads(rw, x, t.heads, p.q.headLeaves)
		}
		if t.inner != nil {
			x = tileBatch(rw, x, q, t.inner)
		}
		if t.fill != nil {
			zero := scalar("attention_zero", 0)
			if t.keepIf {
				x = reuseNode(rw, "Where", []*ir.Value{x, zero, t.fill}, "attention_mask_bias")
			} else {
				x = reuseNode(rw, "Where", []*ir.Value{x, t.fill, zero}, "attention_mask_bias")
			}
		} else if x.Type != nil && x.Type.DType != dt {
			return nil, fmt.Sprintf("score term %s is %v, the scores %v", t.value.Name, x.Type.DType, dt)
		}
		if t.factor != 1 {
			f := scalar("attention_term_scale", t.factor)
			x = rw.Node("Mul", "", []*ir.Value{x, f}, 1, x.Name+"_scaled").Output(0)
		}
		if sum == nil {
			sum = x
		} else {
			sum = rw.Node("Add", "", []*ir.Value{sum, x}, 1, "attention_bias").Output(0)
		}
	}
	if sum == nil {
		return nil, ""
	}
	// [.., S, T] spelled out: ONNX Runtime reads the bias with those strides.
	one := rw.Const("attention_ones", ir.Int64Tensor([]int64{2}, []int64{1, 1}))
	s := seqLen(rw, q)
	t := seqLen(rw, k)
	target := reuseNode(rw, "Concat", []*ir.Value{one, s, t}, "attention_bias_shape", ir.IntAttr("axis", 0))
	return reuseNode(rw, "Expand", []*ir.Value{sum, target}, "attention_bias"), ""
}

// tileBatch repeats a [b, …] bias term that varies over the inner factor b of the batch
// B = outer·b only: Tile over axis 0 gives row o·b + i the term's row i, as B's
// row-major split says. The outer count is a number, or B (read off q) over b.
func tileBatch(rw *patterns.Rewriter, x, q *ir.Value, inner *atom) *ir.Value {
	var outer *ir.Value
	if n, ok := shape.DivDims(inner.parent.size, inner.size); ok && n.Known {
		outer = rw.Const("attention_batch_outer", ir.Int64Tensor([]int64{1}, []int64{n.Value}))
	} else {
		sh := reuseNode(rw, "Shape", []*ir.Value{q}, q.Name+"_shape")
		zero := rw.Const("attention_axis_0", ir.Int64Tensor([]int64{1}, []int64{0}))
		b := reuseNode(rw, "Gather", []*ir.Value{sh, zero}, q.Name+"_batch", ir.IntAttr("axis", 0))
		in := rw.Const("attention_batch_inner", ir.Int64Tensor([]int64{1}, []int64{inner.size.Value}))
		outer = reuseNode(rw, "Div", []*ir.Value{b, in}, q.Name+"_batch_outer")
	}
	ones := rw.Const("attention_ones3", ir.Int64Tensor([]int64{3}, []int64{1, 1, 1}))
	reps := reuseNode(rw, "Concat", []*ir.Value{outer, ones}, x.Name+"_tiles", ir.IntAttr("axis", 0))
	return reuseNode(rw, "Tile", []*ir.Value{x, reps}, x.Name+"_tiled")
}

// seqLen is dim 1 of a [B,S,H] tensor as a 1-element int64 tensor.
func seqLen(rw *patterns.Rewriter, x *ir.Value) *ir.Value {
	sh := reuseNode(rw, "Shape", []*ir.Value{x}, x.Name+"_shape")
	one := rw.Const("attention_axis_1", ir.Int64Tensor([]int64{1}, []int64{1}))
	return reuseNode(rw, "Gather", []*ir.Value{sh, one}, x.Name+"_seq", ir.IntAttr("axis", 0))
}

// canonTerm brings a term to the bias layout: as it is when each axis already holds its
// group right-aligned (a [B,1,1,T] mask, an [N,S,T] bias), else a Transpose into group
// order and a Reshape to the four groups. heads is the number of heads the term varies
// over (a merged [B·N] axis gives B as its size over it).
func canonTerm(rw *patterns.Rewriter, opset int64, x *ir.Value, axes [][]int, heads int64) *ir.Value {
	r := len(axes)
	aligned := true
	for j, gs := range axes {
		aligned = aligned && (len(gs) == 0 || len(gs) == 1 && gs[0] == j+4-r)
	}
	if aligned {
		if r > 4 {
			// Unit axes in front of the four (a [1, nW, 1, S, T] window mask): dropped.
			sh := reuseNode(rw, "Shape", []*ir.Value{x}, x.Name+"_shape")
			var four *ir.Value
			if opset >= 10 {
				four = reuseNode(rw, "Slice", []*ir.Value{sh, rw.Const("attention_minus4", ir.Int64Tensor([]int64{1}, []int64{-4})),
					rw.Const("attention_end", ir.Int64Tensor([]int64{1}, []int64{1 << 62}))}, x.Name+"_last4")
			} else {
				four = legacySlice(rw, sh, 0, int64(r-4), int64(r), 1, x.Name+"_last4")
			}
			return reuseNode(rw, "Reshape", []*ir.Value{x, four}, x.Name+"_4d")
		}
		return x
	}
	// Present axes in group order first, broadcast axes after.
	var perm []int
	for g := 0; g < 4; g++ {
		for j, gs := range axes {
			if len(gs) > 0 && gs[0] == g {
				perm = append(perm, j)
			}
		}
	}
	for j, gs := range axes {
		if len(gs) == 0 {
			perm = append(perm, j)
		}
	}
	permuted := make([][]int, r)
	ident := true
	for i, j := range perm {
		permuted[i] = axes[j]
		ident = ident && i == j
	}
	if !ident {
		ps := make([]int64, r)
		for i, j := range perm {
			ps[i] = int64(j)
		}
		x = reuseNode(rw, "Transpose", []*ir.Value{x}, x.Name+"_bnst", ir.IntsAttr("perm", ps...))
	}
	// The four sizes, read at run time off the permuted term (a merged [B·N] axis gives
	// B as its size over N's).
	sh := reuseNode(rw, "Shape", []*ir.Value{x}, x.Name+"_shape")
	parts := make([]*ir.Value, 4)
	for g := range parts {
		parts[g] = rw.Const("attention_one", ir.Int64Tensor([]int64{1}, []int64{1}))
	}
	for i, gs := range permuted {
		if len(gs) == 0 {
			continue
		}
		idx := rw.Const("attention_axis", ir.Int64Tensor([]int64{1}, []int64{int64(i)}))
		size := reuseNode(rw, "Gather", []*ir.Value{sh, idx}, x.Name+"_dim", ir.IntAttr("axis", 0))
		if len(gs) == 1 {
			parts[gs[0]] = size
			continue
		}
		// [B·N, S, T] (termAxes admits no other merge): B is the size over N.
		n := rw.Const("attention_heads", ir.Int64Tensor([]int64{1}, []int64{heads}))
		parts[groupBatch] = reuseNode(rw, "Div", []*ir.Value{size, n}, x.Name+"_batch")
		parts[groupHeads] = n
	}
	shape := reuseNode(rw, "Concat", parts, x.Name+"_bias_shape", ir.IntAttr("axis", 0))
	return reuseNode(rw, "Reshape", []*ir.Value{x, shape}, x.Name+"_bias4d")
}

// legacySlice takes [start, end) by step along axis as opsets before 10 spell it: Slice
// with attributes, or a Gather of the indices when the step is not 1 (Slice-1 has none).
func legacySlice(rw *patterns.Rewriter, x *ir.Value, axis, start, end, step int64, base string) *ir.Value {
	if step == 1 {
		return reuseNode(rw, "Slice", []*ir.Value{x}, base, ir.IntsAttr("starts", start), ir.IntsAttr("ends", end), ir.IntsAttr("axes", axis))
	}
	var idx []int64
	for i := start; i < end; i += step {
		idx = append(idx, i)
	}
	return reuseNode(rw, "Gather", []*ir.Value{x, rw.Const(base+"_indices", ir.Int64Tensor([]int64{int64(len(idx))}, idx))}, base, ir.IntAttr("axis", axis))
}

// reuseNode adds a node, or returns the output of an identical one (same op, inputs and
// attributes) already in the graph: every layer's lowering of a term shared by all
// layers then builds it once.
func reuseNode(rw *patterns.Rewriter, op string, ins []*ir.Value, base string, attrs ...*ir.Attr) *ir.Value {
	if ins[0] != nil {
		for _, u := range ins[0].Uses() {
			n := u.Node
			if n.OpType != op || n.Domain != "" || u.Index != 0 || len(n.Inputs()) != len(ins) || len(n.Outputs()) != 1 {
				continue
			}
			same := true
			for i, in := range ins {
				same = same && sameInput(n.Input(i), in)
			}
			if same && prune.SameAttrs(n.Attrs, attrs) {
				return n.Output(0)
			}
		}
	}
	return rw.Node(op, "", ins, 1, base, attrs...).Output(0)
}

// sameInput is v == w, or two constants of equal contents (each layer adds its own).
func sameInput(v, w *ir.Value) bool {
	if v == w {
		return true
	}
	a, b := patterns.ConstOf(v), patterns.ConstOf(w)
	if a == nil || b == nil || a.DType != b.DType || !slices.Equal(a.Dims, b.Dims) || a.NumElements() > 64 {
		return false
	}
	x, err1 := a.Bytes()
	y, err2 := b.Bytes()
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// gridView is a view of the scores that splits the query or key sequence into the factors
// of its grid, each an axis ([B·N, h, w, h, w]: SAM adds its relative positions there).
type gridView struct {
	at     layout
	pairs  map[int]bool // the first axis of each split pair
	merged layout       // at with each pair one axis again
}

// splitView finds the pairs of axes of at that hold, in order, the two factors of one
// sequence atom; false when there are none.
func splitView(at layout) (gridView, bool) {
	v := gridView{at: at, pairs: map[int]bool{}}
	for j := 0; j < len(at); j++ {
		if j+1 < len(at) {
			a, b := at[j].leaves(), at[j+1].leaves()
			if len(a) == 1 && len(b) == 1 && a[0].kind == atomSeq && factorPair(a[0], b[0]) {
				v.pairs[j] = true
				v.merged = append(v.merged, axis{a[0].parent})
				j++
				continue
			}
		}
		v.merged = append(v.merged, at[j])
	}
	return v, len(v.pairs) > 0
}

// unsplit says how a term of shape s (the view's rank or less) becomes a term of the merged
// view: Expand to the factors' sizes over each pair (1 elsewhere), then Reshape with each
// pair one axis (its parent's size; the term's own dims elsewhere, -1 for one unknown).
func (v gridView) unsplit(s ir.Shape) (expand, reshape []int64, why string) {
	for len(s) < len(v.at) {
		s = append(ir.Shape{ir.D(1)}, s...) // broadcast from the right
	}
	unknown := 0
	for j := 0; j < len(v.at); j++ {
		if v.pairs[j] {
			hi, lo := v.at[j].leaves()[0].size, v.at[j+1].leaves()[0].size
			if !hi.Known || !lo.Known {
				return nil, nil, fmt.Sprintf("the sequence is split into %v and %v, not numbers", hi, lo)
			}
			expand = append(expand, hi.Value, lo.Value)
			reshape = append(reshape, hi.Value*lo.Value)
			j++
			continue
		}
		expand = append(expand, 1)
		d := s[j]
		if !d.Known {
			if unknown++; unknown > 1 {
				return nil, nil, fmt.Sprintf("shape %v has more than one unknown dim beside the split sequence", s)
			}
			reshape = append(reshape, -1)
			continue
		}
		reshape = append(reshape, d.Value)
	}
	return expand, reshape, ""
}
