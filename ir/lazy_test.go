package ir

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLazyTensor: computed on first use, dropped by a save and computed again after it;
// ReadBytes of an external tensor leaves it unread; Equal compares contents and keeps
// nothing.
func TestLazyTensor(t *testing.T) {
	calls := 0
	lz := NewLazyTensor(Uint8, []int64{4}, func() ([]byte, error) { calls++; return []byte{1, 2, 3, 4}, nil })
	if lz.Materialised() || calls != 0 {
		t.Fatal("computed eagerly")
	}
	if b, err := lz.Bytes(); err != nil || string(b) != "\x01\x02\x03\x04" || calls != 1 {
		t.Fatalf("Bytes = %v, %v after %d calls", b, err, calls)
	}
	lz.release()
	if lz.Materialised() {
		t.Fatal("release kept the bytes")
	}
	if b, _ := lz.Bytes(); len(b) != 4 || calls != 2 {
		t.Fatal("not computed again after release")
	}
	set := NewLazyTensor(Uint8, []int64{1}, func() ([]byte, error) { return nil, errors.New("unused") })
	set.SetBytes([]byte{9})
	set.release()
	if b, err := set.Bytes(); err != nil || b[0] != 9 {
		t.Fatal("release dropped bytes set by SetBytes")
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "d"), []byte{1, 2, 3, 4, 5}, 0o644); err != nil {
		t.Fatal(err)
	}
	ext := func() *Tensor {
		e := &External{Location: "d", Path: filepath.Join(dir, "d"), Offset: 1, Length: 4}
		return &Tensor{Name: "e", DType: Uint8, Dims: []int64{4}, ext: e, decode: e.read}
	}
	e := ext()
	if b, err := e.ReadBytes(); err != nil || string(b) != "\x02\x03\x04\x05" {
		t.Fatalf("ReadBytes = %v, %v", b, err)
	}
	if e.Materialised() {
		t.Fatal("ReadBytes kept the bytes")
	}
	same := NewTensor(Uint8, []int64{4}, []byte{2, 3, 4, 5})
	other := NewTensor(Uint8, []int64{4}, []byte{2, 3, 4, 6})
	for _, c := range []struct {
		a, b *Tensor
		want bool
	}{{e, same, true}, {e, other, false}, {same, NewTensor(Uint8, []int64{2, 2}, []byte{2, 3, 4, 5}), false}, {lz, lz, true}} {
		if got, err := c.a.Equal(c.b); err != nil || got != c.want {
			t.Errorf("Equal(%s %v, %v) = %v, %v", c.a.Name, c.a.Dims, c.b.Dims, got, err)
		}
	}
	if e.Materialised() {
		t.Fatal("Equal kept the bytes")
	}
	// Derived tensors compare by their parts, computing nothing.
	fail := func() ([]byte, error) { return nil, errors.New("computed") }
	d1 := NewDerivedTensor(Uint8, []int64{8}, "twice", []*Tensor{e, nil}, fail)
	d2 := NewDerivedTensor(Uint8, []int64{8}, "twice", []*Tensor{same, nil}, fail)
	d3 := NewDerivedTensor(Uint8, []int64{8}, "twice", []*Tensor{other, nil}, fail)
	if eq, err := d1.Equal(d2); err != nil || !eq {
		t.Errorf("derived from equal parts: Equal = %v, %v", eq, err)
	}
	if eq, err := d1.Equal(d3); err != nil || eq {
		t.Errorf("derived from different parts: Equal = %v, %v", eq, err)
	}
}

// TestStreamedTensorSave: a save writes a streamed tensor through its stream, not its
// compute, inline and external; a stream that writes the wrong length fails the save.
func TestStreamedTensorSave(t *testing.T) {
	want := make([]byte, 4*streamMin)
	for i := range want {
		want[i] = byte(i * 7)
	}
	for _, mode := range []ExternalMode{ExternalNever, ExternalAlways} {
		for _, short := range []bool{false, true} {
			computed := false
			st := NewStreamedTensor(Float, []int64{streamMin}, "test", nil,
				func() ([]byte, error) { computed = true; return want, nil },
				func(w io.Writer) error {
					b := want
					if short {
						b = b[:len(b)-4]
					}
					for len(b) > 0 { // in pieces
						k := min(len(b), 1000)
						if _, err := w.Write(b[:k]); err != nil {
							return err
						}
						b = b[k:]
					}
					return nil
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
			if computed {
				t.Errorf("mode %d: the save computed the tensor instead of streaming it", mode)
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
