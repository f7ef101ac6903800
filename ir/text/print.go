package text

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/qcc-dev/qcc/ir"
)

// Options controls printing.
type Options struct {
	// MaxElems: tensors with more elements are abbreviated to {... summary}. 0 means 16;
	// a negative value never abbreviates.
	MaxElems int
}

func (o Options) maxElems() int64 {
	switch {
	case o.MaxElems == 0:
		return 16
	case o.MaxElems < 0:
		return math.MaxInt64
	}
	return int64(o.MaxElems)
}

const indentUnit = "  "

type printer struct {
	b   bytes.Buffer
	max int64
}

// Print writes m in the textual syntax.
func Print(w io.Writer, m *ir.Model, opts Options) error {
	if m == nil || m.Graph == nil {
		return errors.New("text: model has no graph")
	}
	p := &printer{max: opts.maxElems()}
	p.model(m)
	_, err := w.Write(p.b.Bytes())
	return err
}

// PrintGraph writes one graph (without the model header) in the textual syntax.
func PrintGraph(w io.Writer, g *ir.Graph, opts Options) error {
	if g == nil {
		return errors.New("text: nil graph")
	}
	p := &printer{max: opts.maxElems()}
	p.graph(g, 0)
	p.b.WriteByte('\n')
	_, err := w.Write(p.b.Bytes())
	return err
}

// Sprint returns the text of m (or an error message in place of the text).
func Sprint(m *ir.Model, opts Options) string {
	var b strings.Builder
	if err := Print(&b, m, opts); err != nil {
		return "<" + err.Error() + ">"
	}
	return b.String()
}

func (p *printer) str(s string) { p.b.WriteString(s) }

func (p *printer) indent(n int) {
	for i := 0; i < n; i++ {
		p.b.WriteString(indentUnit)
	}
}

func (p *printer) model(m *ir.Model) {
	p.str("<\n")
	p.str(indentUnit + "ir_version: " + strconv.FormatInt(m.IRVersion, 10) + ",\n")
	p.str(indentUnit + "opset_import: [")
	for i, o := range m.Opsets {
		if i > 0 {
			p.str(", ")
		}
		p.str(quote(o.Domain) + " : " + strconv.FormatInt(o.Version, 10))
	}
	p.str("]")
	field := func(k, v string) { p.str(",\n" + indentUnit + k + ": " + v) }
	if m.ProducerName != "" {
		field("producer_name", quote(m.ProducerName))
	}
	if m.ProducerVersion != "" {
		field("producer_version", quote(m.ProducerVersion))
	}
	if m.Domain != "" {
		field("domain", quote(m.Domain))
	}
	if m.ModelVersion != 0 {
		field("model_version", strconv.FormatInt(m.ModelVersion, 10))
	}
	if m.DocString != "" {
		field("doc_string", quote(m.DocString))
	}
	if len(m.Metadata) > 0 {
		field("metadata_props", kvList(m.Metadata))
	}
	p.str("\n>\n")
	p.graph(m.Graph, 0)
	p.b.WriteByte('\n')
}

func kvList(kvs []ir.KV) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, kv := range kvs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quote(kv.Key) + ": " + quote(kv.Value))
	}
	b.WriteByte(']')
	return b.String()
}

// graph writes a graph whose first line is already indented to level ind; it ends after
// the closing brace (no newline).
func (p *printer) graph(g *ir.Graph, ind int) {
	p.str(id(g.Name) + " (")
	for i, v := range g.Inputs {
		if i > 0 {
			p.str(", ")
		}
		if v.Const != nil { // an input with a default value (older models)
			p.str(tensorType(v.Const) + " " + id(v.Name) + " = " + p.data(v.Const))
			continue
		}
		p.valueInfo(v)
	}
	p.str(") => (")
	for i, v := range g.Outputs {
		if i > 0 {
			p.str(", ")
		}
		if v == nil {
			p.str(`""`)
			continue
		}
		p.valueInfo(v)
	}
	p.str(")")
	var list []string
	for _, v := range g.Initializers {
		if !v.IsGraphInput() {
			list = append(list, tensorType(v.Const)+" "+id(v.Name)+" = "+p.data(v.Const))
		}
	}
	for _, v := range g.ValueInfo {
		if v.Graph() == g && g.Value(v.Name) == v {
			list = append(list, typeAndName(v))
		}
	}
	if len(list) > 0 {
		p.str(" <\n")
		for i, s := range list {
			p.indent(ind + 1)
			p.str(s)
			if i < len(list)-1 {
				p.str(",")
			}
			p.str("\n")
		}
		p.indent(ind)
		p.str(">")
	}
	p.str(" {\n")
	for _, n := range g.Nodes() {
		p.node(n, ind+1)
	}
	p.indent(ind)
	p.str("}")
}

func (p *printer) valueInfo(v *ir.Value) { p.str(typeAndName(v)) }

func typeAndName(v *ir.Value) string {
	if v.Type == nil {
		return id(v.Name)
	}
	return typeString(v.Type) + " " + id(v.Name)
}

func (p *printer) node(n *ir.Node, ind int) {
	p.indent(ind)
	if n.Name != "" {
		p.str("[" + id(n.Name) + "] ")
	}
	if len(n.Outputs()) > 0 {
		p.str(valueList(n.Outputs()) + " ")
	}
	p.str("= ")
	if n.Domain != "" {
		p.str(domainString(n.Domain) + ".")
	}
	p.str(id(n.OpType))
	if n.Overload != "" {
		p.str(":" + id(n.Overload))
	}
	hasGraph := false
	for _, a := range n.Attrs {
		if a.Graph != nil || len(a.Graphs) > 0 {
			hasGraph = true
		}
	}
	if !hasGraph {
		p.attrs(n.Attrs, ind)
	}
	p.str(" (" + valueList(n.Inputs()) + ")")
	if hasGraph {
		p.attrs(n.Attrs, ind)
	}
	if len(n.Metadata) > 0 {
		p.str("  #@ metadata_props: " + kvList(n.Metadata))
	}
	p.str("\n")
}

func valueList(vs []*ir.Value) string {
	var b strings.Builder
	for i, v := range vs {
		if i > 0 {
			b.WriteString(", ")
		}
		if v == nil {
			b.WriteString(`""`)
		} else {
			b.WriteString(id(v.Name))
		}
	}
	return b.String()
}

// domainString writes a node's domain as a dotted identifier when it is one, else quoted.
func domainString(d string) string {
	for _, part := range strings.Split(d, ".") {
		if !isIdent(part) {
			return quote(d)
		}
	}
	return d
}

var attrTypeNames = map[ir.AttrType]string{
	ir.AttrFloat: "float", ir.AttrInt: "int", ir.AttrString: "string", ir.AttrTensor: "tensor",
	ir.AttrGraph: "graph", ir.AttrSparseTensor: "sparse_tensor", ir.AttrTypeProto: "type_proto",
	ir.AttrFloats: "floats", ir.AttrInts: "ints", ir.AttrStrings: "strings", ir.AttrTensors: "tensors",
	ir.AttrGraphs: "graphs", ir.AttrSparseTensors: "sparse_tensors", ir.AttrTypeProtos: "type_protos",
}

func (p *printer) attrs(as []*ir.Attr, ind int) {
	if len(as) == 0 {
		return
	}
	p.str(" <")
	for i, a := range as {
		if i > 0 {
			p.str(", ")
		}
		p.attr(a, ind)
	}
	p.str(">")
}

func (p *printer) attr(a *ir.Attr, ind int) {
	name := id(a.Name)
	typed := func() {
		if t, ok := attrTypeNames[a.Type]; ok {
			p.str(name + ": " + t + " = ")
		} else {
			p.str(name + " = ")
		}
	}
	if a.RefAttrName != "" {
		typed()
		p.str("@" + id(a.RefAttrName))
		return
	}
	switch a.Type {
	case ir.AttrInt:
		p.str(name + " = " + strconv.FormatInt(a.Int, 10))
	case ir.AttrFloat:
		p.str(name + " = " + floatLook(fmtF32(math.Float32bits(a.Float))))
	case ir.AttrString:
		p.str(name + " = " + quote(string(a.String)))
	case ir.AttrTensor:
		if a.Tensor == nil {
			typed()
			p.str("{...}")
			return
		}
		p.str(name + " = " + p.tensorConst(a.Tensor))
	case ir.AttrGraph:
		if a.Graph == nil {
			typed()
			p.str("{...}")
			return
		}
		p.str(name + " = ")
		p.graph(a.Graph, ind)
	case ir.AttrInts, ir.AttrFloats, ir.AttrStrings, ir.AttrTensors, ir.AttrGraphs:
		n := len(a.Ints) + len(a.Floats) + len(a.Strings) + len(a.Tensors) + len(a.Graphs)
		if n == 0 {
			typed()
			p.str("[]")
			return
		}
		p.str(name + " = [")
		sep := func(i int) {
			if i > 0 {
				p.str(", ")
			}
		}
		switch a.Type {
		case ir.AttrInts:
			for i, v := range a.Ints {
				sep(i)
				p.str(strconv.FormatInt(v, 10))
			}
		case ir.AttrFloats:
			for i, v := range a.Floats {
				sep(i)
				p.str(floatLook(fmtF32(math.Float32bits(v))))
			}
		case ir.AttrStrings:
			for i, v := range a.Strings {
				sep(i)
				p.str(quote(string(v)))
			}
		case ir.AttrTensors:
			for i, v := range a.Tensors {
				sep(i)
				p.str(p.tensorConst(v))
			}
		case ir.AttrGraphs:
			for i, v := range a.Graphs {
				sep(i)
				p.graph(v, ind)
			}
		}
		p.str("]")
	default: // sparse tensors, type protos: not modelled by the IR
		typed()
		p.str("{...}")
	}
}

// tensorConst writes a tensor attribute value: type, optional name, data.
func (p *printer) tensorConst(t *ir.Tensor) string {
	s := tensorType(t) + " "
	if t.Name != "" {
		s += id(t.Name) + " "
	}
	return s + p.data(t)
}

func tensorType(t *ir.Tensor) string {
	s := t.DType.String()
	if len(t.Dims) > 0 {
		parts := make([]string, len(t.Dims))
		for i, d := range t.Dims {
			parts[i] = strconv.FormatInt(d, 10)
		}
		s += "[" + strings.Join(parts, ",") + "]"
	}
	return s
}

// data writes a tensor's elements, or {... summary} when there are more than MaxElems or
// the data cannot be read.
func (p *printer) data(t *ir.Tensor) string {
	n := t.NumElements()
	if _, known := knownSummary(t); known || n > p.max {
		return abbrevText(summary(t))
	}
	if t.DType == ir.String {
		strs := t.Strings()
		if int64(len(strs)) != n {
			return abbrevText(summary(t))
		}
		parts := make([]string, len(strs))
		for i, s := range strs {
			parts[i] = quote(string(s))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	b, err := t.Bytes()
	if err != nil {
		return abbrevText(summary(t))
	}
	elems, err := formatElems(t.DType, b, int(n))
	if err != nil {
		return abbrevText("unreadable")
	}
	return "{" + strings.Join(elems, ", ") + "}"
}

func abbrevText(s string) string {
	if s == "" {
		return "{...}"
	}
	return "{... " + s + "}"
}

func typeString(t *ir.Type) string {
	if t == nil {
		return "undefined[]"
	}
	switch t.Kind {
	case ir.TensorType:
		return tensorTypeString(t)
	case ir.SparseTensorType:
		return "sparse_tensor(" + tensorTypeString(t) + ")"
	case ir.SequenceType:
		return "seq(" + typeString(t.Elem) + ")"
	case ir.OptionalType:
		return "optional(" + typeString(t.Elem) + ")"
	case ir.MapType:
		return "map(" + t.DType.String() + ", " + typeString(t.Elem) + ")"
	}
	s := "opaque("
	if t.Domain != "" {
		s += domainString(t.Domain) + ", "
	}
	if t.Name != "" || t.Domain != "" {
		s += domainString(t.Name)
	}
	return s + ")"
}

// tensorTypeString follows ONNX: "float" is a scalar, "float[]" a tensor of unknown rank.
func tensorTypeString(t *ir.Type) string {
	s := t.DType.String()
	if !t.HasShape {
		return s + "[]"
	}
	if len(t.Shape) == 0 {
		return s
	}
	parts := make([]string, len(t.Shape))
	for i, d := range t.Shape {
		switch {
		case d.Known:
			parts[i] = strconv.FormatInt(d.Value, 10)
		case d.Param != "":
			parts[i] = id(d.Param)
		default:
			parts[i] = "?"
		}
	}
	return s + "[" + strings.Join(parts, ",") + "]"
}

// ---- identifiers and strings ----

func isIdent(s string) bool {
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isLetter(s[i]) && !isDigit(s[i]) {
			return false
		}
	}
	return true
}

var keywords = map[string]bool{"seq": true, "map": true, "optional": true, "sparse_tensor": true, "opaque": true}

// reserved words would be read as a type or a float where a name may also appear.
func reserved(s string) bool {
	if _, ok := ir.ParseDataType(s); ok || keywords[s] {
		return true
	}
	switch strings.ToLower(s) {
	case "inf", "infinity", "nan":
		return true
	}
	return false
}

// id writes a name bare when it is an identifier and not a reserved word, else quoted.
func id(s string) string {
	if isIdent(s) && !reserved(s) {
		return s
	}
	return quote(s)
}

// quote writes a string literal: backslash and double quote are escaped with a backslash,
// newline, tab and carriage return as \n \t \r, other control bytes and bytes that are
// not UTF-8 as \xHH. Everything else is written as is.
func quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\' || c == '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\r':
			b.WriteString(`\r`)
		case c < 0x20 || c == 0x7f:
			b.WriteString(`\x` + hex2(c))
		case c >= 0x80:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size <= 1 {
				b.WriteString(`\x` + hex2(c))
				i++
				continue
			}
			b.WriteString(s[i : i+size])
			i += size
			continue
		default:
			b.WriteByte(c)
		}
		i++
	}
	b.WriteByte('"')
	return b.String()
}

func hex2(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&15]})
}
