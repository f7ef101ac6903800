package fuzz

import (
	"context"
	"fmt"
	"time"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/passes/cleanup"
)

// Shrink reduces c to a smaller case that still fails with f's kind in f's pipeline:
// greedy delta debugging over the graph, one step at a time, kept when the failure
// stays — drop a graph output; cut a value loose, making it a new graph input of its
// inferred type (everything upstream then dies); bypass a node whose first input has its
// output's type — until no step helps or the time is up. A candidate the generated-model
// checks refuse (ORT cannot run it) does not count as failing.
func Shrink(c *Case, seed int64, f Failure, limit time.Duration) *Case {
	deadline := time.Now().Add(limit)
	cur, err := ir.Marshal(c.Model)
	if err != nil {
		return c
	}
	fails := func(b []byte) bool {
		m, err := ir.LoadBytes(b, "")
		if err != nil {
			return false
		}
		r := Check(&Case{Model: m, Class: c.Class, NearMiss: c.NearMiss, Witnesses: c.Witnesses}, seed)
		return !r.Has(Invalid, "") && r.Has(f.Kind, f.Pipeline)
	}
	for progress := true; progress && time.Now().Before(deadline); {
		progress = false
		for _, step := range []func([]byte, int) ([]byte, bool){dropOutput, cutValue, bypassNode} {
			for i := 0; time.Now().Before(deadline); i++ {
				cand, ok := step(cur, i)
				if !ok {
					break
				}
				if cand != nil && fails(cand) {
					cur, progress = cand, true
					i-- // the same index now names the next candidate
				}
			}
		}
	}
	m, err := ir.LoadBytes(cur, "")
	if err != nil {
		return c
	}
	return &Case{Model: m, Class: c.Class, NearMiss: c.NearMiss, Witnesses: c.Witnesses}
}

// A shrink step returns the i-th candidate of the model, nil when that one does not
// apply, and ok false when there is no i-th.

func dropOutput(b []byte, i int) ([]byte, bool) {
	m, err := ir.LoadBytes(b, "")
	if err != nil || len(m.Graph.Outputs) < 2 || i >= len(m.Graph.Outputs) {
		return nil, false
	}
	g := m.Graph
	g.Outputs = append(g.Outputs[:i:i], g.Outputs[i+1:]...)
	return finish(m), true
}

// typed loads the model with the shape engine's types on its values.
func typed(b []byte) (*ir.Model, []*ir.Value) {
	m, err := ir.LoadBytes(b, "")
	if err != nil {
		return nil, nil
	}
	p, err := pass.Parse("shapes", passes.All)
	if err != nil {
		return nil, nil
	}
	if _, err := safeRun(p, m); err != nil {
		return nil, nil
	}
	var vs []*ir.Value
	nodes := m.Graph.Nodes()
	for k := len(nodes) - 1; k >= 0; k-- { // latest first: a cut there removes the most
		for _, o := range nodes[k].Outputs() {
			if o != nil && !o.IsGraphOutput() && len(o.Uses()) > 0 {
				vs = append(vs, o)
			}
		}
	}
	return m, vs
}

func safeRun(p *pass.Pipeline, m *ir.Model) (r *pass.Report, err error) {
	defer func() {
		if x := recover(); x != nil {
			err = fmt.Errorf("panic: %v", x)
		}
	}()
	return p.Run(context.Background(), m, nil)
}

func inputType(t *ir.Type) bool {
	if t == nil || t.Kind != ir.TensorType || !t.HasShape {
		return false
	}
	switch t.DType {
	case ir.Float, ir.Int64, ir.Bool:
	default:
		return false
	}
	for _, d := range t.Shape {
		if !d.Known && Sizes[0][d.Param] == 0 {
			return false
		}
	}
	return true
}

func cutValue(b []byte, i int) ([]byte, bool) {
	m, vs := typed(b)
	if m == nil || i >= len(vs) {
		return nil, false
	}
	v := vs[i]
	if !inputType(v.Type) {
		return nil, true
	}
	in, err := m.Graph.AddInput(m.Graph.FreshName("cut"), v.Type.Clone())
	if err != nil {
		return nil, true
	}
	v.ReplaceAllUsesWith(in)
	return finish(m), true
}

func bypassNode(b []byte, i int) ([]byte, bool) {
	m, _ := typed(b)
	if m == nil {
		return nil, false
	}
	nodes := m.Graph.Nodes()
	if i >= len(nodes) {
		return nil, false
	}
	n := nodes[i]
	o, x := n.Output(0), n.Input(0)
	if o == nil || x == nil || len(n.Outputs()) != 1 || o.Type == nil || !o.Type.Equal(x.Type) {
		return nil, true
	}
	o.ReplaceAllUsesWith(x)
	return finish(m), true
}

// finish removes what nothing reads (nodes, initializers, graph inputs) and marshals.
func finish(m *ir.Model) []byte {
	g := m.Graph
	cleanup.RemoveDead(g)
	for _, in := range append([]*ir.Value(nil), g.Inputs...) {
		if len(in.Uses()) == 0 && !in.IsGraphOutput() {
			_ = g.RemoveValue(in)
		}
	}
	b, err := ir.Marshal(m)
	if err != nil {
		return nil
	}
	return b
}
