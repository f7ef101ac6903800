package prune

import (
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

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
	}
	for i, c := range cases {
		if got := SameAttrs(c.a, c.b); got != c.want {
			t.Errorf("case %d: SameAttrs = %v, want %v", i, got, c.want)
		}
	}
}
