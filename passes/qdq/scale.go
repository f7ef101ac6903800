package qdq

import (
	"fmt"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
)

// moveScales moves attention's scale from the scores onto Q before pairs are placed:
// softmax((Q·Kᵀ)·s + B) = softmax((Q·s)·Kᵀ + B). TensorRT's fused attention applies the
// scale to Q ahead of the first BMM; with Q/DQ pinned on the BMM inputs it could no
// longer move it there. When Q is computed by a projection X·W + b with constant W and b
// that nothing else reads (through the head reshapes), s is folded into W and b; else a
// Mul on Q's edge into Q·Kᵀ carries it. It returns notes on what it did.
func moveScales(cores []*core) []string {
	var notes []string
	for _, c := range cores {
		if len(c.mms) == 0 {
			continue
		}
		qk := c.mms[0]
		sc, f, why := scoresScale(qk)
		if sc == nil {
			if why != "" {
				notes = append(notes, fmt.Sprintf("attention scale of %s stays on the scores: %s", qdqcheck.NodeName(qk), why))
			}
			continue
		}
		// The scores now bypass the scaling node.
		out := sc.Output(0)
		s := qk.Output(0)
		for _, u := range append([]ir.Use(nil), out.Uses()...) {
			u.Node.SetInput(u.Index, s)
		}
		g := qk.Graph()
		g.RemoveNode(sc)
		for _, in := range sc.Inputs() {
			if in != nil && in.Const != nil && len(in.Uses()) == 0 && !in.IsGraphInput() && !in.IsGraphOutput() {
				in.Graph().RemoveValue(in) // the scale constant nothing reads any more
			}
		}
		if w, b := qProjection(qk.Input(0)); w != nil {
			scaleConst(w, f)
			scaleConst(b, f)
			notes = append(notes, fmt.Sprintf("attention scale %g of %s folded into the Q projection's weight %s and bias %s", f, qdqcheck.NodeName(qk), w.Name, b.Name))
			continue
		}
		q := qk.Input(0)
		k := g.NewConst(q.Name+"_attn_scale", ir.FloatTensor(nil, []float32{f}))
		mul := g.Add("Mul", []*ir.Value{q, k}, 1, q.Name+"_scaled")
		mul.Name = g.FreshName(q.Name + "_attn_scale_Mul")
		if q.Type != nil {
			mul.Output(0).Type = q.Type.Clone()
		}
		qk.SetInput(0, mul.Output(0))
		notes = append(notes, fmt.Sprintf("attention scale %g of %s moved onto Q (%s)", f, qdqcheck.NodeName(qk), q.Name))
	}
	return notes
}

// scoresScale returns the Div or Mul by a scalar constant that is the only reader of
// Q·Kᵀ, with the factor it applies, or why the scale cannot move ("" when there is none).
func scoresScale(qk *ir.Node) (*ir.Node, float32, string) {
	s := qk.Output(0)
	if s == nil || len(s.Uses()) != 1 || s.IsGraphOutput() {
		return nil, 0, ""
	}
	n := s.Uses()[0].Node
	if !qdqcheck.IsOp(n, "Div") && !qdqcheck.IsOp(n, "Mul") || n.Output(0) == nil || n.Output(0).IsGraphOutput() {
		return nil, 0, ""
	}
	other := n.Input(1)
	if n.OpType == "Mul" && n.Input(1) == s {
		other = n.Input(0)
	} else if n.Input(0) != s {
		return nil, 0, "" // c / (Q·Kᵀ) is no scale
	}
	t := constOf(other)
	if t == nil || t.NumElements() != 1 || !t.DType.IsFloat() {
		return nil, 0, ""
	}
	v, err := t.Float64s()
	if err != nil || len(v) != 1 || v[0] == 0 {
		return nil, 0, ""
	}
	if qdqcheck.Dequantized(qk.Input(0)) || qdqcheck.Dequantized(qk.Input(1)) {
		return nil, 0, "Q·Kᵀ is quantized already"
	}
	if t := qk.Input(0).Type; t == nil || t.DType != ir.Float {
		return nil, 0, "Q is not float32"
	}
	f := v[0]
	if n.OpType == "Div" {
		f = 1 / f
	}
	return n, float32(f), ""
}

// qProjection follows Q back through its head reshapes and transposes (each read only
// on this path) to a bias Add of a MatMul by a constant weight; it returns the weight and
// the bias when both are float initializers nothing else reads.
func qProjection(q *ir.Value) (w, b *ir.Value) {
	v := q
	for d := 0; d < 6; d++ {
		p, _ := producerOf(v)
		if p == nil || len(v.Uses()) != 1 || v.IsGraphOutput() {
			return nil, nil
		}
		switch {
		case qdqcheck.IsOp(p, "Reshape"), qdqcheck.IsOp(p, "Transpose"):
			v = p.Input(0)
		case qdqcheck.IsOp(p, "Add"):
			for i := 0; i < 2; i++ {
				bias, x := p.Input(i), p.Input(1-i)
				mm, _ := producerOf(x)
				if !soleFloatConst(bias) || !qdqcheck.IsOp(mm, "MatMul") || len(x.Uses()) != 1 || x.IsGraphOutput() {
					continue
				}
				if wt := mm.Input(1); soleFloatConst(wt) && bias.Const.NumElements() == lastDim(wt.Const) {
					return wt, bias
				}
			}
			return nil, nil
		default:
			return nil, nil
		}
	}
	return nil, nil
}

func soleFloatConst(v *ir.Value) bool {
	return v != nil && v.Const != nil && v.Const.DType == ir.Float && len(v.Uses()) == 1 && !v.IsGraphOutput() && !v.IsGraphInput()
}

func lastDim(t *ir.Tensor) int64 {
	if len(t.Dims) == 0 {
		return -1
	}
	return t.Dims[len(t.Dims)-1]
}

// scaleConst replaces the constant v (read once) with v·f, in v's graph.
func scaleConst(v *ir.Value, f float32) {
	g := v.Graph()
	vals, err := v.Const.Float32s()
	if err != nil {
		return
	}
	out := make([]float32, len(vals))
	for i, x := range vals {
		out[i] = x * f
	}
	nv := g.NewConst(v.Name+"_scaled", ir.FloatTensor(v.Const.Dims, out))
	u := v.Uses()[0]
	u.Node.SetInput(u.Index, nv)
	g.RemoveValue(v)
}
