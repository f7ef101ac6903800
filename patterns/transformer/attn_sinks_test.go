package transformer_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/shape"
)

// sinkModel is one self-attention layer of hidden e (two heads of e/2) with GPT-OSS's
// sinks: each head's logit sk joined to the scores on the key axis, the row maximum
// taken off, the softmax, the joined column dropped. terms turns the scaled scores sd
// into st (a causal and a padding mask, or none); edits are pairs of text and its
// replacement.
func sinkModel(t testing.TB, e int, terms string, edits ...string) string {
	w := randomInitializer(11)
	var b strings.Builder
	b.WriteString("<ir_version: 8, opset_import: [\"\" : 17]>\n")
	fmt.Fprintf(&b, "layer (float[batch,seq,%d] x, bool[batch,1,1,seq] keep) => (float[batch,seq,%d] y) <\n", e, e)
	for _, p := range []string{"q", "k", "v"} {
		b.WriteString(w("w"+p, e, e))
		b.WriteString(w("b"+p, e))
	}
	fmt.Fprintf(&b, "  int64[4] split = {0, 0, 2, %d},\n  int64[3] merge = {0, 0, %d},\n", e/2, e)
	fmt.Fprintf(&b, "  float rs = {%g},\n", 1/float64(e/2))
	b.WriteString(`  float big = {-10000},
  float lowest = {-3.4028235e38},
  float[1,2,1,1] sk = {0.75, -1.5},
  int64[1] zero1 = {0},
  int64[1] one1 = {1},
  int64[1] two1 = {2},
  int64[1] three1 = {3},
  int64[1] minus1 = {-1},
  int64 kone = {1}
> {
` + generalScores)
	b.WriteString(terms)
	b.WriteString(`  shs = Shape (st)
  s3 = Slice (shs, zero1, three1)
  sh4 = Concat <axis = 0> (s3, one1)
  snk = Expand (sk, sh4)
  sc = Concat <axis = -1> (st, snk)
  mx = ReduceMax <axes = [-1], keepdims = 1> (sc)
  sb = Sub (sc, mx)
  p0 = Softmax <axis = -1> (sb)
  p = Slice (p0, zero1, minus1, minus1)
  c = MatMul (p, vt)
  ct = Transpose <perm = [0, 2, 1, 3]> (c)
  y = Reshape (ct, merge)
}
`)
	return editSrc(t, b.String(), edits...)
}

// sinkCausal is a causal mask (the lowest float above the diagonal) and a padding mask
// (Where keep) on sd.
const sinkCausal = `  sh = Shape (x)
  s1 = Slice (sh, one1, two1)
  ss = Concat <axis = 0> (s1, s1)
  low = Expand (lowest, ss)
  fut = Trilu <upper = 1> (low, kone)
  sf = Add (sd, fut)
  st = Where (keep, sf, big)
`

// sinkWindow is a sliding-window causal mask from Range comparisons (a query sees its 3
// latest keys: banned where j > i or j <= i-3, GPT-OSS's and Mistral's form) and a
// padding mask (Where keep) on sd.
const sinkWindow = `  sh = Shape (x)
  s1 = Slice (sh, one1, two1)
  n = Squeeze (s1, zero1)
  r = Range (kzero, n, kone)
  ri = Unsqueeze (r, one1)
  rj = Unsqueeze (r, zero1)
  fut = Greater (rj, ri)
  lo = Sub (ri, win)
  far = LessOrEqual (rj, lo)
  ban = Or (fut, far)
  wm = Where (ban, lowest, fzero)
  sf = Add (sd, wm)
  st = Where (keep, sf, big)
`

// sinkWindowConsts are sinkWindow's constants, as an edit of sinkModel.
var sinkWindowConsts = []string{"  int64 kone", "  int64 kzero = {0},\n  int64 win = {3},\n  float fzero = {0},\n  int64 kone"}

// fixedSeq edits sinkModel's signature to a sequence of 5, layerInputs' length.
var fixedSeq = []string{"float[batch,seq,16] x, bool[batch,1,1,seq] keep) => (float[batch,seq,16] y)",
	"float[batch,5,16] x, bool[batch,1,1,5] keep) => (float[batch,5,16] y)"}

// TestSinkAttentionSlidingWindow: a block with sinks behind a sliding-window causal mask
// becomes GroupQueryAttention with local_window_size 3 (the keys a query sees, its own
// included) and head_sink, the window out of its bias, computing the graph's outputs in
// ORT where the window cuts (sequence 5); the full causal mask gets no window.
func TestSinkAttentionSlidingWindow(t *testing.T) {
	orttest.RequireLib(t)
	for _, c := range []struct {
		name   string
		terms  string
		edits  []string
		window int64
	}{
		{"window", sinkWindow, sinkWindowConsts, 3},
		{"causal", sinkCausal, nil, -1},
		// Exported at a fixed length: the mask is read at that length alone.
		{"window fixed length", sinkWindow, append(slices.Clone(sinkWindowConsts), fixedSeq...), 3},
		{"causal fixed length", sinkCausal, fixedSeq, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			orig, m, _, rep := parseAndFuse(t, sinkModel(t, 16, c.terms, c.edits...), transformer.ORT, 0)
			if rep.Ops["com.microsoft.GroupQueryAttention"] != 1 {
				t.Fatalf("ops %v, left %v, refused %v", rep.Ops, rep.Left, rep.Refusals)
			}
			for _, n := range m.Graph.Nodes() {
				if n.OpType == "GroupQueryAttention" && n.AttrInt("local_window_size", -1) != c.window {
					t.Errorf("%s: local_window_size %d, want %d", n, n.AttrInt("local_window_size", -1), c.window)
				}
				if n.OpType == "LessOrEqual" {
					t.Errorf("the window's %s left beside the fused attention", n)
				}
			}
			in := layerInputs(16)
			for _, lv := range []ort.OptLevel{ort.OptDisabled, ort.OptAll} {
				want := ortcheck.RunModel(t, orig, in, lv)
				got := ortcheck.RunModel(t, m, in, lv)
				d := ortcheck.CheckOutputs(t, c.name, want, got, 1e-4)
				t.Logf("ORT level %d: max abs diff %g", lv, d)
			}
		})
	}
}

// TestSinkAttentionFuses: a causal block with sinks becomes one GroupQueryAttention with
// the sink logits as head_sink (target ort), computing the same outputs in ORT.
func TestSinkAttentionFuses(t *testing.T) {
	orttest.RequireLib(t)
	orig, m, env, rep := parseAndFuse(t, sinkModel(t, 16, sinkCausal), transformer.ORT, 0)
	if rep.Ops["com.microsoft.GroupQueryAttention"] != 1 {
		t.Fatalf("ops %v, left %v, refused %v", rep.Ops, rep.Left, rep.Refusals)
	}
	for _, n := range m.Graph.Nodes() {
		if n.OpType == "GroupQueryAttention" && n.Input(11) == nil {
			t.Errorf("%s has no head_sink", n)
		}
		if n.OpType == "Softmax" || n.OpType == "Concat" && n.AttrInt("axis", 0) == -1 {
			t.Errorf("%s left beside the fused attention", n)
		}
	}
	checkFusedRuns(t, "sinks", orig, m, env, layerInputs(16), 1e-4)
}

// TestSinkAttentionRefusals: sinks no target computes, and joins that are not exactly
// one logit column dropped after the softmax, are refused with the reason and left.
func TestSinkAttentionRefusals(t *testing.T) {
	cases := []struct {
		name   string
		e      int
		terms  string
		edits  []string
		target transformer.Target
		want   string
	}{
		{"onnx", 16, sinkCausal, nil, transformer.ONNX, "Attention-23 has no sink input"},
		{"not causal", 16, "  st = Where (keep, sd, big)\n", nil, transformer.ORT, "(attention sinks) and the block is not causal"},
		// Masked beyond the window but not after the query: no causal window.
		{"window not causal", 16, strings.Replace(sinkWindow, "ban = Or (fut, far)", "ban = Identity (far)", 1), sinkWindowConsts, transformer.ORT, "(attention sinks) and the block is not causal"},
		{"head size 2", 4, sinkCausal, nil, transformer.ORT, "the head size 2 is not a multiple of 8"},
		{"two columns", 16, sinkCausal, []string{"float[1,2,1,1] sk = {0.75, -1.5}", "float[1,2,1,2] sk = {0.75, -1.5, 1, 2}", "sh4 = Concat <axis = 0> (s3, one1)", "sh4 = Concat <axis = 0> (s3, two1)"},
			transformer.ORT, "are not one column of a finite logit per head"},
		// Scores normalised in a [B·N,S,T] view: no axis holds the heads alone.
		{"heads merged with the batch", 16, strings.Replace(sinkCausal, "  st = Where", "  st4 = Where", 1) + "  sh3 = Shape (st4)\n  tl = Slice (sh3, two1, four1)\n  m3 = Concat <axis = 0> (minus1, tl)\n  st = Reshape (st4, m3)\n",
			[]string{"float[1,2,1,1] sk = {0.75, -1.5}", "float[1,1,1] sk = {0.75}", "s3 = Slice (shs, zero1, three1)", "s3 = Slice (shs, zero1, two1)",
				"  p = Slice (p0, zero1, minus1, minus1)", "  p3 = Slice (p0, zero1, minus1, minus1)\n  s4 = Shape (sd)\n  p = Reshape (p3, s4)", "  int64 kone", "  int64[1] four1 = {4},\n  int64 kone"},
			transformer.ORT, "(attention sinks): the scores have no axis of the heads alone"},
		// The first column dropped, not the joined one: not the sink form.
		{"first column dropped", 16, sinkCausal, []string{"  p = Slice (p0, zero1, minus1, minus1)", "  p = Slice (p0, one1, big64, minus1)", "  int64 kone", "  int64[1] big64 = {1000},\n  int64 kone"},
			transformer.ORT, "(attention sinks): the weights of the keys sum to less than one"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := ortcheck.Parse(t, sinkModel(t, c.e, c.terms, c.edits...))
			if _, err := shape.Infer(m); err != nil {
				t.Fatal(err)
			}
			_, refs := transformer.Recognize(m.Graph, generalFams)
			rep, err := transformer.Fuse(m, generalFams, &transformer.Env{Model: m, Target: c.target, RaiseOpset: 23})
			if err != nil {
				t.Fatal(err)
			}
			expectReason(t, append(refusalReasons(refs), reportReasons(rep)...), c.want)
			for op, n := range rep.Ops {
				if n != 0 && strings.Contains(op, "Attention") {
					t.Errorf("fused %d %s", n, op)
				}
			}
		})
	}
}
