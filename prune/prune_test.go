package prune

import (
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

func strs(s ...string) *ir.Attr {
	b := make([][]byte, len(s))
	for i, x := range s {
		b[i] = []byte(x)
	}
	return ir.TensorAttr("value", ir.NewStringTensor([]int64{int64(len(s))}, b))
}

// SameAttrs ignores order and compares values, tensors by their contents: two
// ConstantOfShape fills that differ are different nodes.
func TestSameAttrs(t *testing.T) {
	one := ir.TensorAttr("value", ir.Int64Tensor([]int64{1}, []int64{1}))
	zero := ir.TensorAttr("value", ir.Int64Tensor([]int64{1}, []int64{0}))
	axis := ir.IntAttr("axis", 0)
	cases := []struct {
		a, b []*ir.Attr
		want bool
	}{
		{[]*ir.Attr{axis, one}, []*ir.Attr{one, axis}, true},
		{[]*ir.Attr{one}, []*ir.Attr{ir.TensorAttr("value", ir.Int64Tensor([]int64{1}, []int64{1}))}, true},
		{[]*ir.Attr{one}, []*ir.Attr{zero}, false},
		{[]*ir.Attr{axis}, []*ir.Attr{ir.IntAttr("axis", 1)}, false},
		{[]*ir.Attr{axis}, nil, false},
		{nil, nil, true},
		// Strings: the same, others, split differently, and the same bytes as a uint8 tensor.
		{[]*ir.Attr{strs("ab", "c")}, []*ir.Attr{strs("ab", "c")}, true},
		{[]*ir.Attr{strs("ab", "c")}, []*ir.Attr{strs("ab", "d")}, false},
		{[]*ir.Attr{strs("ab", "c")}, []*ir.Attr{strs("a", "bc")}, false},
		{[]*ir.Attr{strs("abc")}, []*ir.Attr{ir.TensorAttr("value", ir.NewTensor(ir.Uint8, []int64{3}, []byte("abc")))}, false},
	}
	for i, c := range cases {
		if got := SameAttrs(c.a, c.b); got != c.want {
			t.Errorf("case %d: SameAttrs = %v, want %v", i, got, c.want)
		}
	}
}

// Initializers merge only when type, shape and bytes all agree: the same bytes under
// another shape or type are another tensor.
func TestDedupeInitializers(t *testing.T) {
	g := ir.NewGraph("g")
	f32 := ir.FloatTensor([]int64{2}, []float32{1, 2})
	b, _ := f32.Bytes()
	w1, _ := g.AddInitializer("w1", f32)
	w2, _ := g.AddInitializer("w2", ir.NewTensor(ir.Float, []int64{1, 2}, b))
	w3, _ := g.AddInitializer("w3", ir.NewTensor(ir.Int32, []int64{2}, b))
	w4, _ := g.AddInitializer("w4", ir.FloatTensor([]int64{2}, []float32{1, 2}))
	w5, _ := g.AddInitializer("w5", ir.FloatTensor([]int64{2}, []float32{1, 3}))
	var sums []*ir.Node
	for _, w := range []*ir.Value{w1, w2, w3, w4, w5} {
		s := g.Add("Identity", []*ir.Value{w}, 1, "s")
		sums = append(sums, s)
		g.Outputs = append(g.Outputs, s.Output(0))
	}
	if _, inits := DedupeCounts(g); inits != 1 {
		t.Fatalf("%d initializers merged, want 1 (w4 into w1)", inits)
	}
	for i, want := range []string{"w1", "w2", "w3", "w1", "w5"} {
		if got := sums[i].Input(0).Name; got != want {
			t.Errorf("reader of w%d reads %s, want %s", i+1, got, want)
		}
	}
}
