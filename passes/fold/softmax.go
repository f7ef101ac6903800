package fold

import (
	"github.com/qcc-dev/qcc/ir"
)

// softmaxLast moves a Softmax over another axis than the last (opset 13 on: one axis)
// between two Transposes that swap that axis with the last, when its output reaches a
// MatMul through layout ops: attention that normalises the keys where they sit
// (Transformer-XL's [i, j, b, n] scores, softmax over j) then has the last-axis softmax
// the recognisers read. Elsewhere (a classifier's softmax over channels) it stays.
func (f *folder) softmaxLast(g *ir.Graph, n *ir.Node) {
	x, y := n.Input(0), n.Output(0)
	if f.opset < 13 || x == nil || y == nil || x.Type.Rank() < 2 || !feedsMatMul(y) {
		return
	}
	r := x.Type.Rank()
	a := n.AttrInt("axis", -1)
	if a < 0 {
		a += int64(r)
	}
	if a < 0 || a >= int64(r)-1 {
		return
	}
	perm := identity(r)
	perm[a], perm[r-1] = perm[r-1], perm[a] // its own inverse
	base := y.Name
	sm := g.NewValue(base+"_last", nil)
	node, _ := g.AddNode(&ir.Node{OpType: "Softmax", Attrs: []*ir.Attr{ir.IntAttr("axis", -1)}}, []*ir.Value{addTranspose(g, x, perm, base+"_moved")}, []*ir.Value{sm})
	node.Name = n.Name // it stands for the exporter's Softmax, which goes
	if f.forward(g, n, addTranspose(g, sm, perm, base+"_back")) {
		f.count("fold: Softmax moved to the last axis", 1)
	}
}

// feedsMatMul reports whether v reaches a MatMul through single-reader layout ops.
func feedsMatMul(v *ir.Value) bool {
	for range 6 {
		uses := v.Uses()
		if len(uses) != 1 || v.IsGraphOutput() {
			return false
		}
		n := uses[0].Node
		switch n.OpType {
		case "MatMul", "Einsum":
			return true
		case "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Cast", "Dropout", "Identity":
			v = n.Output(0)
		default:
			return false
		}
	}
	return false
}
