package ir

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// gatherBufs are more buffers than one writev takes, of uneven sizes, empty ones among
// them, and the bytes they make in order.
func gatherBufs() ([][]byte, []byte) {
	var bufs [][]byte
	var want []byte
	for i := 0; i < 2*iovMax+37; i++ {
		b := make([]byte, (i*37)%300)
		for j := range b {
			b[j] = byte(i + 3*j)
		}
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	return bufs, want
}

// TestWriteVec: gathered writes put every buffer in order, to a file directly, through a
// save's counting and buffered writers, and to a plain writer.
func TestWriteVec(t *testing.T) {
	bufs, want := gatherBufs()
	path := filepath.Join(t.TempDir(), "v")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Through a buffered sink with bytes already buffered: they must come first.
	bw := bufio.NewWriter(f)
	bw.WriteString("head")
	cw := &countingWriter{w: fileSink{bw, f}}
	n, err := WriteVec(cw, bufs)
	if err != nil || n != int64(len(want)) || cw.n != n {
		t.Fatalf("WriteVec = %d, %v (counted %d), want %d", n, err, cw.n, len(want))
	}
	if n, err := WriteVec(f, bufs); err != nil || n != int64(len(want)) {
		t.Fatalf("WriteVec to the file = %d, %v", n, err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	full := append(append([]byte("head"), want...), want...)
	if !bytes.Equal(got, full) {
		t.Errorf("file holds %d bytes, want %d in order", len(got), len(full))
	}
	var b bytes.Buffer
	if n, err := WriteVec(&b, bufs); err != nil || n != int64(len(want)) || !bytes.Equal(b.Bytes(), want) {
		t.Errorf("WriteVec to a buffer = %d, %v", n, err)
	}
}

// TestViewExternal: an external tensor at an offset that is not page aligned is viewed
// through a mapping with its own bytes; a file too short for it is an error, not a fault.
func TestViewExternal(t *testing.T) {
	dir := t.TempDir()
	want := make([]byte, 3*os.Getpagesize()+12)
	for i := range want {
		want[i] = byte(i*13 + 1)
	}
	data := append(bytes.Repeat([]byte{9}, 100), want...)
	if err := os.WriteFile(filepath.Join(dir, "w.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	ext := func(length int64) *Tensor {
		tt := NewTensor(Uint8, []int64{int64(len(want))}, nil)
		tt.raw = nil
		tt.ext = &External{Location: "w.bin", Path: filepath.Join(dir, "w.bin"), Offset: 100, Length: length}
		tt.decode = func() ([]byte, error) { return tt.ext.read() }
		return tt
	}
	for _, length := range []int64{int64(len(want)), -1} {
		b, done, err := ext(length).View()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Errorf("length %d: view holds other bytes", length)
		}
		done()
	}
	if err := os.Truncate(filepath.Join(dir, "w.bin"), 200); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ext(int64(len(want))).View(); err == nil || !strings.Contains(err.Error(), "short") {
		t.Errorf("a short external file: err = %v, want one that says it is short", err)
	}
}

// TestStreamedGatherSave: a stream that gathers its pieces (WriteVec) saves the same bytes
// inline and external, and one that gathers too few fails the save.
func TestStreamedGatherSave(t *testing.T) {
	bufs, want := gatherBufs()
	for _, mode := range []ExternalMode{ExternalNever, ExternalAlways} {
		for _, short := range []bool{false, true} {
			st := NewStreamedTensor(Uint8, []int64{int64(len(want))}, "test", nil,
				func() ([]byte, error) { return want, nil },
				func(w io.Writer) error {
					b := bufs
					if short {
						b = b[:len(b)-3]
					}
					_, err := WriteVec(w, b)
					return err
				})
			g := NewGraph("g")
			g.AddInitializer("s", st)
			m := &Model{IRVersion: 8, Opsets: []OpsetID{{Version: 13}}, Graph: g}
			out := filepath.Join(t.TempDir(), "m.onnx")
			err := Save(m, out, SaveOptions{External: mode})
			if short {
				if err == nil || !strings.Contains(err.Error(), "streamed") {
					t.Errorf("mode %d: a short stream saved (err %v)", mode, err)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			back, err := Load(out)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := back.Graph.Initializer("s").Bytes(); err != nil || !bytes.Equal(got, want) {
				t.Errorf("mode %d: saved bytes differ (%v)", mode, err)
			}
		}
	}
}

// TestRemoveValues: several unused initializers go from every list at once; one still in
// use refuses the call and nothing is removed.
func TestRemoveValues(t *testing.T) {
	g := NewGraph("g")
	var vs []*Value
	for _, name := range []string{"a", "b", "c", "d"} {
		v, err := g.AddInitializer(name, NewTensor(Float, []int64{1}, make([]byte, 4)))
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	g.ValueInfo = append(g.ValueInfo, vs[1])
	used := g.Add("Neg", []*Value{vs[3]}, 1, "n")
	g.Outputs = append(g.Outputs, used.Output(0))
	if err := g.RemoveValues([]*Value{vs[0], vs[3]}); err == nil || !strings.Contains(err.Error(), `"d"`) {
		t.Fatalf("removing a used value: err = %v", err)
	}
	if len(g.Initializers) != 4 || g.Value("a") != vs[0] {
		t.Fatalf("a refused call removed something: %d initializers", len(g.Initializers))
	}
	if err := g.RemoveValues([]*Value{vs[0], vs[1]}); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range g.Initializers {
		names = append(names, v.Name)
	}
	if strings.Join(names, ",") != "c,d" || len(g.ValueInfo) != 0 || g.Value("a") != nil || g.Value("b") != nil || vs[0].Graph() != nil {
		t.Errorf("after removing a and b: initializers %v, value info %d, a %v, b %v", names, len(g.ValueInfo), g.Value("a"), g.Value("b"))
	}
}
