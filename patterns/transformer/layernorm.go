package transformer

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// LayerNormFamily recognises y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta over
// the last axis, var(x) = mean((x - mean(x))^2), in the shapes exporters write it, and
// the standard LayerNormalization op (torch's export at opset 17 and the fused form).
var LayerNormFamily = &Family{
	Kind: LayerNorm,
	Doc: `LayerNorm: y = (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * gamma + beta over the last axis.

Rules (variant "layernorm/<square>-<inverse>"): the square of x - mean(x) is Pow(d, 2)
("pow") or Mul(d, d) ("mul"); the division by the standard deviation is Div(d, Sqrt(v+eps))
("div"; Pow(v+eps, 0.5) for the Sqrt also counts), Mul(d, Reciprocal(Sqrt(v+eps))) or
Mul(d, Div(1, Sqrt(v+eps))) ("reciprocal"), or Mul(d, Pow(v+eps, -0.5)) ("rsqrt").
"layernorm/fused" is the LayerNormalization op. Modifiers appended to the variant:
"+dupsub" when x - mean(x) is computed twice (once for the variance, once for the
numerator), "+cast" when the statistics run on Cast(x) (and the result is cast back),
"+nobeta", "+nogamma", "+noaffine" when the Add(beta) / Mul(gamma) are absent (ones and
zeros). ReduceMean axes are an attribute (opset < 18) or a constant input (18+) and must
be the last axis with keepdims=1.

Checks: eps a scalar constant in (0, 1e-3]; gamma and beta constant 1-D of the last
dimension's size (when unknown, not of size 1); x a float tensor; a Cast back only after a Cast in, to x's
type.

Roles: input, output, gamma, beta. Params: epsilon, axis (-1).

Fuse: ORT and ONNX both get LayerNormalization(x, gamma, beta) (default domain,
axis=-1, epsilon). ORT registers LayerNormalization at every opset, so for ORT it is
emitted regardless of the model's opset; the ONNX target needs opset 17 and raises the
import only when Env.RaiseOpset allows it and no operator of the model changed meaning
between the model's opset and 17.`,
	Rules:    layerNormRules,
	Describe: describeNorm,
	Fuse:     fuseLayerNorm,
}

// RMSNormFamily recognises y = x / sqrt(mean(x^2) + eps) * gamma over the last axis (no
// mean subtraction), and its fused forms.
var RMSNormFamily = &Family{
	Kind: RMSNorm,
	Doc: `RMSNorm: y = x / sqrt(mean(x^2) + eps) * gamma over the last axis.

Rules: "rmsnorm/<square>-<inverse>" as for LayerNorm with d = x (x itself must not be
x' - mean(x'): that is a LayerNorm), modifiers "+cast", "+nogamma"; "rmsnorm/fused" is
SimplifiedLayerNormalization (ONNX Runtime's op, default domain; com.microsoft is
accepted too) or RMSNormalization (ONNX opset 23).

Roles: input, output, gamma. Params: epsilon, axis (-1).

Fuse: ORT gets SimplifiedLayerNormalization(x, gamma) in the default domain (where ONNX
Runtime registers it; it has no com.microsoft one). ONNX gets RMSNormalization, which
needs opset 23: normally the block is left decomposed with the reason.`,
	Rules:    rmsNormRules,
	Describe: describeNorm,
	Fuse:     fuseRMSNorm,
}

var (
	layerNormRules = normRules("layernorm", true)
	rmsNormRules   = normRules("rmsnorm", false)
)

// maxEpsilon bounds the epsilons accepted as a normalisation's. Exporters write 1e-12
// (BERT), 1e-7 (DeBERTa), 1e-6 (T5, LLaMA), 1e-5 (torch's default) and 1e-3 (Keras'
// default, through tf2onnx); ORT's own fusion stops at 1e-4 and so misses Keras models.
// The rewrite is exact for any eps > 0, so the bound only guards against reading an
// unrelated Add as the epsilon; 1e-3 is the largest default any framework uses.
const maxEpsilon = 1e-3

// normForms are the ways the statistics are written: how the square is taken and how
// the division by the standard deviation is done, listed in rule order.
var normForms = []struct{ square, inverse string }{
	{"pow", "div"}, {"mul", "div"},
	{"pow", "reciprocal"}, {"mul", "reciprocal"},
	{"pow", "rsqrt"}, {"mul", "rsqrt"},
}

func normRules(family string, centred bool) []*patterns.Rule {
	Op, Var, Or := patterns.Op, patterns.Var, patterns.Or
	var rules []*patterns.Rule
	for _, f := range normForms {
		rules = append(rules, &patterns.Rule{
			Name:    family + "/" + f.square + "-" + f.inverse,
			Pattern: normPattern(centred, f.square, f.inverse),
			Check:   checkNorm(centred),
			Shared:  normStatistics,
		})
	}
	fused := &patterns.Rule{Name: family + "/fused", Check: checkFusedNorm}
	if centred {
		fused.Pattern = Or(
			Op("LayerNormalization", Var("x"), Var("gamma"), Var("beta")).As("fused"),
			Op("LayerNormalization", Var("x"), Var("gamma")).As("fused"))
	} else {
		fused.Pattern = Or(
			Op("SimplifiedLayerNormalization", Var("x"), Var("gamma")).As("fused"),
			Op("SimplifiedLayerNormalization", Var("x"), Var("gamma")).In("com.microsoft").As("fused"),
			Op("RMSNormalization", Var("x"), Var("gamma")).As("fused"))
	}
	return append(rules, fused)
}

// normStatistics are the nodes of a decomposed norm up to the normalised value: two norms
// of one input with their own weights (GPT-NeoX's parallel block normalises x twice)
// share them once an exporter or CSE computed them once.
var normStatistics = []string{"cast_in", "mean", "sub", "sub_num", "cast_num", "square", "var", "var_eps", "std", "inv_std", "norm"}

// normPattern is the decomposed normalisation, written as the math:
//
//	xs   = [Cast](x)
//	d    = xs - mean(xs)             (LayerNorm; d = xs for RMSNorm)
//	std  = Sqrt(mean(d²) + eps)
//	norm = d / std                   (or d * 1/std, or d * (mean(d²)+eps)^-0.5)
//	y    = [Add]([Mul]([Cast](norm), gamma), beta)
//	     or Cast([Add]([Mul](norm, gamma), beta))     (the affine before the cast back)
//
// The numerator's d may be a second Sub node computing the same x - mean(x). An RMSNorm's
// numerator may be x itself or its own Cast of x while the statistics square a Cast of x
// (T5 squares x.to(float32) and multiplies x); it is multiplied by the statistics, so the
// type rules make it the statistics' type: x only when that Cast is a no-op, its own
// Cast only to the same type.
func normPattern(centred bool, square, inverse string) patterns.Pattern {
	type Pattern = patterns.Pattern
	Op, Var, Bind, Or, Optional := patterns.Op, patterns.Var, patterns.Bind, patterns.Or, patterns.Optional
	Const, ConstNear, Where := patterns.Const, patterns.ConstNear, patterns.Where
	x := Var("x")
	if !centred {
		x = Where("NotCentred", x, func(v *ir.Value) bool { return !isCentred(v) })
	}
	xs := Bind("xs", Optional(Op("Cast", x).As("cast_in")))
	d, dn := xs, xs
	if centred {
		mean := lnReduceMean("mean", xs)
		d = Op("Sub", xs, mean).As("sub")
		dn = Op("Sub", xs, mean).As("sub_num") // the same node, or the exporter's copy
	} else {
		dn = Bind("num", Or(xs, Op("Cast", x).As("cast_num"), x))
	}
	var sq Pattern
	if square == "pow" {
		sq = Op("Pow", d, ConstNear(2, 0)).As("square")
	} else {
		sq = Op("Mul", d, d).As("square")
	}
	ve := Op("Add", lnReduceMean("var", sq), Bind("eps", Const())).As("var_eps")
	std := Or(Op("Sqrt", ve).As("std"), Op("Pow", ve, ConstNear(0.5, 0)).As("std"))
	var norm Pattern
	switch inverse {
	case "div":
		norm = Op("Div", dn, std).As("norm")
	case "reciprocal":
		inv := Or(Op("Reciprocal", std).As("inv_std"), Op("Div", ConstNear(1, 0), std).As("inv_std"))
		norm = Op("Mul", dn, inv).As("norm")
	case "rsqrt":
		norm = Op("Mul", dn, Op("Pow", ve, ConstNear(-0.5, 0)).As("inv_std")).As("norm")
	}
	affine := func(p Pattern) Pattern {
		scaled := Optional(Op("Mul", p, Var("gamma")).As("scale"))
		if !centred {
			return scaled
		}
		return Optional(Op("Add", scaled, Var("beta")).As("shift"))
	}
	return Or(
		affine(Optional(Op("Cast", norm).As("cast_out"))),
		Op("Cast", affine(norm)).As("cast_end"))
}

// lnReduceMean matches ReduceMean(in) with its axes as an attribute or as an input.
func lnReduceMean(name string, in patterns.Pattern) patterns.Pattern {
	return patterns.Or(
		patterns.Op("ReduceMean", in).As(name),
		patterns.Op("ReduceMean", in, patterns.Var(name+"_axes")).As(name))
}

// isCentred reports whether v is computed as a - mean(a).
func isCentred(v *ir.Value) bool {
	n, _ := v.Producer()
	if n == nil || n.OpType != "Sub" || n.Domain != "" {
		return false
	}
	m, _ := n.Input(1).Producer()
	return m != nil && m.OpType == "ReduceMean" && m.Input(0) == n.Input(0)
}

func checkNorm(centred bool) func(m *patterns.Match) string {
	return func(m *patterns.Match) string {
		x := m.V("x")
		if why := lnFloatInput("x", x); why != "" {
			return why
		}
		rank := x.Type.Rank()
		if m.Has("cast_in") {
			to := ir.DataType(m.N("cast_in").AttrInt("to", 0))
			if !to.IsFloat() {
				return fmt.Sprintf("the statistics run on a Cast to %s, not a float type", to)
			}
		}
		for _, c := range []string{"cast_out", "cast_end"} {
			if !m.Has(c) {
				continue
			}
			if !m.Has("cast_in") {
				return "the result is cast without the statistics being cast first"
			}
			if to := ir.DataType(m.N(c).AttrInt("to", 0)); to != x.Type.DType {
				return fmt.Sprintf("the result is cast to %s, not back to x's %s", to, x.Type.DType)
			}
		}
		reduces := []string{"var"}
		if centred {
			reduces = []string{"mean", "var"}
		}
		for _, r := range reduces {
			if why := lnLastAxis(m, r, rank); why != "" {
				return why
			}
		}
		if _, why := lnEpsilon(m.Const("eps")); why != "" {
			return why
		}
		hidden, _ := lnLastDim(x)
		for _, p := range []string{"gamma", "beta"} {
			if m.Has(p) {
				if why := lnParam(p, m.V(p), hidden); why != "" {
					return why
				}
			}
		}
		return ""
	}
}

// checkFusedNorm accepts a fused normalisation over the last axis.
func checkFusedNorm(m *patterns.Match) string {
	n := m.N("fused")
	axis := n.AttrInt("axis", -1)
	if axis == -1 {
		return ""
	}
	rank := m.V("x").Type.Rank()
	if rank < 0 {
		return fmt.Sprintf("normalised from axis %d, and x's rank is unknown", axis)
	}
	if axis != int64(rank-1) {
		return fmt.Sprintf("normalised from axis %d, not the last (rank %d)", axis, rank)
	}
	return ""
}

func lnFloatInput(role string, v *ir.Value) string {
	if v.Type == nil || v.Type.Kind != ir.TensorType || v.Type.DType == ir.Undefined {
		return role + "'s type is unknown"
	}
	if !v.Type.DType.IsFloat() {
		return fmt.Sprintf("%s is %s, not a float tensor", role, v.Type.DType)
	}
	return ""
}

// lnLastAxis checks that the bound ReduceMean reduces the last axis only, keeping it.
func lnLastAxis(m *patterns.Match, name string, rank int) string {
	n := m.N(name)
	if k := n.AttrInt("keepdims", 1); k != 1 {
		return fmt.Sprintf("%s ReduceMean has keepdims=%d", name, k)
	}
	axes, ok := reduceAxes(n)
	if !ok {
		return fmt.Sprintf("%s ReduceMean's axes are not a constant", name)
	}
	if len(axes) == 0 {
		return fmt.Sprintf("%s ReduceMean reduces every axis", name)
	}
	if len(axes) != 1 {
		return fmt.Sprintf("normalised over axes %v, not the last axis alone", axes)
	}
	switch {
	case axes[0] == -1:
	case rank < 0:
		return fmt.Sprintf("normalised over axis %d, and the rank is unknown", axes[0])
	case axes[0] != int64(rank-1):
		return fmt.Sprintf("normalised over axis %d, not the last (rank %d)", axes[0], rank)
	}
	return ""
}

// reduceAxes reads a Reduce*'s or an Unsqueeze's axes (axesOf); empty and ok when none
// are given (a reduction over every axis).
func reduceAxes(n *ir.Node) ([]int64, bool) {
	if _, ok := n.AttrInts("axes"); !ok && n.Input(1) == nil {
		return nil, true
	}
	return axesOf(n, 1)
}

// lnEpsilon reads a scalar epsilon and checks its range.
func lnEpsilon(t *ir.Tensor) (float64, string) {
	if t == nil {
		return 0, "eps is not a constant"
	}
	if t.NumElements() != 1 {
		return 0, fmt.Sprintf("eps has %d elements, not one", t.NumElements())
	}
	v, err := t.Float64s()
	if err != nil || len(v) != 1 {
		return 0, "eps is not a number"
	}
	eps := v[0]
	if t.DType == ir.Float {
		eps = lnF32(float32(eps))
	}
	// A half type stores an eps below its smallest subnormal (BERT's 1e-12 in float16)
	// as 0: the graph adds nothing, and so does the fused norm.
	if eps == 0 && (t.DType == ir.Float16 || t.DType == ir.BFloat16) {
		return 0, ""
	}
	if !(eps > 0 && eps <= maxEpsilon) {
		return eps, fmt.Sprintf("eps %g out of range (0, %g]", eps, maxEpsilon)
	}
	return eps, ""
}

// lnF32 widens a float32 to the float64 with the same shortest decimal (1e-12, not
// 9.99999996e-13), so that parameters read as they were written.
func lnF32(f float32) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	return v
}

// lnParam checks a scale or shift: a 1-D float constant of the normalised size.
func lnParam(role string, v *ir.Value, hidden int64) string {
	t := patterns.ConstOf(v)
	if t == nil {
		return role + " is not a constant"
	}
	if !t.DType.IsFloat() {
		return fmt.Sprintf("%s is %s, not float", role, t.DType)
	}
	if len(t.Dims) != 1 {
		return fmt.Sprintf("%s has shape %v, not 1-D", role, t.Dims)
	}
	if hidden > 0 && t.Dims[0] != hidden {
		return fmt.Sprintf("%s has %d elements, the normalised axis %d", role, t.Dims[0], hidden)
	}
	// One value broadcasts over an axis of any size; the fused ops want one per element
	// of the normalised axis, and its size is not known here.
	if hidden <= 0 && t.Dims[0] == 1 {
		return fmt.Sprintf("%s has 1 element and the normalised axis' size is unknown", role)
	}
	return ""
}

// lnLastDim is the size of v's last axis, when known.
func lnLastDim(v *ir.Value) (int64, bool) {
	if v == nil || v.Type == nil || len(v.Type.Shape) == 0 {
		return 0, false
	}
	d := v.Type.Shape[len(v.Type.Shape)-1]
	return d.Value, d.Known && d.Param == ""
}

func describeNorm(m *patterns.Match, b *Block) {
	b.Roles[RoleInput] = m.V("x")
	b.Roles[RoleOutput] = m.Root
	b.Params["axis"] = -1
	if m.Has("fused") {
		n := m.N("fused")
		b.Fused = true
		b.Params["epsilon"] = lnF32(n.AttrFloat("epsilon", 1e-5))
	} else {
		b.Params["epsilon"], _ = lnEpsilon(m.Const("eps"))
	}
	var mods []string
	if m.Has("sub") && m.N("sub") != m.N("sub_num") {
		mods = append(mods, "dupsub")
	}
	if m.Has("cast_in") {
		mods = append(mods, "cast")
	}
	if m.Has("cast_end") {
		mods = append(mods, "castend") // the affine runs before the cast back
	}
	if num := m.V("num"); num != nil && num != m.V("xs") {
		mods = append(mods, "xnum") // the numerator is not the statistics' Cast
	}
	for _, p := range []string{"gamma", "beta"} {
		if m.Has(p) {
			b.Roles[p] = m.V(p)
		}
	}
	centred := b.Kind == LayerNorm
	switch {
	case centred && !m.Has("gamma") && !m.Has("beta"):
		mods = append(mods, "noaffine")
	case !m.Has("gamma"):
		mods = append(mods, "nogamma")
	case centred && !m.Has("beta"):
		mods = append(mods, "nobeta")
	}
	if len(mods) > 0 {
		b.Variant += "+" + strings.Join(mods, "+")
	}
}

func fuseLayerNorm(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error) {
	ops, why := normOperands(b)
	if why != "" {
		return nil, why, nil
	}
	switch env.Target {
	case ORT:
		// ORT registers LayerNormalization in the default domain below opset 17 too.
	case ONNX:
		if why := RequireOpset(env, 17, "LayerNormalization", b.Nodes); why != "" {
			return nil, why, nil
		}
	default:
		return nil, fmt.Sprintf("unknown target %q", env.Target), nil
	}
	inputs := []*ir.Value{ops.input(), ops.scale(rw, b)}
	if beta := b.Role(RoleBeta); beta != nil {
		inputs = append(inputs, beta)
	}
	n := lnNode(rw, b, "LayerNormalization", "", inputs,
		ir.IntAttr("axis", -1), ir.FloatAttr("epsilon", float32(b.Param("epsilon", 1e-5))))
	rw.Replace(b.Root, ops.castBack(rw, b, n.Output(0)))
	return n, "", nil
}

func fuseRMSNorm(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error) {
	ops, why := normOperands(b)
	if why != "" {
		return nil, why, nil
	}
	op := ""
	switch env.Target {
	case ORT:
		op = "SimplifiedLayerNormalization" // ONNX Runtime's, registered in the default domain
	case ONNX:
		if why := RequireOpset(env, 23, "RMSNormalization", rmsRaiseSkip(env.Model, b)); why != "" {
			return nil, why, nil
		}
		op = "RMSNormalization"
	default:
		return nil, fmt.Sprintf("unknown target %q", env.Target), nil
	}
	n := lnNode(rw, b, op, "", []*ir.Value{ops.input(), ops.scale(rw, b)},
		ir.IntAttr("axis", -1), ir.FloatAttr("epsilon", float32(b.Param("epsilon", 1e-5))))
	rw.Replace(b.Root, ops.castBack(rw, b, n.Output(0)))
	return n, "", nil
}

// rmsRaiseSkip lists the nodes that do not count against raising the opset to 23 for
// block b: those of every decomposed RMSNorm in the graph that fuses once the opset is
// raised (their ReduceMean, whose axes became an input at 18, goes with them; the first
// raise lets each of them fuse). Only needed while the model is below 23.
func rmsRaiseSkip(m *ir.Model, b *Block) []*ir.Node {
	if m.Opset("") >= 23 {
		return b.Nodes
	}
	nodes := append([]*ir.Node(nil), b.Nodes...)
	found, _ := patterns.Find(m.Graph, rmsNormRules)
	for _, f := range found {
		if f.Match.Has("fused") {
			continue
		}
		ob := &Block{Kind: RMSNorm, Variant: f.Rule.Name, Match: f.Match, Nodes: f.Match.All, Root: f.Match.Root,
			Roles: map[string]*ir.Value{}, Params: map[string]float64{}}
		describeNorm(f.Match, ob)
		if _, why := normOperands(ob); why == "" {
			nodes = append(nodes, f.Match.All...)
		}
	}
	return nodes
}

// normOps are a fused normalisation's operands: the input is x, or Cast(x) when the
// statistics are cast and the result is not cast back before the affine (the output then
// has the cast type, and a cast back after the affine stays after the fused op); a
// missing gamma becomes a ones constant of the normalised size.
type normOps struct {
	in, gamma *ir.Value
	ones      *ir.Tensor  // the scale to make when there is no gamma
	castEnd   ir.DataType // the type to cast the fused result back to, when set
}

// normOperands decides the operands without changing the graph, or says why it cannot.
func normOperands(b *Block) (normOps, string) {
	m := b.Match
	ops := normOps{in: m.V("x"), gamma: b.Role(RoleGamma)}
	if m.Has("cast_in") && !m.Has("cast_out") && ir.DataType(m.N("cast_in").AttrInt("to", 0)) != ops.in.Type.DType {
		ops.in = m.V("xs") // a no-op Cast in is dropped
	}
	if m.Has("cast_end") {
		ops.castEnd = ir.DataType(m.N("cast_end").AttrInt("to", 0))
	}
	if ops.gamma != nil {
		return ops, ""
	}
	hidden, ok := lnLastDim(ops.in)
	if !ok {
		return ops, "no gamma, and the normalised axis' size is unknown: cannot build a ones scale"
	}
	t, err := lnOnes(ops.in.Type.DType, hidden)
	if err != nil {
		return ops, err.Error()
	}
	ops.ones = t
	return ops, ""
}

func (o normOps) input() *ir.Value { return o.in }

// castBack returns the fused result y, or Cast(y) when the block casts after its affine.
func (o normOps) castBack(rw *patterns.Rewriter, b *Block, y *ir.Value) *ir.Value {
	if o.castEnd == ir.Undefined || o.castEnd == o.in.Type.DType {
		return y
	}
	yn, _ := y.Producer()
	node := yn.Name + "_Cast"
	n := rw.Node("Cast", "", []*ir.Value{y}, 1, node+"_output_0", ir.IntAttr("to", int64(o.castEnd)))
	n.Name = node
	return n.Output(0)
}

// scale returns gamma, or adds the ones constant.
func (o normOps) scale(rw *patterns.Rewriter, b *Block) *ir.Value {
	if o.gamma != nil {
		return o.gamma
	}
	name, _ := lnNames(b, "ones")
	return rw.Const(name, o.ones)
}

// lnOnes is a 1-D tensor of n ones of a float type.
func lnOnes(dt ir.DataType, n int64) (*ir.Tensor, error) {
	t, err := ir.Filled(dt, []int64{n}, 1)
	if err != nil {
		return nil, fmt.Errorf("no gamma, and %v", err)
	}
	return t, nil
}

// lnNode adds a block's fused node, named after the block's root node the way torch
// names nodes: root "/enc/LayerNorm/Add_1" gives node "/enc/LayerNorm/<op>" and output
// "/enc/LayerNorm/<op>_output_0".
func lnNode(rw *patterns.Rewriter, b *Block, op, domain string, inputs []*ir.Value, attrs ...*ir.Attr) *ir.Node {
	node, out := lnNames(b, op)
	n := rw.Node(op, domain, inputs, 1, out, attrs...)
	n.Name = node
	return n
}

// lnNames returns the node name and the output base name for a block's new op.
func lnNames(b *Block, op string) (node, out string) {
	name := b.Root.Name
	if p, _ := b.Root.Producer(); p != nil && p.Name != "" {
		name = p.Name
	}
	if i := strings.LastIndex(name, "/"); i >= 0 {
		return name[:i+1] + op, name[:i+1] + op + "_output_0"
	}
	return name + "_" + op, name + "_" + op
}

// AffineNormFamily recognises an element-wise affine map in a normalisation's place:
// y = x·gamma + beta with per-channel constants and no statistics (MobileBERT's NoNorm,
// ResMLP's Affine, a BatchNorm folded for inference). There is nothing to fuse: the block
// is annotated so that qdq and codegen know it for what it is.
var AffineNormFamily = &Family{
	Kind: AffineNorm,
	Doc: `AffineNorm: y = x·gamma + beta over the last axis, with no mean or variance.

Rule "affine/mul-add": Add(Mul(x, gamma), beta), gamma and beta constants of shape
[hidden] or [1, ..., hidden] (hidden, the size of x's last axis, known and above 1).
x must not be a normalised value (the scale and shift of a LayerNorm or RMSNorm belong to
it): neither a normalisation op's output nor a quotient by a square root of a mean.

Roles: input, output, gamma, beta.

Fuse: none; the block is left with the reason (no statistics, so no normalisation
operator applies, and Mul + Add is what it computes).`,
	Rules: []*patterns.Rule{{
		Name: "affine/mul-add",
		Pattern: patterns.Op("Add",
			patterns.Op("Mul", patterns.Where("NotNormalised", patterns.Var("x"), func(v *ir.Value) bool { return !isNormalised(v) }),
				patterns.Where("PerChannel", patterns.Var("gamma"), affinePerChannel)).As("scale"),
			patterns.Where("PerChannel", patterns.Var("beta"), affinePerChannel)).As("shift"),
		Check: func(m *patterns.Match) string {
			x := m.V("x")
			if why := lnFloatInput("x", x); why != "" {
				return why
			}
			for _, p := range []string{"gamma", "beta"} {
				if why := affineFits(p, m.V(p), x); why != "" {
					return why
				}
			}
			return ""
		},
	}},
	Describe: func(m *patterns.Match, b *Block) {
		for _, r := range []string{RoleInput, RoleGamma, RoleBeta} {
			v := m.V(r)
			if r == RoleInput {
				v = m.V("x")
			}
			b.Roles[r] = v
		}
		b.Roles[RoleOutput] = m.Root
	},
	Fuse: func(*patterns.Rewriter, *Block, *Env) (*ir.Node, string, error) {
		return nil, "element-wise affine with no statistics: no normalisation operator applies; kept as Mul + Add", nil
	},
}

// affinePerChannel reports whether v is a float constant that varies only along its last
// axis ([n] or [1, ..., n], n > 1).
func affinePerChannel(v *ir.Value) bool {
	t := patterns.ConstOf(v)
	if t == nil || !t.DType.IsFloat() || len(t.Dims) == 0 || t.Dims[len(t.Dims)-1] < 2 {
		return false
	}
	for _, d := range t.Dims[:len(t.Dims)-1] {
		if d != 1 {
			return false
		}
	}
	return true
}

// affineFits checks that a per-channel constant matches x's last axis and does not widen
// x's rank (the Add would then broadcast x).
func affineFits(role string, v, x *ir.Value) string {
	t := patterns.ConstOf(v)
	hidden, ok := lnLastDim(x)
	if !ok {
		return "the size of x's last axis is unknown"
	}
	if n := t.Dims[len(t.Dims)-1]; n != hidden {
		return fmt.Sprintf("%s has %d channels, x's last axis %d", role, n, hidden)
	}
	if len(t.Dims) > x.Type.Rank() {
		return fmt.Sprintf("%s has rank %d, above x's %d", role, len(t.Dims), x.Type.Rank())
	}
	return ""
}

// normOps lists the operators whose output is normalised.
var normalisingOps = map[string]bool{
	"LayerNormalization": true, "SimplifiedLayerNormalization": true, "RMSNormalization": true,
	"SkipLayerNormalization": true, "SkipSimplifiedLayerNormalization": true,
	"EmbedLayerNormalization": true, "GroupNormalization": true, "InstanceNormalization": true,
	"BatchNormalization": true,
}

// isNormalised reports whether v is a normalisation's output: a normalising op's, or a
// quotient by (a product with the inverse of) a square root whose argument is a mean,
// possibly behind a Cast.
func isNormalised(v *ir.Value) bool {
	n, _ := v.Producer()
	if n != nil && n.OpType == "Cast" {
		n, _ = n.Input(0).Producer()
	}
	if n == nil {
		return false
	}
	if normalisingOps[n.OpType] {
		return true
	}
	if n.OpType != "Div" && n.OpType != "Mul" {
		return false
	}
	for _, in := range n.Inputs() {
		if in != nil && reachesMean(in, 4) {
			return true
		}
	}
	return false
}

// reachesMean reports whether v is computed from a ReduceMean within depth steps of the
// ops a standard deviation is made of.
func reachesMean(v *ir.Value, depth int) bool {
	n, _ := v.Producer()
	if n == nil || depth == 0 {
		return false
	}
	switch n.OpType {
	case "ReduceMean":
		return true
	case "Sqrt", "Reciprocal", "Pow", "Add", "Div", "Cast":
		for _, in := range n.Inputs() {
			if in != nil && reachesMean(in, depth-1) {
				return true
			}
		}
	}
	return false
}
