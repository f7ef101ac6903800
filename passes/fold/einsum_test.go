package fold

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// TestParseMatmulEinsum: the equations of a batched matrix product are read with the
// permutations that make them one, and every other Einsum is left alone.
func TestParseMatmulEinsum(t *testing.T) {
	cases := []struct {
		eq               string
		ok               bool
		permA, permB, po []int64
	}{
		{"bhid,bhjd->bhij", true, []int64{0, 1, 2, 3}, []int64{0, 1, 3, 2}, nil},
		{"bhij,bhjd->bhid", true, []int64{0, 1, 2, 3}, []int64{0, 1, 2, 3}, nil},
		{"ibnd,jbnd->ijbn", true, []int64{1, 2, 0, 3}, []int64{1, 2, 3, 0}, []int64{2, 3, 0, 1}},
		{"ijbn,jbnd->ibnd", true, []int64{2, 3, 0, 1}, []int64{1, 2, 0, 3}, []int64{2, 0, 1, 3}},
		{"ij,jk->ik", true, []int64{0, 1}, []int64{0, 1}, nil},
		{" b i d , b j d -> b i j ", true, []int64{0, 1, 2}, []int64{0, 2, 1}, nil},
		{"bhid,hde->bie", false, nil, nil, nil},      // two contracted labels
		{"bid,bjd->b", false, nil, nil, nil},         // no rows or columns left
		{"...id,...jd->...ij", false, nil, nil, nil}, // ellipsis
		{"bii,bij->bj", false, nil, nil, nil},        // a repeated label
		{"bid,bjd", false, nil, nil, nil},            // implicit output
		{"bixd,bjd->bij", false, nil, nil, nil},      // x summed over the first operand
		{"bid,bjd,bkd->bij", false, nil, nil, nil},   // three operands
	}
	for _, c := range cases {
		e, ok := parseMatmulEinsum(c.eq)
		if ok != c.ok {
			t.Errorf("%q: ok = %v, want %v", c.eq, ok, c.ok)
			continue
		}
		if ok && (!slices.Equal(e.permA, c.permA) || !slices.Equal(e.permB, c.permB) || !slices.Equal(e.permOut, c.po)) {
			t.Errorf("%q: perms %v %v %v, want %v %v %v", c.eq, e.permA, e.permB, e.permOut, c.permA, c.permB, c.po)
		}
	}
}

// TestEinsumAndSoftmaxORT: batched-product Einsums become MatMuls with Transposes, a
// Softmax over a middle axis that feeds a MatMul moves between Transposes to the last,
// another Einsum and a classifier's softmax stay, and ONNX Runtime computes the same
// outputs before and after.
func TestEinsumAndSoftmaxORT(t *testing.T) {
	orttest.RequireLib(t)
	src := `<ir_version: 8, opset_import: ["" : 13]>
g (float[2,3,5,4] q, float[2,3,5,4] k, float[5,2,3,4] qs, float[5,2,3,4] ks, float[2,3,4] o) => (float[2,3,5,4] ctx, float[5,2,3,4] ctxs, float[2,5,6] proj, float[2,3,4] cls) <
  float[3,4,6] w = {` + strings.TrimSuffix(strings.Repeat("0.1, -0.2, 0.3, ", 24), ", ") + `}
> {
  s = Einsum <equation = "bhid,bhjd->bhij"> (q, k)
  p = Softmax <axis = -1> (s)
  ctx = Einsum <equation = "bhij,bhjd->bhid"> (p, k)
  ss = Einsum <equation = "ibnd,jbnd->ijbn"> (qs, ks)
  ps = Softmax <axis = 1> (ss)
  ctxs = Einsum <equation = "ijbn,jbnd->ibnd"> (ps, ks)
  proj = Einsum <equation = "bhid,hde->bie"> (ctx, w)
  cls = Softmax <axis = 1> (o)
}`
	orig := ortcheck.Parse(t, src)
	m := ortcheck.Parse(t, src)
	st, err := Run(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Counts["fold: Einsum as MatMul"]; got != 4 {
		t.Errorf("Einsums rewritten: %d, want 4 (%v)", got, st.Counts)
	}
	if got := st.Counts["fold: Softmax moved to the last axis"]; got != 1 {
		t.Errorf("Softmaxes moved: %d, want 1", got)
	}
	ops := map[string]int{}
	for _, n := range m.Graph.Nodes() {
		ops[n.OpType]++
	}
	if ops["Einsum"] != 1 || ops["MatMul"] != 4 || ops["Softmax"] != 3 {
		t.Errorf("ops %v: want 1 Einsum left, 4 MatMuls, 3 Softmaxes", ops)
	}
	r := rand.New(rand.NewPCG(1, 2))
	in := map[string]*ndarray.Array{}
	for _, v := range orig.Graph.Inputs {
		var dims []int64
		for _, d := range v.Type.Shape {
			dims = append(dims, d.Value)
		}
		in[v.Name] = randn(r, dims...)
	}
	for _, lv := range []ort.OptLevel{ort.OptDisabled, ort.OptAll} {
		ortcheck.CheckOutputs(t, fmt.Sprintf("level %d", lv), ortcheck.RunModel(t, orig, in, lv), ortcheck.RunModel(t, m, in, lv), ortTol)
	}
}
