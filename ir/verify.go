package ir

import (
	"errors"
	"fmt"
	"slices"
)

// Verify checks the model's structural invariants: unique names (no shadowing across
// scopes), every input defined in scope, use-def chains consistent, nodes acyclic and in
// topological order, graph outputs defined, initializer types matching their data, the
// opset imports present for every domain used, and no default-domain operator newer than
// the model's opset.
func (m *Model) Verify() error {
	if m.Graph == nil {
		return errors.New("model has no graph")
	}
	var errs []error
	used := map[string]bool{}
	have := m.Opset("")
	m.Graph.Walk(func(g *Graph) error {
		for _, n := range g.Nodes() {
			if at := OpIntroduced(n.OpType); (n.Domain == "" || n.Domain == "ai.onnx") && have > 0 && at > have && len(errs) < 20 {
				errs = append(errs, fmt.Errorf("node %s: %s came with opset %d; the model imports %d", n, n.OpType, at, have))
			}
			if !used[n.Domain] {
				used[n.Domain] = true
				if m.Opset(n.Domain) == 0 {
					errs = append(errs, fmt.Errorf("node %s: domain %q has no opset import", n, n.Domain))
				}
			}
		}
		return nil
	})
	if err := m.Graph.Verify(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Verify checks one graph and its subgraphs; see Model.Verify.
func (g *Graph) Verify() error {
	var errs []error
	bad := func(format string, args ...any) {
		if len(errs) < 20 {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	for name, v := range g.values {
		if v.Name != name || v.graph != g {
			bad("value table entry %q points at value %q of another graph", name, v.Name)
		}
		for s := g.Parent; s != nil; s = s.Parent {
			if s.values[name] != nil {
				bad("value %q shadows a name of an enclosing graph", name)
			}
		}
		if v.Const != nil {
			if v.producer != nil {
				bad("initializer %q also produced by %s", name, v.producer)
			}
			if t := v.Type; t != nil && t.Kind == TensorType && t.DType != Undefined && t.DType != v.Const.DType {
				bad("initializer %q is %s but declared %s", name, v.Const.DType, t.DType)
			}
			if t := v.Type; t != nil && t.HasShape && t.Shape.Static() {
				dims, _ := t.Shape.Ints()
				if !slices.Equal(dims, v.Const.Dims) {
					bad("initializer %q has shape %v but declared %v", name, v.Const.Dims, dims)
				}
			}
		}
		for _, u := range v.uses {
			if u.Node.graph == nil || u.Index >= len(u.Node.inputs) || u.Node.inputs[u.Index] != v {
				bad("value %q: stale use by %s", name, u.Node)
			}
		}
	}
	for _, v := range g.Inputs {
		if g.values[v.Name] != v {
			bad("graph input %q not in value table", v.Name)
		}
	}
	for _, v := range g.Outputs {
		if v == nil {
			bad("graph %q has an empty output", g.Name)
		} else if !g.inScope(v) {
			bad("graph output %q is not defined", v.Name)
		} else if v.producer == nil && v.Const == nil && !v.sparse && !v.IsGraphInput() && v.graph == g {
			bad("graph output %q has no producer", v.Name)
		}
	}
	pos := map[*Node]int{}
	for i, n := range g.Nodes() {
		pos[n] = i
	}
	for i, n := range g.Nodes() {
		if n.graph != g {
			bad("node %s listed in a graph it does not belong to", n)
		}
		if n.OpType == "" {
			bad("node %d (%q) has no op_type", i, n.Name)
		}
		for k, in := range n.inputs {
			if in == nil {
				continue
			}
			if !g.inScope(in) {
				bad("node %s input %d: value %q is not defined (no producer, graph input or initializer)", n, k, in.Name)
				continue
			}
			if in.graph == g && in.producer == nil && in.Const == nil && !in.sparse && !in.IsGraphInput() {
				bad("node %s input %d: value %q has no producer", n, k, in.Name)
			}
			if p := in.producer; p != nil && p.graph == g && pos[p] >= i {
				bad("node %s uses %q before %s computes it", n, in.Name, p)
			}
			if !hasUse(in, n, k) {
				bad("value %q: use by %s input %d missing from its use list", in.Name, n, k)
			}
		}
		for k, o := range n.outputs {
			if o == nil {
				continue
			}
			if o.producer != n || o.outIndex != k || g.values[o.Name] != o {
				bad("node %s output %d (%q): broken def link", n, k, o.Name)
			}
		}
		for _, sg := range n.Subgraphs() {
			if sg.Parent != g || sg.Owner != n {
				bad("subgraph %q of %s has the wrong parent", sg.Name, n)
			}
			if err := sg.Verify(); err != nil {
				bad("subgraph %q of %s: %w", sg.Name, n, err)
			}
		}
	}
	if err := g.checkAcyclic(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (g *Graph) checkAcyclic() error {
	_, err := g.topoOrder()
	return err
}

func (g *Graph) inScope(v *Value) bool {
	for s := g; s != nil; s = s.Parent {
		if v.graph == s && s.values[v.Name] == v {
			return true
		}
	}
	return false
}

func hasUse(v *Value, n *Node, k int) bool {
	for _, u := range v.uses {
		if u.Node == n && u.Index == k {
			return true
		}
	}
	return false
}
