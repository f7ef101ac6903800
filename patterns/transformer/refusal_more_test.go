package transformer_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// runValidRefusals is runRefusals for near misses that must be valid models: ONNX
// Runtime loads each (its type and shape inference run) before the refusal is checked.
func runValidRefusals(t *testing.T, fams []*transformer.Family, cases []refusalCase) {
	t.Helper()
	orttest.RequireLib(t)
	for _, c := range cases {
		src := c.src
		if !strings.HasPrefix(src, "<") {
			opset := c.opset
			if opset == "" {
				opset = "13"
			}
			src = `<ir_version: 8, opset_import: ["" : ` + opset + `, "com.microsoft" : 1]>` + "\n" + src
		}
		b, err := ir.Marshal(ortcheck.Parse(t, src))
		if err != nil {
			t.Fatal(err)
		}
		s, err := ort.NewSessionFromBytes(b, ort.Options{OptLevel: ort.OptDisabled, IntraOpThreads: 1})
		if err != nil {
			t.Errorf("%s: ONNX Runtime refuses the near miss: %v", c.name, err)
			continue
		}
		s.Close()
	}
	runRefusals(t, fams, cases)
}

// moreConsts are constants the near misses below add to generalNearMiss's.
const moreConsts = `  float qscale = {0.01},
  int64[1] o1 = {1},
  int64[1] three = {3},
  int64[1] big1 = {1000},
  float[1,1,1,1,1] half5 = {0.5}`

// TestAttentionLayoutRefusals: Q, K and V paths whose layout ops or matmul pairing no
// fused operator reads.
func TestAttentionLayoutRefusals(t *testing.T) {
	const plain = "  p = Softmax <axis = -1> (sd)\n  c = MatMul (p, vt)\n"
	const qt = "  qt = Transpose <perm = [0, 2, 1, 3]> (qr)"
	near := func(inputs, core string, edits ...string) string {
		return generalNearMiss(inputs, core, append([]string{"  float qscale = {0.01}", moreConsts}, edits...)...)
	}
	cases := []refusalCase{
		{name: "Q scaled by a rank-5 constant", src: near("", plain, qt, "  q5 = Mul (qr, half5)\n  qs = Squeeze (q5, z1)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qs)"),
			want: "broadcasts its input"},
		{name: "Q reshaped to a shape read at run time", src: near("int64[r] shp", plain, qt, "  qs = Reshape (qr, shp)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qs)"),
			want: "output shape unknown"},
		{name: "Q sliced on the sequence", src: near("", plain, qt, "  qs = Slice (qr, z1, big1, o1)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qs)"),
			want: "takes"},
		{name: "Q strided on the sequence", src: near("", plain, qt, "  qs = Slice (qr, z1, big1, o1, t1)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qs)"),
			want: "a strided slice of"},
		{name: "Q every third channel", src: near("", plain, qt, "  qs = Slice (qr, z1, big1, a3, three)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qs)",
			"  kt = Transpose <perm = [0, 2, 3, 1]> (kr)", "  ks = Slice (kr, z1, o1, a3)\n  kt = Transpose <perm = [0, 2, 3, 1]> (ks)"),
			want: "takes every"},
		{name: "K shared by the batch and heads", src: near("float[seq,2] kin", plain, "  kt = Transpose <perm = [0, 2, 3, 1]> (kr)", "  kt = Transpose <perm = [1, 0]> (kin)"),
			want: "Q and K: ranks 4 and 2"},
		{name: "K of one batch row", src: near("float[1,seq,4] xk", plain, "  km = MatMul (x, wk)", "  km = MatMul (xk, wk)"),
			want: "Q and K: batch axis"},
		{name: "V of one batch row", src: near("float[1,seq,4] xv", plain, "  vm = MatMul (x, wv)", "  vm = MatMul (xv, wv)"),
			want: "probs and V: batch axis"},
		{name: "V shared by the batch and heads", src: near("float[seq,2] vin", "  p = Softmax <axis = -1> (sd)\n  c = MatMul (p, vin)\n"),
			want: "probs of rank 4 against V of rank 2"},
		// One K head of two channels, repeated over the heads by a shape the graph reads.
		{name: "K expanded to a shape read at run time", src: near("int64[4] eshape", plain, "  kr = Reshape (ka, split)",
			"  k2 = Slice (ka, z1, t1, last)\n  kr = Reshape (k2, kv1)", "  kt = Transpose <perm = [0, 2, 3, 1]> (kr)", "  ke = Expand (kr, eshape)\n  kt = Transpose <perm = [0, 2, 3, 1]> (ke)",
			"  int64[1] o1 = {1},", "  int64[1] o1 = {1},\n  int64[4] kv1 = {0, 0, 1, 2},"),
			want: "grows from"},
		{name: "K expanded to a rank read at run time", src: near("int64[r] eshape", plain, "  kt = Transpose <perm = [0, 2, 3, 1]> (kr)", "  ke = Expand (kr, eshape)\n  kt = Transpose <perm = [0, 2, 3, 1]> (ke)"),
			want: "output shape unknown"},
		// With two positions and two heads, probs [B, S, N, T] (heads and queries swapped)
		// multiply V [B, N, T, D]: the rows of each product are heads, not queries.
		{name: "probs with the heads as rows", src: near("", "  p = Softmax <axis = -1> (sd)\n  pt = Transpose <perm = [0, 2, 1, 3]> (p)\n  c = MatMul (pt, vt)\n", "float[batch,seq,4] x", "float[batch,2,4] x"),
			want: "probs·V: the query sequence is not the second-last axis"},
		{name: "scores reshaped to a shape read at run time", src: near("int64[4] shp", "  sr = Reshape (sd, shp)\n  p = Softmax <axis = -1> (sr)\n  c = MatMul (p, vt)\n"),
			want: "scores: "},
	}
	for i := range cases {
		cases[i].fused = []string{"com.microsoft.MultiHeadAttention", "com.microsoft.Attention"}
	}
	runValidRefusals(t, generalAttnFams, cases)
}

// attn3D is single-head attention over [B, S, C] with Q, K and V given.
func attn3D(inputs, q, k, v string) string {
	return `g (float[batch,seq,4] x` + inputs + `) => (y) <
  float[4,4] wq = {0.1, -0.2, 0.3, 0.1, 0.2, 0.1, -0.1, 0.2, -0.3, 0.2, 0.1, 0.1, 0.2, -0.1, 0.3, 0.1},
  float[4,4] wk = {0.2, 0.1, -0.1, 0.3, 0.1, -0.2, 0.2, 0.1, 0.3, 0.1, -0.2, 0.1, -0.1, 0.2, 0.1, 0.3}
> {
  q = ` + q + `
  k = ` + k + `
  kt = Transpose <perm = [0, 2, 1]> (k)
  s = MatMul (q, kt)
  p = Softmax <axis = -1> (s)
  y = MatMul (p, ` + v + `)
}`
}

// TestAttentionSizeRefusals: single-head attention whose head sizes are not known.
func TestAttentionSizeRefusals(t *testing.T) {
	cases := []refusalCase{
		{name: "Q and K of a symbolic width", src: attn3D(", float[batch,seq,d] qin, float[batch,seq,d] kin", "Identity (qin)", "Identity (kin)", "x"),
			want: "Q's head size d and K's d differ or are unknown"},
		{name: "V of a symbolic width", src: attn3D(", float[batch,seq,dv] vin", "MatMul (x, wq)", "MatMul (x, wk)", "vin"),
			want: "V's head size is unknown"},
	}
	for i := range cases {
		cases[i].fused = []string{"com.microsoft.MultiHeadAttention", "com.microsoft.Attention"}
	}
	runValidRefusals(t, generalAttnFams, cases)
}

// heads5D is attention with the heads in two axes, [B, 2, 2, S, 1] (head size 1), and
// the score term given.
func heads5D(inputs, term string) string {
	return `g (float[batch,seq,4] x` + inputs + `) => (y) <
  float[4,4] wq = {0.1, -0.2, 0.3, 0.1, 0.2, 0.1, -0.1, 0.2, -0.3, 0.2, 0.1, 0.1, 0.2, -0.1, 0.3, 0.1},
  float[4,4] wk = {0.2, 0.1, -0.1, 0.3, 0.1, -0.2, 0.2, 0.1, 0.3, 0.1, -0.2, 0.1, -0.1, 0.2, 0.1, 0.3},
  float[4,4] wv = {0.3, 0.1, 0.2, -0.1, 0.1, 0.2, -0.3, 0.1, 0.2, -0.1, 0.1, 0.3, 0.1, 0.2, 0.1, -0.2},
  int64[5] split = {0, 0, 2, 2, 1},
  int64[3] merge = {0, 0, 4}
> {
  q = MatMul (x, wq)
  k = MatMul (x, wk)
  v = MatMul (x, wv)
  qr = Reshape (q, split)
  qt = Transpose <perm = [0, 2, 3, 1, 4]> (qr)
  kr = Reshape (k, split)
  kt = Transpose <perm = [0, 2, 3, 4, 1]> (kr)
  vr = Reshape (v, split)
  vt = Transpose <perm = [0, 2, 3, 1, 4]> (vr)
  s = MatMul (qt, kt)
  sm = Add (s, ` + term + `)
  p = Softmax <axis = -1> (sm)
  c = MatMul (p, vt)
  ct = Transpose <perm = [0, 3, 1, 2, 4]> (c)
  y = Reshape (ct, merge)
}`
}

// TestAttentionTermLayoutRefusals: additive score terms no [B|1, N|1, S, T] bias holds.
func TestAttentionTermLayoutRefusals(t *testing.T) {
	var chain strings.Builder
	prev := "tb"
	for i := 0; i < 4001; i++ {
		fmt.Fprintf(&chain, "  id%d = Identity (%s)\n", i, prev)
		prev = fmt.Sprintf("id%d", i)
	}
	cases := []refusalCase{
		{name: "term of rank 5", src: generalNearMiss("float[1,1,1,1,seq] t5", "  sm = Add (sd, t5)\n  p = Softmax <axis = -1> (sm)\n  c5 = MatMul (p, vt)\n  c = Squeeze (c5, z1)\n"),
			want: "score term t5 has shape [1,1,1,1,seq] against scores of rank 4"},
		{name: "term over each head axis", src: heads5D(", float[1,2,2,1,1] tb", "tb"), want: "score term tb splits the heads over axes"},
		{name: "term over the outer heads", src: heads5D(", float[1,2,1,1,1] tb", "tb"), want: "score term tb holds the heads in another order"},
		// Four positions: the scores [B, 2, 4, 4] viewed as [B, 8, 4] for the term.
		{name: "term over heads and queries", src: generalNearMiss("float[1,8,4] tb",
			"  sr = Reshape (sd, m3)\n  sm = Add (sr, tb)\n  p3 = Softmax <axis = -1> (sm)\n  p = Reshape (p3, u4)\n  c = MatMul (p, vt)\n",
			"float[batch,seq,4] x", "float[batch,4,4] x", "  float qscale = {0.01}", "  float qscale = {0.01},\n  int64[3] m3 = {0, 8, 4},\n  int64[4] u4 = {0, 2, 4, 4}"),
			want: "score term tb: axis 1 merges"},
		{name: "term in float16", src: generalNearMiss("float16[batch,1,1,seq] tb",
			"  sc = Cast <to = 10> (sd)\n  sm = Add (sc, tb)\n  ph = Softmax <axis = -1> (sm)\n  p = Cast <to = 1> (ph)\n  c = MatMul (p, vt)\n"),
			want: "score term tb is float16, not float"},
		{name: "term of too many steps", src: generalNearMiss("float[batch,1,1,seq] tb", chain.String()+"  sm = Add (sd, "+prev+")\n  p = Softmax <axis = -1> (sm)\n  c = MatMul (p, vt)\n"),
			want: "its inputs are too many to follow"},
	}
	for i := range cases {
		cases[i].fused = []string{"com.microsoft.MultiHeadAttention", "com.microsoft.Attention"}
	}
	runValidRefusals(t, generalFams, cases)
}
