package qdq

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// packedConvFFN is a SqueezeBERT-layout gated FFN on channel-first [B, 4, S]: one 1×1
// Conv packs the gate and up projections into 8 channels, halved on the channels (axis
// 1), GELU on the gate, and a 1×1 Conv down projection added to x.
const packedConvFFN = `<ir_version: 8, opset_import: ["" : 13]>
ffn (float[batch,4,seq] x) => (float[batch,4,seq] y) <
  float[8,4,1] w1 = {-0.594, 0.352, 0.65, -0.303, -0.528, 0.336, -0.724, 0.618, -0.892, -0.629, 0.367, -0.269, -0.753, 0.545, -0.469, -0.0699,
    0.425, -0.0427, 0.115, -0.85, 0.538, 0.772, 0.355, 0.656, -0.291, 0.45, 0.719, 0.506, 0.548, 0.201, -0.0275, 0.498},
  float[8] b1 = {0.1, -0.2, 0.3, -0.4, 0.05, 0.15, -0.25, 0.35},
  float[4,4,1] w2 = {-0.425, 0.0427, -0.115, 0.85, -0.538, -0.772, -0.355, -0.656, 0.291, -0.45, -0.719, -0.506, -0.548, -0.201, 0.0275, -0.498},
  float[4] b2 = {0.5, 0.25, -0.125, 0},
  int64[2] halves = {4, 4},
  float sqrt2 = {1.4142135},
  float one = {1},
  float half = {0.5}
> {
  p = Conv <kernel_shape = [1]> (x, w1, b1)
  u, g = Split <axis = 1> (p, halves)
  d = Div (g, sqrt2)
  e = Erf (d)
  e1 = Add (e, one)
  m = Mul (g, e1)
  gl = Mul (m, half)
  h = Mul (gl, u)
  o = Conv <kernel_shape = [1]> (h, w2, b2)
  y = Add (x, o)
}
`

// TestPackedConvFFN: the projections of a channel-first packed FFN are FFN quantization
// sites (the FFN block's weights, where the activation's input is a half of the packed
// projection, not a projection); each Conv weight is quantized per output channel (axis
// 0: the packed weight's 8 channels, gate and up alike), and ONNX Runtime's outputs stay
// close to the float model's.
func TestPackedConvFFN(t *testing.T) {
	orttest.RequireLib(t)
	m := parse(t, packedConvFFN)
	rep, err := runPipeline(t, m, "qdq<min-gemm=2;data=random:4>,qdqcheck")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range rep.Stats {
		if st.Pass != "qdq" {
			continue
		}
		if w, o := st.Counts["qdq: weights ffn"], st.Counts["qdq: weights other"]; w != 2 || o != 0 {
			t.Errorf("weights: %d ffn, %d other; want both Convs ffn\n%s", w, o, strings.Join(st.Notes, "\n"))
		}
	}
	channels := map[string]int64{"w1": 8, "w2": 4}
	for _, n := range m.Graph.Nodes() {
		if n.OpType != "DequantizeLinear" || n.Input(0).Const == nil {
			continue
		}
		w := strings.TrimSuffix(n.Input(0).Name, "_int8")
		scale := n.Input(1).Const
		if a := n.AttrInt("axis", 1); a != 0 || scale == nil || len(scale.Dims) != 1 || scale.Dims[0] != channels[w] {
			t.Errorf("%s: dequantized on axis %d with scales %v, want axis 0 with %d", n.Input(0).Name, a, scale, channels[w])
		}
		delete(channels, w)
	}
	if len(channels) != 0 {
		t.Errorf("weights not quantized: %v", channels)
	}
	r := rand.New(rand.NewPCG(5, 6))
	in := map[string]*ndarray.Array{"x": randn(r, 2, 4, 6)}
	want := ortcheck.RunModel(t, parse(t, packedConvFFN), in, ort.OptDisabled)["y"]
	got := ortcheck.RunModel(t, m, in, ort.OptDisabled)["y"]
	if cos, err := ndarray.CosineSimilarity(want, got); err != nil || !(cos >= 0.99) {
		t.Errorf("cosine %.5f to float (%v)", cos, err)
	}
}
