package ortcheck

import (
	"fmt"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/shape"
)

// Emulate returns a copy of m in which every node that computes in the narrow float type
// dt (float16 or bfloat16) runs in float32 between explicit Casts: its narrow inputs are
// widened and its outputs rounded to dt, as a GPU kernel stores them. ONNX Runtime's CPU
// provider needs it for faithful numbers: it has no bfloat16 kernels, and where a float16
// node lacks a kernel it computes in float32 and drops the Cast pairs it inserted between
// such nodes, so an intermediate that overflows float16 never does. Explicit Casts it
// keeps. Cast, Constant and ConstantOfShape nodes are left as they are.
func Emulate(m *ir.Model, dt ir.DataType) (*ir.Model, error) {
	c, err := copyModel(m)
	if err != nil {
		return nil, err
	}
	if _, err := shape.Infer(c); err != nil {
		return nil, fmt.Errorf("emulate: %w", err)
	}
	g := c.Graph
	// Values typed by value_info only (an operator output whose type is a constraint of
	// its own): their float32 copies are typed there too.
	listed := map[*ir.Value]bool{}
	for _, v := range g.ValueInfo {
		listed[v] = true
	}
	narrow := func(v *ir.Value) bool { return v != nil && v.Type != nil && v.Type.DType == dt }
	wide := map[*ir.Value]*ir.Value{}
	widen := func(v *ir.Value) *ir.Value {
		if w, ok := wide[v]; ok {
			return w
		}
		t := v.Type.Clone()
		t.DType = ir.Float
		w := &ir.Value{Name: g.FreshName(v.Name + "_emu32"), Type: t}
		g.AddNode(&ir.Node{OpType: "Cast", Attrs: []*ir.Attr{ir.IntAttr("to", int64(ir.Float))}}, []*ir.Value{v}, []*ir.Value{w})
		wide[v] = w
		return w
	}
	for _, n := range g.NodesCopy() {
		switch n.OpType {
		case "Cast", "Constant", "ConstantOfShape":
			if n.Domain == "" {
				continue
			}
		}
		any := false
		for _, v := range append(append([]*ir.Value(nil), n.Inputs()...), n.Outputs()...) {
			any = any || narrow(v)
		}
		if !any {
			continue
		}
		ins := make([]*ir.Value, len(n.Inputs()))
		for i, v := range n.Inputs() {
			ins[i] = v
			if narrow(v) {
				ins[i] = widen(v)
			}
		}
		outs := append([]*ir.Value(nil), n.Outputs()...)
		g.RemoveNode(n)
		var rounds [][2]*ir.Value
		var typed []*ir.Value
		for i, o := range outs {
			if narrow(o) {
				t := o.Type.Clone()
				t.DType = ir.Float
				w := &ir.Value{Name: g.FreshName(o.Name + "_emu32"), Type: t}
				rounds = append(rounds, [2]*ir.Value{w, o})
				outs[i] = w
				if listed[o] {
					typed = append(typed, w)
				}
			}
		}
		if _, err := g.AddNode(&ir.Node{Name: n.Name, OpType: n.OpType, Domain: n.Domain, Attrs: n.Attrs}, ins, outs); err != nil {
			return nil, fmt.Errorf("emulate %s: %w", n, err)
		}
		g.ValueInfo = append(g.ValueInfo, typed...)
		for _, r := range rounds {
			if _, err := g.AddNode(&ir.Node{OpType: "Cast", Attrs: []*ir.Attr{ir.IntAttr("to", int64(dt))}}, []*ir.Value{r[0]}, []*ir.Value{r[1]}); err != nil {
				return nil, fmt.Errorf("emulate %s: %w", n, err)
			}
		}
	}
	if err := g.TopoSort(); err != nil {
		return nil, err
	}
	return c, nil
}

// copyModel is an independent copy of m, through its serialized form.
func copyModel(m *ir.Model) (*ir.Model, error) {
	b, err := ir.Marshal(m)
	if err != nil {
		return nil, err
	}
	return ir.LoadBytes(b, "")
}
