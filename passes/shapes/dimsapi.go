package shapes

import "github.com/qcc-dev/qcc/ir"

// SameDim reports whether two dims are provably equal: the same number, or the same
// symbol (products of symbols in canonical form, "4*batch").
func SameDim(a, b ir.Dim) bool { return sameDim(a, b) }

// MulDims is the product of dims, as a canonical monomial; unknown when any is unknown.
func MulDims(ds ...ir.Dim) ir.Dim { return product(ds) }

// DivDims is a/b when the quotient is a monomial with an integer coefficient; ok is
// false otherwise.
func DivDims(a, b ir.Dim) (ir.Dim, bool) {
	q := divDims(a, b)
	return q, q.Known || q.Param != ""
}
