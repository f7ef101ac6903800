// Package opsets knows which default-domain operators changed meaning at which opset, so
// that a pass can raise a model's opset import when a new operator needs it, and only
// when no node of the model would then mean something else.
package opsets

import (
	"fmt"
	"maps"
	"slices"

	"github.com/qcc-dev/qcc/ir"
)

// Changes lists, per default-domain opset version, the operators whose meaning or
// signature changed at that version so that a node written for an earlier version does
// not mean the same (an attribute that became an input, a changed default, changed
// semantics). Changes that only add types, or add an attribute or optional input whose
// default keeps the old behaviour, are left out: such nodes read the same afterwards.
var Changes = map[int64][]string{
	// Before 7, element-wise ops broadcast by attribute; MinRaiseFrom keeps those out.
	9:  {"BatchNormalization", "Scan"},                   // spatial removed; Scan lost its batch axis
	10: {"Slice", "TopK"},                                // starts/ends/axes and k -> inputs
	11: {"Clip", "Pad", "Resize", "Scatter", "Upsample"}, // min/max, pads/value -> inputs; Resize gained roi and coordinate modes; Scatter and Upsample (deprecated at 10) have no later version
	12: {"Dropout"},                                      // ratio moved from an attribute to an input
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

// MinRaiseFrom is the lowest opset whose models are raised: the changes from 7 on are
// listed in Changes (and upgraded where Upgrades can); before 7, element-wise operators
// broadcast only when an attribute said so, which no later version can express node by node.
const MinRaiseFrom = 7

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
		return fmt.Sprintf("%s needs opset %d; the model is at %d, and raising from below %d is not attempted (element-wise ops broadcast by attribute before 7)", op, need, have, MinRaiseFrom)
	}
	// The bodies of model-local functions import the default domain themselves and are
	// not rewritten here; fold inlines them before any pass needs a raise.
	fops := m.FunctionOpsets("")
	for _, f := range slices.Sorted(maps.Keys(fops)) {
		if v := fops[f]; v < need {
			return fmt.Sprintf("%s needs opset %d; the model-local function %s imports opset %d and its body is not raised (inline the functions first: fold does)", op, need, f, v)
		}
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
					why = fmt.Sprintf("%s needs opset %d; raising from %d is unsafe: %s changed at opset %d (%v)", op, need, have, n.OpType, v, n)
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

// attrsToInputs moves attributes names[i] to input i+1 at opset at: the same computation,
// spelled the new way. A missing attribute leaves its input absent, which means the old
// default (every axis reduced, every unit axis squeezed, equal splits, no bound). Ints
// become int64 tensors; a float becomes a scalar of the data's type when typed (Clip's
// bounds, Pad's value), else a float32 scalar (Dropout's ratio).
func attrsToInputs(at int64, typed bool, names ...string) Upgrade {
	return Upgrade{
		At: at,
		Can: func(n *ir.Node) bool {
			if len(n.Inputs()) != 1 || n.Graph() == nil {
				return false
			}
			if !typed {
				return true
			}
			t := n.Input(0).Type
			for _, name := range names {
				if a := n.Attr(name); a != nil && a.Type == ir.AttrFloat && (t == nil || t.DType != ir.Float) {
					return false // only float32 data gets a float32 bound
				}
			}
			return true
		},
		Do: func(n *ir.Node) {
			ins := []*ir.Value{n.Input(0)}
			for _, name := range names {
				a := n.Attr(name)
				if a == nil {
					ins = append(ins, nil)
					continue
				}
				var t *ir.Tensor
				switch a.Type {
				case ir.AttrFloat:
					t = ir.FloatTensor(nil, []float32{a.Float})
				case ir.AttrInt:
					t = ir.Int64Tensor([]int64{1}, []int64{a.Int})
				default:
					t = ir.Int64Tensor([]int64{int64(len(a.Ints))}, a.Ints)
				}
				ins = append(ins, n.Graph().NewConst(n.Name+"_"+name, t))
			}
			for len(ins) > 1 && ins[len(ins)-1] == nil {
				ins = ins[:len(ins)-1]
			}
			kept := n.Attrs[:0]
			for _, x := range n.Attrs {
				if !slices.Contains(names, x.Name) {
					kept = append(kept, x)
				}
			}
			n.Attrs = kept
			n.SetInputs(ins)
		},
	}
}

// axesToInput is the reductions' change at 18.
var axesToInput = attrsToInputs(18, false, "axes")

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

// spatialBatchNorm: BatchNormalization-9 always normalises per channel, which is the old
// spatial=1 (the default); spatial=0 has no spelling from 9 on.
var spatialBatchNorm = Upgrade{
	At:  9,
	Can: func(n *ir.Node) bool { return n.AttrInt("spatial", 1) == 1 },
	Do: func(n *ir.Node) {
		kept := n.Attrs[:0]
		for _, x := range n.Attrs {
			if x.Name != "spatial" {
				kept = append(kept, x)
			}
		}
		n.Attrs = kept
	},
}

// inferenceBatchNorm: 14 added training_mode (default off) and 15 retyped the training
// outputs; a node with the one inference output reads the same across both.
func inferenceBatchNorm(at int64) Upgrade {
	return Upgrade{At: at, Can: func(n *ir.Node) bool { return len(n.Outputs()) == 1 }, Do: func(*ir.Node) {}}
}

// perChannelGroupNorm: GroupNormalization-18 takes a scale and a bias per group, 21 one
// per channel (channel c in group c / (C/G)); constant float scales and biases of a
// known channel count are repeated over each group's channels. stash_type, new at 21,
// defaults to computing in float32, which is what 18 does for float32 data.
var perChannelGroupNorm = Upgrade{
	At: 21,
	Can: func(n *ir.Node) bool {
		_, ok := groupNormChannels(n)
		return ok
	},
	Do: func(n *ir.Node) {
		c, _ := groupNormChannels(n)
		for i := 1; i <= 2; i++ {
			per, _ := n.Input(i).Const.Float32s()
			k := c / int64(len(per))
			out := make([]float32, c)
			for j := range out {
				out[j] = per[int64(j)/k]
			}
			n.SetInput(i, n.Graph().NewConst(n.Name+"_"+[]string{"", "scale", "bias"}[i], ir.FloatTensor([]int64{c}, out)))
		}
	},
}

// groupNormChannels is the channel count of a GroupNormalization-18 whose float32 scale
// and bias are constants of num_groups elements and whose channel count (input axis 1)
// is known and a multiple of num_groups.
func groupNormChannels(n *ir.Node) (int64, bool) {
	g := n.AttrInt("num_groups", 0)
	t := n.Input(0).Type
	if g <= 0 || len(n.Inputs()) != 3 || n.Graph() == nil || t.Rank() < 2 || !t.Shape[1].Known {
		return 0, false
	}
	for _, v := range n.Inputs()[1:] {
		if v == nil || v.Const == nil || v.Const.DType != ir.Float || v.Const.NumElements() != g {
			return 0, false
		}
	}
	c := t.Shape[1].Value
	return c, c > 0 && c%g == 0
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
	"BatchNormalization": {spatialBatchNorm, inferenceBatchNorm(14), inferenceBatchNorm(15)},
	"Slice":              {attrsToInputs(10, false, "starts", "ends", "axes")},
	"TopK":               {attrsToInputs(10, false, "k")},
	"Clip":               {attrsToInputs(11, true, "min", "max")},
	"Pad":                {attrsToInputs(11, true, "pads", "value")},
	"Dropout":            {attrsToInputs(12, false, "ratio")},
	"Unsqueeze":          {attrsToInputs(13, false, "axes")}, "Squeeze": {attrsToInputs(13, false, "axes")},
	"ReduceSum": {attrsToInputs(13, false, "axes")},
	"Split":     {attrsToInputs(13, false, "split"), splitOutputs},
	"Softmax":   {lastAxisSoftmax}, "LogSoftmax": {lastAxisSoftmax}, "Hardmax": {lastAxisSoftmax},
	"ReduceMean": {axesToInput}, "ReduceMax": {axesToInput}, "ReduceMin": {axesToInput},
	"ReduceProd": {axesToInput}, "ReduceSumSquare": {axesToInput}, "ReduceL1": {axesToInput},
	"ReduceL2": {axesToInput}, "ReduceLogSum": {axesToInput}, "ReduceLogSumExp": {axesToInput},
	"GroupNormalization": {perChannelGroupNorm},
}
