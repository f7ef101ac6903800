package calib

import (
	"testing"

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
