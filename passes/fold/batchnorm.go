package fold

import (
	"math"

	"github.com/qcc-dev/qcc/ir"
)

// linearBN folds an inference BatchNormalization that normalises the output channels of
// a projection into the projection: BN(x·W) = x·(W·s) + t with s = γ/√(var + ε) and
// t = β − mean·s per output channel. LeViT's and EfficientFormer's Linear+BN layers
// write it on the tokens flattened to [B·N, C] and reshaped back, so the BN may sit
// between a Flatten or Reshape that keeps the channels last and a Reshape back to the
// projection's shape. The recognisers then see a projection with a bias.
func (f *folder) linearBN(g *ir.Graph, n *ir.Node) {
	x := n.Input(0)
	if len(n.Outputs()) != 1 || len(n.Inputs()) != 5 || x == nil || x.Type.Rank() != 2 || n.AttrInt("training_mode", 0) != 0 {
		return
	}
	params := make([][]float64, 4) // γ, β, mean, var
	for i := range params {
		c := n.Input(i + 1)
		if c == nil || c.Const == nil || len(c.Const.Dims) != 1 {
			return
		}
		vals, err := c.Const.Float64s()
		if err != nil {
			return
		}
		params[i] = vals
	}
	// Back to the projection: directly, or through one flattening step.
	y, out, first := x, n.Output(0), n
	if p, _ := x.Producer(); p != nil && (p.OpType == "Flatten" || p.OpType == "Reshape") && defaultDomain(p) {
		uses := out.Uses()
		if len(uses) != 1 || len(x.Uses()) != 1 {
			return
		}
		back := uses[0].Node
		y, first = p.Input(0), p
		if back.OpType != "Reshape" || !defaultDomain(back) || !sameShape(back.Output(0).Type, y.Type) || !lastDimIs(y, x) {
			return
		}
		out = back.Output(0)
	}
	mm, _ := y.Producer()
	if mm == nil || mm.OpType != "MatMul" || !defaultDomain(mm) || y.IsGraphOutput() {
		return
	}
	w := mm.Input(1)
	if w.Const == nil || len(w.Const.Dims) != 2 || !w.Const.DType.IsFloat() {
		return
	}
	c := int(w.Const.Dims[1])
	for _, p := range params {
		if len(p) != c {
			return
		}
	}
	// The projection's weights change: besides the chain, y may be read only by Shape
	// (reshape_as), and its shape stays.
	for _, u := range y.Uses() {
		if u.Node != first && u.Node.OpType != "Shape" {
			return
		}
	}
	wv, err := w.Const.Float64s()
	if err != nil {
		return
	}
	eps := float64(n.AttrFloat("epsilon", 1e-5))
	// In float64, each result rounded once to the projection's type.
	scaled := make([]float64, len(wv))
	shift := make([]float64, c)
	for j := 0; j < c; j++ {
		s := params[0][j] / math.Sqrt(params[3][j]+eps)
		shift[j] = params[1][j] - params[2][j]*s
		for i := j; i < len(wv); i += c {
			scaled[i] = wv[i] * s
		}
	}
	wt, err1 := ir.FloatsTensor(w.Const.DType, w.Const.Dims, scaled)
	st, err2 := ir.FloatsTensor(w.Const.DType, []int64{int64(c)}, shift)
	if err1 != nil || err2 != nil {
		return
	}
	last, _ := out.Producer()
	sum := g.NewValue(out.Name+"_bn", nil)
	a, _ := g.AddNode(&ir.Node{OpType: "Add"}, []*ir.Value{y, g.NewConst(out.Name+"_shift", st)}, []*ir.Value{sum})
	a.Name = sum.Name
	if !f.forward(g, last, sum) {
		g.RemoveNode(a)
		return
	}
	mm.SetInput(1, g.NewConst(w.Name+"_bn", wt))
	f.count("fold: BatchNormalization folded into its projection", 1)
}

// lastDimIs reports whether flat keeps y's last axis as its own: both known and equal.
func lastDimIs(y, flat *ir.Value) bool {
	a, b := y.Type, flat.Type
	if a == nil || b == nil || !a.HasShape || !b.HasShape || len(a.Shape) == 0 || len(b.Shape) == 0 {
		return false
	}
	da, db := a.Shape[len(a.Shape)-1], b.Shape[len(b.Shape)-1]
	return da.Known && db.Known && da.Value == db.Value
}
