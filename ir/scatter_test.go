package ir

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// scatterDst cuts n bytes into more buffers than one preadv takes, of uneven sizes,
// empty ones among them.
func scatterDst(n int) [][]byte {
	var dst [][]byte
	for i := 0; n > 0; i++ {
		k := min(n, (i*37)%300)
		dst = append(dst, make([]byte, k))
		n -= k
	}
	return dst
}

// TestScatterRead: a tensor's bytes read into scattered buffers from its external file
// (at an offset that is not page aligned), from the model file it was mapped from, and
// from memory are its bytes; reading past them, or a file too short, is an error.
func TestScatterRead(t *testing.T) {
	dir := t.TempDir()
	want := make([]byte, 300_000)
	for i := range want {
		want[i] = byte(i*13 + 1)
	}
	data := append(bytes.Repeat([]byte{9}, 100), want...)
	if err := os.WriteFile(filepath.Join(dir, "w.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	ext := NewTensor(Uint8, []int64{int64(len(want))}, nil)
	ext.raw = nil
	ext.ext = &External{Location: "w.bin", Path: filepath.Join(dir, "w.bin"), Offset: 100, Length: int64(len(want))}
	ext.decode = func() ([]byte, error) { return ext.ext.read() }

	g := NewGraph("g")
	g.AddInitializer("w", NewTensor(Uint8, []int64{int64(len(want))}, want))
	inline := filepath.Join(dir, "m.onnx")
	if err := Save(&Model{IRVersion: 8, Opsets: []OpsetID{{Version: 13}}, Graph: g}, inline, SaveOptions{External: ExternalNever}); err != nil {
		t.Fatal(err)
	}
	m, err := Load(inline)
	if err != nil {
		t.Fatal(err)
	}
	mapped := m.Graph.Initializer("w")
	if mapped.sec == nil {
		t.Fatal("the inline tensor is not mapped from its file")
	}
	for name, tt := range map[string]*Tensor{"external": ext, "mapped": mapped, "memory": NewTensor(Uint8, []int64{int64(len(want))}, want)} {
		r, done, err := tt.OpenScatter()
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int{0, 4097} {
			dst := scatterDst(len(want) - off)
			if err := r.ReadScattered(int64(off), dst); err != nil {
				t.Fatalf("%s at %d: %v", name, off, err)
			}
			if got := bytes.Join(dst, nil); !bytes.Equal(got, want[off:]) {
				t.Errorf("%s at %d: other bytes read", name, off)
			}
		}
		if err := r.ReadScattered(10, [][]byte{make([]byte, len(want))}); err == nil {
			t.Errorf("%s: reading past the end is no error", name)
		}
		done()
	}
	if err := os.Truncate(filepath.Join(dir, "w.bin"), 200); err != nil {
		t.Fatal(err)
	}
	r, done, err := ext.OpenScatter()
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if err := r.ReadScattered(0, scatterDst(len(want))); err == nil || !strings.Contains(err.Error(), "short") {
		t.Errorf("a short external file: err = %v, want one that says it is short", err)
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
