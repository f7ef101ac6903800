package ir

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"github.com/qcc-dev/qcc/ir/onnxpb"
)

// Load reads an ONNX model file. The file is mapped read-only and inline tensors alias
// its bytes, so tensor data is neither copied nor read until a pass or a save needs it;
// tensors stored as external data are likewise read on first use. The file is never
// modified; a save over the same path writes a new file and renames it into place, so
// the mapping keeps the old bytes.
func Load(path string) (*Model, error) {
	mf, err := openMapping(path)
	if nr, ok := err.(*notRegular); ok {
		m, err := LoadBytes(nr.data, filepath.Dir(path))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	if mf == nil {
		return nil, fmt.Errorf("%s: %w", path, errEmpty)
	}
	m, err := decode(mf.data, mf, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// LoadBytes decodes a serialized ModelProto; dir is the folder external data is relative
// to. The model keeps no reference to data.
func LoadBytes(data []byte, dir string) (*Model, error) {
	return decode(data, nil, dir)
}

// decode reads a ModelProto; with mf set, data is mf's bytes and inline tensors alias it.
func decode(data []byte, mf *mapping, dir string) (*Model, error) {
	if len(data) == 0 {
		return nil, errEmpty
	}
	d := newWireDecoder(data, mf != nil)
	mp, err := d.model()
	if err != nil {
		return nil, fmt.Errorf("not a valid ONNX model (protobuf decoding failed: %v); is the file truncated or of another format?", err)
	}
	return fromProto(mp, dir, func(tp *onnxpb.TensorProto) *section { return d.section(tp, mf) })
}

func fromProto(mp *onnxpb.ModelProto, dir string, sec func(*onnxpb.TensorProto) *section) (*Model, error) {
	if mp.Graph == nil {
		return nil, errors.New("not a valid ONNX model: it has no graph (truncated file, or not an ONNX model)")
	}
	if mp.IrVersion == nil {
		return nil, errors.New("not a valid ONNX model: ir_version is missing")
	}
	m := &Model{
		IRVersion:       mp.GetIrVersion(),
		ProducerName:    mp.GetProducerName(),
		ProducerVersion: mp.GetProducerVersion(),
		Domain:          mp.GetDomain(),
		ModelVersion:    mp.GetModelVersion(),
		DocString:       mp.GetDocString(),
		Metadata:        kvsFromProto(mp.MetadataProps),
		Dir:             dir,
	}
	domainSet := map[string]bool{}
	for _, o := range mp.OpsetImport {
		m.Opsets = append(m.Opsets, OpsetID{o.GetDomain(), o.GetVersion()})
		domainSet[o.GetDomain()] = o.Domain != nil
	}
	l := &loader{dir: dir, sec: sec}
	g, err := l.graph(mp.Graph, nil, nil)
	if err != nil {
		return nil, err
	}
	if err := l.connect(g); err != nil {
		return nil, err
	}
	m.Graph = g
	// Keep what the IR does not model: functions, training info, configuration, unknown fields.
	rest := &onnxpb.ModelProto{
		TrainingInfo:  mp.TrainingInfo,
		Functions:     mp.Functions,
		Configuration: mp.Configuration,
	}
	rest.ProtoReflect().SetUnknown(mp.ProtoReflect().GetUnknown())
	m.rest = &modelExtra{proto: rest, irSet: mp.IrVersion != nil, producerSet: mp.ProducerName != nil,
		producerVersionSet: mp.ProducerVersion != nil, domainSet: mp.Domain != nil,
		modelVersionSet: mp.ModelVersion != nil, docSet: mp.DocString != nil, opsetDomainSet: domainSet}
	return m, nil
}

// modelExtra remembers which optional model fields were present so save writes them back alike.
type modelExtra struct {
	proto                                                                      *onnxpb.ModelProto
	irSet, producerSet, producerVersionSet, domainSet, modelVersionSet, docSet bool
	opsetDomainSet                                                             map[string]bool
}

type loader struct {
	dir     string
	sec     func(*onnxpb.TensorProto) *section // where an inline tensor's bytes lie in the mapped file
	pending []pendingInputs
}

type pendingInputs struct {
	n     *Node
	g     *Graph
	names []string
}

// graphExtra keeps a graph's unmodelled fields and the original value-info entries, which
// save reuses for values whose type did not change.
type graphExtra struct {
	proto   *onnxpb.GraphProto // sparse initializers, annotations, metadata, doc, unknown fields
	inputs  map[string]*onnxpb.ValueInfoProto
	outputs map[string]*onnxpb.ValueInfoProto
	infos   map[string]*onnxpb.ValueInfoProto
	orphans []*onnxpb.ValueInfoProto // value_info naming no value: kept as they were
	types   map[*Value]*Type         // types as loaded, to tell whether a pass changed them
}

func (l *loader) graph(gp *onnxpb.GraphProto, parent *Graph, owner *Node) (*Graph, error) {
	g := NewGraph(gp.GetName())
	g.Parent, g.Owner = parent, owner
	ex := &graphExtra{
		proto: &onnxpb.GraphProto{
			Name:                   gp.Name,
			DocString:              gp.DocString,
			SparseInitializer:      gp.SparseInitializer,
			QuantizationAnnotation: gp.QuantizationAnnotation,
			MetadataProps:          gp.MetadataProps,
		},
		inputs: map[string]*onnxpb.ValueInfoProto{}, outputs: map[string]*onnxpb.ValueInfoProto{},
		infos: map[string]*onnxpb.ValueInfoProto{}, types: map[*Value]*Type{},
	}
	ex.proto.ProtoReflect().SetUnknown(gp.ProtoReflect().GetUnknown())
	g.rest = ex
	where := "graph"
	if parent != nil {
		where = fmt.Sprintf("subgraph %q of %s", gp.GetName(), owner)
	}
	for _, tp := range gp.Initializer {
		t, err := l.tensor(tp)
		if err != nil {
			return nil, fmt.Errorf("%s: initializer %q: %w", where, tp.GetName(), err)
		}
		if t.Name == "" {
			return nil, fmt.Errorf("%s: initializer without a name", where)
		}
		if _, err := g.AddInitializer(t.Name, t); err != nil {
			return nil, fmt.Errorf("%s: initializer: %w", where, err)
		}
	}
	for _, sp := range gp.SparseInitializer {
		name := sp.GetValues().GetName()
		v := &Value{Name: name, sparse: true}
		if err := g.define(v); err != nil {
			return nil, fmt.Errorf("%s: sparse initializer: %w", where, err)
		}
	}
	for _, vi := range gp.Input {
		name := vi.GetName()
		t, err := typeFromProto(vi.Type)
		if err != nil {
			return nil, fmt.Errorf("%s: input %q: %w", where, name, err)
		}
		ex.inputs[name] = vi
		if v := g.values[name]; v != nil && v.Const != nil {
			// Older models list initializers among the inputs too (as defaults).
			if v.Type == nil || t != nil {
				v.Type = t
			}
			g.Inputs = append(g.Inputs, v)
			continue
		}
		if _, err := g.AddInput(name, t); err != nil {
			return nil, fmt.Errorf("%s: input: %w", where, err)
		}
	}
	for i, np := range gp.Node {
		n, err := l.node(np, g)
		if err != nil {
			return nil, fmt.Errorf("%s: node %d (%s %q): %w", where, i, np.GetOpType(), np.GetName(), err)
		}
		_ = n
	}
	for _, vi := range gp.ValueInfo {
		v := g.values[vi.GetName()]
		if v == nil {
			ex.orphans = append(ex.orphans, vi)
			continue
		}
		t, err := typeFromProto(vi.Type)
		if err != nil {
			return nil, fmt.Errorf("%s: value_info %q: %w", where, vi.GetName(), err)
		}
		v.Type = t
		ex.infos[v.Name] = vi
		g.ValueInfo = append(g.ValueInfo, v)
	}
	for _, vi := range gp.Output {
		name := vi.GetName()
		t, err := typeFromProto(vi.Type)
		if err != nil {
			return nil, fmt.Errorf("%s: output %q: %w", where, name, err)
		}
		ex.outputs[name] = vi
		v := g.Lookup(name)
		if v == nil {
			return nil, fmt.Errorf("%s: output %q is not computed by any node, input or initializer", where, name)
		}
		if t != nil && v.graph == g && v.Const == nil {
			v.Type = t
		}
		g.Outputs = append(g.Outputs, v)
	}
	for _, v := range g.values {
		ex.types[v] = v.Type.Clone()
	}
	return g, nil
}

func (l *loader) node(np *onnxpb.NodeProto, g *Graph) (*Node, error) {
	if np.GetOpType() == "" {
		return nil, errors.New("op_type is empty")
	}
	n := &Node{Name: np.GetName(), OpType: np.GetOpType(), Domain: np.GetDomain(), Overload: np.GetOverload(),
		DocString: np.GetDocString(), Metadata: kvsFromProto(np.MetadataProps)}
	rest := &onnxpb.NodeProto{DeviceConfigurations: np.DeviceConfigurations, Domain: np.Domain, Name: np.Name,
		DocString: np.DocString, Overload: np.Overload}
	rest.ProtoReflect().SetUnknown(np.ProtoReflect().GetUnknown())
	n.rest = rest
	for _, ap := range np.Attribute {
		a, err := l.attr(ap, g, n)
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %w", ap.GetName(), err)
		}
		n.Attrs = append(n.Attrs, a)
	}
	outs := make([]*Value, len(np.Output))
	for i, name := range np.Output {
		if name == "" {
			continue
		}
		if g.values[name] != nil {
			return nil, fmt.Errorf("output %q is already defined (names must be unique)", name)
		}
		outs[i] = &Value{Name: name}
	}
	n.graph = g
	n.index = len(g.nodes)
	g.nodes = append(g.nodes, n)
	n.outputs = outs
	for i, o := range outs {
		if o != nil {
			g.define(o)
			o.producer, o.outIndex = n, i
		}
	}
	l.pending = append(l.pending, pendingInputs{n, g, np.Input})
	return n, nil
}

// connect resolves node inputs once every graph's values are defined, so nodes may refer
// to values defined later in the file and subgraphs to values of enclosing graphs.
func (l *loader) connect(root *Graph) error {
	for _, p := range l.pending {
		p.n.inputs = make([]*Value, len(p.names))
		for i, name := range p.names {
			if name == "" {
				continue
			}
			v := p.g.Lookup(name)
			if v == nil {
				return fmt.Errorf("node %s: input %q is not defined: no node computes it and it is neither a graph input nor an initializer", p.n, name)
			}
			p.n.setInput(i, v)
		}
	}
	l.pending = nil
	// Files are required to be sorted but not all are; a stable sort leaves sorted ones as
	// they are and reports cycles.
	return root.TopoSort()
}

func kvsFromProto(ps []*onnxpb.StringStringEntryProto) []KV {
	var out []KV
	for _, p := range ps {
		out = append(out, KV{p.GetKey(), p.GetValue()})
	}
	return out
}

func (l *loader) attr(ap *onnxpb.AttributeProto, g *Graph, n *Node) (*Attr, error) {
	a := &Attr{Name: ap.GetName(), RefAttrName: ap.GetRefAttrName(), DocString: ap.GetDocString(),
		Float: ap.GetF(), Int: ap.GetI(), String: ap.S, Floats: ap.Floats, Ints: ap.Ints, Strings: ap.Strings}
	if a.Name == "" {
		return nil, errors.New("attribute without a name")
	}
	if ap.Type != nil {
		a.Type = AttrType(ap.GetType())
	} else {
		a.Type = guessAttrType(ap)
	}
	var err error
	if ap.T != nil {
		if a.Tensor, err = l.tensor(ap.T); err != nil {
			return nil, err
		}
	}
	for _, tp := range ap.Tensors {
		t, err := l.tensor(tp)
		if err != nil {
			return nil, err
		}
		a.Tensors = append(a.Tensors, t)
	}
	if ap.G != nil {
		if a.Graph, err = l.graph(ap.G, g, n); err != nil {
			return nil, err
		}
	}
	for _, gp := range ap.Graphs {
		sg, err := l.graph(gp, g, n)
		if err != nil {
			return nil, err
		}
		a.Graphs = append(a.Graphs, sg)
	}
	rest := &onnxpb.AttributeProto{SparseTensor: ap.SparseTensor, SparseTensors: ap.SparseTensors, Tp: ap.Tp,
		TypeProtos: ap.TypeProtos, Type: ap.Type, DocString: ap.DocString, RefAttrName: ap.RefAttrName}
	// Presence of the scalar fields matters for a byte-exact round trip.
	if ap.F != nil {
		rest.F = ap.F
	}
	if ap.I != nil {
		rest.I = ap.I
	}
	rest.ProtoReflect().SetUnknown(ap.ProtoReflect().GetUnknown())
	a.rest = rest
	return a, nil
}

// guessAttrType handles attributes written before the type field existed.
func guessAttrType(ap *onnxpb.AttributeProto) AttrType {
	switch {
	case ap.F != nil:
		return AttrFloat
	case ap.I != nil:
		return AttrInt
	case ap.S != nil:
		return AttrString
	case ap.T != nil:
		return AttrTensor
	case ap.G != nil:
		return AttrGraph
	case len(ap.Floats) > 0:
		return AttrFloats
	case len(ap.Ints) > 0:
		return AttrInts
	case len(ap.Strings) > 0:
		return AttrStrings
	case len(ap.Tensors) > 0:
		return AttrTensors
	case len(ap.Graphs) > 0:
		return AttrGraphs
	}
	return AttrUndefined
}

func typeFromProto(tp *onnxpb.TypeProto) (*Type, error) {
	if tp == nil {
		return nil, nil
	}
	t := &Type{Denotation: tp.GetDenotation()}
	switch v := tp.Value.(type) {
	case *onnxpb.TypeProto_TensorType:
		t.Kind, t.DType = TensorType, DataType(v.TensorType.GetElemType())
		t.Shape, t.HasShape = shapeFromProto(v.TensorType.Shape)
	case *onnxpb.TypeProto_SparseTensorType:
		t.Kind, t.DType = SparseTensorType, DataType(v.SparseTensorType.GetElemType())
		t.Shape, t.HasShape = shapeFromProto(v.SparseTensorType.Shape)
	case *onnxpb.TypeProto_SequenceType:
		e, err := typeFromProto(v.SequenceType.ElemType)
		if err != nil {
			return nil, err
		}
		t.Kind, t.Elem = SequenceType, e
	case *onnxpb.TypeProto_OptionalType:
		e, err := typeFromProto(v.OptionalType.ElemType)
		if err != nil {
			return nil, err
		}
		t.Kind, t.Elem = OptionalType, e
	case *onnxpb.TypeProto_MapType:
		e, err := typeFromProto(v.MapType.ValueType)
		if err != nil {
			return nil, err
		}
		t.Kind, t.DType, t.Elem = MapType, DataType(v.MapType.GetKeyType()), e
	case *onnxpb.TypeProto_OpaqueType:
		t.Kind, t.Domain, t.Name = OpaqueType, v.OpaqueType.GetDomain(), v.OpaqueType.GetName()
	case nil:
		return nil, nil
	}
	if (t.Kind == TensorType || t.Kind == SparseTensorType) && t.DType != Undefined && !t.DType.Known() {
		return nil, fmt.Errorf("unknown element type %d", t.DType)
	}
	return t, nil
}

func shapeFromProto(sp *onnxpb.TensorShapeProto) (Shape, bool) {
	if sp == nil {
		return nil, false
	}
	s := make(Shape, len(sp.Dim))
	for i, d := range sp.Dim {
		switch v := d.Value.(type) {
		case *onnxpb.TensorShapeProto_Dimension_DimValue:
			s[i] = D(v.DimValue)
		case *onnxpb.TensorShapeProto_Dimension_DimParam:
			s[i] = Sym(v.DimParam)
		}
	}
	return s, true
}

// tensor wraps a TensorProto without copying its data: the bytes are decoded on first use.
func (l *loader) tensor(tp *onnxpb.TensorProto) (*Tensor, error) {
	t := &Tensor{Name: tp.GetName(), DType: DataType(tp.GetDataType()), Dims: tp.Dims, orig: tp}
	if !t.DType.Known() {
		return nil, fmt.Errorf("unknown or missing data type %d", tp.GetDataType())
	}
	for _, d := range t.Dims {
		if d < 0 {
			return nil, fmt.Errorf("negative dimension %d", d)
		}
	}
	if tp.Segment != nil {
		return nil, errors.New("segmented tensors are not supported")
	}
	if tp.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
		ext, err := l.external(tp)
		if err != nil {
			return nil, err
		}
		t.ext = ext
		t.decode = ext.read
		return t, nil
	}
	if t.DType == String {
		t.strs = tp.StringData
		return t, nil
	}
	want := t.DType.ByteSize(t.NumElements())
	if tp.RawData != nil {
		if int64(len(tp.RawData)) != want {
			return nil, fmt.Errorf("raw_data has %d bytes, %s%v needs %d", len(tp.RawData), t.DType, t.Dims, want)
		}
		t.raw = tp.RawData
		if l.sec != nil {
			t.sec = l.sec(tp)
		}
		return t, nil
	}
	t.decode = func() ([]byte, error) { return decodeTyped(tp, t.DType, t.NumElements()) }
	return t, nil
}

func (l *loader) external(tp *onnxpb.TensorProto) (*External, error) {
	e := &External{Length: -1}
	for _, kv := range tp.ExternalData {
		var err error
		switch kv.GetKey() {
		case "location":
			e.Location = kv.GetValue()
		case "offset":
			e.Offset, err = strconv.ParseInt(kv.GetValue(), 10, 64)
		case "length":
			e.Length, err = strconv.ParseInt(kv.GetValue(), 10, 64)
		}
		if err != nil {
			return nil, fmt.Errorf("external data %s: %v", kv.GetKey(), err)
		}
	}
	if e.Location == "" {
		return nil, errors.New("external data without a location")
	}
	if filepath.IsAbs(e.Location) || !filepath.IsLocal(e.Location) {
		return nil, fmt.Errorf("external data location %q must be a relative path inside the model's folder", e.Location)
	}
	e.Path = filepath.Join(l.dir, e.Location)
	return e, nil
}

// read fetches an external tensor's bytes.
func (e *External) read() ([]byte, error) {
	f, err := os.Open(e.Path)
	if err != nil {
		return nil, fmt.Errorf("external data: %w", err)
	}
	defer f.Close()
	n := e.Length
	if n < 0 {
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		n = st.Size() - e.Offset
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, e.Offset); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("external data %s: file too short for offset %d length %d", e.Location, e.Offset, n)
		}
		return nil, fmt.Errorf("external data: %w", err)
	}
	return b, nil
}

// decodeTyped turns the typed repeated fields into raw little-endian bytes.
func decodeTyped(tp *onnxpb.TensorProto, dt DataType, n int64) ([]byte, error) {
	out := make([]byte, 0, dt.ByteSize(n))
	switch dt {
	case Float, Complex64:
		for _, f := range tp.FloatData {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(f))
		}
	case Double, Complex128:
		for _, f := range tp.DoubleData {
			out = binary.LittleEndian.AppendUint64(out, math.Float64bits(f))
		}
	case Int64:
		for _, v := range tp.Int64Data {
			out = binary.LittleEndian.AppendUint64(out, uint64(v))
		}
	case Uint32:
		for _, v := range tp.Uint64Data {
			out = binary.LittleEndian.AppendUint32(out, uint32(v))
		}
	case Uint64:
		for _, v := range tp.Uint64Data {
			out = binary.LittleEndian.AppendUint64(out, v)
		}
	case Int32:
		for _, v := range tp.Int32Data {
			out = binary.LittleEndian.AppendUint32(out, uint32(v))
		}
	case Int16, Uint16, Float16, BFloat16:
		for _, v := range tp.Int32Data {
			out = binary.LittleEndian.AppendUint16(out, uint16(v))
		}
	case Int8, Uint8, Bool, Float8E4M3FN, Float8E4M3FNUZ, Float8E5M2, Float8E5M2FNUZ, Float8E8M0,
		Int4, Uint4, Float4E2M1, Int2, Uint2:
		// Sub-byte types hold one packed byte per int32 element.
		for _, v := range tp.Int32Data {
			out = append(out, byte(v))
		}
	default:
		return nil, fmt.Errorf("cannot decode %s data", dt)
	}
	if want := dt.ByteSize(n); int64(len(out)) != want {
		return nil, fmt.Errorf("typed data has %d bytes for %s of %d elements, want %d", len(out), dt, n, want)
	}
	return out, nil
}
