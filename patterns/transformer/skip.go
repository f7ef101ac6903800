package transformer

import (
	"fmt"
	"strings"

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

In a pre-norm model (GPT-2, ViT) the residual sum also feeds the next residual: the
norm that reads it is the next block's, and the sum keeps its other readers (role sum).
A constant per-channel Mul on the sublayer output before the residual (CaiT's and DeiT
III's layer scale) is recognised: variant "+layerscale", role layer_scale.

Roles: input (the sublayer output), skip (the residual), bias (optional), gamma, beta
(optional), output, sum (the residual sum, when something else reads it), layer_scale.
Params: epsilon.

Fuse: ORT gets com.microsoft.SkipLayerNormalization(input, skip, gamma, beta, bias) with
epsilon; a used sum becomes its 4th output, input_skip_bias_sum. A layer scale s on
h·W (+ b), with W and b float constants read nowhere else, is folded into the projection,
h·(W·diag(s)) with bias b ⊙ s, which the fused op then takes; otherwise (and with
provider=cpu) it stays a Mul in front: the fused ops have no input scale. With provider=cpu it gets
"skip/fused-cpu", LayerNormalization(Sum(input, skip)) with any bias Add kept: ONNX Runtime
1.30's CPU SkipLayerNormalization kernel takes 8× the time of Add + LayerNormalization (24
nodes on [1,128,768]: 11.5 ms against 1.3 ms), and its optimizer fuses an Add + LayerNorm
pair into it but not Sum. ONNX has no standard operator: the block stays as Add +
LayerNormalization, with the reason.`,
	Rules:    skipRules,
	Describe: describeSkip,
	Fuse:     fuseSkip,
}

var skipRules = makeSkipRules("skip", func(x patterns.Pattern) patterns.Pattern {
	Op, Var, Or := patterns.Op, patterns.Var, patterns.Or
	return Or(
		Op("LayerNormalization", x, Var("gamma"), Var("beta")).As("ln"),
		Op("LayerNormalization", x, Var("gamma")).As("ln"))
}, patterns.Op("SkipLayerNormalization").In("com.microsoft").As("fused"))

// makeSkipRules writes the residual rules of one normalisation: norm(x) is its fused op
// of x, fused the fused skip op.
func makeSkipRules(family string, norm func(x patterns.Pattern) patterns.Pattern, fused patterns.Pattern) []*patterns.Rule {
	Op, Var, Bind, Const := patterns.Op, patterns.Var, patterns.Bind, patterns.Const
	// The bias Add must have no other reader, or it cannot be folded in; as a pattern
	// condition (not a refusal) so that Add(residual, Add(bias, sublayer)), ALBERT's
	// order, backtracks to the other operand when the residual is itself a bias Add.
	withBias := patterns.SingleUse(Op("Add", Bind("bias", Const()), Var("input")).As("bias_add"))
	return []*patterns.Rule{
		{
			Name:     family + "/bias-add",
			Pattern:  norm(Op("Add", withBias, Var("skip")).As("add")),
			Check:    checkSkip,
			Internal: []string{"add"},
		},
		{
			Name:     family + "/add",
			Pattern:  norm(Op("Add", Var("input"), Var("skip")).As("add")),
			Check:    checkSkip,
			Internal: []string{"add"},
		},
		{
			Name:    family + "/fused",
			Pattern: fused,
		},
		{
			// What provider=cpu emits: the residual as Sum, which ORT leaves alone.
			Name:     family + "/fused-cpu",
			Pattern:  norm(Op("Sum", Var("input"), Var("skip")).As("add")),
			Check:    checkSkip,
			Internal: []string{"add"},
		},
	}
}

func checkSkip(m *patterns.Match) string {
	ln := m.N("ln")
	for i, o := range ln.Outputs()[1:] {
		if o != nil && (len(o.Uses()) > 0 || o.IsGraphOutput()) {
			name := fmt.Sprintf("output %d", i+1)
			if names := skipStatOutputs[ln.OpType]; i < len(names) {
				name = names[i]
			}
			return fmt.Sprintf("the %s's %s output is used", ln.OpType, name)
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
		// ONNX Runtime's skip kernels take [batch, seq, hidden] or the 2-D token view
		// [tokens, hidden] (a model computed on [B·S, hidden], DistilBERT with Gemm).
		if rank := r.v.Type.Rank(); rank != 3 && rank != 2 {
			return fmt.Sprintf("%s has rank %d, not [batch, seq, hidden] or [tokens, hidden]", r.role, rank)
		}
	}
	if !ir.SameShape(in.Type.Shape, skip.Type.Shape) {
		return fmt.Sprintf("input %v and skip %v may differ: a broadcasting Add is not a residual", in.Type.Shape, skip.Type.Shape)
	}
	if in.Type.DType != skip.Type.DType {
		return fmt.Sprintf("input is %s and skip %s", in.Type.DType, skip.Type.DType)
	}
	if axis := ln.AttrInt("axis", -1); axis != -1 && axis != int64(in.Type.Rank()-1) {
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

// skipStatOutputs names the statistics outputs of the normalisations a skip block ends in.
var skipStatOutputs = map[string][]string{
	"LayerNormalization":           {"Mean", "InvStdDev"},
	"SimplifiedLayerNormalization": {"inv_std_var"},
	"RMSNormalization":             {},
}

// skipIsSublayer reports whether v looks like a sublayer's output: a MatMul or Gemm, its
// bias Add, or either scaled per channel (a layer scale).
func skipIsSublayer(v *ir.Value) bool {
	if _, scaled := skipLayerScale(v); scaled != nil {
		v = scaled
	}
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

// skipLayerScale recognises v = Mul(v', s) with s a constant per-channel vector (CaiT's
// and ConvNeXt's layer scale on a sublayer before the residual): it returns s and v'.
func skipLayerScale(v *ir.Value) (scale, scaled *ir.Value) {
	n, _ := v.Producer()
	if n == nil || n.OpType != "Mul" || n.Domain != "" || len(n.Inputs()) != 2 {
		return nil, nil
	}
	hidden, ok := lnLastDim(v)
	if !ok || hidden < 2 {
		return nil, nil
	}
	for i := 0; i < 2; i++ {
		t := patterns.ConstOf(n.Input(i))
		if t == nil || !t.DType.IsFloat() || len(t.Dims) == 0 || t.Dims[len(t.Dims)-1] != hidden {
			continue
		}
		perChannel := true
		for _, d := range t.Dims[:len(t.Dims)-1] {
			perChannel = perChannel && d == 1
		}
		if perChannel && patterns.ConstOf(n.Input(1-i)) == nil {
			return n.Input(i), n.Input(1 - i)
		}
	}
	return nil, nil
}

// skipFoldLayerScale folds a layer scale into the sublayer's last projection, which can
// express it: s ⊙ (h·W + b) = h·(W·diag(s)) + b ⊙ s. It applies when the scaled value is
// MatMul(h, W) or Add(b, MatMul(h, W)) with float constants read by nothing else; the
// fused op then takes the new MatMul as input and b ⊙ s as its bias. It returns nil when
// the scale stays a Mul in front of the fused op.
func skipFoldLayerScale(rw *patterns.Rewriter, b *Block) (in, bias *ir.Value) {
	if b.Role(RoleLayerScale) == nil || b.Role(RoleBias) != nil {
		return nil, nil
	}
	scale, scaled := skipLayerScale(b.Role(RoleInput))
	if scale == nil || !skipOnlyReader(b.Role(RoleInput)) || !skipOnlyReader(scaled) {
		return nil, nil
	}
	mm, _ := scaled.Producer()
	var bt *ir.Tensor
	if mm.OpType == "Add" && mm.Domain == "" {
		for i := 0; i < 2; i++ {
			if t := patterns.ConstOf(mm.Input(i)); t != nil {
				bt = t
				mm, _ = mm.Input(1 - i).Producer()
				break
			}
		}
		if bt == nil || mm == nil || !skipOnlyReader(mm.Output(0)) {
			return nil, nil
		}
	}
	if mm == nil || mm.OpType != "MatMul" || mm.Domain != "" {
		return nil, nil
	}
	wt, st := patterns.ConstOf(mm.Input(1)), patterns.ConstOf(scale)
	if wt == nil || wt.DType != ir.Float || len(wt.Dims) != 2 || st.DType != ir.Float {
		return nil, nil
	}
	n := wt.Dims[1]
	w, err1 := wt.Float32s()
	sv, err2 := st.Float32s()
	if err1 != nil || err2 != nil || int64(len(sv)) != n {
		return nil, nil
	}
	var bv []float32
	if bt != nil {
		var err error
		if bv, err = bt.Float32s(); err != nil || int64(len(bv)) != n || len(bt.Dims) != 1 {
			return nil, nil
		}
	}
	for i := range w {
		w[i] *= sv[int64(i)%n]
	}
	name := mm.Output(0).Name
	nm := rw.Node("MatMul", "", []*ir.Value{mm.Input(0), rw.Const(name+"_scaled_weight", ir.FloatTensor(wt.Dims, w))}, 1, name+"_scaled")
	if mm.Name != "" {
		nm.Name = mm.Name + "_scaled"
	}
	// The same product: what qdq noted on it (left float, and why) still holds.
	nm.Metadata = append([]ir.KV(nil), mm.Metadata...)
	if bt == nil {
		return nm.Output(0), nil
	}
	for i := range bv {
		bv[i] *= sv[i]
	}
	return nm.Output(0), rw.Const(name+"_scaled_bias", ir.FloatTensor([]int64{n}, bv))
}

// skipOnlyReader reports whether v has one reader and is not a graph output.
func skipOnlyReader(v *ir.Value) bool { return len(v.Uses()) == 1 && !v.IsGraphOutput() }

// skipFusedInputs are the input roles of the fused skip operators, in order.
var skipFusedInputs = map[string][]string{
	"SkipLayerNormalization":           {RoleInput, RoleSkip, RoleGamma, RoleBeta, RoleBias},
	"SkipSimplifiedLayerNormalization": {RoleInput, RoleSkip, RoleGamma, RoleBias},
}

func describeSkip(m *patterns.Match, b *Block) {
	b.Roles[RoleOutput] = m.Root
	if m.Has("fused") {
		n := m.N("fused")
		b.Fused = true
		for i, r := range skipFusedInputs[n.OpType] {
			if v := n.Input(i); v != nil {
				b.Roles[r] = v
			}
		}
		if s := n.Output(3); s != nil && (len(s.Uses()) > 0 || s.IsGraphOutput()) {
			b.Roles[RoleSum] = s
		}
		b.Params["epsilon"] = lnF32(n.AttrFloat("epsilon", 1e-5))
		skipDescribeScale(b)
		return
	}
	in, skip := m.V("input"), m.V("skip")
	b.Fused = strings.HasSuffix(b.Variant, "/fused-cpu")
	if !m.Has("bias") && skipIsSublayer(skip) && !skipIsSublayer(in) {
		in, skip = skip, in // Add(residual, sublayer): name them by what they are
	}
	b.Roles[RoleInput], b.Roles[RoleSkip] = in, skip
	for _, r := range []string{RoleGamma, RoleBeta, RoleBias} {
		if m.Has(r) {
			b.Roles[r] = m.V(r)
		}
	}
	add := m.V("add")
	if add.IsGraphOutput() || len(add.Uses()) > 1 {
		b.Roles[RoleSum] = add
	}
	b.Params["epsilon"] = lnF32(m.N("ln").AttrFloat("epsilon", 1e-5))
	skipDescribeScale(b)
}

// skipDescribeScale records a layer scale on the block's input. It stays a Mul in front
// of the fused operator, which has no per-channel scale for its input.
func skipDescribeScale(b *Block) {
	if s, _ := skipLayerScale(b.Role(RoleInput)); s != nil {
		b.Roles[RoleLayerScale] = s
		b.Variant += "+layerscale"
	}
}

func fuseSkip(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error) {
	return fuseSkipAs(rw, b, env, "SkipLayerNormalization", "Add + LayerNormalization")
}

// fuseSkipAs rewrites a skip block into the fused op (com.microsoft), or for
// provider=cpu spells the residual Sum.
func fuseSkipAs(rw *patterns.Rewriter, b *Block, env *Env, op, kept string) (*ir.Node, string, error) {
	switch env.Target {
	case ORT:
	case ONNX:
		return nil, fmt.Sprintf("no standard %s operator; kept as %s", op, kept), nil
	default:
		return nil, fmt.Sprintf("unknown target %q", env.Target), nil
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
	roles := map[string]*ir.Value{}
	for r, v := range b.Roles {
		roles[r] = v
	}
	if in, bias := skipFoldLayerScale(rw, b); in != nil {
		roles[RoleInput], roles[RoleBias] = in, bias
	}
	var inputs []*ir.Value
	for _, r := range skipFusedInputs[op] {
		inputs = append(inputs, roles[r])
	}
	for len(inputs) > 3 && inputs[len(inputs)-1] == nil {
		inputs = inputs[:len(inputs)-1]
	}
	eps := ir.FloatAttr("epsilon", float32(b.Param("epsilon", 1e-5)))
	var n *ir.Node
	if sum := b.Role(RoleSum); sum == nil {
		n = lnNode(rw, b, op, "com.microsoft", inputs, eps)
	} else {
		// The residual sum is read elsewhere (a pre-norm block's sum is also the next
		// residual): it becomes output 3 (input_skip_bias_sum), with the statistics
		// outputs omitted. The Rewriter makes all outputs, so this node is added
		// directly, once the block is accepted.
		g := rw.Graph()
		name, base := lnNames(b, op)
		out := g.NewValue(base, nil)
		s := g.NewValue(name+"_sum", nil)
		var err error
		n, err = g.AddNode(&ir.Node{OpType: op, Domain: "com.microsoft", Attrs: []*ir.Attr{eps}},
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

// SkipRMSNormFamily recognises the residual Add that feeds an RMSNorm, as SkipFamily does
// for LayerNorm.
var SkipRMSNormFamily = &Family{
	Kind: SkipRMSNorm,
	Doc: `SkipRMSNorm: y = RMSNorm(input + skip [+ bias]) over the last axis.

Rules: "skiprms/bias-add", "skiprms/add", "skiprms/fused-cpu" as for SkipLayerNorm, over
SimplifiedLayerNormalization (what RMSNormFamily emits for ORT) or RMSNormalization;
"skiprms/fused" is com.microsoft.SkipSimplifiedLayerNormalization. Checks as for
SkipLayerNorm; the normalisation's inv_std_var output must be unused.

In a pre-norm model (LLaMA, T5, GPT-2, ViT) each residual sum h = h' + sublayer(norm(h'))
feeds the next block's norm and the next residual: the norm takes the sum and the sum
keeps its other readers through the fused op's input_skip_bias_sum output; the last one
pairs with the final norm.

Roles: input (the sublayer output), skip (the residual), bias (optional), gamma, output,
sum (when something else reads it), layer_scale (a constant per-channel Mul on input,
variant "+layerscale"). Params: epsilon.

Fuse: ORT gets com.microsoft.SkipSimplifiedLayerNormalization(input, skip, gamma, bias);
a used sum becomes its output 3; a layer scale is folded into the sublayer's last
projection as for SkipLayerNorm. With provider=cpu the residual becomes Sum, as for
SkipLayerNorm (the same CPU kernel). ONNX has no standard operator: the block stays.`,
	Rules:    skipRMSRules,
	Describe: describeSkip,
	Fuse: func(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error) {
		return fuseSkipAs(rw, b, env, "SkipSimplifiedLayerNormalization", "Add + the RMS normalisation")
	},
}

var skipRMSRules = makeSkipRules("skiprms", func(x patterns.Pattern) patterns.Pattern {
	Op, Var, Or := patterns.Op, patterns.Var, patterns.Or
	return Or(
		Op("SimplifiedLayerNormalization", x, Var("gamma")).As("ln"),
		Op("SimplifiedLayerNormalization", x, Var("gamma")).In("com.microsoft").As("ln"),
		Op("RMSNormalization", x, Var("gamma")).As("ln"))
}, patterns.Op("SkipSimplifiedLayerNormalization").In("com.microsoft").As("fused"))
