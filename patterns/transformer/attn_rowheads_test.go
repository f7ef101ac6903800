package transformer_test

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/prune"
	"github.com/qcc-dev/qcc/shape"
)

// rowHeadsModel is multi-query attention with Q's two heads folded into its rows (as
// GPT-BigCode writes it): q [B,S,4] viewed with the heads beside the sequence, one K and
// V head [B,S,2]; qview makes the folded Q (qf) and merge makes y from the context c.
func rowHeadsModel(qview, merge string) string {
	r := rand.New(rand.NewSource(11))
	w := func(name, dims string, n int) string {
		v := make([]string, n)
		for i := range v {
			v[i] = fmt.Sprintf("%.3f", r.Float64()-0.5)
		}
		return fmt.Sprintf("  float%s %s = {%s},\n", dims, name, strings.Join(v, ", "))
	}
	return `<ir_version: 8, opset_import: ["" : 13]>
layer (float[batch,seq,4] x) => (float[batch,seq,4] y) <
` + w("wq", "[4,4]", 16) + w("wk", "[4,2]", 8) + w("wv", "[4,2]", 8) + `  int64[3] rows = {0, -1, 2},
  int64[4] split = {0, 0, 2, 2},
  int64[4] unfold = {0, 2, -1, 2},
  int64[3] merge = {0, -1, 4},
  float rs = {0.70710677}
> {
  q = MatMul (x, wq)
  k = MatMul (x, wk)
  v = MatMul (x, wv)
` + qview + `  kt = Transpose <perm = [0, 2, 1]> (k)
  s = MatMul (qf, kt)
  sd = Mul (s, rs)
  p = Softmax <axis = -1> (sd)
  c = MatMul (p, v)
` + merge + `}
`
}

// TestRowHeadsAttention: Q's heads folded into the matmul's rows, sequence-major (a
// plain view) or head-major (after a transpose), against one K/V head, fuse into one
// multi-query attention that computes what the graph does; merging head-major rows as
// if they were sequence-major mixes heads and positions and is refused.
func TestRowHeadsAttention(t *testing.T) {
	orttest.RequireLib(t)
	seqMajor := "  qf = Reshape (q, rows)\n"
	headMajor := "  q4 = Reshape (q, split)\n  qh = Transpose <perm = [0, 2, 1, 3]> (q4)\n  qf = Reshape (qh, rows)\n"
	plainMerge := "  y = Reshape (c, merge)\n"
	headMajorMerge := "  c4 = Reshape (c, unfold)\n  ct = Transpose <perm = [0, 2, 1, 3]> (c4)\n  y = Reshape (ct, merge)\n"
	cases := []struct {
		name, qview, merge string
		fuses              bool
	}{
		{"sequence-major rows", seqMajor, plainMerge, true},
		{"head-major rows", headMajor, headMajorMerge, true},
		{"head-major rows merged as sequence-major", headMajor, plainMerge, false},
	}
	for _, c := range cases {
		for _, target := range []transformer.Target{transformer.ORT, transformer.ONNX} {
			t.Run(c.name+"/"+string(target), func(t *testing.T) {
				src := rowHeadsModel(c.qview, c.merge)
				orig := ortcheck.Parse(t, src)
				m := ortcheck.Parse(t, src)
				if _, err := shape.Infer(m); err != nil {
					t.Fatal(err)
				}
				rep, err := transformer.Fuse(m, generalFams, &transformer.Env{Model: m, Target: target, RaiseOpset: 23})
				if err != nil {
					t.Fatal(err)
				}
				prune.RemoveDead(m.Graph)
				if err := m.Verify(); err != nil {
					t.Fatal(err)
				}
				op := map[transformer.Target]string{transformer.ORT: "com.microsoft.MultiHeadAttention", transformer.ONNX: "Attention"}[target]
				if got := rep.Ops[op] == 1; got != c.fuses {
					t.Fatalf("fused %v, want %v: ops %v, left %v, refused %v", got, c.fuses, rep.Ops, rep.Left, rep.Refusals)
				}
				r := rand.New(rand.NewSource(2))
				x := make([]float32, 2*5*4)
				for i := range x {
					x[i] = float32(r.NormFloat64())
				}
				in := map[string]*ndarray.Array{"x": ndarray.FromFloat32([]int64{2, 5, 4}, x)}
				for _, lv := range []ort.OptLevel{ort.OptDisabled, ort.OptAll} {
					ortcheck.CheckOutputs(t, c.name, ortcheck.RunModel(t, orig, in, lv), ortcheck.RunModel(t, m, in, lv), 1e-5)
				}
			})
		}
	}
}
