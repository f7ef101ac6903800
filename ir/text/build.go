package text

import (
	"math"

	"github.com/qcc-dev/qcc/ir"
)

func float32frombits(b uint64) float32 { return math.Float32frombits(uint32(b)) }

// scope holds the values a graph defines, including node outputs not yet added to it, so
// nodes may refer to values computed further down and subgraphs to enclosing values.
type scope struct {
	g       *ir.Graph
	pending map[string]*ir.Value
	parent  *scope
}

func (s *scope) lookup(name string) *ir.Value {
	for ; s != nil; s = s.parent {
		if v := s.g.Value(name); v != nil {
			return v
		}
		if v := s.pending[name]; v != nil {
			return v
		}
	}
	return nil
}

func (p *parser) build(ag *astGraph) *ir.Graph {
	return p.buildGraph(ag, nil, nil)
}

func (p *parser) buildGraph(ag *astGraph, parent *scope, owner *ir.Node) *ir.Graph {
	g := ir.NewGraph(ag.name)
	if parent != nil {
		g.Parent = parent.g
	}
	g.Owner = owner
	s := &scope{g: g, pending: map[string]*ir.Value{}, parent: parent}
	defined := func(t token) {
		if g.Value(t.text) != nil || s.pending[t.text] != nil {
			p.fail(t, "value %s is defined twice", quote(t.text))
		}
		if t.text == "" {
			p.fail(t, "a value needs a name")
		}
	}
	for _, in := range ag.inputs {
		defined(in.tok)
		typ := in.typ
		if in.data != nil {
			typ = ir.TensorOf(in.data.DType, dimsOf(in.data.Dims)...)
		}
		v, err := g.AddInput(in.tok.text, typ)
		if err != nil {
			p.fail(in.tok, "%v", err)
		}
		if in.data != nil {
			in.data.Name = in.tok.text
			v.Const = in.data
			g.Initializers = append(g.Initializers, v)
		}
	}
	for _, in := range ag.inits {
		defined(in.tok)
		in.data.Name = in.tok.text
		if _, err := g.AddInitializer(in.tok.text, in.data); err != nil {
			p.fail(in.tok, "%v", err)
		}
	}
	outs := make([][]*ir.Value, len(ag.nodes))
	for i, an := range ag.nodes {
		outs[i] = make([]*ir.Value, len(an.outs))
		for k, t := range an.outs {
			if t.text == "" {
				continue
			}
			defined(t)
			v := &ir.Value{Name: t.text}
			s.pending[t.text] = v
			outs[i][k] = v
		}
	}
	for i, an := range ag.nodes {
		n := an.node
		for _, aa := range an.attrs {
			if aa.graph != nil {
				aa.a.Graph = p.buildGraph(aa.graph, s, n)
			}
			for _, sg := range aa.graphs {
				aa.a.Graphs = append(aa.a.Graphs, p.buildGraph(sg, s, n))
			}
			n.Attrs = append(n.Attrs, aa.a)
		}
		ins := make([]*ir.Value, len(an.ins))
		for k, t := range an.ins {
			if t.text == "" {
				continue
			}
			v := s.lookup(t.text)
			if v == nil {
				p.fail(t, "undefined value %s (input %d of %s)", quote(t.text), k, nodeDesc(n))
			}
			ins[k] = v
		}
		if _, err := g.AddNode(n, ins, outs[i]); err != nil {
			p.fail(an.tok, "%v", err)
		}
		for _, v := range outs[i] {
			if v != nil {
				delete(s.pending, v.Name)
			}
		}
	}
	for _, o := range ag.outputs {
		v := s.lookup(o.tok.text)
		if v == nil {
			p.fail(o.tok, "undefined graph output %s", quote(o.tok.text))
		}
		if o.typ != nil && v.Graph() == g && v.Const == nil {
			v.Type = o.typ
		}
		g.Outputs = append(g.Outputs, v)
	}
	for _, vi := range ag.infos {
		v := g.Value(vi.tok.text)
		if v == nil {
			p.fail(vi.tok, "value_info names %s, which this graph does not define", quote(vi.tok.text))
		}
		v.Type = vi.typ
		g.ValueInfo = append(g.ValueInfo, v)
	}
	return g
}

func nodeDesc(n *ir.Node) string {
	op := n.OpType
	if n.Domain != "" {
		op = n.Domain + "." + op
	}
	if n.Name != "" {
		return op + " node " + quote(n.Name)
	}
	return op + " node"
}

func dimsOf(ds []int64) []ir.Dim {
	out := make([]ir.Dim, len(ds))
	for i, d := range ds {
		out[i] = ir.D(d)
	}
	return out
}
