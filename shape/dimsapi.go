package shape

import "github.com/qcc-dev/qcc/ir"

// Dimension arithmetic for the recognisers (equality is ir.SameDim).

// MulDims is the product of dims in canonical form; unknown when any is unknown.
func MulDims(ds ...ir.Dim) ir.Dim { return product(ds) }

// DivDims is a/b when the quotient is exact in canonical form; ok is false otherwise.
func DivDims(a, b ir.Dim) (ir.Dim, bool) {
	q := divDims(a, b)
	return q, q.Known || q.Param != ""
}
