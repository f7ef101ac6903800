package shapes

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
)

// Dimension arithmetic. A dim is a known number, a symbol (a name such as "batch" that
// stands for one runtime size, assumed not to be 1 unless the file says so) or unknown.

func unknownDim() ir.Dim { return ir.Dim{} }

func isOne(d ir.Dim) bool { return d.Known && d.Value == 1 }

func isSym(d ir.Dim) bool { return !d.Known && d.Param != "" }

// sameDim reports whether two dims are provably equal (ir.SameDim decides).
func sameDim(a, b ir.Dim) bool { return ir.SameDim(a, b) }

// broadcastDim is numpy broadcasting of one dimension pair. A symbol against 1 gives the
// symbol, a symbol against a number n != 1 gives n (the symbol must be n or 1), two equal
// symbols give the symbol and anything else with an unknown or a different symbol is
// unknown. Two different known numbers, neither 1, are an error.
func broadcastDim(a, b ir.Dim) (ir.Dim, error) {
	switch {
	case isOne(a):
		return b, nil
	case isOne(b):
		return a, nil
	case a.Known && b.Known:
		if a.Value != b.Value {
			return unknownDim(), fmt.Errorf("dimensions %d and %d do not broadcast", a.Value, b.Value)
		}
		return a, nil
	case a.Known:
		return a, nil
	case b.Known:
		return b, nil
	case sameDim(a, b):
		return a, nil
	}
	return unknownDim(), nil
}

// broadcast is multidirectional (numpy) broadcasting of shapes.
func broadcast(shapes ...ir.Shape) (ir.Shape, error) {
	r := 0
	for _, s := range shapes {
		r = max(r, len(s))
	}
	out := make(ir.Shape, r)
	for i := range out {
		out[i] = ir.D(1)
	}
	for _, s := range shapes {
		off := r - len(s)
		for i, d := range s {
			b, err := broadcastDim(out[off+i], d)
			if err != nil {
				return nil, err
			}
			out[off+i] = b
		}
	}
	return out, nil
}

// unifyDim combines two dims that must be equal (concat's other axes, matmul's inner
// dimension): the more precise one wins; two different numbers are an error.
func unifyDim(a, b ir.Dim) (ir.Dim, error) {
	switch {
	case a.Known && b.Known:
		if a.Value != b.Value {
			return a, fmt.Errorf("dimensions %d and %d differ", a.Value, b.Value)
		}
		return a, nil
	case a.Known:
		return a, nil
	case b.Known:
		return b, nil
	case isSym(a):
		return a, nil
	}
	return b, nil
}

// A monomial is a number times a product of symbols: the dims that products and
// quotients of sizes give. A monomial other than a number or a lone symbol is written as
// a symbol in canonical form, the coefficient first and the names sorted: "4*batch",
// "batch*sequence". Reshape(x[batch,4,s,16], [-1,s,16]) so gives [4*batch,s,16], and
// reshaping back divides the 4 out again.
type monomial struct {
	k    int64
	syms []string // sorted, repeated for powers
}

// monomialOf reads a dim as a monomial; ok is false for an unknown dim.
func monomialOf(d ir.Dim) (monomial, bool) {
	switch {
	case d.Known:
		return monomial{k: d.Value}, true
	case d.Param == "":
		return monomial{}, false
	case !strings.Contains(d.Param, "*"):
		return monomial{k: 1, syms: []string{d.Param}}, true
	}
	m := monomial{k: 1}
	for _, f := range strings.Split(d.Param, "*") {
		if x, err := strconv.ParseInt(f, 10, 64); err == nil {
			m.k *= x
		} else if f != "" {
			m.syms = append(m.syms, f)
		} else {
			// Not a product ("a**b", "*"): an opaque name.
			return monomial{k: 1, syms: []string{d.Param}}, true
		}
	}
	sort.Strings(m.syms)
	return m, true
}

func (m monomial) mul(o monomial) monomial {
	syms := append(append([]string{}, m.syms...), o.syms...)
	sort.Strings(syms)
	return monomial{k: m.k * o.k, syms: syms}
}

// div is m/o when it is a monomial with an integer coefficient.
func (m monomial) div(o monomial) (monomial, bool) {
	if o.k == 0 || m.k%o.k != 0 {
		return monomial{}, false
	}
	rest := append([]string{}, m.syms...)
	for _, s := range o.syms {
		i := sort.SearchStrings(rest, s)
		if i == len(rest) || rest[i] != s {
			return monomial{}, false
		}
		rest = append(rest[:i], rest[i+1:]...)
	}
	return monomial{k: m.k / o.k, syms: rest}, true
}

func (m monomial) dim() ir.Dim {
	switch {
	case len(m.syms) == 0:
		return ir.D(m.k)
	case m.k == 0:
		return ir.D(0)
	case m.k == 1 && len(m.syms) == 1:
		return ir.Sym(m.syms[0])
	}
	parts := m.syms
	if m.k != 1 {
		parts = append([]string{strconv.FormatInt(m.k, 10)}, m.syms...)
	}
	return ir.Sym(strings.Join(parts, "*"))
}

// mulDims and divDims are products and exact quotients of dims, unknown when not monomials.
func mulDims(a, b ir.Dim) ir.Dim {
	x, ok1 := monomialOf(a)
	y, ok2 := monomialOf(b)
	if !ok1 || !ok2 {
		if (a.Known && a.Value == 0) || (b.Known && b.Value == 0) {
			return ir.D(0)
		}
		return unknownDim()
	}
	return x.mul(y).dim()
}

func divDims(a, b ir.Dim) ir.Dim {
	x, ok1 := monomialOf(a)
	y, ok2 := monomialOf(b)
	if !ok1 || !ok2 {
		return unknownDim()
	}
	q, ok := x.div(y)
	if !ok {
		return unknownDim()
	}
	return q.dim()
}

// product multiplies dims; unknown when any is.
func product(ds ir.Shape) ir.Dim {
	p := ir.D(1)
	for _, d := range ds {
		p = mulDims(p, d)
	}
	return p
}

// nonNegative reports whether d is known not to be negative (sizes never are).
func nonNegative(d ir.Dim) bool {
	m, ok := monomialOf(d)
	return ok && m.k >= 0
}

// sumDims adds dims (Concat's axis): a number when all are known, the lone non-zero
// term when the others are known zeros, else unknown.
func sumDims(ds []ir.Dim) ir.Dim {
	var k int64
	var other []ir.Dim
	for _, d := range ds {
		if d.Known {
			k += d.Value
		} else {
			other = append(other, d)
		}
	}
	switch {
	case len(other) == 0:
		return ir.D(k)
	case len(other) == 1 && k == 0:
		return other[0]
	}
	return unknownDim()
}

// normAxis maps a possibly negative axis into [0, rank).
func normAxis(axis int64, rank int) (int, error) {
	a := axis
	if a < 0 {
		a += int64(rank)
	}
	if a < 0 || a >= int64(rank) {
		return 0, fmt.Errorf("axis %d out of range for rank %d", axis, rank)
	}
	return int(a), nil
}

// normAxes normalises, sorts and checks a list of axes.
func normAxes(axes []int64, rank int) ([]int, error) {
	out := make([]int, len(axes))
	seen := map[int]bool{}
	for i, a := range axes {
		n, err := normAxis(a, rank)
		if err != nil {
			return nil, err
		}
		if seen[n] {
			return nil, fmt.Errorf("axis %d repeated", a)
		}
		seen[n] = true
		out[i] = n
	}
	sort.Ints(out)
	return out, nil
}

func cloneShape(s ir.Shape) ir.Shape { return append(make(ir.Shape, 0, len(s)), s...) }

func unknownDims(n int) ir.Shape { return make(ir.Shape, n) }
