package text

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
)

// Parse reads a model in the textual syntax.
func Parse(src string) (m *ir.Model, err error) {
	p := &parser{lx: newLexer(src)}
	defer p.recover(&err)
	m = &ir.Model{}
	if p.peek().is("<") {
		p.header(m)
	}
	ag := p.graph()
	p.expectEOF()
	m.Graph = p.build(ag)
	return m, nil
}

// ParseGraph reads one graph (no model header) in the textual syntax.
func ParseGraph(src string) (g *ir.Graph, err error) {
	p := &parser{lx: newLexer(src)}
	defer p.recover(&err)
	ag := p.graph()
	p.expectEOF()
	return p.build(ag), nil
}

// maxTensorBytes bounds the data of one tensor read back (abbreviated tensors are
// zero-filled, so a typo in a shape must not exhaust memory).
const maxTensorBytes = 1 << 31

type parser struct {
	lx    *lexer
	buf   []token
	zeros zeros
}

type bail struct{ err *Error }

func (p *parser) recover(err *error) {
	if r := recover(); r != nil {
		b, ok := r.(bail)
		if !ok {
			panic(r)
		}
		*err = b.err
	}
}

func (p *parser) failAt(line, col int, format string, args ...any) {
	panic(bail{&Error{Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}})
}

func (p *parser) fail(t token, format string, args ...any) { p.failAt(t.line, t.col, format, args...) }

func (p *parser) peekN(i int) token {
	for len(p.buf) <= i {
		t, err := p.lx.next()
		if err != nil {
			panic(bail{err})
		}
		p.buf = append(p.buf, t)
	}
	return p.buf[i]
}

func (p *parser) peek() token { return p.peekN(0) }

func (p *parser) next() token {
	t := p.peek()
	p.buf = p.buf[1:]
	return t
}

func (p *parser) accept(punct string) bool {
	if p.peek().is(punct) {
		p.next()
		return true
	}
	return false
}

func (p *parser) expect(punct, context string) token {
	t := p.next()
	if !t.is(punct) {
		p.fail(t, "expected '%s'%s, found %s", punct, context, t.describe())
	}
	return t
}

func (p *parser) expectEOF() {
	if t := p.peek(); t.kind != tEOF {
		p.fail(t, "expected end of input after the graph, found %s", t.describe())
	}
}

func (p *parser) ident(what string) token {
	t := p.next()
	if t.kind != tIdent {
		p.fail(t, "expected %s, found %s", what, t.describe())
	}
	return t
}

// name reads a quotable identifier.
func (p *parser) name(what string) token {
	t := p.next()
	if t.kind != tIdent && t.kind != tString {
		p.fail(t, "expected %s, found %s", what, t.describe())
	}
	return t
}

func (p *parser) stringLit(what string) string {
	t := p.next()
	if t.kind != tString {
		p.fail(t, "expected %s (a quoted string), found %s", what, t.describe())
	}
	return t.text
}

func (p *parser) intLit(what string) int64 {
	t := p.next()
	if t.kind != tNumber || !isIntLit(t.text) {
		p.fail(t, "expected %s (an integer), found %s", what, t.describe())
	}
	v, err := strconv.ParseInt(t.text, 10, 64)
	if err != nil {
		p.fail(t, "integer %s out of range", t.text)
	}
	return v
}

// ---- model header ----

func (p *parser) header(m *ir.Model) {
	p.expect("<", "")
	seen := map[string]bool{}
	for {
		k := p.ident("a model field (ir_version, opset_import, producer_name, ...)")
		if seen[k.text] {
			p.fail(k, "model field %s given twice", k.text)
		}
		seen[k.text] = true
		p.expect(":", " after "+k.text)
		switch k.text {
		case "ir_version":
			m.IRVersion = p.intLit("the IR version")
		case "opset_import":
			p.expect("[", " to open the opset list")
			if !p.accept("]") {
				for {
					d := p.stringLit("an opset domain")
					p.expect(":", " after the opset domain")
					m.Opsets = append(m.Opsets, ir.OpsetID{Domain: d, Version: p.intLit("an opset version")})
					if !p.accept(",") {
						break
					}
				}
				p.expect("]", " to close the opset list")
			}
		case "producer_name":
			m.ProducerName = p.stringLit("the producer name")
		case "producer_version":
			m.ProducerVersion = p.stringLit("the producer version")
		case "domain":
			m.Domain = p.stringLit("the model domain")
		case "model_version":
			m.ModelVersion = p.intLit("the model version")
		case "doc_string":
			m.DocString = p.stringLit("the doc string")
		case "metadata_props":
			m.Metadata = p.kvList()
		default:
			p.fail(k, "unknown model field %s", k.text)
		}
		if !p.accept(",") {
			break
		}
	}
	p.expect(">", " to close the model header")
}

func (p *parser) kvList() []ir.KV {
	p.expect("[", " to open the key-value list")
	var kvs []ir.KV
	if p.accept("]") {
		return kvs
	}
	for {
		k := p.stringLit("a key")
		p.expect(":", " after the key")
		kvs = append(kvs, ir.KV{Key: k, Value: p.stringLit("a value")})
		if !p.accept(",") {
			break
		}
	}
	p.expect("]", " to close the key-value list")
	return kvs
}

// ---- syntax tree: names are resolved once a whole graph is read ----

type astGraph struct {
	name    string
	inputs  []astValue
	outputs []astValue
	inits   []astValue // with data
	infos   []astValue
	nodes   []*astNode
}

type astValue struct {
	tok  token // the name
	typ  *ir.Type
	data *ir.Tensor
}

type astNode struct {
	tok      token // first token
	node     *ir.Node
	outs     []token
	ins      []token
	attrs    []astAttr
	hasLabel bool
}

type astAttr struct {
	a      *ir.Attr
	graph  *astGraph
	graphs []*astGraph
}

// ---- types ----

func isTypeStart(t token) bool {
	if t.kind != tIdent {
		return false
	}
	_, ok := ir.ParseDataType(t.text)
	return ok || keywords[t.text]
}

func (p *parser) typ() *ir.Type {
	t := p.ident("a type")
	if dt, ok := ir.ParseDataType(t.text); ok {
		return p.tensorType(ir.TensorType, dt)
	}
	switch t.text {
	case "seq", "optional":
		p.expect("(", " after "+t.text)
		e := p.typ()
		p.expect(")", " to close "+t.text+"(...)")
		if t.text == "seq" {
			return &ir.Type{Kind: ir.SequenceType, Elem: e}
		}
		return &ir.Type{Kind: ir.OptionalType, Elem: e}
	case "map":
		p.expect("(", " after map")
		k := p.ident("a map key type")
		dt, ok := ir.ParseDataType(k.text)
		if !ok {
			p.fail(k, "unknown map key type %q", k.text)
		}
		p.expect(",", " after the map key type")
		e := p.typ()
		p.expect(")", " to close map(...)")
		return &ir.Type{Kind: ir.MapType, DType: dt, Elem: e}
	case "sparse_tensor":
		p.expect("(", " after sparse_tensor")
		k := p.ident("an element type")
		dt, ok := ir.ParseDataType(k.text)
		if !ok {
			p.fail(k, "unknown type %q", k.text)
		}
		st := p.tensorType(ir.SparseTensorType, dt)
		p.expect(")", " to close sparse_tensor(...)")
		return st
	case "opaque":
		p.expect("(", " after opaque")
		ot := &ir.Type{Kind: ir.OpaqueType}
		if !p.accept(")") {
			first := p.qualified("an opaque type name")
			if p.accept(",") {
				ot.Domain, ot.Name = first, p.qualified("an opaque type name")
			} else {
				ot.Name = first
			}
			p.expect(")", " to close opaque(...)")
		}
		return ot
	}
	p.fail(t, "unknown type %q", t.text)
	return nil
}

// qualified reads name ('.' name)*, each part a quotable identifier.
func (p *parser) qualified(what string) string {
	parts := []string{p.name(what).text}
	for p.accept(".") {
		parts = append(parts, p.name(what).text)
	}
	return strings.Join(parts, ".")
}

// tensorType reads the optional shape after an element type: none is a scalar, "[]" an
// unknown rank.
func (p *parser) tensorType(kind ir.TypeKind, dt ir.DataType) *ir.Type {
	t := &ir.Type{Kind: kind, DType: dt, HasShape: true, Shape: ir.Shape{}}
	if !p.accept("[") {
		return t
	}
	if p.accept("]") {
		t.HasShape, t.Shape = false, nil
		return t
	}
	for {
		d := p.next()
		switch {
		case d.is("?"):
			t.Shape = append(t.Shape, ir.Dim{})
		case d.kind == tNumber && isIntLit(d.text) && !strings.HasPrefix(d.text, "-"):
			v, err := strconv.ParseInt(d.text, 10, 64)
			if err != nil {
				p.fail(d, "dimension %s out of range", d.text)
			}
			t.Shape = append(t.Shape, ir.D(v))
		case d.kind == tIdent || d.kind == tString:
			t.Shape = append(t.Shape, ir.Sym(d.text))
		default:
			p.fail(d, "expected a dimension (a number, a name or '?'), found %s", d.describe())
		}
		if !p.accept(",") {
			break
		}
	}
	p.expect("]", " to close the shape")
	return t
}

// valueInfo reads "type? name" where a type is optional.
func (p *parser) valueInfo(what string) astValue {
	var v astValue
	t := p.peek()
	if isTypeStart(t) {
		v.typ = p.typ()
	} else if t.kind == tIdent {
		if n := p.peekN(1); n.is("[") || n.kind == tIdent || n.kind == tString {
			p.fail(t, "unknown type %q", t.text)
		}
	}
	v.tok = p.name(what)
	return v
}

// tensorData reads "{ values }" or "{... summary}" for a tensor of type t.
func (p *parser) tensorData(t *ir.Type, at token) *ir.Tensor {
	if t == nil || t.Kind != ir.TensorType {
		p.fail(at, "tensor data needs a tensor type")
	}
	if !t.HasShape {
		p.fail(at, "tensor data needs a shape: write float for a scalar, float[2,3] for a tensor")
	}
	dims := make([]int64, len(t.Shape))
	n := int64(1)
	for i, d := range t.Shape {
		if !d.Known {
			p.fail(at, "tensor data needs numeric dimensions, found %s", d)
		}
		dims[i] = d.Value
		if d.Value != 0 && n > maxTensorBytes/d.Value {
			p.fail(at, "tensor %s%v is too large", t.DType, dims[:i+1])
		}
		n *= d.Value
	}
	if t.DType.ByteSize(n) > maxTensorBytes {
		p.fail(at, "tensor %s%v is too large", t.DType, dims)
	}
	open := p.peek()
	if open.is("[") {
		p.fail(open, "external tensor data is not supported")
	}
	p.expect("{", " to open the tensor data")
	if p.peek().is("...") {
		p.next()
		if len(p.buf) != 0 { // cannot happen: nothing looks past "{ ..."
			p.fail(p.buf[0], "unexpected %s", p.buf[0].describe())
		}
		s, err := p.lx.rawUntilBrace()
		if err != nil {
			panic(bail{err})
		}
		return p.zeros.abbreviated(t.DType, dims, s)
	}
	kind, bits, per := layout(t.DType)
	var vals []token
	if !p.accept("}") {
		for {
			vals = append(vals, p.next())
			if !p.accept(",") {
				break
			}
		}
		p.expect("}", " to close the tensor data")
	}
	if int64(len(vals)) != n*int64(per) {
		p.fail(open, "%s%v needs %d values, found %d", t.DType, dims, n*int64(per), len(vals))
	}
	if kind == kString {
		strs := make([][]byte, len(vals))
		for i, v := range vals {
			if v.kind != tString {
				p.fail(v, "expected a string value, found %s", v.describe())
			}
			strs[i] = []byte(v.text)
		}
		return ir.NewStringTensor(dims, strs)
	}
	if kind == kNone {
		p.fail(open, "cannot write %s data", t.DType)
	}
	buf := make([]byte, t.DType.ByteSize(n))
	for i, v := range vals {
		if v.kind != tNumber && v.kind != tIdent {
			p.fail(v, "expected a %s value, found %s", t.DType, v.describe())
		}
		bitsVal, err := parseElem(kind, bits, t.DType, v.text)
		if err == errRange {
			p.fail(v, "value %s out of range for %s", v.text, t.DType)
		} else if err != nil {
			p.fail(v, "expected a %s value, found %s", t.DType, v.describe())
		}
		putBits(buf, bits, i, bitsVal)
	}
	return ir.NewTensor(t.DType, dims, buf)
}

// ---- graphs ----

func (p *parser) graph() *astGraph {
	g := &astGraph{name: p.name("a graph name").text}
	p.expect("(", " to open the graph inputs")
	if !p.accept(")") {
		for {
			v := p.valueInfo("an input name")
			if p.peek().is("=") {
				eq := p.next()
				v.data = p.tensorData(v.typ, eq)
			}
			g.inputs = append(g.inputs, v)
			if !p.accept(",") {
				break
			}
		}
		p.expect(")", " to close the graph inputs")
	}
	p.expect("=>", " between the graph inputs and outputs")
	p.expect("(", " to open the graph outputs")
	if !p.accept(")") {
		for {
			g.outputs = append(g.outputs, p.valueInfo("an output name"))
			if !p.accept(",") {
				break
			}
		}
		p.expect(")", " to close the graph outputs")
	}
	if p.accept("<") {
		if !p.accept(">") {
			for {
				v := p.valueInfo("an initializer or value_info name")
				if p.peek().is("=") {
					eq := p.next()
					v.data = p.tensorData(v.typ, eq)
					g.inits = append(g.inits, v)
				} else {
					g.infos = append(g.infos, v)
				}
				if !p.accept(",") {
					break
				}
			}
			p.expect(">", " to close the initializer list")
		}
	}
	p.expect("{", " to open the node list")
	for !p.accept("}") {
		if t := p.peek(); t.kind == tEOF {
			p.fail(t, "expected a node or '}' to close graph %s, found end of input", id(g.name))
		}
		g.nodes = append(g.nodes, p.node())
	}
	return g
}

func (p *parser) idList(close string) []token {
	var ts []token
	if p.peek().is(close) {
		return ts
	}
	for {
		ts = append(ts, p.name("a value name"))
		if !p.accept(",") {
			return ts
		}
	}
}

func (p *parser) node() *astNode {
	an := &astNode{tok: p.peek(), node: &ir.Node{}}
	n := an.node
	if p.accept("[") {
		n.Name = p.name("a node name").text
		an.hasLabel = true
		p.expect("]", " to close the node name")
	}
	if !p.peek().is("=") {
		an.outs = p.idList("=")
	}
	p.expect("=", " after the node outputs")
	parts := []token{p.name("an operator")}
	for p.accept(".") {
		parts = append(parts, p.name("an operator"))
	}
	n.OpType = parts[len(parts)-1].text
	var dom []string
	for _, t := range parts[:len(parts)-1] {
		dom = append(dom, t.text)
	}
	n.Domain = strings.Join(dom, ".")
	if p.accept(":") {
		n.Overload = p.name("an overload name").text
	}
	if p.peek().is("<") {
		an.attrs = p.attrList()
	}
	p.expect("(", " to open the node inputs")
	an.ins = p.idList(")")
	p.expect(")", " to close the node inputs")
	if len(an.attrs) == 0 && p.peek().is("<") {
		an.attrs = p.attrList()
	}
	if p.peek().kind == tAnnot {
		p.next()
		k := p.ident("metadata_props")
		if k.text != "metadata_props" {
			p.fail(k, "expected metadata_props after #@, found %s", k.describe())
		}
		p.expect(":", " after metadata_props")
		n.Metadata = p.kvList()
	}
	return an
}

// ---- attributes ----

var attrTypeByName = func() map[string]ir.AttrType {
	m := map[string]ir.AttrType{}
	for t, s := range attrTypeNames {
		m[s] = t
	}
	return m
}()

func singular(t ir.AttrType) ir.AttrType {
	switch t {
	case ir.AttrFloats:
		return ir.AttrFloat
	case ir.AttrInts:
		return ir.AttrInt
	case ir.AttrStrings:
		return ir.AttrString
	case ir.AttrTensors:
		return ir.AttrTensor
	case ir.AttrGraphs:
		return ir.AttrGraph
	case ir.AttrSparseTensors:
		return ir.AttrSparseTensor
	case ir.AttrTypeProtos:
		return ir.AttrTypeProto
	}
	return ir.AttrUndefined
}

func plural(t ir.AttrType) ir.AttrType {
	for _, p := range []ir.AttrType{ir.AttrFloats, ir.AttrInts, ir.AttrStrings, ir.AttrTensors, ir.AttrGraphs,
		ir.AttrSparseTensors, ir.AttrTypeProtos} {
		if singular(p) == t {
			return p
		}
	}
	return ir.AttrUndefined
}

func (p *parser) attrList() []astAttr {
	p.expect("<", "")
	var as []astAttr
	seen := map[string]bool{}
	for {
		nt := p.peek()
		a := p.attr()
		if seen[a.a.Name] {
			p.fail(nt, "attribute %s given twice", id(a.a.Name))
		}
		seen[a.a.Name] = true
		as = append(as, a)
		if !p.accept(",") {
			break
		}
	}
	p.expect(">", " to close the attribute list")
	return as
}

// sval is one parsed attribute value.
type sval struct {
	tok   token
	kind  ir.AttrType // AttrInt, AttrFloat, AttrString, AttrTensor, AttrGraph
	i     int64
	f     float32
	s     string
	t     *ir.Tensor
	g     *astGraph
	isInt bool // a float written as an integer literal
}

func (p *parser) attr() astAttr {
	nt := p.name("an attribute name")
	a := &ir.Attr{Name: nt.text}
	declared := ir.AttrUndefined
	if p.accept(":") {
		tt := p.ident("an attribute type")
		t, ok := attrTypeByName[tt.text]
		if !ok {
			p.fail(tt, "unknown attribute type %q", tt.text)
		}
		declared = t
	}
	p.expect("=", " after attribute "+id(a.Name))
	a.Type = declared
	out := astAttr{a: a}
	switch t := p.peek(); {
	case t.is("@"):
		p.next()
		a.RefAttrName = p.name("an attribute reference").text
	case t.is("{"): // a value the IR does not model
		p.next()
		p.expect("...", " (only {...} stands for an attribute value)")
		p.expect("}", " after {...")
		if declared == ir.AttrTensor {
			p.fail(t, "a tensor attribute needs a typed tensor value such as float[2] {...}")
		}
	case t.is("["):
		p.next()
		var vals []sval
		if !p.accept("]") {
			for {
				vals = append(vals, p.single())
				if !p.accept(",") {
					break
				}
			}
			p.expect("]", " to close the list")
		}
		if len(vals) == 0 {
			if declared == ir.AttrUndefined {
				p.fail(t, "an empty list needs a type, as in %s: ints = []", id(a.Name))
			}
			if singular(declared) == ir.AttrUndefined {
				p.fail(t, "attribute %s is declared %s, not a list", id(a.Name), attrTypeNames[declared])
			}
			return out
		}
		elem := singular(declared)
		if declared == ir.AttrUndefined {
			elem = vals[0].kind
			for _, v := range vals {
				if v.kind == ir.AttrFloat && elem == ir.AttrInt {
					elem = ir.AttrFloat
				}
			}
			a.Type = plural(elem)
		} else if elem == ir.AttrUndefined {
			p.fail(t, "attribute %s is declared %s, not a list", id(a.Name), attrTypeNames[declared])
		}
		for _, v := range vals {
			v = p.convert(v, elem, a.Name)
			switch elem {
			case ir.AttrInt:
				a.Ints = append(a.Ints, v.i)
			case ir.AttrFloat:
				a.Floats = append(a.Floats, v.f)
			case ir.AttrString:
				a.Strings = append(a.Strings, []byte(v.s))
			case ir.AttrTensor:
				a.Tensors = append(a.Tensors, v.t)
			case ir.AttrGraph:
				out.graphs = append(out.graphs, v.g)
			default:
				p.fail(v.tok, "attribute %s: lists of %s are not supported", id(a.Name), attrTypeNames[elem])
			}
		}
	default:
		v := p.single()
		if declared == ir.AttrUndefined {
			a.Type = v.kind
		}
		v = p.convert(v, a.Type, a.Name)
		switch a.Type {
		case ir.AttrInt:
			a.Int = v.i
		case ir.AttrFloat:
			a.Float = v.f
		case ir.AttrString:
			a.String = []byte(v.s)
		case ir.AttrTensor:
			a.Tensor = v.t
		case ir.AttrGraph:
			out.graph = v.g
		}
	}
	return out
}

// convert checks a value against the expected kind; an integer is accepted as a float.
func (p *parser) convert(v sval, want ir.AttrType, name string) sval {
	if v.kind == want {
		return v
	}
	if want == ir.AttrFloat && v.kind == ir.AttrInt {
		v.kind, v.f = ir.AttrFloat, float32(v.i)
		return v
	}
	p.fail(v.tok, "attribute %s is %s but the value is %s", id(name), attrTypeNames[want], attrTypeNames[v.kind])
	return v
}

// single reads one attribute value: a number, a string, a tensor constant or a graph.
func (p *parser) single() sval {
	t := p.peek()
	v := sval{tok: t}
	switch {
	case t.kind == tNumber:
		p.next()
		if isIntLit(t.text) {
			i, err := strconv.ParseInt(t.text, 10, 64)
			if err != nil {
				p.fail(t, "integer %s out of range", t.text)
			}
			v.kind, v.i = ir.AttrInt, i
			return v
		}
		fallthrough
	case t.kind == tIdent && reserved(t.text) && !isTypeStart(t):
		if t.kind == tIdent {
			p.next()
		}
		bits, err := parseElem(kFloat32, 32, ir.Float, t.text)
		if err != nil {
			p.fail(t, "invalid float %s", t.text)
		}
		v.kind, v.f = ir.AttrFloat, float32frombits(bits)
		return v
	case t.kind == tString && !p.peekN(1).is("("):
		p.next()
		v.kind, v.s = ir.AttrString, t.text
		return v
	case isTypeStart(t):
		typ := p.typ()
		if nt := p.peek(); nt.kind == tIdent || nt.kind == tString {
			name := p.next()
			p.accept("=")
			v.t = p.tensorData(typ, name)
			v.t.Name = name.text
		} else {
			p.accept("=")
			v.t = p.tensorData(typ, t)
		}
		v.kind = ir.AttrTensor
		return v
	case t.kind == tIdent || t.kind == tString:
		if n := p.peekN(1); !n.is("(") {
			if n.is("[") {
				p.fail(t, "unknown type %q", t.text)
			}
			p.fail(n, "expected '(' after graph name %s (or an attribute value), found %s", id(t.text), n.describe())
		}
		v.kind, v.g = ir.AttrGraph, p.graph()
		return v
	}
	p.fail(t, "expected an attribute value, found %s", t.describe())
	return v
}
