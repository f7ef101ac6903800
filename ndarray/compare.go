package ndarray

import (
	"encoding/binary"
	"fmt"
	"math"
)

func checkComparable(fn string, a, b *Array) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("%s: first operand: %w", fn, err)
	}
	if err := b.Validate(); err != nil {
		return fmt.Errorf("%s: second operand: %w", fn, err)
	}
	if a.DType != b.DType {
		return fmt.Errorf("%s: dtype mismatch: %v vs %v", fn, a.DType, b.DType)
	}
	if !SameShape(a.Shape, b.Shape) {
		return fmt.Errorf("%s: shape mismatch: %v vs %v", fn, a.Shape, b.Shape)
	}
	return nil
}

// MaxAbsDiff returns max |a[i] - b[i]| over all elements. The arrays must have
// the same dtype and shape. For floats, two NaNs (or two equal infinities)
// count as equal, while a NaN against a number, or +Inf against anything
// else, gives +Inf, so a mismatch is never hidden. Empty arrays give 0.
func MaxAbsDiff(a, b *Array) (float64, error) {
	if err := checkComparable("ndarray.MaxAbsDiff", a, b); err != nil {
		return 0, err
	}
	// 64-bit integers are differenced exactly before converting, since a
	// float64 round trip would hide differences of 1 above 2^53.
	switch a.DType {
	case Int64:
		return maxDiff64(a.Data, b.Data, func(x, y uint64) float64 {
			p, q := int64(x), int64(y)
			if p < q {
				p, q = q, p
			}
			return float64(uint64(p) - uint64(q))
		}), nil
	case Uint64:
		return maxDiff64(a.Data, b.Data, func(x, y uint64) float64 {
			if x < y {
				x, y = y, x
			}
			return float64(x - y)
		}), nil
	}
	x, y := a.Float64s(), b.Float64s()
	m := 0.0
	for i := range x {
		d := absDiff(x[i], y[i])
		if d > m {
			m = d
		}
	}
	return m, nil
}

func maxDiff64(a, b []byte, diff func(x, y uint64) float64) float64 {
	m := 0.0
	for i := 0; i+8 <= len(a); i += 8 {
		if d := diff(binary.LittleEndian.Uint64(a[i:]), binary.LittleEndian.Uint64(b[i:])); d > m {
			m = d
		}
	}
	return m
}

func absDiff(x, y float64) float64 {
	xn, yn := math.IsNaN(x), math.IsNaN(y)
	switch {
	case xn && yn:
		return 0
	case xn || yn:
		return math.Inf(1)
	case x == y: // also equal infinities, whose difference would be NaN
		return 0
	}
	return math.Abs(x - y)
}

// CosineSimilarity returns <a,b> / (|a| |b|) over the flattened arrays, which
// must have the same dtype and shape. Two all-zero arrays give 1 (they are
// identical); one all-zero array against a non-zero one gives 0. A NaN in
// either array gives NaN.
func CosineSimilarity(a, b *Array) (float64, error) {
	if err := checkComparable("ndarray.CosineSimilarity", a, b); err != nil {
		return 0, err
	}
	x, y := a.Float64s(), b.Float64s()
	var dot, nx, ny float64
	for i := range x {
		dot += x[i] * y[i]
		nx += x[i] * x[i]
		ny += y[i] * y[i]
	}
	switch {
	case math.IsNaN(dot) || math.IsNaN(nx) || math.IsNaN(ny):
		return math.NaN(), nil
	case nx == 0 && ny == 0:
		return 1, nil
	case nx == 0 || ny == 0:
		return 0, nil
	}
	return dot / (math.Sqrt(nx) * math.Sqrt(ny)), nil
}
