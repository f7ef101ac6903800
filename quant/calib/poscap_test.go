package calib

import (
	"testing"

	"github.com/qcc-dev/qcc/ir/text"
)

// Random data stays within the positions a model can look up: a learned table gathered
// at Range(0,S)+2 (BART) allows S ≤ rows-2, a constant table sliced to S allows its rows,
// and a model with neither keeps DefaultSeq.
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
		{"none", `
  y = Gather (table, ids)`, 0, false},
	}
	for _, c := range cases {
		m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13]>
g (int64[batch,seq] ids) => (float[?,4] y) <
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
