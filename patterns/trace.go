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
	if k(s) {
		return true
	}
	s.plan = prev
	s.undo(m)
	return false
}

func (p *tracePat) String() string { return "Trace(" + p.desc + ")" }
