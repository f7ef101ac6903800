// Package opsets knows which default-domain operators changed meaning at which opset, so
// that a pass can raise a model's opset import when a new operator needs it, and only
// when no node of the model would then mean something else.
package opsets

import (
	"fmt"

	"github.com/qcc-dev/qcc/ir"
)

// Changes lists, per default-domain opset version, the operators whose meaning or
// signature changed at that version so that a node written for an earlier version does
// not mean the same (an attribute that became an input, a changed default, changed
// semantics). Changes that only add types, or add an attribute or optional input whose
// default keeps the old behaviour, are left out: such nodes read the same afterwards.
var Changes = map[int64][]string{
	12: {"Dropout"}, // ratio moved from an attribute to an input
	13: {"Unsqueeze", "Squeeze", "ReduceSum", "Split", // axes/split attribute -> input
		"Softmax", "LogSoftmax", "Hardmax"}, // no more coercion to 2-D
	14: {"BatchNormalization"}, // training_mode; outputs restricted
	15: {"BatchNormalization"}, // training outputs' types
	16: {"RoiAlign"},           // coordinate_transformation_mode default
	17: {},                     // only new operators
	18: {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", // axes -> input
		"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp"},
	19: {},
	20: {"DFT", "GridSample"},  // DFT axis -> input; GridSample mode names
	21: {"GroupNormalization"}, // scale and bias per channel instead of per group
	22: {},
	23: {},
}

// MinRaiseFrom is the lowest opset whose models are raised: below 13, the axes of
// Unsqueeze/Squeeze/ReduceSum and Split's sizes are attributes that moved to inputs, and
// rewriting them is not this family's business.
const MinRaiseFrom = 13

// MinIRVersion is the IR version each opset came with (ONNX releases).
var MinIRVersion = map[int64]int64{17: 8, 18: 8, 19: 9, 20: 9, 21: 10, 22: 10, 23: 11}

// Require makes the default-domain opset at least need for op, raising the import
// when allow allows it and it is safe; it returns why not otherwise. The nodes
// of the block being replaced (skip) do not count against the raise.
func Require(m *ir.Model, allow, need int64, op string, skip []*ir.Node) string {
	have := m.Opset("")
	if have >= need {
		return ""
	}
	switch {
	case allow == 0:
		return fmt.Sprintf("%s needs opset %d; the model imports %d and raising the opset is off", op, need, have)
	case allow < need:
		return fmt.Sprintf("%s needs opset %d; the model imports %d and raising is allowed only to %d", op, need, have, allow)
	}
	if have < MinRaiseFrom {
		return fmt.Sprintf("%s needs opset %d; the model is at %d, and raising from below %d (Unsqueeze/Squeeze/ReduceSum/Split changed at 13) is not attempted", op, need, have, MinRaiseFrom)
	}
	changed := map[string]int64{}
	for v := have + 1; v <= need; v++ {
		for _, o := range Changes[v] {
			if _, seen := changed[o]; !seen {
				changed[o] = v
			}
		}
	}
	ignore := map[*ir.Node]bool{}
	for _, n := range skip {
		ignore[n] = true
	}
	var blocker string
	var upgrade []*ir.Node
	_ = m.Graph.Walk(func(g *ir.Graph) error {
		for _, n := range g.Nodes() {
			if blocker != "" || ignore[n] || (n.Domain != "" && n.Domain != "ai.onnx") {
				continue
			}
			if v, ok := changed[n.OpType]; ok {
				if up := Upgrades[n.OpType]; up.At == v && up.Can(n) {
					upgrade = append(upgrade, n)
					continue
				}
				blocker = fmt.Sprintf("%s needs opset %d; raising from %d is unsafe: %s changed at opset %d (%s)", op, need, have, n.OpType, v, n.Name)
			}
		}
		return nil
	})
	if blocker != "" {
		return blocker
	}
	for _, n := range upgrade {
		Upgrades[n.OpType].Do(n)
	}
	m.SetOpset("", need)
	if irv := MinIRVersion[need]; m.IRVersion < irv {
		m.IRVersion = irv
	}
	return ""
}

// An Upgrade rewrites a node written for an opset before At into the same computation
// at At, so that raising the import past a change does not change its meaning.
type Upgrade struct {
	At  int64
	Can func(n *ir.Node) bool
	Do  func(n *ir.Node)
}

// axesToInput moves an axes attribute to the second input (the reductions at 18): the
// same reduction, spelled the new way. A node without the attribute reduces every axis
// both before and after.
var axesToInput = Upgrade{
	At:  18,
	Can: func(n *ir.Node) bool { return len(n.Inputs()) == 1 && n.Graph() != nil },
	Do: func(n *ir.Node) {
		a := n.Attr("axes")
		if a == nil {
			return
		}
		kept := n.Attrs[:0]
		for _, x := range n.Attrs {
			if x.Name != "axes" {
				kept = append(kept, x)
			}
		}
		n.Attrs = kept
		axes := n.Graph().NewConst(n.Name+"_axes", ir.Int64Tensor([]int64{int64(len(a.Ints))}, a.Ints))
		n.SetInputs(append(append([]*ir.Value(nil), n.Inputs()...), axes))
	},
}

// Upgrades are the changes Require rewrites instead of refusing the raise.
var Upgrades = map[string]Upgrade{
	"ReduceMean": axesToInput, "ReduceMax": axesToInput, "ReduceMin": axesToInput,
	"ReduceProd": axesToInput, "ReduceSumSquare": axesToInput, "ReduceL1": axesToInput,
	"ReduceL2": axesToInput, "ReduceLogSum": axesToInput, "ReduceLogSumExp": axesToInput,
}
