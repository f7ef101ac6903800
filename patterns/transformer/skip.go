package transformer

import (
	"fmt"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// SkipFamily recognises the residual Add that feeds a LayerNormalization:
// LayerNormalization(input + skip) and LayerNormalization((input + bias) + skip), and
// ONNX Runtime's fused SkipLayerNormalization. It matches the LayerNormalization op, so
// LayerNormFamily must run first.
var SkipFamily = &Family{
	Kind: SkipLayerNorm,
	Doc: `SkipLayerNorm: y = LayerNorm(input + skip [+ bias]) over the last axis.

Rules: "skip/bias-add" is LayerNormalization(Add(Add(bias, input), skip)): the sublayer's
dense bias Add (torch writes Add(bias, MatMul(...)), bias first) folded in, bias a 1-D
constant of the hidden size; "skip/add" is LayerNormalization(Add(input, skip));
"skip/fused" is com.microsoft.SkipLayerNormalization. input and skip must both be
activations (not constants: adding a constant is a bias) of the same [batch, seq, hidden]
shape (a broadcasting Add is not a residual). The LayerNormalization must normalise the
last axis, and its Mean/InvStdDev outputs must be unused.

Roles: input (the sublayer output), skip (the residual), bias (optional), gamma, beta
(optional), output, sum (the residual sum, when something else reads it). Params:
epsilon.

Fuse: ORT gets com.microsoft.SkipLayerNormalization(input, skip, gamma, beta, bias) with
epsilon; a used sum becomes its 4th output, input_skip_bias_sum. With provider=cpu it gets
"skip/fused-cpu", LayerNormalization(Sum(input, skip)) with any bias Add kept: ONNX Runtime
1.30's CPU SkipLayerNormalization kernel takes 8× the time of Add + LayerNormalization (24
nodes on [1,128,768]: 11.5 ms against 1.3 ms), and its optimizer fuses an Add + LayerNorm
pair into it but not Sum. ONNX has no standard operator: the block stays as Add +
LayerNormalization, with the reason.`,
	Rules:    skipRules,
	Describe: describeSkip,
	Fuse:     fuseSkip,
}

var skipRules = makeSkipRules()

func makeSkipRules() []*patterns.Rule {
	Op, Var, Bind, Or, Const := patterns.Op, patterns.Var, patterns.Bind, patterns.Or, patterns.Const
	layerNorm := func(x patterns.Pattern) patterns.Pattern {
		return Or(
			Op("LayerNormalization", x, Var("gamma"), Var("beta")).As("ln"),
			Op("LayerNormalization", x, Var("gamma")).As("ln"))
	}
	// The bias Add must have no other reader, or it cannot be folded in; as a pattern
	// condition (not a refusal) so that Add(residual, Add(bias, sublayer)), ALBERT's
	// order, backtracks to the other operand when the residual is itself a bias Add.
	withBias := patterns.SingleUse(Op("Add", Bind("bias", Const()), Var("input")).As("bias_add"))
	return []*patterns.Rule{
		{
			Name:     "skip/bias-add",
			Pattern:  layerNorm(Op("Add", withBias, Var("skip")).As("add")),
			Check:    checkSkip,
			Internal: []string{"add"},
		},
		{
			Name:     "skip/add",
			Pattern:  layerNorm(Op("Add", Var("input"), Var("skip")).As("add")),
			Check:    checkSkip,
			Internal: []string{"add"},
		},
		{
			Name:    "skip/fused",
			Pattern: Op("SkipLayerNormalization").In("com.microsoft").As("fused"),
		},
		{
			// What provider=cpu emits: the residual as Sum, which ORT leaves alone.
			Name:     "skip/fused-cpu",
			Pattern:  layerNorm(Op("Sum", Var("input"), Var("skip")).As("add")),
			Check:    checkSkip,
			Internal: []string{"add"},
		},
	}
}

func checkSkip(m *patterns.Match) string {
	ln := m.N("ln")
	for i, name := range []string{"Mean", "InvStdDev"} {
		if o := ln.Output(i + 1); o != nil && (len(o.Uses()) > 0 || o.IsGraphOutput()) {
			return fmt.Sprintf("the LayerNormalization's %s output is used", name)
		}
	}
	in, skip := m.V("input"), m.V("skip")
	for _, r := range []struct {
		role string
		v    *ir.Value
	}{{"input", in}, {"skip", skip}} {
		if patterns.ConstOf(r.v) != nil {
			return r.role + " is a constant: a bias, not a residual"
		}
		if why := lnFloatInput(r.role, r.v); why != "" {
			return why
		}
		if r.v.Type.Rank() != 3 {
			return fmt.Sprintf("%s has rank %d, not [batch, seq, hidden]", r.role, r.v.Type.Rank())
		}
	}
	if !skipSameShape(in.Type.Shape, skip.Type.Shape) {
		return fmt.Sprintf("input %v and skip %v may differ: a broadcasting Add is not a residual", in.Type.Shape, skip.Type.Shape)
	}
	if in.Type.DType != skip.Type.DType {
		return fmt.Sprintf("input is %s and skip %s", in.Type.DType, skip.Type.DType)
	}
	if axis := ln.AttrInt("axis", -1); axis != -1 && axis != 2 {
		return fmt.Sprintf("normalised from axis %d, not the last", axis)
	}
	hidden, _ := lnLastDim(in)
	if why := lnParam("gamma", m.V("gamma"), hidden); why != "" {
		return why
	}
	for _, p := range []string{"beta", "bias"} {
		if m.Has(p) {
			if why := lnParam(p, m.V(p), hidden); why != "" {
				return why
			}
		}
	}
	return ""
}

// skipSameShape reports whether two shapes are provably equal: every dimension the same
// known size or the same symbol.
func skipSameShape(a, b ir.Shape) bool {
	if a == nil || len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		switch {
		case x.Param != "" || y.Param != "":
			if x.Param != y.Param {
				return false
			}
		case !x.Known || !y.Known || x.Value != y.Value:
			return false
		}
	}
	return true
}

// skipIsSublayer reports whether v looks like a sublayer's output: a MatMul or Gemm, or
// its bias Add.
func skipIsSublayer(v *ir.Value) bool {
	n, _ := v.Producer()
	if n == nil || n.Domain != "" {
		return false
	}
	switch n.OpType {
	case "MatMul", "Gemm":
		return true
	case "Add":
		for i := 0; i < 2; i++ {
			if patterns.ConstOf(n.Input(i)) != nil {
				p, _ := n.Input(1 - i).Producer()
				return p != nil && (p.OpType == "MatMul" || p.OpType == "Gemm")
			}
		}
	}
	return false
}

func describeSkip(m *patterns.Match, b *Block) {
	b.Roles["output"] = m.Root
	if m.Has("fused") {
		n := m.N("fused")
		b.Fused = true
		for i, r := range []string{"input", "skip", "gamma", "beta", "bias"} {
			if v := n.Input(i); v != nil {
				b.Roles[r] = v
			}
		}
		if s := n.Output(3); s != nil && (len(s.Uses()) > 0 || s.IsGraphOutput()) {
			b.Roles["sum"] = s
		}
		b.Params["epsilon"] = lnF32(n.AttrFloat("epsilon", 1e-5))
		return
	}
	in, skip := m.V("input"), m.V("skip")
	b.Fused = b.Variant == "skip/fused-cpu"
	if !m.Has("bias") && skipIsSublayer(skip) && !skipIsSublayer(in) {
		in, skip = skip, in // Add(residual, sublayer): name them by what they are
	}
	b.Roles["input"], b.Roles["skip"] = in, skip
	for _, r := range []string{"gamma", "beta", "bias"} {
		if m.Has(r) {
			b.Roles[r] = m.V(r)
		}
	}
	add := m.V("add")
	if add.IsGraphOutput() || len(add.Uses()) > 1 {
		b.Roles["sum"] = add
	}
	b.Params["epsilon"] = lnF32(m.N("ln").AttrFloat("epsilon", 1e-5))
}

func fuseSkip(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error) {
	switch env.Target {
	case ORT:
	case ONNX:
		return nil, "no standard SkipLayerNormalization operator; kept as Add + LayerNormalization", nil
	default:
		return nil, fmt.Sprintf("unknown target %q", env.Target), nil
	}
	b, why := lnRematch(b, skipRules, describeSkip)
	if why != "" {
		return nil, why, nil
	}
	if env.Provider == "cpu" {
		// ORT's optimizer turns Add + LayerNormalization into its CPU
		// SkipLayerNormalization, which is slower: spell the residual Sum, which it does
		// not match. The bias Add stays, for a quantized matmul's epilogue to take.
		add := b.Match.N("add")
		n := rw.Node("Sum", "", []*ir.Value{add.Input(0), add.Input(1)}, 1, add.Output(0).Name+"_sum")
		rw.Replace(add.Output(0), n.Output(0))
		return n, "", nil
	}
	inputs := []*ir.Value{b.Role("input"), b.Role("skip"), b.Role("gamma"), b.Role("beta"), b.Role("bias")}
	for len(inputs) > 3 && inputs[len(inputs)-1] == nil {
		inputs = inputs[:len(inputs)-1]
	}
	eps := ir.FloatAttr("epsilon", float32(b.Param("epsilon", 1e-5)))
	var n *ir.Node
	if sum := b.Role("sum"); sum == nil {
		n = lnNode(rw, b, "SkipLayerNormalization", "com.microsoft", inputs, eps)
	} else {
		// The residual sum is read elsewhere: it becomes output 3 (input_skip_bias_sum),
		// with the Mean and InvStdDev outputs omitted. The Rewriter makes all outputs, so
		// this node is added directly, once the block is accepted.
		g := rw.Graph()
		name, base := lnNames(b, "SkipLayerNormalization")
		out := g.NewValue(base, nil)
		s := g.NewValue(name+"_sum", nil)
		var err error
		n, err = g.AddNode(&ir.Node{OpType: "SkipLayerNormalization", Domain: "com.microsoft", Attrs: []*ir.Attr{eps}},
			inputs, []*ir.Value{out, nil, nil, s})
		if err != nil {
			return nil, "", err
		}
		n.Name = name
		rw.Replace(sum, s)
	}
	rw.Replace(b.Root, n.Output(0))
	EnsureOpset(env.Model, "com.microsoft", 1)
	return n, "", nil
}
