package patterns

import "github.com/qcc-dev/qcc/ir"

// Traced is what a procedural recogniser found at a value: the nodes it covers, the
// values and nodes it names, and the plan it computed (what Check, Describe and the
// rewrite read instead of recomputing it).
type Traced struct {
	Nodes  []*ir.Node
	Values map[string]*ir.Value
	Named  map[string]*ir.Node
	Plan   any
}

type tracePat struct {
	desc string
	f    func(v *ir.Value) *Traced
}

// Trace matches a value when f, a recogniser written as code rather than as a subgraph,
// returns a non-nil Traced. It is for blocks whose form is a family of layouts that a
// fixed subgraph cannot list (attention followed from its Softmax through any chain of
// layout ops); its bindings join the match like an Op pattern's.
func Trace(desc string, f func(v *ir.Value) *Traced) Pattern { return &tracePat{desc, f} }

func (p *tracePat) match(s *state, v *ir.Value, k func(*state) bool) bool {
	if v == nil {
		return false
	}
	t := p.f(v)
	if t == nil {
		return false
	}
	m, prev := s.bindTraced(t)
	if k(s) {
		return true
	}
	s.plan = prev
	s.undo(m)
	return false
}

// bindTraced joins t's nodes, names and plan to the match; it returns the mark and the
// plan to restore when the match backtracks.
func (s *state) bindTraced(t *Traced) (mark, any) {
	m := s.mark()
	for _, n := range t.Nodes {
		s.visit("", n, nil)
	}
	for name, n := range t.Named {
		s.nodes[name] = n
		s.trail = append(s.trail, undoRec{node: name})
	}
	for name, x := range t.Values {
		s.values[name] = x
		s.trail = append(s.trail, undoRec{value: name})
	}
	prev := s.plan
	s.plan = t.Plan
	return m, prev
}

func (p *tracePat) String() string { return "Trace(" + p.desc + ")" }

type throughPat struct {
	desc string
	f    func(v *ir.Value) (*Traced, *ir.Value)
	p    Pattern
}

// TraceThrough matches a value when f, a recogniser written as code, walks back from it
// to an inner value that p matches: a stretch of a subgraph with more forms than a
// pattern lists (a normalisation, fused or decomposed, between two parts of a block).
// f's bindings join the match like Trace's.
func TraceThrough(desc string, f func(v *ir.Value) (*Traced, *ir.Value), p Pattern) Pattern {
	return &throughPat{desc, f, p}
}

func (p *throughPat) match(s *state, v *ir.Value, k func(*state) bool) bool {
	if v == nil {
		return false
	}
	t, in := p.f(v)
	if t == nil || in == nil {
		return false
	}
	m, prev := s.bindTraced(t)
	if p.p.match(s, in, k) {
		return true
	}
	s.plan = prev
	s.undo(m)
	return false
}

func (p *throughPat) String() string { return "TraceThrough(" + p.desc + ", " + p.p.String() + ")" }
