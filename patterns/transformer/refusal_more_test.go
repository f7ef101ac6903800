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

// headMix adds talking heads' [heads, heads] weight to a moreNearMiss model.
var headMix = []string{"  int64[1] big1 = {1000},", "  int64[1] big1 = {1000},\n  float[2,2] wh = {0.5, -0.3, 0.2, 0.9},"}

// moreNearMiss is generalNearMiss with this file's extra constants.
func moreNearMiss(inputs, core string, edits ...string) string {
	return generalNearMiss(inputs, core, append([]string{"  float qscale = {0.01}", moreConsts}, edits...)...)
}

// TestAttentionLayoutRefusals: Q, K and V paths whose layout ops or matmul pairing no
// fused operator reads.
func TestAttentionLayoutRefusals(t *testing.T) {
	const plain = "  p = Softmax <axis = -1> (sd)\n  c = MatMul (p, vt)\n"
	const qt = "  qt = Transpose <perm = [0, 2, 1, 3]> (qr)"
	cases := []refusalCase{
		{name: "Q scaled by a rank-5 constant", src: moreNearMiss("", plain, qt, "  q5 = Mul (qr, half5)\n  qs = Squeeze (q5, z1)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qs)"),
			want: "Q: Mul(->q5) broadcasts its input"},
		{name: "Q reshaped to a shape read at run time", src: moreNearMiss("int64[r] shp", plain, qt, "  qs = Reshape (qr, shp)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qs)"),
			want: "Q: Reshape(->qs): output shape unknown"},
		{name: "Q sliced on the sequence", src: moreNearMiss("", plain, qt, "  qs = Slice (qr, z1, big1, o1)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qs)"),
			want: "Q: Slice(->qs) takes ? of [seq(seq)]"},
		{name: "Q strided on the sequence", src: moreNearMiss("", plain, qt, "  qs = Slice (qr, z1, big1, o1, t1)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qs)"),
			want: "Q: Slice(->qs): a strided slice of [seq(seq)]"},
		{name: "Q every third channel", src: moreNearMiss("", plain, qt, "  qs = Slice (qr, z1, big1, a3, three)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qs)",
			"  kt = Transpose <perm = [0, 2, 3, 1]> (kr)", "  ks = Slice (kr, z1, o1, a3)\n  kt = Transpose <perm = [0, 2, 3, 1]> (ks)"),
			want: "Q: Slice(->qs) takes every 3-th of 2 from 0"},
		{name: "K shared by the batch and heads", src: moreNearMiss("float[seq,2] kin", plain, "  kt = Transpose <perm = [0, 2, 3, 1]> (kr)", "  kt = Transpose <perm = [1, 0]> (kin)"),
			want: "Q and K: ranks 4 and 2 (a broadcast over the batch or heads)"},
		{name: "K of one batch row", src: moreNearMiss("float[1,seq,4] xk", plain, "  km = MatMul (x, wk)", "  km = MatMul (xk, wk)"),
			want: "Q and K: batch axis 0 is [batch(batch)] against [batch(1)]"},
		{name: "V of one batch row", src: moreNearMiss("float[1,seq,4] xv", plain, "  vm = MatMul (x, wv)", "  vm = MatMul (xv, wv)"),
			want: "probs and V: batch axis 0 is [batch(batch)] against [batch(1)]"},
		{name: "V shared by the batch and heads", src: moreNearMiss("float[seq,2] vin", "  p = Softmax <axis = -1> (sd)\n  c = MatMul (p, vin)\n"),
			want: "probs of rank 4 against V of rank 2"},
		// One K head of two channels, repeated over the heads by a shape the graph reads.
		{name: "K expanded to a shape read at run time", src: moreNearMiss("int64[4] eshape", plain, "  kr = Reshape (ka, split)",
			"  k2 = Slice (ka, z1, t1, last)\n  kr = Reshape (k2, kv1)", "  kt = Transpose <perm = [0, 2, 3, 1]> (kr)", "  ke = Expand (kr, eshape)\n  kt = Transpose <perm = [0, 2, 3, 1]> (ke)",
			"  int64[1] o1 = {1},", "  int64[1] o1 = {1},\n  int64[4] kv1 = {0, 0, 1, 2},"),
			want: "K: Expand(->ke): axis 2 grows from 1 to ?"},
		{name: "K expanded to a rank read at run time", src: moreNearMiss("int64[r] eshape", plain, "  kt = Transpose <perm = [0, 2, 3, 1]> (kr)", "  ke = Expand (kr, eshape)\n  kt = Transpose <perm = [0, 2, 3, 1]> (ke)"),
			want: "K: Expand(->ke): output shape unknown"},
		// With two positions and two heads, probs [B, S, N, T] (heads and queries swapped)
		// multiply V [B, N, T, D]: the rows of each product are heads, not queries.
		{name: "probs with the heads as rows", src: moreNearMiss("", "  p = Softmax <axis = -1> (sd)\n  pt = Transpose <perm = [0, 2, 1, 3]> (p)\n  c = MatMul (pt, vt)\n", "float[batch,seq,4] x", "float[batch,2,4] x"),
			want: "probs·V: the query sequence is not the second-last axis"},
		// Talking heads (CaiT): a Linear over the head axis of the scores before the
		// softmax, or of the probabilities after it, mixes the heads.
		{name: "scores mixed across heads", src: moreNearMiss("", "  sp = Transpose <perm = [0, 2, 3, 1]> (sd)\n  sl = MatMul (sp, wh)\n  sb = Transpose <perm = [0, 3, 1, 2]> (sl)\n  p = Softmax <axis = -1> (sb)\n  c = MatMul (p, vt)\n", headMix...),
			want: "the scores are multiplied by a constant weight before the softmax (talking heads"},
		{name: "probabilities mixed across heads", src: moreNearMiss("", "  p = Softmax <axis = -1> (sd)\n  pp = Transpose <perm = [0, 2, 3, 1]> (p)\n  pl = MatMul (pp, wh)\n  pb = Transpose <perm = [0, 3, 1, 2]> (pl)\n  c = MatMul (pb, vt)\n", headMix...),
			want: "the probabilities are multiplied by a constant weight after the softmax (talking heads"},
		// Every query row repeated three times in Q's rows: the rows are not the sequence.
		{name: "Q rows repeated", src: moreNearMiss("", plain, qt, "  qu = Unsqueeze (qr, t1)\n  qe = Expand (qu, e5)\n  q3 = Reshape (qe, r3)\n  qt = Transpose <perm = [0, 2, 1, 3]> (q3)",
			"  int64[1] big1 = {1000},", "  int64[1] big1 = {1000},\n  int64[5] e5 = {1, 1, 3, 1, 1},\n  int64[4] r3 = {0, -1, 2, 2},"),
			want: "Q: the sequence axis at the matmul is ["},
		{name: "scores reshaped to a shape read at run time", src: moreNearMiss("int64[4] shp", "  sr = Reshape (sd, shp)\n  p = Softmax <axis = -1> (sr)\n  c = MatMul (p, vt)\n"),
			want: "scores: reshape to [?,?,?,?] does not regroup"},
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
		{name: "term of a shape read at run time", src: generalNearMiss("float[batch,1,1,seq] tb, int64[r] shp", "  tr = Reshape (tb, shp)\n  sm = Add (sd, tr)\n  p = Softmax <axis = -1> (sm)\n  c = MatMul (p, vt)\n"),
			want: "score term tr has an unknown shape"},
		{name: "term over each head axis", src: heads5D(", float[1,2,2,1,1] tb", "tb"), want: "score term tb splits the heads over axes"},
		// The heads viewed inner-first, [B, H·G, S, T], for the term.
		{name: "term over the heads in another order", src: strings.NewReplacer(
			"  sm = Add (s, tb)\n  p = Softmax <axis = -1> (sm)\n  c = MatMul (p, vt)",
			"  sw = Transpose <perm = [0, 2, 1, 3, 4]> (s)\n  sh = Shape (sw)\n  sb = Slice (sh, z1, o1)\n  sst = Slice (sh, t3, f5)\n  hg = Concat <axis = 0> (sb, four, sst)\n  sv = Reshape (sw, hg)\n  sm = Add (sv, tb)\n  p4 = Softmax <axis = -1> (sm)\n  pu = Reshape (p4, sh)\n  p = Transpose <perm = [0, 2, 1, 3, 4]> (pu)\n  c = MatMul (p, vt)",
			"  int64[3] merge = {0, 0, 4}", "  int64[3] merge = {0, 0, 4},\n  int64[1] z1 = {0}, int64[1] o1 = {1}, int64[1] t3 = {3}, int64[1] f5 = {5}, int64[1] four = {4}",
		).Replace(heads5D(", float[1,4,1,1] tb", "tb")), want: "score term tb holds the heads in another order"},
		{name: "factor over the outer heads", src: strings.NewReplacer("  sm = Add (s, tb)", "  sm = Mul (s, tb)",
			"  int64[3] merge = {0, 0, 4}", "  int64[3] merge = {0, 0, 4},\n  float[1,2,1,1,1] tb = {0.5, 2}").Replace(heads5D("", "tb")),
			want: "the scores' factor tb varies over some of the heads only"},
		// Four positions: the scores [B, 2, 4, 4] viewed as [B, 8, 4] for the term.
		{name: "term over heads and queries", src: generalNearMiss("float[1,8,4] tb",
			"  sr = Reshape (sd, m3)\n  sm = Add (sr, tb)\n  p3 = Softmax <axis = -1> (sm)\n  p = Reshape (p3, u4)\n  c = MatMul (p, vt)\n",
			"float[batch,seq,4] x", "float[batch,4,4] x", "  float qscale = {0.01}", "  float qscale = {0.01},\n  int64[3] m3 = {0, 8, 4},\n  int64[4] u4 = {0, 2, 4, 4}"),
			want: "score term tb: axis 1 merges [1 2]"},
		{name: "term in float16", src: generalNearMiss("float16[batch,1,1,seq] tb",
			"  sc = Cast <to = 10> (sd)\n  sm = Add (sc, tb)\n  ph = Softmax <axis = -1> (sm)\n  p = Cast <to = 1> (ph)\n  c = MatMul (p, vt)\n"),
			want: "score term tb is float16, the scores float"},
		{name: "term of too many steps", src: generalNearMiss("float[batch,1,1,seq] tb", chain.String()+"  sm = Add (sd, "+prev+")\n  p = Softmax <axis = -1> (sm)\n  c = MatMul (p, vt)\n"),
			want: "score term id4000: its inputs are too many to follow"},
	}
	for i := range cases {
		cases[i].fused = []string{"com.microsoft.MultiHeadAttention", "com.microsoft.Attention"}
	}
	runValidRefusals(t, generalFams, cases)
}

// TestAttentionOperandRefusals: Softmaxes over a matmul that are not attention over the
// positions (over the heads, over the channels, with no batch), and operands no fused
// operator reads.
func TestAttentionOperandRefusals(t *testing.T) {
	const plain = "  p = Softmax <axis = -1> (sd)\n  c = MatMul (p, vt)\n"
	const qt = "  qt = Transpose <perm = [0, 2, 1, 3]> (qr)"
	const kt = "  kt = Transpose <perm = [0, 2, 3, 1]> (kr)"
	const vt = "  vt = Transpose <perm = [0, 2, 1, 3]> (vr)"
	const out = "  ct = Transpose <perm = [0, 2, 1, 3]> (c)"
	unbatched := `g (float[seq,4] x) => (y) <
  float[4,4] wq = {0.1, -0.2, 0.3, 0.1, 0.2, 0.1, -0.1, 0.2, -0.3, 0.2, 0.1, 0.1, 0.2, -0.1, 0.3, 0.1},
  float[4,4] wk = {0.2, 0.1, -0.1, 0.3, 0.1, -0.2, 0.2, 0.1, 0.3, 0.1, -0.2, 0.1, -0.1, 0.2, 0.1, 0.3},
  float[4,4] wv = {0.3, 0.1, 0.2, -0.1, 0.1, 0.2, -0.3, 0.1, 0.2, -0.1, 0.1, 0.3, 0.1, 0.2, 0.1, -0.2},
  int64[3] split = {0, 2, 2},
  int64[2] merge = {0, 4}
> {
  q = MatMul (x, wq)
  k = MatMul (x, wk)
  v = MatMul (x, wv)
  qr = Reshape (q, split)
  qt = Transpose <perm = [1, 0, 2]> (qr)
  kr = Reshape (k, split)
  kt = Transpose <perm = [1, 2, 0]> (kr)
  vr = Reshape (v, split)
  vt = Transpose <perm = [1, 0, 2]> (vr)
  s = MatMul (qt, kt)
  p = Softmax <axis = -1> (s)
  c = MatMul (p, vt)
  ct = Transpose <perm = [1, 0, 2]> (c)
  y = Reshape (ct, merge)
}`
	cases := []refusalCase{
		{name: "softmax over the heads", src: moreNearMiss("", "  p = Softmax <axis = -1> (sd)\n  c = MatMul (p, vr)\n", qt, "  qt = Identity (qr)", kt, "  kt = Transpose <perm = [0, 1, 3, 2]> (kr)"),
			want: "Q and K: a seq atom among the batch axes"},
		{name: "no batch axis", src: unbatched, want: "Q and K: 0 batch atoms among the batch axes, want 1"},
		// Cross-covariance attention: the softmax runs over channels, not positions.
		{name: "softmax over the channels", src: moreNearMiss("", plain, qt, "  qt = Transpose <perm = [0, 2, 3, 1]> (qr)", kt, "  kt = Transpose <perm = [0, 2, 1, 3]> (kr)",
			vt, "  vt = Transpose <perm = [0, 2, 3, 1]> (vr)", out, "  ct = Transpose <perm = [0, 3, 1, 2]> (c)"),
			want: "Q: channels as the rows at the matmul and the tokens contracted (cross-covariance attention)"},
		{name: "Q repeated over its head size", src: moreNearMiss("", plain, "  qa = Add (qm, bq)", "  qa = Slice (qm, z1, t1, last)", "  qr = Reshape (qa, split)", "  qr = Reshape (qa, q1)",
			qt, "  q1t = Transpose <perm = [0, 2, 1, 3]> (qr)\n  qt = Expand (q1t, e2)", "  int64[1] o1 = {1},", "  int64[1] o1 = {1},\n  int64[4] q1 = {0, 0, 2, 1},\n  int64[4] e2 = {1, 1, 1, 2},"),
			want: "Q: the head-size axis at the matmul is [repeat(2)]"},
		{name: "context read for its shape only", src: moreNearMiss("", plain, out+"\n  y = Reshape (ct, merge)", "  y = Shape (c)"),
			want: "proved attention, but its output path was refused"},
	}
	for i := range cases {
		cases[i].fused = []string{"com.microsoft.MultiHeadAttention", "com.microsoft.Attention"}
	}
	runValidRefusals(t, generalFams, cases)
}

// TestAttentionBERTMoreRefusals: the BERT-like family's head split and mask checks.
func TestAttentionBERTMoreRefusals(t *testing.T) {
	vec := make([]string, 70)
	for i := range vec {
		vec[i] = fmt.Sprintf("%d", -10000-i)
	}
	static := []string{"float[batch,seq,4] x", "float[batch,70,4] x", "int64[batch,seq] attention_mask", "int64[batch,70] attention_mask", "=> (float[batch,seq,4] y)", "=> (float[batch,70,4] y)"}
	cases := []refusalCase{
		// The exporter's value_info names the head count but not its size.
		{name: "head count read at run time", src: bertNearMiss(t, "bert (float[batch,seq,4] x,", "bert (int64[1] nh, float[batch,seq,4] x,", "(kbu, klu, nheads, hsize)", "(kbu, klu, nh, hsize)",
			"  float fone = {1},", "  float[batch,seq,heads,2] kr,\n  float fone = {1},"),
			want: "k head split [batch,seq,heads,2]: heads or head size unknown"},
		// A mask scaled per key by 70 values: a mask plus a bias that varies over the keys.
		{name: "mask scaled per key", src: bertNearMiss(t, append(static, "  float fone = {1},", "  float fone = {1},\n  float[70] fvec = {"+strings.Join(vec, ", ")+"},",
			"  [\"/Mul\"] ext = Mul (inv, fmin)", "  [\"/Mul\"] ext = Mul (inv, fvec)")...),
			want: "mask constant fvec is not a scalar"},
	}
	for i := range cases {
		cases[i].fused = []string{"com.microsoft.Attention"}
	}
	runValidRefusals(t, []*transformer.Family{transformer.AttentionFamily}, cases)
}

// TestDebertaLayoutRefusals: DeBERTa blocks whose projections, packed heads or relative
// terms are not typed as the fused operator needs.
func TestDebertaLayoutRefusals(t *testing.T) {
	with := func(src string, edits ...string) string { return editSrc(t, src, edits...) }
	cases := []refusalCase{
		// The tokens flattened [B·S, H]: the head split names batch and sequence.
		{name: "tokens flattened", src: with(dbGraph(dbOpts{v2: true}), "float[2,5,8] x", "float[10,8] x", "int64[4] split = {0, 0, 2, -1}", "int64[4] split = {2, 5, 2, -1}"),
			want: `the query projection "qa" has rank 2, not [batch, seq, hidden]`},
		{name: "packed split read at run time", src: dbGraph(dbOpts{dynSplit: true}),
			want: `the packed in_proj heads "t" are typed`},
		{name: "query slice ends at run time", src: with(dbGraph(dbOpts{}), "int64[2,2,5,5] ppos", "int64[2,2,5,5] ppos, int64[1] qend", "qs = Slice (t, s0, s4, axl)", "qs = Slice (t, s0, qend, axl)"),
			want: "the query slice of the packed in_proj heads is typed"},
	}
	for i := range cases {
		cases[i].fused = []string{"com.microsoft.MultiHeadAttention"}
	}
	runValidRefusals(t, debertaOnly, cases)
}

// TestQAttentionMoreRefusals: quantized attention blocks QAttention cannot take.
func TestQAttentionMoreRefusals(t *testing.T) {
	cases := []refusalCase{
		{name: "k weight in float", src: qattnNearMiss(t, "  float[4] bq =", "  float[4,4] wkf = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6},\n  float[4] bq =",
			"km = MatMul (kdq, wkd)", "km = MatMul (kdq, wkf)"), want: "; k weight is not a DequantizeLinear of a constant"},
		// K's weight uint8 around 128, Q's and V's int8: QAttention packs one weight type.
		{name: "k weight uint8", src: qattnNearMiss(t, "  int8[4,4] wk8 = {127, -127, 103, -85, -95, -107, -55, 127, -85, 23, 40, -51, 13, -122, -127, -118},", "  uint8[4,4] wk8 = {255, 1, 231, 43, 33, 21, 73, 255, 43, 151, 168, 77, 141, 6, 1, 10},",
			"  int8[4] wkz = {0, 0, 0, 0},", "  uint8[4] wkz = {128, 128, 128, 128},"), want: "; Q, K and V weights have different types"},
	}
	for i := range cases {
		cases[i].provider = "cpu"
		cases[i].fused = []string{"com.microsoft.QAttention"}
	}
	runValidRefusals(t, []*transformer.Family{transformer.AttentionFamily}, cases)
}

// TestFusedQAttentionWithPast: a QAttention already in the model that carries past
// state is not one the family describes.
func TestFusedQAttentionWithPast(t *testing.T) {
	src := `g (uint8[batch,seq,4] x, float[2,batch,2,past,2] past) => (y, present) <
  uint8[4,12] w = {` + strings.TrimSuffix(strings.Repeat("130, 120, ", 24), ", ") + `},
  float[12] b = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
  float xs = {0.02},
  float ws = {0.01},
  uint8 xz = {128},
  uint8 wz = {128}
> {
  y, present = com.microsoft.QAttention <num_heads = 2, unidirectional = 1> (x, w, b, xs, ws, "", xz, wz, past)
}`
	runValidRefusals(t, []*transformer.Family{transformer.AttentionFamily}, []refusalCase{
		{name: "past state", src: src, want: "QAttention  has past state", provider: "cpu"},
	})
}

// TestEmbeddingSumRefusals: LayerNorms of sums that are not an embedding block
// EmbedLayerNormalization computes.
func TestEmbeddingSumRefusals(t *testing.T) {
	with := func(src string, edits ...string) string { return editSrc(t, src, edits...) }
	cases := []refusalCase{
		{name: "a sum of constants", src: embGraph("int64[1,5] input_ids", "float[1,5,4] y", ",\n  float[1,5,4] k1 = {...},\n  float[1,5,4] k2 = {...}", "\n  x = Add (k1, k2)"+embDecomposedLN),
			want: "no embedding lookup in the sum"},
		// The skip-LayerNorm form binds a constant bias: the decoder form (no LayerNorm)
		// then refuses the sum for its LayerNorm reader.
		{name: "skip bias read at run time", src: embGraph("int64[batch,seq] input_ids, float[4] sb", "float[batch,seq,4] y", "", embBERTPositions+`
  w = Gather (word, input_ids)
  p = Gather (pos, pids)
  y = com.microsoft.SkipLayerNormalization <epsilon = 1e-12> (w, p, gamma, beta, sb)`),
			want: "the sum's only reader is a LayerNorm (SkipLayerNormalization): the embedding+LayerNorm forms apply"},
		{name: "no gamma in double", src: with(strings.ReplaceAll(embBERT, "float", "double"), "  sc = Mul (nrm, gamma)\n  y = Add (sc, beta)", "  y = Add (nrm, beta)"),
			want: "embedding computes in double"},
		// Batch, sequence and hidden all 4, so that the [4,4,1,1] mask broadcasts.
		{name: "mask of rank 3", src: with(embDeBERTa, "int64[batch,seq] input_ids, int64[batch,seq] attention_mask", "int64[4,4] input_ids, int64[4,4,1] attention_mask", "float[batch,seq,4] z", "z"),
			want: "mask is int64[4,4,1], not [batch, sequence]"},
	}
	for i := range cases {
		cases[i].opset = "17"
	}
	runValidRefusals(t, []*transformer.Family{transformer.EmbeddingFamily}, cases)
}

// TestLinearBiasRefusal: a quantized linear layer whose bias is not one per output
// column.
func TestLinearBiasRefusal(t *testing.T) {
	layer := "  xq = QuantizeLinear (x, xs, xz)\n  xd = DequantizeLinear (xq, xs, xz)\n  wd = DequantizeLinear <axis = 1> (w, ws, wz)\n  mm = MatMul (xd, wd)\n  y = Add (mm, b1)"
	cases := []refusalCase{
		{name: "one bias for every column", src: qlinGraph(",\n  float[1] b1 = {0.5}", layer), want: "bias float[1] is not float [2]", provider: "cpu",
			fused: []string{"com.microsoft.MatMulIntegerToFloat"}},
	}
	runValidRefusals(t, nil, cases)
}

// fairseq3D is fairseq's layout over five positions: Q, K and V viewed [B·N, S, D]; vx
// adds nodes on V, vs is the V the context reads, and out makes y from the context c.
func fairseq3D(vx, vs, out string) string {
	return `<ir_version: 8, opset_import: ["" : 13]>
g (float[batch,5,4] x) => (y) <
  float[4,4] wq = {0.1, -0.2, 0.3, 0.1, 0.2, 0.1, -0.1, 0.2, -0.3, 0.2, 0.1, 0.1, 0.2, -0.1, 0.3, 0.1},
  float[4,4] wk = {0.2, 0.1, -0.1, 0.3, 0.1, -0.2, 0.2, 0.1, 0.3, 0.1, -0.2, 0.1, -0.1, 0.2, 0.1, 0.3},
  float[4,4] wv = {0.3, 0.1, 0.2, -0.1, 0.1, 0.2, -0.3, 0.1, 0.2, -0.1, 0.1, 0.3, 0.1, 0.2, 0.1, -0.2},
  int64[4] split = {0, 0, 2, 2},
  int64[3] flat = {-1, 5, 2},
  int64[4] unflat = {-1, 2, 5, 2},
  int64[3] merge = {0, 0, 4},
  int64[1] a0 = {0},
  int64[1] a1 = {1},
  int64[1] a2 = {2},
  int64 i0 = {0},
  float half = {0.5}
> {
  q = MatMul (x, wq)
  k = MatMul (x, wk)
  v = MatMul (x, wv)
  qr = Reshape (q, split)
  qt = Transpose <perm = [0, 2, 1, 3]> (qr)
  q3 = Reshape (qt, flat)
  kr = Reshape (k, split)
  kt = Transpose <perm = [0, 2, 1, 3]> (kr)
  k3 = Reshape (kt, flat)
  k3t = Transpose <perm = [0, 2, 1]> (k3)
  vr = Reshape (v, split)
  vt = Transpose <perm = [0, 2, 1, 3]> (vr)
  v3 = Reshape (vt, flat)
` + vx + `
  s = MatMul (q3, k3t)
  p = Softmax <axis = -1> (s)
  c = MatMul (p, ` + vs + `)
` + out + `
}`
}

// packedPerHead is fairseq's [B·N, S, D] layout with Q, K and V sliced from a packed
// per-head [B·N, S, 3·D]: no tensor before the slice holds Q's channels alone, none after
// it holds the batch beside the sequence, so the fused operator reads Q, K and V unfolded
// from the slices ([B·N,S,D] → [B,N,S,D], a Reshape of the known heads and sequence).
var packedPerHead = `<ir_version: 8, opset_import: ["" : 13]>
g (float[batch,5,4] x) => (y) <
  float[4,12] w = {` + strings.TrimSuffix(strings.Repeat("0.1, -0.2, 0.3, ", 16), ", ") + `},
  int64[4] split6 = {0, 0, 2, 6},
  int64[3] flat6 = {-1, 5, 6},
  int64[4] unflat = {-1, 2, 5, 2},
  int64[3] merge = {0, 0, 4},
  int64[1] z = {0}, int64[1] t2 = {2}, int64[1] f4 = {4}, int64[1] s6 = {6}, int64[1] last = {-1}
> {
  qkv = MatMul (x, w)
  r = Reshape (qkv, split6)
  t = Transpose <perm = [0, 2, 1, 3]> (r)
  f = Reshape (t, flat6)
  q3 = Slice (f, z, t2, last)
  k3 = Slice (f, t2, f4, last)
  v3 = Slice (f, f4, s6, last)
  k3t = Transpose <perm = [0, 2, 1]> (k3)
  s = MatMul (q3, k3t)
  p = Softmax <axis = -1> (s)
  c = MatMul (p, v3)
  c4 = Reshape (c, unflat)
  ct = Transpose <perm = [0, 2, 1, 3]> (c4)
  y = Reshape (ct, merge)
}`

// symbolicSeq makes a fairseq-layout model's sequence symbolic, its reshapes reading it
// off x: the heads folded into the batch then stand beside two unknown dims, which no
// Reshape spells out.
func symbolicSeq(src string) string {
	r := strings.NewReplacer(
		"(float[batch,5,4] x)", "(float[batch,seq,4] x)",
		"  int64[3] flat = {-1, 5, 2},\n", "",
		"  int64[3] flat6 = {-1, 5, 6},\n", "",
		"  int64[4] unflat = {-1, 2, 5, 2},\n", "  int64[1] m1 = {-1}, int64[1] c1 = {1}, int64[1] c2 = {2}, int64[1] c6 = {6},\n",
		"> {\n", "> {\n  sh = Shape (x)\n  sq = Slice (sh, c1, c2)\n  flat = Concat <axis = 0> (m1, sq, c2)\n  flat6 = Concat <axis = 0> (m1, sq, c6)\n  unflat = Concat <axis = 0> (m1, c2, sq, c2)\n")
	return r.Replace(src)
}

// fairseqMerge merges fairseq3D's context back to [B, S, N·D].
const fairseqMerge = "  c4 = Reshape (c, unflat)\n  ct = Transpose <perm = [0, 2, 1, 3]> (c4)\n  y = Reshape (ct, merge)"

// TestAttentionOutputRefusals: contexts whose value after the block no fused output
// [B, S, N·D] can be viewed as.
func TestAttentionOutputRefusals(t *testing.T) {
	cases := []refusalCase{
		{name: "the [B·N, S, D] context as the output", src: fairseq3D("", "v3", "  y = Identity (c)"),
			want: "the output's layout [(batch(batch) chan(2)) (seq(5)) (chan(2))] needs two sizes read at run time"},
		{name: "context reshaped to a shape read at run time", src: strings.Replace(fairseq3D("", "v3", "  y = Reshape (c, shp)"), "(float[batch,5,4] x)", "(float[batch,5,4] x, int64[r] shp)", 1),
			want: "output: Reshape(->y): output shape unknown"},
		{name: "context sliced", src: fairseq3D("", "v3", "  y = Slice (c, a0, a1, a2)"),
			want: "the output's layout [(batch(batch) chan(2)) (seq(5)) (chan(1))] is not a view of [B,S,N·D]"},
		{name: "context of one channel", src: fairseq3D("", "v3", "  y = Gather <axis = 2> (c, i0)"),
			want: "the output's layout [(batch(batch) chan(2)) (seq(5))] drops atoms"},
	}
	for i := range cases {
		cases[i].fused = []string{"com.microsoft.MultiHeadAttention"}
	}
	runValidRefusals(t, generalFams, cases)
}

// TestAttentionHeadRefusals: heads whose count no type gives, score terms over a view
// that splits the heads, and packed heads sliced after the batch is merged in.
func TestAttentionHeadRefusals(t *testing.T) {
	// Q [B, S, hid] viewed [B, S·hid, 1]: hid heads of one channel folded into the rows,
	// against one K and V head.
	rows := `g (float[batch,seq,hid] x, float[batch,seq,1] kin, float[batch,seq,1] vin) => (y) <
  int64[3] rows = {0, -1, 1}
> {
  qf = Reshape (x, rows)
  kt = Transpose <perm = [0, 2, 1]> (kin)
  s = MatMul (qf, kt)
  p = Softmax <axis = -1> (s)
  y = MatMul (p, vin)
}`
	// Four heads of one channel over four positions; the scores viewed [B, 2, 2, 4, 4]
	// for a term over the two head factors.
	split := generalNearMiss("float[1,2,2,1,1] tb",
		"  s5 = Reshape (sd, hv)\n  sm = Add (s5, tb)\n  p5 = Softmax <axis = -1> (sm)\n  p = Reshape (p5, h4)\n  c = MatMul (p, vt)\n",
		"float[batch,seq,4] x", "float[batch,4,4] x", "int64[4] split = {0, 0, 2, 2}", "int64[4] split = {0, 0, 4, 1}",
		"  float qscale = {0.01}", "  float qscale = {0.01},\n  int64[5] hv = {0, 2, 2, 4, 4},\n  int64[4] h4 = {0, 4, 4, 4}")
	cases := []refusalCase{
		{name: "packed heads sliced in the [B·N, S, 3·D] view of a symbolic sequence", src: symbolicSeq(packedPerHead), want: "Q: no tensor on its path holds [B,S,heads,D]"},
		{name: "V scaled in the [B·N, S, D] view of a symbolic sequence", src: symbolicSeq(fairseq3D("  vs = Mul (v3, half)", "vs", fairseqMerge)), want: "V: no tensor after its scale holds [B,S,heads,D]"},
		{name: "heads of a symbolic count in the rows", src: rows, want: "the head count is unknown"},
		{name: "term over the split heads", src: split, want: "score term tb: axis 1 holds chan(2)"},
	}
	for i := range cases {
		cases[i].fused = []string{"com.microsoft.MultiHeadAttention"}
	}
	runValidRefusals(t, generalFams, cases)
}
