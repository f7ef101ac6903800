package ortcheck

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/shape"
)

// Halve returns a copy of m as a float16 export of the same module writes it (model.half()
// before export): every float32 initializer, constant, cast target and graph input or
// output becomes float16 but the positions fed to Range, finite values beyond float16's
// range saturate to ±65504 (torch's masks then hold finfo(float16).min), and the value
// types are inferred again.
func Halve(m *ir.Model) (*ir.Model, error) {
	c, err := copyModel(m)
	if err != nil {
		return nil, err
	}
	// A local function's body is typed by its callers only once inlined.
	if _, err := c.InlineFunctions(); err != nil {
		return nil, fmt.Errorf("halve: %w", err)
	}
	err = c.Graph.Walk(func(g *ir.Graph) error {
		kept := map[*ir.Value]bool{} // float32 positions
		for _, v := range g.Initializers {
			if v.Const.DType == ir.Float && onlyRange(v) {
				kept[v] = true
				continue
			}
			if v.Const.DType == ir.Float {
				t, err := halfTensor(v.Const)
				if err != nil {
					return err
				}
				v.Const = t
				if v.Type != nil {
					v.Type.DType = ir.Float16
				}
			}
		}
		io := map[*ir.Value]bool{}
		for _, v := range append(append([]*ir.Value(nil), g.Inputs...), g.Outputs...) {
			io[v] = true
			if v.Type != nil && v.Type.DType == ir.Float {
				v.Type.DType = ir.Float16
			}
		}
		for _, n := range g.Nodes() {
			if len(n.Outputs()) == 1 && makesFloat(n) && onlyRange(n.Output(0)) {
				kept[n.Output(0)] = true
				continue
			}
			for _, a := range n.Attrs {
				switch {
				case a.Tensor != nil && a.Tensor.DType == ir.Float: // also what makesFloat reads
					t, err := halfTensor(a.Tensor)
					if err != nil {
						return err
					}
					a.Tensor = t
				case a.Type == ir.AttrInt && (a.Name == "to" || a.Name == "dtype") && a.Int == int64(ir.Float):
					a.Int = int64(ir.Float16)
				}
			}
			if n.OpType == "Constant" && (n.Attr("value_float") != nil || n.Attr("value_floats") != nil) {
				return fmt.Errorf("halve: %s holds value_float(s)", n)
			}
			for _, o := range n.Outputs() {
				if o != nil && !io[o] {
					o.Type = nil
				}
			}
		}
		// Float32 positions meet the module's float16 values through a Cast, as torch's
		// .to(dtype) writes it.
		for _, n := range g.NodesCopy() {
			if n.OpType != "Range" || !kept[n.Input(0)] && !kept[n.Input(1)] && !kept[n.Input(2)] {
				continue
			}
			o := n.Output(0)
			uses := append([]ir.Use(nil), o.Uses()...)
			c := g.Add("Cast", []*ir.Value{o}, 1, o.Name+"_half", ir.IntAttr("to", int64(ir.Float16)))
			for _, u := range uses {
				u.Node.SetInput(u.Index, c.Output(0))
			}
		}
		g.ValueInfo = nil
		return g.TopoSort()
	})
	if err != nil {
		return nil, err
	}
	if _, err := shape.Infer(c); err != nil {
		return nil, fmt.Errorf("halve: %w", err)
	}
	return c, nil
}

// makesFloat reports whether n's float32 output comes from its attributes: a float
// constant, or a Cast or generator to float.
func makesFloat(n *ir.Node) bool {
	for _, a := range n.Attrs {
		if a.Tensor != nil && a.Tensor.DType == ir.Float || a.Type == ir.AttrInt && (a.Name == "to" || a.Name == "dtype") && a.Int == int64(ir.Float) {
			return true
		}
	}
	return false
}

// onlyRange reports whether v is read, and only, by Range: torch computes positions in
// float32 whatever the module's type (Range has no float16 kernel), so they stay float.
func onlyRange(v *ir.Value) bool {
	for _, u := range v.Uses() {
		if u.Node.OpType != "Range" {
			return false
		}
	}
	return len(v.Uses()) > 0
}

// halfTensor rounds a float32 tensor to float16, saturating at the largest finite value.
func halfTensor(t *ir.Tensor) (*ir.Tensor, error) {
	f, err := t.Float32s()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 2*len(f))
	for i, x := range f {
		if !math.IsInf(float64(x), 0) {
			x = float32(math.Max(-65504, math.Min(65504, float64(x))))
		}
		binary.LittleEndian.PutUint16(b[2*i:], ndarray.Float32ToHalf(x))
	}
	h := ir.NewTensor(ir.Float16, t.Dims, b)
	h.Name = t.Name
	return h, nil
}
