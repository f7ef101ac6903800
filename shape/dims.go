package shape

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
)

// Dimension arithmetic. A dim is a known number, a symbol (a name such as "batch" that
// stands for one runtime size, assumed not to be 1 unless the file says so) or unknown.
// A symbol stands for a size of at least 1: an empty batch or sequence is not compiled
// for, so x[:, :-1] of a runtime length L keeps L - 1 and x[:, :1] keeps 1 (atLeast).

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

// A polynomial is a sum of terms, each a number times a product of symbols: the dims that
// products, exact quotients, sums and differences of sizes give. One other than a number
// or a lone symbol is written as a symbol in canonical form: each term's coefficient
// first and its names sorted ("4*batch", "batch*sequence"), the terms by falling degree
// and then by name, the constant last, joined by " + " and " - " (spaced, so that a name
// with a dash in it stays a name): "past + sequence", "sequence - 1". Reshape(x[batch,4,s,16],
// [-1,s,16]) so gives [4*batch,s,16], reshaping back divides the 4 out again, and a key
// cache of past positions concatenated with the new ones has "past + sequence" of them.
type poly map[string]int64 // term key (sorted names joined by "*", "" for the constant) -> coefficient

// polyOf reads a dim as a polynomial; ok is false for an unknown dim.
func polyOf(d ir.Dim) (poly, bool) {
	switch {
	case d.Known:
		return poly{"": d.Value}, true
	case d.Param == "":
		return nil, false
	}
	if plainSymbol(d.Param) { // most dims: a name as the exporter gave it
		return poly{d.Param: 1}, true
	}
	return parsePoly(d.Param), true
}

// parsePoly reads a dim's text as a sum of terms.
func parsePoly(s string) poly {
	p := poly{}
	for _, term := range strings.Split(strings.ReplaceAll(s, " - ", " + -"), " + ") {
		key, k, ok := parseTerm(term)
		if !ok {
			return poly{s: 1} // not one of ours: an opaque name
		}
		p[key] += k
	}
	return p.trim()
}

// parseTerm reads "k*a*b" (k optional, "-a" for -1*a) as its key and coefficient.
func parseTerm(t string) (string, int64, bool) {
	k := int64(1)
	if rest, ok := strings.CutPrefix(t, "-"); ok && rest != "" && (rest[0] < '0' || rest[0] > '9') {
		k, t = -1, rest
	}
	var syms []string
	for _, f := range factors(t) {
		if x, err := parseCoefficient(f); err == nil {
			k *= x
		} else if f != "" && !strings.ContainsAny(f, " ") {
			syms = append(syms, f)
		} else {
			return "", 0, false
		}
	}
	sort.Strings(syms)
	return strings.Join(syms, "*"), k, true
}

// plainSymbol reports whether s is one symbol, as parseTerm would read it alone: no
// operator, parenthesis or space, and not a number.
func plainSymbol(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	return !strings.ContainsAny(s, " *()+-/")
}

// errNotNumber is parseCoefficient's answer for what is not a decimal integer; most
// factors are symbols, and strconv's error would be built for each.
var errNotNumber = errors.New("not a number")

// parseCoefficient is strconv.ParseInt(f, 10, 64) that refuses non-numbers cheaply.
func parseCoefficient(f string) (int64, error) {
	digits := strings.TrimPrefix(strings.TrimPrefix(f, "-"), "+")
	if digits == "" || strings.ContainsFunc(digits, func(r rune) bool { return r < '0' || r > '9' }) {
		return 0, errNotNumber
	}
	return strconv.ParseInt(f, 10, 64)
}

// factors splits a product at the "*" outside parentheses: "4*floor(a*b/3)" is 4 and
// floor(a*b/3).
func factors(t string) []string {
	var out []string
	depth, start := 0, 0
	for i, r := range t {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		case '*':
			if depth == 0 {
				out = append(out, t[start:i])
				start = i + 1
			}
		}
	}
	return append(out, t[start:])
}

// floorDiv is floor(a / k) for a size a and k > 0: a number, an exact quotient, or a
// symbol naming the quotient ("floor(height/4)"), the same name wherever the same size
// is divided by the same number, so that a patch grid computed by a strided Conv and
// by integer division of the size agree. A constant term divisible by k is taken out of
// the floor: floor((height - 4)/4) is floor(height/4) - 1.
func floorDiv(a ir.Dim, k int64) ir.Dim {
	switch {
	case k <= 0:
		return unknownDim()
	case k == 1:
		return a
	case a.Known:
		if a.Value < 0 {
			return unknownDim()
		}
		return ir.D(a.Value / k)
	}
	p, ok := polyOf(a)
	if !ok {
		return unknownDim()
	}
	if q, ok := p.div(poly{"": k}); ok {
		return q.dim()
	}
	c := p[""]
	rest := p.add(poly{"": c}, -1)
	if c%k == 0 && nonNegative(rest.dim()) {
		name := strings.ReplaceAll(rest.dim().Param, " ", "")
		return addDims(ir.Sym(fmt.Sprintf("floor(%s/%d)", name, k)), ir.D(c/k))
	}
	// Otherwise the quotient is a symbol of its own, named by the whole expression: the
	// same expression of the same sizes is the same size (a strided Conv's output length).
	if !nonNegative(rest.dim()) {
		return unknownDim()
	}
	return ir.Sym(fmt.Sprintf("floor((%s)/%d)", strings.ReplaceAll(a.Param, " ", ""), k))
}

func (p poly) trim() poly {
	for k, c := range p {
		if c == 0 {
			delete(p, k)
		}
	}
	return p
}

func (p poly) add(o poly, sign int64) poly {
	out := poly{}
	for k, c := range p {
		out[k] += c
	}
	for k, c := range o {
		out[k] += sign * c
	}
	return out.trim()
}

func (p poly) mul(o poly) poly {
	out := poly{}
	for k1, c1 := range p {
		for k2, c2 := range o {
			var syms []string
			for _, k := range []string{k1, k2} {
				if k != "" {
					syms = append(syms, factors(k)...)
				}
			}
			sort.Strings(syms)
			out[strings.Join(syms, "*")] += c1 * c2
		}
	}
	return out.trim()
}

// div is p/o for a single-term o that divides every term of p exactly.
func (p poly) div(o poly) (poly, bool) {
	if len(o) != 1 {
		if len(o) > 0 && len(o) == len(p) {
			// p = k*o: the same terms, one ratio.
			var ratio int64
			for k, c := range o {
				pc, ok := p[k]
				if !ok || c == 0 || pc%c != 0 || ratio != 0 && pc/c != ratio {
					return nil, false
				}
				ratio = pc / c
			}
			return poly{"": ratio}, true
		}
		return nil, false
	}
	var ok, oc = "", int64(0)
	for k, c := range o {
		ok, oc = k, c
	}
	if oc == 0 {
		return nil, false
	}
	var osyms []string
	if ok != "" {
		osyms = factors(ok)
	}
	out := poly{}
	for k, c := range p {
		if c%oc != 0 {
			return nil, false
		}
		var rest []string
		if k != "" {
			rest = factors(k)
		}
		for _, s := range osyms {
			i := sort.SearchStrings(rest, s)
			if i == len(rest) || rest[i] != s {
				return nil, false
			}
			rest = append(rest[:i:i], rest[i+1:]...)
		}
		out[strings.Join(rest, "*")] += c / oc
	}
	return out.trim(), true
}

func degree(key string) int {
	if key == "" {
		return 0
	}
	return strings.Count(key, "*") + 1
}

func (p poly) dim() ir.Dim {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	switch {
	case len(keys) == 0:
		return ir.D(0)
	case len(keys) == 1 && keys[0] == "":
		return ir.D(p[""])
	case len(keys) == 1 && p[keys[0]] == 1:
		return ir.Sym(keys[0])
	}
	sort.Slice(keys, func(i, j int) bool {
		if di, dj := degree(keys[i]), degree(keys[j]); di != dj {
			return di > dj
		}
		return keys[i] < keys[j]
	})
	var b strings.Builder
	for i, k := range keys {
		c := p[k]
		switch {
		case i == 0 && c < 0:
			b.WriteString("-")
			c = -c
		case i > 0 && c < 0:
			b.WriteString(" - ")
			c = -c
		case i > 0:
			b.WriteString(" + ")
		}
		switch {
		case k == "":
			b.WriteString(strconv.FormatInt(c, 10))
		case c == 1:
			b.WriteString(k)
		default:
			b.WriteString(strconv.FormatInt(c, 10) + "*" + k)
		}
	}
	return ir.Sym(b.String())
}

// mulDims, divDims, addDims and subDims are products, exact quotients, sums and
// differences of dims, unknown when not polynomials.
func mulDims(a, b ir.Dim) ir.Dim {
	// The common cases, as the polynomials would give them.
	switch {
	case a.Known && b.Known:
		return ir.D(a.Value * b.Value)
	case a.Known && a.Value == 1 && plainSymbol(b.Param):
		return ir.Sym(b.Param)
	case b.Known && b.Value == 1 && plainSymbol(a.Param):
		return ir.Sym(a.Param)
	}
	x, ok1 := polyOf(a)
	y, ok2 := polyOf(b)
	if !ok1 || !ok2 {
		if (a.Known && a.Value == 0) || (b.Known && b.Value == 0) {
			return ir.D(0)
		}
		return unknownDim()
	}
	return x.mul(y).dim()
}

func divDims(a, b ir.Dim) ir.Dim {
	x, ok1 := polyOf(a)
	y, ok2 := polyOf(b)
	if !ok1 || !ok2 {
		return unknownDim()
	}
	q, ok := x.div(y)
	if !ok {
		return unknownDim()
	}
	return q.dim()
}

func addDims(a, b ir.Dim) ir.Dim { return addSub(a, b, 1) }

func subDims(a, b ir.Dim) ir.Dim { return addSub(a, b, -1) }

func addSub(a, b ir.Dim, sign int64) ir.Dim {
	x, ok1 := polyOf(a)
	y, ok2 := polyOf(b)
	if !ok1 || !ok2 {
		return unknownDim()
	}
	return x.add(y, sign).dim()
}

// product multiplies dims; unknown when any is.
func product(ds ir.Shape) ir.Dim {
	p := ir.D(1)
	for _, d := range ds {
		p = mulDims(p, d)
	}
	return p
}

// atLeast reports whether d is provably at least n. Every symbol being at least 1, a
// polynomial with no negative coefficient beside its constant is smallest with every
// symbol 1, where it is the sum of its coefficients: sequence - 1 is at least 0 and
// 1 + height*width at least 2, while nothing bounds sequence - 2 or height - width.
func atLeast(d ir.Dim, n int64) bool {
	p, ok := polyOf(d)
	if !ok {
		return false
	}
	var least int64
	for key, c := range p {
		if key != "" && c < 0 {
			return false
		}
		least += c
	}
	return least >= n
}

// nonNegative reports whether d is provably not negative.
func nonNegative(d ir.Dim) bool { return atLeast(d, 0) }

// sumDims adds dims (Concat's axis); unknown when any is.
func sumDims(ds []ir.Dim) ir.Dim {
	out := ir.D(0)
	for _, d := range ds {
		out = addDims(out, d)
	}
	return out
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
