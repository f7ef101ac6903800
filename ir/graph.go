// Package ir is qcc's in-memory model: a Model owns a Graph of Nodes connected by Values,
// with use-def chains kept up to date by every mutation. Load and Save convert to and from
// the ONNX protobuf; nothing else in qcc touches the protobuf types.
package ir

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
)

// OpsetID is one entry of a model's opset_import.
type OpsetID struct {
	Domain  string // "" is the default ONNX domain
	Version int64
}

// KV is a metadata_props entry.
type KV struct{ Key, Value string }

// Model is a loaded ONNX model.
type Model struct {
	IRVersion       int64
	Opsets          []OpsetID
	ProducerName    string
	ProducerVersion string
	Domain          string
	ModelVersion    int64
	DocString       string
	Metadata        []KV
	Graph           *Graph

	// Dir is the folder external data locations are relative to.
	Dir string

	rest any // *onnxpb.ModelProto: the fields the IR does not model (functions, training info, ...)
}

// Opset returns the imported version of a domain ("" or "ai.onnx" for the default), 0 if absent.
func (m *Model) Opset(domain string) int64 {
	if domain == "ai.onnx" {
		domain = ""
	}
	for _, o := range m.Opsets {
		d := o.Domain
		if d == "ai.onnx" {
			d = ""
		}
		if d == domain {
			return o.Version
		}
	}
	return 0
}

// SetOpset sets (or adds) a domain's imported version.
func (m *Model) SetOpset(domain string, v int64) {
	for i, o := range m.Opsets {
		if o.Domain == domain || (domain == "" && o.Domain == "ai.onnx") {
			m.Opsets[i].Version = v
			return
		}
	}
	m.Opsets = append(m.Opsets, OpsetID{domain, v})
}

// Graph is a computation graph: the model's main graph or an If/Loop/Scan body.
type Graph struct {
	Name    string
	Inputs  []*Value
	Outputs []*Value
	// Initializers in file order. Each has Const set.
	Initializers []*Value
	// ValueInfo lists values that carried a value_info entry, in file order.
	ValueInfo []*Value

	nodes   []*Node // stable order; removed nodes are nil until compacted
	removed int
	values  map[string]*Value

	// Parent is the enclosing graph of a subgraph, and Owner the node whose attribute holds it.
	Parent *Graph
	Owner  *Node

	names int // counter for fresh names

	rest any // *onnxpb.GraphProto: unmodelled fields (sparse initializers, quantization annotations, ...)
}

// NewGraph returns an empty graph.
func NewGraph(name string) *Graph { return &Graph{Name: name, values: map[string]*Value{}} }

// Value is a named tensor (or other typed value) flowing between nodes.
type Value struct {
	Name string
	Type *Type // nil when unknown

	// Const is the data of an initializer.
	Const *Tensor

	producer *Node
	outIndex int
	uses     []Use
	graph    *Graph

	// sparse marks a sparse initializer, which the IR carries without modelling.
	sparse bool
}

// IsSparseConst reports whether v is a sparse initializer.
func (v *Value) IsSparseConst() bool { return v.sparse }

// Use is one consumption of a value: input Index of Node.
type Use struct {
	Node  *Node
	Index int
}

// Producer returns the node that computes v and which of its outputs v is; nil for graph
// inputs, initializers and outer-scope values.
func (v *Value) Producer() (*Node, int) { return v.producer, v.outIndex }

// Uses returns the consumers of v (nodes in this graph and in nested subgraphs).
func (v *Value) Uses() []Use { return v.uses }

// Graph returns the graph that defines v.
func (v *Value) Graph() *Graph { return v.graph }

// IsConst reports whether v is an initializer.
func (v *Value) IsConst() bool { return v.Const != nil }

// IsGraphOutput reports whether v is an output of its defining graph.
func (v *Value) IsGraphOutput() bool {
	if v.graph == nil {
		return false
	}
	for _, o := range v.graph.Outputs {
		if o == v {
			return true
		}
	}
	return false
}

// BatchDims are the symbolic names of axis 0 of g's inputs of rank 2 or more: the
// batch, as exporters name it.
func (g *Graph) BatchDims() map[string]bool {
	out := map[string]bool{}
	for _, v := range g.Inputs {
		if v.Type != nil && v.Type.HasShape && len(v.Type.Shape) >= 2 && v.Type.Shape[0].Param != "" {
			out[v.Type.Shape[0].Param] = true
		}
	}
	return out
}

// IsGraphInput reports whether v is an input of its defining graph.
func (v *Value) IsGraphInput() bool {
	if v.graph == nil {
		return false
	}
	for _, o := range v.graph.Inputs {
		if o == v {
			return true
		}
	}
	return false
}

func (v *Value) String() string { return v.Name }

// Node is one operator application.
type Node struct {
	Name     string
	OpType   string
	Domain   string
	Overload string
	Attrs    []*Attr
	Metadata []KV
	// DocString is kept for debugging output.
	DocString string

	inputs  []*Value // nil entries are omitted optional inputs
	outputs []*Value // nil entries are omitted optional outputs
	graph   *Graph
	index   int // position in graph.nodes

	rest any // *onnxpb.NodeProto: unmodelled fields (device configurations, ...)
}

// Inputs returns the node's inputs; an omitted optional input is nil.
func (n *Node) Inputs() []*Value { return n.inputs }

// Input returns input i, or nil when absent.
func (n *Node) Input(i int) *Value {
	if i < len(n.inputs) {
		return n.inputs[i]
	}
	return nil
}

// Outputs returns the node's outputs; an omitted optional output is nil.
func (n *Node) Outputs() []*Value { return n.outputs }

// Output returns output i, or nil.
func (n *Node) Output(i int) *Value {
	if i < len(n.outputs) {
		return n.outputs[i]
	}
	return nil
}

// Graph returns the graph n belongs to, nil after removal.
func (n *Node) Graph() *Graph { return n.graph }

// Order is n's place in its graph's node order: of two nodes of one graph, the one with
// the smaller Order comes first in Nodes. Removing nodes keeps the order of the others.
func (n *Node) Order() int { return n.index }

// Attr returns the named attribute or nil.
func (n *Node) Attr(name string) *Attr {
	for _, a := range n.Attrs {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// AttrInt returns an INT attribute or def.
func (n *Node) AttrInt(name string, def int64) int64 {
	if a := n.Attr(name); a != nil && a.Type == AttrInt {
		return a.Int
	}
	return def
}

// AttrFloat returns a FLOAT attribute or def.
func (n *Node) AttrFloat(name string, def float32) float32 {
	if a := n.Attr(name); a != nil && a.Type == AttrFloat {
		return a.Float
	}
	return def
}

// AttrInts returns an INTS attribute; ok is false when absent.
func (n *Node) AttrInts(name string) ([]int64, bool) {
	if a := n.Attr(name); a != nil && a.Type == AttrInts {
		return a.Ints, true
	}
	return nil, false
}

// AttrString returns a STRING attribute or def.
func (n *Node) AttrString(name, def string) string {
	if a := n.Attr(name); a != nil && a.Type == AttrString {
		return string(a.String)
	}
	return def
}

// SetAttr adds or replaces an attribute.
func (n *Node) SetAttr(a *Attr) {
	for i, b := range n.Attrs {
		if b.Name == a.Name {
			n.Attrs[i] = a
			return
		}
	}
	n.Attrs = append(n.Attrs, a)
}

// Meta returns a metadata_props value.
func (n *Node) Meta(key string) (string, bool) {
	for _, kv := range n.Metadata {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// Meta returns a model metadata_props value.
func (m *Model) Meta(key string) string {
	for _, kv := range m.Metadata {
		if kv.Key == key {
			return kv.Value
		}
	}
	return ""
}

// SetMeta sets a model metadata_props value (appended when new, so existing metadata keeps
// its order) and reports whether anything changed.
func (m *Model) SetMeta(key, value string) bool {
	for i, kv := range m.Metadata {
		if kv.Key == key {
			if kv.Value == value {
				return false
			}
			m.Metadata[i].Value = value
			return true
		}
	}
	m.Metadata = append(m.Metadata, KV{Key: key, Value: value})
	return true
}

// SetMeta sets a metadata_props value, keeping keys sorted for stable output.
func (n *Node) SetMeta(key, value string) {
	for i, kv := range n.Metadata {
		if kv.Key == key {
			n.Metadata[i].Value = value
			return
		}
	}
	n.Metadata = append(n.Metadata, KV{key, value})
	sort.SliceStable(n.Metadata, func(i, j int) bool { return n.Metadata[i].Key < n.Metadata[j].Key })
}

// Subgraphs returns the graphs held by the node's attributes.
func (n *Node) Subgraphs() []*Graph {
	var gs []*Graph
	for _, a := range n.Attrs {
		if a.Graph != nil {
			gs = append(gs, a.Graph)
		}
		gs = append(gs, a.Graphs...)
	}
	return gs
}

func (n *Node) String() string {
	name := n.Name
	if name == "" && len(n.outputs) > 0 && n.outputs[0] != nil {
		name = "->" + n.outputs[0].Name
	}
	return fmt.Sprintf("%s(%s)", n.OpType, name)
}

// AttrType is an AttributeProto.AttributeType code.
type AttrType int32

const (
	AttrUndefined     AttrType = 0
	AttrFloat         AttrType = 1
	AttrInt           AttrType = 2
	AttrString        AttrType = 3
	AttrTensor        AttrType = 4
	AttrGraph         AttrType = 5
	AttrSparseTensor  AttrType = 11
	AttrTypeProto     AttrType = 13
	AttrFloats        AttrType = 6
	AttrInts          AttrType = 7
	AttrStrings       AttrType = 8
	AttrTensors       AttrType = 9
	AttrGraphs        AttrType = 10
	AttrSparseTensors AttrType = 12
	AttrTypeProtos    AttrType = 14
)

// Attr is a node attribute. Exactly the field matching Type is meaningful; sparse tensors
// and type protos are carried unmodelled.
type Attr struct {
	Name    string
	Type    AttrType
	Float   float32
	Int     int64
	String  []byte
	Tensor  *Tensor
	Graph   *Graph
	Floats  []float32
	Ints    []int64
	Strings [][]byte
	Tensors []*Tensor
	Graphs  []*Graph
	// RefAttrName refers to an attribute of the enclosing function.
	RefAttrName string
	DocString   string

	rest any // *onnxpb.AttributeProto: unmodelled parts (sparse tensors, type protos)
}

// IntAttr, FloatAttr, IntsAttr, StringAttr and TensorAttr build attributes.
func IntAttr(name string, v int64) *Attr      { return &Attr{Name: name, Type: AttrInt, Int: v} }
func FloatAttr(name string, v float32) *Attr  { return &Attr{Name: name, Type: AttrFloat, Float: v} }
func IntsAttr(name string, v ...int64) *Attr  { return &Attr{Name: name, Type: AttrInts, Ints: v} }
func StringAttr(name, v string) *Attr         { return &Attr{Name: name, Type: AttrString, String: []byte(v)} }
func TensorAttr(name string, t *Tensor) *Attr { return &Attr{Name: name, Type: AttrTensor, Tensor: t} }
func FloatsAttr(name string, v ...float32) *Attr {
	return &Attr{Name: name, Type: AttrFloats, Floats: v}
}

// ---- graph queries ----

// Nodes returns the nodes in their current stable order. The slice is the graph's own:
// callers that mutate while iterating must iterate over a copy (see NodesCopy).
func (g *Graph) Nodes() []*Node {
	g.compact()
	return g.nodes
}

// NodesCopy returns a snapshot of the node list, safe to iterate while mutating.
func (g *Graph) NodesCopy() []*Node { return append([]*Node(nil), g.Nodes()...) }

// NumNodes is the number of live nodes.
func (g *Graph) NumNodes() int { return len(g.nodes) - g.removed }

func (g *Graph) compact() {
	if g.removed == 0 {
		return
	}
	out := g.nodes[:0]
	for _, n := range g.nodes {
		if n != nil {
			n.index = len(out)
			out = append(out, n)
		}
	}
	for i := len(out); i < len(g.nodes); i++ {
		g.nodes[i] = nil
	}
	g.nodes, g.removed = out, 0
}

// Value returns the value defined in g with that name, or nil.
func (g *Graph) Value(name string) *Value { return g.values[name] }

// Lookup resolves a name in g and then in its enclosing graphs.
func (g *Graph) Lookup(name string) *Value {
	for s := g; s != nil; s = s.Parent {
		if v := s.values[name]; v != nil {
			return v
		}
	}
	return nil
}

// ValueNames returns the names of all values defined in g, sorted.
func (g *Graph) ValueNames() []string {
	names := make([]string, 0, len(g.values))
	for n := range g.values {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Initializer returns the constant named name, or nil.
func (g *Graph) Initializer(name string) *Tensor {
	if v := g.values[name]; v != nil {
		return v.Const
	}
	return nil
}

// ---- graph mutation ----

// FreshName returns a name not used in g or its enclosing graphs, derived from base.
func (g *Graph) FreshName(base string) string {
	if base != "" && g.Lookup(base) == nil {
		return base
	}
	if base == "" {
		base = "v"
	}
	for {
		g.names++
		name := base + "_" + strconv.Itoa(g.names)
		if g.Lookup(name) == nil && !g.nameUsedBelow(name) {
			return name
		}
	}
}

// nameUsedBelow guards against shadowing a name that a subgraph defines.
func (g *Graph) nameUsedBelow(name string) bool {
	for _, n := range g.nodes {
		if n == nil {
			continue
		}
		for _, sg := range n.Subgraphs() {
			if sg.values[name] != nil || sg.nameUsedBelow(name) {
				return true
			}
		}
	}
	return false
}

func (g *Graph) define(v *Value) error {
	if v.Name == "" {
		return fmt.Errorf("value with empty name")
	}
	if old := g.values[v.Name]; old != nil && old != v {
		return fmt.Errorf("value %q defined twice", v.Name)
	}
	v.graph = g
	g.values[v.Name] = v
	return nil
}

// NewValue creates a value with a fresh name based on base.
func (g *Graph) NewValue(base string, t *Type) *Value {
	v := &Value{Name: g.FreshName(base), Type: t}
	g.define(v) //nolint: name is fresh
	return v
}

// AddInput appends a graph input.
func (g *Graph) AddInput(name string, t *Type) (*Value, error) {
	v := &Value{Name: name, Type: t}
	if err := g.define(v); err != nil {
		return nil, err
	}
	g.Inputs = append(g.Inputs, v)
	return v, nil
}

// AddInitializer adds a constant value.
func (g *Graph) AddInitializer(name string, t *Tensor) (*Value, error) {
	if t.Name == "" {
		t.Name = name
	}
	v := &Value{Name: name, Const: t, Type: TensorOf(t.DType, dimsOf(t.Dims)...)}
	if err := g.define(v); err != nil {
		return nil, err
	}
	g.Initializers = append(g.Initializers, v)
	return v, nil
}

// NewConst adds an initializer with a fresh name based on base.
func (g *Graph) NewConst(base string, t *Tensor) *Value {
	name := g.FreshName(base)
	t.Name = name
	v, _ := g.AddInitializer(name, t)
	return v
}

func dimsOf(ds []int64) []Dim {
	out := make([]Dim, len(ds))
	for i, d := range ds {
		out[i] = D(d)
	}
	return out
}

// AddNode appends a node computing outputs from inputs. A nil input is an omitted optional
// input. Output values must be new (created with NewValue or named fresh); a nil output is
// an omitted optional output.
func (g *Graph) AddNode(n *Node, inputs []*Value, outputs []*Value) (*Node, error) {
	for _, o := range outputs {
		if o == nil {
			continue
		}
		if o.producer != nil {
			return nil, fmt.Errorf("value %q already has producer %s", o.Name, o.producer)
		}
		if o.graph == nil {
			if err := g.define(o); err != nil {
				return nil, err
			}
		} else if o.graph != g {
			return nil, fmt.Errorf("value %q belongs to another graph", o.Name)
		}
	}
	n.graph = g
	n.index = len(g.nodes)
	g.nodes = append(g.nodes, n)
	n.inputs = make([]*Value, len(inputs))
	for i, in := range inputs {
		n.setInput(i, in)
	}
	n.outputs = append([]*Value(nil), outputs...)
	for i, o := range outputs {
		if o != nil {
			o.producer, o.outIndex = n, i
		}
	}
	return n, nil
}

// Add is AddNode for the common case: op with inputs and nOut fresh outputs named after base.
func (g *Graph) Add(op string, inputs []*Value, nOut int, base string, attrs ...*Attr) *Node {
	outs := make([]*Value, nOut)
	for i := range outs {
		outs[i] = g.NewValue(base, nil)
	}
	n, _ := g.AddNode(&Node{OpType: op, Attrs: attrs}, inputs, outs)
	return n
}

func (n *Node) setInput(i int, v *Value) {
	n.inputs[i] = v
	if v != nil {
		v.uses = append(v.uses, Use{n, i})
	}
}

func (v *Value) removeUse(n *Node, i int) {
	for k, u := range v.uses {
		if u.Node == n && u.Index == i {
			v.uses = append(v.uses[:k], v.uses[k+1:]...)
			return
		}
	}
}

// SetInput replaces input i (growing the input list when needed).
func (n *Node) SetInput(i int, v *Value) {
	for len(n.inputs) <= i {
		n.inputs = append(n.inputs, nil)
	}
	if old := n.inputs[i]; old != nil {
		old.removeUse(n, i)
	}
	n.setInput(i, v)
}

// SetInputs replaces all inputs.
func (n *Node) SetInputs(vs []*Value) {
	for i, old := range n.inputs {
		if old != nil {
			old.removeUse(n, i)
		}
	}
	n.inputs = make([]*Value, len(vs))
	for i, v := range vs {
		n.setInput(i, v)
	}
}

// ReplaceAllUsesWith redirects every use of old to v. Graph output names are part of the
// model's interface, so when old is a graph output the output keeps old's name: v is
// renamed to it when v is an ordinary intermediate value, otherwise an Identity node
// carries v to an output of that name.
func (old *Value) ReplaceAllUsesWith(v *Value) {
	if old == v {
		return
	}
	for _, u := range append([]Use(nil), old.uses...) {
		u.Node.inputs[u.Index] = v
		v.uses = append(v.uses, u)
	}
	old.uses = nil
	g := old.graph
	if g == nil || !old.IsGraphOutput() {
		return
	}
	name := old.Name
	old.Rename(g.FreshName(name + "_replaced"))
	target := v
	if v.graph != g || v.IsGraphInput() || v.IsGraphOutput() || v.IsConst() {
		target = &Value{Name: name, Type: v.Type.Clone()}
		g.AddNode(&Node{OpType: "Identity"}, []*Value{v}, []*Value{target})
	} else {
		v.Rename(name)
	}
	for i, o := range g.Outputs {
		if o == old {
			g.Outputs[i] = target
		}
	}
	if old.producer == nil && len(old.uses) == 0 {
		delete(g.values, old.Name)
		old.graph = nil
	}
}

// Rename changes a value's name; the new name must be free in its graph.
func (v *Value) Rename(name string) error {
	g := v.graph
	if g == nil {
		v.Name = name
		return nil
	}
	if g.Lookup(name) != nil {
		return fmt.Errorf("rename %q: name %q is taken", v.Name, name)
	}
	delete(g.values, v.Name)
	v.Name = name
	g.values[name] = v
	if v.Const != nil {
		v.Const.Name = name
	}
	return nil
}

// RemoveNode detaches n from the graph and drops its uses. Its outputs stay defined
// (with no producer) only if still used; otherwise they are deleted.
func (g *Graph) RemoveNode(n *Node) {
	if n.graph != g {
		return
	}
	for i, in := range n.inputs {
		if in != nil {
			in.removeUse(n, i)
		}
	}
	for _, o := range n.outputs {
		if o != nil {
			o.producer = nil
			if len(o.uses) == 0 && !o.IsGraphOutput() {
				delete(g.values, o.Name)
				o.graph = nil
			}
		}
	}
	g.nodes[n.index] = nil
	g.removed++
	n.graph = nil
}

// RemoveValue deletes an unused value that has no producer (an initializer or input).
func (g *Graph) RemoveValue(v *Value) error { return g.RemoveValues([]*Value{v}) }

// RemoveValues removes several unused values that have no producer, each of the graph's
// lists filtered once (removing them one by one copies a list per value). Nothing is
// removed when one of them is still in use.
func (g *Graph) RemoveValues(vs []*Value) error {
	gone := make(map[*Value]bool, len(vs))
	for _, v := range vs {
		if len(v.uses) > 0 || v.producer != nil || v.IsGraphOutput() {
			return fmt.Errorf("value %q is still in use", v.Name)
		}
		gone[v] = true
	}
	for _, v := range vs {
		delete(g.values, v.Name)
		v.graph = nil
	}
	// A list holding none of them is kept as it is; else a new one is made, so that a
	// caller ranging over the old one is not disturbed.
	drop := func(l []*Value) []*Value {
		if !slices.ContainsFunc(l, func(v *Value) bool { return gone[v] }) {
			return l
		}
		return slices.DeleteFunc(slices.Clone(l), func(v *Value) bool { return gone[v] })
	}
	g.Initializers, g.Inputs, g.ValueInfo = drop(g.Initializers), drop(g.Inputs), drop(g.ValueInfo)
	return nil
}

// Walk calls f for every graph reachable from g (g first, then subgraphs in node order).
func (g *Graph) Walk(f func(*Graph) error) error {
	if err := f(g); err != nil {
		return err
	}
	for _, n := range g.Nodes() {
		for _, sg := range n.Subgraphs() {
			if err := sg.Walk(f); err != nil {
				return err
			}
		}
	}
	return nil
}
