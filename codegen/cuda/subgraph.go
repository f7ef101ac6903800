package cuda

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/patterns"
)

// The check data's reference is the model's own subgraph for the block: the nodes
// between the values bound to the kernel's inputs and those bound to its outputs,
// with the model's constants and attributes, run by ONNX Runtime on random inputs
// of the values' real types. The kernel's inputs are those same arrays as the
// caller passes them (the model value's buffer, converted to the parameter's
// element type). So a binding to the wrong value, layout or semantics shows up as
// a disagreement, not as a reference that shares the kernel's assumptions.

// reference is one instance's check data.
type reference struct {
	Ops     []string                  // the subgraph's operators, in graph order
	Inputs  map[string]*ndarray.Array // the kernel's inputs by parameter, in its element types
	Outputs map[string]*ndarray.Array // what ONNX Runtime computed, by parameter
}

// subgraph is the extracted block: a model and its feeds.
type subgraph struct {
	model []byte
	ops   []string
	feeds map[string]*ndarray.Array // by model value name, in the model's types
	outs  map[string]string         // output parameter -> model value name
	// widened: the model's bfloat16 values are float in this subgraph (ONNX
	// Runtime's CPU provider lacks bfloat16 kernels for most operators): its
	// inputs and constants hold the same values, and its outputs are rounded
	// back to bfloat16.
	widened bool
}

// widen is the type a subgraph gives a value of dt: float for bfloat16 when
// widened.
func widen(dt ir.DataType, widened bool) ir.DataType {
	if widened && dt == ir.BFloat16 {
		return ir.Float
	}
	return dt
}

// widenConst is c as a widened subgraph holds it: a bfloat16 constant as float
// (exactly).
func widenConst(c *ir.Tensor, widened bool) (*ir.Tensor, error) {
	if !widened || c.DType != ir.BFloat16 {
		return c.Clone(), nil
	}
	vals, err := c.Float64s()
	if err != nil {
		return nil, err
	}
	v := make([]float32, len(vals))
	for i, x := range vals {
		v[i] = float32(x)
	}
	return ir.FloatTensor(c.Dims, v), nil
}

// feedArray is a feed as a widened subgraph takes it.
func feedArray(a *ndarray.Array, widened bool) *ndarray.Array {
	if !widened || a.DType != ndarray.BFloat16 {
		return a
	}
	vals := a.Float64s()
	v := make([]float32, len(vals))
	for i, x := range vals {
		v[i] = float32(x)
	}
	return ndarray.FromFloat32(a.Shape, v)
}

// leafGen is how the check data draws a non-constant bound input.
type leafGen struct {
	shape []int64
	gen   generator
}

// leaves are the subgraph's inputs: the bound input values (for a packed
// attention, the GEMM's X and constants instead of q, k, v).
func (in *instance) leaves() (map[*ir.Value]leafGen, error) {
	out := map[*ir.Value]leafGen{}
	for _, t := range in.Tensors {
		if t.Out {
			continue
		}
		if in.gemm != nil && (t.Param == "q" || t.Param == "k" || t.Param == "v") {
			continue
		}
		v := in.bound[t.Param]
		if v == nil {
			return nil, fmt.Errorf("parameter %s is bound to no model value", t.Param)
		}
		if _, ok := out[v]; !ok {
			out[v] = leafGen{t.Shape, t.gen}
		}
	}
	if g := in.gemm; g != nil {
		shape, ok := in.sz.shape(g.x)
		if !ok {
			return nil, fmt.Errorf("input %s has no shape", g.x.Name)
		}
		out[g.x] = leafGen{shape, uniform(in.ID+".x", -2, 2)}
		out[g.w] = leafGen{}
		if g.b != nil {
			out[g.b] = leafGen{}
		}
	}
	return out, nil
}

// shapeTwin is, for a Shape node whose input is no leaf, a leaf whose shape is
// provably the same (ir.SameShape): the node reads only the shape, so the subgraph
// reads it off the leaf. A block kept in float inside a half model reads its inputs
// through Casts while the shape arithmetic of its operator (GroupQueryAttention's
// sequence lengths) reads the half values, which no parameter binds.
func (in *instance) shapeTwin(n *ir.Node, leaves map[*ir.Value]leafGen) *ir.Value {
	x := n.Input(0)
	if n.OpType != "Shape" || n.Domain != "" || x == nil || x.Type == nil || !x.Type.HasShape {
		return nil
	}
	if _, ok := leaves[x]; ok {
		return nil
	}
	for _, t := range in.Tensors { // in the tensors' order: the same twin every time
		if v := in.bound[t.Param]; !t.Out && v != nil && v.Type != nil && v.Type.HasShape && ir.SameShape(v.Type.Shape, x.Type.Shape) {
			if _, ok := leaves[v]; ok {
				return v
			}
		}
	}
	return nil
}

// extract builds the block's subgraph of m; widened, with its bfloat16 values as
// float (see subgraph.widened).
func (in *instance) extract(m *ir.Model, widened bool) (*subgraph, error) {
	leaves, err := in.leaves()
	if err != nil {
		return nil, err
	}
	home, err := in.home()
	if err != nil {
		return nil, err
	}
	// Walk back from the outputs to the leaves and constants. A block in a body stops
	// at the values of the enclosing graphs too: their initializers and Constant nodes
	// are the subgraph's constants, their activations its inputs (see outerLeaves).
	need := map[*ir.Node]bool{}
	consts := map[*ir.Value]*ir.Tensor{}
	outer := map[*ir.Value]bool{}
	shapeOf := map[*ir.Node]*ir.Value{} // a Shape node's input, read off a leaf of the same shape
	var walk func(v *ir.Value) error
	walk = func(v *ir.Value) error {
		if _, ok := leaves[v]; ok {
			return nil
		}
		if v.Const != nil {
			consts[v] = v.Const
			return nil
		}
		if v.Graph() != home {
			if c := patterns.ConstOf(v); c != nil {
				consts[v] = c
			} else {
				outer[v] = true
			}
			return nil
		}
		n, _ := v.Producer()
		if n == nil {
			return fmt.Errorf("the block reads %s, which no kernel parameter binds", sanitize(v.Name))
		}
		if need[n] {
			return nil
		}
		need[n] = true
		if l := in.shapeTwin(n, leaves); l != nil {
			shapeOf[n] = l
			return nil
		}
		for _, x := range n.Inputs() {
			if x != nil {
				if err := walk(x); err != nil {
					return err
				}
			}
		}
		return nil
	}
	outs := map[string]string{}
	for _, t := range in.Tensors {
		if !t.Out {
			continue
		}
		v := in.bound[t.Param]
		if v == nil {
			return nil, fmt.Errorf("output %s is bound to no model value", t.Param)
		}
		if err := walk(v); err != nil {
			return nil, err
		}
		outs[t.Param] = v.Name
	}
	g := ir.NewGraph("qcc_block_" + in.ID)
	vals := map[*ir.Value]*ir.Value{}
	sub := &subgraph{feeds: map[string]*ndarray.Array{}, outs: outs, widened: widened}
	// Leaves and constants in a fixed order: the tensors' order, then the GEMM's.
	var order []*ir.Value
	for _, t := range in.Tensors {
		if v := in.bound[t.Param]; v != nil && !t.Out {
			order = append(order, v)
		}
	}
	if in.gemm != nil {
		order = append(order, in.gemm.x, in.gemm.w, in.gemm.b)
	}
	if len(outer) > 0 {
		extra, err := in.outerLeaves(outer)
		if err != nil {
			return nil, err
		}
		for _, v := range sortedValues(outer) {
			leaves[v] = extra[v]
			order = append(order, v)
		}
	}
	// A block of constants only (a weight's DequantizeLinear) is fed its first
	// constant: ONNX Runtime runs no model without inputs.
	feedConst := true
	for _, v := range order {
		if v != nil && patterns.ConstOf(v) == nil {
			feedConst = false
		}
	}
	for _, v := range order {
		if v == nil || vals[v] != nil {
			continue
		}
		lg := leaves[v]
		if c := patterns.ConstOf(v); c != nil && feedConst {
			feedConst = false
			a, err := tensorArray(c)
			if err != nil {
				return nil, err
			}
			if a.DType != ndType(c.DType) {
				return nil, fmt.Errorf("constant %s of %s cannot be fed", v.Name, c.DType)
			}
			nv, err := g.AddInput(v.Name, ir.TensorOf(widen(c.DType, widened), dimsOf(c.Dims)...))
			if err != nil {
				return nil, err
			}
			vals[v] = nv
			sub.feeds[v.Name] = a
			continue
		}
		if c := patterns.ConstOf(v); c != nil {
			wc, err := widenConst(c, widened)
			if err != nil {
				return nil, err
			}
			nv, err := g.AddInitializer(v.Name, wc)
			if err != nil {
				return nil, err
			}
			vals[v] = nv
			continue
		}
		if v.Type == nil {
			return nil, fmt.Errorf("input %s has no type", v.Name)
		}
		nv, err := g.AddInput(v.Name, ir.TensorOf(widen(v.Type.DType, widened), dimsOf(lg.shape)...))
		if err != nil {
			return nil, err
		}
		vals[v] = nv
		a, err := drawArray(v.Type.DType, lg.shape, lg.gen)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", v.Name, err)
		}
		sub.feeds[v.Name] = a
	}
	for _, v := range sortedValues(consts) { // the block's own constants
		if vals[v] == nil {
			wc, err := widenConst(consts[v], widened)
			if err != nil {
				return nil, err
			}
			nv, err := g.AddInitializer(v.Name, wc)
			if err != nil {
				return nil, err
			}
			vals[v] = nv
		}
	}
	// Nodes in the model's order (which is topological).
	for _, n := range home.Nodes() {
		if !need[n] {
			continue
		}
		x, l := n.Input(0), shapeOf[n]
		if l != nil && vals[x] == nil {
			vals[x] = vals[l] // x's producer is not in the subgraph: only Shape nodes read it
		}
		if err := sub.copyNode(g, n, vals); err != nil {
			return nil, err
		}
	}
	for _, t := range in.Tensors {
		if !t.Out {
			continue
		}
		v := in.bound[t.Param]
		nv := vals[v]
		if nv == nil {
			return nil, fmt.Errorf("output %s is an input of the block", v.Name)
		}
		dt := ir.Float
		if v.Type != nil {
			dt = v.Type.DType
		}
		nv.Type = ir.TensorOf(widen(dt, widened), dimsOf(t.Shape)...)
		if !containsValue(g.Outputs, nv) {
			g.Outputs = append(g.Outputs, nv)
		}
	}
	mm := &ir.Model{IRVersion: max(m.IRVersion, 8), Opsets: append([]ir.OpsetID{}, m.Opsets...), ProducerName: "qcc", Graph: g}
	if err := mm.Verify(); err != nil {
		return nil, err
	}
	b, err := ir.Marshal(mm)
	if err != nil {
		return nil, err
	}
	sub.model = b
	return sub, nil
}

// copyNode adds n to g, reading and defining the values vals maps to g's, and
// lists its operator.
func (sub *subgraph) copyNode(g *ir.Graph, n *ir.Node, vals map[*ir.Value]*ir.Value) error {
	ins := make([]*ir.Value, len(n.Inputs()))
	for i, x := range n.Inputs() {
		if x != nil {
			if ins[i] = vals[x]; ins[i] == nil {
				return fmt.Errorf("node %s reads %s before it is computed", sanitize(n.Name), sanitize(x.Name))
			}
		}
	}
	outs := make([]*ir.Value, len(n.Outputs()))
	for i, o := range n.Outputs() {
		if o != nil {
			outs[i] = &ir.Value{Name: o.Name}
			vals[o] = outs[i]
		}
	}
	attrs := n.Attrs
	if sub.widened && n.OpType == "Cast" && (n.Domain == "" || n.Domain == "ai.onnx") && n.AttrInt("to", 0) == int64(ir.BFloat16) {
		// A cast to bfloat16 rounds and then widens back to float.
		attrs = nil
		for _, a := range n.Attrs {
			if a.Name == "to" {
				cp := *a
				cp.Int = int64(ir.Float)
				a = &cp
			}
			attrs = append(attrs, a)
		}
	}
	if _, err := g.AddNode(&ir.Node{Name: n.Name, OpType: n.OpType, Domain: n.Domain, Attrs: attrs}, ins, outs); err != nil {
		return err
	}
	op := n.OpType
	if n.Domain != "" && n.Domain != "ai.onnx" {
		op = n.Domain + "." + op
	}
	sub.ops = append(sub.ops, op)
	return nil
}

// home is the graph that computes the instance's outputs: the main graph, or the
// body that holds the block.
func (in *instance) home() (*ir.Graph, error) {
	var first *ir.Value
	for _, t := range in.Tensors {
		v := in.bound[t.Param]
		switch {
		case !t.Out || v == nil:
		case first == nil:
			first = v
		case v.Graph() != first.Graph():
			return nil, fmt.Errorf("outputs %s and %s are computed in different graphs", sanitize(first.Name), sanitize(v.Name))
		}
	}
	if first == nil || first.Graph() == nil {
		return nil, fmt.Errorf("no output is bound to a value of the model")
	}
	return first.Graph(), nil
}

// outerLeaves draws the activations of enclosing graphs that a body's block reads
// besides its bound inputs (a shape or a flag computed before the If): float
// values like the activations, integers and booleans as 0 or 1, which index,
// mask and count validly.
func (in *instance) outerLeaves(outer map[*ir.Value]bool) (map[*ir.Value]leafGen, error) {
	out := map[*ir.Value]leafGen{}
	for v := range outer {
		shape, ok := in.sz.shape(v)
		if !ok {
			return nil, fmt.Errorf("the block reads %s of an enclosing graph, which has no shape", sanitize(v.Name))
		}
		seed := in.ID + "." + v.Name
		gen := ints(seed, 2)
		if isFloat(v.Type.DType) {
			gen = uniform(seed, -2, 2)
		}
		out[v] = leafGen{shape, gen}
	}
	return out, nil
}

// sortedValues are the keys of a map by value, by name.
func sortedValues[T any](m map[*ir.Value]T) []*ir.Value {
	vs := make([]*ir.Value, 0, len(m))
	for v := range m {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i].Name < vs[j].Name })
	return vs
}

func containsValue(vs []*ir.Value, v *ir.Value) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

// drawArray makes an array of a model value's type from a generator.
func drawArray(dt ir.DataType, shape []int64, gen generator) (*ndarray.Array, error) {
	if gen == nil {
		return nil, fmt.Errorf("no generator")
	}
	n := prod(shape)
	vals := gen(n)
	switch dt {
	case ir.Float:
		v := make([]float32, n)
		for i, x := range vals {
			v[i] = float32(x)
		}
		return ndarray.FromFloat32(shape, v), nil
	case ir.Float16:
		// A model typed in half (the precision pass's): its values rounded to half,
		// which the kernel's float parameters then hold exactly.
		v := make([]float32, n)
		for i, x := range vals {
			v[i] = float32(x)
		}
		return ndarray.FromFloat16(shape, v), nil
	case ir.BFloat16:
		a := ndarray.New(ndarray.BFloat16, shape)
		for i, x := range vals {
			binary.LittleEndian.PutUint16(a.Data[2*i:], ir.Float32ToBFloat16(float32(x)))
		}
		return a, nil
	case ir.Int64:
		v := make([]int64, n)
		for i, x := range vals {
			v[i] = int64(x)
		}
		return ndarray.FromInt64(shape, v), nil
	case ir.Int32:
		v := make([]int32, n)
		for i, x := range vals {
			v[i] = int32(x)
		}
		return ndarray.FromInt32(shape, v), nil
	case ir.Bool:
		v := make([]bool, n)
		for i, x := range vals {
			v[i] = x > 0
		}
		return ndarray.FromBool(shape, v), nil
	case ir.Int8:
		a := ndarray.New(ndarray.Int8, shape)
		for i, x := range vals {
			a.Data[i] = byte(int8(x - 128)) // ints(256) are [0, 256)
		}
		return a, nil
	}
	return nil, fmt.Errorf("no check data for %s values", dt)
}

// toKernel converts a model array to a kernel parameter's element type: what the
// caller does when the types differ (an int64 or bool mask passed as int32).
func toKernel(a *ndarray.Array, dt ir.DataType, shape []int64) (*ndarray.Array, error) {
	if prod(a.Shape) != prod(shape) {
		return nil, fmt.Errorf("%v elements, the kernel reads %v", a.Shape, shape)
	}
	if a.DType == ndType(dt) {
		c := a.Clone()
		c.Shape = append([]int64{}, shape...)
		return c, nil
	}
	vals := a.Float64s()
	switch dt {
	case ir.Int32:
		v := make([]int32, len(vals))
		for i, x := range vals {
			v[i] = int32(x)
		}
		return ndarray.FromInt32(shape, v), nil
	case ir.Float:
		v := make([]float32, len(vals))
		for i, x := range vals {
			v[i] = float32(x)
		}
		return ndarray.FromFloat32(shape, v), nil
	}
	return nil, fmt.Errorf("cannot pass %s as %s", a.DType, dt)
}

// tensorArray is a constant's data as an array.
func tensorArray(c *ir.Tensor) (*ndarray.Array, error) {
	vals, err := c.Float64s()
	if err != nil {
		return nil, err
	}
	switch c.DType {
	case ir.Float16, ir.BFloat16:
		v := make([]float64, len(vals))
		copy(v, vals)
		return drawArray(c.DType, c.Dims, func(int64) []float64 { return v })
	case ir.Float, ir.Double:
		v := make([]float32, len(vals))
		for i, x := range vals {
			v[i] = float32(x)
		}
		return ndarray.FromFloat32(c.Dims, v), nil
	case ir.Int8:
		a := ndarray.New(ndarray.Int8, c.Dims)
		for i, x := range vals {
			a.Data[i] = byte(int8(x))
		}
		return a, nil
	}
	v := make([]int64, len(vals))
	for i, x := range vals {
		v[i] = int64(x)
	}
	return ndarray.FromInt64(c.Dims, v), nil
}

// qkvGemm computes X W + b in float64, rounded to float32 (the kernel's input is
// the GEMM's float output), and returns its three column blocks.
func qkvGemm(x *ndarray.Array, w, b *ir.Tensor, hidden int64) ([3][]float32, error) {
	var out [3][]float32
	wv, err := w.Float64s()
	if err != nil {
		return out, err
	}
	var bv []float64
	if b != nil {
		if bv, err = b.Float64s(); err != nil {
			return out, err
		}
	}
	xv := x.Float64s()
	in := w.Dims[0]
	cols := 3 * hidden
	rows := int64(len(xv)) / in
	for p := range out {
		out[p] = make([]float32, rows*hidden)
	}
	for r := int64(0); r < rows; r++ {
		for c := int64(0); c < cols; c++ {
			s := 0.0
			if bv != nil {
				s = bv[c]
			}
			for e := int64(0); e < in; e++ {
				s += xv[r*in+e] * wv[e*cols+c]
			}
			out[c/hidden][r*hidden+c%hidden] = float32(s)
		}
	}
	return out, nil
}

// reference extracts the instance's subgraph from m, runs it in ONNX Runtime and
// returns the kernel's inputs and the expected outputs.
func (in *instance) reference(m *ir.Model) (*reference, error) {
	sub, got, err := in.runSubgraph(m, false)
	if err != nil && in.Elem == elemBF16 {
		// ONNX Runtime's CPU provider has few bfloat16 kernels: the same subgraph
		// on the same values in float, its outputs rounded to bfloat16.
		var werr error
		if sub, got, werr = in.runSubgraph(m, true); werr == nil {
			err = nil
		}
	}
	if err != nil {
		return nil, err
	}
	ref := &reference{Ops: sub.ops, Inputs: map[string]*ndarray.Array{}, Outputs: map[string]*ndarray.Array{}}
	if sub.widened {
		ref.Ops = append(ref.Ops, "(bfloat16 widened to float)")
	}
	var qkv [3][]float32
	if g := in.gemm; g != nil {
		if qkv, err = qkvGemm(sub.feeds[g.x.Name], patterns.ConstOf(g.w), patterns.ConstOf(g.b), g.hidden); err != nil {
			return nil, err
		}
	}
	for _, t := range in.Tensors {
		var a *ndarray.Array
		switch {
		case t.Out:
			a = got[sub.outs[t.Param]]
			if a == nil {
				return nil, fmt.Errorf("onnxruntime returned no %s", sub.outs[t.Param])
			}
			if v := in.bound[t.Param]; sub.widened && v.Type != nil && v.Type.DType == ir.BFloat16 {
				if a, err = drawArray(ir.BFloat16, a.Shape, func(int64) []float64 { return a.Float64s() }); err != nil {
					return nil, err
				}
			}
		case in.gemm != nil && (t.Param == "q" || t.Param == "k" || t.Param == "v"):
			a = ndarray.FromFloat32(t.Shape, qkv[strings.Index("qkv", t.Param)])
		default:
			v := in.bound[t.Param]
			if c := patterns.ConstOf(v); c != nil {
				if a, err = tensorArray(c); err != nil {
					return nil, err
				}
			} else {
				a = sub.feeds[v.Name]
			}
		}
		k, err := toKernel(a, t.DType, t.Shape)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.Param, err)
		}
		if t.Out {
			ref.Outputs[t.Param] = k
		} else {
			ref.Inputs[t.Param] = k
		}
	}
	return ref, nil
}

// runSubgraph extracts the instance's subgraph (widened or not) and runs it in
// ONNX Runtime.
func (in *instance) runSubgraph(m *ir.Model, widened bool) (*subgraph, map[string]*ndarray.Array, error) {
	sub, err := in.extract(m, widened)
	if err != nil {
		return nil, nil, err
	}
	s, err := ort.NewSessionFromBytes(sub.model, ort.Options{OptLevel: ort.OptDisabled, IntraOpThreads: 1})
	if err != nil {
		return nil, nil, fmt.Errorf("the block's subgraph (%s): %w", strings.Join(sub.ops, ", "), err)
	}
	defer s.Close()
	feeds := map[string]*ndarray.Array{}
	for name, a := range sub.feeds {
		feeds[name] = feedArray(a, widened)
	}
	got, err := s.Run(feeds)
	if err != nil {
		return nil, nil, fmt.Errorf("the block's subgraph (%s): %w", strings.Join(sub.ops, ", "), err)
	}
	return sub, got, nil
}

func dimsOf(ds []int64) []ir.Dim {
	out := make([]ir.Dim, len(ds))
	for i, d := range ds {
		out[i] = ir.D(d)
	}
	return out
}
