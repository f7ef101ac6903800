package ir

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/qcc-dev/qcc/ir/onnxpb"
)

// maxInlineRounds bounds nested function calls: a function that calls itself, directly
// or not, never runs out of calls.
const maxInlineRounds = 32

// FunctionCalls counts the nodes, subgraphs included, that call one of the model's local
// functions (FunctionProto): exporters wrap whole modules in them (torch's
// export_modules_as_functions, its dynamo exporter), which hides the blocks inside.
func (m *Model) FunctionCalls() int {
	funcs := m.functions()
	if len(funcs) == 0 {
		return 0
	}
	k := 0
	m.Graph.Walk(func(g *Graph) error {
		for _, n := range g.Nodes() {
			if funcs[funcKey(n.Domain, n.OpType, n.Overload)] != nil {
				k++
			}
		}
		return nil
	})
	return k
}

func (m *Model) functions() map[string]*onnxpb.FunctionProto {
	ex, _ := m.rest.(*modelExtra)
	if ex == nil || len(ex.proto.Functions) == 0 {
		return nil
	}
	out := map[string]*onnxpb.FunctionProto{}
	for _, f := range ex.proto.Functions {
		out[funcKey(f.GetDomain(), f.GetName(), f.GetOverload())] = f
	}
	return out
}

// FunctionOpsets is, for each model-local function whose body imports domain, that
// version, by the function's name (domain-qualified when it has one). A raise of the
// model's import must reach these bodies too: a body at another version of the default
// domain than the model's leaves the model invalid.
func (m *Model) FunctionOpsets(domain string) map[string]int64 {
	if domain == "ai.onnx" {
		domain = ""
	}
	out := map[string]int64{}
	for _, f := range m.functions() {
		for _, o := range f.OpsetImport {
			d := o.GetDomain()
			if d == "ai.onnx" {
				d = ""
			}
			if d != domain {
				continue
			}
			name := f.GetName()
			if f.GetDomain() != "" {
				name = f.GetDomain() + "." + name
			}
			out[name] = o.GetVersion()
		}
	}
	return out
}

func funcKey(domain, name, overload string) string { return domain + "\x00" + name + "\x00" + overload }

// InlineFunctions replaces every call of a model-local function by the function's body,
// its values renamed under the call's name and its attribute references bound to the
// call's attributes (or the function's defaults), until no call is left; the functions
// are then dropped. The model computes the same. It returns the calls inlined, and an
// error, leaving m as it was, when a body imports another version of a domain than the
// model or the calls do not end.
func (m *Model) InlineFunctions() (int, error) {
	funcs := m.functions()
	if len(funcs) == 0 || m.FunctionCalls() == 0 {
		return 0, nil
	}
	b, err := Marshal(m)
	if err != nil {
		return 0, err
	}
	mp := &onnxpb.ModelProto{}
	if err := proto.Unmarshal(b, mp); err != nil {
		return 0, err
	}
	in := &inliner{funcs: funcs, names: map[string]bool{}, opsets: map[string]int64{}}
	for _, o := range mp.OpsetImport {
		in.opsets[o.GetDomain()] = o.GetVersion()
	}
	in.collect(mp.Graph)
	total := 0
	for round := 0; ; round++ {
		if round == maxInlineRounds {
			return 0, fmt.Errorf("inlining functions: calls still left after %d rounds (a function calls itself)", maxInlineRounds)
		}
		k, err := in.graph(mp.Graph)
		if err != nil {
			return 0, err
		}
		if k == 0 {
			break
		}
		total += k
	}
	for _, d := range slices.Sorted(maps.Keys(in.added)) {
		mp.OpsetImport = append(mp.OpsetImport, &onnxpb.OperatorSetIdProto{Domain: proto.String(d), Version: proto.Int64(in.added[d])})
	}
	mp.Functions = nil
	m2, err := fromProto(mp, m.Dir, nil)
	if err != nil {
		return 0, fmt.Errorf("inlining functions: %w", err)
	}
	*m = *m2
	return total, nil
}

type inliner struct {
	funcs  map[string]*onnxpb.FunctionProto
	names  map[string]bool // every value name in the model, to keep new ones unique
	opsets map[string]int64
	added  map[string]int64
	calls  int
}

// collect records the value names of a graph and its subgraphs.
func (in *inliner) collect(g *onnxpb.GraphProto) {
	for _, v := range g.Input {
		in.names[v.GetName()] = true
	}
	for _, t := range g.Initializer {
		in.names[t.GetName()] = true
	}
	for _, n := range g.Node {
		for _, o := range n.Output {
			in.names[o] = true
		}
		for _, a := range n.Attribute {
			if a.G != nil {
				in.collect(a.G)
			}
			for _, sg := range a.Graphs {
				in.collect(sg)
			}
		}
	}
}

// graph inlines the calls of one round in g and its subgraphs.
func (in *inliner) graph(g *onnxpb.GraphProto) (int, error) {
	k := 0
	var out []*onnxpb.NodeProto
	for _, n := range g.Node {
		for _, a := range n.Attribute {
			for _, sg := range append([]*onnxpb.GraphProto{a.G}, a.Graphs...) {
				if sg == nil {
					continue
				}
				j, err := in.graph(sg)
				if err != nil {
					return 0, err
				}
				k += j
			}
		}
		f := in.funcs[funcKey(n.GetDomain(), n.GetOpType(), n.GetOverload())]
		if f == nil {
			out = append(out, n)
			continue
		}
		body, err := in.expand(n, f)
		if err != nil {
			return 0, err
		}
		out = append(out, body...)
		k++
	}
	g.Node = out
	return k, nil
}

// expand is the body of f for the call n.
func (in *inliner) expand(n *onnxpb.NodeProto, f *onnxpb.FunctionProto) ([]*onnxpb.NodeProto, error) {
	for _, o := range f.OpsetImport {
		d, v := o.GetDomain(), o.GetVersion()
		if d == "ai.onnx" {
			d = ""
		}
		if have, ok := in.opsets[d]; ok && have != v && d == "" {
			return nil, fmt.Errorf("inlining function %s: its body imports opset %d of the default domain, the model %d", f.GetName(), v, have)
		} else if !ok {
			in.opsets[d] = v
			if in.added == nil {
				in.added = map[string]int64{}
			}
			in.added[d] = v
		}
	}
	in.calls++
	base := n.GetName()
	if base == "" {
		base = f.GetName()
	}
	prefix := fmt.Sprintf("%s/%s_%d/", base, f.GetName(), in.calls)
	rename := map[string]string{}
	for i, name := range f.Input {
		if i < len(n.Input) {
			rename[name] = n.Input[i]
		} else {
			rename[name] = "" // an optional input the call leaves out
		}
	}
	for i, name := range f.Output {
		if i < len(n.Output) {
			rename[name] = n.Output[i]
		} else {
			rename[name] = in.fresh(prefix + name) // an output the call does not take
		}
	}
	attrs := map[string]*onnxpb.AttributeProto{}
	for _, a := range f.AttributeProto { // defaults (IR 9)
		attrs[a.GetName()] = a
	}
	for _, a := range n.Attribute {
		attrs[a.GetName()] = a
	}
	var body []*onnxpb.NodeProto
	for _, fn := range f.Node {
		c := proto.Clone(fn).(*onnxpb.NodeProto)
		if c.GetName() != "" {
			c.Name = proto.String(prefix + c.GetName())
		}
		if err := in.bind(c, attrs, rename, prefix); err != nil {
			return nil, fmt.Errorf("inlining function %s: %w", f.GetName(), err)
		}
		body = append(body, c)
	}
	return body, nil
}

// fresh is name, or name with a suffix, unused in the model; it is then used.
func (in *inliner) fresh(name string) string {
	s := name
	for i := 1; in.names[s]; i++ {
		s = fmt.Sprintf("%s_%d", name, i)
	}
	in.names[s] = true
	return s
}

// bind renames the values of a body node (subgraphs included) and resolves its attribute
// references.
func (in *inliner) bind(c *onnxpb.NodeProto, attrs map[string]*onnxpb.AttributeProto, rename map[string]string, prefix string) error {
	name := func(s string) string {
		if s == "" {
			return ""
		}
		if r, ok := rename[s]; ok {
			return r
		}
		r := in.fresh(prefix + s)
		rename[s] = r
		return r
	}
	for i, s := range c.Input {
		c.Input[i] = name(s)
	}
	for i, s := range c.Output {
		c.Output[i] = name(s)
	}
	var kept []*onnxpb.AttributeProto
	for _, a := range c.Attribute {
		if ref := a.GetRefAttrName(); ref != "" {
			v := attrs[ref]
			if v == nil {
				continue // neither the call nor a default sets it: the operator's default
			}
			b := proto.Clone(v).(*onnxpb.AttributeProto)
			b.Name, b.RefAttrName = a.Name, nil
			a = b
		}
		for _, g := range append([]*onnxpb.GraphProto{a.G}, a.Graphs...) {
			if g == nil {
				continue
			}
			if err := in.bindGraph(g, attrs, rename, prefix, name); err != nil {
				return err
			}
		}
		kept = append(kept, a)
	}
	c.Attribute = kept
	return nil
}

func (in *inliner) bindGraph(g *onnxpb.GraphProto, attrs map[string]*onnxpb.AttributeProto, rename map[string]string, prefix string, name func(string) string) error {
	for _, v := range g.Input {
		v.Name = proto.String(name(v.GetName()))
	}
	for _, v := range g.Output {
		v.Name = proto.String(name(v.GetName()))
	}
	for _, v := range g.ValueInfo {
		v.Name = proto.String(name(v.GetName()))
	}
	for _, t := range g.Initializer {
		t.Name = proto.String(name(t.GetName()))
	}
	for _, n := range g.Node {
		if n.GetName() != "" && !strings.HasPrefix(n.GetName(), prefix) {
			n.Name = proto.String(prefix + n.GetName())
		}
		if err := in.bind(n, attrs, rename, prefix); err != nil {
			return err
		}
	}
	return nil
}
