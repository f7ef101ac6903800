package transformer

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// attnPlan is what the math-based recogniser proved about one attention block:
// softmax(scale·Q·Kᵀ + Σ terms)·V, with Q, K and V as tensors outside the block, the
// additive terms of the scores, and the path to the block's output.
type attnPlan struct {
	q, k, v *attnOperand
	softmax *ir.Node
	scores  *ir.Node // Q·Kᵀ
	context *ir.Node // probs·V
	scale   float64
	// headScale, when set, is a constant factor on the scores that varies over the heads
	// only (Swin V2's learned logit scale): it is folded into Q, head by head.
	headScale *attnTerm
	// softcap, when not 0, bounds the scaled scores before the terms are added:
	// softcap·tanh(scores/softcap) (Gemma 2).
	softcap float64
	// sink, when set, joins a logit per head to the scores before the softmax (attention
	// sinks); sinkLogits are those logits once the lowering has proved them.
	sink       *sinkJoin
	sinkLogits []float64
	terms      []attnTerm
	heads      int64 // query heads
	kvHeads    int64 // K/V heads before any repeat
	headSize   int64
	vHead      int64
	// core are the nodes from the operands' points to the context matmul.
	core []*ir.Node
	// ctxLayout is the context matmul output's layout.
	ctxLayout layout
	// why is set when the block was found (a Softmax between two matmuls) but cannot be
	// proved attention or cannot be fused.
	why string
	// proved counts the stages of prove passed: of two readings that fail, the one that
	// got further says why.
	proved int
	// termReaders are the nodes that compute the terms read from Q, K or V: they stay
	// beside the fused operator to compute its bias, and may read the block's values.
	termReaders map[*ir.Node]bool
	// root-specific: the steps from the context matmul to the block's output.
	out      []layoutStep
	outShape []int64 // Reshape of the fused [B,S,N·Dv] to the output's layout; nil: none
	// outSplit and outPerm, when set, first split the fused output into its atoms and
	// transpose them (an output whose axes are not in [B,S,N·D] order).
	outSplit, outPerm []int64
	// scoresAt is what each value on the scores path holds; scoresRead, when set, is the
	// one a node outside the block reads (a residual attention's next layer adds the
	// scores to its own), which the fused operator must output too.
	scoresAt   map[*ir.Value]scoresPoint
	scoresRead *ir.Value
	path       []scoresStep
}

// scoresPoint is what a value on the scores path holds: the scores in layout at, after
// steps of the path (0: the Q·Kᵀ product itself) with terms of the additive terms added.
type scoresPoint struct {
	at    layout
	steps int
	terms int
}

// attnTerm is one additive term of the scores, as the graph computes it: Add(scores,
// value), or Where(cond, fill, scores) read as scores + Where(cond, fill, 0).
type attnTerm struct {
	value  *ir.Value // the added tensor, or the Where's condition
	fill   *ir.Value // Where: the fill constant
	keepIf bool      // Where: cond true keeps the score
	at     layout    // the scores' layout where it is added
	factor float64   // the scales applied after it
	kind   string    // what it depends on: "mask", "constant", "query" (see termDepends)
	// inner is set when the term varies over the inner factor of a split batch only
	// (Swin's window mask over B·nW): the bias repeats it over the outer factor.
	inner *atom
	// heads are the head atoms the term varies over when they are some of Q's, in Q's
	// order (MaxViT's per-head bias, broadcast over the windows that the heads hold
	// too): the bias expands it over the others. Nil when it varies over all or none.
	heads []*atom
}

// scoresStep is a step on the scores path: a pass-through step or a term.
type scoresStep struct {
	st   layoutStep
	term *attnTerm
	// factor is a Mul by a constant that is not one number (a per-head scale).
	factor *attnTerm
	// softcap is c in c·tanh(a·x): st.scale is then the a·c the scores take before it.
	softcap float64
	// extra are the step's nodes besides node: a soft cap's Tanh and inner scale, the
	// reduction a row maximum subtracted is computed by.
	extra []*ir.Node
	node  *ir.Node
	in    *ir.Value
	out   *ir.Value
}

// findScores walks back from the Softmax input to the Q·Kᵀ matmul through pass-through
// steps and additive terms; every way is tried (an added term may itself be a matmul).
func findScores(v *ir.Value, path []scoresStep, try func(mm *ir.Node, path []scoresStep) bool) bool {
	if len(path) > maxSteps {
		return false
	}
	n, idx := v.Producer()
	if n == nil || idx != 0 || n.Domain != "" && n.Domain != "ai.onnx" {
		return false
	}
	prepend := func(s scoresStep) []scoresStep { return append([]scoresStep{s}, path...) }
	switch n.OpType {
	case "MatMul":
		if try(n, path) {
			return true
		}
	case "Add":
		for i := 0; i < 2; i++ {
			t := &attnTerm{value: n.Input(1 - i)}
			if findScores(n.Input(i), prepend(scoresStep{term: t, node: n, in: n.Input(i), out: v}), try) {
				return true
			}
		}
		return false
	case "Max":
		// A clamp at the lowest float (scores masked with -inf made finite) changes no
		// softmax weight: read through it. Below -1e30 a float32 clamp leaves every
		// unmasked score as it is; a narrower type's is at its lowest finite value.
		for i := 0; i < 2; i++ {
			if c, ok := scalarConst(n.Input(1 - i)); ok && c <= clampFloor(v) {
				st := layoutStep{node: n, in: n.Input(i), out: v, scale: 1}
				return findScores(n.Input(i), prepend(scoresStep{st: st, node: n, in: n.Input(i), out: v}), try)
			}
		}
		return false
	case "Mul":
		if s, ok := softcapStep(n, v); ok {
			return findScores(s.in, prepend(s), try)
		}
		for i := 0; i < 2; i++ {
			if _, uniform := scalarConst(n.Input(1 - i)); !uniform && patterns.ConstOf(n.Input(1-i)) != nil {
				f := &attnTerm{value: n.Input(1 - i)}
				return findScores(n.Input(i), prepend(scoresStep{factor: f, node: n, in: n.Input(i), out: v}), try)
			}
		}
	case "Sub":
		// Scores minus their row maximum (a stable softmax written out, LayoutLMv3's
		// PB-Relax): the softmax over the keys is the same without it.
		if extra := rowConstant(n.Input(1), n.Input(0)); extra != nil {
			st := layoutStep{node: n, in: n.Input(0), out: v, scale: 1}
			return findScores(n.Input(0), prepend(scoresStep{st: st, extra: extra, node: n, in: n.Input(0), out: v}), try)
		}
		return false
	case "Where":
		for i := 1; i < 3; i++ {
			t := &attnTerm{value: n.Input(0), fill: n.Input(3 - i), keepIf: i == 1}
			if findScores(n.Input(i), prepend(scoresStep{term: t, node: n, in: n.Input(i), out: v}), try) {
				return true
			}
		}
		return false
	}
	in := chainInput(n)
	if in == nil {
		return false
	}
	st, ok := passThrough(n, in)
	if !ok || st.quant {
		return false
	}
	return findScores(in, prepend(scoresStep{st: st, node: n, in: in, out: v}), try)
}

// softcapStep reads c·tanh(a·x), the soft cap on the scores, as one step from x: a Mul
// by a scalar c of a Tanh of a scalar Mul or Div of x. The cap is c; the factor a·c
// scales the scores before it (a = 1/c when the export divides by the cap).
func softcapStep(n *ir.Node, v *ir.Value) (scoresStep, bool) {
	for i := 0; i < 2; i++ {
		c, ok := scalarConst(n.Input(1 - i))
		tanh, _ := n.Input(i).Producer()
		if !ok || c <= 0 || !finite(c) || tanh == nil || tanh.OpType != "Tanh" || tanh.Domain != "" {
			continue
		}
		inner, _ := tanh.Input(0).Producer()
		if inner == nil || inner.OpType != "Mul" && inner.OpType != "Div" {
			continue
		}
		x := chainInput(inner)
		if x == nil {
			continue
		}
		st, ok := passThrough(inner, x)
		if !ok {
			continue
		}
		step := layoutStep{node: n, in: x, out: v, scale: st.scale * c}
		return scoresStep{st: step, softcap: c, extra: []*ir.Node{inner, tanh}, node: n, in: x, out: v}, true
	}
	return scoresStep{}, false
}

// rowConstant returns the nodes that compute c as a reduction of x over its last axis
// alone, broadcast back over it (kept, or dropped and unsqueezed there): a constant per
// row of the scores, which a softmax over the keys ignores. Nil when c is not one.
func rowConstant(c, x *ir.Value) []*ir.Node {
	if x.Type == nil {
		return nil
	}
	rank := x.Type.Rank()
	last := func(axes []int64, ok bool) bool {
		if !ok || len(axes) != 1 {
			return false
		}
		i, in := normAxis(axes[0], rank)
		return in && i == rank-1
	}
	n, _ := c.Producer()
	var nodes []*ir.Node
	keep := int64(1)
	if n != nil && n.OpType == "Unsqueeze" {
		if !last(reduceAxes(n)) {
			return nil
		}
		nodes, keep = append(nodes, n), 0
		n, _ = n.Input(0).Producer()
	}
	if n == nil || n.Domain != "" || n.Input(0) != x || n.AttrInt("keepdims", 1) != keep {
		return nil
	}
	switch n.OpType {
	case "ReduceMax", "ReduceMin", "ReduceMean":
	default:
		return nil
	}
	if !last(reduceAxes(n)) {
		return nil
	}
	return append(nodes, n)
}

// findContext follows the Softmax output forward to the matmul that reads it as probs.
func findContext(sm *ir.Node) (*ir.Node, []layoutStep, string) {
	v := sm.Output(0)
	var steps []layoutStep
	for len(steps) < maxSteps {
		uses := v.Uses()
		if len(uses) > 1 {
			// nn.MultiheadAttention's need_weights, output_attentions: the
			// probabilities leave the block, and the fused operators keep them inside.
			var readers []string
			for _, u := range uses {
				readers = append(readers, u.Node.OpType)
			}
			return nil, nil, fmt.Sprintf("the probabilities %s are read outside the block too (%d readers: %s): no fused attention outputs them", v.Name, len(readers), strings.Join(readers, ", "))
		}
		if len(uses) != 1 {
			return nil, nil, ""
		}
		n := uses[0].Node
		if n.OpType == "MatMul" && uses[0].Index == 0 && n.Domain == "" {
			return n, steps, ""
		}
		st, ok := passThrough(n, v)
		if !ok || st.scale != 1 || n.OpType == "Split" || n.OpType == "Gather" {
			return nil, nil, ""
		}
		steps = append(steps, st)
		v = st.out
	}
	return nil, nil, ""
}

// headMixing says why a candidate is talking-heads attention: the scores, or the
// probabilities, multiplied by a constant weight (a Linear over the head axis mixes the
// heads) where Q·Kᵀ and probs·V should be. Each head's weights then read every head's
// scores, which no fused attention computes.
func headMixing(scores, context *ir.Node) string {
	mixes := func(mm *ir.Node, from string) bool {
		_, w := walkBack(mm.Input(1), anyStep)
		_, x := walkBack(mm.Input(0), anyStep)
		n, _ := x.Producer()
		return w.IsConst() && n != nil && n.OpType == from && (from != "MatMul" || !n.Input(1).IsConst())
	}
	switch {
	case mixes(scores, "MatMul"):
		return "the scores are multiplied by a constant weight before the softmax (talking heads: a projection mixing the heads), not Q·Kᵀ: no fused attention mixes heads"
	case mixes(context, "Softmax"):
		return "the probabilities are multiplied by a constant weight after the softmax (talking heads: a projection mixing the heads), not by V: no fused attention mixes heads"
	}
	return ""
}

// analyseAttention proves that a Softmax is the core of an attention block, or says why
// not. It never changes the graph.
func analyseAttention(sm *ir.Node) *attnPlan {
	p := &attnPlan{softmax: sm}
	ctx, probsSteps, why := findContext(sm)
	if ctx == nil {
		p.why = cmp.Or(why, "the softmax output does not reach a matmul (probs·V) through layout ops alone")
		return p
	}
	p.context = ctx
	// Attention sinks: the scores are what is joined to the logits, the probs what is
	// left once their column is dropped.
	scoresIn, sink := sm.Input(0), findSink(sm, probsSteps)
	if sink != nil {
		scoresIn = sink.concat.Input(0)
		probsSteps = append(probsSteps[:sink.slice:sink.slice], probsSteps[sink.slice+1:]...)
	}
	var last string
	found := findScores(scoresIn, nil, func(mm *ir.Node, path []scoresStep) bool {
		// A source is read first as its rank and producer suggest (batch-first), then
		// the other ways (sequence-first; a grid of tokens); the reading that got
		// furthest says why none is attention.
		best := -1
		for _, r := range readings {
			q := &attnPlan{softmax: sm, context: ctx, scores: mm, sink: sink}
			why := q.prove(path, probsSteps, r)
			if why == "" {
				*p = *q
				return true
			}
			if q.proved > best {
				best, last = q.proved, why
			}
		}
		return false
	})
	if !found {
		p.why = last
		switch {
		case p.why != "":
		case joinedOnAxis(sm):
			p.why = "the softmax normalises the scores joined with other logits on its axis (attention sinks): the weights of the keys sum to less than one"
		default:
			p.why = "the softmax input does not come from a matmul (Q·Kᵀ) through layout ops and additive terms"
		}
	}
	return p
}

// joinedOnAxis reports whether the softmax input is, through steps that change no weight
// (a row maximum taken off, a Cast), a Concat on the softmax axis: the scores share the
// normaliser with logits that are no key's (GPT-OSS's sinks).
func joinedOnAxis(sm *ir.Node) bool {
	n, _ := joinedConcat(sm)
	return n != nil
}

// joinedConcat is the Concat on the softmax axis that the softmax input is through a row
// constant taken off and Casts, with the nodes of those steps; nil when there is none.
func joinedConcat(sm *ir.Node) (*ir.Node, []*ir.Node) {
	v := sm.Input(0)
	var nodes []*ir.Node
	for range maxSteps {
		n, idx := v.Producer()
		if n == nil || idx != 0 || n.Domain != "" || v.Type == nil {
			return nil, nil
		}
		switch n.OpType {
		case "Concat":
			rank := v.Type.Rank()
			a, ok := normAxis(n.AttrInt("axis", 0), rank)
			b, okSm := normAxis(sm.AttrInt("axis", -1), rank)
			if !ok || !okSm || a != b {
				return nil, nil
			}
			return n, nodes
		case "Sub":
			extra := rowConstant(n.Input(1), n.Input(0))
			if extra == nil {
				return nil, nil
			}
			nodes = append(append(nodes, n), extra...)
		case "Cast":
			nodes = append(nodes, n)
		default:
			return nil, nil
		}
		v = n.Input(0)
	}
	return nil, nil
}

// prove checks one candidate Q·Kᵀ matmul and fills the plan.
func (p *attnPlan) prove(path []scoresStep, probsSteps []layoutStep, rd reading) string {
	if why := headMixing(p.scores, p.context); why != "" {
		return why
	}
	var why string
	if p.q, why = followOperand("Q", p.scores.Input(0), anyStep, 0, rd); why != "" {
		return why
	}
	p.proved++
	if p.k, why = followOperand("K", p.scores.Input(1), anyStep, 0, rd); why != "" {
		return why
	}
	p.proved++
	if p.v, why = followOperand("V", p.context.Input(1), anyStep, 0, rd); why != "" {
		return why
	}
	p.proved++
	ql, kl, vl := p.q.last(), p.k.last(), p.v.last()
	r := len(ql)
	if r < 3 {
		return fmt.Sprintf("Q·Kᵀ of rank %d has no batch", r)
	}
	p.k.broadcastHeads(ql)
	if why := pairBatchAxes(ql, kl); why != "" {
		return "Q and K: " + why
	}
	p.proved++
	if why := p.q.canonical(r-2, r-1); why != "" {
		return why
	}
	p.proved++
	if why := p.k.canonical(r-1, r-2); why != "" {
		return why
	}
	p.proved++
	if why := p.k.keyHeads(p.q); why != "" {
		return why
	}
	if d1, d2 := ql[r-1].leaves().size(), kl[r-2].leaves().size(); !ir.SameShape(ir.Shape{d1}, ir.Shape{d2}) || !d1.Known {
		return fmt.Sprintf("Q's head size %v and K's %v differ or are unknown", d1, d2)
	}
	// The scores: Q's batch axes, Q's sequence, K's sequence; replayed to the softmax.
	sl := append(ql[:r-2].clone(), axis(slices.Clone(p.q.rows)), axis{p.k.seq})
	p.path, p.scoresAt = path, map[*ir.Value]scoresPoint{p.scores.Output(0): {at: sl.clone()}}
	for i := range path {
		s := &path[i]
		if i > 0 {
			p.scoresAt[path[i-1].out] = scoresPoint{at: sl.clone(), steps: i, terms: len(p.terms)}
		}
		switch {
		case s.softcap != 0 && p.softcap != 0:
			return "the scores are soft-capped twice"
		case s.softcap != 0 && len(p.terms) > 0:
			return fmt.Sprintf("an additive term (%s) enters the scores before the soft cap", p.terms[0].value.Name)
		case s.softcap != 0:
			p.softcap = s.softcap
		case p.softcap != 0 && (s.factor != nil || s.term == nil && s.st.scale != 1):
			return "the scores are scaled after the soft cap"
		}
		if s.term != nil {
			s.term.at = sl.clone()
			s.term.factor = 1
			p.terms = append(p.terms, *s.term)
			continue
		}
		if s.factor != nil {
			switch {
			case p.headScale != nil:
				return "the scores are multiplied by two constant tensors"
			case len(p.terms) > 0:
				return fmt.Sprintf("the scores are multiplied by %s after an additive term", s.factor.value.Name)
			case s.factor.value.Type.Rank() > len(sl):
				return fmt.Sprintf("the factor %s broadcasts the scores", s.factor.value.Name)
			}
			s.factor.at = sl.clone()
			p.headScale = s.factor
			continue
		}
		for j := range p.terms {
			p.terms[j].factor *= s.st.scale
		}
		var why string
		if sl, why = s.st.apply(sl); why != "" {
			return "scores: " + why
		}
	}
	if len(path) > 0 {
		p.scoresAt[path[len(path)-1].out] = scoresPoint{at: sl.clone(), steps: len(path), terms: len(p.terms)}
	}
	if p.sink != nil {
		s := *p.sink
		s.at = sl.clone()
		p.sink = &s
	}
	p.proved++
	if why := softmaxAxis(p.softmax, len(sl)); why != "" {
		return why
	}
	p.proved++
	if lk := sl[len(sl)-1].leaves(); len(lk) != 1 || lk[0] != p.k.seq {
		return fmt.Sprintf("the softmax runs over %v, not the key sequence", lk)
	}
	pl := sl
	for _, st := range probsSteps {
		var why string
		if pl, why = st.apply(pl); why != "" {
			return "probs: " + why
		}
	}
	if len(pl) != len(vl) {
		return fmt.Sprintf("probs of rank %d against V of rank %d", len(pl), len(vl))
	}
	if lk := pl[len(pl)-1].leaves(); len(lk) != 1 || lk[0] != p.k.seq {
		return "probs·V does not contract over the key sequence"
	}
	if lq := pl[len(pl)-2].leaves(); !slices.Equal(lq, p.q.rows) {
		return "probs·V: the query sequence is not the second-last axis"
	}
	p.proved++
	p.v.broadcastHeads(pl)
	if why := pairBatchAxes(pl, vl); why != "" {
		return "probs and V: " + why
	}
	p.proved++
	if why := p.v.canonical(len(vl)-2, len(vl)-1); why != "" {
		return why
	}
	if why := p.v.keyHeads(p.q); why != "" {
		return why
	}
	if !ir.SameShape(ir.Shape{p.v.seq.size}, ir.Shape{p.k.seq.size}) {
		return fmt.Sprintf("K's sequence %v and V's %v differ", p.k.seq.size, p.v.seq.size)
	}
	// Heads pair position by position: Q's k-th head atom group with K's and V's.
	if axis(p.q.headLeaves).size() != axis(p.k.headLeaves).size() || axis(p.q.headLeaves).size() != axis(p.v.headLeaves).size() {
		return "Q, K and V have different head counts"
	}
	p.proved++
	p.ctxLayout = append(pl[:len(pl)-1].clone(), axis(p.v.last()[len(vl)-1].leaves()))
	for _, o := range []*attnOperand{p.q, p.k, p.v} {
		if why := o.choosePoint(o == p.v); why != "" {
			return why
		}
	}
	hs := axis(p.q.headLeaves).size()
	if !hs.Known {
		return "the head count is unknown"
	}
	p.heads = hs.Value
	p.kvHeads = p.heads
	if kv := axis(leavesOf(p.k.headLeaves, atomChan)).size(); kv.Known {
		p.kvHeads = kv.Value // before any repeat
	}
	p.headSize = ql[r-1].leaves().size().Value
	if d := p.v.last()[len(vl)-1].leaves().size(); d.Known {
		p.vHead = d.Value
	} else {
		return "V's head size is unknown"
	}
	p.scale = p.q.scaleAfter() * p.k.scaleAfter()
	for _, s := range path {
		if s.term == nil && s.factor == nil {
			p.scale *= s.st.scale
		}
	}
	if p.headScale != nil {
		if why := p.headFactors(); why != "" {
			return why
		}
	}
	if !finite(p.scale) || p.scale == 0 {
		return fmt.Sprintf("scale %g is not a finite non-zero number", p.scale)
	}
	// The nodes the fused operator replaces.
	for _, o := range []*attnOperand{p.q, p.k, p.v} {
		p.core = append(p.core, o.nodesAfter()...)
	}
	p.core = append(p.core, p.scores)
	for _, s := range path {
		p.core = append(append(p.core, s.extra...), s.node)
	}
	p.core = append(p.core, p.softmax)
	if p.sink != nil {
		p.core = append(p.core, p.sink.nodes...)
	}
	for _, st := range probsSteps {
		p.core = append(p.core, st.node)
	}
	p.core = append(p.core, p.context)
	return p.classifyTerms()
}

// softmaxAxis checks that the softmax normalises the last axis alone. Before opset 13
// Softmax flattens from its axis (default 1), so only the last axis means the same in
// both; a Softmax without the attribute is checked against the opset when lowered.
func softmaxAxis(sm *ir.Node, rank int) string {
	a := sm.AttrInt("axis", -1)
	if i, ok := normAxis(a, rank); !ok || i != rank-1 {
		return fmt.Sprintf("softmax over axis %d of rank %d, not the last", a, rank)
	}
	return ""
}

// classifyTerms says what each additive term depends on, and refuses a term computed
// from the scores themselves.
func (p *attnPlan) classifyTerms() string {
	inside := p.insideValues()
	p.termReaders = map[*ir.Node]bool{}
	for i := range p.terms {
		t := &p.terms[i]
		nodes := map[*ir.Node]bool{}
		kind, why := termDepends(t.value, inside, nodes)
		if why != "" {
			return why
		}
		if kind == "query" {
			maps.Copy(p.termReaders, nodes)
		}
		t.kind = kind
		if _, why := p.termAxes(t); why != "" {
			return why
		}
		if t.fill != nil {
			f, ok := scalarConst(t.fill)
			if !ok || f > -1000 && finite(f) {
				return fmt.Sprintf("Where fills the scores with %s, not a large negative constant", t.fill.Name)
			}
		}
	}
	return ""
}

// termDepends walks a term's inputs: "query" when it reads Q, K or V on their way to
// the matmuls (SAM's decomposed relative positions, q·Rᵀ: the fused operator takes it as
// its bias, computed beside it from the same projections), "mask" when it reads a graph
// input, "constant" when it reads only constants (and shapes), and a refusal when it
// reads the scores. nodes, when not nil, gets the nodes the walk passed.
func termDepends(v *ir.Value, inside map[*ir.Value]bool, nodes map[*ir.Node]bool) (string, string) {
	seen := map[*ir.Value]bool{}
	stack := []*ir.Value{v}
	input, query := false, false
	for len(stack) > 0 && len(seen) < 4000 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if x == nil || seen[x] {
			continue
		}
		seen[x] = true
		if core, ok := inside[x]; ok {
			if core {
				return "", fmt.Sprintf("score term %s depends on the block's scores", v.Name)
			}
			query = true
			continue // an operand is computed before the scores, and so can the term be
		}
		if x.IsGraphInput() {
			input = true
		}
		n, _ := x.Producer()
		if n == nil {
			continue
		}
		if nodes != nil {
			nodes[n] = true
		}
		if n.OpType == "Shape" || n.OpType == "Size" {
			continue // sizes, not values
		}
		stack = append(stack, n.Inputs()...)
	}
	if len(stack) > 0 {
		return "", fmt.Sprintf("score term %s: its inputs are too many to follow", v.Name)
	}
	if query {
		return "query", ""
	}
	if input {
		return "mask", ""
	}
	return "constant", ""
}

// traceAttention is the recogniser behind the general attention rule: v must be the
// output of the layout path that leaves the context matmul, in [B,S,N·Dv] order (or a
// reshape of it); the plan is attached to the match.
func traceAttention(v *ir.Value) *patterns.Traced {
	out, src := walkBack(v, pureLayout)
	n, _ := src.Producer()
	if n == nil || n.OpType != "MatMul" || n.Domain != "" {
		return nil
	}
	probsSrc := n.Input(0)
	// Q/DQ on the probabilities (TensorRT places a pair there) is walked through as
	// findContext does: the block is proved, then left for its quantized core.
	_, sm := walkBack(probsSrc, func(st layoutStep) bool { return st.scale == 1 })
	smn, _ := sm.Producer()
	if smn == nil || smn.OpType != "Softmax" || smn.Domain != "" {
		return nil
	}
	p := analyseAttention(smn)
	if p.why == "" && p.context != n {
		return nil
	}
	if p.why != "" {
		if len(out) > 0 {
			return nil // refused once, at the context matmul
		}
		return &patterns.Traced{Nodes: []*ir.Node{smn, n}, Plan: p}
	}
	p.out = out
	why := p.outputLayout()
	if why != "" && len(out) > 0 {
		return nil // an earlier value on the path may be the output
	}
	if why == "" {
		// The output is the value on the path that the fused [B,S,N·D] becomes with the
		// fewest ops (later views of it stay as they are, reading the fused output).
		all := append(append([]layoutStep(nil), out...), forwardLayout(v)...)
		best, bestCost := -1, 0
		for k := 0; k <= len(all); k++ {
			q := *p
			q.out = all[:k]
			if q.outputLayout() != "" {
				continue
			}
			cost := 0
			if q.outSplit != nil {
				cost += 2
			}
			if q.outShape != nil {
				cost++
			}
			// The fewest ops to give the fused output the value's layout; on a tie the
			// later value, so that more of the exporter's layout ops go.
			if best < 0 || cost <= bestCost {
				best, bestCost = k, cost
			}
		}
		if best != len(out) {
			return nil
		}
		p.outputLayout() // the plan's own path again
		// A block whose output only Shape nodes read is what an earlier rewrite left
		// alive for them: not a block.
		live := v.IsGraphOutput()
		for _, u := range v.Uses() {
			live = live || u.Node.OpType != "Shape"
		}
		if !live {
			return nil
		}
	}
	if why != "" {
		// Say why the longest layout path from the context matmul is not the output.
		p.out = forwardLayout(n.Output(0))
		if w := p.outputLayout(); w != "" {
			why = w
		}
		p.why = why
	}
	nodes := append([]*ir.Node(nil), p.core...)
	for _, st := range out {
		nodes = append(nodes, st.node)
	}
	vals := map[string]*ir.Value{
		"query": p.q.input(), "key": p.k.input(), "value": p.v.input(),
		"scores": p.scores.Output(0), "probs": smn.Output(0), "context": n.Output(0), "output": v,
	}
	return &patterns.Traced{Nodes: nodes, Values: vals, Named: map[string]*ir.Node{"probs": smn, "scores": p.scores, "context": n}, Plan: p}
}

// forwardLayout follows a value forward through single-reader layout ops.
func forwardLayout(v *ir.Value) []layoutStep {
	var steps []layoutStep
	for len(steps) < maxSteps {
		uses := v.Uses()
		if len(uses) != 1 || v.IsGraphOutput() {
			break
		}
		st, ok := passThrough(uses[0].Node, v)
		if !ok || !pureLayout(st) || uses[0].Node.OpType == "Split" {
			break
		}
		steps = append(steps, st)
		v = st.out
	}
	return steps
}

// outputLayout checks the output path from the context matmul and computes the Reshape
// that gives the fused [B,S,N·Dv] the output's layout.
func (p *attnPlan) outputLayout() string {
	l := p.ctxLayout
	for _, st := range p.out {
		var why string
		if l, why = st.apply(l); why != "" {
			return "output: " + why
		}
	}
	canon := append(append([]*atom{p.q.canon[0], p.q.seq}, p.q.headLeaves...), p.ctxLayout[len(p.ctxLayout)-1].leaves()...)
	pos := map[*atom]int{}
	for i, a := range canon {
		pos[a] = i
	}
	// Each output axis holds canonical atoms, in any order (a channel-first [B,N·D,S]
	// output transposes them; a sequence-first [S·B, N·D] one merges S before B): out of
	// order, the fused output is split into its atoms and transposed.
	var runs [][]int
	seen := 0
	inOrder := true
	used := map[int]bool{}
	// grid[i] is the size of output axis i when it holds a factor of the sequence (the
	// output viewed as a grid of tokens, [B, h, w, C]): the outer one, then the inner one
	// on the next axis.
	grid := map[int]int64{}
	var outer *atom
	for i, ax := range l {
		lv := ax.leaves()
		if len(lv) == 1 && lv[0].kind == atomSeq && lv[0].parent == p.q.seq && lv[0].size.Known {
			a := lv[0]
			switch {
			case a.outer && !used[1]:
				outer = a
				used[1] = true
				inOrder = inOrder && seen == 1
				seen++
			case outer != nil && factorPair(outer, a) && grid[i-1] != 0: // on the next axis
				outer = nil
			default:
				return fmt.Sprintf("the output's layout %v is not a view of [B,S,N·D]", l)
			}
			grid[i] = a.size.Value
			runs = append(runs, []int{1})
			continue
		}
		var run []int
		for k, a := range lv {
			q, ok := pos[a]
			if !ok || used[q] {
				return fmt.Sprintf("the output's layout %v is not a view of [B,S,N·D]", l)
			}
			used[q] = true
			inOrder = inOrder && (k == 0 || q == run[k-1]+1)
			run = append(run, q)
		}
		if len(run) > 0 {
			inOrder = inOrder && run[0] == seen
			seen += len(run)
		}
		runs = append(runs, run)
	}
	if outer != nil { // the outer factor without the inner one after it
		return fmt.Sprintf("the output's layout %v is not a view of [B,S,N·D]", l)
	}
	if seen != len(canon) {
		return fmt.Sprintf("the output's layout %v drops atoms", l)
	}
	p.outSplit, p.outPerm = nil, nil
	// at[i] is the canonical position at axis i of the tensor the final Reshape reads.
	at := []int{0, 1, 2}
	if !inOrder {
		// Split the fused [B,S,N·D] into its atoms and transpose them into the output's order.
		p.outSplit = []int64{0, 0}
		for _, a := range canon[2:] {
			p.outSplit = append(p.outSplit, a.size.Value)
		}
		at = at[:0]
		for _, r := range runs {
			for _, q := range r {
				p.outPerm = append(p.outPerm, int64(q))
				at = append(at, q)
			}
		}
	}
	var dims []int64
	free := false
	for i, r := range runs {
		if g, ok := grid[i]; ok {
			dims = append(dims, g)
			continue
		}
		size := int64(1)
		bs := false
		for _, q := range r {
			if q < 2 {
				bs = true
			} else {
				size *= canon[q].size.Value
			}
		}
		switch {
		case len(r) == 1 && r[0] < 2 && i < len(at) && at[i] == r[0] && (p.outSplit != nil || i == r[0]):
			dims = append(dims, 0)
		case bs:
			if free {
				return fmt.Sprintf("the output's layout %v needs two sizes read at run time", l)
			}
			free = true
			dims = append(dims, -1)
		default:
			dims = append(dims, size)
		}
	}
	p.outShape = dims
	if p.outSplit == nil && len(l) == 3 && dims[0] == 0 && dims[1] == 0 {
		p.outShape = nil
	}
	return ""
}

// variant names the form for -stats and the block annotations.
func (p *attnPlan) variant() string {
	var tags []string
	if len(p.q.last()) == 3 {
		tags = append(tags, "3d")
	}
	if p.q.values[0] != p.k.values[0] && !sharesSource(p.q, p.k) {
		tags = append(tags, "cross")
	}
	if axis(p.k.headLeaves).size() != axis(leavesOf(p.k.headLeaves, atomChan)).size() {
		tags = append(tags, "gqa")
	}
	kinds := map[string]bool{}
	for _, t := range p.terms {
		kinds[t.kind] = true
	}
	for _, k := range []string{"mask", "constant", "query"} {
		if kinds[k] {
			tags = append(tags, map[string]string{"mask": "masked", "constant": "biased", "query": "qbiased"}[k])
		}
	}
	if len(tags) == 0 {
		return "attention/general"
	}
	return "attention/general-" + strings.Join(tags, "-")
}

func leavesOf(as []*atom, k atomKind) []*atom {
	var out []*atom
	for _, a := range as {
		if a.kind == k {
			out = append(out, a)
		}
	}
	return out
}

// sharesSource reports whether two operands come from one tensor through the ops before
// their sources (a packed projection split into Q and K): self-attention.
func sharesSource(a, b *attnOperand) bool {
	ra, rb := rootInput(a.values[0]), rootInput(b.values[0])
	return ra != nil && ra == rb
}

// rootInput follows a source back through its first non-constant input to the tensor a
// projection reads.
func rootInput(v *ir.Value) *ir.Value {
	for i := 0; i < 8; i++ {
		n, _ := v.Producer()
		if n == nil {
			return v
		}
		switch n.OpType {
		case "MatMul", "Gemm", "Conv":
			return n.Input(0)
		}
		var next *ir.Value
		for _, in := range n.Inputs() {
			if in != nil && patterns.ConstOf(in) == nil {
				next = in
				break
			}
		}
		if next == nil {
			return v
		}
		v = next
	}
	return v
}

// coreEscapes says which value of the core (Q, K, V's steps to the context matmul) a node
// outside it reads, other than for its shape.
func (p *attnPlan) coreEscapes() string {
	return escapesButShape(p.core, p.context.Output(0), p.termReaders)
}

// insideValues are the block's values a score term may read, false (Q, K and V's
// paths), and those it must not, true (the core's).
func (p *attnPlan) insideValues() map[*ir.Value]bool {
	inside := map[*ir.Value]bool{}
	for _, n := range p.core {
		for _, o := range n.Outputs() {
			inside[o] = true
		}
	}
	// The operands' steps the fused operator replaces stay where a term reads them.
	for _, o := range []*attnOperand{p.q, p.k, p.v} {
		for _, v := range o.values {
			inside[v] = false
		}
	}
	return inside
}

// clampFloor is the highest clamp a Max on the scores v may apply and still change no
// softmax weight: -1e30, or the lowest finite value of a narrower float type.
func clampFloor(v *ir.Value) float64 {
	if v.Type != nil && v.Type.DType.IsFloat() && v.Type.DType.MaxFinite() < 1e30 {
		return -v.Type.DType.MaxFinite()
	}
	return -1e30
}

// headFactors checks that the scores' constant factor varies over the heads alone, in
// Q's head order, with a finite non-zero number for each.
func (p *attnPlan) headFactors() string {
	f := p.headScale
	axes, why := p.termAxes(f)
	if why != "" {
		return strings.Replace(why, "score term", "score factor", 1)
	}
	if f.heads != nil {
		// Its values are read one a head below.
		return fmt.Sprintf("the scores' factor %s varies over some of the heads only", f.value.Name)
	}
	for _, gs := range axes {
		for _, g := range gs {
			if g != groupHeads {
				return fmt.Sprintf("the scores' factor %s varies over more than the heads", f.value.Name)
			}
		}
	}
	vals, _ := patterns.ConstOf(f.value).Float64s() // one a head: its axes are the heads'
	for _, x := range vals {
		if !finite(x) || x == 0 {
			return fmt.Sprintf("the scores' factor %s holds %g", f.value.Name, x)
		}
	}
	return ""
}
