package transformer

import (
	"bytes"
	"fmt"
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

// TestPackQKVLazy: the packed Q/K/V weight is computed on demand from the parts as they
// were when packed (a later SetBytes on a part does not reach it), rows interleaved
// Q|K|V, and the parts are not made to keep bytes.
func TestPackQKVLazy(t *testing.T) {
	part := func(base float32) *ir.Tensor {
		return ir.FloatTensor([]int64{2, 3}, []float32{base, base + 1, base + 2, base + 3, base + 4, base + 5})
	}
	q, k, v := part(0), part(10), part(20)
	packed, err := attnPackQKV([3]*ir.Tensor{q, k, v}, "weight")
	if err != nil {
		t.Fatal(err)
	}
	if packed.Materialised() {
		t.Fatal("packed weight computed eagerly")
	}
	k.SetBytes(make([]byte, 24))
	want := ir.FloatTensor([]int64{2, 9}, []float32{0, 1, 2, 10, 11, 12, 20, 21, 22, 3, 4, 5, 13, 14, 15, 23, 24, 25})
	got, err := packed.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	wb, _ := want.Bytes()
	if !bytes.Equal(got, wb) || packed.Dims[0] != 2 || packed.Dims[1] != 9 {
		t.Fatalf("packed %v %v, want %v", packed.Dims, got, wb)
	}
	if _, err := attnPackQKV([3]*ir.Tensor{q, ir.FloatTensor([]int64{3}, []float32{1, 2, 3}), v}, "weight"); err == nil {
		t.Error("parts of different shapes packed")
	}
}

// TestPackQKVStreamed: a save streams the packed weight a block of rows at a time from
// where its parts are (memory, external data; an absent part is zeros): the saved bytes,
// inline and external, are the interleaved rows, across block boundaries too.
func TestPackQKVStreamed(t *testing.T) {
	const rows, cols = 700, 512 // 1.4 MB a part: more than one block of rows
	r := rand.New(rand.NewSource(3))
	vals := func() []float32 {
		v := make([]float32, rows*cols)
		for i := range v {
			v[i] = r.Float32()
		}
		return v
	}
	q, k := ir.FloatTensor([]int64{rows, cols}, vals()), ir.FloatTensor([]int64{rows, cols}, vals())
	dir := t.TempDir()
	// K as external data: saved with -external-data and loaded back lazily.
	model := func(name string, t *ir.Tensor) *ir.Model {
		g := ir.NewGraph("g")
		g.AddInitializer(name, t)
		return &ir.Model{IRVersion: 8, Opsets: []ir.OpsetID{{Version: 13}}, Graph: g}
	}
	src := model("k", k)
	kPath := filepath.Join(dir, "k.onnx")
	if err := ir.Save(src, kPath, ir.SaveOptions{External: ir.ExternalAlways}); err != nil {
		t.Fatal(err)
	}
	km, err := ir.Load(kPath)
	if err != nil {
		t.Fatal(err)
	}
	kExt := km.Graph.Initializer("k")
	packed, err := attnPackQKV([3]*ir.Tensor{q, kExt, nil}, "weight")
	if err != nil {
		t.Fatal(err)
	}
	qb, _ := q.Bytes()
	kb, _ := k.Bytes()
	row := cols * 4
	var want []byte
	for i := 0; i < rows; i++ {
		want = append(want, qb[i*row:(i+1)*row]...)
		want = append(want, kb[i*row:(i+1)*row]...)
		want = append(want, make([]byte, row)...)
	}
	for _, mode := range []ir.ExternalMode{ir.ExternalNever, ir.ExternalAlways} {
		m := model("qkv", packed)
		out := filepath.Join(dir, fmt.Sprintf("out%d.onnx", mode))
		if err := ir.Save(m, out, ir.SaveOptions{External: mode}); err != nil {
			t.Fatal(err)
		}
		back, err := ir.Load(out)
		if err != nil {
			t.Fatal(err)
		}
		got, err := back.Graph.Initializer("qkv").Bytes()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("mode %d: saved packed weight differs from the interleaved rows (%v)", mode, err)
		}
	}
	if got, err := packed.Bytes(); err != nil || !bytes.Equal(got, want) {
		t.Errorf("computed packed weight differs from the interleaved rows (%v)", err)
	}
}
