package transformer_test

import (
	"fmt"
	"math/rand"
	"os"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/internal/txtar"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/shape"
)

// refusalCase is a near miss of a block: a small model that a check refuses (or that
// fuse leaves) with the reason want.
type refusalCase struct {
	name string
	src  string // a model in ONNX text syntax, without the header
	want string // a substring of the reason
	// opset is the default-domain opset import (13 when 0).
	opset    string
	target   transformer.Target // ORT when ""
	raise    int64
	provider string
	// fused lists op types (domain.op) that must not appear after fuse.
	fused []string
}

// runRefusals recognises and fuses each case with fams and expects its reason among the
// refusals, the blocks left and the Softmaxes that are not attention; the fused model
// must verify.
func runRefusals(t *testing.T, fams []*transformer.Family, cases []refusalCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opset := c.opset
			if opset == "" {
				opset = "13"
			}
			var m *ir.Model
			if strings.HasPrefix(c.src, "<") { // a whole model
				m = ortcheck.Parse(t, c.src)
			} else {
				m = geParse(t, `"" : `+opset+`, "com.microsoft" : 1`, c.src)
			}
			if _, err := shape.Infer(m); err != nil {
				t.Fatal(err)
			}
			_, refs := transformer.Recognize(m.Graph, fams)
			target := c.target
			if target == "" {
				target = transformer.ORT
			}
			rep, err := transformer.Fuse(m, fams, &transformer.Env{Model: m, Target: target, RaiseOpset: c.raise, Provider: c.provider})
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Verify(); err != nil {
				t.Fatalf("fused model does not verify: %v", err)
			}
			expectReason(t, append(refusalReasons(refs), reportReasons(rep)...), c.want)
			for _, op := range c.fused {
				if rep.Ops[op] != 0 {
					t.Errorf("%d %s after fuse; the near miss must stay as it is", rep.Ops[op], op)
				}
			}
		})
	}
}

// rotaryModel is a rotary over x [batch, 2, seq, 8] whose body is the given ops; cos and
// sin are inputs of the width the form takes.
func rotaryModel(x, cs, body string) string {
	return `rot (float` + x + ` x, float` + cs + ` cos, float` + cs + ` sin) => (y) <
  int64[1] i0 = {0}, int64[1] i1 = {1}, int64[1] i2 = {2}, int64[1] i3 = {3}, int64[1] i4 = {4},
  int64[1] i5 = {5}, int64[1] i8 = {8}, int64[1] last = {-1}, int64[1] ax3 = {3}, int64[1] ax1 = {1},
  int64[1] ax4 = {4}, int64[4] merge = {0, 0, 0, 8}
> {
` + body + `
}`
}

// rotateHalf is y = x·cos + rotate_half(x)·sin with the halves taken by lo and hi.
func rotateHalf(lo, hi, cat string) string {
	return "  lo = " + lo + "\n  hi = " + hi + "\n  nh = Neg (hi)\n  rh = " + cat +
		"\n  a = Mul (x, cos)\n  b = Mul (rh, sin)\n  y = Add (a, b)"
}

// everyTwo is GPT-J's y = x·cos + rotate_every_two(x)·sin with the pairs taken by even
// and odd, stacked by ua, ub and st, and merged by mg.
func everyTwo(even, odd, ua, ub, st, mg string) string {
	return "  ev = " + even + "\n  od = " + odd + "\n  no = Neg (od)\n  ua = " + ua + "\n  ub = " + ub +
		"\n  st = " + st + "\n  rh = " + mg + "\n  a = Mul (x, cos)\n  b = Mul (rh, sin)\n  y = Add (a, b)"
}

const (
	rotLo     = "Slice (x, i0, i4, last)"
	rotHi     = "Slice (x, i4, i8, last)"
	rotCat    = "Concat <axis = -1> (nh, lo)"
	rotX      = "[batch,2,seq,8]"
	rotTable  = "[1,1,seq,8]"
	rotEven   = "Slice (x, i0, i8, last, i2)"
	rotOdd    = "Slice (x, i1, i8, last, i2)"
	rotUa     = "Unsqueeze (no, last)"
	rotUb     = "Unsqueeze (ev, last)"
	rotStack  = "Concat <axis = -1> (ua, ub)"
	rotMerge  = "Reshape (st, merge)"
	rotFusedQ = "com.microsoft.RotaryEmbedding"
)

// TestRotaryRefusals: each check of a rotary refuses its near miss with the reason.
func TestRotaryRefusals(t *testing.T) {
	half := func(lo, hi, cat string) string { return rotaryModel(rotX, rotTable, rotateHalf(lo, hi, cat)) }
	two := func(even, odd, ua, ub, st, mg string) string {
		return rotaryModel(rotX, rotTable, everyTwo(even, odd, ua, ub, st, mg))
	}
	// partial rotates head (the first channels) with a rotate-half of width r and passes
	// pass through, joined by join.
	partial := func(head, pass, join string, r int) string {
		h := map[int]string{4: "i2", 3: "i1"}[r]
		rw := map[int]string{4: "i4", 3: "i3"}[r]
		return rotaryModel(rotX, "[1,1,seq,"+map[int]string{4: "4", 3: "3"}[r]+"]",
			"  xr = "+head+"\n  pa = "+pass+"\n  lo = Slice (xr, i0, "+h+", last)\n  hi = Slice (xr, "+h+", "+rw+
				", last)\n  nh = Neg (hi)\n  rh = Concat <axis = -1> (nh, lo)\n  a = Mul (xr, cos)\n  b = Mul (rh, sin)\n  r = Add (a, b)\n  y = "+join)
	}
	gathered := func(view, even, odd string) string {
		src := rotaryModel(rotX, rotTable, "  p = "+view+"\n"+everyTwo(even, odd, rotUa, rotUb, rotStack, rotMerge))
		return strings.Replace(src, "int64[4] merge = {0, 0, 0, 8}",
			"int64[4] merge = {0, 0, 0, 8}, int64[5] pairs = {0, 0, 0, 4, 2}, int64[5] halves = {0, 0, 0, 2, 4}, int64 g0 = {0}, int64 g1 = {1}", 1)
	}
	cases := []refusalCase{
		{name: "rank 3", src: rotaryModel("[batch,seq,8]", "[1,seq,8]", rotateHalf(rotLo, rotHi, rotCat)),
			want: "input [batch,seq,8] is not [batch, heads, seq, even head size]"},
		{name: "halves on the heads axis", src: half("Slice (x, i0, i1, ax1)", "Slice (x, i1, i2, ax1)", "Concat <axis = 1> (nh, lo)"),
			want: "the halves are not concatenated on the last axis"},
		{name: "halves swapped", src: half(rotHi, rotLo, rotCat), want: "the halves are not x[..., 4:] and x[..., :4]"},
		{name: "pairs both even", src: two(rotEven, rotEven, rotUa, rotUb, rotStack, rotMerge),
			want: "the pairs are not x[..., 0::2] and x[..., 1::2]"},
		{name: "unsqueeze axes unknown", src: strings.Replace(two(rotEven, rotOdd, "Unsqueeze (no, ua_axes)", rotUb, rotStack, rotMerge),
			"float[1,1,seq,8] sin)", "float[1,1,seq,8] sin, int64[1] ua_axes)", 1),
			want: "does not add one known axis"},
		{name: "unsqueeze not last", src: two(rotEven, rotOdd, "Unsqueeze (no, ax3)", "Unsqueeze (ev, ax3)", "Concat <axis = 3> (ua, ub)", rotMerge),
			want: "does not add a new last axis"},
		{name: "stack not last", src: two(rotEven, rotOdd, rotUa, rotUb, "Concat <axis = 3> (ua, ub)", rotMerge),
			want: "does not stack on the new last axis"},
		// The heads moved to the batch axis: the result still broadcasts against x·cos.
		{name: "merge to another shape", src: strings.Replace(rotaryModel("[1,2,seq,8]", rotTable, everyTwo(rotEven, rotOdd, rotUa, rotUb, rotStack, "Reshape (st, merge2)")),
			"int64[4] merge = {0, 0, 0, 8}", "int64[4] merge = {0, 0, 0, 8}, int64[4] merge2 = {2, 1, 0, 8}", 1),
			want: "gives [2,1,seq,8], not [1,2,seq,8]"},
		// ChatGLM's pairs: p = x viewed [..., D/2, 2], even and odd its channels 0 and 1.
		{name: "pairs gathered swapped", src: gathered("Reshape (x, pairs)", "Gather <axis = -1> (p, g1)", "Gather <axis = -1> (p, g0)"),
			want: "does not take channel 0 of each pair"},
		{name: "pairs viewed as [2, 4]", src: gathered("Reshape (x, halves)", "Gather <axis = 3> (p, g0)", "Gather <axis = 3> (p, g1)"),
			want: "gives [batch,2,seq,2,4], not the channels of [batch,2,seq,8] as [4, 2] pairs"},
		{name: "cos per head", src: rotaryModel(rotX, "[1,2,seq,8]", rotateHalf(rotLo, rotHi, rotCat)),
			want: "input [batch,2,seq,8] is not [batch, heads, seq, even head size], [batch, seq, heads, even head size] or [seq, batch, heads, even head size] against cos [1,2,seq,8]"},
		{name: "cos per other batch", src: rotaryModel(rotX, "[2,1,seq,8]", rotateHalf(rotLo, rotHi, rotCat)),
			want: "cos has shape [2,1,seq,8], not one angle row per batch|1 and position (seq) of width 8"},
		{name: "partial odd", src: partial("Slice (x, i0, i3, last)", "Slice (x, i3, i8, last)", "Concat <axis = -1> (r, pa)", 3),
			want: "is not an even number of channels below 8"},
		{name: "partial parts", src: partial("Slice (x, i1, i5, last)", "Slice (x, i4, i8, last)", "Concat <axis = -1> (r, pa)", 4),
			want: "the parts are not x[..., :4] and x[..., 4:]"},
		{name: "partial joined on heads", src: partial("Slice (x, i0, i4, last)", "Slice (x, i4, i8, last)", "Concat <axis = 1> (r, pa)", 4),
			want: "the rotated and passed parts are not concatenated on the last axis"},
	}
	for i := range cases {
		cases[i].fused = []string{rotFusedQ, "RotaryEmbedding"}
	}
	runRefusals(t, []*transformer.Family{transformer.RotaryFamily}, cases)
}

// TestRotaryLeftDouble: a rotary proved in float64 is left: the fused operators take
// float, float16 and bfloat16 only.
func TestRotaryLeftDouble(t *testing.T) {
	src := `rot (double[batch,2,seq,8] x, double[1,1,seq,4] ch, double[1,1,seq,4] sh) => (y) <
  int64[1] i0 = {0}, int64[1] i4 = {4}, int64[1] i8 = {8}, int64[1] last = {-1}
> {
  cos = Concat <axis = -1> (ch, ch)
  sin = Concat <axis = -1> (sh, sh)
` + rotateHalf(rotLo, rotHi, rotCat) + "\n}"
	runRefusals(t, []*transformer.Family{transformer.RotaryFamily}, []refusalCase{
		{name: "float64", src: src, want: "rotary computes in double", fused: []string{rotFusedQ}},
	})
}

// probeRefusal folds a probe export, applies edit, and expects the reason from
// recognising and fusing it with fams (target ort).
func probeRefusal(t *testing.T, probe string, fams []*transformer.Family, want string, edit func(t *testing.T, g *ir.Graph)) {
	t.Helper()
	m := ortcheck.Fold(t, probePath(t, probe), passes.All)
	edit(t, m.Graph)
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	_, refs := transformer.Recognize(m.Graph, fams)
	rep, err := transformer.Fuse(m, fams, &transformer.Env{Model: m, Target: transformer.ORT})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(); err != nil {
		t.Fatalf("fused model does not verify: %v", err)
	}
	expectReason(t, append(refusalReasons(refs), reportReasons(rep)...), want)
}

// nodeNamed returns the node called name, failing t when there is none.
func nodeNamed(t *testing.T, g *ir.Graph, name string) *ir.Node {
	t.Helper()
	for _, n := range g.Nodes() {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no node %s", name)
	return nil
}

// inputFor makes input i of n a new graph input of type typ.
func inputFor(t *testing.T, g *ir.Graph, n *ir.Node, i int, name string, typ *ir.Type) {
	t.Helper()
	v, err := g.AddInput(name, typ)
	if err != nil {
		t.Fatal(err)
	}
	n.SetInput(i, v)
}

var generalAttnFams = []*transformer.Family{transformer.AttentionFamily, transformer.DebertaAttentionFamily, transformer.GeneralAttentionFamily}

// TestAttentionTermRefusals: score terms the fused operators cannot take as one
// [B|1, N|1, S, T] bias.
func TestAttentionTermRefusals(t *testing.T) {
	// Swin's shifted windows add a mask per window, [nW, 1, S, S], over the scores viewed as
	// [B, nW, H, S, S]; a term that varies over the images B (the outer factor of the
	// windowed batch B·nW) but not over the windows has no bias layout.
	t.Run("swin term over the images", func(t *testing.T) {
		probeRefusal(t, "swin.opset17", generalAttnFams, "varies over the outer factor", func(t *testing.T, g *ir.Graph) {
			inputFor(t, g, nodeNamed(t, g, "/attn.1/Add_1"), 1, "per_image", ir.TensorOf(ir.Float, ir.Sym("images"), ir.D(1), ir.D(1), ir.D(16), ir.D(16)))
		})
	})
}

// generalNearMiss is generalModel with more inputs, constants and edits (old, new pairs
// of lines), its core between the head split and the merge given.
func generalNearMiss(inputs, core string, edits ...string) string {
	src := generalModel(core)
	if inputs != "" {
		src = strings.Replace(src, "bool[batch,1,1,seq] keep)", "bool[batch,1,1,seq] keep, "+inputs+")", 1)
	}
	src = strings.Replace(src, "  int64[1] last = {-1}", `  int64[1] last = {-1},
  int64[2] z2 = {0, 0},
  int64[2] t2 = {2, 2},
  int64[2] a23 = {2, 3},
  int64[1] z1 = {0},
  int64[1] t1 = {2},
  int64[1] a3 = {3},
  float qscale = {0.01}`, 1)
	// The merge is left free so that a near miss with another output layout is valid.
	src = strings.Replace(src, "merge = {0, 0, 4}", "merge = {0, 0, -1}", 1)
	src = strings.Replace(src, "=> (float[batch,seq,4] y)", "=> (y)", 1)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(src, edits[i]) {
			panic("generalNearMiss: no " + edits[i])
		}
		src = strings.Replace(src, edits[i], edits[i+1], 1)
	}
	return src
}

// crossSeq2 makes a generalModel a cross-attention: K and V from x2 of another length, so
// a number against the query axis pins nothing.
func crossSeq2(src string) string {
	src = strings.Replace(src, "bool[batch,1,1,seq] keep", "bool[batch,1,1,seq] keep, float[batch,seq2,4] x2", 1)
	src = strings.Replace(src, "  km = MatMul (x, wk)", "  km = MatMul (x2, wk)", 1)
	return strings.Replace(src, "  vm = MatMul (x, wv)", "  vm = MatMul (x2, wv)", 1)
}

// windowedCap is a soft-capped generalModel whose mask is Gemma 2's local one: the keys 2
// or more behind filled with the lowest float into the causal term plus the padding
// (keep as 0/-10000), or into the padding alone.
func windowedCap(causal bool) string {
	mask := "  pad = Where (keep, zero, big)\n  m4 = Add (fut, pad)\n"
	if !causal {
		mask = "  m4 = Where (keep, zero, big)\n"
	}
	return generalNearMiss("", `  c1 = Div (sd, cap)
  h1 = Tanh (c1)
  m1 = Mul (h1, cap)
`+causalFuture+`  ones = Expand (onef, ss)
  far = Trilu <upper = 0> (ones, mtwo)
  farb = Cast <to = 9> (far)
`+mask+`  loc = Where (farb, lowest, m4)
  sf = Add (m1, loc)
  p = Softmax <axis = -1> (sf)
  c = MatMul (p, vt)
`, "  float qscale = {0.01}", "  float qscale = {0.01},\n  float cap = {5},\n  int64[1] one1 = {1},\n  int64[1] two1 = {2},\n  float lowest = {-3.4028235e38},\n  int64 kone = {1},\n  float onef = {1},\n  int64 mtwo = {-2}", `"" : 13`, `"" : 17`)
}

// capConst adds the soft cap's constant to a generalNearMiss model.
var capConst = []string{"  float qscale = {0.01}", "  float qscale = {0.01},\n  float cap = {5}"}

// TestGeneralAttentionNearMisses: Softmaxes that are not provably attention, or whose Q,
// K or V layouts the fused operators cannot read, are refused with the reason (in the
// refusals and in the list of unfused Softmaxes).
func TestGeneralAttentionNearMisses(t *testing.T) {
	const plain = "  p = Softmax <axis = -1> (sd)\n  c = MatMul (p, vt)\n"
	const qt = "  qt = Transpose <perm = [0, 2, 1, 3]> (qr)"
	mha := []string{"com.microsoft.MultiHeadAttention", "com.microsoft.Attention"}
	cases := []refusalCase{
		// A number against a symbolic key axis pins it (the graph runs only there); against
		// a known one that differs it is refused.
		{name: "term of 3 queries in cross-attention", src: crossSeq2(generalNearMiss("float[1,1,3,1] tb", "  sm = Add (sd, tb)\n  p = Softmax <axis = -1> (sm)\n  c = MatMul (p, vt)\n")),
			want: "score term tb: axis 2 is 3 where the scores have seq"},
		{name: "softmax over the queries, transposed", src: generalNearMiss("", "  st = Transpose <perm = [0, 1, 3, 2]> (sd)\n  p0 = Softmax <axis = -1> (st)\n  p = Transpose <perm = [0, 1, 3, 2]> (p0)\n  c = MatMul (p, vt)\n"),
			want: "the softmax runs over [seq(seq)], not the key sequence"},
		// nn.MultiheadAttention's need_weights: the probabilities averaged over the heads
		// are a second output.
		{name: "probabilities averaged for an output", src: generalNearMiss("", "  p = Softmax <axis = -1> (sd)\n  w = ReduceMean <axes = [1], keepdims = 0> (p)\n  c = MatMul (p, vt)\n", "=> (y)", "=> (y, w)"),
			want: "the probabilities p are read outside the block too (2 readers: ReduceMean, MatMul): no fused attention outputs them"},
		{name: "probs regrouped", src: generalNearMiss("int64[3] m3", "  p = Softmax <axis = -1> (sd)\n  pr = Reshape (p, m3)\n  c = MatMul (pr, vt)\n"),
			want: "probs: reshape to [?,?,?] does not regroup"},
		{name: "Q/DQ on V", src: generalNearMiss("", "  p = Softmax <axis = -1> (sd)\n  vq = QuantizeLinear (vt, qscale)\n  vd = DequantizeLinear (vq, qscale)\n  c = MatMul (p, vd)\n"),
			want: "Q/DQ pairs inside the attention core (a fused float operator would drop them)"},
		// TensorRT's placement: a pair on the probabilities too; the block is still proved.
		{name: "Q/DQ on V and the probabilities", src: generalNearMiss("", "  p0 = Softmax <axis = -1> (sd)\n  pq = QuantizeLinear (p0, qscale)\n  p = DequantizeLinear (pq, qscale)\n  vq = QuantizeLinear (vt, qscale)\n  vd = DequantizeLinear (vq, qscale)\n  c = MatMul (p, vd)\n"),
			want: "Q/DQ pairs inside the attention core (a fused float operator would drop them)"},
		// Read as [B,N,S,D] (heads first), the input's sequence lands among the batch axes;
		// read as [B,S,N,D], which gets further, its keys are not K's: that is the reason.
		{name: "V of rank 4 from an input, over other keys", src: generalNearMiss("float[batch,seq2,2,2] v2", "  p = Softmax <axis = -1> (sd)\n  v2t = Transpose <perm = [0, 2, 1, 3]> (v2)\n  c = MatMul (p, v2t)\n"),
			want: "K's sequence seq and V's seq2 differ"},
		{name: "soft-capped twice", src: generalNearMiss("", "  c1 = Div (sd, cap)\n  h1 = Tanh (c1)\n  m1 = Mul (h1, cap)\n  c2 = Div (m1, cap)\n  h2 = Tanh (c2)\n  m2 = Mul (h2, cap)\n  p = Softmax <axis = -1> (m2)\n  c = MatMul (p, vt)\n", capConst...),
			want: "the scores are soft-capped twice"},
		{name: "term before the soft cap", src: generalNearMiss("float[batch,1,1,seq] tb", "  sm = Add (sd, tb)\n  c1 = Div (sm, cap)\n  h1 = Tanh (c1)\n  m1 = Mul (h1, cap)\n  p = Softmax <axis = -1> (m1)\n  c = MatMul (p, vt)\n", capConst...),
			want: "an additive term (tb) enters the scores before the soft cap"},
		{name: "scaled after the soft cap", src: generalNearMiss("", "  c1 = Div (sd, cap)\n  h1 = Tanh (c1)\n  m1 = Mul (h1, cap)\n  m2 = Mul (m1, qscale)\n  p = Softmax <axis = -1> (m2)\n  c = MatMul (p, vt)\n", capConst...),
			want: "the scores are scaled after the soft cap"},
		{name: "soft cap for target ort", src: generalNearMiss("", "  c1 = Div (sd, cap)\n  h1 = Tanh (c1)\n  m1 = Mul (h1, cap)\n  p = Softmax <axis = -1> (m1)\n  c = MatMul (p, vt)\n", capConst...),
			want: "the scores are soft-capped and not causal"},
		{name: "causal soft cap of head size 2 for target ort", src: generalNearMiss("", `  c1 = Div (sd, cap)
  h1 = Tanh (c1)
  m1 = Mul (h1, cap)
`+causalFuture+`  sf = Add (m1, fut)
  p = Softmax <axis = -1> (sf)
  c = MatMul (p, vt)
`, "  float qscale = {0.01}", "  float qscale = {0.01},\n  float cap = {5},\n  int64[1] one1 = {1},\n  int64[1] two1 = {2},\n  float lowest = {-3.4028235e38},\n  int64 kone = {1}", `"" : 13`, `"" : 17`),
			want: "the head size 2 is not a multiple of 8"},
		// Gemma 2's local layers: the far keys filled into causal + padding. The mask covers
		// the later keys (GroupQueryAttention's own causal adds nothing), so only the head
		// size refuses; without the causal term it is refused as not causal.
		{name: "windowed soft cap of head size 2 for target ort", src: windowedCap(true), want: "the head size 2 is not a multiple of 8"},
		{name: "windowed soft cap without causal term for target ort", src: windowedCap(false), want: "the scores are soft-capped and not causal"},
		// A maximum over the queries is not constant along the keys: not a no-op for the softmax.
		{name: "row maximum over the queries", src: generalNearMiss("", "  mx = ReduceMax <axes = [2]> (sd)\n  sb = Sub (sd, mx)\n  p = Softmax <axis = -1> (sb)\n  c = MatMul (p, vt)\n"),
			want: "the softmax input does not come from a matmul (Q·Kᵀ) through layout ops and additive terms"},
		// GPT-OSS's attention sinks with the logits read at run time: head_sink is a
		// constant of the block (TestSinkAttentionFuses has the constant ones).
		{name: "scores joined with sink logits", src: generalNearMiss("float[batch,2,seq,1] snk", "  sk = Concat <axis = -1> (sd, snk)\n  mx = ReduceMax <axes = [-1]> (sk)\n  sb = Sub (sk, mx)\n  p = Softmax <axis = -1> (sb)\n  ps = Slice (p, z1, last, a3)\n  c = MatMul (ps, vt)\n"),
			want: "(attention sinks): the logits snk are not computed from constants and sizes: snk is an input"},
		{name: "scores from no matmul", src: generalNearMiss("float[batch,2,seq,seq] sc", "  p = Softmax <axis = -1> (sc)\n  c = MatMul (p, vt)\n"),
			want: "the softmax input does not come from a matmul (Q·Kᵀ) through layout ops and additive terms"},
		{name: "V over other keys", src: generalNearMiss("float[batch,seq2,4] x2", plain, "  vm = MatMul (x, wv)", "  vm = MatMul (x2, wv)"),
			want: "K's sequence seq and V's seq2 differ"},
		{name: "no batch", src: `g (float[seq,4] x, float[4,4] wq, float[4,4] wk, float[4,4] wv) => (y) {
  q = MatMul (x, wq)
  k = MatMul (x, wk)
  v = MatMul (x, wv)
  kt = Transpose <perm = [1, 0]> (k)
  s = MatMul (q, kt)
  p = Softmax <axis = -1> (s)
  y = MatMul (p, v)
}`, want: "Q·Kᵀ of rank 2 has no batch"},
		{name: "Q sliced on two axes", src: generalNearMiss("", plain, qt, "  qsl = Slice (qr, z2, t2, a23)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qsl)"),
			want: "Q: Slice(->qsl) slices more than one axis"},
		{name: "Q sliced with a step read at run time", src: generalNearMiss("int64[1] stp", plain, qt, "  qsl = Slice (qr, z1, t1, a3, stp)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qsl)"),
			want: "Q: Slice(->qsl): step is not a positive constant"},
		{name: "Q gathered at an index read at run time", src: generalNearMiss("int64 gi", plain, qt, "  qu = Unsqueeze (qr, z1)\n  qg = Gather <axis = 0> (qu, gi)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qg)"),
			want: "Q: Gather(->qg): index is not a constant scalar or a one-element list"},
		{name: "Q squeezed on the batch", src: generalNearMiss("", plain, qt, "  qq = Squeeze (qr, z1)\n  qu = Unsqueeze (qq, z1)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qu)"),
			want: "Q: Squeeze(->qq) squeezes a non-unit axis"},
		{name: "Q unsqueezed on axes read at run time", src: generalNearMiss("int64[1] ua", plain, qt, "  qu = Unsqueeze (qr, ua)\n  qq = Squeeze (qu, ua)\n  qt = Transpose <perm = [0, 2, 1, 3]> (qq)"),
			want: "Q: Unsqueeze(->qu): axes not constant"},
	}
	for i := range cases {
		cases[i].fused = append(mha, "Attention")
	}
	runRefusals(t, generalAttnFams, cases)
	// An input of 2 batches added to scores of any batch: no mask the encoder family knows,
	// no bias the general one can lay out.
	runRefusals(t, generalAttnFams, []refusalCase{{name: "mask input of two batches",
		src:  generalNearMiss("float[2,1,1,seq] tb", "  sm = Add (sd, tb)\n  p = Softmax <axis = -1> (sm)\n  c = MatMul (p, vt)\n"),
		want: "mask of an unknown form: additive mask input tb has shape [2,1,1,seq]", fused: mha}})
}

// TestLeftThenFused: a block the BERT-like family leaves (its mask is a sum of two inputs)
// and the general family then fuses is fused, not reported as left.
func TestLeftThenFused(t *testing.T) {
	src := generalNearMiss("float[batch,1,1,seq] a1, float[batch,1,1,seq] a2",
		"  a12 = Add (a1, a2)\n  sm = Add (sd, a12)\n  p = Softmax <axis = -1> (sm)\n  c = MatMul (p, vt)\n")
	m := ortcheck.Parse(t, src)
	rep, err := transformer.Fuse(m, generalAttnFams, &transformer.Env{Model: m, Target: transformer.ORT})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops["com.microsoft.MultiHeadAttention"] != 1 || len(rep.Left) != 0 {
		t.Errorf("ops %v, left %q; want one MultiHeadAttention and nothing left", rep.Ops, rep.Left)
	}
}

// lnModel is a decomposed LayerNorm of x with its body edited (old, new pairs).
func lnModel(x string, edits ...string) string {
	src := `g (` + x + ` x) => (y) <
  float two = {2},
  float eps = {1e-5},
  float[2,1,1] eps2 = {1e-5, 1e-5},
  float[8] gamma = {1.1, 0.9, 1, 1.2, 0.8, 1, 1.05, 0.95},
  float[1] gamma1 = {1.1},
  float[8] beta = {0.1, -0.1, 0, 0.2, -0.2, 0, 0.05, -0.05}
> {
  m = ReduceMean <axes = [-1]> (x)
  d = Sub (x, m)
  s = Pow (d, two)
  v = ReduceMean <axes = [-1]> (s)
  e = Add (v, eps)
  r = Sqrt (e)
  n = Div (d, r)
  sc = Mul (n, gamma)
  y = Add (sc, beta)
}`
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(src, edits[i]) {
			panic("lnModel: no " + edits[i])
		}
		src = strings.Replace(src, edits[i], edits[i+1], 1)
	}
	return src
}

// TestNormRefusals: each check of the LayerNorm and RMSNorm families refuses its near
// miss with the reason, and fuse leaves a block it cannot lower with the reason.
func TestNormRefusals(t *testing.T) {
	const x = "float[2,8,8]"
	stats := func(to string) []string { // the statistics on Cast(x), the numerator too
		return []string{"  m = ReduceMean <axes = [-1]> (x)\n  d = Sub (x, m)", "  xs = Cast <to = " + to + "> (x)\n  m = ReduceMean <axes = [-1]> (xs)\n  d = Sub (xs, m)"}
	}
	ln := []string{"LayerNormalization", "com.microsoft.SkipLayerNormalization"}
	cases := []refusalCase{
		{name: "statistics cast to int", src: lnModel(x, stats("6")...), want: "the statistics run on a Cast to int32, not a float type"},
		{name: "result cast alone", src: lnModel(x, "  sc = Mul (n, gamma)", "  nc = Cast <to = 1> (n)\n  sc = Mul (nc, gamma)"),
			want: "the result is cast without the statistics being cast first"},
		{name: "x of no known type", src: lnModel(x, "g ("+x+" x) => (y) <", "g ("+x+" x0) => (y) <", "  m = ReduceMean", "  x = com.microsoft.Opaque (x0)\n  m = ReduceMean"),
			want: "x's type is unknown"},
		{name: "x of ints", src: lnModel("int32[2,8,8]", "float two = {2}", "int32 two = {2}", "float eps = {1e-5}", "int32 eps = {1}"),
			want: "x is int32, not a float tensor"},
		{name: "mean over every axis", src: lnModel(x, "  m = ReduceMean <axes = [-1]> (x)", "  m = ReduceMean (x)"),
			want: "mean ReduceMean reduces every axis"},
		{name: "mean over two axes", src: lnModel(x, "  m = ReduceMean <axes = [-1]> (x)", "  m = ReduceMean <axes = [1, 2]> (x)"),
			want: "normalised over axes [1 2], not the last axis alone"},
		{name: "axis 1 of unknown rank", src: lnModel(x, "g ("+x+" x) => (y) <", "g (float[2,8,8] x0, int64[r] shp) => (y) <", "  m = ReduceMean <axes = [-1]> (x)",
			"  x = Reshape (x0, shp)\n  m = ReduceMean <axes = [1]> (x)", "  v = ReduceMean <axes = [-1]> (s)", "  v = ReduceMean <axes = [1]> (s)"),
			want: "normalised over axis 1, and the rank is unknown"},
		{name: "two epsilons", src: lnModel(x, "  e = Add (v, eps)", "  e = Add (v, eps2)"), want: "eps has 2 elements, not one"},
		{name: "one gamma for eight channels", src: lnModel(x, "  sc = Mul (n, gamma)", "  sc = Mul (n, gamma1)"), want: "gamma has 1 elements, the normalised axis 8"},
		{name: "one gamma for unknown channels", src: lnModel("float[2,8,h]", "  sc = Mul (n, gamma)", "  sc = Mul (n, gamma1)", "  y = Add (sc, beta)", "  y = Identity (sc)"),
			want: "gamma has 1 element and the normalised axis' size is unknown"},
		{name: "no gamma over unknown channels", src: lnModel("float[2,8,h]", "  sc = Mul (n, gamma)\n  y = Add (sc, beta)", "  y = Identity (n)"),
			want: "no gamma, and the normalised axis' size is unknown: cannot build a ones scale"},
		{name: "fused, axis 1 of unknown rank", src: `g (float[2,8,8] x0, int64[r] shp) => (y) <
  float[8] gamma = {1.1, 0.9, 1, 1.2, 0.8, 1, 1.05, 0.95}
> {
  x = Reshape (x0, shp)
  y = LayerNormalization <axis = 1> (x, gamma)
}`, opset: "17", want: "normalised from axis 1, and x's rank is unknown"},
		{name: "raise from opset 6", src: lnModel(x), opset: "6", target: transformer.ONNX, raise: 17,
			want: "LayerNormalization needs opset 17; the model is at 6, and raising from below 7 is not attempted (element-wise ops broadcast by attribute before 7)"},
		{name: "LayerNorm for tensorrt", src: lnModel(x), target: "tensorrt", want: `unknown target "tensorrt"`},
		{name: "RMSNorm for tensorrt", src: lnModel(x, "  m = ReduceMean <axes = [-1]> (x)\n  d = Sub (x, m)\n", "  d = Identity (x)\n", "  y = Add (sc, beta)", "  y = Identity (sc)"),
			target: "tensorrt", want: `unknown target "tensorrt"`},
	}
	for i := range cases {
		switch cases[i].name {
		case "result cast alone", "one gamma for eight channels":
			// The norm before the Cast, or without the affine, is a block of its own.
		case "fused, axis 1 of unknown rank":
		default:
			cases[i].fused = ln
		}
	}
	runRefusals(t, []*transformer.Family{transformer.LayerNormFamily, transformer.RMSNormFamily}, cases)
}

// TestSkipRefusals: the residual checks of the skip families.
func TestSkipRefusals(t *testing.T) {
	skip := func(a, b string) string {
		return `g (` + a + ` a, ` + b + ` b) => (y) <
  float[8] gamma = {1.1, 0.9, 1, 1.2, 0.8, 1, 1.05, 0.95},
  float[8] beta = {0.1, -0.1, 0, 0.2, -0.2, 0, 0.05, -0.05}
> {
  s = Add (a, b)
  y = LayerNormalization <axis = -1, epsilon = 1e-12> (s, gamma, beta)
}`
	}
	runRefusals(t, []*transformer.Family{transformer.LayerNormFamily, transformer.SkipFamily}, []refusalCase{
		{name: "types differ", src: skip("float16[batch,seq,8]", "float[batch,seq,8]"), opset: "17", want: "input is float16 and skip float"},
		{name: "tensorrt", src: skip("float[batch,seq,8]", "float[batch,seq,8]"), opset: "17", target: "tensorrt", want: `unknown target "tensorrt"`},
	})
}

// TestGeluConstantAndBiasRefusals: the GELU checks not covered by TestGeluRefusals.
func TestGeluConstantAndBiasRefusals(t *testing.T) {
	erf := geluGraph(geluFactors["erf-div"]+geluHalves["after"], false, 13)
	biased := geluGraph(geluFactors["erf-div"]+geluHalves["after"], true, 13)
	unknownRank := strings.Replace(strings.Replace(biased, "g (float[2,8] x0)", "g (float[2,8] x00, int64[r] shp)", 1),
		"  x = Add (b, x0)", "  x0 = Reshape (x00, shp)\n  x = Add (b, x0)", 1)
	cases := []refusalCase{
		{name: "divided by 3", src: geluGraph(geluFactors["erf-div"]+strings.Replace(geluHalves["before"], "two", "three", 1), false, 13),
			want: "output divided by 3, not 2"},
		{name: "erf shifted by 2", src: geluGraph(strings.Replace(geluFactors["erf-div"], "Add (e, one)", "Add (e, two)", 1)+geluHalves["after"], false, 13),
			want: "erf/tanh shifted by 2, not 1"},
		{name: "cubic term shifted by 2", src: geluGraph(strings.Replace(geluFactors["tanh-fast"], "Add (one, kxx)", "Add (two, kxx)", 1)+geluHalves["after"], false, 13),
			want: "cubic term shifted by 2, not 1"},
		{name: "half per channel", src: strings.Replace(erf, "float half = {0.5}", "float[1,8] half = {0.5, 0.25, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5}", 1),
			want: "c_half holds different values (0.5, 0.25)"},
		{name: "input of no known type", src: strings.Replace(strings.Replace(erf, "g (float[2,8] x)", "g (float[2,8] x0)", 1), "  d = Div (x, sqrt2)", "  x = com.microsoft.Opaque (x0)\n  d = Div (x, sqrt2)", 1),
			want: "input type unknown"},
		{name: "bias over unknown channels", src: strings.Replace(biased, "g (float[2,8] x0)", "g (float[2,h] x0)", 1),
			want: "bias has 8 elements, the input's last dimension is h"},
		{name: "bias over unknown rank", src: unknownRank, want: "input rank unknown: cannot check the bias size"},
	}
	for i := range cases {
		if !strings.HasPrefix(cases[i].name, "bias") { // a refused bias leaves the GELU after it
			cases[i].fused = []string{"com.microsoft.Gelu", "com.microsoft.BiasGelu", "com.microsoft.FastGelu", "Gelu"}
		}
	}
	runRefusals(t, []*transformer.Family{transformer.GeluFamily}, cases)
}

// TestFFNMoreRefusals: the FFN checks not covered by TestFFNRefusals.
func TestFFNMoreRefusals(t *testing.T) {
	with := func(src string, edits ...string) string { return editSrc(t, src, edits...) }
	slice := ffnSource("packed-slice", "silu", "matmul-add", true)
	split := ffnSource("packed-split", "silu", "matmul-add", true)
	convSplit := ffnSource("packed-split", "silu", "conv", true)
	convSlice := ffnSource("packed-slice", "silu", "conv", true)
	unsized := func(src, shape string) string {
		return with(src, "g (float"+shape+" x)", "g (float"+shape+" x0, int64[r] dims)", "> {\n", "> {\n  x = Reshape (x0, dims)\n")
	}
	runRefusals(t, []*transformer.Family{transformer.FFNFamily}, []refusalCase{
		// The halves are cut on the features: the last axis of x·W, the channels (axis 1)
		// of a channel-first 1×1 Conv. The down projection then reads 2·F features, so
		// no cut on another axis makes a valid model: x is reshaped to a shape of a rank
		// shape inference does not know.
		{name: "halves split on the positions", src: with(unsized(split, "[2,3,8]"), "Split <axis = -1>", "Split <axis = 1>"),
			want: "the packed projection is split on axis 1, not the last"},
		{name: "channel-first halves split on the positions", src: with(unsized(convSplit, "[2,8,3]"), "Split <axis = 1>", "Split <axis = -1>"),
			want: "the packed projection is split on axis -1, not the channels (axis 1)"},
		{name: "halves sliced on the positions", src: with(unsized(slice, "[2,3,8]"), "int64[1] s_ax = {-1}", "int64[1] s_ax = {-2}"),
			want: "a packed half is sliced on axis -2, not the last"},
		{name: "channel-first halves sliced on the positions", src: with(unsized(convSlice, "[2,8,3]"), "int64[1] s_ax = {1}", "int64[1] s_ax = {2}"),
			want: "a packed half is sliced on axis 2, not the channels (axis 1)"},
		{name: "split in three", src: with(split, "int64[2] halves = {16, 16}", "int64[3] halves = {16, 16, 0}", "gt, u = Split", "gt, u, rest = Split"),
			want: "the packed projection is split in 3, not 2"},
		{name: "split sizes an input", src: with(split, "g (float[2,3,8] x)", "g (float[2,3,8] x, int64[2] hv)", "(p, halves)", "(p, hv)"),
			want: "the split sizes are not a constant"},
		{name: "slice ends an input", src: with(slice, "g (float[2,3,8] x)", "g (float[2,3,8] x, int64[1] mid)", "gt = Slice (p, s_lo, s_mid, s_ax)", "gt = Slice (p, s_lo, mid, s_ax)"),
			want: "a packed half is not a constant one-axis Slice"},
		{name: "slice with a step", src: with(slice, "int64[1] s_lo = {0}", "int64[1] s_lo = {0},\n  int64[1] s_two = {2},\n  int64[1] s_end = {32}", "gt = Slice (p, s_lo, s_mid, s_ax)", "gt = Slice (p, s_lo, s_end, s_ax, s_two)"),
			want: "a packed half is sliced with a step"},
		{name: "slice across the halves", src: with(slice, "int64[1] s_lo = {0}", "int64[1] s_lo = {0},\n  int64[1] s_8 = {8},\n  int64[1] s_24 = {24}", "gt = Slice (p, s_lo, s_mid, s_ax)", "gt = Slice (p, s_8, s_24, s_ax)"),
			want: "a packed half is [8:24], not a half of 32"},
	})
}

// TestFFNConvSamePadding: a 1×1 convolution with unit strides pads nothing whatever its
// auto_pad, so SAME_UPPER is a projection like VALID (it was refused as "pads SAME_UPPER").
func TestFFNConvSamePadding(t *testing.T) {
	src := strings.ReplaceAll(ffnSource("plain", "relu", "conv", true), "Conv <kernel_shape = [1]>", `Conv <auto_pad = "SAME_UPPER", kernel_shape = [1]>`)
	m := geParse(t, `"" : 13`, src)
	blocks, refs := ffnRecognize(t, m)
	if len(blocks) != 1 || len(refs) != 0 {
		t.Fatalf("%d blocks, refusals %q; want one FFN of 1×1 convolutions", len(blocks), refs)
	}
	if n := blocks[0].Role(transformer.RoleUpWeight).Uses()[0].Node; n.OpType != "Conv" {
		t.Errorf("the up projection is %s, not the Conv", n)
	}
}

// TestQLinearMoreRefusals: the checks of a quantized linear layer's Q/DQ parameters not
// covered by TestQLinearRefusals.
func TestQLinearMoreRefusals(t *testing.T) {
	layer := func(a, w, tail string) string {
		return "  xq = QuantizeLinear (x, " + a + ")\n  xd = DequantizeLinear (xq, " + a + ")\n  wd = DequantizeLinear " + w + "\n  mm = MatMul (xd, wd)\n  y = " + tail
	}
	const wd = "<axis = 1> (w, ws, wz)"
	const add = "Add (mm, b)"
	inits := `,
  float xs0 = {0},
  int32 xz32 = {0},
  int8[1,4,2] w3 = {12, -7, 100, 3, -127, 64, 5, 9}`
	q := func(body string) string { return qlinGraph(inits, body) }
	cases := []refusalCase{
		{name: "blocked weight", src: q(layer("xs, xz", "<axis = 1, block_size = 2> (w, ws, wz)", add)), want: "DequantizeLinear is blocked"},
		{name: "scale zero", src: q(layer("xs0, xz", wd, add)), want: "QuantizeLinear scale 0 is not positive and finite"},
		{name: "zero point computed", src: q("  z = Identity (xz)\n" + layer("xs, z", wd, add)), want: "QuantizeLinear zero point is not constant"},
		{name: "zero points per channel, scale per tensor", src: q(layer("xs, xz4", wd, add)), want: "QuantizeLinear zero point does not match its scale"},
		{name: "int32 zero point", src: q(layer("xs, xz32", wd, add)), want: "QuantizeLinear quantizes to int32, not int8 or uint8"},
		{name: "3-D weight", src: q(layer("xs, xz", "<axis = 2> (w3, ws, wz)", add)), want: "weight is not a constant 2-D tensor"},
		{name: "1-D input", src: strings.Replace(strings.Replace(q(layer("xs, xz", wd, add)), "float[batch,seq,4] x", "float[4] x", 1), "float[batch,seq,2] y", "float[2] y", 1),
			want: "input is not a float tensor of rank 2 or more"},
	}
	for i := range cases {
		cases[i].provider = "cpu"
		cases[i].fused = []string{"com.microsoft.MatMulIntegerToFloat"}
	}
	runRefusals(t, nil, cases)
}

// TestEmbeddingMoreRefusals: the embedding checks not covered by TestEmbeddingRefusals,
// each on an edit of BERT's embedding (lookups summed, then a decomposed LayerNorm).
func TestEmbeddingMoreRefusals(t *testing.T) {
	bert := func(opset string, edits ...string) func(t *testing.T) string {
		return func(t *testing.T) string {
			src := embBERT
			for i := 0; i+1 < len(edits); i += 2 {
				if !strings.Contains(src, edits[i]) {
					t.Fatalf("no %q in\n%s", edits[i], src)
				}
				src = strings.Replace(src, edits[i], edits[i+1], 1)
			}
			return src
		}
	}
	const ins = "g (int64[batch,seq] input_ids, int64[batch,seq] token_type_ids)"
	cases := []struct {
		name, opset string
		src         func(t *testing.T) string
		want        string
	}{
		{"word lookup unsqueezed", "17", bert("17", "  w = Gather (word, input_ids)", "  w0 = Gather (word, input_ids)\n  w = Unsqueeze (w0, a0)", "=> (float[batch,seq,4] y)", "=> (y)"),
			"only a [seq] position lookup made [1, seq, hidden] is a term"},
		{"positions sliced from row 1", "17", bert("17", "  p = Gather (pos, pids)", "  p0 = Slice (pos, a1, slu, a0)\n  p = Unsqueeze (p0, a0)", "=> (float[batch,seq,4] y)", "=> (y)"),
			"does not take its first rows (start 0, axis 0, step 1)"},
		{"three positions sliced off", "17", bert("17", "  float eps = {1e-12}", "  float eps = {1e-12},\n  int64[1] e3 = {3}", "  p = Gather (pos, pids)", "  p0 = Slice (pos, a0, e3, a0)\n  p = Unsqueeze (p0, a0)", "=> (float[batch,seq,4] y)", "=> (y)"),
			"not the input ids' int64[batch,seq] positions"},
		{"sliced positions unsqueezed at axis 1", "17", bert("17", "  p = Gather (pos, pids)", "  p0 = Slice (pos, a0, slu, a0)\n  p = Unsqueeze (p0, a1)", "=> (float[batch,seq,4] y)", "=> (y)"),
			"the sliced positions are unsqueezed by p, not at axis 0"},
		{"two position lookups", "17", bert("17", "  x = Add (wt, p)", "  x0 = Add (wt, p)\n  p2 = Gather (pos, pids)\n  x = Add (x0, p2)"), "two position lookups"},
		{"no word lookup", "17", bert("17", "  w = Gather (word, input_ids)\n", "", "  tt = Gather (seg, token_type_ids)\n", "", "  wt = Add (w, tt)\n", "  wt = Gather (word, i0)\n"), "no lookup by input ids (word embedding)"},
		{"three lookups by ids", "17", bert("17", ins, "g (int64[batch,seq] input_ids, int64[batch,seq] token_type_ids, int64[batch,seq] lang_ids)",
			"  float eps = {1e-12}", "  float eps = {1e-12},\n  float[5,4] lang = {...}", "  x = Add (wt, p)", "  wl = Add (wt, l)\n  l = Gather (lang, lang_ids)\n  x = Add (wl, p)"),
			"3 lookups by input ids: more than word and segment embeddings"},
		{"segment ids of one column", "17", bert("17", ins, "g (int64[batch,seq] input_ids, int64[batch,1] token_type_ids)"),
			"segment ids are int64[batch,1], input ids int64[batch,seq]"},
		{"position ids of the sequence only", "17", bert("17", ins, "g (int64[batch,seq] input_ids, int64[batch,seq] token_type_ids, int64[seq] position_ids)",
			"  p = Gather (pos, pids)", "  p = Gather (pos, position_ids)"), "position ids are int64[seq], not [batch or 1, sequence]"},
		{"per-position constant and computed positions", "17", bert("17", ins, "g (int64[batch,5] input_ids, int64[batch,5] token_type_ids, int64[batch,5] position_ids)",
			"  float eps = {1e-12}", "  float eps = {1e-12},\n  float[1,5,4] pc = {...}", "  p = Gather (pos, pids)", "  p = Gather (pos, position_ids)", "  x = Add (wt, p)", "  x0 = Add (wt, p)\n  x = Add (x0, pc)"),
			"a per-position constant term besides computed position ids"},
		{"constant id outside the table", "17", bert("17", "  float eps = {1e-12}", "  float eps = {1e-12},\n  int64 i9 = {9}", "  x = Add (wt, p)", "  x0 = Add (wt, p)\n  r9 = Gather (word, i9)\n  x = Add (x0, r9)"),
			"constant id 9 outside table word of 6 rows"},
		{"constant term of one channel", "17", bert("17", "  float eps = {1e-12}", "  float eps = {1e-12},\n  float[1,1,1] c1f = {0.5}", "  x = Add (wt, p)", "  x0 = Add (wt, p)\n  x = Add (x0, c1f)"),
			"constant term of shape [1 1 1] does not end in the hidden size 4"},
		// Batch, sequence and hidden all 4: the [4,4] variance broadcasts against [4,4,4].
		{"statistics without the axis", "17", bert("17", ins, "g (int64[4,4] input_ids, int64[4,4] token_type_ids)", "=> (float[batch,seq,4] y)", "=> (y)",
			"  var = ReduceMean <axes = [-1]> (sq)", "  var = ReduceMean <axes = [-1], keepdims = 0> (sq)"),
			"ln_var ReduceMean drops the axis"},
		{"statistics over axes read at run time", "18", bert("18", ins, "g (int64[batch,seq] input_ids, int64[batch,seq] token_type_ids, int64[1] axin)",
			"  mean = ReduceMean <axes = [-1]> (x)", "  mean = ReduceMean (x, axin)", "  var = ReduceMean <axes = [-1]> (sq)", "  var = ReduceMean (sq, axin)"),
			"ln_mean axes are not constant"},
		{"statistics over the sequence", "17", bert("17", "  mean = ReduceMean <axes = [-1]> (x)", "  mean = ReduceMean <axes = [1]> (x)"), "normalised over axes [1], not the last"},
		{"eps per channel", "17", bert("17", "  float eps = {1e-12}", "  float eps = {1e-12},\n  float[4] eps4 = {1e-12, 1e-12, 1e-12, 1e-12}", "  ve = Add (var, eps)", "  ve = Add (var, eps4)"),
			"eps has 4 elements, not one"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, `"" : `+c.opset, c.src(t))
			geFillRandom(m)
			b, refs := embOnly(t, m, []*transformer.Family{transformer.EmbeddingFamily})
			if b != nil && b.Root.Name == "y" {
				t.Fatalf("recognised %s at y; want the refusal %q", b.Variant, c.want)
			}
			expectReason(t, refusalReasons(refs), c.want)
		})
	}
}

// bertNearMiss is the BERT case of TestAttentionReasons with edits (old, new pairs).
// editSrc replaces each edits[i] by edits[i+1] once in src, failing t when one is absent.
func editSrc(t testing.TB, src string, edits ...string) string {
	t.Helper()
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(src, edits[i]) {
			t.Fatalf("no %q in\n%s", edits[i], src)
		}
		src = strings.Replace(src, edits[i], edits[i+1], 1)
	}
	return src
}

func bertNearMiss(t *testing.T, edits ...string) string {
	data, err := os.ReadFile("testdata/attention-bert-add-mask.txtar")
	if err != nil {
		t.Fatal(err)
	}
	base, _ := txtar.Parse(data).Get("input")
	src := strings.Replace(string(base), `opset_import: ["" : 13]`, `opset_import: ["" : 13, "com.microsoft" : 1]`, 1)
	src = strings.Replace(src, "  float fone = {1},", "  float fone = {1},\n  float fhalf = {0.5},\n  float finf = {-inf},\n  float ffill = {-10000},", 1)
	return editSrc(t, src, edits...)
}

// TestAttentionMaskRefusals: the BERT-like family's mask and head checks refuse their
// near misses with the reason (the block is no attention block, or is left).
func TestAttentionMaskRefusals(t *testing.T) {
	deep := "  [\"/Sub\"] inv = Sub (fone, mf)"
	prev := "mf"
	var chain strings.Builder
	for i := 0; i < 26; i++ {
		fmt.Fprintf(&chain, "  d%d = Identity (%s)\n", i, prev)
		prev = fmt.Sprintf("d%d", i)
	}
	const where = "Where (mb, ffill, sd)"
	cases := []struct {
		name  string
		edits []string
		want  string
	}{
		{"masked positions NaN", []string{"  [\"/Mul\"] ext = Mul (inv, fmin)", "  ni = Neg (inv)\n  ext = Pow (ni, fhalf)"}, "mask of an unknown form: masked positions get NaN"},
		{"constant mask of -inf", []string{"  [\"/L/Add\"] sm = Add (sd, ext)", "  [\"/L/Add\"] sm = Add (sd, finf)"}, "mask of an unknown form: constant mask is not finite"},
		{"mask through a contrib op", []string{deep, "  inv = com.microsoft.Opaque (mf)"}, "mask of an unknown form: mask uses com.microsoft.Opaque"},
		{"mask expression too deep", []string{deep, chain.String() + "  inv = Sub (fone, " + prev + ")"}, "mask of an unknown form: mask expression too deep"},
		{"mask over other keys", []string{"int64[batch,seq] attention_mask", "int64[batch,keys] attention_mask"},
			"mask of an unknown form: mask input attention_mask [batch,keys] does not match the scores [batch,2,seq,seq]"},
		{"where condition constant", []string{"  [\"/L/Add\"] sm = Add (sd, ext)", "  mb = Cast <to = 9> (fone)\n  [\"/L/Add\"] sm = " + where},
			"mask of an unknown form: mask condition does not depend on an input"},
		{"where condition of rank 2", []string{"  [\"/L/Add\"] sm = Add (sd, ext)", "  mb = Cast <to = 9> (attention_mask)\n  [\"/L/Add\"] sm = " + where},
			"mask of an unknown form: a rank-2 mask condition selects among the rank-4 scores"},
		{"mask through a three-way Max", []string{deep, "  mx = Max (mf, mf, mf)\n  inv = Sub (fone, mx)"}, "mask of an unknown form: mask uses Max with 3 inputs"},
		{"mask of strings", []string{"int64[batch,seq] attention_mask", "string[batch,seq] attention_mask"}, "mask of an unknown form: mask input attention_mask is string"},
		{"q weight batched", []string{"  float[4,4] wq =", "  float[1,4,4] wq ="}, "q weight has shape [1,4,4], not [4,4]"},
		{"k split read at run time", []string{"bert (float[batch,seq,4] x,", "bert (int64[r] kshape2, float[batch,seq,4] x,", "Reshape (ka, kshape)", "Reshape (ka, kshape2)"},
			"head split has unknown shape or rank"},
		// Refused at the merge; the block ending before it fuses (the merge then reads the
		// fused output).
		{"heads merged into tokens", []string{"  int64[3] merge = {0, 0, 4},", "  int64[2] merge = {-1, 4},", "=> (float[batch,seq,4] y)", "=> (y)"},
			"heads are merged into [batch*seq,4], not [B,S,4]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := ortcheck.Parse(t, bertNearMiss(t, c.edits...))
			_, refused := attnDump(t, m)
			rep := attnFuse(t, m, &transformer.Env{Target: transformer.ORT})
			expectReason(t, append(refused, reportReasons(rep)...), c.want)
			if rep.Ops["com.microsoft.Attention"] != 0 && c.name != "heads merged into tokens" {
				t.Errorf("the near miss was fused: %v", rep.Ops)
			}
		})
	}
}

// gqaBroadcast is grouped-query attention written with matmul broadcasting: Q as
// [B, KV, G, S, D] (two K/V heads of two query heads each), K and V as [B, KV, 1, S, D];
// kshape is K's and V's head split.
func gqaBroadcast(kshape string) string {
	r := rand.New(rand.NewSource(3))
	w := func(name string, k, n int) string {
		v := make([]string, k*n)
		for i := range v {
			v[i] = fmt.Sprintf("%.3f", r.Float64()-0.5)
		}
		return fmt.Sprintf("  float[%d,%d] %s = {%s},\n", k, n, name, strings.Join(v, ", "))
	}
	return `<ir_version: 8, opset_import: ["" : 13]>
g (float[batch,seq,8] x) => (y) <
` + w("wq", 8, 8) + w("wk", 8, 4) + w("wv", 8, 4) + `  int64[5] qs = {0, 0, 2, 2, 2},
  int64[5] ks = ` + kshape + `,
  int64[3] merge = {0, 0, 8}
> {
  q = MatMul (x, wq)
  k = MatMul (x, wk)
  v = MatMul (x, wv)
  qr = Reshape (q, qs)
  qt = Transpose <perm = [0, 2, 3, 1, 4]> (qr)
  kr = Reshape (k, ks)
  kt = Transpose <perm = [0, 2, 3, 4, 1]> (kr)
  vr = Reshape (v, ks)
  vt = Transpose <perm = [0, 2, 3, 1, 4]> (vr)
  s = MatMul (qt, kt)
  p = Softmax <axis = -1> (s)
  c = MatMul (p, vt)
  ct = Transpose <perm = [0, 3, 1, 2, 4]> (c)
  y = Reshape (ct, merge)
}`
}

// TestAttentionHeadsBroadcast: K and V broadcast by the matmuls over the query heads of
// their group (grouped-query attention with no explicit repeat: each K/V head serves
// consecutive query heads) fuse, the repeat written out for MultiHeadAttention (the
// gqa-broadcast probe checks the numbers); broadcast over the major part of the heads,
// each K/V head serves every other query head, which no fused operator's grouping is.
func TestAttentionHeadsBroadcast(t *testing.T) {
	m := ortcheck.Parse(t, gqaBroadcast("{0, 0, 2, 1, 2}"))
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	rep, err := transformer.Fuse(m, generalAttnFams, &transformer.Env{Model: m, Target: transformer.ORT})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops["com.microsoft.MultiHeadAttention"] != 1 {
		t.Errorf("grouped by broadcasting: ops %v, refused %v", rep.Ops, rep.Refusals)
	}
	runRefusals(t, generalAttnFams, []refusalCase{
		{name: "broadcast over the major heads", src: gqaBroadcast("{0, 0, 1, 2, 2}"), want: "K is broadcast over a major part of the heads",
			fused: []string{"com.microsoft.MultiHeadAttention", "com.microsoft.GroupQueryAttention"}},
	})
}

// qattnNearMiss is the QAttention case (a Q/DQ-quantized BERT layer) with edits.
func qattnNearMiss(t *testing.T, edits ...string) string {
	data, err := os.ReadFile("testdata/attention-qattention.txtar")
	if err != nil {
		t.Fatal(err)
	}
	src, _ := txtar.Parse(data).Get("input")
	s := strings.Replace(string(src), `opset_import: ["" : 13]`, `opset_import: ["" : 13, "com.microsoft" : 1]`, 1)
	return editSrc(t, s, edits...)
}

// TestQAttentionRefusals: a quantized attention block that QAttention cannot take is
// left decomposed with the reason (target ort, provider cpu).
func TestQAttentionRefusals(t *testing.T) {
	cases := []refusalCase{
		{name: "additive float mask", src: qattnNearMiss(t, "int64[batch,seq] attention_mask)", "int64[batch,seq] attention_mask, float[batch,1,1,seq] amask)",
			"sm = Add (sd, ext)", "sm = Add (sd, amask)"), want: "; QAttention takes no additive mask"},
		{name: "q weight per row", src: qattnNearMiss(t, "wqd = DequantizeLinear <axis = 1> (wq8, wqs, wqz)", "wqd = DequantizeLinear <axis = 0> (wq8, wqs, wqz)"),
			want: "; q weight quantized along axis 0 with 4 scales, not per output column"},
		{name: "q reads x unquantized", src: qattnNearMiss(t, "qm = MatMul (qdq, wqd)", "qm = MatMul (x, wqd)"),
			want: "; but q's input is not a Q/DQ pair"},
	}
	for i := range cases {
		cases[i].provider = "cpu"
		cases[i].fused = []string{"com.microsoft.QAttention"}
	}
	runRefusals(t, []*transformer.Family{transformer.AttentionFamily}, cases)
}

// TestDebertaMoreRefusals: the DeBERTa family's checks and lowering refusals not covered by
// TestDebertaRefusals and TestDebertaLeft.
func TestDebertaMoreRefusals(t *testing.T) {
	cases := []refusalCase{
		{name: "divided by zero", src: strings.Replace(dbGraph(dbOpts{}), "float sc = {3.4641016}", "float sc = {0}", 1), want: "Q·Kᵀ is divided by 0"},
		// v2 with the position table [1, 1, b·h, 2k, d]: c2p is [1, 1, b·h, s, s] until the
		// scores' Reshape makes the sum 4-D.
		{name: "rank-5 relative term", src: editSrc(t, dbGraph(dbOpts{v2: true}), "float[4,6,4] pk", "float[1,1,4,6,4] pk",
			"int64[4,5,5] cpos", "int64[1,1,4,5,5] cpos", "pkt = Transpose <perm = [0, 2, 1]> (pk)", "pkt = Transpose <perm = [0, 1, 2, 4, 3]> (pk)"),
			want: `relative term "c2p" is typed float[1,1,4,5,5], not of rank 3 or 4`},
	}
	runRefusals(t, debertaOnly, cases)
}

// TestGeneralAttentionBFloat16: a bfloat16 block is proved attention and left for
// target=ort (MultiHeadAttention takes float and float16), fused for target=onnx
// (Attention-23 takes bfloat16); float16 blocks fuse for both (tests.TestProbeHalf).
func TestGeneralAttentionBFloat16(t *testing.T) {
	src := strings.ReplaceAll(strings.ReplaceAll(generalModel("  p = Softmax <axis = -1> (sd)\n  c = MatMul (p, vt)\n"), "float", "bfloat16"), "{-10000}", "{-10000.0}")
	runRefusals(t, []*transformer.Family{transformer.GeneralAttentionFamily}, []refusalCase{
		{name: "bfloat16", src: src, want: "attention computes in bfloat16: the target's fused operators take float and float16 (and bfloat16 for the ONNX-23 ones)", fused: []string{"com.microsoft.MultiHeadAttention"}},
	})
	m := ortcheck.Parse(t, strings.Replace(src, `["" : 13]`, `["" : 23]`, 1))
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	rep, err := transformer.Fuse(m, []*transformer.Family{transformer.GeneralAttentionFamily}, &transformer.Env{Model: m, Target: transformer.ONNX})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(); err != nil {
		t.Fatalf("fused model does not verify: %v", err)
	}
	if rep.Ops["Attention"] != 1 {
		t.Errorf("target=onnx: fused %v, want one Attention-23 in bfloat16", rep.Ops)
	}
}

// TestGeneralAttentionHeadScale: a constant factor on the scores that varies over the
// heads only (Swin V2's logit scale) is folded into Q and the block fused; one that varies
// over more, comes after an additive term, comes twice or holds a zero is refused.
func TestGeneralAttentionHeadScale(t *testing.T) {
	core := func(pre string) string {
		return pre + "  p = Softmax <axis = -1> (hs)\n  c = MatMul (p, vt)\n"
	}
	scale := func(decl, pre string) string {
		return strings.Replace(generalModel(core(pre)), "  float rs = {0.70710677},", "  float rs = {0.70710677},\n"+decl, 1)
	}
	m := ortcheck.Parse(t, scale("  float[2,1,1] hsc = {1.5, 0.5},", "  hs = Mul (sd, hsc)\n"))
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	rep, err := transformer.Fuse(m, []*transformer.Family{transformer.GeneralAttentionFamily}, &transformer.Env{Model: m, Target: transformer.ORT})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops["com.microsoft.MultiHeadAttention"] != 1 {
		t.Errorf("per-head scale: fused %v, want one MultiHeadAttention", rep.Ops)
	}
	batch2 := func(src string) string {
		return strings.ReplaceAll(strings.ReplaceAll(src, "float[batch,seq,4]", "float[2,seq,4]"), "bool[batch,1,1,seq]", "bool[2,1,1,seq]")
	}
	runRefusals(t, []*transformer.Family{transformer.GeneralAttentionFamily}, []refusalCase{
		{name: "per batch and head", src: batch2(scale("  float[2,2,1,1] hsc = {1.5, 0.5, 2, 1},", "  hs = Mul (sd, hsc)\n")),
			want: "the scores' factor hsc varies over more than the heads", fused: []string{"com.microsoft.MultiHeadAttention"}},
		{name: "after a term", src: scale("  float[2,1,1] hsc = {1.5, 0.5},\n  float[2,1,1] tb = {1, 2},", "  st = Add (sd, tb)\n  hs = Mul (st, hsc)\n"),
			want: "the scores are multiplied by hsc after an additive term", fused: []string{"com.microsoft.MultiHeadAttention"}},
		{name: "twice", src: scale("  float[2,1,1] hsc = {1.5, 0.5},", "  h1 = Mul (sd, hsc)\n  hs = Mul (h1, hsc)\n"),
			want: "the scores are multiplied by two constant tensors", fused: []string{"com.microsoft.MultiHeadAttention"}},
		{name: "zero", src: scale("  float[2,1,1] hsc = {1.5, 0},", "  hs = Mul (sd, hsc)\n"),
			want: "the scores' factor hsc holds 0", fused: []string{"com.microsoft.MultiHeadAttention"}},
		{name: "against the queries", src: crossSeq2(scale("  float[2,3,1] hsc = {1, 2, 3, 4, 5, 6},", "  hs = Mul (sd, hsc)\n")),
			want: "score factor hsc: axis 1 is 3 where the scores have seq", fused: []string{"com.microsoft.MultiHeadAttention"}},
	})
}

// TestGeneralAttentionVectorSource: Q read from a vector input viewed into heads by a
// Reshape to a run-time shape has no batch or sequence axis to prove: refused.
func TestGeneralAttentionVectorSource(t *testing.T) {
	src := generalModel("  p = Softmax <axis = -1> (sd)\n  c = MatMul (p, vt)\n")
	src = strings.Replace(src, "bool[batch,1,1,seq] keep)", "bool[batch,1,1,seq] keep, float[n] qv)", 1)
	src = strings.Replace(src, "  int64[1] last = {-1}", "  int64[1] last = {-1},\n  int64[1] zero1 = {0},\n  int64[1] two1 = {2},\n  int64[2] hd = {2, 2}", 1)
	src = strings.Replace(src, "  qr = Reshape (qa, split)", "  xs = Shape (x)\n  bs = Slice (xs, zero1, two1)\n  qs = Concat <axis = 0> (bs, hd)\n  qr = Reshape (qv, qs)", 1)
	runRefusals(t, []*transformer.Family{transformer.GeneralAttentionFamily}, []refusalCase{
		{name: "vector", src: src, want: "source qv has shape [n]: not [B,S,C], [B,C,S], [B·S,C] or [B,N,S,D]", fused: []string{"com.microsoft.MultiHeadAttention"}},
	})
}

// TestAttentionOverIntegerProjections: after fuse turned the Q/DQ projections of an
// attention block QAttention could not take into MatMulIntegerToFloat, fusing again
// refuses the block for them.
func TestAttentionOverIntegerProjections(t *testing.T) {
	m := ortcheck.Parse(t, qattnNearMiss(t, "qm = MatMul (qdq, wqd)", "qm = MatMul (x, wqd)"))
	env := &transformer.Env{Model: m, Target: transformer.ORT, Provider: "cpu"}
	if _, err := transformer.Fuse(m, []*transformer.Family{transformer.AttentionFamily}, env); err != nil {
		t.Fatal(err)
	}
	rep, err := transformer.Fuse(m, []*transformer.Family{transformer.AttentionFamily}, env)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops["com.microsoft.MatMulIntegerToFloat"] == 0 {
		t.Fatalf("no MatMulIntegerToFloat after fuse: %v", rep.Ops)
	}
	expectReason(t, reportReasons(rep), "Q/K/V projections are MatMulIntegerToFloat (quantized)")
}

// TestFusedAttentionRefusals: an Attention-23 already in the model that the BERT-like
// family does not describe (it reads 3-D Q, K, V and a mask computed from one input), and
// a split of V into other heads than Q's.
func TestFusedAttentionRefusals(t *testing.T) {
	const fused = `g (float[batch,2,seq,2] q, float[batch,2,seq,2] k, float[batch,2,seq,2] v) => (y) {
  y = Attention (q, k, v)
}`
	const masked = `g (float[batch,seq,4] q, float[batch,seq,4] k, float[batch,seq,4] v, float[batch,1,seq,seq] a, float[batch,1,seq,seq] b) => (y) {
  m = Mul (a, b)
  y = Attention <q_num_heads = 2, kv_num_heads = 2> (q, k, v, m)
}`
	runRefusals(t, []*transformer.Family{transformer.AttentionFamily}, []refusalCase{
		{name: "4-D Attention-23", src: fused, opset: "23", want: "Q, K and V are not [B,S,H]"},
		{name: "Attention-23 mask of two inputs", src: masked, opset: "23", want: "attn_mask is not a function of a mask input"},
		{name: "V in other heads", src: generalNearMiss("", "  p = Softmax <axis = -1> (sd)\n  c = MatMul (p, vt)\n",
			"  int64[4] split = {0, 0, 2, 2},", "  int64[4] split = {0, 0, 2, 2},\n  int64[4] split1 = {0, 0, 1, 4},", "  vr = Reshape (va, split)", "  vr = Reshape (va, split1)"),
			want: "v is split into 1 heads of 4, Q into 2 of 2", fused: []string{"com.microsoft.Attention"}},
	})
}

// TestQAttentionQuantizedMatmuls: with provider=cpu a block whose projections and
// attention matmuls are all Q/DQ-quantized is left: QAttention computes the matmuls of the
// scores and the context in float.
func TestQAttentionQuantizedMatmuls(t *testing.T) {
	data, err := os.ReadFile("testdata/attention-quantized-matmuls.txtar")
	if err != nil {
		t.Fatal(err)
	}
	src, _ := txtar.Parse(data).Get("input")
	runRefusals(t, []*transformer.Family{transformer.AttentionFamily}, []refusalCase{
		{name: "cpu", src: string(src), provider: "cpu", want: "; QAttention computes Q·Kᵀ and probs·V in float", fused: []string{"com.microsoft.QAttention"}},
	})
}

// TestFFNUnevenPackedSplit: a packed gate|up projection split 31|1 (the up part broadcast
// over the gate's) with a down projection of 31 features is no gated FFN of two halves.
func TestFFNUnevenPackedSplit(t *testing.T) {
	g := &ffnGraph{rng: rand.New(rand.NewSource(5))}
	g.init("int64[2] parts", 31, 1)
	g.proj("matmul-add", "up", "x", "p", ffnH, 2*ffnF)
	g.node("gt, u = Split <axis = -1> (p, parts)")
	g.node("a_s = Sigmoid (gt)")
	g.node("a = Mul (a_s, gt)")
	g.node("h = Mul (u, a)")
	g.proj("matmul-add", "down", "h", "o", 31, ffnH)
	g.node("y = Add (x, o)")
	src := fmt.Sprintf("g (float[2,3,8] x) => (float[2,3,8] y) <\n%s\n> {\n%s\n}", strings.Join(g.inits, ",\n"), strings.Join(g.nodes, "\n"))
	runRefusals(t, []*transformer.Family{transformer.FFNFamily}, []refusalCase{
		{name: "31|1", src: src, want: "the packed projection makes 32, the down projection takes 31 (want twice)"},
	})
}

// TestEmbeddingMaskRefusals: DeBERTa's embedding (a LayerNorm whose output is multiplied
// by the mask spread over the hidden axis) and its near misses.
func TestEmbeddingMaskRefusals(t *testing.T) {
	with := func(src string, edits ...string) string { return editSrc(t, src, edits...) }
	// Batch, sequence and hidden all 4, so that a mask spread over another axis still
	// broadcasts.
	static := with(embDeBERTa, "int64[batch,seq] input_ids, int64[batch,seq] attention_mask", "int64[4,4] input_ids, int64[4,4] attention_mask", "float[batch,seq,4] z", "z")
	gin := strings.Replace(strings.Replace(embBERT, "int64[batch,seq] token_type_ids", "int64[batch,seq] token_type_ids, float[4] g2", 1), "sc = Mul (nrm, gamma)", "sc = Mul (nrm, g2)", 1)
	cases := []struct{ name, src, want string }{
		{"mask spread over the sequence", with(static, "mu = Unsqueeze (attention_mask, a2)", "mu = Unsqueeze (attention_mask, a1)"), "mask unsqueezed at [1], not the last axis"},
		{"gamma read at run time", gin, "the normalisation continues into Mul; the block is not its prefix"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, `"" : 13`, c.src)
			geFillRandom(m)
			_, refs := embOnly(t, m, []*transformer.Family{transformer.EmbeddingFamily})
			expectReason(t, refusalReasons(refs), c.want)
		})
	}
	// The mask's cast read elsewhere too (XLM masks every layer's output with it): the
	// block still ends at the mask multiply, which stays after the fused op, and so does
	// the cast for its other reader.
	t.Run("mask cast read elsewhere", func(t *testing.T) {
		m := geParse(t, `"" : 13`, with(embDeBERTa, "float[batch,seq,4] z", "float[batch,seq,4] z, float[batch,seq,1] mc"))
		geFillRandom(m)
		b, refs := embOnly(t, m, []*transformer.Family{transformer.EmbeddingFamily})
		if b == nil || !strings.HasSuffix(b.Variant, "+mask") {
			t.Fatalf("block %v, refusals %v: want the +mask form", b, refusalReasons(refs))
		}
	})
}

// TestEmbeddingFoldRefusals: fuse leaves an embedding whose constant terms it cannot fold
// into EmbedLayerNormalization's position table.
func TestEmbeddingFoldRefusals(t *testing.T) {
	nan := strings.Repeat("0.1, ", 19) + "nan"
	cases := []struct{ name, src, want string }{
		// A per-position constant over a static sequence of 5, one of its values NaN.
		{"NaN term", embGraph("int64[batch,5] input_ids", "float[batch,5,4] y", ",\n  float[1,5,4] pc = {"+nan+"}", `
  w = Gather (word, input_ids)
  x = Add (w, pc)`+embDecomposedLN), "NaN in the folded position table"},
		{"double tables", strings.ReplaceAll(strings.Replace(embBERT, "  x = Add (wt, p)", "  x0 = Add (wt, p)\n  x = Add (x0, bias4)", 1)+"", "float", "double"), "embedding computes in double: the target's fused operators take float and float16 (and bfloat16 for the ONNX-23 ones)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := c.src
			if c.name == "double tables" {
				src = strings.Replace(src, "  double eps = {1e-12}", "  double eps = {1e-12},\n  double[4] bias4 = {0.1, 0.2, 0.3, 0.4}", 1)
			}
			m := geParse(t, `"" : 17`, src)
			geFillRandom(m)
			rep := geFuse(t, m, []*transformer.Family{transformer.EmbeddingFamily}, &transformer.Env{Model: m, Target: transformer.ORT})
			expectReason(t, rep.Left, c.want)
			if n := rep.Ops["com.microsoft.EmbedLayerNormalization"]; n != 0 {
				t.Errorf("%d EmbedLayerNormalization", n)
			}
		})
	}
}
