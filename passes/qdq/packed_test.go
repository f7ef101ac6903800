package qdq

import (
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// packedConvFFN is a SqueezeBERT-layout gated FFN on channel-first [B, 4, S]: one 1×1
// Conv packs the up and gate projections into 8 channels, Split on the channels (axis
// 1), GELU on the second half, and a 1×1 Conv down projection added to x.
const packedConvFFN = "../../testdata/models/packed-conv-ffn.onnx.txt"

// TestPackedConvFFN: the projections of a channel-first packed FFN are FFN quantization
// sites (the FFN block's weights, where the activation's input is a half of the packed
// projection, not a projection); each Conv weight is quantized per output channel (axis
// 0: the packed weight's 8 channels, gate and up alike), and ONNX Runtime's outputs stay
// close to the float model's.
func TestPackedConvFFN(t *testing.T) {
	orttest.RequireLib(t)
	src, err := os.ReadFile(packedConvFFN)
	if err != nil {
		t.Fatal(err)
	}
	m := parse(t, string(src))
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
	want := ortcheck.RunModel(t, parse(t, string(src)), in, ort.OptDisabled)["y"]
	got := ortcheck.RunModel(t, m, in, ort.OptDisabled)["y"]
	if cos, err := ndarray.CosineSimilarity(want, got); err != nil || !(cos >= 0.99) {
		t.Errorf("cosine %.5f to float (%v)", cos, err)
	}
}
