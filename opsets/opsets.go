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
		"Softmax", "LogSoftmax", "Hardmax"}, // no more coercion to 2-D; axis default 1 -> -1
	14: {"BatchNormalization"}, // training_mode; outputs restricted
	15: {"BatchNormalization"}, // training outputs' types
	16: {"RoiAlign"},           // coordinate_transformation_mode default
	17: {},                     // only new operators
	18: {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", // axes -> input
		"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
		"Split"}, // without sizes, needs num_outputs
	19: {},
	20: {"DFT", "GridSample"},  // DFT axis -> input; GridSample mode names
	21: {"GroupNormalization"}, // scale and bias per channel instead of per group
	22: {},
	23: {},
}

// MinRaiseFrom is the lowest opset whose models are raised: the changes from 11 on are
// listed in Changes (and upgraded where Upgrades can); before 11, Clip, Pad, Resize,
// TopK and others took attributes that became inputs, which is not listed.
const MinRaiseFrom = 11

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
		return fmt.Sprintf("%s needs opset %d; the model is at %d, and raising from below %d (Clip, Pad, Resize, TopK changed at 11) is not attempted", op, need, have, MinRaiseFrom)
	}
	// changed lists, per op, the versions in (have, need] at which it changed.
	changed := map[string][]int64{}
	for v := have + 1; v <= need; v++ {
		for _, o := range Changes[v] {
			changed[o] = append(changed[o], v)
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
			if blocker != "" || (n.Domain != "" && n.Domain != "ai.onnx") {
				continue
			}
			vs, ok := changed[n.OpType]
			if !ok {
				continue
			}
			why := ""
			for _, v := range vs {
				if up, ok := upgradeAt(n.OpType, v); !ok || !up.Can(n) {
					why = fmt.Sprintf("%s needs opset %d; raising from %d is unsafe: %s changed at opset %d (%s)", op, need, have, n.OpType, v, n.Name)
					break
				}
			}
			// A skipped node is upgraded too when it can be: it may outlive the
			// rewrite when another reader shares it (a norm's mean of squares).
			switch {
			case why == "":
				upgrade = append(upgrade, n)
			case !ignore[n]:
				blocker = why
			}
		}
		return nil
	})
	if blocker != "" {
		return blocker
	}
	for _, n := range upgrade {
		for _, v := range changed[n.OpType] {
			up, _ := upgradeAt(n.OpType, v)
			up.Do(n)
		}
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

// attrToInput moves attribute name (ints, or one float) to input index in (filling
// absent optional inputs before it) at opset at: the same computation, spelled the new
// way. A node without the attribute means the same before and after (every axis
// reduced, every unit axis squeezed, equal splits, the default ratio).
func attrToInput(at int64, name string, in int) Upgrade {
	return Upgrade{
		At:  at,
		Can: func(n *ir.Node) bool { return len(n.Inputs()) <= in && n.Graph() != nil },
		Do: func(n *ir.Node) {
			a := n.Attr(name)
			if a == nil {
				return
			}
			kept := n.Attrs[:0]
			for _, x := range n.Attrs {
				if x.Name != name {
					kept = append(kept, x)
				}
			}
			n.Attrs = kept
			var t *ir.Tensor
			if a.Type == ir.AttrFloat {
				t = ir.FloatTensor(nil, []float32{a.Float})
			} else {
				t = ir.Int64Tensor([]int64{int64(len(a.Ints))}, a.Ints)
			}
			ins := append([]*ir.Value(nil), n.Inputs()...)
			for len(ins) < in {
				ins = append(ins, nil)
			}
			n.SetInputs(append(ins, n.Graph().NewConst(n.Name+"_"+name, t)))
		},
	}
}

// axesToInput is the reductions' change at 18.
var axesToInput = attrToInput(18, "axes", 1)

// lastAxisSoftmax: before 13 the softmaxes coerced their input to 2-D at axis (default
// 1), normalising over every axis from there on; on the last axis that is the 13 meaning
// too, written with the axis explicit since the default became -1.
var lastAxisSoftmax = Upgrade{
	At: 13,
	Can: func(n *ir.Node) bool {
		r := n.Input(0).Type.Rank()
		a := n.AttrInt("axis", 1)
		return r > 0 && (a == int64(r-1) || a == -1)
	},
	Do: func(n *ir.Node) { n.SetAttr(ir.IntAttr("axis", -1)) },
}

// splitOutputs: from 18, a Split without sizes says how many parts in num_outputs.
var splitOutputs = Upgrade{
	At:  18,
	Can: func(n *ir.Node) bool { return true },
	Do: func(n *ir.Node) {
		if (len(n.Inputs()) < 2 || n.Input(1) == nil) && n.Attr("split") == nil && n.Attr("num_outputs") == nil {
			n.SetAttr(ir.IntAttr("num_outputs", int64(len(n.Outputs()))))
		}
	},
}

// upgradeAt is op's upgrade across its change at opset v.
func upgradeAt(op string, v int64) (Upgrade, bool) {
	for _, up := range Upgrades[op] {
		if up.At == v {
			return up, true
		}
	}
	return Upgrade{}, false
}

// Upgrades are the changes Require rewrites instead of refusing the raise, per op in
// opset order. The Can of a later change accepts what the earlier ones make.
var Upgrades = map[string][]Upgrade{
	"Dropout":   {attrToInput(12, "ratio", 1)},
	"Unsqueeze": {attrToInput(13, "axes", 1)}, "Squeeze": {attrToInput(13, "axes", 1)},
	"ReduceSum": {attrToInput(13, "axes", 1)},
	"Split":     {attrToInput(13, "split", 1), splitOutputs},
	"Softmax":   {lastAxisSoftmax}, "LogSoftmax": {lastAxisSoftmax}, "Hardmax": {lastAxisSoftmax},
	"ReduceMean": {axesToInput}, "ReduceMax": {axesToInput}, "ReduceMin": {axesToInput},
	"ReduceProd": {axesToInput}, "ReduceSumSquare": {axesToInput}, "ReduceL1": {axesToInput},
	"ReduceL2": {axesToInput}, "ReduceLogSum": {axesToInput}, "ReduceLogSumExp": {axesToInput},
}
