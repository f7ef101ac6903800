// Package shape infers element types and shapes, with symbolic dimensions, for every node
// output of a model.
//
// Infer walks the main graph and the If/Loop/Scan bodies in topological order and sets
// Value.Type on each node output it can type. A type loaded from the file (value_info or
// a graph output) is kept where it is more precise; a declared symbolic dim is replaced by
// an inferred number; a real conflict (another dtype, rank or known dim) is an error
// naming the node and value. Ops without a rule (see rules) keep whatever type they had.
//
// Besides types, the inference follows the *contents* of small integer 1-D tensors (the
// shape arithmetic torch exports: Shape, Gather, Unsqueeze, Concat, ...) as symbolic dims,
// so that Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1], [4], [16])) is typed
// [batch, sequence, 4, 16]. Result.ShapeValue exposes those contents.
//
// Symbols: the file's names ("batch") are assumed not to be 1. Products, exact quotients,
// sums and differences of dims stay symbolic as canonical polynomials ("4*batch",
// "batch*sequence", "past + sequence"), so DeBERTa's reshape of [batch,4,s,16] to
// [-1,s,16] and back keeps batch, and a key cache grows to "past + sequence". A declared
// symbol on a node output gives way to the inferred one. No fresh "unk__N" names
// are made: a dim nothing determines is left unknown. Slices are taken to lie within
// their dimension: a known-size buffer sliced to a symbolic end ([0:sequence], position
// ids) gives that symbol, [past : past + sequence] gives sequence.
//
// It is an engine below the passes: the "shapes" and "value-info" passes (passes/shapes)
// wrap it, and the recognisers (patterns/transformer) call it between rewrites.
package shape

import (
	"errors"
	"fmt"
	"sort"

	"github.com/qcc-dev/qcc/ir"
)

// WriteValueInfo appends typed intermediate values to ValueInfo and returns how many.
func WriteValueInfo(m *ir.Model) int {
	added := 0
	m.Graph.Walk(func(g *ir.Graph) error {
		listed := map[*ir.Value]bool{}
		for _, v := range g.ValueInfo {
			listed[v] = true
		}
		for _, n := range g.Nodes() {
			for _, o := range n.Outputs() {
				if o == nil || listed[o] || o.Type == nil || o.IsGraphOutput() || o.IsGraphInput() || o.IsConst() {
					continue
				}
				if (o.Type.Kind == ir.TensorType || o.Type.Kind == ir.SparseTensorType) && o.Type.DType == ir.Undefined {
					continue
				}
				listed[o] = true
				g.ValueInfo = append(g.ValueInfo, o)
				added++
			}
		}
		return nil
	})
	return added
}

// OpStats counts one op type's outputs.
type OpStats struct {
	Nodes   int
	Outputs int // node outputs present
	Typed   int // with known dtype and rank
	Static  int // with every dim a known number
}

// Result is what Infer found.
type Result struct {
	Values  int // node outputs, all graphs
	Typed   int // of those, with known element type and rank
	Static  int // of those, with a fully known shape
	Unknown int // Values - Typed
	// ByOp is keyed like the rule table: "MatMul", "com.microsoft.Attention".
	ByOp map[string]*OpStats
	// NoRule lists the op keys that have no rule, sorted.
	NoRule []string
	// Untyped lists the node outputs left without element type or rank, in graph order.
	Untyped []*ir.Value

	e *engine
}

// ShapeValue returns the symbolic contents of a small integer tensor (a shape, an axis
// list, an index): one Dim per element, each known, symbolic or unknown; ok is false when
// the contents are not followed (not an integer tensor of rank <= 1, or nothing known).
// For a scalar the shape has one element. The answer describes the model as it was when
// Infer ran.
func (r *Result) ShapeValue(v *ir.Value) (ir.Shape, bool) {
	if r == nil || r.e == nil || v == nil {
		return nil, false
	}
	s, ok := r.e.value(v)
	return cloneShape(s), ok
}

// Infer types every node output of m; see the package documentation.
func Infer(m *ir.Model) (*Result, error) {
	if m.Graph == nil {
		return nil, errors.New("model has no graph")
	}
	e := newEngine(m.Opset(""))
	r := &Result{ByOp: map[string]*OpStats{}, e: e}
	e.graph(m.Graph)
	for k := range e.noRule {
		r.NoRule = append(r.NoRule, k)
	}
	sort.Strings(r.NoRule)
	m.Graph.Walk(func(g *ir.Graph) error {
		for _, n := range g.Nodes() {
			st := r.ByOp[ruleKey(n.Domain, n.OpType)]
			if st == nil {
				st = &OpStats{}
				r.ByOp[ruleKey(n.Domain, n.OpType)] = st
			}
			st.Nodes++
			for _, o := range n.Outputs() {
				if o == nil {
					continue
				}
				r.Values++
				st.Outputs++
				t := o.Type
				if t == nil || t.Rank() < 0 || (t.Kind == ir.TensorType && t.DType == ir.Undefined) {
					r.Untyped = append(r.Untyped, o)
					continue
				}
				r.Typed++
				st.Typed++
				if t.Shape.Static() {
					r.Static++
					st.Static++
				}
			}
		}
		return nil
	})
	r.Unknown = r.Values - r.Typed
	return r, errors.Join(e.errs...)
}

// InferNode (re)types the outputs of one node (and its subgraphs) from its inputs' current
// types; opset is the model's default-domain opset. Contents of shape tensors are
// recomputed from the producers as needed. It is what a pass calls after rewriting a node.
// The outputs' current types count as declared: a pass that changes what an existing
// value holds clears its Type first, or the difference is reported as a conflict.
func InferNode(n *ir.Node, opset int64) error {
	e := newEngine(opset)
	e.node(n)
	return errors.Join(e.errs...)
}

type engine struct {
	opset  int64
	state  map[*ir.Node]uint8 // 1 visiting, 2 done
	vals   map[*ir.Value]ir.Shape
	noVal  map[*ir.Value]bool
	noRule map[string]bool
	errs   []error
	// walk is set for a whole-model walk: producers are typed before their consumers,
	// wherever they are. InferNode leaves it unset and types only the node and its bodies.
	walk bool
}

func newEngine(opset int64) *engine {
	return &engine{opset: opset, state: map[*ir.Node]uint8{}, vals: map[*ir.Value]ir.Shape{},
		noVal: map[*ir.Value]bool{}, noRule: map[string]bool{}}
}

const maxErrors = 20

func (e *engine) fail(err error) {
	if len(e.errs) < maxErrors {
		e.errs = append(e.errs, err)
	}
}

// graph types every node of g, producers first.
func (e *engine) graph(g *ir.Graph) {
	e.walk = true
	for _, n := range g.Nodes() {
		e.visit(n)
	}
}

func (e *engine) visit(n *ir.Node) {
	switch e.state[n] {
	case 2:
		return
	case 1:
		e.fail(fmt.Errorf("node %s: the graph has a cycle through it", n))
		return
	}
	e.state[n] = 1
	for _, in := range n.Inputs() {
		if in == nil {
			continue
		}
		if p, _ := in.Producer(); p != nil && p.Graph() != nil {
			e.visit(p)
		}
	}
	e.node(n)
	e.state[n] = 2
}

// node types n's subgraphs and then its outputs.
func (e *engine) node(n *ir.Node) {
	c := &nctx{e: e, n: n, opset: e.opset, out: make([]*ir.Type, len(n.Outputs()))}
	key := ruleKey(n.Domain, n.OpType)
	r, ok := rules[key]
	if !ok {
		e.noRule[key] = true
		// Still type the bodies of unknown ops that hold subgraphs.
		for _, sg := range n.Subgraphs() {
			e.subgraph(sg)
		}
		return
	}
	if err := r(c); err != nil {
		e.fail(fmt.Errorf("node %s: %w", n, err))
		return
	}
	for i, o := range n.Outputs() {
		if o == nil || c.out[i] == nil {
			continue
		}
		t, err := merge(o.Type, c.out[i])
		if err == nil {
			t = preferInferredSyms(t, c.out[i])
		}
		if err != nil {
			e.fail(fmt.Errorf("node %s: output %q: %w", n, o.Name, err))
			continue
		}
		if !t.Equal(o.Type) {
			o.Type = t
		}
		delete(e.vals, o)
		delete(e.noVal, o)
	}
}

// subgraph types a body whose inputs have been typed by the owner's rule.
func (e *engine) subgraph(g *ir.Graph) {
	if e.walk {
		for _, n := range g.Nodes() {
			e.visit(n)
		}
		return
	}
	// Typing one node: order the body by its own producers only.
	done := map[*ir.Node]bool{}
	var visit func(n *ir.Node)
	visit = func(n *ir.Node) {
		if done[n] {
			return
		}
		done[n] = true
		for _, in := range n.Inputs() {
			if in == nil {
				continue
			}
			if p, _ := in.Producer(); p != nil && p.Graph() == g {
				visit(p)
			}
		}
		e.node(n)
	}
	for _, n := range g.Nodes() {
		visit(n)
	}
}

// merge combines a declared type (may be nil) with an inferred one.
func merge(decl, inf *ir.Type) (*ir.Type, error) {
	if inf == nil {
		return decl, nil
	}
	if decl == nil {
		return inf.Clone(), nil
	}
	if decl.Kind != ir.TensorType || inf.Kind != ir.TensorType {
		if decl.Kind != inf.Kind {
			return nil, fmt.Errorf("inferred %s, declared %s", inf, decl)
		}
		return decl, nil
	}
	t := decl.Clone()
	switch {
	case decl.DType == ir.Undefined:
		t.DType = inf.DType
	case inf.DType != ir.Undefined && inf.DType != decl.DType:
		return nil, fmt.Errorf("inferred element type %s, declared %s (declared %s)", inf.DType, decl.DType, decl)
	}
	switch {
	case !inf.HasShape:
	case !decl.HasShape:
		t.Shape, t.HasShape = cloneShape(inf.Shape), true
	case len(decl.Shape) != len(inf.Shape):
		return nil, fmt.Errorf("inferred rank %d %s, declared rank %d %s", len(inf.Shape), inf.Shape, len(decl.Shape), decl.Shape)
	default:
		for i, d := range decl.Shape {
			x := inf.Shape[i]
			switch {
			case d.Known && x.Known && d.Value != x.Value:
				return nil, fmt.Errorf("inferred %s, declared %s (dim %d)", inf.Shape, decl.Shape, i)
			case d.Known:
			case x.Known:
				t.Shape[i] = x
			case d.Param == "" && x.Param != "":
				t.Shape[i] = x
			}
		}
	}
	return t, nil
}

// preferInferredSyms replaces the declared symbols of a merged type by the inferred ones
// where both are symbols. A declared name on a node output is mostly an exporter's or a
// previous inference's invention ("Addy_dim_0", "unk__42") that nothing else shares; the
// inferred one is derived from the graph inputs, so equal sizes get equal names. Graph
// outputs too: a present key cache declared [Concat_dim_0, 4, Concat_dim_2, 16] is read
// by the attention it came from, which must see batch and "past + sequence" there.
func preferInferredSyms(t, inf *ir.Type) *ir.Type {
	if t == nil || inf == nil || !t.HasShape || !inf.HasShape || len(t.Shape) != len(inf.Shape) {
		return t
	}
	for i, d := range t.Shape {
		if x := inf.Shape[i]; isSym(d) && isSym(x) && d.Param != x.Param {
			t.Shape[i] = x
		}
	}
	return t
}

// ruleKey names an op in the rule table: the op type for the default domain, else
// "domain.op".
func ruleKey(domain, op string) string {
	if domain == "" || domain == "ai.onnx" {
		return op
	}
	return domain + "." + op
}
