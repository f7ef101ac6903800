package patterns

import (
	"fmt"
	"strings"
	"sync"

	"github.com/qcc-dev/qcc/ir"
)

// commutative lists the two-input ops whose operands may be swapped; Op tries both orders.
var commutative = map[string]bool{
	"Add": true, "Mul": true, "And": true, "Or": true, "Xor": true, "Equal": true,
	"Max": true, "Min": true, "Sum": true, "BitwiseAnd": true, "BitwiseOr": true,
}

// OpPat matches a value computed by a node of one op type.
type OpPat struct {
	op, domain string
	inputs     []Pattern
	anyInputs  bool
	name       string
	out        int
	attrs      []attrCheck
}

type attrCheck struct {
	desc string
	ok   func(n *ir.Node) bool
}

// Op matches a value produced (as output 0) by an op of the default domain whose inputs
// match the given patterns, in order or, for commutative ops, swapped. With no input
// patterns the node's inputs are not looked at.
func Op(op string, inputs ...Pattern) *OpPat {
	return &OpPat{op: op, inputs: inputs, anyInputs: len(inputs) == 0}
}

// In sets the domain (for com.microsoft ops and the like).
func (p *OpPat) In(domain string) *OpPat { p.domain = domain; return p }

// As binds the matched node (and its output value) to name.
func (p *OpPat) As(name string) *OpPat { p.name = name; return p }

// Out matches output i of the node instead of output 0.
func (p *OpPat) Out(i int) *OpPat { p.out = i; return p }

// AttrIs requires an INT attribute to equal v, with def when absent.
func (p *OpPat) AttrIs(name string, v, def int64) *OpPat {
	p.attrs = append(p.attrs, attrCheck{fmt.Sprintf("%s=%d", name, v), func(n *ir.Node) bool {
		return n.AttrInt(name, def) == v
	}})
	return p
}

// If adds a condition on the node.
func (p *OpPat) If(desc string, ok func(n *ir.Node) bool) *OpPat {
	p.attrs = append(p.attrs, attrCheck{desc, ok})
	return p
}

func sameDomain(a, b string) bool {
	norm := func(d string) string {
		if d == "ai.onnx" {
			return ""
		}
		return d
	}
	return norm(a) == norm(b)
}

func (p *OpPat) match(s *state, v *ir.Value, k func(*state) bool) bool {
	if v == nil {
		return false
	}
	n, idx := v.Producer()
	if n == nil || idx != p.out || n.OpType != p.op || !sameDomain(n.Domain, p.domain) {
		return false
	}
	for _, a := range p.attrs {
		if !a.ok(n) {
			return false
		}
	}
	if p.name != "" {
		if b, ok := s.nodes[p.name]; ok && b != n {
			return false
		}
	}
	ins := n.Inputs()
	for len(ins) > 0 && ins[len(ins)-1] == nil {
		ins = ins[:len(ins)-1]
	}
	if !p.anyInputs && len(ins) != len(p.inputs) {
		return false
	}
	mark := s.mark()
	s.visit(p.name, n, v)
	inner := func(s *state) bool { return k(s) }
	if p.anyInputs {
		if inner(s) {
			return true
		}
		s.undo(mark)
		return false
	}
	if matchSeq(s, p.inputs, ins, inner) {
		return true
	}
	s.undo(mark)
	if len(ins) == 2 && commutative[p.op] && p.domain == "" {
		s.visit(p.name, n, v)
		if matchSeq(s, p.inputs, []*ir.Value{ins[1], ins[0]}, inner) {
			return true
		}
		s.undo(mark)
	}
	return false
}

// matchSeq matches patterns against values left to right, backtracking across them.
func matchSeq(s *state, ps []Pattern, vs []*ir.Value, k func(*state) bool) bool {
	if len(ps) == 0 {
		return k(s)
	}
	if ps[0] == nil { // an omitted optional input
		if vs[0] != nil {
			return false
		}
		return matchSeq(s, ps[1:], vs[1:], k)
	}
	return ps[0].match(s, vs[0], func(s *state) bool { return matchSeq(s, ps[1:], vs[1:], k) })
}

func (p *OpPat) String() string {
	var b strings.Builder
	if p.domain != "" {
		b.WriteString(p.domain + ".")
	}
	b.WriteString(p.op)
	b.WriteByte('(')
	for i, in := range p.inputs {
		if i > 0 {
			b.WriteString(", ")
		}
		if in == nil {
			b.WriteString("<none>")
		} else {
			b.WriteString(in.String())
		}
	}
	b.WriteByte(')')
	if p.name != "" {
		b.WriteString(" as " + p.name)
	}
	return b.String()
}

type optPat struct{ p *OpPat }

// Optional matches the op, or, when the op is absent, its first input pattern directly:
// Optional(Op("Cast", x)) matches Cast(x) and x.
func Optional(p *OpPat) Pattern { return &optPat{p} }

func (o *optPat) match(s *state, v *ir.Value, k func(*state) bool) bool {
	mark := s.mark()
	if o.p.match(s, v, k) {
		return true
	}
	s.undo(mark)
	if len(o.p.inputs) == 0 {
		return false
	}
	return o.p.inputs[0].match(s, v, k)
}
func (o *optPat) String() string { return "Optional(" + o.p.String() + ")" }

// state is the bindings of a match in progress, with an undo trail for backtracking.
type state struct {
	values map[string]*ir.Value
	nodes  map[string]*ir.Node
	seen   []*ir.Node // matched nodes in visit order (may repeat)
	trail  []undoRec
	plan   any // what a Trace pattern computed
}

type undoRec struct {
	value, node string
}

func newState() *state {
	return &state{values: map[string]*ir.Value{}, nodes: map[string]*ir.Node{}}
}

// statePool keeps states between matches: a pass tries patterns at most of a graph's
// values, and a Match copies what it keeps out of the state.
var statePool = sync.Pool{New: func() any { return newState() }}

func (s *state) release() {
	clear(s.values)
	clear(s.nodes)
	clear(s.seen)
	s.seen, s.trail, s.plan = s.seen[:0], s.trail[:0], nil
	statePool.Put(s)
}

type mark struct{ trail, seen int }

func (s *state) mark() mark { return mark{len(s.trail), len(s.seen)} }

func (s *state) undo(m mark) {
	for i := len(s.trail) - 1; i >= m.trail; i-- {
		r := s.trail[i]
		if r.value != "" {
			delete(s.values, r.value)
		}
		if r.node != "" {
			delete(s.nodes, r.node)
		}
	}
	s.trail = s.trail[:m.trail]
	s.seen = s.seen[:m.seen]
}

func (s *state) bindValue(name string, v *ir.Value, k func(*state) bool) bool {
	m := s.mark()
	s.values[name] = v
	s.trail = append(s.trail, undoRec{value: name})
	if k(s) {
		return true
	}
	s.undo(m)
	return false
}

func (s *state) visit(name string, n *ir.Node, v *ir.Value) {
	s.seen = append(s.seen, n)
	if name != "" {
		if _, ok := s.nodes[name]; !ok {
			s.nodes[name] = n
			s.trail = append(s.trail, undoRec{node: name})
		}
		if _, ok := s.values[name]; !ok {
			s.values[name] = v
			s.trail = append(s.trail, undoRec{value: name})
		}
	}
}
