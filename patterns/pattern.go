// Package patterns is how a pass says what it looks for: a pattern is written as the
// subgraph it matches, with Go builder functions,
//
//	x := Var("x")
//	mean := Op("ReduceMean", x)
//	d := Op("Sub", x, mean)   // x appears twice: both uses must be the same value
//
// and a Rule pairs a pattern with a Check that says why it refuses a match and a
// Rewrite that replaces it through a Rewriter. Matching is a backtracking search over
// alternatives (Or, Optional, the operand order of commutative ops), so a pattern may
// be a DAG: a Var used twice matches fan-out such as attention's Q/K/V projections of one
// input or LayerNorm's two uses of x.
package patterns

import (
	"fmt"
	"math"
	"strings"

	"github.com/qcc-dev/qcc/ir"
)

// Pattern matches a value.
type Pattern interface {
	// match tries to match v under the bindings in s, calling k for every way it matches;
	// it returns true as soon as a k returns true.
	match(s *state, v *ir.Value, k func(*state) bool) bool
	String() string
}

// rootOps returns the op types of the nodes whose outputs p can match, or all true when
// p can match a value whatever produced it (or nothing did). It is a necessary condition
// only: a match may still fail on the node's domain, attributes or inputs.
func rootOps(p Pattern) (ops []string, all bool) {
	switch p := p.(type) {
	case *OpPat:
		return []string{p.op}, false
	case *optPat:
		if len(p.p.inputs) == 0 {
			return []string{p.p.op}, false
		}
		ops, all := rootOps(p.p.inputs[0])
		return append(ops, p.p.op), all
	case *bindPat:
		return rootOps(p.p)
	case *predPat:
		return rootOps(p.p)
	case *orPat:
		for _, a := range p.alts {
			o, all := rootOps(a)
			if all {
				return nil, true
			}
			ops = append(ops, o...)
		}
		return ops, false
	}
	return nil, true // Var, Any, Const (an initializer has no producer), Trace
}

// ---- values ----

type anyPat struct{}

// Any matches every value.
func Any() Pattern { return anyPat{} }

func (anyPat) match(s *state, v *ir.Value, k func(*state) bool) bool { return v != nil && k(s) }
func (anyPat) String() string                                        { return "_" }

type varPat struct{ name string }

// Var matches any value and binds it to name. A name used twice in one pattern matches
// only the same value in both places.
func Var(name string) Pattern { return &varPat{name} }

func (p *varPat) match(s *state, v *ir.Value, k func(*state) bool) bool {
	if v == nil {
		return false
	}
	if b, ok := s.values[p.name]; ok {
		return b == v && k(s)
	}
	return s.bindValue(p.name, v, k)
}
func (p *varPat) String() string { return p.name }

type bindPat struct {
	name string
	p    Pattern
}

// Bind matches p and binds the matched value to name (as Var does for any value).
func Bind(name string, p Pattern) Pattern { return &bindPat{name, p} }

func (p *bindPat) match(s *state, v *ir.Value, k func(*state) bool) bool {
	if b, ok := s.values[p.name]; ok {
		return b == v && k(s)
	}
	return p.p.match(s, v, func(s *state) bool { return s.bindValue(p.name, v, k) })
}
func (p *bindPat) String() string { return p.name + "=" + p.p.String() }

// ---- constants ----

type constPat struct {
	desc string
	pred func(vals []float64, t *ir.Tensor) bool
}

// Const matches an initializer.
func Const() Pattern {
	return &constPat{"Const", func([]float64, *ir.Tensor) bool { return true }}
}

// ConstNear matches a constant all of whose elements are within tol of want (a scalar or
// a tensor filled with one value).
func ConstNear(want, tol float64) Pattern {
	return &constPat{fmt.Sprintf("Const(%g±%g)", want, tol), func(vals []float64, t *ir.Tensor) bool {
		if vals == nil || len(vals) == 0 {
			return false
		}
		for _, x := range vals {
			if math.Abs(x-want) > tol {
				return false
			}
		}
		return true
	}}
}

// ConstWhere matches a constant whose values satisfy pred.
func ConstWhere(desc string, pred func(vals []float64) bool) Pattern {
	return &constPat{desc, func(vals []float64, _ *ir.Tensor) bool { return vals != nil && pred(vals) }}
}

// maxConstRead bounds how many elements a constant predicate reads: patterns look at
// scalars and small vectors, never at weights.
const maxConstRead = 64

func (p *constPat) match(s *state, v *ir.Value, k func(*state) bool) bool {
	t := ConstOf(v)
	if t == nil {
		return false
	}
	var vals []float64
	if t.NumElements() <= maxConstRead && (t.DType.IsFloat() || t.DType.IsInt()) {
		vals, _ = t.Float64s()
	}
	return p.pred(vals, t) && k(s)
}
func (p *constPat) String() string { return p.desc }

// ConstOf returns the tensor of an initializer, or of a Constant node's output.
func ConstOf(v *ir.Value) *ir.Tensor {
	if v == nil {
		return nil
	}
	if v.Const != nil {
		return v.Const
	}
	if n, _ := v.Producer(); n != nil && n.OpType == "Constant" && n.Domain == "" {
		if a := n.Attr("value"); a != nil && a.Tensor != nil {
			return a.Tensor
		}
	}
	return nil
}

// ---- combinators ----

type orPat struct{ alts []Pattern }

// Or matches the first alternative that leads to a complete match (later ones are tried
// when an earlier one fails further on).
func Or(alts ...Pattern) Pattern { return &orPat{alts} }

func (p *orPat) match(s *state, v *ir.Value, k func(*state) bool) bool {
	for _, a := range p.alts {
		mark := s.mark()
		if a.match(s, v, k) {
			return true
		}
		s.undo(mark)
	}
	return false
}
func (p *orPat) String() string {
	parts := make([]string, len(p.alts))
	for i, a := range p.alts {
		parts[i] = a.String()
	}
	return "Or(" + strings.Join(parts, " | ") + ")"
}

type predPat struct {
	desc string
	p    Pattern
	pred func(v *ir.Value) bool
}

// Where matches p when pred holds for the value.
func Where(desc string, p Pattern, pred func(v *ir.Value) bool) Pattern {
	return &predPat{desc, p, pred}
}

func (p *predPat) match(s *state, v *ir.Value, k func(*state) bool) bool {
	return v != nil && p.pred(v) && p.p.match(s, v, k)
}
func (p *predPat) String() string { return p.desc + "(" + p.p.String() + ")" }

// HasRank matches p when the value's rank is known to be r.
func HasRank(r int, p Pattern) Pattern {
	return Where(fmt.Sprintf("HasRank%d", r), p, func(v *ir.Value) bool { return v.Type.Rank() == r })
}

// SingleUse matches p when the value has exactly one consumer and is not a graph output.
func SingleUse(p Pattern) Pattern {
	return Where("SingleUse", p, func(v *ir.Value) bool { return len(v.Uses()) == 1 && !v.IsGraphOutput() })
}

// Float matches p when the value is known to be a floating-point tensor.
func Float(p Pattern) Pattern {
	return Where("Float", p, func(v *ir.Value) bool { return v.Type != nil && v.Type.DType.IsFloat() })
}

// UniformConst reads a constant holding one value: a scalar, or a small tensor (at most
// maxConstRead elements) filled with it.
func UniformConst(v *ir.Value) (float64, bool) {
	t := ConstOf(v)
	if t == nil || t.NumElements() == 0 || t.NumElements() > maxConstRead || !(t.DType.IsFloat() || t.DType.IsInt()) {
		return 0, false
	}
	vals, err := t.Float64s()
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
