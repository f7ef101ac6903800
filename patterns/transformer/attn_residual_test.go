package transformer_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/shape"
)

// residualModel is two self-attention layers of width 8 (two heads of four) with
// PatchTST's residual attention: the second layer adds the first layer's scores, read
// where read1 names them, to its own scaled ones. terms1 turns the first layer's scaled
// scores sd1 into st1, its softmax input; edits are pairs of text and its replacement.
func residualModel(t testing.TB, terms1, read1 string, edits ...string) string {
	w := randomInitializer(5)
	var b strings.Builder
	b.WriteString("<ir_version: 8, opset_import: [\"\" : 17]>\n")
	b.WriteString("layers (float[batch,seq,8] x, bool[batch,1,1,seq] keep) => (float[batch,seq,8] y) <\n")
	for _, l := range []string{"1", "2"} {
		for _, p := range []string{"q", "k", "v"} {
			b.WriteString(w("w"+p+l, 8, 8))
			b.WriteString(w("b"+p+l, 8))
		}
	}
	b.WriteString("  int64[4] split = {0, 0, 2, 4},\n  int64[3] merge = {0, 0, 8},\n  float rs = {0.5},\n  float big = {-10000}\n> {\n")
	layer := func(l, in, scores string) {
		fmt.Fprintf(&b, `  qm%[1]s = MatMul (%[2]s, wq%[1]s)
  qa%[1]s = Add (qm%[1]s, bq%[1]s)
  km%[1]s = MatMul (%[2]s, wk%[1]s)
  ka%[1]s = Add (km%[1]s, bk%[1]s)
  vm%[1]s = MatMul (%[2]s, wv%[1]s)
  va%[1]s = Add (vm%[1]s, bv%[1]s)
  qr%[1]s = Reshape (qa%[1]s, split)
  qt%[1]s = Transpose <perm = [0, 2, 1, 3]> (qr%[1]s)
  kr%[1]s = Reshape (ka%[1]s, split)
  kt%[1]s = Transpose <perm = [0, 2, 3, 1]> (kr%[1]s)
  vr%[1]s = Reshape (va%[1]s, split)
  vt%[1]s = Transpose <perm = [0, 2, 1, 3]> (vr%[1]s)
  s%[1]s = MatMul (qt%[1]s, kt%[1]s)
  sd%[1]s = Mul (s%[1]s, rs)
%[3]s  p%[1]s = Softmax <axis = -1> (st%[1]s)
  c%[1]s = MatMul (p%[1]s, vt%[1]s)
  ct%[1]s = Transpose <perm = [0, 2, 1, 3]> (c%[1]s)
  y%[1]s = Reshape (ct%[1]s, merge)
`, l, in, scores)
	}
	layer("1", "x", terms1)
	b.WriteString("  x2 = Add (x, y1)\n")
	layer("2", "x2", "  st2 = Add (sd2, "+read1+")\n")
	b.WriteString("  y = Add (x2, y2)\n}\n")
	return editSrc(t, b.String(), edits...)
}

// residualFuture adds a causal term (the lowest float above the diagonal) to sd1.
const residualFuture = `  sh = Shape (x)
  sq = Slice (sh, one1, two1)
  ss = Concat <axis = 0> (sq, sq)
  low = Expand (lowest, ss)
  fut = Trilu <upper = 1> (low, kone)
  st1 = Add (sd1, fut)
`

// residualCausal declares the constants residualFuture reads.
var residualCausal = []string{"  float big", "  int64[1] one1 = {1},\n  int64[1] two1 = {2},\n  int64 kone = {1},\n  float lowest = {-3.4028235e38},\n  float big"}

// residualPadding is a padding mask on the first layer's scores.
const residualPadding = "  st1 = Where (keep, sd1, big)\n"

// TestResidualAttentionFuses: the first layer's scores, read by the second layer, come
// out of its fused operator (Attention-23's qk_matmul_output when they are the scaled
// Q·Kᵀ, MultiHeadAttention's qk when they are the softmax's input), so both layers fuse
// and the graph computes the same outputs in ORT.
func TestResidualAttentionFuses(t *testing.T) {
	orttest.RequireLib(t)
	cases := []struct {
		name          string
		terms1, read1 string
		edits         []string
		target        transformer.Target
		op            string
	}{
		{"no term onnx", "  st1 = Identity (sd1)\n", "st1", nil, transformer.ONNX, "Attention"},
		{"no term ort", "  st1 = Identity (sd1)\n", "st1", nil, transformer.ORT, "com.microsoft.MultiHeadAttention"},
		{"before the mask onnx", residualPadding, "sd1", nil, transformer.ONNX, "Attention"},
		{"after the mask ort", residualPadding, "st1", nil, transformer.ORT, "com.microsoft.MultiHeadAttention"},
		// A causal term stays in attention_bias: MultiHeadAttention's qk holds the bias alone.
		{"causal ort", residualFuture, "st1", residualCausal, transformer.ORT, "com.microsoft.MultiHeadAttention"},
		{"causal onnx", residualFuture, "sd1", residualCausal, transformer.ONNX, "Attention"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			orig, m, env, rep := parseAndFuse(t, residualModel(t, c.terms1, c.read1, c.edits...), c.target, 23)
			if rep.Ops[c.op] != 2 {
				t.Fatalf("ops %v, left %v, refused %v", rep.Ops, rep.Left, rep.Refusals)
			}
			scores := 0
			for _, n := range m.Graph.Nodes() {
				switch {
				case n.OpType == "Softmax" || n.OpType == "MatMul" && !n.Input(1).IsConst():
					t.Errorf("%s left beside the fused attention", n)
				case strings.HasSuffix(n.OpType, "Attention") && len(n.Outputs()) > 3 && n.Output(3) != nil:
					scores++
				}
			}
			if scores != 1 {
				t.Errorf("%d fused operators output their scores, want 1", scores)
			}
			checkFusedRuns(t, "residual", orig, m, env, layerInputs(8), 1e-4)
		})
	}
}

// TestResidualAttentionRefusals: scores read outside the block that the target's fused
// operator does not output are refused with the reason, and that layer is left; the
// second layer still fuses.
func TestResidualAttentionRefusals(t *testing.T) {
	cases := []struct {
		name          string
		terms1, read1 string
		edits         []string
		target        transformer.Target
		want          string
	}{
		{"after the mask onnx", residualPadding, "st1", nil, transformer.ONNX, "(st1) are not scale·Q·Kᵀ alone: Attention-23's qk_matmul_output is that only"},
		{"before the mask ort", residualPadding, "sd1", nil, transformer.ORT, "(sd1) are not the softmax's input scale·Q·Kᵀ + terms, which MultiHeadAttention's qk output holds"},
		{"before the scale onnx", "  st1 = Identity (sd1)\n", "s1", nil, transformer.ONNX, "(s1) are not scale·Q·Kᵀ alone"},
		// The scores in a [B·N, S, T] view: the fused operators output [B, N, S, T].
		{"merged heads", "  sh1 = Shape (sd1)\n  tl1 = Slice (sh1, two1, four1)\n  m3 = Concat <axis = 0> (minus1, tl1)\n  s31 = Reshape (sd1, m3)\n  st1 = Reshape (s31, sh1)\n", "r1", []string{
			"  st2 = Add (sd2, r1)", "  r1 = Reshape (s31, sh1)\n  st2 = Add (sd2, r1)",
			"  float big", "  int64[1] two1 = {2},\n  int64[1] four1 = {4},\n  int64[1] minus1 = {-1},\n  float big"},
			transformer.ORT, "(s31) are in the layout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := ortcheck.Parse(t, residualModel(t, c.terms1, c.read1, c.edits...))
			if _, err := shape.Infer(m); err != nil {
				t.Fatal(err)
			}
			_, refs := transformer.Recognize(m.Graph, generalFams)
			rep, err := transformer.Fuse(m, generalFams, &transformer.Env{Model: m, Target: c.target, RaiseOpset: 23})
			if err != nil {
				t.Fatal(err)
			}
			expectReason(t, append(refusalReasons(refs), reportReasons(rep)...), c.want)
			fused := 0
			for op, n := range rep.Ops {
				if strings.Contains(op, "Attention") {
					fused += n
				}
			}
			if fused != 1 {
				t.Errorf("fused %v, want the second layer alone", rep.Ops)
			}
		})
	}
}
