package cuda

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// normModel holds a LayerNormalization and a com.microsoft.SkipLayerNormalization
// (with bias, writing the sum too) over rows of h elements of dtype.
func normModel(h int, dtype string) string {
	return fmt.Sprintf(`<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
norms (%[2]s[batch,seq,%[1]d] x, %[2]s[batch,seq,%[1]d] s, %[2]s[%[1]d] g, %[2]s[%[1]d] b, %[2]s[%[1]d] bias) => (%[2]s[batch,seq,%[1]d] y, %[2]s[batch,seq,%[1]d] z, %[2]s[batch,seq,%[1]d] sum) {
  [ln] y = LayerNormalization <axis = -1, epsilon = 1e-5> (x, g, b)
  [sln] z, _m, _v, sum = com.microsoft.SkipLayerNormalization <epsilon = 1e-5> (x, s, g, b, bias)
}
`, h, dtype)
}

// TestShortGridRows checks both row layouts of the LayerNorm kernels (warp or block
// rows, and the short grid's block per row of up to 256 threads, which the
// launchers take when warp rows would leave the GPU's SMs fewer than 4 blocks
// each): the emulation of each, with its own float summation order, agrees with
// ONNX Runtime on the model's subgraph, in float and in half, for rows whose short
// layout differs from the warp one (768, 1000, 2048 wide) and 4096 (block rows
// already, of 256 threads in float and 128 in half).
func TestShortGridRows(t *testing.T) {
	orttest.RequireLib(t)
	for _, dtype := range []string{"float", "float16"} {
		for _, h := range []int{768, 1000, 2048, 4096} {
			t.Run(fmt.Sprintf("%s/h%d", dtype, h), func(t *testing.T) {
				m, err := text.Parse(normModel(h, dtype))
				if err != nil {
					t.Fatal(err)
				}
				p, err := analyse(m, "norms", sizer{2, 37})
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Instances) != 2 {
					t.Fatalf("%d instances (skipped: %v)", len(p.Instances), p.Skipped)
				}
				elem := p.Instances[0].Elem
				base, short := threadsPerRow(h, elem), shortGridThreads(h, elem)
				// Warp rows (32 threads) become a block per row; block rows of
				// fewer than 256 threads get up to 256.
				if want := base < 256; want != (short > base) {
					t.Errorf("h%d: warp rows %d threads, short grid %d", h, base, short)
				}
				for _, in := range p.Instances {
					if !strings.HasSuffix(in.Kernel.Launcher, "LayerNorm") {
						t.Fatalf("%s: kernel %s", in.ID, in.Kernel.Name)
					}
					ref, err := in.reference(m)
					if err != nil {
						t.Fatal(err)
					}
					a, want := map[string][]float64{}, map[string][]float64{}
					for p, arr := range ref.Inputs {
						a[p] = arr.Float64s()
					}
					for p, arr := range ref.Outputs {
						want[p] = arr.Float64s()
					}
					for _, layout := range []bool{false, true} {
						var worst float64
						for param, e := range compareOutputs(in, emulateRows(t, in, a, layout), want) {
							if e.bad > 0 {
								t.Errorf("%s (%s, short grid %v): %d of %d elements of %s disagree; first %s", in.ID, in.Kernel.Name, layout, e.bad, e.n, param, e.first)
							}
							worst = math.Max(worst, e.maxAbs)
						}
						t.Logf("%s threads %d: max abs error %.1e", in.Kernel.Name, map[bool]int{false: base, true: short}[layout], worst)
					}
				}
			})
		}
	}
}
