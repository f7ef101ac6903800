package transformer

import (
	"fmt"
	"math"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// QLinearRules rewrite a QDQ-quantized linear layer for ONNX Runtime's CPU provider
// (target ort, provider cpu):
//
//	MatMul(DequantizeLinear(QuantizeLinear(x)), DequantizeLinear(W))   W a constant int8/uint8
//
// becomes com.microsoft.MatMulIntegerToFloat(QuantizeLinear(x) as uint8, W, scales, zero
// points[, bias]) with the same numbers: an int8 activation with zero point z is the uint8
// activation with zero point z+128 (clamp(round(x/s)+z, -128, 127) + 128 = clamp(round(x/s)+z+128,
// 0, 255)), and uint8 activations against int8 weights are what x86's VNNI instructions
// multiply. ONNX Runtime makes the same operator out of the Q/DQ form itself, but leaves the
// bias Add (and BiasGelu's bias) as separate float work, and on x86 only when each
// activation QuantizeLinear feeds one DequantizeLinear; here the bias goes into the
// operator's epilogue and readers of one activation share one QuantizeLinear.
//
// Variants: "qlinear/bias" (Add of a constant [N] bias, either operand order),
// "qlinear/bias-gelu" (BiasGelu(y, b) or FastGelu(y, b): the bias moves into the matmul,
// leaving Gelu(y') or FastGelu(y')), "qlinear/plain" (no bias).
//
// Refusals: scales or zero points not constant; activation quantized per axis, or Q and DQ
// disagreeing; weight not a constant 2-D int8/uint8 tensor, or quantized per row rather
// than per output column; bias not a constant of the weight's column count.
var QLinearRules = makeQLinearRules()

func makeQLinearRules() []*patterns.Rule {
	Op, Var, Bind, Const, Or := patterns.Op, patterns.Var, patterns.Bind, patterns.Const, patterns.Or
	weight := Or(
		Op("DequantizeLinear", Bind("w", Const()), Var("w_scale"), Var("w_zero")).As("w_dq"),
		Op("DequantizeLinear", Bind("w", Const()), Var("w_scale")).As("w_dq"))
	mm := Op("MatMul", quantPair("a", Var("x")), weight).As("matmul")
	bias := Bind("bias", Const())
	internal := []string{"a_q", "a_dq", "w_dq"} // shared by other readers, kept while used
	return []*patterns.Rule{
		{Name: "qlinear/bias-gelu", Pattern: Or(Op("BiasGelu", mm, bias).In("com.microsoft").As("gelu"),
			Op("FastGelu", mm, bias).In("com.microsoft").As("gelu")),
			Benefit: 2, Check: qlinCheck, Rewrite: qlinRewrite, Internal: internal},
		{Name: "qlinear/bias", Pattern: Op("Add", mm, bias).As("add"),
			Benefit: 1, Check: qlinCheck, Rewrite: qlinRewrite, Internal: internal},
		// The sweep reaches the MatMul before its reader: leave a biased one to the rules above.
		{Name: "qlinear/plain", Pattern: patterns.Where("no bias reader", mm, qlinNoBiasReader),
			Check: qlinCheck, Rewrite: qlinRewrite, Internal: internal},
	}
}

// qlinNoBiasReader reports whether no reader of a MatMul's output will take its bias:
// the biased rules apply only to a sole reader adding a constant [N] vector.
func qlinNoBiasReader(v *ir.Value) bool {
	uses := v.Uses()
	if len(uses) != 1 || v.IsGraphOutput() {
		return true
	}
	n, i := uses[0].Node, uses[0].Index
	switch {
	case n.Domain == "" && n.OpType == "Add",
		n.Domain == "com.microsoft" && (n.OpType == "BiasGelu" || n.OpType == "FastGelu") && i == 0:
		b := patterns.ConstOf(n.Input(1 - i))
		return b == nil || b.DType != ir.Float || len(b.Dims) != 1
	}
	return true
}

// qlinFused matches what QLinearRules emit for x·W (+ b), binding p+"_matmul",
// p+"_weight" (the int8/uint8 weight) and p+"_bias": a left attention block whose
// projections were rewritten is still recognised.
func qlinFused(p string, x patterns.Pattern) patterns.Pattern {
	Op, Any, Var := patterns.Op, patterns.Any, patterns.Var
	a := Op("QuantizeLinear", x, Any(), Any()).As(p + "_qu8")
	w, b := Var(p+"_weight"), Var(p+"_bias")
	mk := func(ins ...patterns.Pattern) patterns.Pattern {
		return Op("MatMulIntegerToFloat", ins...).In("com.microsoft").As(p + "_matmul")
	}
	return patterns.Or(mk(a, w, Any(), Any(), Any(), Any(), b), mk(a, w, Any(), Any(), Any(), nil, b),
		mk(a, w, Any(), Any(), Any(), Any()), mk(a, w, Any(), Any(), Any()))
}

// quantPair matches x through a QuantizeLinear/DequantizeLinear pair, binding p+"_q" and
// p+"_dq" (zero points optional).
func quantPair(p string, x patterns.Pattern) patterns.Pattern {
	op, anything, or := patterns.Op, patterns.Any, patterns.Or
	q := or(op("QuantizeLinear", x, anything(), anything()).As(p+"_q"), op("QuantizeLinear", x, anything()).As(p+"_q"))
	return or(op("DequantizeLinear", q, anything(), anything()).As(p+"_dq"), op("DequantizeLinear", q, anything()).As(p+"_dq"))
}

// quantParams are a QuantizeLinear's or DequantizeLinear's constant scale and zero point.
type quantParams struct {
	scale []float32
	zero  []int64 // one per scale; zeros when the zero point is absent
	dtype ir.DataType
	axis  int64
}

func (q quantParams) perTensor() bool { return len(q.scale) == 1 }

// readQuant reads the scale and zero point of a QuantizeLinear or DequantizeLinear node.
func readQuant(n *ir.Node) (quantParams, string) {
	var q quantParams
	if n.AttrInt("block_size", 0) != 0 {
		return q, n.OpType + " is blocked"
	}
	s := patterns.ConstOf(n.Input(1))
	if s == nil {
		return q, n.OpType + " scale is not constant"
	}
	sv, err := s.Float32s()
	if err != nil || len(sv) == 0 {
		return q, fmt.Sprintf("%s scale is %s, not float", n.OpType, s.DType)
	}
	for _, v := range sv {
		if !(v > 0) || math.IsInf(float64(v), 0) {
			return q, fmt.Sprintf("%s scale %g is not positive and finite", n.OpType, v)
		}
	}
	q.scale, q.axis, q.zero = sv, n.AttrInt("axis", 1), make([]int64, len(sv))
	switch {
	case n.Input(2) != nil:
		z := patterns.ConstOf(n.Input(2))
		if z == nil {
			return q, n.OpType + " zero point is not constant"
		}
		zv, err := z.Int64s()
		if err != nil || len(zv) != len(sv) {
			return q, n.OpType + " zero point does not match its scale"
		}
		q.zero, q.dtype = zv, z.DType
	case n.OpType == "DequantizeLinear":
		if n.Input(0).Type != nil {
			q.dtype = n.Input(0).Type.DType
		}
	default:
		q.dtype = ir.DataType(n.AttrInt("output_dtype", int64(ir.Uint8)))
	}
	if q.dtype != ir.Int8 && q.dtype != ir.Uint8 {
		return q, fmt.Sprintf("%s quantizes to %s, not int8 or uint8", n.OpType, q.dtype)
	}
	return q, ""
}

// activationQuant reads a per-tensor Q/DQ pair on an activation and returns its uint8
// equivalent: the scale and the zero point shifted by 128 for int8.
func activationQuant(q, dq *ir.Node) (scale float32, zero uint8, why string) {
	qp, why := readQuant(q)
	if why != "" {
		return 0, 0, why
	}
	dp, why := readQuant(dq)
	if why != "" {
		return 0, 0, why
	}
	if !qp.perTensor() || !dp.perTensor() {
		return 0, 0, "activation quantized per axis"
	}
	if qp.scale[0] != dp.scale[0] || qp.zero[0] != dp.zero[0] || qp.dtype != dp.dtype {
		return 0, 0, "QuantizeLinear and DequantizeLinear of the activation disagree"
	}
	z := qp.zero[0]
	if qp.dtype == ir.Int8 {
		z += 128
	}
	return qp.scale[0], uint8(z), ""
}

// weightQuant checks a DequantizeLinear of a constant [K,N] weight quantized per tensor or
// per output column.
func weightQuant(dq *ir.Node) (quantParams, string) {
	w := patterns.ConstOf(dq.Input(0))
	if w == nil || len(w.Dims) != 2 {
		return quantParams{}, "weight is not a constant 2-D tensor"
	}
	p, why := readQuant(dq)
	if why != "" {
		return p, why
	}
	if !p.perTensor() && ((p.axis != 1 && p.axis != -1) || int64(len(p.scale)) != w.Dims[1]) {
		return p, fmt.Sprintf("weight quantized along axis %d with %d scales, not per output column", p.axis, len(p.scale))
	}
	return p, ""
}

func qlinCheck(m *patterns.Match) string {
	if _, _, why := activationQuant(m.N("a_q"), m.N("a_dq")); why != "" {
		return why
	}
	if _, why := weightQuant(m.N("w_dq")); why != "" {
		return why
	}
	x := m.V("x")
	if x.Type == nil || x.Type.DType != ir.Float || x.Type.Rank() < 2 {
		return "input is not a float tensor of rank 2 or more"
	}
	if m.Has("bias") {
		b, w := m.Const("bias"), m.Const("w")
		if b.DType != ir.Float || len(b.Dims) != 1 || b.Dims[0] != w.Dims[1] {
			return fmt.Sprintf("bias %s%v is not float [%d]", b.DType, b.Dims, w.Dims[1])
		}
	}
	return ""
}

func qlinRewrite(rw *patterns.Rewriter, m *patterns.Match) error {
	scale, zero, _ := activationQuant(m.N("a_q"), m.N("a_dq"))
	mm, wdq := m.N("matmul"), m.N("w_dq")
	a := quantU8(rw, m.V("x"), scale, zero)
	inputs := []*ir.Value{a.Output(0), m.V("w"), a.Input(1), wdq.Input(1), a.Input(2), wdq.Input(2), m.V("bias")}
	for inputs[len(inputs)-1] == nil {
		inputs = inputs[:len(inputs)-1]
	}
	n := rw.Node("MatMulIntegerToFloat", "com.microsoft", inputs, 1, mm.Output(0).Name+"_int8")
	out := n.Output(0)
	if g := m.N("gelu"); g != nil {
		op := "Gelu"
		if g.OpType == "FastGelu" {
			op = "FastGelu"
		}
		out = rw.Node(op, "com.microsoft", []*ir.Value{out}, 1, g.Output(0).Name+"_"+op).Output(0)
	}
	rw.Replace(m.Root, out)
	return nil
}

// quantU8 returns a QuantizeLinear of x to uint8 with the given scale and zero point:
// one that already reads x with those numbers (an earlier rewrite's), or a new one.
func quantU8(rw *patterns.Rewriter, x *ir.Value, scale float32, zero uint8) *ir.Node {
	for _, u := range x.Uses() {
		n := u.Node
		if n.OpType != "QuantizeLinear" || n.Domain != "" || u.Index != 0 || n.Input(2) == nil {
			continue
		}
		if p, why := readQuant(n); why == "" && p.perTensor() && p.dtype == ir.Uint8 && p.scale[0] == scale && p.zero[0] == int64(zero) {
			return n
		}
	}
	s := rw.Const(x.Name+"_u8_scale", ir.FloatTensor(nil, []float32{scale}))
	z := rw.Const(x.Name+"_u8_zero_point", ir.NewTensor(ir.Uint8, nil, []byte{zero}))
	return rw.Node("QuantizeLinear", "", []*ir.Value{x, s, z}, 1, x.Name+"_u8")
}

// FuseQLinear applies QLinearRules for ONNX Runtime's CPU provider (target ort,
// provider cpu): the integer kernels are x86's; the TensorRT and CUDA providers take the
// Q/DQ form as it is.
func FuseQLinear(g *ir.Graph, env *Env) (*patterns.Result, error) {
	if env.Target != ORT || env.Provider != "cpu" {
		return &patterns.Result{Applied: map[string]int{}}, nil
	}
	res, err := patterns.Apply(g, QLinearRules, patterns.Options{})
	if err == nil && len(res.Applied) > 0 {
		EnsureOpset(env.Model, "com.microsoft", 1)
	}
	return res, err
}
