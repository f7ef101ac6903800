package ir

import (
	qcorpus "github.com/qcc-dev/qcc/internal/corpus"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	"github.com/qcc-dev/qcc/ir/onnxpb"
)

// corpus returns every .onnx file of the shared model corpus, or skips.
func corpus(t *testing.T) []string {
	t.Helper()
	root := filepath.Join("..", "..", "shared", "models")
	if _, err := os.Stat(root); err != nil {
		qcorpus.Skip(t, "model corpus %s not present: %v", root, err)
	}
	var files []string
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && filepath.Ext(p) == ".onnx" {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	if len(files) == 0 {
		qcorpus.Skip(t, "model corpus is empty")
	}
	return files
}

// TestRoundTripCorpus: load then save gives a model equal to the original (protocmp), and
// byte-identical here, since the exporter's encoding is the canonical one.
func TestRoundTripCorpus(t *testing.T) {
	for _, path := range corpus(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// The wire-level decoder reads what proto.Unmarshal reads.
			var want onnxpb.ModelProto
			if err := proto.Unmarshal(data, &want); err != nil {
				t.Fatal(err)
			}
			got, err := newWireDecoder(data, true).model()
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&want, got) {
				t.Fatal("wire-level decoding differs from proto.Unmarshal")
			}
			mb, err := LoadBytes(data, filepath.Dir(path))
			if err != nil {
				t.Fatal(err)
			}
			// Load maps the file: the same model, with inline tensors aliasing the map.
			m, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			checkAliased(t, m)
			if err := m.Verify(); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if m.hasExternal() && !externalPresent(m) {
				// Loading succeeded without the weights: they are read lazily.
				t.Logf("external data absent; load and Verify checked only")
				return
			}
			out, err := Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			var a, b onnxpb.ModelProto
			if err := proto.Unmarshal(data, &a); err != nil {
				t.Fatal(err)
			}
			if err := proto.Unmarshal(out, &b); err != nil {
				t.Fatal(err)
			}
			if m.hasExternal() {
				// Marshal inlines external data: compare with the data locations dropped.
				stripExternal(&a)
				stripExternal(&b)
			}
			if diff := cmp.Diff(&a, &b, protocmp.Transform(), protocmp.IgnoreFields(&onnxpb.TensorProto{}, "raw_data")); diff != "" {
				t.Fatalf("round trip changed the model (-in +out):\n%.3000s", diff)
			}
			if !m.hasExternal() && string(out) != string(data) {
				t.Errorf("round trip is equal but not byte-identical (%d vs %d bytes)", len(out), len(data))
			}
			if !m.hasExternal() && !proto.Equal(&a, &b) {
				t.Fatal("raw data differs after round trip")
			}
			outb, err := Marshal(mb)
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != string(outb) {
				t.Fatal("mapped and in-memory loads save differently")
			}
		})
	}
}

// checkAliased checks that every inline raw_data tensor of a mapped model points into the
// mapping rather than at a copy.
func checkAliased(t *testing.T, m *Model) {
	t.Helper()
	var aliased, copied int
	m.forEachTensor(func(tt *Tensor) {
		tp, _ := tt.orig.(*onnxpb.TensorProto)
		if tp == nil || len(tp.RawData) == 0 || tt.ext != nil {
			return
		}
		s := tt.sec
		if s == nil || &s.m.data[s.off] != &tt.raw[0] || s.n != int64(len(tt.raw)) {
			copied++
			return
		}
		aliased++
	})
	if copied > 0 {
		t.Errorf("%d inline tensors copied, %d aliased", copied, aliased)
	}
}

func stripExternal(mp *onnxpb.ModelProto) {
	for _, tp := range mp.Graph.Initializer {
		tp.ExternalData, tp.DataLocation, tp.RawData = nil, nil, nil
	}
}

func externalPresent(m *Model) bool {
	ok := true
	m.forEachTensor(func(t *Tensor) {
		if e := t.External(); e != nil {
			if _, err := os.Stat(e.Path); err != nil {
				ok = false
			}
		}
	})
	return ok
}

// TestExternalDataRoundTrip saves a corpus model with external data, checks the layout
// (aligned offsets, small tensors inline) and that loading it back gives the same model.
func TestExternalDataRoundTrip(t *testing.T) {
	path := filepath.Join("..", "..", "shared", "models", "bert.opset13.onnx")
	if _, err := os.Stat(path); err != nil {
		qcorpus.Skip(t, "corpus model absent: %v", err)
	}
	m, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "m.onnx")
	if err := Save(m, out, SaveOptions{External: ExternalAlways}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(out + ".data")
	if err != nil {
		t.Fatal(err)
	}
	m2, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	var ext, inline int
	m2.forEachTensor(func(tt *Tensor) {
		if e := tt.External(); e != nil {
			ext++
			if e.Offset%64 != 0 {
				t.Errorf("tensor %s at unaligned offset %d", tt.Name, e.Offset)
			}
			if tt.Materialised() {
				t.Errorf("tensor %s read before use", tt.Name)
			}
		} else {
			inline++
		}
	})
	if ext == 0 || st.Size() == 0 {
		t.Fatalf("no tensor stored externally (data file %d bytes)", st.Size())
	}
	t.Logf("%d tensors external (%d bytes), %d inline", ext, st.Size(), inline)
	// Saving again with auto mode keeps the data external, and the bytes stream across.
	out2 := filepath.Join(dir, "again.onnx")
	if err := Save(m2, out2, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(out2 + ".data"); err != nil {
		t.Fatalf("auto mode dropped external data: %v", err)
	}
	m3, err := Load(out2)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Marshal(m3)
	if err != nil {
		t.Fatal(err)
	}
	var a, b onnxpb.ModelProto
	proto.Unmarshal(want, &a)
	proto.Unmarshal(got, &b)
	if diff := cmp.Diff(&a, &b, protocmp.Transform()); diff != "" {
		t.Fatalf("external round trip changed the model:\n%.2000s", diff)
	}
	// Nothing but the two outputs and their data files is left behind (temporaries renamed).
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("unexpected files after save: %v", names)
	}
}
