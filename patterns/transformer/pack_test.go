package transformer

import (
	"bytes"
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
