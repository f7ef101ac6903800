// Package repair fixes known exporter bugs that make a model invalid, so that the rest of
// qcc (and ONNX Runtime) can work on it. Each rule is narrow, names the bug it fixes, and
// preserves the function the exporter meant.
package repair

import (
	"fmt"
	"math"

	"github.com/qcc-dev/qcc/eval"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
)

// Pass applies every repair rule.
var Pass = &pass.Pass{
	Name: "repair",
	Doc: `fix known exporter bugs that make a model invalid
Rules:
  int-clip: Clip on an integer tensor at default-domain opset < 12 (torch.clamp on int64 in
    DeBERTa's opset-11 exports; Clip takes integers only from opset 12, and ONNX Runtime
    refuses the model). Rewritten as Cast(float) -> Clip -> Cast(back); integer bounds are
    converted (constants) or cast (computed). float is the only type ONNX Runtime's Clip-11
    kernel takes. The result is exact when both bounds are constants of magnitude <= 2^24
    (whatever the input), and otherwise whenever the values involved are below 2^24 in
    magnitude (relative positions and lengths are). When the input and bounds are all
    constant the Clip is computed instead.
Every repair is listed as a note.`,
	Run: func(ctx *pass.Context) error {
		notes := Apply(ctx.Model)
		for _, n := range notes {
			ctx.Note("%s", n)
		}
		ctx.Count("repair: int Clip rewritten", len(notes))
		if len(notes) > 0 {
			ctx.Changed()
		}
		return nil
	},
}

// Apply runs every rule on m (all graphs) and returns one note per repair.
func Apply(m *ir.Model) []string {
	opset := m.Opset("")
	var notes []string
	m.Graph.Walk(func(g *ir.Graph) error {
		for _, n := range g.NodesCopy() {
			if n.Graph() != g {
				continue
			}
			if note, ok := intClip(g, n, opset); ok {
				notes = append(notes, note)
			}
		}
		return nil
	})
	if len(notes) > 0 {
		// New nodes were appended; put them after what they read.
		m.Graph.TopoSort()
	}
	return notes
}

// exactLimit is the largest magnitude up to which every integer is a float32.
const exactLimit = 1 << 24

// intClip rewrites one integer Clip at opset < 12.
func intClip(g *ir.Graph, n *ir.Node, opset int64) (string, bool) {
	if n.OpType != "Clip" || (n.Domain != "" && n.Domain != "ai.onnx") || opset >= 12 || opset < 11 {
		// Before opset 11 the bounds are float attributes and the input must be float:
		// exporters never produced an integer Clip there.
		return "", false
	}
	x := n.Input(0)
	if x == nil {
		return "", false
	}
	dt := ElemType(x)
	if !isIntType(dt) {
		return "", false
	}
	// Bounds as float32 values: constants are converted, computed ones cast.
	exact := true
	bounds := make([]*ir.Value, 3)
	constVals := make([]*ir.Tensor, 3)
	for i := 1; i <= 2; i++ {
		b := n.Input(i)
		if b == nil {
			exact = false // an open side lets large values through
			continue
		}
		if t := b.Const; t != nil {
			ft, ok := floatScalar(t)
			if !ok {
				return "", false
			}
			f, _ := ft.Float32s()
			if math.Abs(float64(f[0])) > exactLimit {
				exact = false
			}
			constVals[i] = ft
			if t.DType == ir.Float {
				bounds[i] = b
			} else {
				bounds[i] = g.NewConst(b.Name+"_float", ft)
			}
			continue
		}
		exact = false
		if bt := ElemType(b); bt == ir.Float {
			bounds[i] = b
			continue
		} else if bt == ir.Undefined {
			return "", false
		}
		bounds[i] = castNode(g, b, ir.Float, b.Name+"_float")
	}
	out := n.Output(0)
	if out == nil {
		return "", false
	}
	name := nodeName(n)
	// All constant: compute the clamp as the repaired graph would.
	if x.Const != nil && (n.Input(1) == nil || constVals[1] != nil) && (n.Input(2) == nil || constVals[2] != nil) {
		if t, err := foldClip(x.Const, constVals[1], constVals[2], dt); err == nil {
			c := g.NewConst(out.Name+"_folded", t)
			out.ReplaceAllUsesWith(c)
			g.RemoveNode(n)
			return fmt.Sprintf("repair: %s: Clip on %s at opset %d computed (constant input)", name, dt, opset), true
		}
	}
	xf := castNode(g, x, ir.Float, x.Name+"_float")
	n.SetInput(0, xf)
	for i := 1; i <= 2; i++ {
		if n.Input(i) != nil {
			n.SetInput(i, bounds[i])
		}
	}
	// The Clip now yields float; a new value carries it to the Cast back.
	y := g.NewValue(out.Name+"_float", nil)
	back := &ir.Node{OpType: "Cast", Attrs: []*ir.Attr{ir.IntAttr("to", int64(dt))}}
	back.Name = out.Name + "_cast_back"
	// Move the Clip's output to the Cast: rebuild the Clip with output y.
	clip := &ir.Node{Name: n.Name, OpType: "Clip", Domain: n.Domain, Attrs: n.Attrs, Metadata: n.Metadata, DocString: n.DocString}
	ins := append([]*ir.Value(nil), n.Inputs()...)
	typ := out.Type
	g.RemoveNode(n) // out stays defined: it still has uses (or is a graph output)
	if _, err := g.AddNode(clip, ins, []*ir.Value{y}); err != nil {
		panic(err) // y is fresh
	}
	if out.Graph() == nil {
		// out had no uses and was not an output: nothing reads the Clip.
		out = g.NewValue(out.Name, typ)
	}
	if _, err := g.AddNode(back, []*ir.Value{y}, []*ir.Value{out}); err != nil {
		panic(err)
	}
	how := "exact for values below 2^24 in magnitude"
	if exact {
		how = "exact: both bounds are constants within 2^24"
	}
	return fmt.Sprintf("repair: %s: Clip on %s at opset %d (valid from 12) computed in float via Cast (%s)", name, dt, opset, how), true
}

func nodeName(n *ir.Node) string {
	if n.Name != "" {
		return n.Name
	}
	return n.String()
}

// castNode adds Cast(v, to) and returns its output.
func castNode(g *ir.Graph, v *ir.Value, to ir.DataType, base string) *ir.Value {
	c := g.Add("Cast", []*ir.Value{v}, 1, base, ir.IntAttr("to", int64(to)))
	c.Name = c.Output(0).Name // node names are a separate namespace from values
	if v.Type != nil && v.Type.Kind == ir.TensorType {
		t := v.Type.Clone()
		t.DType = to
		c.Output(0).Type = t
	}
	return c.Output(0)
}

// floatScalar converts a one-element numeric constant to a float32 scalar of the same
// rank; ok is false when that is impossible or inexact.
func floatScalar(t *ir.Tensor) (*ir.Tensor, bool) {
	if t.NumElements() != 1 {
		return nil, false
	}
	if t.DType == ir.Float {
		return t, true
	}
	f, err := t.Float64s()
	if err != nil || float64(float32(f[0])) != f[0] {
		return nil, false
	}
	return ir.FloatTensor(t.Dims, []float32{float32(f[0])}), true
}

// foldClip computes Cast(dt)(Clip(Cast(float)(x), lo, hi)) with the evaluator.
func foldClip(x, lo, hi *ir.Tensor, dt ir.DataType) (*ir.Tensor, error) {
	xf, err := eval.Cast(x, ir.Float)
	if err != nil {
		return nil, err
	}
	outs, err := eval.Eval(&ir.Node{OpType: "Clip"}, []*ir.Tensor{xf, lo, hi}, 11)
	if err != nil {
		return nil, err
	}
	return eval.Cast(outs[0], dt)
}

func isIntType(dt ir.DataType) bool {
	return dt.IsInt()
}

// ElemType returns the element type of v: its declared type, its constant's, or one
// derived from its producer for the ops exporters put in front of a Clip (casts, shape
// ops, arithmetic); Undefined when unknown. It needs no shape inference, which may
// refuse the invalid model this package repairs.
func ElemType(v *ir.Value) ir.DataType {
	return elemType(v, map[*ir.Value]ir.DataType{}, 0)
}

func elemType(v *ir.Value, memo map[*ir.Value]ir.DataType, depth int) ir.DataType {
	if v == nil || depth > 64 {
		return ir.Undefined
	}
	if v.Const != nil {
		return v.Const.DType
	}
	if v.Type != nil && v.Type.Kind == ir.TensorType && v.Type.DType != ir.Undefined {
		return v.Type.DType
	}
	if dt, ok := memo[v]; ok {
		return dt
	}
	memo[v] = ir.Undefined
	dt := ir.Undefined
	p, idx := v.Producer()
	if p != nil && (p.Domain == "" || p.Domain == "ai.onnx") {
		in := func(i int) ir.DataType { return elemType(p.Input(i), memo, depth+1) }
		switch p.OpType {
		case "Cast":
			dt = ir.DataType(p.AttrInt("to", 0))
		case "Shape", "Size", "NonZero", "ArgMax", "ArgMin":
			dt = ir.Int64
		case "Constant":
			if a := p.Attr("value"); a != nil && a.Tensor != nil {
				dt = a.Tensor.DType
			} else if p.Attr("value_float") != nil || p.Attr("value_floats") != nil {
				dt = ir.Float
			} else if p.Attr("value_int") != nil || p.Attr("value_ints") != nil {
				dt = ir.Int64
			}
		case "ConstantOfShape":
			dt = ir.Float
			if a := p.Attr("value"); a != nil && a.Tensor != nil {
				dt = a.Tensor.DType
			}
		case "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf":
			dt = ir.Bool
		case "Where":
			if dt = in(1); dt == ir.Undefined {
				dt = in(2)
			}
		case "TopK":
			if idx == 1 {
				dt = ir.Int64
			} else {
				dt = in(0)
			}
		case "Add", "Sub", "Mul", "Div", "Mod", "Min", "Max", "Sum", "Mean", "Concat":
			for i := range p.Inputs() {
				if dt = in(i); dt != ir.Undefined {
					break
				}
			}
		case "Identity", "Neg", "Abs", "Sign", "Ceil", "Floor", "Round", "Relu", "Sqrt", "Exp", "Log",
			"Squeeze", "Unsqueeze", "Reshape", "Flatten", "Slice", "Gather", "GatherElements",
			"GatherND", "Expand", "Tile", "Transpose", "Clip", "Pow", "CumSum", "Range",
			"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "MatMul", "Split",
			"Pad", "ScatterElements", "ScatterND", "Softmax", "Erf", "Tanh", "Sigmoid", "Dropout":
			if p.OpType != "Dropout" || idx == 0 {
				dt = in(0)
			} else {
				dt = ir.Bool
			}
		}
	}
	memo[v] = dt
	return dt
}
