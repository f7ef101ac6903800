package opsets

import (
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

// A raise past opset 18 moves a reduction's axes attribute to its input instead of
// refusing; a node whose change has no upgrade still blocks the raise.
func TestRequireUpgradesReductions(t *testing.T) {
	m := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 7}
	m.SetOpset("", 13)
	x, _ := m.Graph.AddInput("x", ir.TensorOf(ir.Float, ir.Sym("b"), ir.D(4)))
	n := m.Graph.Add("ReduceMean", []*ir.Value{x}, 1, "mean", ir.IntsAttr("axes", -1))
	if why := Require(m, 23, 23, "Attention", nil); why != "" {
		t.Fatalf("raise refused: %s", why)
	}
	if m.Opset("") != 23 || n.Attr("axes") != nil || len(n.Inputs()) != 2 {
		t.Fatalf("opset %d, axes attr %v, inputs %d", m.Opset(""), n.Attr("axes"), len(n.Inputs()))
	}
	if got, _ := n.Input(1).Const.Int64s(); len(got) != 1 || got[0] != -1 {
		t.Fatalf("axes input %v", got)
	}
	m2 := &ir.Model{Graph: ir.NewGraph("g"), IRVersion: 7}
	m2.SetOpset("", 13)
	y, _ := m2.Graph.AddInput("y", ir.TensorOf(ir.Float, ir.D(4)))
	m2.Graph.Add("GroupNormalization", []*ir.Value{y}, 1, "gn")
	if why := Require(m2, 23, 23, "Attention", nil); why == "" || m2.Opset("") != 13 {
		t.Fatalf("GroupNormalization (changed at 21, no upgrade) did not block the raise")
	}
}
