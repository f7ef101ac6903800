package calib

import (
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ndarray"

	"github.com/qcc-dev/qcc/ir/text"
)

// Random data stays within the positions a model can look up: a learned table gathered
// at Range(0,S)+2 (BART) allows S ≤ rows-2, a constant table sliced to S allows its rows,
// positions counted along the mask (OPT) allow S ≤ rows-2 after an offset of 2, an arange
// written as NonZero of ones (opset < 11) allows the rows, and a
// model with none of these keeps DefaultSeq.
func TestPositionCap(t *testing.T) {
	cases := []struct {
		name, body string
		want       int64
		ok         bool
	}{
		{"offset", `
  sh = Shape (ids)
  s = Gather <axis = 0> (sh, one)
  r = Range (zero, s, one)
  p = Add (r, two)
  y = Gather (table, p)`, 10, true},
		{"sliced", `
  sh = Shape (ids)
  s = Slice (sh, one1, two1)
  y = Slice (table, zero1, s, zero1)`, 12, true},
		// OPT: positions counted along the padding mask, less one, plus an offset of 2.
		{"cumulative mask", `
  c = CumSum (attention_mask, one)
  m = Mul (c, attention_mask)
  q = Sub (m, one)
  p = Add (q, two)
  y = Gather (table, p)`, 10, true},
		// Exported without Range (opset < 11): arange(S) as the indices of S ones.
		{"nonzero arange", `
  sh = Shape (ids)
  s = Slice (sh, one1, two1)
  ones = ConstantOfShape <value = int64[1] {1}> (s)
  nz = NonZero (ones)
  tr = Transpose <perm = [1, 0]> (nz)
  p = Squeeze (tr, one1)
  y = Gather (table, p)`, 12, true},
		{"none", `
  y = Gather (table, ids)`, 0, false},
	}
	for _, c := range cases {
		m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13]>
g (int64[batch,seq] ids, int64[batch,seq] attention_mask) => (float[?,4] y) <
  float[12,4] table = {0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,0, 0,0,0,0},
  int64 zero = {0}, int64 one = {1}, int64 two = {2},
  int64[1] zero1 = {0}, int64[1] one1 = {1}, int64[1] two1 = {2}
> {` + c.body + "\n}")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, ok := positionCap(m.Graph)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: cap %d, %v; want %d, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

// Random data for a model exported for any image size that runs at one only (position
// embeddings of a fixed 2x2 grid added to 4x4 patches: 8x8 images) draws images of that
// size, found by shape inference; a model that shape inference finds consistent with
// DefaultSeq keeps it, and the model's types are as they were after.
func TestRunnableImageSize(t *testing.T) {
	src := `<ir_version: 8, opset_import: ["" : 17]>
g (float[batch,3,height,width] px) => (y) <
  float[8,3,4,4] w = {...},
  float[1,4,8] pos = {...},
  int64[3] flat = {0, 8, -1}
> {
  c = Conv <strides = [4, 4]> (px, w)
  f = Reshape (c, flat)
  p = Transpose <perm = [0, 2, 1]> (f)
  y = Add (p, pos)
}`
	m, err := text.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	before := m.Graph.Inputs[0].Type.String()
	src0, err := NewRandomSource(m, 2, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := src0.Batch(0)
	if err != nil {
		t.Fatal(err)
	}
	if got := b["px"].Shape; len(got) != 4 || got[2] != 8 || got[3] != 8 {
		t.Errorf("random images are %v, want [2 3 8 8]", got)
	}
	if after := m.Graph.Inputs[0].Type.String(); after != before {
		t.Errorf("input type %s after drawing, was %s", after, before)
	}
	// Without the fixed grid any size fits: DefaultSeq.
	b1 := firstRandomBatch(t, strings.Replace(src, "  y = Add (p, pos)", "  y = Identity (p)", 1))
	if got := b1["px"].Shape; got[2] != DefaultSeq {
		t.Errorf("free model: random images are %v, want height %d", got, DefaultSeq)
	}
}

// A dim named as a sum of symbols (optimum's cache models: the mask spans
// "past_sequence_length + sequence_length") is drawn as the sum of their sizes.
func TestDrawnSumDim(t *testing.T) {
	b := firstRandomBatch(t, `<ir_version: 8, opset_import: ["" : 17]>
g (int64[batch,sequence_length] ids, int64[batch,"past_sequence_length + sequence_length"] attention_mask, float[batch,2,past_sequence_length,4] past) => (y) {
  y = Identity (past)
}`)
	ids, mask, past := b["ids"].Shape, b["attention_mask"].Shape, b["past"].Shape
	if mask[1] != ids[1]+past[2] || ids[1] != DefaultSeq {
		t.Errorf("ids %v, mask %v, past %v: want the mask over past + sequence", ids, mask, past)
	}
}

// A fused EmbedLayerNormalization looks its position table up at 0..S-1 without
// position ids: the table's rows cap the sequence (the precision pass calibrates models
// fuse has rewritten).
func TestPositionCapFused(t *testing.T) {
	m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13, "com.microsoft" : 1]>
g (int32[batch,seq] ids) => (y) <
  float[30,4] word = {...},
  float[12,4] pos = {...},
  float[4] gamma = {1, 1, 1, 1},
  float[4] beta = {0, 0, 0, 0}
> {
  y, mi = com.microsoft.EmbedLayerNormalization <epsilon = 1e-5> (ids, "", word, pos, "", gamma, beta)
}`)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := positionCap(m.Graph); !ok || got != 12 {
		t.Errorf("cap %d, %v; want 12 (the position table's rows)", got, ok)
	}
}

// A lookup inside an If body (a merged decoder's branches) caps the sequence too.
func TestPositionCapInBody(t *testing.T) {
	m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13]>
g (int64[batch,seq] ids, bool c) => (y) <
  float[10,4] table = {...},
  int64 zero = {0}, int64 one = {1}
> {
  y = If (c) <then_branch = t () => (float[?,4] a) {
    sh = Shape (ids)
    s = Gather <axis = 0> (sh, one)
    r = Range (zero, s, one)
    a = Gather (table, r)
  }, else_branch = e () => (float[?,4] b) {
    b = Gather (table, zero)
  }>
}`)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := positionCap(m.Graph); !ok || got != 10 {
		t.Errorf("cap %d, %v; want 10 (the table in the then branch)", got, ok)
	}
}

// A cache model whose mask's dim has a name of its own ("total") that the graph adds to
// the past and the step: random data draws it as their sum, found by shape inference.
func TestRunnableTotalSize(t *testing.T) {
	b := firstRandomBatch(t, `<ir_version: 8, opset_import: ["" : 13]>
g (float[batch,seq,4] x, float[batch,total] mask, float[batch,past,4] p) => (y) <int64[1] ax2 = {2}> {
  c = Concat <axis = 1> (p, x)
  r = ReduceSum <keepdims = 0> (c, ax2)
  y = Add (r, mask)
}`)
	x, mask, p := b["x"].Shape, b["mask"].Shape, b["p"].Shape
	if mask[1] != x[1]+p[1] {
		t.Errorf("x %v, mask %v, past %v: want the mask over past + seq", x, mask, p)
	}
}

// firstRandomBatch is the first batch of random data, batch 2, for the model src.
func firstRandomBatch(t *testing.T, src string) map[string]*ndarray.Array {
	t.Helper()
	m, err := text.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := NewRandomSource(m, 2, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := rs.Batch(0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
