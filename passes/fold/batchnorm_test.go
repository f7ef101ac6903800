package fold

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// TestLinearBN: an inference BatchNormalization on a projection's output channels folds
// into the projection, written as LeViT writes it (the tokens flattened to [B·N, C], BN,
// reshaped back to the projection's shape, read by reshape_as's Shape) and on a 2-D
// projection directly; ONNX Runtime's outputs stay. A BN whose projection output has
// another reader, or over channels that are not the projection's, stays.
func TestLinearBN(t *testing.T) {
	orttest.RequireLib(t)
	src := `<ir_version: 8, opset_import: ["" : 13]>
g (float[batch,3,4] x, float[batch,4] x2) => (float[batch,3,5] z, float[batch,5] z2, float[batch,3,5] kept, float[batch,3,5] other) <
  float[4,5] w = {0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8, 0.9, 1.0, -1.1, 1.2, 0.13, -0.14, 0.15, 0.16, 0.17, -0.18, 0.19, 0.2},
  float[4,5] w2 = {0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8, 0.9, 1.0, -1.1, 1.2, 0.13, -0.14, 0.15, 0.16, 0.17, -0.18, 0.19, 0.2},
  float[4,5] w3 = {0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8, 0.9, 1.0, -1.1, 1.2, 0.13, -0.14, 0.15, 0.16, 0.17, -0.18, 0.19, 0.2},
  float[5] gamma = {1.5, 0.5, -0.7, 1.1, 0.9},
  float[5] beta = {0.1, -0.2, 0.3, 0.0, 0.25},
  float[5] mean = {0.2, -0.1, 0.05, 0.3, -0.4},
  float[5] var = {0.8, 1.3, 0.6, 2.0, 0.9}
> {
  y = MatMul (x, w)
  f = Flatten <axis = 2> (y)
  b = BatchNormalization <epsilon = 0.001> (f, gamma, beta, mean, var)
  s = Shape (y)
  z = Reshape (b, s)
  y2 = MatMul (x2, w2)
  z2 = BatchNormalization (y2, gamma, beta, mean, var)
  y3 = MatMul (x, w3)
  f3 = Flatten <axis = 2> (y3)
  b3 = BatchNormalization (f3, gamma, beta, mean, var)
  s3 = Shape (y3)
  kept = Reshape (b3, s3)
  other = Relu (y3)
}`
	orig := ortcheck.Parse(t, src)
	m := ortcheck.Parse(t, src)
	st, err := Run(m, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Counts["fold: BatchNormalization folded into its projection"]; got != 2 {
		t.Errorf("BNs folded: %d, want 2 (%v)", got, st.Counts)
	}
	bn := 0
	for _, n := range m.Graph.Nodes() {
		if n.OpType == "BatchNormalization" {
			bn++
			if n.Output(0).Name != "b3" {
				t.Errorf("%s stays, want only the BN whose projection output Relu also reads", n)
			}
		}
	}
	if bn != 1 {
		t.Errorf("%d BatchNormalizations left, want 1", bn)
	}
	r := rand.New(rand.NewPCG(3, 4))
	in := map[string]*ndarray.Array{"x": randn(r, 2, 3, 4), "x2": randn(r, 2, 4)}
	for _, lv := range []ort.OptLevel{ort.OptDisabled, ort.OptAll} {
		ortcheck.CheckOutputs(t, fmt.Sprintf("level %d", lv), ortcheck.RunModel(t, orig, in, lv), ortcheck.RunModel(t, m, in, lv), ortTol)
	}
}

// randn is ndarray.RandNormal.
var randn = ndarray.RandNormal
