package qdq

import (
	"fmt"
	"sort"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/opsets"
	"github.com/qcc-dev/qcc/pass"
)

// raiseOpset13 raises the default-domain import of an opset-11 or -12 model to 13, the
// first with QuantizeLinear/DequantizeLinear's axis, rewriting every operator whose
// meaning changed on the way so that the model computes the same:
//
//   - Unsqueeze, Squeeze, ReduceSum: the axes attribute becomes a constant input;
//   - Split: the split attribute becomes a constant input;
//   - Dropout (from 11): the ratio attribute becomes a constant input;
//   - Softmax, LogSoftmax, Hardmax: before 13 they coerce the input to 2-D at axis
//     (default 1); on the last axis that is the same as opset 13's, otherwise the node
//     becomes Flatten(axis) → op(axis=-1) → Reshape to the input's shape.
//
// Below 11, opsets.Require first brings the model to 11 (Slice, TopK, Clip, Pad and the
// rest of its table), refusing what it cannot rewrite. The IR version is raised to 7
// (opset 13's) when lower.
func raiseOpset13(m *ir.Model) (string, error) {
	from := m.Opset("")
	if from >= 13 {
		return "", nil
	}
	if from < 11 {
		// The changes up to 11 (Slice, TopK, Clip, Pad, ...) are the generic upgrader's.
		if why := opsets.Require(m, 11, 11, "per-channel weight scales (QuantizeLinear/DequantizeLinear's axis, opset 13)", nil); why != "" {
			return "", fmt.Errorf("%s: export the model at opset 13", why)
		}
	}
	counts := map[string]int{}
	err := m.Graph.Walk(func(g *ir.Graph) error {
		for _, n := range g.NodesCopy() {
			if n.Domain != "" && n.Domain != "ai.onnx" {
				continue
			}
			what, err := convertNode(g, n, max(from, 11))
			if err != nil {
				return fmt.Errorf("raising opset %d to 13: %s: %w", from, n, err)
			}
			if what != "" {
				counts[what]++
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	m.SetOpset("", 13)
	if m.IRVersion < 7 {
		m.IRVersion = 7
	}
	var conv, kept []string
	for k, v := range counts {
		if s, ok := strings.CutSuffix(k, " kept"); ok {
			kept = append(kept, fmt.Sprintf("%s %d", s, v))
		} else {
			conv = append(conv, fmt.Sprintf("%s %d", k, v))
		}
	}
	sort.Strings(conv)
	sort.Strings(kept)
	note := fmt.Sprintf("opset %d → 13 for per-channel weight scales", from)
	if len(conv) > 0 {
		note += "; converted: " + strings.Join(conv, ", ")
	}
	if len(kept) > 0 {
		note += "; unchanged: " + strings.Join(kept, ", ")
	}
	return note, nil
}

// convertNode rewrites one node for opset 13 and says what it did ("" for nothing).
func convertNode(g *ir.Graph, n *ir.Node, from int64) (string, error) {
	base := n.Name
	if base == "" && n.Output(0) != nil {
		base = n.Output(0).Name
	}
	attrToInput := func(attr string, idx int, what string) string {
		a := n.Attr(attr)
		if a == nil {
			return ""
		}
		c := g.NewConst(base+"_"+attr, ir.Int64Tensor([]int64{int64(len(a.Ints))}, a.Ints))
		removeAttr(n, attr)
		for len(n.Inputs()) < idx {
			n.SetInput(len(n.Inputs()), nil)
		}
		n.SetInput(idx, c)
		return what
	}
	switch n.OpType {
	case "Unsqueeze", "Squeeze", "ReduceSum":
		return attrToInput("axes", 1, n.OpType+" axes→input"), nil
	case "Split":
		return attrToInput("split", 1, "Split split→input"), nil
	case "Dropout":
		if from >= 12 {
			return "", nil
		}
		a := n.Attr("ratio")
		if a == nil {
			return "", nil
		}
		c := g.NewConst(base+"_ratio", ir.FloatTensor(nil, []float32{a.Float}))
		removeAttr(n, "ratio")
		n.SetInput(1, c)
		return "Dropout ratio→input", nil
	case "Softmax", "LogSoftmax", "Hardmax":
		return convertSoftmax(g, n, base)
	}
	return "", nil
}

func removeAttr(n *ir.Node, name string) {
	kept := n.Attrs[:0]
	for _, a := range n.Attrs {
		if a.Name != name {
			kept = append(kept, a)
		}
	}
	n.Attrs = kept
}

// convertSoftmax keeps a softmax over the last axis as it is and rewrites any other as
// Flatten → op(axis=-1) → Reshape, which is what the opset-11 operator computes.
func convertSoftmax(g *ir.Graph, n *ir.Node, base string) (string, error) {
	x, y := n.Input(0), n.Output(0)
	axis := n.AttrInt("axis", 1)
	rank := -1
	if x != nil && x.Type != nil && x.Type.HasShape {
		rank = len(x.Type.Shape)
	}
	if rank >= 0 {
		a := axis
		if a < 0 {
			a += int64(rank)
		}
		if a == int64(rank-1) {
			if n.Attr("axis") == nil {
				n.SetAttr(ir.IntAttr("axis", axis)) // 1: opset 13's default would be -1
			}
			return n.OpType + " (last axis) kept", nil
		}
	}
	if y == nil {
		return "", fmt.Errorf("no output")
	}
	flat := g.Add("Flatten", []*ir.Value{x}, 1, base+"_flat", ir.IntAttr("axis", axis))
	flat.Name = base + "/Flatten"
	shape := g.Add("Shape", []*ir.Value{x}, 1, base+"_shape")
	shape.Name = base + "/Shape"
	op := &ir.Node{Name: n.Name, OpType: n.OpType, Attrs: []*ir.Attr{ir.IntAttr("axis", -1)}, Metadata: n.Metadata}
	t := g.NewValue(base+"_2d", nil)
	if _, err := g.AddNode(op, []*ir.Value{flat.Output(0)}, []*ir.Value{t}); err != nil {
		return "", err
	}
	g.RemoveNode(n)
	if _, err := g.AddNode(&ir.Node{Name: base + "/Reshape", OpType: "Reshape"}, []*ir.Value{t, shape.Output(0)}, []*ir.Value{y}); err != nil {
		return "", err
	}
	return n.OpType + " coerced to 2-D rewritten", nil
}

// raiseOpset19 raises the default-domain import to 19, the first with float8
// QuantizeLinear/DequantizeLinear (dtype=fp8): through raiseOpset13 from 11 or 12 (its
// Softmax rewrite covers any axis), then opsets.Require, which rewrites the operators
// whose meaning changed up to 19 (the reductions' axes, Split's num_outputs).
func raiseOpset19(ctx *pass.Context, m *ir.Model) error {
	from := m.Opset("")
	if from < 13 {
		if _, err := raiseOpset13(m); err != nil {
			return fmt.Errorf("dtype=fp8: %w", err)
		}
	}
	if why := opsets.Require(m, 19, 19, "FP8 (float8e4m3fn) QuantizeLinear/DequantizeLinear", nil); why != "" {
		return fmt.Errorf("dtype=fp8: %s", why)
	}
	ctx.Note("opset %d → 19 for FP8 (float8e4m3fn) Q/DQ", from)
	return nil
}

// quantizes reports whether any target is quantized.
func quantizes(ts []*target) bool {
	for _, t := range ts {
		if t.skip == "" {
			return true
		}
	}
	return false
}
