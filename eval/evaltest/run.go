// Package evaltest runs small graphs with the evaluator, so that tests of graph rewrites
// can check that a rewritten graph computes what the original did. It is a test helper,
// not a runtime: it handles only the ops eval supports and no subgraphs.
package evaltest

import (
	"fmt"

	"github.com/qcc-dev/qcc/eval"
	"github.com/qcc-dev/qcc/ir"
)

// Run evaluates the main graph of m on the given inputs (by graph input name) and returns
// the graph outputs by name.
func Run(m *ir.Model, inputs map[string]*ir.Tensor) (map[string]*ir.Tensor, error) {
	g := m.Graph
	vals := map[*ir.Value]*ir.Tensor{}
	for _, v := range g.Initializers {
		vals[v] = v.Const
	}
	for _, v := range g.Inputs {
		if t, ok := inputs[v.Name]; ok {
			vals[v] = t
		} else if v.Const == nil {
			return nil, fmt.Errorf("input %q not given", v.Name)
		}
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	for _, n := range g.Nodes() {
		ins := make([]*ir.Tensor, len(n.Inputs()))
		for i, v := range n.Inputs() {
			if v == nil {
				continue
			}
			t, ok := vals[v]
			if !ok {
				return nil, fmt.Errorf("node %s: input %q has no value", n, v.Name)
			}
			ins[i] = t
		}
		outs, err := eval.Eval(n, ins, m.Opset(""))
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n, err)
		}
		for i, o := range n.Outputs() {
			if o != nil {
				vals[o] = outs[i]
			}
		}
	}
	res := map[string]*ir.Tensor{}
	for _, o := range g.Outputs {
		t, ok := vals[o]
		if !ok {
			return nil, fmt.Errorf("output %q has no value", o.Name)
		}
		res[o.Name] = t
	}
	return res, nil
}
