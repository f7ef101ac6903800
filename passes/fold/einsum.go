package fold

import (
	"slices"
	"strings"

	"github.com/qcc-dev/qcc/ir"
)

// matmulEinsum is a two-operand Einsum that is a batched matrix product: its labels are
// batch (in both operands and the output), rows (the first operand and the output),
// columns (the second operand and the output) and the contraction (both operands only),
// one each of the last three.
type matmulEinsum struct {
	permA, permB []int64 // the operands to [batch…, rows, contraction] and [batch…, contraction, columns]
	permOut      []int64 // MatMul's [batch…, rows, columns] to the output's order; nil when it is that
}

// parseMatmulEinsum reads eq ("bhid,bhjd->bhij") as a batched matrix product; false for
// any other Einsum (an ellipsis, a repeated label, a sum over one operand's label, no
// explicit output, several rows, columns or contracted labels).
func parseMatmulEinsum(eq string) (matmulEinsum, bool) {
	eq = strings.ReplaceAll(eq, " ", "")
	ins, out, ok := strings.Cut(eq, "->")
	if !ok || strings.Contains(eq, ".") {
		return matmulEinsum{}, false
	}
	a, b, ok := strings.Cut(ins, ",")
	if !ok || strings.Contains(b, ",") {
		return matmulEinsum{}, false
	}
	distinct := func(s string) bool {
		for i, c := range s {
			if c < 'A' || c > 'z' || (c > 'Z' && c < 'a') || strings.ContainsRune(s[i+1:], c) {
				return false
			}
		}
		return true
	}
	if !distinct(a) || !distinct(b) || !distinct(out) || a == "" || b == "" {
		return matmulEinsum{}, false
	}
	var batch, rows, cols, contr []rune
	for _, c := range a {
		inB, inOut := strings.ContainsRune(b, c), strings.ContainsRune(out, c)
		switch {
		case inB && inOut:
		case inOut:
			rows = append(rows, c)
		case inB:
			contr = append(contr, c)
		default:
			return matmulEinsum{}, false // summed over the first operand alone
		}
	}
	for _, c := range b {
		inA, inOut := strings.ContainsRune(a, c), strings.ContainsRune(out, c)
		switch {
		case !inA && inOut:
			cols = append(cols, c)
		case !inA:
			return matmulEinsum{}, false
		}
	}
	for _, c := range out {
		inA, inB := strings.ContainsRune(a, c), strings.ContainsRune(b, c)
		switch {
		case inA && inB:
			batch = append(batch, c)
		case !inA && !inB:
			return matmulEinsum{}, false
		}
	}
	if len(rows) != 1 || len(cols) != 1 || len(contr) != 1 {
		return matmulEinsum{}, false
	}
	perm := func(of string, order []rune) []int64 {
		p := make([]int64, len(order))
		for i, c := range order {
			p[i] = int64(strings.IndexRune(of, c))
		}
		return p
	}
	lhs := append(slices.Clone(batch), rows[0], contr[0])
	rhs := append(slices.Clone(batch), contr[0], cols[0])
	prod := string(append(slices.Clone(batch), rows[0], cols[0]))
	e := matmulEinsum{permA: perm(a, lhs), permB: perm(b, rhs)}
	if prod != out {
		e.permOut = perm(prod, []rune(out))
	}
	return e, true
}

// einsum rewrites an Einsum that is a batched matrix product as Transposes around a
// MatMul, so that attention written with einsum (Transformer-XL, XLNet, Funnel, research
// code: "bhid,bhjd->bhij") reads as the MatMuls the recognisers follow.
func (f *folder) einsum(g *ir.Graph, n *ir.Node) {
	if len(n.Inputs()) != 2 || len(n.Outputs()) != 1 || n.Input(0) == nil || n.Input(1) == nil {
		return
	}
	e, ok := parseMatmulEinsum(n.AttrString("equation", ""))
	if !ok {
		return
	}
	a, b := n.Input(0), n.Input(1)
	if a.Type.Rank() != len(e.permA) || b.Type.Rank() != len(e.permB) {
		return // the equation does not name every axis, or the rank is unknown
	}
	base := n.Output(0).Name
	mm := g.NewValue(base+"_matmul", nil)
	node, _ := g.AddNode(&ir.Node{OpType: "MatMul"}, []*ir.Value{addTranspose(g, a, e.permA, base+"_lhs"), addTranspose(g, b, e.permB, base+"_rhs")}, []*ir.Value{mm})
	node.Name = n.Name // it stands for the exporter's Einsum, which goes
	if f.forward(g, n, addTranspose(g, mm, e.permOut, base+"_out")) {
		f.count("fold: Einsum as MatMul", 1)
	}
}

// addTranspose adds a Transpose of x by perm, named after name; x itself when perm is
// nil or the identity.
func addTranspose(g *ir.Graph, x *ir.Value, perm []int64, name string) *ir.Value {
	if perm == nil || slices.Equal(perm, identity(len(perm))) {
		return x
	}
	out := g.NewValue(name, nil)
	t, _ := g.AddNode(&ir.Node{OpType: "Transpose", Attrs: []*ir.Attr{ir.IntsAttr("perm", perm...)}}, []*ir.Value{x}, []*ir.Value{out})
	t.Name = out.Name
	return out
}

func identity(n int) []int64 {
	p := make([]int64, n)
	for i := range p {
		p[i] = int64(i)
	}
	return p
}
