package transformer

import (
	"fmt"
	"math"
	"slices"

	"github.com/qcc-dev/qcc/ir"
)

// attnOperand is Q, K or V followed back from its matmul: the source (the op that
// computed it) and the layout steps from there to the matmul, with the layout of every
// value on the way (values[0] is the source, values[i+1] = steps[i].out).
type attnOperand struct {
	name    string
	steps   []layoutStep
	values  []*ir.Value
	layouts []layout
	// point is the index in values of the tensor the fused operator reads, cost the ops
	// needed to bring it to [B,S,N·D].
	point, cost int
	canon       []*atom // batch, sequence, heads, head size: the fused operator's order
	headLeaves  []*atom
	seq         *atom
	// rows are the leaves of the matmul's row (or, for K, column) axis: the sequence, and
	// the heads when they are folded in with it (GPT-BigCode's Q viewed [B, S·H, D]).
	rows, batch, depth []*atom
	// synth are head atoms no tensor holds: the matmul broadcasts this operand over
	// them (multi-query attention's one K/V head); materialise expands them.
	synth []*atom
}

// broadcastHeads gives an operand whose batch axis has size 1 where the other matmul
// operand has heads a repeat atom there: the matmul broadcasts it over the heads.
func (o *attnOperand) broadcastHeads(other layout) {
	l := o.last()
	if len(l) != len(other) {
		return
	}
	for i := 0; i < len(l)-2; i++ {
		lv, ov := l[i].leaves(), other[i].leaves()
		// An axis of size 1: empty, or unit atoms (Falcon's one key head, sliced off a
		// packed head axis).
		if !dimIsOne(lv.size()) || len(ov) == 0 {
			continue
		}
		heads := true
		for _, a := range ov {
			heads = heads && (a.kind == atomChan || a.kind == atomRepeat)
		}
		if heads {
			r := &atom{kind: atomRepeat, size: ov.size()}
			l[i] = axis{r}
			o.synth = append(o.synth, r)
		}
	}
}

// pointCanon is the canonical order without the atoms materialise synthesises.
func (o *attnOperand) pointCanon() []*atom {
	var out []*atom
	for _, a := range o.canon {
		if !slices.Contains(o.synth, a) {
			out = append(out, a)
		}
	}
	return out
}

func (o *attnOperand) last() layout { return o.layouts[len(o.layouts)-1] }

// maxSteps bounds a walk back through layout ops.
const maxSteps = 40

// chainInput is the input of a pass-through op that carries the operand (the other
// input of a scalar Mul/Div), or nil.
func chainInput(n *ir.Node) *ir.Value {
	if n.OpType == "Mul" || n.OpType == "Div" {
		if _, ok := scalarConst(n.Input(1)); ok {
			return n.Input(0)
		}
		if _, ok := scalarConst(n.Input(0)); ok && n.OpType == "Mul" {
			return n.Input(1)
		}
		return nil
	}
	if len(n.Inputs()) == 0 {
		return nil
	}
	return n.Input(0)
}

// walkBack follows v back through pass-through steps (ok filters them) and returns the
// steps in forward order and the source.
func walkBack(v *ir.Value, ok func(layoutStep) bool) ([]layoutStep, *ir.Value) {
	var steps []layoutStep
	for len(steps) < maxSteps {
		n, idx := v.Producer()
		if n == nil {
			break
		}
		in := chainInput(n)
		if in == nil || rotaryInput(v) != nil {
			break // a rotary ends in a Reshape, but rotates: it is the operand's source
		}
		st, pass := passThrough(n, in)
		if !pass || !ok(st) || (n.OpType != "Split" && idx != 0) {
			break
		}
		st.out = v
		steps = append(steps, st)
		v = in
	}
	slices.Reverse(steps)
	return steps, v
}

func anyStep(layoutStep) bool { return true }

// pureLayout accepts only ops that move data (no scale, no Q/DQ).
func pureLayout(st layoutStep) bool { return st.scale == 1 && !st.quant && st.node.OpType != "Cast" }

// elementwise ops keep their input's layout when an input has the output's shape; so do
// normalisations over the last axis (a Q/K norm on the head size).
var elementwise = map[string]bool{"Add": true, "Sub": true, "Mul": true, "Div": true, "Neg": true, "Where": true,
	"LayerNormalization": true, "SimplifiedLayerNormalization": true, "RMSNormalization": true,
	"RotaryEmbedding": true}

// headOpInputs are the tensors an operand's source was computed from by an op that keeps
// the heads' layout: a rotary embedding's input, then the inputs of the source's shape of
// an elementwise op or a last-axis norm (a Q/K norm on the head size).
func headOpInputs(v *ir.Value) []*ir.Value {
	var ins []*ir.Value
	if x := rotaryInput(v); x != nil {
		ins = append(ins, x)
	}
	if n, _ := v.Producer(); n != nil && elementwise[n.OpType] && (n.Domain == "" || n.Domain == "ai.onnx" || n.OpType == "RotaryEmbedding") {
		vs := attnShape(v)
		for _, in := range n.Inputs() {
			if s := attnShape(in); in != nil && len(s) == len(vs) && len(vs) >= 3 && ir.SameShape(s, vs) {
				ins = append(ins, in)
			}
		}
	}
	return ins
}

// layoutOf is the layout of an operand's source: that of an input of the same shape when
// an elementwise op made it (a rotary embedding applied to the heads keeps their layout),
// else the layout its rank and producer imply.
func layoutOf(v *ir.Value, depth int, r reading) (layout, string) {
	if depth < 4 {
		for _, in := range headOpInputs(v) {
			if op, why := followOperand("", in, anyStep, depth+1, r); why == "" {
				return op.last(), ""
			}
		}
	}
	if n, _ := v.Producer(); n != nil && depth < 4 && n.OpType == "Concat" && n.Domain == "" {
		if l, ok := concatLayout(n, depth, r); ok {
			return l, ""
		}
	}
	return sourceLayout(v, r)
}

// concatLayout is the layout of a Concat whose inputs have one layout but for the
// concatenated axis: channel parts (the halves of a rotary embedding, rotated and
// passed-through parts) become one new channel atom; sequence parts (a key or value
// cache before this step's keys) one new sequence atom. An input whose layout cannot be
// followed (the cache, a graph input) must have the others' sizes on every other axis.
// When it is not such a concat, ok is false and the concat's output is read as a source
// (sourceLayout says why that fails, if it does).
func concatLayout(n *ir.Node, depth int, r reading) (layout, bool) {
	out := attnShape(n.Output(0))
	a, ok := normAxis(n.AttrInt("axis", 0), len(out))
	if !ok {
		return nil, false
	}
	var first layout
	var opaque []ir.Shape
	kind := atomChan
	for _, in := range n.Inputs() {
		op, why := followOperand("", in, anyStep, depth+1, r)
		// A cache fed as an input has this step's batch and heads, which the computed
		// part names: like an input that cannot be followed, it only has to match sizes.
		cache := why == "" && op.values[0].IsGraphInput() && len(op.layouts[0]) >= 4
		if why != "" || cache {
			s := attnShape(in)
			if len(s) != len(out) {
				return nil, false
			}
			opaque = append(opaque, s)
			continue
		}
		l := op.last()
		if len(l) != len(out) {
			return nil, false
		}
		lv := l[a].leaves()
		switch {
		case len(lv) == 1 && lv[0].kind == atomSeq:
			kind = atomSeq
		default:
			for _, x := range lv {
				if x.kind != atomChan {
					return nil, false // along a batch axis or a merged sequence
				}
			}
		}
		if first == nil {
			first = l
			continue
		}
		for i := range l {
			if i != a && !sameStructure(l[i].leaves(), first[i].leaves()) {
				return nil, false // tensors laid out differently
			}
		}
	}
	if first == nil {
		return nil, false // no input has a layout
	}
	for _, s := range opaque {
		for i := range s {
			if i != a && !ir.SameDim(s[i], first[i].leaves().size()) {
				return nil, false
			}
		}
	}
	if kind == atomChan && !out[a].Known {
		return nil, false // channels to an unknown width
	}
	res := first.clone()
	res[a] = axis{{kind: kind, size: out[a]}}
	return res, true
}

// sameStructure compares two atom lists by kind and size.
func sameStructure(a, b []*atom) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].kind != b[i].kind || !ir.SameDim(a[i].size, b[i].size) {
			return false
		}
	}
	return true
}

// followOperand walks v back to its source and replays the steps forward, the source
// taken in reading r (see sourceLayout).
func followOperand(name string, v *ir.Value, ok func(layoutStep) bool, depth int, r reading) (*attnOperand, string) {
	steps, src := walkBack(v, ok)
	l, why := layoutOf(src, depth, r)
	if why != "" {
		return nil, name + ": " + why
	}
	op := &attnOperand{name: name, steps: steps, values: []*ir.Value{src}, layouts: []layout{l}}
	for _, st := range steps {
		l, why = st.apply(l)
		if why != "" {
			return nil, name + ": " + why
		}
		op.values = append(op.values, st.out)
		op.layouts = append(op.layouts, l)
	}
	return op, ""
}

// headGroups splits an operand's batch axes (all but the last two) into batch leaves and
// head leaves, and says why when an axis mixes them in a way no fused operator reads.
func headGroups(l layout) (batch, heads []*atom, classes []string, why string) {
	for _, ax := range l[:len(l)-2] {
		cls := ""
		for _, a := range ax.leaves() {
			switch a.kind {
			case atomBatch:
				batch = append(batch, a)
				cls += "b"
			case atomChan, atomRepeat:
				heads = append(heads, a)
				if len(cls) == 0 || cls[len(cls)-1] != 'h' {
					cls += "h"
				}
			default:
				return nil, nil, nil, fmt.Sprintf("a %s atom among the batch axes", atomKindNames[a.kind])
			}
		}
		classes = append(classes, cls)
	}
	if len(batch) != 1 {
		return nil, nil, nil, fmt.Sprintf("%d batch atoms among the batch axes, want 1", len(batch))
	}
	return batch, heads, classes, ""
}

// pairBatchAxes checks that two operands of a matmul index their batch axes alike: the
// same batch/heads pattern per axis and the same sizes (a K head group of [kv, repeat]
// pairs with Q's heads of the same size).
func pairBatchAxes(a, b layout) string {
	if len(a) != len(b) {
		return fmt.Sprintf("ranks %d and %d (a broadcast over the batch or heads)", len(a), len(b))
	}
	_, _, ca, why := headGroups(a)
	if why != "" {
		return why
	}
	_, _, cb, why := headGroups(b)
	if why != "" {
		return why
	}
	for i := range ca {
		if ca[i] != cb[i] || !ir.SameDim(a[i].leaves().size(), b[i].leaves().size()) {
			return fmt.Sprintf("batch axis %d is %v against %v", i, a[i].leaves(), b[i].leaves())
		}
	}
	return ""
}

// canonical is the order the fused operators read an operand in: [B, S, heads…, D…],
// with seqAxis and depthAxis the axes at the matmul holding the sequence and head size.
func (o *attnOperand) canonical(seqAxis, depthAxis int) string {
	l := o.last()
	batch, heads, _, why := headGroups(l)
	if why != "" {
		return o.name + ": " + why
	}
	rows := l[seqAxis].leaves()
	// The sequence alone, or with heads folded in on one side of it.
	var seq *atom
	var rowHeads []*atom
	ok := true
	for _, a := range rows {
		switch {
		case a.kind == atomSeq && seq == nil:
			seq = a
		case a.kind == atomChan:
			rowHeads = append(rowHeads, a)
		default:
			ok = false
		}
	}
	if seq == nil && len(rowHeads) == len(rows) && slices.ContainsFunc(l[depthAxis].leaves(), func(a *atom) bool { return a.kind == atomSeq }) {
		// XCiT: a channel-by-channel map whose head size is the token count, a size
		// of the input, outside what the fused kernels are built for; exact only
		// through a transposed Q, K and V with a per-head temperature: left as is.
		return fmt.Sprintf("%s: channels as the rows at the matmul and the tokens contracted (cross-covariance attention): no fused attention contracts the tokens", o.name)
	}
	if !ok || seq == nil || (len(rowHeads) > 0 && rows[0] != seq && rows[len(rows)-1] != seq) {
		return fmt.Sprintf("%s: the sequence axis at the matmul is %v", o.name, rows)
	}
	depth := l[depthAxis].leaves()
	for _, a := range depth {
		if a.kind != atomChan {
			return fmt.Sprintf("%s: the head-size axis at the matmul is %v", o.name, depth)
		}
	}
	o.seq, o.rows, o.batch, o.depth = seq, rows, batch, depth
	o.setHeads(append(heads, rowHeads...))
	return ""
}

// setHeads makes hs the operand's heads and rebuilds its canonical order.
func (o *attnOperand) setHeads(hs []*atom) {
	o.headLeaves = hs
	o.canon = append(append(append(append([]*atom(nil), o.batch...), o.seq), hs...), o.depth...)
}

// rowHeads are the heads folded into the matmul's rows with the sequence.
func (o *attnOperand) rowHeads() []*atom {
	return slices.DeleteFunc(slices.Clone(o.rows), func(a *atom) bool { return a == o.seq })
}

// keyHeads checks that K or V holds its sequence alone on its sequence axis and gives it
// the heads Q folds into its rows (broadcastRowHeads).
func (o *attnOperand) keyHeads(q *attnOperand) string {
	if rh := o.rowHeads(); len(rh) > 0 {
		return fmt.Sprintf("%s folds heads %v into its sequence axis", o.name, rh)
	}
	return o.broadcastRowHeads(q)
}

// broadcastRowHeads gives K or V, which hold no heads, the heads Q folds into its rows:
// the one K/V head of multi-query attention, which the matmul's rows share.
func (o *attnOperand) broadcastRowHeads(q *attnOperand) string {
	rh := q.rowHeads()
	if len(rh) == 0 {
		return ""
	}
	if len(o.headLeaves) > 0 {
		return fmt.Sprintf("Q folds heads %v into its rows and %s has heads %v of its own", rh, o.name, o.headLeaves)
	}
	var hs []*atom
	for _, h := range rh {
		r := &atom{kind: atomRepeat, size: h.size}
		o.synth = append(o.synth, r)
		hs = append(hs, r)
	}
	o.setHeads(hs)
	return ""
}

// choosePoint picks the value the fused operator reads: the one needing the fewest ops
// to become [B,S,N·D], earliest on ties (more of the exporter's layout ops go away).
// unscaled keeps scalar scales after the point out (V's: the fused operator has a scale
// for the scores only, so the scaled V itself is what it must read).
func (o *attnOperand) choosePoint(unscaled bool) string {
	best := -1
	// The matmul may broadcast the operand over all the heads (multi-query) or over the
	// minor part of them (grouped-query: each of its heads serves consecutive query
	// heads); a broadcast over a major part would interleave the groups.
	if n := len(o.synth); n > 0 && (n > len(o.headLeaves) || !slices.Equal(o.synth, o.headLeaves[len(o.headLeaves)-n:])) {
		return fmt.Sprintf("%s is broadcast over a major part of the heads", o.name)
	}
	for i, l := range o.layouts {
		c, ok := materialCost(l, o.pointCanon())
		if ok && unscaled && scaleOf(o.steps[i:]) != 1 {
			ok = false
		}
		if ok && castsAfter(o.steps[i:]) {
			ok = false // the fused operator would read another type, or the value before it was rounded
		}
		if ok && (best < 0 || c < o.cost) {
			best, o.cost = i, c
		}
	}
	if best < 0 {
		if unscaled && scaleOf(o.steps) != 1 {
			return fmt.Sprintf("%s: no tensor after its scale holds [B,S,heads,D] (%v at the matmul)", o.name, o.last())
		}
		return fmt.Sprintf("%s: no tensor on its path holds [B,S,heads,D] (%v at the matmul)", o.name, o.last())
	}
	o.point = best
	return ""
}

// materialPerm is the axis order that puts l's atoms in canonical order, with its empty
// axes last; ok is false when an axis's atoms are not contiguous in that order or some
// canonical atom is missing.
func materialPerm(l layout, canon []*atom) ([]int, bool) {
	// A canonical atom a later reshape split (the output viewed with the head size in
	// two) is its leaves, in order.
	canon = axis(canon).leaves()
	pos := map[*atom]int{}
	for i, a := range canon {
		pos[a] = i
	}
	type ax struct{ i, first int }
	var full []ax
	var empty []int
	seen := 0
	for i, a := range l {
		// Unit atoms the canonical order does not hold (a one-head slice of a packed
		// head axis) have no place in it: a Reshape drops them.
		lv := slices.DeleteFunc(a.leaves(), func(x *atom) bool { _, in := pos[x]; return !in && dimIsOne(x.size) })
		if len(lv) == 0 {
			empty = append(empty, i)
			continue
		}
		p, ok := pos[lv[0]]
		if !ok {
			return nil, false
		}
		for k, x := range lv {
			if q, ok := pos[x]; !ok || q != p+k {
				return nil, false
			}
		}
		seen += len(lv)
		full = append(full, ax{i, p})
	}
	if seen != len(canon) {
		return nil, false
	}
	slices.SortFunc(full, func(a, b ax) int { return a.first - b.first })
	perm := make([]int, 0, len(l))
	for _, a := range full {
		perm = append(perm, a.i)
	}
	return append(perm, empty...), true
}

// materialOrder is materialPerm, or when an axis holds atoms the canonical order keeps
// apart (heads folded into the batch, [B·N, S, D]) materialPerm of the layout a Reshape
// makes with every atom an axis of its own (split).
func materialOrder(l layout, canon []*atom) (layout, []int, bool, bool) {
	if perm, ok := materialPerm(l, canon); ok {
		return l, perm, false, true
	}
	u, ok := unfolded(l)
	if !ok {
		return nil, nil, false, false
	}
	perm, ok := materialPerm(u, canon)
	return u, perm, true, ok
}

// unfolded is l with every atom an axis of its own; false when no axis holds two atoms,
// or more than one atom's size is unknown (the Reshape spells the sizes, -1 for one).
func unfolded(l layout) (layout, bool) {
	var out layout
	merged, unknown := false, 0
	for _, ax := range l {
		lv := ax.leaves()
		merged = merged || len(lv) > 1
		for _, a := range lv {
			if !a.size.Known {
				unknown++
			}
			out = append(out, axis{a})
		}
	}
	return out, merged && unknown <= 1
}

// materialCost counts the ops that make a tensor of layout l into [B,S,N·D]: a
// Transpose when its axes are out of order, a Reshape unless it already is [B][S][N·D].
// Batch and sequence must be axes of their own (Reshape copies them with 0).
func materialCost(l layout, canon []*atom) (int, bool) {
	l, perm, split, ok := materialOrder(l, canon)
	if !ok {
		return 0, false
	}
	if len(perm) < 2 {
		return 0, false
	}
	b, s := l[perm[0]].leaves(), l[perm[1]].leaves()
	if len(b) != 1 || b[0] != canon[0] || len(s) != 1 || s[0] != canon[1] {
		return 0, false
	}
	cost := 0
	if split {
		cost++
	}
	for i, p := range perm {
		if p != i {
			cost++
			break
		}
	}
	if len(l) != 3 || len(l[perm[2]].leaves()) == 0 {
		cost++
	}
	return cost, true
}

// castsAfter reports whether a step casts to another type: the operand is then computed
// in that type (float32 to float16 and back rounds it), which the fused operator must read.
func castsAfter(steps []layoutStep) bool {
	for _, st := range steps {
		if st.node.OpType == "Cast" && (st.in.Type == nil || st.in.Type.DType != ir.DataType(st.node.AttrInt("to", 0))) {
			return true
		}
	}
	return false
}

// scaleAfter multiplies the scales of the steps after the operand's point.
func (o *attnOperand) scaleAfter() float64 { return scaleOf(o.steps[o.point:]) }

func scaleOf(steps []layoutStep) float64 {
	s := 1.0
	for _, st := range steps {
		s *= st.scale
	}
	return s
}

func (o *attnOperand) quantizedAfter() bool {
	for _, st := range o.steps[o.point:] {
		if st.quant {
			return true
		}
	}
	return false
}

// nodesAfter are the operand's nodes that the fused operator replaces.
func (o *attnOperand) nodesAfter() []*ir.Node {
	var ns []*ir.Node
	for _, st := range o.steps[o.point:] {
		ns = append(ns, st.node)
	}
	return ns
}

func (o *attnOperand) input() *ir.Value { return o.values[o.point] }

func finite(x float64) bool { return !math.IsInf(x, 0) && !math.IsNaN(x) }
