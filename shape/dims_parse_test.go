package shape

import (
	"maps"
	"strconv"
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

// TestPolyOfShortcut: the shortcut for a plain symbol reads every dim as the full parse
// does, and mulDims' shortcuts multiply as the polynomials do.
func TestPolyOfShortcut(t *testing.T) {
	for _, s := range []string{"batch", "sequence_length", "batch-size", "2*batch", "batch*seq", "batch - 1",
		"1 + height*width", "floor(a*b/3)", "12", "-3", "+5", "-batch", "a b", "unk__0", "Batch.N", "x+y"} {
		got, ok := polyOf(ir.Dim{Param: s})
		if !ok {
			t.Errorf("%q: not read", s)
			continue
		}
		if want := parsePoly(s); !maps.Equal(got, want) {
			t.Errorf("%q: read as %v, the full parse gives %v", s, got, want)
		}
	}
	// mulDims' shortcuts give what the polynomials give.
	dims := []ir.Dim{ir.D(0), ir.D(1), ir.D(7), ir.Sym("batch"), ir.Sym("2*batch"), ir.Sym("batch - 1"), ir.Sym("x+y"), {}}
	for _, a := range dims {
		for _, b := range dims {
			x, ok1 := polyOf(a)
			y, ok2 := polyOf(b)
			if !ok1 || !ok2 {
				continue
			}
			if got, want := mulDims(a, b), x.mul(y).dim(); got != want {
				t.Errorf("mulDims(%v, %v) = %v, the polynomials give %v", a, b, got, want)
			}
		}
	}
	for _, f := range []string{"12", "-3", "+5", "0", "-+5", "a", "", "-", "1e3", "9223372036854775808"} {
		x, err := parseCoefficient(f)
		if y, err2 := strconvParse(f); (err == nil) != (err2 == nil) || x != y {
			t.Errorf("%q: parseCoefficient = %d, %v; ParseInt = %d, %v", f, x, err, y, err2)
		}
	}
}

func strconvParse(f string) (int64, error) { return strconv.ParseInt(f, 10, 64) }
