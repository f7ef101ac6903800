package shape

import (
	"sort"

	"github.com/qcc-dev/qcc/ir"
)

// Dimension arithmetic for the recognisers (equality is ir.SameDim).

// MulDims is the product of dims in canonical form; unknown when any is unknown.
func MulDims(ds ...ir.Dim) ir.Dim { return product(ds) }

// DivDims is a/b when the quotient is exact in canonical form; ok is false otherwise.
func DivDims(a, b ir.Dim) (ir.Dim, bool) {
	q := divDims(a, b)
	return q, q.Known || q.Param != ""
}

// Atoms are the symbols a dim is a polynomial of ("past + sequence": past and sequence);
// one opaque name when it is not one of the engine's forms.
func Atoms(d ir.Dim) []string {
	p, ok := polyOf(d)
	if !ok {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for key := range p {
		for _, f := range factors(key) {
			if f != "" && !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	sort.Strings(out)
	return out
}

// EvalDim is d's value with each atom given by size; ok is false for an unknown dim or
// a missing atom.
func EvalDim(d ir.Dim, size map[string]int64) (int64, bool) {
	p, ok := polyOf(d)
	if !ok {
		return 0, false
	}
	var v int64
	for key, k := range p {
		term := k
		for _, f := range factors(key) {
			if f == "" {
				continue
			}
			x, ok := size[f]
			if !ok {
				return 0, false
			}
			term *= x
		}
		v += term
	}
	return v, true
}
