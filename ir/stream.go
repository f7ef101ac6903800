package ir

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/qcc-dev/qcc/ir/onnxpb"
)

// Streaming save. toProto leaves the raw_data of large inline tensors out of their
// TensorProto and records where the bytes are (the mapped input, an external file, memory,
// or a function computing them). The encoder below then writes the messages on the path
// from the model to those tensors by hand — every other field through proto.Marshal — with
// the tensor bytes as placeholders of known length, so the length prefixes are right and
// the bytes are streamed to the file from where they live, one tensor at a time. The
// output is byte for byte what proto.Marshal writes for the whole model: Go's encoder
// writes known fields in field-number order and unknown fields last, and so does this.

// streamMin is the smallest raw_data streamed rather than marshalled with its message.
const streamMin = 4096

// streamer collects the deferred tensor data of one save.
type streamer struct {
	data map[*onnxpb.TensorProto]*dataSource
}

// dataSource is one tensor's raw_data, written when the encoder reaches it.
type dataSource struct {
	t *Tensor
	n int64
}

func newStreamer() *streamer { return &streamer{data: map[*onnxpb.TensorProto]*dataSource{}} }

// part is a piece of the output: literal bytes or a tensor's data.
type part struct {
	lit []byte
	src *dataSource
}

// encoded is a message as parts, and its size in bytes.
type encoded struct {
	parts []part
	size  int64
}

func (e *encoded) lit(b []byte) {
	if len(b) > 0 {
		e.parts = append(e.parts, part{lit: b})
		e.size += int64(len(b))
	}
}

// field appends a length-delimited field holding child.
func (e *encoded) field(num protowire.Number, child *encoded) {
	var hdr []byte
	hdr = protowire.AppendTag(hdr, num, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(child.size))
	e.lit(hdr)
	e.parts = append(e.parts, child.parts...)
	e.size += child.size
}

var marshalOpts = proto.MarshalOptions{Deterministic: true}

// splice encodes m, whose fields on the path (ascending numbers in nums, each with its
// encoded values) have been cleared, by marshalling m and inserting each path field
// where proto.Marshal would have put it.
func splice(m proto.Message, nums []protowire.Number, values [][]*encoded) (*encoded, error) {
	shell, err := marshalOpts.Marshal(m)
	if err != nil {
		return nil, err
	}
	known := len(shell) - len(m.ProtoReflect().GetUnknown()) // unknown fields come last
	e := &encoded{}
	at := 0
	for k, num := range nums {
		// Skip the known fields numbered below num.
		for at < known {
			n, _, l := protowire.ConsumeField(shell[at:])
			if l < 0 {
				return nil, protowire.ParseError(l)
			}
			if n > num {
				break
			}
			at += l
		}
		e.lit(shell[:at:at])
		shell, known, at = shell[at:], known-at, 0
		for _, v := range values[k] {
			e.field(num, v)
		}
	}
	e.lit(shell)
	return e, nil
}

func (s *streamer) model(mp *onnxpb.ModelProto) (*encoded, error) {
	g, err := s.graph(mp.Graph)
	if err != nil {
		return nil, err
	}
	keep := mp.Graph
	mp.Graph = nil
	defer func() { mp.Graph = keep }()
	return splice(mp, []protowire.Number{modelGraph}, [][]*encoded{{g}})
}

func (s *streamer) graph(gp *onnxpb.GraphProto) (*encoded, error) {
	nodes := make([]*encoded, len(gp.Node))
	for i, np := range gp.Node {
		var err error
		if nodes[i], err = s.node(np); err != nil {
			return nil, err
		}
	}
	inits := make([]*encoded, len(gp.Initializer))
	for i, tp := range gp.Initializer {
		var err error
		if inits[i], err = s.tensor(tp); err != nil {
			return nil, err
		}
	}
	kn, ki := gp.Node, gp.Initializer
	gp.Node, gp.Initializer = nil, nil
	defer func() { gp.Node, gp.Initializer = kn, ki }()
	return splice(gp, []protowire.Number{graphNode, graphInitializer}, [][]*encoded{nodes, inits})
}

func (s *streamer) node(np *onnxpb.NodeProto) (*encoded, error) {
	if !s.holds(np) {
		return s.whole(np)
	}
	attrs := make([]*encoded, len(np.Attribute))
	for i, ap := range np.Attribute {
		var err error
		if attrs[i], err = s.attr(ap); err != nil {
			return nil, err
		}
	}
	keep := np.Attribute
	np.Attribute = nil
	defer func() { np.Attribute = keep }()
	return splice(np, []protowire.Number{nodeAttribute}, [][]*encoded{attrs})
}

func (s *streamer) attr(ap *onnxpb.AttributeProto) (*encoded, error) {
	var t []*encoded
	if ap.T != nil {
		e, err := s.tensor(ap.T)
		if err != nil {
			return nil, err
		}
		t = []*encoded{e}
	}
	var g []*encoded
	if ap.G != nil {
		e, err := s.graph(ap.G)
		if err != nil {
			return nil, err
		}
		g = []*encoded{e}
	}
	ts := make([]*encoded, len(ap.Tensors))
	for i, tp := range ap.Tensors {
		var err error
		if ts[i], err = s.tensor(tp); err != nil {
			return nil, err
		}
	}
	gs := make([]*encoded, len(ap.Graphs))
	for i, gp := range ap.Graphs {
		var err error
		if gs[i], err = s.graph(gp); err != nil {
			return nil, err
		}
	}
	kt, kg, kts, kgs := ap.T, ap.G, ap.Tensors, ap.Graphs
	ap.T, ap.G, ap.Tensors, ap.Graphs = nil, nil, nil, nil
	defer func() { ap.T, ap.G, ap.Tensors, ap.Graphs = kt, kg, kts, kgs }()
	return splice(ap, []protowire.Number{attrT, attrG, attrTensors, attrGraphs}, [][]*encoded{t, g, ts, gs})
}

func (s *streamer) tensor(tp *onnxpb.TensorProto) (*encoded, error) {
	src := s.data[tp]
	if src == nil {
		return s.whole(tp)
	}
	// tp is the save's own shell (raw_data unset); the bytes go in as a placeholder.
	e, err := splice(tp, []protowire.Number{tensorRawData}, [][]*encoded{{{parts: []part{{src: src}}, size: src.n}}})
	return e, err
}

func (s *streamer) whole(m proto.Message) (*encoded, error) {
	b, err := marshalOpts.Marshal(m)
	if err != nil {
		return nil, err
	}
	e := &encoded{}
	e.lit(b)
	return e, nil
}

// holds reports whether a node's attributes hold a deferred tensor or a subgraph (which may).
func (s *streamer) holds(np *onnxpb.NodeProto) bool {
	for _, ap := range np.Attribute {
		if ap.G != nil || len(ap.Graphs) > 0 || s.data[ap.T] != nil {
			return true
		}
		for _, tp := range ap.Tensors {
			if s.data[tp] != nil {
				return true
			}
		}
	}
	return false
}

// shell returns a TensorProto with orig's fields but raw_data, sharing their values.
func tensorShell(orig *onnxpb.TensorProto) *onnxpb.TensorProto {
	tp := &onnxpb.TensorProto{}
	src, dst := orig.ProtoReflect(), tp.ProtoReflect()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Number() != tensorRawData {
			copyField(dst, fd, v)
		}
		return true
	})
	dst.SetUnknown(src.GetUnknown())
	return tp
}

func copyField(dst protoreflect.Message, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
	if !fd.IsList() {
		dst.Set(fd, v) // scalars, and messages shared as toProto shares them
		return
	}
	src, l := v.List(), dst.Mutable(fd).List()
	for i := 0; i < src.Len(); i++ {
		l.Append(src.Get(i))
	}
}

// write streams e to w: literal bytes through a buffer, tensor data from where it lives.
// The buffer is small: literal runs are short, tensor data bypasses it, and each page of
// fresh memory costs a page fault, which on some virtual machines is dearer than
// copying the page.
func (e *encoded) write(f sinkFile) error {
	bw := bufio.NewWriterSize(f, 64<<10)
	for _, p := range e.parts {
		if p.src == nil {
			if _, err := bw.Write(p.lit); err != nil {
				return err
			}
			continue
		}
		if err := p.src.write(bw, f); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// write puts the tensor's bytes out: bytes still in a file (the mapped input, external
// data) are copied from file to file by the kernel, others written from memory; a tensor
// whose bytes can be computed again drops them once written.
func (d *dataSource) write(bw *bufio.Writer, f sinkFile) error {
	t := d.t
	fileCopy := func(src *os.File, off, n int64) error {
		if err := bw.Flush(); err != nil {
			return err
		}
		if err := copyFile(f, src, off, n); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		return nil
	}
	t.mu.Lock()
	sec, raw := t.sec, t.raw
	t.mu.Unlock()
	if sec != nil {
		sec.m.mu.Lock() // the copy may move the shared file's offset
		defer sec.m.mu.Unlock()
		return fileCopy(sec.m.f, sec.off, sec.n)
	}
	if e := t.External(); e != nil && raw == nil {
		src, err := os.Open(e.Path)
		if err != nil {
			return fmt.Errorf("tensor %q: external data: %w", t.Name, err)
		}
		defer src.Close()
		return fileCopy(src, e.Offset, d.n)
	}
	// Bytes made in memory. Large ones bypass the buffer, written in rounds.
	var w io.Writer = bw
	if d.n >= roundedMin {
		if err := bw.Flush(); err != nil {
			return err
		}
		pos, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return err
		}
		w = &roundWriter{w: f, pos: pos}
	}
	if ok, err := t.writeStreamed(w, d.n); ok {
		return err
	}
	b, err := t.Bytes()
	if err != nil {
		return err
	}
	if int64(len(b)) != d.n {
		return fmt.Errorf("tensor %q: %d bytes of data, want %d", t.Name, len(b), d.n)
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	t.release()
	return nil
}

// sinkFile is what a save writes to: an *os.File, or in tests one that fails.
type sinkFile interface {
	io.Writer
	io.Seeker
	io.ReaderFrom
	Name() string
	Sync() error
	Close() error
}

// createTemp makes the temporary files a save writes; tests replace it.
var createTemp = func(dir, pattern string) (sinkFile, error) { return os.CreateTemp(dir, pattern) }
