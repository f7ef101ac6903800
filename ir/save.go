package ir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/qcc-dev/qcc/ir/onnxpb"
)

// ExternalMode says when Save stores tensor data outside the .onnx file.
type ExternalMode int

const (
	// ExternalAuto stores data externally when the input model did, or when the model
	// would pass protobuf's 2 GB limit.
	ExternalAuto ExternalMode = iota
	ExternalAlways
	ExternalNever
)

// protoLimit is the largest serialized message protobuf accepts, less headroom for the graph.
const protoLimit = 2<<30 - 64<<20

// SaveOptions controls Save.
type SaveOptions struct {
	External ExternalMode
	// DataFile is the external data file's name, beside the model; default "<model file>.data".
	DataFile string
	// Threshold is the smallest tensor (in bytes) stored externally; default 1024.
	Threshold int64
	// Sync flushes the files to disk before they are renamed into place. Renaming alone
	// already guarantees that a failed or killed save leaves no partial output; Sync adds
	// durability across a power loss, at the cost of waiting for the disk.
	Sync bool
}

// Save writes m to path atomically: everything goes to temporary files in the same folder
// that are renamed into place only when complete, so a failure never leaves a truncated
// model, and a model whose external data is read from the file being replaced still reads
// the old bytes.
func Save(m *Model, path string, opts SaveOptions) (err error) {
	if opts.Threshold <= 0 {
		opts.Threshold = 1024
	}
	if opts.DataFile == "" {
		opts.DataFile = filepath.Base(path) + ".data"
	}
	external := opts.External == ExternalAlways
	if opts.External == ExternalAuto {
		external = m.hasExternal() || m.tensorBytes() > protoLimit
	}
	dir := filepath.Dir(path)
	var ext *extWriter
	if external {
		f, err := createTemp(dir, "."+opts.DataFile+".tmp*")
		if err != nil {
			return err
		}
		ext = &extWriter{f: f, name: opts.DataFile, threshold: opts.Threshold}
		defer func() {
			if ext.f != nil {
				ext.f.Close()
				os.Remove(ext.f.Name())
			}
		}()
	}
	st := newStreamer()
	mp, err := toProto(m, ext, st)
	if err != nil {
		return err
	}
	if ext != nil {
		if err := ext.flush(opts.Sync); err != nil {
			return fmt.Errorf("writing external data: %w", err)
		}
	}
	enc, err := st.model(mp)
	if err != nil {
		return err
	}
	if enc.size > 2<<30-1 {
		return fmt.Errorf("model is %d bytes, over protobuf's 2 GB limit for one file: save with external data (qcc -external-data=auto or always)", enc.size)
	}
	if err := writeAtomic(path, enc.write, opts.Sync); err != nil {
		return err
	}
	if ext != nil {
		tmp := ext.f.Name()
		if err := ext.f.Close(); err != nil {
			return err
		}
		if err := os.Chmod(tmp, 0o644); err != nil { // CreateTemp makes it private
			return err
		}
		ext.f = nil
		if err := os.Rename(tmp, filepath.Join(dir, opts.DataFile)); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	return nil
}

// Marshal serializes m with all tensor data inline.
func Marshal(m *Model) ([]byte, error) {
	mp, err := toProto(m, nil, nil)
	if err != nil {
		return nil, err
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(mp)
}

// WriteFileAtomic writes b to path through a temporary file renamed into place.
func WriteFileAtomic(path string, b []byte) error {
	return writeAtomic(path, func(f sinkFile) error { _, err := f.Write(b); return err }, false)
}

// writeAtomic writes path through a temporary file renamed into place once write has
// succeeded; on any failure the temporary is removed and path is left as it was.
func writeAtomic(path string, write func(sinkFile) error, sync bool) error {
	f, err := createTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = write(f)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func (m *Model) forEachTensor(f func(*Tensor)) {
	m.Graph.Walk(func(g *Graph) error {
		for _, v := range g.Initializers {
			f(v.Const)
		}
		for _, n := range g.Nodes() {
			for _, a := range n.Attrs {
				if a.Tensor != nil {
					f(a.Tensor)
				}
				for _, t := range a.Tensors {
					f(t)
				}
			}
		}
		return nil
	})
}

// ExternalFiles returns the cleaned paths of the external data files m reads.
func (m *Model) ExternalFiles() map[string]bool {
	files := map[string]bool{}
	m.forEachTensor(func(t *Tensor) {
		if e := t.External(); e != nil {
			files[filepath.Clean(e.Path)] = true
		}
	})
	return files
}

func (m *Model) hasExternal() bool {
	found := false
	m.forEachTensor(func(t *Tensor) { found = found || t.External() != nil })
	return found
}

func (m *Model) tensorBytes() int64 {
	var n int64
	m.forEachTensor(func(t *Tensor) { n += t.DType.ByteSize(t.NumElements()) })
	return n
}

// extWriter appends tensor data to the external data file, each tensor where placeAfter
// puts it.
type extWriter struct {
	f         sinkFile
	name      string
	threshold int64
	off       int64
}

func (w *extWriter) flush(sync bool) error {
	if sync {
		return w.f.Sync()
	}
	return nil
}

// put writes t's bytes, streaming from its source file when it has not been read, and
// returns the external_data entries that point at them.
func (w *extWriter) put(t *Tensor) ([]*onnxpb.StringStringEntryProto, error) {
	size := t.DType.ByteSize(t.NumElements())
	if pad := placeAfter(w.off, size) - w.off; pad > 0 {
		if _, err := w.f.Write(zeroPad[:pad]); err != nil {
			return nil, err
		}
		w.off += pad
	}
	start := w.off
	var n int64
	rw := &roundWriter{w: w.f, pos: w.off} // for bytes made in memory
	if e := t.External(); e != nil && !t.Materialised() {
		src, err := os.Open(e.Path)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: external data: %w", t.Name, err)
		}
		length := e.Length
		if length < 0 {
			st, _ := src.Stat()
			length = st.Size() - e.Offset
		}
		err = copyFile(w.f, src, e.Offset, length)
		src.Close()
		if err != nil {
			return nil, fmt.Errorf("tensor %q: external data: %w", t.Name, err)
		}
		n = length
	} else if ok, err := t.writeStreamed(rw, size); ok {
		if err != nil {
			return nil, err
		}
		n = size
	} else {
		b, err := t.Bytes()
		if err != nil {
			return nil, err
		}
		k, err := rw.Write(b)
		if err != nil {
			return nil, err
		}
		n = int64(k)
		t.release()
	}
	w.off += n
	return []*onnxpb.StringStringEntryProto{
		kvp("location", w.name), kvp("offset", strconv.FormatInt(start, 10)), kvp("length", strconv.FormatInt(n, 10)),
	}, nil
}

func kvp(k, v string) *onnxpb.StringStringEntryProto {
	return &onnxpb.StringStringEntryProto{Key: &k, Value: &v}
}

func kvsToProto(kvs []KV) []*onnxpb.StringStringEntryProto {
	var out []*onnxpb.StringStringEntryProto
	for _, kv := range kvs {
		out = append(out, kvp(kv.Key, kv.Value))
	}
	return out
}

// optStr returns a pointer for an optional string field: set when non-empty, or when the
// loaded proto had it set (so an explicit empty value survives a round trip).
func optStr(s string, wasSet bool) *string {
	if s == "" && !wasSet {
		return nil
	}
	return &s
}

func toProto(m *Model, ext *extWriter, st *streamer) (*onnxpb.ModelProto, error) {
	if m.Graph == nil {
		return nil, errors.New("model has no graph")
	}
	mp := &onnxpb.ModelProto{}
	ex, _ := m.rest.(*modelExtra)
	if ex == nil {
		ex = &modelExtra{proto: &onnxpb.ModelProto{}, irSet: true}
	}
	mp.TrainingInfo, mp.Functions, mp.Configuration = ex.proto.TrainingInfo, ex.proto.Functions, ex.proto.Configuration
	mp.ProtoReflect().SetUnknown(ex.proto.ProtoReflect().GetUnknown())
	mp.IrVersion = proto.Int64(m.IRVersion)
	mp.ProducerName = optStr(m.ProducerName, ex.producerSet)
	mp.ProducerVersion = optStr(m.ProducerVersion, ex.producerVersionSet)
	mp.Domain = optStr(m.Domain, ex.domainSet)
	if m.ModelVersion != 0 || ex.modelVersionSet {
		mp.ModelVersion = proto.Int64(m.ModelVersion)
	}
	mp.DocString = optStr(m.DocString, ex.docSet)
	mp.MetadataProps = kvsToProto(m.Metadata)
	for _, o := range m.Opsets {
		d, v := o.Domain, o.Version
		mp.OpsetImport = append(mp.OpsetImport, &onnxpb.OperatorSetIdProto{Domain: optStr(d, ex.opsetDomainSet[d]), Version: &v})
	}
	var err error
	mp.Graph, err = graphToProto(m.Graph, ext, st)
	return mp, err
}

func graphToProto(g *Graph, ext *extWriter, st *streamer) (*onnxpb.GraphProto, error) {
	ex, _ := g.rest.(*graphExtra)
	if ex == nil {
		ex = &graphExtra{proto: &onnxpb.GraphProto{}}
	}
	gp := &onnxpb.GraphProto{
		Name:                   optStr(g.Name, ex.proto.Name != nil),
		DocString:              ex.proto.DocString,
		SparseInitializer:      ex.proto.SparseInitializer,
		QuantizationAnnotation: ex.proto.QuantizationAnnotation,
		MetadataProps:          ex.proto.MetadataProps,
	}
	gp.ProtoReflect().SetUnknown(ex.proto.ProtoReflect().GetUnknown())
	for _, v := range g.Initializers {
		tp, err := tensorToProto(v.Const, v.Name, ext, st)
		if err != nil {
			return nil, err
		}
		gp.Initializer = append(gp.Initializer, tp)
	}
	for _, v := range g.Inputs {
		gp.Input = append(gp.Input, valueInfo(v, ex.inputs, ex))
	}
	for _, n := range g.Nodes() {
		np, err := nodeToProto(n, ext, st)
		if err != nil {
			return nil, err
		}
		gp.Node = append(gp.Node, np)
	}
	for _, v := range g.Outputs {
		gp.Output = append(gp.Output, valueInfo(v, ex.outputs, ex))
	}
	for _, v := range g.ValueInfo {
		if v.graph == g {
			gp.ValueInfo = append(gp.ValueInfo, valueInfo(v, ex.infos, ex))
		}
	}
	gp.ValueInfo = append(gp.ValueInfo, ex.orphans...)
	return gp, nil
}

// valueInfo reuses the loaded entry when the value's type is unchanged, so fields the IR
// does not model (dimension denotations, doc strings, metadata) survive.
func valueInfo(v *Value, orig map[string]*onnxpb.ValueInfoProto, ex *graphExtra) *onnxpb.ValueInfoProto {
	name := v.Name
	if o := orig[name]; o != nil {
		if t, ok := ex.types[v]; ok && t.Equal(v.Type) {
			return o
		}
	}
	vi := &onnxpb.ValueInfoProto{Name: &name, Type: typeToProto(v.Type)}
	if o := orig[name]; o != nil {
		vi.DocString, vi.MetadataProps = o.DocString, o.MetadataProps
	}
	return vi
}

func typeToProto(t *Type) *onnxpb.TypeProto {
	if t == nil {
		return nil
	}
	tp := &onnxpb.TypeProto{}
	if t.Denotation != "" {
		tp.Denotation = proto.String(t.Denotation)
	}
	switch t.Kind {
	case TensorType:
		tt := &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(t.DType)), Shape: shapeToProto(t)}
		tp.Value = &onnxpb.TypeProto_TensorType{TensorType: tt}
	case SparseTensorType:
		tt := &onnxpb.TypeProto_SparseTensor{ElemType: proto.Int32(int32(t.DType)), Shape: shapeToProto(t)}
		tp.Value = &onnxpb.TypeProto_SparseTensorType{SparseTensorType: tt}
	case SequenceType:
		tp.Value = &onnxpb.TypeProto_SequenceType{SequenceType: &onnxpb.TypeProto_Sequence{ElemType: typeToProto(t.Elem)}}
	case OptionalType:
		tp.Value = &onnxpb.TypeProto_OptionalType{OptionalType: &onnxpb.TypeProto_Optional{ElemType: typeToProto(t.Elem)}}
	case MapType:
		tp.Value = &onnxpb.TypeProto_MapType{MapType: &onnxpb.TypeProto_Map{KeyType: proto.Int32(int32(t.DType)), ValueType: typeToProto(t.Elem)}}
	case OpaqueType:
		tp.Value = &onnxpb.TypeProto_OpaqueType{OpaqueType: &onnxpb.TypeProto_Opaque{Domain: proto.String(t.Domain), Name: proto.String(t.Name)}}
	}
	return tp
}

func shapeToProto(t *Type) *onnxpb.TensorShapeProto {
	if !t.HasShape {
		return nil
	}
	sp := &onnxpb.TensorShapeProto{Dim: make([]*onnxpb.TensorShapeProto_Dimension, len(t.Shape))}
	for i, d := range t.Shape {
		dp := &onnxpb.TensorShapeProto_Dimension{}
		switch {
		case d.Known:
			dp.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d.Value}
		case d.Param != "":
			dp.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d.Param}
		}
		sp.Dim[i] = dp
	}
	return sp
}

func nodeToProto(n *Node, ext *extWriter, st *streamer) (*onnxpb.NodeProto, error) {
	rest, _ := n.rest.(*onnxpb.NodeProto)
	if rest == nil {
		rest = &onnxpb.NodeProto{}
	}
	np := &onnxpb.NodeProto{
		OpType:               proto.String(n.OpType),
		Name:                 optStr(n.Name, rest.Name != nil),
		Domain:               optStr(n.Domain, rest.Domain != nil),
		Overload:             optStr(n.Overload, rest.Overload != nil),
		DocString:            optStr(n.DocString, rest.DocString != nil),
		MetadataProps:        kvsToProto(n.Metadata),
		DeviceConfigurations: rest.DeviceConfigurations,
	}
	np.ProtoReflect().SetUnknown(rest.ProtoReflect().GetUnknown())
	np.Input = make([]string, len(n.inputs))
	for i, v := range n.inputs {
		if v != nil {
			np.Input[i] = v.Name
		}
	}
	np.Output = make([]string, len(n.outputs))
	for i, v := range n.outputs {
		if v != nil {
			np.Output[i] = v.Name
		}
	}
	for _, a := range n.Attrs {
		ap, err := attrToProto(a, ext, st)
		if err != nil {
			return nil, fmt.Errorf("node %s attribute %s: %w", n, a.Name, err)
		}
		np.Attribute = append(np.Attribute, ap)
	}
	return np, nil
}

func attrToProto(a *Attr, ext *extWriter, st *streamer) (*onnxpb.AttributeProto, error) {
	rest, _ := a.rest.(*onnxpb.AttributeProto)
	if rest == nil {
		rest = &onnxpb.AttributeProto{}
	}
	ap := &onnxpb.AttributeProto{
		Name:          proto.String(a.Name),
		RefAttrName:   optStr(a.RefAttrName, rest.RefAttrName != nil),
		DocString:     optStr(a.DocString, rest.DocString != nil),
		SparseTensor:  rest.SparseTensor,
		SparseTensors: rest.SparseTensors,
		Tp:            rest.Tp,
		TypeProtos:    rest.TypeProtos,
		Floats:        a.Floats,
		Ints:          a.Ints,
		Strings:       a.Strings,
		S:             a.String,
		F:             rest.F,
		I:             rest.I,
	}
	ap.ProtoReflect().SetUnknown(rest.ProtoReflect().GetUnknown())
	if a.Type != AttrUndefined && (rest.Type != nil || a.rest == nil) {
		t := onnxpb.AttributeProto_AttributeType(a.Type)
		ap.Type = &t
	}
	if a.Type == AttrFloat || rest.F != nil {
		ap.F = proto.Float32(a.Float)
	}
	if a.Type == AttrInt || rest.I != nil {
		ap.I = proto.Int64(a.Int)
	}
	if a.Type == AttrString && ap.S == nil {
		ap.S = []byte{}
	}
	var err error
	if a.Tensor != nil {
		if ap.T, err = tensorToProto(a.Tensor, a.Tensor.Name, ext, st); err != nil {
			return nil, err
		}
	}
	for _, t := range a.Tensors {
		tp, err := tensorToProto(t, t.Name, ext, st)
		if err != nil {
			return nil, err
		}
		ap.Tensors = append(ap.Tensors, tp)
	}
	if a.Graph != nil {
		if ap.G, err = graphToProto(a.Graph, ext, st); err != nil {
			return nil, err
		}
	}
	for _, g := range a.Graphs {
		gp, err := graphToProto(g, ext, st)
		if err != nil {
			return nil, err
		}
		ap.Graphs = append(ap.Graphs, gp)
	}
	return ap, nil
}

// tensorToProto writes an untouched loaded tensor back as it was read (sharing its data,
// not copying it), inlines or externalises as the save asks, and encodes new tensors as
// raw_data. With st set, large raw_data is left out and recorded in st, to be streamed.
func tensorToProto(t *Tensor, name string, ext *extWriter, st *streamer) (*onnxpb.TensorProto, error) {
	orig, _ := t.orig.(*onnxpb.TensorProto)
	size := t.DType.ByteSize(t.NumElements())
	toExternal := ext != nil && t.DType != String && size >= ext.threshold
	if st != nil && !toExternal {
		if tp, err := st.defer_(t, name, orig); tp != nil || err != nil {
			return tp, err
		}
	}
	if t.sec != nil && !toExternal {
		t.sec.m.escape() // the proto aliases the mapping and may outlive the tensor
	}
	if orig != nil && !toExternal && t.ext == nil && orig.GetName() == name {
		return orig, nil
	}
	tp := &onnxpb.TensorProto{Dims: t.Dims, DataType: proto.Int32(int32(t.DType))}
	if name != "" || (orig != nil && orig.Name != nil) {
		tp.Name = proto.String(name)
	}
	if orig != nil {
		tp.DocString, tp.MetadataProps = orig.DocString, orig.MetadataProps
		tp.ProtoReflect().SetUnknown(orig.ProtoReflect().GetUnknown())
	}
	switch {
	case toExternal:
		kvs, err := ext.put(t)
		if err != nil {
			return nil, err
		}
		tp.ExternalData = kvs
		tp.DataLocation = onnxpb.TensorProto_EXTERNAL.Enum()
	case orig != nil && t.ext == nil:
		// Same data in its original encoding, only the name changed.
		tp.FloatData, tp.Int32Data, tp.StringData, tp.Int64Data = orig.FloatData, orig.Int32Data, orig.StringData, orig.Int64Data
		tp.RawData, tp.DoubleData, tp.Uint64Data = orig.RawData, orig.DoubleData, orig.Uint64Data
	case t.DType == String:
		tp.StringData = t.strs
	default:
		b, err := t.Bytes()
		if err != nil {
			return nil, err
		}
		if b == nil {
			b = []byte{}
		}
		tp.RawData = b
		t.release()
	}
	return tp, nil
}

// defer_ returns the TensorProto of an inline tensor whose raw_data is large, without the
// bytes, and records where they are; nil for a tensor written whole.
func (st *streamer) defer_(t *Tensor, name string, orig *onnxpb.TensorProto) (*onnxpb.TensorProto, error) {
	if t.DType == String {
		return nil, nil
	}
	var tp *onnxpb.TensorProto
	var n int64
	t.mu.Lock()
	raw, lazy := t.raw, t.lazy != nil && t.raw == nil
	t.mu.Unlock()
	switch {
	case orig != nil && t.ext == nil:
		if orig.RawData == nil || len(orig.RawData) < streamMin {
			return nil, nil // typed fields, or small: as it was
		}
		n = int64(len(orig.RawData))
		if orig.GetName() == name {
			tp = tensorShell(orig)
			break
		}
		// Renamed: as tensorToProto writes it, the typed fields kept alongside.
		tp = &onnxpb.TensorProto{Dims: t.Dims, DataType: proto.Int32(int32(t.DType)), Name: proto.String(name),
			DocString: orig.DocString, MetadataProps: orig.MetadataProps, FloatData: orig.FloatData,
			Int32Data: orig.Int32Data, StringData: orig.StringData, Int64Data: orig.Int64Data,
			DoubleData: orig.DoubleData, Uint64Data: orig.Uint64Data}
		tp.ProtoReflect().SetUnknown(orig.ProtoReflect().GetUnknown())
	case t.ext != nil && raw == nil && !t.modTick:
		// External data saved inline: copied from its file.
		e := t.ext
		n = e.Length
		if n < 0 {
			st, err := os.Stat(e.Path)
			if err != nil {
				return nil, fmt.Errorf("tensor %q: external data: %w", t.Name, err)
			}
			n = st.Size() - e.Offset
		}
	case raw != nil:
		n = int64(len(raw))
	case lazy:
		n = t.DType.ByteSize(t.NumElements())
	default:
		return nil, nil
	}
	if n < streamMin {
		return nil, nil
	}
	if tp == nil {
		tp = &onnxpb.TensorProto{Dims: t.Dims, DataType: proto.Int32(int32(t.DType))}
		if name != "" || (orig != nil && orig.Name != nil) {
			tp.Name = proto.String(name)
		}
		if orig != nil {
			tp.DocString, tp.MetadataProps = orig.DocString, orig.MetadataProps
			tp.ProtoReflect().SetUnknown(orig.ProtoReflect().GetUnknown())
		}
	}
	st.data[tp] = &dataSource{t: t, n: n}
	return tp, nil
}

// zeroPad is the padding placeAfter asks for, at most.
var zeroPad [copyRound]byte

// placeAfter returns where, at or after off, a tensor of n bytes goes in an external
// data file: 64-byte aligned, and one of 1 MiB or more at a multiple of copyRound, so
// that copying it fills whole folios of the output (see copyRound). The padding costs at
// most 1/16 of the tensor.
func placeAfter(off, n int64) int64 {
	a := int64(64)
	if n >= roundedMin {
		a = copyRound
	}
	return off + (a-off%a)%a
}
