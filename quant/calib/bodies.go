package calib

import (
	"fmt"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
)

// ONNX Runtime returns only main-graph values, so a value inside an If branch is
// calibrated on a copy of the model in which it leaves through the If: the branch gets it
// as an extra output, every other branch an empty tensor of its type at the same
// position (empty tensors add nothing to a histogram), and the If an extra output. Nested
// Ifs do the same at each level. Loop and Scan bodies have no such exit.

// ExposeBodies returns a copy of m in which each of vals (values of m, in any graph)
// can be fetched by the main-graph name it maps to. m is not changed.
func ExposeBodies(m *ir.Model, vals []*ir.Value) (*ir.Model, map[*ir.Value]string, error) {
	b, err := ir.Marshal(m)
	if err != nil {
		return nil, nil, fmt.Errorf("calib: copying the model to expose body values: %w", err)
	}
	cp, err := ir.LoadBytes(b, "")
	if err != nil {
		return nil, nil, fmt.Errorf("calib: copying the model to expose body values: %w", err)
	}
	same := sameGraphs(m.Graph, cp.Graph)
	e := &exposer{out: map[*ir.Value]string{}}
	names := map[*ir.Value]string{}
	for _, v := range vals {
		g := same[v.Graph()]
		if g == nil || g.Value(v.Name) == nil {
			return nil, nil, fmt.Errorf("calib: %s is in no graph of the model", v.Name)
		}
		name, err := e.expose(g.Value(v.Name), v.Type)
		if err != nil {
			return nil, nil, err
		}
		names[v] = name
	}
	if e.changed {
		if err := cp.Graph.TopoSort(); err != nil {
			return nil, nil, fmt.Errorf("calib: exposing body values: %w", err)
		}
	}
	return cp, names, nil
}

// sameGraphs pairs the graphs of a model with those of its copy, in walk order.
func sameGraphs(a, b *ir.Graph) map[*ir.Graph]*ir.Graph {
	var as, bs []*ir.Graph
	_ = a.Walk(func(g *ir.Graph) error { as = append(as, g); return nil })
	_ = b.Walk(func(g *ir.Graph) error { bs = append(bs, g); return nil })
	out := map[*ir.Graph]*ir.Graph{}
	for i := range min(len(as), len(bs)) {
		out[as[i]] = bs[i]
	}
	return out
}

type exposer struct {
	out     map[*ir.Value]string // body value → main-graph name
	changed bool
}

// expose returns the main-graph name under which v, of type t, comes out. t is the
// original's: a copy's body values carry only the types written as value_info.
func (e *exposer) expose(v *ir.Value, t *ir.Type) (string, error) {
	g := v.Graph()
	if g == nil || g.Parent == nil {
		return v.Name, nil
	}
	if name, ok := e.out[v]; ok {
		return name, nil
	}
	own := g.Owner
	if own == nil || own.OpType != "If" || own.Domain != "" && own.Domain != "ai.onnx" {
		return "", fmt.Errorf("calib: %s is inside a %s body, which passes out only its loop outputs", v.Name, opOf(own))
	}
	out, err := e.ifOutput(own, g, v, t)
	if err != nil {
		return "", err
	}
	name, err := e.expose(out, out.Type)
	if err != nil {
		return "", err
	}
	e.out[v] = name
	return name, nil
}

func opOf(n *ir.Node) string {
	if n == nil {
		return "subgraph"
	}
	return n.OpType
}

// ifOutput returns the output of the If node own that carries v out of its branch g:
// the existing one when v is an output of g already, else a new one (own is replaced by
// an If with one more output).
func (e *exposer) ifOutput(own *ir.Node, g *ir.Graph, v *ir.Value, t *ir.Type) (*ir.Value, error) {
	for i, o := range g.Outputs {
		if o == v && own.Output(i) != nil {
			return own.Output(i), nil
		}
	}
	dt := ir.Float // what calibration reads, when the type is unknown
	var shape ir.Shape
	if t != nil && t.DType != ir.Undefined {
		dt = t.DType
		if t.HasShape {
			shape = t.Shape
		}
	}
	// The outputs declare their element type only: shapes the branches disagree on
	// are ORT's to union, not to merge with a declaration.
	for _, b := range own.Subgraphs() {
		if b == g {
			if v.Type == nil {
				v.Type = &ir.Type{Kind: ir.TensorType, DType: dt}
			}
			b.Outputs = append(b.Outputs, v)
			continue
		}
		b.Outputs = append(b.Outputs, emptyOf(b, dt, shape, v.Name))
	}
	p := own.Graph()
	out := p.NewValue(v.Name+"_calib", &ir.Type{Kind: ir.TensorType, DType: dt})
	outs := append(append([]*ir.Value(nil), own.Outputs()...), out)
	nn := &ir.Node{Name: own.Name, OpType: own.OpType, Domain: own.Domain, Overload: own.Overload, Attrs: own.Attrs, Metadata: own.Metadata, DocString: own.DocString}
	ins := own.Inputs()
	p.RemoveNode(own)
	if _, err := p.AddNode(nn, ins, outs); err != nil {
		return nil, fmt.Errorf("calib: giving If %s an output for %s: %w", own.Name, v.Name, err)
	}
	for _, b := range nn.Subgraphs() {
		b.Owner = nn
	}
	e.changed = true
	return out, nil
}

// emptyOf adds to g a Constant holding an empty tensor of type dt shaped like shape:
// its known dims, and 0 for the others (for a shape with none, or unknown, every dim is
// 0). If before opset 11 merges the branches' shapes strictly, so the known dims must
// agree.
func emptyOf(g *ir.Graph, dt ir.DataType, shape ir.Shape, base string) *ir.Value {
	dims := make([]int64, max(len(shape), 1))
	unknown := false
	for i, d := range shape {
		if d.Known {
			dims[i] = d.Value
		} else {
			unknown = true
		}
	}
	if !unknown {
		clear(dims)
	}
	c := g.Add("Constant", nil, 1, base+"_empty", ir.TensorAttr("value", ir.NewTensor(dt, dims, nil)))
	c.Output(0).Type = &ir.Type{Kind: ir.TensorType, DType: dt}
	return c.Output(0)
}

// Selectors are the boolean inputs of m that are the condition of an If, read directly:
// which branch runs is data, so calibration runs every batch with each value.
func Selectors(m *ir.Model) []string {
	var out []string
	seen := map[string]bool{}
	inputs := map[*ir.Value]bool{}
	for _, v := range modelInputs(m) {
		if v.Type != nil && v.Type.DType == ir.Bool {
			inputs[v] = true
		}
	}
	_ = m.Graph.Walk(func(g *ir.Graph) error {
		for _, n := range g.Nodes() {
			if c := n.Input(0); n.OpType == "If" && c != nil && inputs[c] && !seen[c.Name] {
				seen[c.Name] = true
				out = append(out, c.Name)
			}
		}
		return nil
	})
	return out
}

// maxSelectors bounds the inputs EachSelector varies: each doubles the batches.
const maxSelectors = 3

// EachSelector runs every batch of src once per combination of values of the boolean
// inputs named (the first maxSelectors of them), so that each branch they select is
// calibrated on all the data.
func EachSelector(src Source, names []string) Source {
	if len(names) > maxSelectors {
		names = names[:maxSelectors]
	}
	if len(names) == 0 {
		return src
	}
	return &selectorSource{src: src, names: names}
}

type selectorSource struct {
	src   Source
	names []string
}

func (s *selectorSource) Len() int { return s.src.Len() << len(s.names) }

func (s *selectorSource) Batch(i int) (map[string]*ndarray.Array, error) {
	if i < 0 || i >= s.Len() {
		return nil, fmt.Errorf("calib: batch %d out of range [0, %d)", i, s.Len())
	}
	b, err := s.src.Batch(i >> len(s.names))
	if err != nil {
		return nil, err
	}
	out := make(map[string]*ndarray.Array, len(b))
	for k, a := range b {
		out[k] = a
	}
	for j, name := range s.names {
		a := b[name]
		if a == nil {
			return nil, fmt.Errorf("calib: batch %d has no input %q", i>>len(s.names), name)
		}
		vals := make([]bool, a.Len())
		for k := range vals {
			vals[k] = i>>j&1 == 1
		}
		out[name] = ndarray.FromBool(a.Shape, vals)
	}
	return out, nil
}
