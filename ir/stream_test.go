package ir

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	qcorpus "github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/ir/onnxpb"
)

// TestStreamingSaveCorpus: Save streams each corpus model (loaded from its mapped file) to
// the bytes Marshal gives for the same model, and (with no pass run) to the input's bytes.
func TestStreamingSaveCorpus(t *testing.T) {
	dir := t.TempDir()
	for _, path := range corpus(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			m, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if m.hasExternal() {
				t.Skip("external data: see TestStreamingSaveExternal")
			}
			want, err := Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, filepath.Base(path))
			if err := Save(m, out, SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("streamed save differs from Marshal (%d vs %d bytes)", len(got), len(want))
			}
			in, _ := os.ReadFile(path)
			if !bytes.Equal(got, in) {
				t.Fatalf("streamed save differs from the input (%d vs %d bytes)", len(got), len(in))
			}
		})
	}
}

// streamModel writes a model whose big tensors sit everywhere the encoder walks: graph
// initializers, a Constant's value and a tensors attribute inside an If's branch, with
// unknown fields and typed data alongside; it returns the file's path.
func streamModel(t *testing.T, dir string) string {
	t.Helper()
	big := func(name string, n int, seed byte) *onnxpb.TensorProto {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7) + seed
		}
		return &onnxpb.TensorProto{Name: proto.String(name), Dims: []int64{int64(n)}, DataType: proto.Int32(int32(Uint8)), RawData: b}
	}
	withUnknown := big("u", 3*streamMin, 9)
	withUnknown.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 5))
	typed := &onnxpb.TensorProto{Name: proto.String("typed"), Dims: []int64{2}, DataType: proto.Int32(int32(Float)), FloatData: []float32{1, 2}}
	sub := &onnxpb.GraphProto{Name: proto.String("s"),
		Node: []*onnxpb.NodeProto{{OpType: proto.String("Constant"), Output: []string{"k"},
			Attribute: []*onnxpb.AttributeProto{{Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: big("", 2*streamMin, 3)}}}},
		Output: []*onnxpb.ValueInfoProto{{Name: proto.String("k")}}}
	mp := &onnxpb.ModelProto{IrVersion: proto.Int64(8), ProducerName: proto.String("t"),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Version: proto.Int64(13)}},
		Graph: &onnxpb.GraphProto{Name: proto.String("g"),
			Initializer: []*onnxpb.TensorProto{big("w", 5*streamMin+1, 1), big("small", 10, 2), withUnknown, typed},
			Input:       []*onnxpb.ValueInfoProto{{Name: proto.String("c")}},
			Node: []*onnxpb.NodeProto{{OpType: proto.String("If"), Input: []string{"c"}, Output: []string{"y"},
				Attribute: []*onnxpb.AttributeProto{
					{Name: proto.String("then_branch"), Type: onnxpb.AttributeProto_GRAPH.Enum(), G: sub},
					{Name: proto.String("else_branch"), Type: onnxpb.AttributeProto_GRAPH.Enum(), G: sub},
					{Name: proto.String("ts"), Type: onnxpb.AttributeProto_TENSORS.Enum(), Tensors: []*onnxpb.TensorProto{big("a", streamMin, 4), big("b", 1, 5)}}}}},
			Output: []*onnxpb.ValueInfoProto{{Name: proto.String("y")}}},
		MetadataProps: []*onnxpb.StringStringEntryProto{kvp("k", "v")}}
	b, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "in.onnx")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// modify touches the model's tensors in every way a pass can: renamed, replaced, new,
// computed lazily.
func modify(t *testing.T, m *Model) {
	t.Helper()
	g := m.Graph
	if err := g.Value("w").Rename("w_renamed"); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3*streamMin)
	for i := range b {
		b[i] = byte(i)
	}
	g.Initializer("u").SetBytes(b)
	g.AddInitializer("new", NewTensor(Uint8, []int64{int64(len(b))}, b))
	calls := 0
	g.AddInitializer("lazy", NewLazyTensor(Float, []int64{streamMin}, func() ([]byte, error) {
		calls++
		out := make([]byte, 4*streamMin)
		for i := range out {
			out[i] = byte(i * 3)
		}
		return out, nil
	}))
}

// TestStreamingSaveModified: after renames, replacements, new and lazy tensors, in the
// graph and in subgraphs and attributes, the streamed file is Marshal's bytes.
func TestStreamingSaveModified(t *testing.T) {
	dir := t.TempDir()
	m, err := Load(streamModel(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	modify(t, m)
	want, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.onnx")
	if err := Save(m, out, SaveOptions{External: ExternalNever}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatalf("streamed save differs from Marshal (%d vs %d bytes)", len(got), len(want))
	}
	if lz := m.Graph.Initializer("lazy"); lz.Materialised() {
		t.Error("a lazy tensor keeps its bytes after the save")
	}
	// The save is itself a model that loads and saves to the same bytes.
	m2, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Marshal(m2)
	if err != nil || !bytes.Equal(again, want) {
		t.Fatalf("saved model does not round-trip (%v)", err)
	}
}

// TestSaveOverInput: a model saved over its own (mapped) file, twice, reads its unchanged
// tensors from the old mapping, which the rename leaves intact.
func TestSaveOverInput(t *testing.T) {
	dir := t.TempDir()
	path := streamModel(t, dir)
	m, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	modify(t, m)
	want, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := Save(m, path, SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if !bytes.Equal(got, want) {
			t.Fatalf("save %d over the input differs from Marshal", i+1)
		}
	}
}

var errDiskFull = errors.New("disk full (test)")

// failingFile fails once `left` bytes have been written, by Write or by a file copy.
type failingFile struct {
	*os.File
	left int64
}

func (f *failingFile) Write(b []byte) (int, error) {
	if int64(len(b)) > f.left {
		n, _ := f.File.Write(b[:f.left])
		f.left = 0
		return n, errDiskFull
	}
	f.left -= int64(len(b))
	return f.File.Write(b)
}

func (f *failingFile) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{f}, r)
}

// TestSaveFailingWrites: a save whose writes fail at byte N, for N across the whole
// output (model and external data), returns the error and leaves the folder as it was:
// no partial model, no temporary, an existing output untouched.
func TestSaveFailingWrites(t *testing.T) {
	dir := t.TempDir()
	m, err := Load(streamModel(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	modify(t, m)
	out := filepath.Join(dir, "out.onnx")
	if err := os.WriteFile(out, []byte("previous output"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := listDir(t, dir)
	defer func(old func(string, string) (sinkFile, error)) { createTemp = old }(createTemp)
	for _, mode := range []ExternalMode{ExternalNever, ExternalAlways} {
		// The bytes a successful save writes, to place the failures.
		var total int64
		createTemp = func(d, p string) (sinkFile, error) {
			f, err := os.CreateTemp(d, p)
			return &countingFile{File: f, n: &total}, err
		}
		ok := filepath.Join(t.TempDir(), "ok.onnx")
		if err := Save(m, ok, SaveOptions{External: mode}); err != nil {
			t.Fatal(err)
		}
		if total < 4*streamMin {
			t.Fatalf("mode %d: only %d bytes written", mode, total)
		}
		var points []int64
		for n := int64(0); n < total; n += total/97 + 1 {
			points = append(points, n)
		}
		points = append(points, 1, total-1)
		for _, n := range points {
			budget := n // shared by both files of one save, as a full disk would be
			createTemp = func(d, p string) (sinkFile, error) {
				f, err := os.CreateTemp(d, p)
				return &sharedFailingFile{File: f, left: &budget}, err
			}
			err := Save(m, out, SaveOptions{External: mode})
			if !errors.Is(err, errDiskFull) {
				t.Fatalf("mode %d, failing at byte %d of %d: err = %v, want the write error", mode, n, total, err)
			}
			if after := listDir(t, dir); after != before {
				t.Fatalf("mode %d, failing at byte %d: folder changed:\n%s\nwas\n%s", mode, n, after, before)
			}
		}
	}
}

type countingFile struct {
	*os.File
	n *int64
}

func (f *countingFile) Write(b []byte) (int, error) {
	k, err := f.File.Write(b)
	*f.n += int64(k)
	return k, err
}

func (f *countingFile) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{f}, r)
}

type sharedFailingFile struct {
	*os.File
	left *int64
}

func (f *sharedFailingFile) Write(b []byte) (int, error) {
	ff := &failingFile{File: f.File, left: *f.left}
	n, err := ff.Write(b)
	*f.left = ff.left
	return n, err
}

func (f *sharedFailingFile) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{f}, r)
}

// listDir describes a folder's files and their contents' sizes and first bytes.
func listDir(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		fmt.Fprintf(&sb, "%s %d %x\n", e.Name(), len(b), b[:min(len(b), 16)])
	}
	return sb.String()
}

// TestSaveRefusesInlineOver2GB: an inline model past protobuf's limit is refused before
// anything is written (the lazy weight is never computed), naming -external-data.
func TestSaveRefusesInlineOver2GB(t *testing.T) {
	g := NewGraph("g")
	computed := false
	g.AddInitializer("huge", NewLazyTensor(Float, []int64{1 << 29}, func() ([]byte, error) {
		computed = true
		return nil, errors.New("not to be computed")
	}))
	m := &Model{IRVersion: 8, Opsets: []OpsetID{{Version: 13}}, Graph: g}
	dir := t.TempDir()
	err := Save(m, filepath.Join(dir, "m.onnx"), SaveOptions{External: ExternalNever})
	if err == nil || !strings.Contains(err.Error(), "-external-data") || !strings.Contains(err.Error(), "2 GB") {
		t.Fatalf("err = %v, want a refusal naming -external-data", err)
	}
	if computed {
		t.Error("the refused save computed the tensor")
	}
	if s := listDir(t, dir); s != "" {
		t.Errorf("refused save left files:\n%s", s)
	}
}

// TestStreamingSaveExternal: a model read with external data and saved inline has its
// bytes copied from the data file into the stream: Marshal's bytes, and the input model.
func TestStreamingSaveExternal(t *testing.T) {
	path := filepath.Join("..", "..", "shared", "models", "bert.opset13.onnx")
	if _, err := os.Stat(path); err != nil {
		qcorpus.Skip(t, "corpus model absent: %v", err)
	}
	dir := t.TempDir()
	m, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ext := filepath.Join(dir, "ext.onnx")
	if err := Save(m, ext, SaveOptions{External: ExternalAlways}); err != nil {
		t.Fatal(err)
	}
	m2, err := Load(ext)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Marshal(m2)
	if err != nil {
		t.Fatal(err)
	}
	m3, err := Load(ext) // unread: Save copies its data file by file
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "inline.onnx")
	if err := Save(m3, out, SaveOptions{External: ExternalNever}); err != nil {
		t.Fatal(err)
	}
	m3.forEachTensor(func(tt *Tensor) {
		if tt.External() != nil && tt.Materialised() && tt.DType.ByteSize(tt.NumElements()) >= streamMin {
			t.Errorf("tensor %s read into memory to be saved", tt.Name)
		}
	})
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatalf("inline save of external data differs from Marshal (%d vs %d bytes)", len(got), len(want))
	}
	in, _ := os.ReadFile(path)
	if !bytes.Equal(got, in) {
		t.Fatalf("inline save differs from the original model (%d vs %d bytes)", len(got), len(in))
	}
}
