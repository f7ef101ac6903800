package transformer

import (
	"fmt"
	"math"

	"github.com/qcc-dev/qcc/eval"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// A causal term lets query i see keys j ≤ i only. The fused operators have an attribute for
// it (unidirectional, is_causal) that runs faster than an explicit bias and lets TensorRT
// pick its causal kernels, so the lowering uses it for a term proved causal: one that
// depends on no graph input (a sliced triangular buffer, Trilu, Range comparisons) and,
// evaluated at two sequence lengths, masks exactly the keys after each query (at its one
// length, when the model's sequence is fixed). Only when the query and key sequences are
// the same: with a cache (more keys than queries) the operators' alignment is not the
// graph's.

// causalSizes are the sequence lengths a term is evaluated at.
var causalSizes = []int64{3, 6}

// isCausal reports whether term t masks exactly the keys after each query.
func (p *attnPlan) isCausal(t *attnTerm, opset int64) bool {
	qi, ki, ok := p.queryKeyAxes(t)
	if !ok {
		return false
	}
	for _, s := range p.seqLengths(causalSizes) {
		v, err := p.evalAt(t, s, opset)
		if err != nil || !bandPattern(v, qi, ki, s, 0, t) {
			return false
		}
	}
	return true
}

// seqLengths are the lengths a term is evaluated at: sizes when the sequence is a symbol,
// its own length when it is fixed (the model runs at no other).
func (p *attnPlan) seqLengths(sizes []int64) []int64 {
	if d := p.q.seq.size; d.Known {
		return []int64{d.Value}
	}
	return sizes
}

// queryKeyAxes are the axes of the query and the key of a constant term over a self
// attention's one sequence (a symbol, or a fixed length) that varies over nothing else;
// ok false for any other term.
func (p *attnPlan) queryKeyAxes(t *attnTerm) (qi, ki int, ok bool) {
	if t.kind != "constant" || !ir.SameDim(p.q.seq.size, p.k.seq.size) || !p.q.seq.size.Known && p.q.seq.size.Param == "" {
		return 0, 0, false
	}
	axes, why := p.termAxes(t)
	if why != "" {
		return 0, 0, false
	}
	qi, ki = -1, -1
	for j, gs := range axes {
		for _, g := range gs {
			switch g {
			case groupQuery:
				qi = j
			case groupKey:
				ki = j
			default:
				return 0, 0, false // a causal mask does not vary over batch or heads
			}
		}
		if len(gs) > 1 {
			return 0, 0, false
		}
	}
	return qi, ki, qi >= 0 && ki >= 0
}

// evalAt evaluates term t at sequence length s (batch 1), s one of seqLengths.
func (p *attnPlan) evalAt(t *attnTerm, s, opset int64) (*ir.Tensor, error) {
	sizes := map[string]int64{}
	for _, d := range []struct {
		dim ir.Dim
		n   int64
	}{{p.q.seq.size, s}, {p.q.canon[0].size, 1}} {
		if !d.dim.Known && d.dim.Param != "" {
			sizes[d.dim.Param] = d.n
		}
	}
	return evalTerm(t.value, sizes, opset, 0)
}

// windowSizes are the sequence lengths a sliding window is looked for at: its width is
// seen when it is below the length.
var windowSizes = []int64{16, 256}

// slidingWindow reports whether term t masks exactly the keys after each query and those
// w or more before it, and w: a query sees its w latest keys, itself included (Mistral's
// and GPT-OSS's sliding windows). The width is read off the last query at the shortest
// length that shows it and the pattern checked there and at w+2, where the first query
// the window cuts is the second to last.
func (p *attnPlan) slidingWindow(t *attnTerm, opset int64) (int64, bool) {
	qi, ki, ok := p.queryKeyAxes(t)
	if !ok {
		return 0, false
	}
	for _, s := range p.seqLengths(windowSizes) {
		v, err := p.evalAt(t, s, opset)
		if err != nil {
			return 0, false
		}
		w := keptBefore(v, qi, ki, s, t)
		if w <= 0 || w == s {
			continue // no band, or wider than s
		}
		if !bandPattern(v, qi, ki, s, w, t) {
			return 0, false
		}
		if p.q.seq.size.Known {
			return w, true // the band was seen over every query there is
		}
		v, err = p.evalAt(t, w+2, opset)
		return w, err == nil && bandPattern(v, qi, ki, w+2, w, t)
	}
	return 0, false
}

// keptBefore counts the keys the last query of an evaluated term keeps; -1 when the term
// does not read as a mask there.
func keptBefore(v *ir.Tensor, qi, ki int, s int64, t *attnTerm) int64 {
	if len(v.Dims) <= qi || len(v.Dims) <= ki || v.Dims[qi] != s || v.Dims[ki] != s || v.NumElements() != s*s {
		return -1
	}
	vals, err := v.Float64s()
	if err != nil {
		return -1
	}
	sq, sk := termStride(v, qi), termStride(v, ki)
	n := int64(0)
	for j := int64(0); j < s; j++ {
		if !maskedAt(vals[(s-1)*sq+j*sk], t) {
			n++
		}
	}
	return n
}

// termStride is the stride of an axis of an evaluated term.
func termStride(v *ir.Tensor, axis int) int64 {
	st := int64(1)
	for a := len(v.Dims) - 1; a > axis; a-- {
		st *= v.Dims[a]
	}
	return st
}

// maskedAt reads one element of an evaluated term: a Where's condition selects the kept
// (keepIf) or the masked positions; an added term masks with at most -1e4 (or -inf) and
// keeps with 0. ok false for anything between.
func maskedAt(x float64, t *attnTerm) bool {
	switch {
	case t.fill != nil && t.keepIf:
		return x == 0
	case t.fill != nil:
		return x != 0
	}
	return x <= -1e4 || math.IsInf(x, -1)
}

// bandPattern checks an evaluated term: an added term is 0 where a key is seen and at
// most -1e4 (or -inf) where it is masked; a Where's condition selects exactly the masked
// or the seen keys. Masked are the keys after the query and, for a window w > 0, those w
// or more before it.
func bandPattern(v *ir.Tensor, qi, ki int, s, w int64, t *attnTerm) bool {
	if len(v.Dims) <= qi || len(v.Dims) <= ki || v.Dims[qi] != s || v.Dims[ki] != s || v.NumElements() != s*s {
		return false
	}
	vals, err := v.Float64s()
	if err != nil {
		return false
	}
	// Strides of the query and key axes (every other axis has size 1).
	sq, sk := termStride(v, qi), termStride(v, ki)
	for i := int64(0); i < s; i++ {
		for j := int64(0); j < s; j++ {
			x := vals[i*sq+j*sk]
			masked := j > i || w > 0 && j <= i-w
			switch {
			case t.fill != nil && t.keepIf: // Where(c, scores, fill): c true where kept
				if (x != 0) == masked {
					return false
				}
			case t.fill != nil: // Where(c, fill, scores): c true where masked
				if (x != 0) != masked {
					return false
				}
			case masked:
				if !(x <= -1e4 || math.IsInf(x, -1)) {
					return false
				}
			default:
				if x != 0 {
					return false
				}
			}
		}
	}
	return true
}

// maxTermElems bounds what evaluating a term may allocate.
const maxTermElems = 1 << 16

// evalTerm computes a value from constants, with every Shape read off its input's
// symbolic shape at the given sizes; it fails on anything else.
func evalTerm(v *ir.Value, sizes map[string]int64, opset int64, depth int) (*ir.Tensor, error) {
	if depth > 64 {
		return nil, fmt.Errorf("too deep")
	}
	if t := patterns.ConstOf(v); t != nil {
		return t, nil
	}
	n, idx := v.Producer()
	if n == nil {
		return nil, fmt.Errorf("%s is an input", v.Name)
	}
	if n.OpType == "Shape" && n.Domain == "" {
		s := attnShape(n.Input(0))
		if s == nil {
			return nil, fmt.Errorf("shape unknown")
		}
		dims := make([]int64, len(s))
		for i, d := range s {
			switch {
			case d.Known:
				dims[i] = d.Value
			default:
				x, ok := sizes[d.Param]
				if !ok {
					return nil, fmt.Errorf("size %v unknown", d)
				}
				dims[i] = x
			}
		}
		start, end := n.AttrInt("start", 0), n.AttrInt("end", int64(len(dims)))
		r := int64(len(dims))
		if start < 0 {
			start += r
		}
		if end < 0 {
			end += r
		}
		start, end = max(0, min(r, start)), max(0, min(r, end))
		dims = dims[start:max(start, end)]
		return ir.Int64Tensor([]int64{int64(len(dims))}, dims), nil
	}
	ins := make([]*ir.Tensor, len(n.Inputs()))
	for i, in := range n.Inputs() {
		if in == nil {
			continue
		}
		t, err := evalTerm(in, sizes, opset, depth+1)
		if err != nil {
			return nil, err
		}
		ins[i] = t
	}
	outs, err := eval.EvalLimit(n, ins, opset, maxTermElems)
	if err != nil {
		return nil, err
	}
	if idx >= len(outs) || outs[idx] == nil {
		return nil, fmt.Errorf("no output %d", idx)
	}
	return outs[idx], nil
}

// splitCausal replaces a term that is the sum of a causal mask and something else (a
// padding mask added to it before the scores) by its two parts, so that the causal part
// can become the operator's attribute.
func (p *attnPlan) splitCausal(opset int64) {
	p.splitTerms(func(t *attnTerm) bool { return p.isCausal(t, opset) })
}

// splitWindow is splitCausal for a sliding-window causal mask, which GroupQueryAttention
// computes with local_window_size.
func (p *attnPlan) splitWindow(opset int64) {
	p.splitTerms(func(t *attnTerm) bool { _, ok := p.slidingWindow(t, opset); return ok })
}

// splitTerms replaces a term that is the sum of two, one of which is what the operator
// has an attribute for, by its two parts.
func (p *attnPlan) splitTerms(attr func(*attnTerm) bool) {
	for i := 0; i < len(p.terms); i++ {
		t := p.terms[i]
		n, _ := t.value.Producer()
		if t.fill != nil || n == nil || n.OpType != "Add" || n.Domain != "" {
			continue
		}
		inside := p.insideValues()
		a, b := p.subTerm(&t, n.Input(0), inside), p.subTerm(&t, n.Input(1), inside)
		if a != nil && b != nil && (attr(a) || attr(b)) {
			p.terms = append(append(p.terms[:i:i], *a, *b), p.terms[i+1:]...)
			i++
		}
	}
}

// subTerm is v, a part of term t, as a term of its own at t's place; nil when v reads the
// block or has no bias layout.
func (p *attnPlan) subTerm(t *attnTerm, v *ir.Value, inside map[*ir.Value]bool) *attnTerm {
	s := *t
	s.value, s.fill = v, nil
	kind, why := termDepends(v, inside, nil)
	if why != "" {
		return nil
	}
	s.kind = kind
	if _, why := p.termAxes(&s); why != "" {
		return nil
	}
	return &s
}

// masksFuture reports whether term t masks at least every key after its query, whatever
// the padding: a causal term; a Where that fills a large negative constant into such a
// term (Gemma 2's local layers mask the far keys too); such a term plus one that is never
// positive (a padding bias: 0 at kept and negative at masked positions of its one input).
// GroupQueryAttention, causal by itself, then computes the same scores with every term
// as its bias.
func (p *attnPlan) masksFuture(t *attnTerm, opset int64) bool {
	return p.masksFutureIn(t, opset, p.insideValues(), 0)
}

func (p *attnPlan) masksFutureIn(t *attnTerm, opset int64, inside map[*ir.Value]bool, depth int) bool {
	if depth > 8 {
		return false
	}
	if t.fill == nil && p.isCausal(t, opset) {
		return true
	}
	n, _ := t.value.Producer()
	if n == nil || n.Domain != "" {
		return false
	}
	switch n.OpType {
	case "Where":
		for i := 1; i < 3; i++ {
			if f, ok := scalarConst(n.Input(i)); ok && (f <= -1e4 || math.IsInf(f, -1)) {
				if s := p.subTerm(t, n.Input(3-i), inside); s != nil && p.masksFutureIn(s, opset, inside, depth+1) {
					return true
				}
			}
		}
	case "Add":
		for i := 0; i < 2; i++ {
			s := p.subTerm(t, n.Input(i), inside)
			if s == nil || !p.masksFutureIn(s, opset, inside, depth+1) {
				continue
			}
			e := &attnMaskEval{}
			if val, _, ok := e.eval(n.Input(1-i), 0); ok && val[0] <= 0 && val[1] <= 0 {
				return true
			}
		}
	}
	return false
}
