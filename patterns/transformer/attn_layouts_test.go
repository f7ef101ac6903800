package transformer_test

import (
	"fmt"
	"maps"
	"math/rand"
	"slices"
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
// multi-query attention that computes what the graph does, however the context is merged;
// a softmax across the folded rows is not attention and is refused.
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
		// An odd but exact view: the output holds the atoms in another order.
		{"head-major rows merged as sequence-major", headMajor, plainMerge, true},
		// The softmax over the rows normalises across positions and heads: not attention.
		{"softmax over the folded rows", seqMajor + "  #rows\n", plainMerge, false},
	}
	for _, c := range cases {
		for _, target := range []transformer.Target{transformer.ORT, transformer.ONNX} {
			t.Run(c.name+"/"+string(target), func(t *testing.T) {
				src := rowHeadsModel(c.qview, c.merge)
				if strings.Contains(src, "#rows") {
					src = strings.Replace(strings.Replace(src, "  #rows\n", "", 1), "Softmax <axis = -1>", "Softmax <axis = 1>", 1)
				}
				fuseAndCompare(t, src, target, c.fuses, 2)
			})
		}
	}
}

// seqFirstModel is nn.MultiheadAttention's layout: the tokens sequence-first [S, B, 4],
// two heads viewed [S, B·2, 2] and transposed to [B·2, S, 2], the context merged back to
// [S·B, 4] for the output projection; K's length is read off a transposed K (a Shape
// reader the fusion leaves in place).
func seqFirstModel(merge string) string {
	r := rand.New(rand.NewSource(5))
	w := func(name string) string {
		v := make([]string, 16)
		for i := range v {
			v[i] = fmt.Sprintf("%.3f", r.Float64()-0.5)
		}
		return fmt.Sprintf("  float[4,4] %s = {%s},\n", name, strings.Join(v, ", "))
	}
	return `<ir_version: 8, opset_import: ["" : 13]>
layer (float[batch,seq,4] x) => (float[batch,seq,4] y, int64[3] klen) <
` + w("wq") + w("wk") + w("wv") + w("wo") + `  int64[3] heads = {0, -1, 2},
  int64[2] tokens = {-1, 4},
  float rs = {0.70710677}
> {
  xs = Transpose <perm = [1, 0, 2]> (x)
  q = MatMul (xs, wq)
  k = MatMul (xs, wk)
  v = MatMul (xs, wv)
  qr = Reshape (q, heads)
  kr = Reshape (k, heads)
  vr = Reshape (v, heads)
  qt = Transpose <perm = [1, 0, 2]> (qr)
  kt = Transpose <perm = [1, 2, 0]> (kr)
  vt = Transpose <perm = [1, 0, 2]> (vr)
  k1 = Transpose <perm = [1, 0, 2]> (kr)
  klen = Shape (k1)
  s = MatMul (qt, kt)
  sd = Mul (s, rs)
  p = Softmax <axis = -1> (sd)
  c = MatMul (p, vt)
` + merge + `}
`
}

// TestSequenceFirstAttention: a sequence-first block (the sequence axis first, the
// batch second, as the graph input's batch symbol shows) fuses into one attention with
// its inputs and output transposed, and computes what the graph does; a merge that cuts
// across the sequence is refused.
func TestSequenceFirstAttention(t *testing.T) {
	orttest.RequireLib(t)
	seqFirst := "  ct = Transpose <perm = [1, 0, 2]> (c)\n  cm = Reshape (ct, tokens)\n  o = MatMul (cm, wo)\n  xsh = Shape (xs)\n  os = Reshape (o, xsh)\n  y = Transpose <perm = [1, 0, 2]> (os)\n"
	// [B·2, S, 2] merged straight to [B·S, 4]: each row holds two positions of one head,
	// which no view of [B, S, heads, D] is.
	wrong := "  cm = Reshape (c, tokens)\n  o = MatMul (cm, wo)\n  xsh = Shape (xs)\n  os = Reshape (o, xsh)\n  y = Transpose <perm = [1, 0, 2]> (os)\n"
	for _, c := range []struct {
		name, merge string
		fuses       bool
	}{{"merged sequence-first", seqFirst, true}, {"merged across the sequence", wrong, false}} {
		for _, target := range []transformer.Target{transformer.ORT, transformer.ONNX} {
			t.Run(c.name+"/"+string(target), func(t *testing.T) {
				src := seqFirstModel(c.merge)
				fuseAndCompare(t, src, target, c.fuses, 3)
			})
		}
	}
}

// TestFoldedHeadsRefusals: folded heads the fused operators cannot read are refused
// with the reason: heads folded into K's (and V's) sequence axis, and grouped-query heads
// folded into Q's rows beside K/V heads of their own.
func TestFoldedHeadsRefusals(t *testing.T) {
	cases := []struct{ name, body, want string }{
		{"heads in the key axis", `
  q = MatMul (x, wq2)
  k = MatMul (x, wk)
  v = MatMul (x, wv)
  kf = Reshape (k, rows)
  vf = Reshape (v, rows)
  kt = Transpose <perm = [0, 2, 1]> (kf)
  s = MatMul (q, kt)
  p = Softmax <axis = -1> (s)
  c = MatMul (p, vf)
  y = Reshape (c, merge2)
`, "K folds heads"},
		{"grouped heads in the rows", `
  q = MatMul (x, wq8)
  k = MatMul (x, wk)
  v = MatMul (x, wv)
  q5 = Reshape (q, split5)
  qt = Transpose <perm = [0, 2, 1, 3, 4]> (q5)
  qf = Reshape (qt, grows)
  k4 = Reshape (k, split)
  kt = Transpose <perm = [0, 2, 3, 1]> (k4)
  v4 = Reshape (v, split)
  vt = Transpose <perm = [0, 2, 1, 3]> (v4)
  s = MatMul (qf, kt)
  p = Softmax <axis = -1> (s)
  c = MatMul (p, vt)
  c5 = Reshape (c, split5t)
  ct = Transpose <perm = [0, 2, 1, 3, 4]> (c5)
  y = Reshape (ct, merge8)
`, "has heads"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			z := func(n int) string { return strings.TrimSuffix(strings.Repeat("0.1, ", n), ", ") }
			src := `<ir_version: 8, opset_import: ["" : 13]>
layer (float[batch,seq,4] x) => (float[batch,seq,?] y) <
  float[4,2] wq2 = {` + z(8) + `}, float[4,8] wq8 = {` + z(32) + `},
  float[4,4] wk = {` + z(16) + `}, float[4,4] wv = {` + z(16) + `},
  int64[3] rows = {0, -1, 2}, int64[3] merge2 = {0, 0, 2}, int64[3] merge8 = {0, 0, 8},
  int64[4] split = {0, 0, 2, 2}, int64[5] split5 = {0, 0, 2, 2, 2},
  int64[4] grows = {0, 2, -1, 2}, int64[5] split5t = {0, 2, -1, 2, 2}
> {` + c.body + "}\n"
			m := ortcheck.Parse(t, src)
			if _, err := shape.Infer(m); err != nil {
				t.Fatal(err)
			}
			rep, err := transformer.Fuse(m, generalFams, &transformer.Env{Model: m, Target: transformer.ORT})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Ops["com.microsoft.MultiHeadAttention"] != 0 {
				t.Fatal("fused")
			}
			expectReason(t, append(refusalReasons(rep.Refusals), rep.Softmax...), c.want)
		})
	}
}

// TestUnfoldedOperands: operands whose only [B,S,N,D]-like tensors hold the heads folded
// into the batch ([B·N, S, D]: V scaled there, Q, K and V sliced from a packed per-head
// tensor, SAM's unbind of [3, B·N, S, D]) are read after a Reshape unfolding the batch and
// the heads, and compute what the graph does.
func TestUnfoldedOperands(t *testing.T) {
	orttest.RequireLib(t)
	cases := map[string]string{
		"V scaled in the [B·N, S, D] view": fairseq3D("  vs = Mul (v3, half)", "vs", fairseqMerge),
		"packed per head":                  packedPerHead,
	}
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		for _, target := range []transformer.Target{transformer.ORT, transformer.ONNX} {
			t.Run(name+"/"+string(target), func(t *testing.T) { fuseAndCompare(t, cases[name], target, true, 5) })
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// gridModel is one attention layer over a 2×2 grid of tokens [B, h, w, C] (SAM's image
// encoder layout): separate projections of the grid, two heads of two, term added on the
// scores viewed as [B, N, h, w, h, w], the output a grid again.
func gridModel(term string) string {
	return `<ir_version: 8, opset_import: ["" : 13]>
g (float[batch,2,2,4] x) => (y) <
  float[4,4] wq = {0.1, -0.2, 0.3, 0.1, 0.2, 0.1, -0.1, 0.2, -0.3, 0.2, 0.1, 0.1, 0.2, -0.1, 0.3, 0.1},
  float[4,4] wk = {0.2, 0.1, -0.1, 0.3, 0.1, -0.2, 0.2, 0.1, 0.3, 0.1, -0.2, 0.1, -0.1, 0.2, 0.1, 0.3},
  float[4,4] wv = {0.3, 0.1, 0.2, -0.1, 0.1, 0.2, -0.3, 0.1, 0.2, -0.1, 0.1, 0.3, 0.1, 0.2, 0.1, -0.2},
  int64[4] split = {-1, 4, 2, 2},
  int64[6] view = {-1, 2, 2, 2, 2, 2},
  int64[4] back = {-1, 2, 4, 4},
  int64[5] qgrid = {-1, 2, 2, 2, 2},
  int64[4] out = {-1, 2, 2, 4},
  int64[1] a4 = {4},
  float rs = {0.70710677},
  float[2,2] rk = {0.5, -1.0, 1.5, 0.25},
  float[1,1,2,2,2,1] ch = {0.5, -1.0, 0.25, 2.0, -0.5, 1.0, 0.0, -2.0},
  float[2,2,1,2] cw = {1.0, -0.5, 0.3, 0.7, -1.2, 0.4, 0.9, -0.1}
> {
  q = MatMul (x, wq)
  k = MatMul (x, wk)
  v = MatMul (x, wv)
  qr = Reshape (q, split)
  qt = Transpose <perm = [0, 2, 1, 3]> (qr)
  kr = Reshape (k, split)
  kt = Transpose <perm = [0, 2, 3, 1]> (kr)
  vr = Reshape (v, split)
  vt = Transpose <perm = [0, 2, 1, 3]> (vr)
  s = MatMul (qt, kt)
  sd = Mul (s, rs)
  s6 = Reshape (sd, view)
` + term + `
  sm = Reshape (t6, back)
  p = Softmax <axis = -1> (sm)
  c = MatMul (p, vt)
  ct = Transpose <perm = [0, 2, 1, 3]> (c)
  y = Reshape (ct, out)
}`
}

// TestGridAttention: attention over a grid of tokens [B, h, w, C], with terms added on
// the scores viewed as [B, N, h, w, h, w] — constant, of a lower rank, and computed from
// Q (SAM's q·Rwᵀ over the key columns) — becomes one fused attention whose bias is each
// term expanded over the grid and merged back, and computes what the graph does.
func TestGridAttention(t *testing.T) {
	orttest.RequireLib(t)
	cases := map[string]string{
		"constant over the rows":  "  t6 = Add (s6, ch)",
		"lower rank":              "  t6 = Add (s6, cw)",
		"from Q over the columns": "  qg = Reshape (qt, qgrid)\n  rw = MatMul (qg, rk)\n  ru = Unsqueeze (rw, a4)\n  t6 = Add (s6, ru)",
	}
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		for _, target := range []transformer.Target{transformer.ORT, transformer.ONNX} {
			t.Run(name+"/"+string(target), func(t *testing.T) { fuseAndCompare(t, gridModel(cases[name]), target, true, 6) })
		}
	}
}

// TestPartialHeadTerms: heads held in two axes, [B, G, H, S, T] (MaxViT's windows and
// heads), and a constant term that varies over one of them only: the bias expands it over
// the other, and the fused attention computes what the graph did.
func TestPartialHeadTerms(t *testing.T) {
	orttest.RequireLib(t)
	cases := map[string]string{
		"outer heads":         "float[1,2,1,1,1] tb = {0.5, -1.5}",
		"inner heads":         "float[2,1,1] tb = {0.75, -0.25}",
		"inner heads, rank 5": "float[1,1,2,1,1] tb = {-0.5, 1}",
	}
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		src := `<ir_version: 8, opset_import: ["" : 13]>` + "\n" + strings.Replace(heads5D("", "tb"), "  int64[3] merge = {0, 0, 4}", "  int64[3] merge = {0, 0, 4},\n  "+cases[name], 1)
		for _, target := range []transformer.Target{transformer.ORT, transformer.ONNX} {
			t.Run(name+"/"+string(target), func(t *testing.T) { fuseAndCompare(t, src, target, true, 5) })
		}
	}
}

// TestGridAttentionRefusals: a grid whose width is a symbol cannot have a term on its
// [B, N, h, w, h, w] view expanded over the grid (Expand spells the factors' sizes).
func TestGridAttentionRefusals(t *testing.T) {
	src := strings.NewReplacer(
		"(float[batch,2,2,4] x)", "(float[batch,2,width,4] x)",
		"  int64[4] split = {-1, 4, 2, 2},\n", "  int64[4] split = {0, -1, 2, 2},\n  int64[1] m1 = {-1}, int64[1] c2 = {2}, int64[1] c3 = {3},\n  float[1,1,2,1,2,1] rows = {0.5, -1.0, 0.25, 2.0},\n",
		"  int64[6] view = {-1, 2, 2, 2, 2, 2},\n", "",
		"  int64[4] back = {-1, 2, 4, 4},\n", "",
		"  int64[4] out = {-1, 2, 2, 4},\n", "  int64[4] out = {0, 2, -1, 4},\n",
		"> {\n", "> {\n  sh = Shape (x)\n  wd = Slice (sh, c2, c3)\n  sq = Mul (wd, c2)\n  view = Concat <axis = 0> (m1, c2, c2, wd, c2, wd)\n  back = Concat <axis = 0> (m1, c2, sq, sq)\n",
	).Replace(gridModel("  t6 = Add (s6, rows)"))
	// A bias given per example and head, the file naming its head count: two unknown
	// dims beside the grid leave its merged view without one Reshape.
	perHead := strings.Replace(gridModel("  t6 = Add (s6, tb)"), "(float[batch,2,2,4] x)", "(float[batch,2,2,4] x, float[batch,heads,2,2,2,2] tb)", 1)
	runValidRefusals(t, generalFams, []refusalCase{
		{name: "term on a grid of symbolic width", src: src, want: "the sequence is split into 2 and width, not numbers"},
		{name: "term of two symbols beside the grid", src: perHead, want: "has more than one unknown dim beside the split sequence"},
	})
}

// fuseAndCompare fuses the one-layer model src for target, checks that it became one
// fused attention exactly when fuses says so, and that ORT computes the same y either way.
func fuseAndCompare(t *testing.T, src string, target transformer.Target, fuses bool, seed int64) {
	t.Helper()
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
	if got := rep.Ops[op] == 1; got != fuses {
		t.Fatalf("fused %v, want %v: ops %v, left %v, refused %v", got, fuses, rep.Ops, rep.Left, rep.Refusals)
	}
	// x as the model declares it, a batch of 2.
	var dims []int64
	n := int64(1)
	for _, d := range orig.Graph.Inputs[0].Type.Shape {
		dims = append(dims, max(d.Value, 2*int64(btoi(!d.Known))))
		n *= dims[len(dims)-1]
	}
	r := rand.New(rand.NewSource(seed))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	in := map[string]*ndarray.Array{"x": ndarray.FromFloat32(dims, x)}
	for _, lv := range []ort.OptLevel{ort.OptDisabled, ort.OptAll} {
		ortcheck.CheckOutputs(t, "y", ortcheck.RunModel(t, orig, in, lv), ortcheck.RunModel(t, m, in, lv), 1e-5)
	}
}
