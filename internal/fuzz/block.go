package fuzz

import (
	"math"
	"math/rand"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// A transformer block: attention (projections, head split, Q·Kᵀ, scale, padding mask,
// softmax, ·V, merge, output projection), residual + norm, FFN with GELU, residual +
// norm; each part written in one of the forms exporters use. A class is one mutation of
// it: the keep-math classes must compute the same function (and should be recognised);
// the near-misses ("nm-") compute something else and must never be recognised as the
// block they imitate.

// Classes lists every block class, keep-math first.
var Classes = []string{
	"base", "commute", "scale-mul", "scale-q", "scale-k", "scale-qk", "kt-two-transposes",
	"heads-3d", "k-rolled-heads", "shape-arith", "cast", "qdq",
	"where-mask", "gemm-proj", "ln-op", "causal", "mask-query-axis",
	"rotary-half", "rotary-interleaved", "rotary-partial", "rotary-gathered-pairs", "row-max", "softcap", "q-term",
	"sliding-window", "seq-first", "head-bias", "scores-read",
	"nm-softmax-axis", "nm-eps-outside", "nm-mean-axis", "nm-mask-after-softmax",
	"nm-gamma-input", "nm-gelu-const", "nm-residual-broadcast",
	"nm-gelu-split-input", "nm-var-uncentred", "nm-rotary-halves", "nm-row-max-queries",
	"nm-scores-term", "nm-rotary-pairs-swapped", "nm-seq-first-softmax-batch",
}

// IsNearMiss reports whether a class changes the math.
func IsNearMiss(class string) bool { return len(class) > 3 && class[:3] == "nm-" }

var (
	attnKinds = []transformer.Kind{transformer.Attention}
	normKinds = []transformer.Kind{transformer.LayerNorm, transformer.SkipLayerNorm, transformer.RMSNorm, transformer.SkipRMSNorm}
	skipKinds = []transformer.Kind{transformer.SkipLayerNorm, transformer.SkipRMSNorm}
	geluKinds = []transformer.Kind{transformer.Gelu, transformer.FFN}
	rotKinds  = []transformer.Kind{transformer.Rotary}
)

type blockGen struct {
	*builder
	class   string
	commute bool
	n, d, h int64 // heads, head size, hidden
	x, mask val
	wit     []Witness
	// scoresOut: class scores-read's reading of the scores, added into the block's output
	// (add) or a second graph output.
	scoresOut val
	add       bool
	// sinks: GPT-OSS's per-head sink logits joined to the scores (sliding-window only),
	// the form qcc lowers to GroupQueryAttention with local_window_size.
	sinks bool
}

// seqFirst reports whether the class's input is sequence-first, [S, B, C].
func (g *blockGen) seqFirst() bool {
	return g.class == "seq-first" || g.class == "nm-seq-first-softmax-batch"
}

// GenBlock returns a transformer block of the given class (a random one when class is
// "") for seed.
func GenBlock(seed int64, class string) *Case {
	r := rand.New(rand.NewSource(seed))
	if class == "" {
		class = Classes[r.Intn(len(Classes))]
	}
	opset := []int64{13, 17}[r.Intn(2)]
	if class == "ln-op" {
		opset = 17
	}
	g := &blockGen{builder: newBuilder(r, opset), class: class, commute: class == "commute" || r.Intn(4) == 0}
	g.n = []int64{2, 4}[r.Intn(2)]
	g.d = []int64{4, 8}[r.Intn(2)]
	g.h = g.n * g.d
	seq := dim{sym: "seq"}
	if r.Intn(4) == 0 {
		seq = sd(int64(3 + r.Intn(4)))
	}
	if g.seqFirst() {
		// nn.MultiheadAttention without batch_first; no padding mask (as heads-3d).
		g.x = g.input("x", ir.Float, shape{seq, {sym: "batch"}, sd(g.h)})
	} else {
		g.x = g.input("x", ir.Float, shape{{sym: "batch"}, seq, sd(g.h)})
	}
	if class != "heads-3d" && !g.seqFirst() {
		g.mask = g.input("mask", ir.Int64, shape{{sym: "batch"}, seq})
	}
	x := g.x
	if class == "qdq" {
		x = g.qdq(x)
	}
	a := g.attention(x)
	y := g.norm(g.residual(g.x, a, class == "nm-residual-broadcast"), class)
	f := g.ffn(y)
	z := g.norm(g.residual(y, f, false), "")
	if g.scoresOut.v != nil && g.add {
		z = g.comm1("Add", z, g.scoresOut)
	}
	g.output(z)
	if g.scoresOut.v != nil && !g.add {
		g.output(g.scoresOut)
	}
	return &Case{Model: g.m, Class: class, NearMiss: IsNearMiss(class), Witnesses: g.wit}
}

func (g *blockGen) witness(n *ir.Node, kinds []transformer.Kind, forbid bool) {
	g.wit = append(g.wit, Witness{Node: n.Name, Kinds: kinds, Forbid: forbid})
}

// comm builds a commutative op, operands in either order when the block commutes.
func (g *blockGen) comm(op string, a, c val) (val, *ir.Node) {
	sh, _ := broadcast(a.sh, c.sh)
	if g.commute && g.r.Intn(2) == 0 {
		a, c = c, a
	}
	return g.opN(op, []val{a, c}, a.dt, sh)
}

func (g *blockGen) comm1(op string, a, c val) val { v, _ := g.comm(op, a, c); return v }

func (g *blockGen) qdq(x val) val {
	s := g.scalarF(4.0 / 127)
	zp := val{g.g.NewConst("zp", ir.NewTensor(ir.Int8, nil, []byte{0})), ir.Int8, shape{}}
	q := g.op1("QuantizeLinear", []val{x, s, zp}, ir.Int8, x.sh)
	return g.op1("DequantizeLinear", []val{q, s, zp}, ir.Float, x.sh)
}

// linear is x·W + b; class gemm-proj writes it as Gemm on x flattened to 2-D, reshaped
// back through Shape arithmetic.
func (g *blockGen) linear(x val, in, out int64) val {
	sh := x.sh.clone()
	sh[len(sh)-1] = sd(out)
	if g.class == "gemm-proj" {
		rows := dim{sym: g.fresh("rows")}
		x2 := g.op1("Reshape", []val{x, g.ints(-1, in)}, ir.Float, shape{rows, sd(in)})
		ins := []val{x2, g.weight(in, out), g.randConst([]int64{out}, 0.2)}
		attrs := []*ir.Attr{}
		if g.r.Intn(2) == 0 {
			ins[1] = g.constF([]int64{out, in}, g.randF(int(in*out), math.Sqrt(3/float64(in))))
			attrs = append(attrs, ir.IntAttr("transB", 1))
		}
		y := g.op1("Gemm", ins, ir.Float, shape{rows, sd(out)}, attrs...)
		lead := g.op1("Slice", []val{g.shapeOf(x), g.ints(0), g.ints(-1)}, ir.Int64, shape{sd(int64(x.rank() - 1))})
		target := g.op1("Concat", []val{lead, g.ints(out)}, ir.Int64, shape{sd(int64(x.rank()))}, ir.IntAttr("axis", 0))
		return g.op1("Reshape", []val{y, target}, ir.Float, sh)
	}
	mm := g.op1("MatMul", []val{x, g.weight(in, out)}, ir.Float, sh)
	return g.comm1("Add", mm, g.randConst([]int64{out}, 0.2))
}

// reshapeTarget is the shape input of a Reshape: the constant (0 copies a dim), or the
// exporter's Concat of Shape-read dims and constants when the class asks for it.
func (g *blockGen) reshapeTarget(consts []int64, fromX map[int]int) val {
	if g.class != "shape-arith" && g.class != "heads-3d" {
		return g.ints(consts...)
	}
	var parts []val
	for i, c := range consts {
		if a, ok := fromX[i]; ok {
			parts = append(parts, g.dimOf(g.x, a))
		} else {
			parts = append(parts, g.ints(c))
		}
	}
	return g.op1("Concat", parts, ir.Int64, shape{sd(int64(len(consts)))}, ir.IntAttr("axis", 0))
}

// heads4 is Transpose(Reshape(t, [B, S, N, D]), perm).
func (g *blockGen) heads4(t val, perm ...int64) val {
	b, s := g.x.sh[0], g.x.sh[1]
	r := g.op1("Reshape", []val{t, g.reshapeTarget([]int64{0, 0, g.n, g.d}, map[int]int{0: 0, 1: 1})}, ir.Float, shape{b, s, sd(g.n), sd(g.d)})
	return g.transpose(r, perm...)
}

func (g *blockGen) attention(x val) val {
	b, s := g.x.sh[0], g.x.sh[1]
	q, k, v := g.linear(x, g.h, g.h), g.linear(x, g.h, g.h), g.linear(x, g.h, g.h)
	scale := 1 / math.Sqrt(float64(g.d))
	switch g.class {
	case "scale-q":
		q = g.comm1("Mul", q, g.scalarF(float32(scale)))
	case "scale-k":
		k = g.comm1("Mul", k, g.scalarF(float32(scale)))
	case "scale-qk":
		f := g.scalarF(float32(math.Sqrt(scale)))
		q, k = g.comm1("Mul", q, f), g.comm1("Mul", k, f)
	}
	if g.class == "heads-3d" {
		return g.attention3d(q, k, v)
	}
	if g.seqFirst() {
		return g.attentionSeqFirst(q, k, v)
	}
	qh := g.heads4(q, 0, 2, 1, 3)
	vh := g.heads4(v, 0, 2, 1, 3)
	var kt val
	switch g.class {
	case "kt-two-transposes":
		kt = g.transpose(g.heads4(k, 0, 2, 1, 3), 0, 1, 3, 2)
	case "k-rolled-heads":
		// The heads of K rolled by one: head i meets K of head i+1. Not a near-miss:
		// softmax(Q·Kᵀ)·V is attention for any K of the heads' layout, and attention
		// that takes K as it comes (MultiHeadAttention) computes it exactly; only a
		// rewrite that assumed K is the packed projection's own head would be wrong,
		// which the output comparison catches.
		kh := g.heads4(k, 0, 2, 1, 3)
		sh1, sh2 := kh.sh.clone(), kh.sh.clone()
		sh1[1], sh2[1] = sd(g.n-1), sd(1)
		hi := g.op1("Slice", []val{kh, g.ints(1), g.ints(g.n), g.ints(1)}, ir.Float, sh1)
		lo := g.op1("Slice", []val{kh, g.ints(0), g.ints(1), g.ints(1)}, ir.Float, sh2)
		kt = g.transpose(g.op1("Concat", []val{hi, lo}, ir.Float, kh.sh, ir.IntAttr("axis", 1)), 0, 1, 3, 2)
	case "rotary-half", "rotary-interleaved", "rotary-partial", "rotary-gathered-pairs", "nm-rotary-halves", "nm-rotary-pairs-swapped":
		kh := g.heads4(k, 0, 2, 1, 3)
		cos, sin := g.angles()
		qh, kh = g.rotary(qh, cos, sin), g.rotary(kh, cos, sin)
		kt = g.transpose(kh, 0, 1, 3, 2)
	default:
		kt = g.heads4(k, 0, 2, 3, 1)
	}
	scores := g.op1("MatMul", []val{qh, kt}, ir.Float, shape{b, sd(g.n), s, s})
	switch g.class {
	case "scale-q", "scale-k", "scale-qk":
	case "scale-mul":
		scores = g.comm1("Mul", scores, g.scalarF(float32(scale)))
	default:
		scores = g.op1("Div", []val{scores, g.scalarF(float32(math.Sqrt(float64(g.d))))}, ir.Float, scores.sh)
	}
	// scale·Q·Kᵀ, before any term.
	scaled := scores
	if g.class == "softcap" { // Gemma 2: cap·tanh(scores/cap), before the mask
		c := g.scalarF(1.5)
		t := g.op1("Tanh", []val{g.op1("Div", []val{scores, c}, ir.Float, scores.sh)}, ir.Float, scores.sh)
		scores = g.comm1("Mul", t, c)
	}
	// BERT's padding mask: (1 - mask[:, None, None, :]) · -10000; mask-query-axis puts
	// it on the query axis ([B, 1, S, 1]), where it adds a constant to each row of the
	// scores, which softmax ignores.
	maskAxes := []int64{1, 2}
	if g.class == "mask-query-axis" {
		maskAxes = []int64{1, 3}
	}
	m := g.cast(g.unsqueeze(g.mask, maskAxes...), ir.Float)
	if g.class == "where-mask" { // DistilBERT: scores.masked_fill(mask == 0, fill)
		c := g.op1("Equal", []val{m, g.scalarF(0)}, ir.Bool, m.sh)
		fill := g.scalarF([]float32{-3.4028234663852886e38, float32(math.Inf(-1)), -10000}[g.r.Intn(3)])
		if g.r.Intn(2) == 0 {
			scores = g.op1("Where", []val{c, fill, scores}, ir.Float, scores.sh)
		} else {
			c = g.op1("Not", []val{c}, ir.Bool, c.sh)
			scores = g.op1("Where", []val{c, scores, fill}, ir.Float, scores.sh)
		}
	} else {
		m = g.op1("Sub", []val{g.scalarF(1), m}, ir.Float, m.sh)
		m = g.comm1("Mul", m, g.scalarF(-10000))
		if g.class != "nm-mask-after-softmax" {
			scores = g.comm1("Add", scores, m)
		}
	}
	if g.class == "causal" { // key j > query i masked: Where(j <= i, 0, -10000), from the sequence length
		n := g.op1("Gather", []val{g.shapeOf(g.x), g.constI(nil, []int64{1})}, ir.Int64, shape{}, ir.IntAttr("axis", 0))
		rg := g.op1("Range", []val{g.constI(nil, []int64{0}), n, g.constI(nil, []int64{1})}, ir.Int64, shape{s})
		qi := g.unsqueeze(rg, 1)
		keep := g.op1("LessOrEqual", []val{rg, qi}, ir.Bool, shape{s, s})
		if g.opset < 12 {
			keep = g.op1("Not", []val{g.op1("Greater", []val{rg, qi}, ir.Bool, shape{s, s})}, ir.Bool, shape{s, s})
		}
		term := g.op1("Where", []val{keep, g.scalarF(0), g.scalarF(-10000)}, ir.Float, shape{s, s})
		scores = g.comm1("Add", scores, term)
	}
	switch g.class {
	case "sliding-window":
		scores = g.slidingWindow(scores)
	case "head-bias":
		scores = g.comm1("Add", scores, g.headBias())
	}
	switch g.class {
	case "q-term":
		// A term computed from Q and K themselves, (Q·W)·Kᵀ (a content term through
		// another projection, as relative-position attention adds): the fused
		// operator's bias, computed beside it.
		qw := g.op1("MatMul", []val{qh, g.weight(g.d, g.d)}, ir.Float, qh.sh)
		scores = g.comm1("Add", scores, g.op1("MatMul", []val{qw, kt}, ir.Float, scores.sh))
	case "nm-scores-term":
		// A term read off the scores (their sum over the queries, per key) changes the
		// weights: no bias computed apart from the scores can stand for it.
		sum, _ := g.reduce("ReduceSum", scores, []int64{2}, true)
		scores = g.comm1("Add", scores, g.comm1("Mul", sum, g.scalarF(0.5)))
	}
	if g.class == "row-max" || g.class == "nm-row-max-queries" {
		// A stable softmax written out: the scores less their maximum over the keys, which
		// changes no weight; over the queries (the near-miss) it does.
		ax := int64(3)
		if g.class == "nm-row-max-queries" {
			ax = 2
		}
		mx, _ := g.reduce("ReduceMax", scores, []int64{ax}, true)
		scores = g.op1("Sub", []val{scores, mx}, ir.Float, scores.sh)
	}
	if g.class == "scores-read" {
		// The softmax's input, every term added (MultiHeadAttention's qk output), or
		// now and then scale·Q·Kᵀ alone (Attention-23's qk_matmul_output).
		if g.r.Intn(3) == 0 {
			g.readScores(scaled)
		} else {
			g.readScores(scores)
		}
	}
	axis := int64(-1)
	if g.class == "nm-softmax-axis" {
		axis = []int64{1, 2, -2}[g.r.Intn(3)]
	}
	smIn := scores
	if g.sinks {
		smIn = g.joinSinks(scores)
	}
	probs, sm := g.opN("Softmax", []val{smIn}, ir.Float, smIn.sh, ir.IntAttr("axis", axis))
	if g.sinks { // the sink column dropped
		probs = g.op1("Slice", []val{probs, g.ints(0), g.ints(-1), g.ints(-1)}, ir.Float, scores.sh)
	}
	g.witness(sm, attnKinds, g.class == "nm-softmax-axis" || g.class == "nm-mask-after-softmax" || g.class == "nm-row-max-queries" || g.class == "nm-scores-term")
	if g.class == "nm-mask-after-softmax" {
		probs = g.comm1("Add", probs, m)
	}
	ctx := g.op1("MatMul", []val{probs, vh}, ir.Float, shape{b, sd(g.n), s, sd(g.d)})
	ctx = g.transpose(ctx, 0, 2, 1, 3)
	ctx = g.op1("Reshape", []val{ctx, g.reshapeTarget([]int64{0, 0, g.h}, map[int]int{0: 0, 1: 1})}, ir.Float, g.x.sh)
	return g.linear(ctx, g.h, g.h)
}

// rotaryPositions bounds the sequence the angle tables cover.
const rotaryPositions = 64

// angles are the cos and sin of position p and frequency i, [1, 1, S, w], sliced from
// [positions, w] tables to the sequence length: w = D/2 for the interleaved class (one
// angle per pair), else D with the pair's angle in both halves (rotate-half), in the
// first w/2 channels' halves only for the partial class; nm-rotary-halves gives the
// second half other frequencies, so its channels i and i+D/2 do not rotate as a pair.
func (g *blockGen) angles() (cos, sin val) {
	w, pairs := g.d, g.d/2
	switch g.class {
	case "rotary-interleaved", "rotary-gathered-pairs", "nm-rotary-pairs-swapped":
		w = g.d / 2
	case "rotary-partial":
		w, pairs = g.d/2, g.d/4
	}
	cv, sv := make([]float32, rotaryPositions*w), make([]float32, rotaryPositions*w)
	for p := 0; p < rotaryPositions; p++ {
		for c := int64(0); c < w; c++ {
			i := c % pairs
			f := math.Pow(10000, -float64(i)/float64(pairs))
			if g.class == "nm-rotary-halves" && c >= pairs {
				f *= 1.5
			}
			cv[p*int(w)+int(c)] = float32(math.Cos(float64(p) * f))
			sv[p*int(w)+int(c)] = float32(math.Sin(float64(p) * f))
		}
	}
	s := g.x.sh[1]
	n := g.op1("Gather", []val{g.shapeOf(g.x), g.constI([]int64{1}, []int64{1})}, ir.Int64, shape{sd(1)}, ir.IntAttr("axis", 0))
	slice := func(table []float32) val {
		t := g.op1("Slice", []val{g.constF([]int64{rotaryPositions, w}, table), g.ints(0), n, g.ints(0)}, ir.Float, shape{s, sd(w)})
		return g.unsqueeze(t, 0, 1)
	}
	return slice(cv), slice(sv)
}

// rotary rotates x [B, N, S, D] by the angles in the class's form.
func (g *blockGen) rotary(x, cos, sin val) val {
	sh := x.sh
	last := func(t val, from, to, step int64) val {
		o := t.sh.clone()
		o[3] = sd((to - from + step - 1) / step)
		ins := []val{t, g.ints(from), g.ints(to), g.ints(3)}
		if step != 1 {
			ins = append(ins, g.ints(step))
		}
		return g.op1("Slice", ins, ir.Float, o)
	}
	half := func(t, cos, sin val) val { // t·cos + Concat(-t[h:], t[:h])·sin
		d := int64(t.sh[3].n)
		hi := g.op1("Neg", []val{last(t, d/2, d, 1)}, ir.Float, last(t, d/2, d, 1).sh)
		rot := g.op1("Concat", []val{hi, last(t, 0, d/2, 1)}, ir.Float, t.sh, ir.IntAttr("axis", -1))
		return g.comm1("Add", g.comm1("Mul", t, cos), g.comm1("Mul", rot, sin))
	}
	// pairs takes each pair's channels apart: strided Slices, or (ChatGLM) index 0 and 1
	// of x viewed [B, N, S, D/2, 2]; the near miss swaps the indices.
	pairs := func() (e, o val) {
		if g.class == "rotary-interleaved" {
			return last(x, 0, g.d, 2), last(x, 1, g.d, 2)
		}
		p := g.op1("Reshape", []val{x, g.ints(0, 0, 0, g.d/2, 2)}, ir.Float, append(sh[:3:3], sd(g.d/2), sd(2)))
		i, j := int64(0), int64(1)
		if g.class == "nm-rotary-pairs-swapped" {
			i, j = 1, 0
		}
		half := append(sh[:3:3], sd(g.d/2))
		return g.op1("Gather", []val{p, g.constI(nil, []int64{i})}, ir.Float, half, ir.IntAttr("axis", 4)),
			g.op1("Gather", []val{p, g.constI(nil, []int64{j})}, ir.Float, half, ir.IntAttr("axis", -1))
	}
	var y val
	switch g.class {
	case "rotary-interleaved", "rotary-gathered-pairs", "nm-rotary-pairs-swapped":
		e, o := pairs()
		a := g.op1("Sub", []val{g.comm1("Mul", e, cos), g.comm1("Mul", o, sin)}, ir.Float, e.sh)
		b := g.comm1("Add", g.comm1("Mul", e, sin), g.comm1("Mul", o, cos))
		st := append(e.sh.clone(), sd(2))
		stack := g.op1("Concat", []val{g.unsqueeze(a, -1), g.unsqueeze(b, -1)}, ir.Float, st, ir.IntAttr("axis", -1))
		y = g.op1("Reshape", []val{stack, g.ints(0, 0, 0, g.d)}, ir.Float, sh)
	case "rotary-partial":
		r := last(x, 0, g.d/2, 1)
		y = g.op1("Concat", []val{half(r, cos, sin), last(x, g.d/2, g.d, 1)}, ir.Float, sh, ir.IntAttr("axis", -1))
	default:
		y = half(x, cos, sin)
	}
	n, _ := y.v.Producer()
	g.witness(n, rotKinds, IsNearMiss(g.class))
	return y
}

// attention3d writes the heads as [B·N, S, D] (no mask), as some exporters do.
func (g *blockGen) attention3d(q, k, v val) val {
	s := g.x.sh[1]
	bn := dim{sym: g.fresh("bn")}
	to3 := func(t val) val {
		h := g.heads4(t, 0, 2, 1, 3)
		return g.op1("Reshape", []val{h, g.reshapeTarget([]int64{-1, 0, g.d}, map[int]int{1: 1})}, ir.Float, shape{bn, s, sd(g.d)})
	}
	qh, kh, vh := to3(q), to3(k), to3(v)
	scores := g.op1("MatMul", []val{qh, g.transpose(kh, 0, 2, 1)}, ir.Float, shape{bn, s, s})
	scores = g.op1("Div", []val{scores, g.scalarF(float32(math.Sqrt(float64(g.d))))}, ir.Float, scores.sh)
	probs, sm := g.opN("Softmax", []val{scores}, ir.Float, scores.sh, ir.IntAttr("axis", -1))
	g.witness(sm, attnKinds, false)
	ctx := g.op1("MatMul", []val{probs, vh}, ir.Float, shape{bn, s, sd(g.d)})
	ctx = g.op1("Reshape", []val{ctx, g.reshapeTarget([]int64{-1, g.n, 0, g.d}, map[int]int{2: 1})}, ir.Float, shape{g.x.sh[0], sd(g.n), s, sd(g.d)})
	ctx = g.transpose(ctx, 0, 2, 1, 3)
	ctx = g.op1("Reshape", []val{ctx, g.reshapeTarget([]int64{0, 0, g.h}, map[int]int{0: 0, 1: 1})}, ir.Float, g.x.sh)
	return g.linear(ctx, g.h, g.h)
}

// seqLen is the sequence length read off x, as exporters read it: a scalar (Gather of
// the Shape) or int64[1].
func (g *blockGen) seqLen(scalar bool) val {
	axis := int64(1)
	if g.seqFirst() {
		axis = 0
	}
	if scalar {
		return g.op1("Gather", []val{g.shapeOf(g.x), g.constI(nil, []int64{axis})}, ir.Int64, shape{}, ir.IntAttr("axis", 0))
	}
	return g.op1("Gather", []val{g.shapeOf(g.x), g.constI([]int64{1}, []int64{axis})}, ir.Int64, shape{sd(1)}, ir.IntAttr("axis", 0))
}

// positions are Range(0, S) as keys ([S]) and as queries ([S, 1]).
func (g *blockGen) positions() (keys, queries val) {
	s := g.x.sh[1]
	rg := g.op1("Range", []val{g.constI(nil, []int64{0}), g.seqLen(true), g.constI(nil, []int64{1})}, ir.Int64, shape{s})
	return rg, g.unsqueeze(rg, 1)
}

// slidingWindow adds Mistral's sliding-window causal mask to the scores: key j is masked
// when j > i or j <= i - W (a query sees its W latest keys), as one Where over the Or of
// the two comparisons, or as two added terms (a causal one and the window's far side),
// which qcc must read apart: the first is causal alone.
func (g *blockGen) slidingWindow(scores val) val {
	s := g.x.sh[1]
	w := int64(1 + g.r.Intn(4))
	rj, qi := g.positions()
	fut := g.op1("Greater", []val{rj, qi}, ir.Bool, shape{s, s})
	lo := g.op1("Sub", []val{qi, g.constI(nil, []int64{w})}, ir.Int64, qi.sh)
	far := g.op1("LessOrEqual", []val{rj, lo}, ir.Bool, shape{s, s})
	zero := g.scalarF(0)
	g.sinks = g.r.Intn(2) == 0
	if g.r.Intn(2) == 0 {
		ban := g.comm1("Or", fut, far)
		fill := g.scalarF([]float32{-10000, -1e9, -3.4028234663852886e38}[g.r.Intn(3)])
		return g.comm1("Add", scores, g.op1("Where", []val{ban, fill, zero}, ir.Float, shape{s, s}))
	}
	fill := g.scalarF(-10000) // two terms of the lowest float would sum to -inf
	scores = g.comm1("Add", scores, g.op1("Where", []val{fut, fill, zero}, ir.Float, shape{s, s}))
	return g.comm1("Add", scores, g.op1("Where", []val{far, fill, zero}, ir.Float, shape{s, s}))
}

// joinSinks joins each head's sink logit to the scores' rows on the key axis, then (at
// random) takes the joined row's maximum off, as GPT-OSS's export does.
func (g *blockGen) joinSinks(scores val) val {
	b, s := g.x.sh[0], g.x.sh[1]
	sk := g.randConst([]int64{1, g.n, 1, 1}, 1.5)
	s3 := g.op1("Slice", []val{g.shapeOf(scores), g.ints(0), g.ints(3)}, ir.Int64, shape{sd(3)})
	sh4 := g.op1("Concat", []val{s3, g.ints(1)}, ir.Int64, shape{sd(4)}, ir.IntAttr("axis", 0))
	snk := g.op1("Expand", []val{sk, sh4}, ir.Float, shape{b, sd(g.n), s, sd(1)})
	joined := shape{b, sd(g.n), s, dim{sym: g.fresh("keys")}}
	sc := g.op1("Concat", []val{scores, snk}, ir.Float, joined, ir.IntAttr("axis", -1))
	if g.r.Intn(2) == 0 {
		mx, _ := g.reduce("ReduceMax", sc, []int64{-1}, true)
		sc = g.op1("Sub", []val{sc, mx}, ir.Float, joined)
	}
	return sc
}

// headPositions bounds the sequence the head-bias tables cover.
const headPositions = 8

// headBias is a per-head additive bias [1, N, S, S] that no mask makes: a constant
// [1, N, P, P] table sliced to the sequence length (ALiBi-like tables stored whole), or
// T5's relative-position bias, a [2P-1, N] table gathered by j - i.
func (g *blockGen) headBias() val {
	s := g.x.sh[1]
	out := shape{sd(1), sd(g.n), s, s}
	if g.r.Intn(2) == 0 {
		table := g.randConst([]int64{1, g.n, headPositions, headPositions}, 1)
		n := g.seqLen(false)
		ends := g.op1("Concat", []val{n, n}, ir.Int64, shape{sd(2)}, ir.IntAttr("axis", 0))
		return g.op1("Slice", []val{table, g.ints(0, 0), ends, g.ints(2, 3)}, ir.Float, out)
	}
	table := g.randConst([]int64{2*headPositions - 1, g.n}, 1)
	rj, qi := g.positions()
	rel := g.op1("Sub", []val{rj, qi}, ir.Int64, shape{s, s})
	idx := g.comm1("Add", rel, g.constI(nil, []int64{headPositions - 1}))
	b := g.op1("Gather", []val{table, idx}, ir.Float, shape{s, s, sd(g.n)}, ir.IntAttr("axis", 0))
	return g.unsqueeze(g.transpose(b, 2, 0, 1), 0)
}

// readScores reads the scores outside the block, as PatchTST's residual attention does
// (a node that is no term of them): the mean over the heads as a second graph output,
// or the mean over the heads of each query's largest score added into the block output.
func (g *blockGen) readScores(scores val) {
	if g.r.Intn(2) == 0 {
		g.scoresOut, _ = g.reduce("ReduceMean", scores, []int64{1}, true)
		return
	}
	mx, _ := g.reduce("ReduceMax", scores, []int64{3}, false)
	mean, _ := g.reduce("ReduceMean", mx, []int64{1}, false)
	g.scoresOut, g.add = g.unsqueeze(mean, -1), true
}

// attentionSeqFirst is torch.nn.MultiheadAttention's export without batch_first: x is
// [S, B, C], the heads are viewed [S, B·N, D] and transposed to [B·N, S, D], the context
// transposed back and viewed [S, B, C]. Q is scaled before the product (as torch does)
// or the scores after it; nm-seq-first-softmax-batch takes the softmax over B·N.
func (g *blockGen) attentionSeqFirst(q, k, v val) val {
	s := g.x.sh[0]
	bn := dim{sym: g.fresh("bn")}
	split := func(t val) val {
		return g.op1("Reshape", []val{t, g.ints(0, -1, g.d)}, ir.Float, shape{s, bn, sd(g.d)})
	}
	scaleQ := g.r.Intn(2) == 0
	if scaleQ {
		q = g.comm1("Mul", q, g.scalarF(float32(1/math.Sqrt(float64(g.d)))))
	}
	qh, vh := g.transpose(split(q), 1, 0, 2), g.transpose(split(v), 1, 0, 2)
	var kt val
	if g.r.Intn(2) == 0 {
		kt = g.transpose(split(k), 1, 2, 0)
	} else {
		kt = g.transpose(g.transpose(split(k), 1, 0, 2), 0, 2, 1)
	}
	scores := g.op1("MatMul", []val{qh, kt}, ir.Float, shape{bn, s, s})
	if !scaleQ {
		scores = g.op1("Div", []val{scores, g.scalarF(float32(math.Sqrt(float64(g.d))))}, ir.Float, scores.sh)
	}
	axis := int64(-1)
	if g.class == "nm-seq-first-softmax-batch" {
		axis = 0
	}
	probs, sm := g.opN("Softmax", []val{scores}, ir.Float, scores.sh, ir.IntAttr("axis", axis))
	g.witness(sm, attnKinds, IsNearMiss(g.class))
	ctx := g.op1("MatMul", []val{probs, vh}, ir.Float, shape{bn, s, sd(g.d)})
	ctx = g.transpose(ctx, 1, 0, 2)
	ctx = g.op1("Reshape", []val{ctx, g.ints(0, -1, g.h)}, ir.Float, g.x.sh)
	return g.linear(ctx, g.h, g.h)
}

// residual is skip + t; broadcast reads the skip at the first position only ([B, 1, H]).
func (g *blockGen) residual(skip, t val, broadcast bool) val {
	if !broadcast {
		return g.comm1("Add", skip, t)
	}
	sh := skip.sh.clone()
	sh[1] = sd(1)
	first := g.op1("Slice", []val{skip, g.ints(0), g.ints(1), g.ints(1)}, ir.Float, sh)
	out, n := g.comm("Add", t, first)
	g.witness(n, skipKinds, true)
	return out
}

// norm writes LayerNorm or RMSNorm over the last axis in one of the decomposed forms;
// class selects a near-miss (only the first norm of a block gets one).
func (g *blockGen) norm(x val, class string) val {
	rms := g.r.Intn(4) == 0 && class != "nm-var-uncentred" // uncentred is RMSNorm's own form
	cast := g.class == "cast"
	if cast {
		x = g.cast(x, ir.Float)
	}
	meanAxis := int64(-1)
	if class == "nm-mean-axis" {
		meanAxis = 1
	}
	var root *ir.Node // the node the block must (or must not) cover
	if g.class == "ln-op" && !rms {
		st := []int64{g.h}
		y, n := g.opN("LayerNormalization", []val{x, g.constF(st, g.randGamma()), g.randConst(st, 0.2)}, ir.Float, x.sh,
			ir.IntAttr("axis", -1), ir.FloatAttr("epsilon", 1e-5))
		g.witness(n, normKinds, false)
		return y
	}
	dev := x
	if !rms {
		mean, rn := g.reduce("ReduceMean", x, []int64{meanAxis}, true)
		if class == "nm-mean-axis" {
			root = rn
		}
		dev = g.op1("Sub", []val{x, mean}, ir.Float, x.sh)
	}
	sqIn := dev
	if class == "nm-var-uncentred" { // the variance of x about 0, not about its mean
		sqIn = x
	}
	var sq val
	var sqn *ir.Node
	if g.r.Intn(2) == 0 {
		sq, sqn = g.opN("Pow", []val{sqIn, g.scalarF(2)}, ir.Float, sqIn.sh)
	} else {
		sq, sqn = g.opN("Mul", []val{sqIn, sqIn}, ir.Float, sqIn.sh)
	}
	if class == "nm-var-uncentred" {
		root = sqn
	}
	varAxis := int64(-1)
	if rms && class == "nm-mean-axis" {
		varAxis = 1
	}
	variance, vn := g.reduce("ReduceMean", sq, []int64{varAxis}, true)
	if rms && class == "nm-mean-axis" {
		root = vn
	}
	eps := g.scalarF([]float32{1e-5, 1e-12, 1e-6}[g.r.Intn(3)])
	var normed val
	if class == "nm-eps-outside" {
		sdv := g.op1("Sqrt", []val{variance}, ir.Float, variance.sh)
		den, n := g.comm("Add", sdv, eps)
		root = n
		normed = g.op1("Div", []val{dev, den}, ir.Float, dev.sh)
	} else {
		ve := g.comm1("Add", variance, eps)
		var n *ir.Node
		switch g.r.Intn(3) {
		case 0:
			var sdv val
			sdv, n = g.opN("Sqrt", []val{ve}, ir.Float, ve.sh)
			normed = g.op1("Div", []val{dev, sdv}, ir.Float, dev.sh)
		case 1:
			var sdv val
			sdv, n = g.opN("Sqrt", []val{ve}, ir.Float, ve.sh)
			normed = g.comm1("Mul", dev, g.op1("Reciprocal", []val{sdv}, ir.Float, sdv.sh))
		default:
			var inv val
			inv, n = g.opN("Pow", []val{ve, g.scalarF(-0.5)}, ir.Float, ve.sh)
			normed = g.comm1("Mul", dev, inv)
		}
		if root == nil {
			root = n
		}
	}
	var gamma val
	if class == "nm-gamma-input" {
		gamma = g.input("gamma", ir.Float, shape{sd(g.h)})
	} else {
		gamma = g.constF([]int64{g.h}, g.randGamma())
	}
	y, gn := g.comm("Mul", normed, gamma)
	if class == "nm-gamma-input" {
		root = gn
	}
	if !rms {
		y = g.comm1("Add", y, g.randConst([]int64{g.h}, 0.2))
	}
	if cast {
		y = g.cast(y, ir.Float)
	}
	g.witness(root, normKinds, class == "nm-eps-outside" || class == "nm-mean-axis" || class == "nm-gamma-input" ||
		class == "nm-var-uncentred")
	return y
}

func (g *blockGen) randGamma() []float32 {
	v := g.randF(int(g.h), 0.5)
	for i := range v {
		v[i]++
	}
	return v
}

func (g *blockGen) ffn(y val) val {
	x := y
	if g.class == "qdq" {
		x = g.qdq(x)
	}
	f := 2 * g.h
	h := g.linear(x, g.h, f)
	return g.linear(g.gelu(h), f, g.h)
}

// gelu writes one of the GELU forms; nm-gelu-const puts one constant 1% off.
func (g *blockGen) gelu(x val) val {
	off := g.class == "nm-gelu-const" || g.class == "nm-gelu-split-input"
	form := g.r.Intn(3)
	if g.class == "nm-gelu-split-input" {
		form = 0
	}
	consts := map[string]int{"erf": 2, "tanh": 3, "sigmoid": 1}
	which := -1 // the constant made wrong
	if g.class == "nm-gelu-const" {
		switch form {
		case 0:
			which = g.r.Intn(consts["erf"])
		case 1:
			which = g.r.Intn(consts["tanh"])
		default:
			which = 0
		}
	}
	k := 0
	c := func(v float64) val { // the k-th constant of the form
		if k == which {
			v *= 1.01
		}
		k++
		return g.scalarF(float32(v))
	}
	var wrongUse *ir.Node
	mark := func(n *ir.Node, before int) {
		if which >= before && which < k && wrongUse == nil {
			wrongUse = n
		}
	}
	var core *ir.Node
	var p val // the (1 + erf/tanh) factor, or the sigmoid
	switch form {
	case 0: // erf
		var arg val
		var n *ir.Node
		kb := k
		in := x
		if g.class == "nm-gelu-split-input" { // erf of another value than the one it multiplies
			var sn *ir.Node
			in, sn = g.comm("Add", x, g.randConst([]int64{x.sh[len(x.sh)-1].n}, 0.5))
			wrongUse = sn
		}
		if g.r.Intn(2) == 0 {
			arg, n = g.opN("Div", []val{in, c(math.Sqrt2)}, ir.Float, x.sh)
		} else {
			arg, n = g.comm("Mul", in, c(1/math.Sqrt2))
		}
		mark(n, kb)
		var e val
		e, core = g.opN("Erf", []val{arg}, ir.Float, x.sh)
		kb = k
		p, n = g.comm("Add", e, c(1))
		mark(n, kb)
	case 1: // tanh
		var n *ir.Node
		var cube val
		if g.r.Intn(2) == 0 {
			cube = g.op1("Pow", []val{x, g.scalarF(3)}, ir.Float, x.sh)
		} else {
			cube = g.comm1("Mul", g.comm1("Mul", x, x), x)
		}
		kb := k
		t, n := g.comm("Mul", cube, c(0.044715))
		mark(n, kb)
		inner := g.comm1("Add", x, t)
		kb = k
		inner, n = g.comm("Mul", inner, c(math.Sqrt(2/math.Pi)))
		mark(n, kb)
		var th val
		th, core = g.opN("Tanh", []val{inner}, ir.Float, x.sh)
		kb = k
		p, n = g.comm("Add", th, c(1))
		mark(n, kb)
	default: // x·sigmoid(1.702·x)
		kb := k
		s, n := g.comm("Mul", x, c(1.702))
		mark(n, kb)
		p, core = g.opN("Sigmoid", []val{s}, ir.Float, x.sh)
		out := g.comm1("Mul", x, p)
		g.geluWitness(core, wrongUse, off)
		return out
	}
	var out val
	switch g.r.Intn(3) {
	case 0: // after: x·(1+…)·0.5
		out = g.comm1("Mul", g.comm1("Mul", x, p), g.scalarF(0.5))
	case 1: // before: (0.5·x)·(1+…)
		out = g.comm1("Mul", g.comm1("Mul", x, g.scalarF(0.5)), p)
	default: // inner: x·((1+…)·0.5)
		out = g.comm1("Mul", x, g.comm1("Mul", p, g.scalarF(0.5)))
	}
	g.geluWitness(core, wrongUse, off)
	return out
}

func (g *blockGen) geluWitness(core, wrong *ir.Node, off bool) {
	if off {
		g.witness(wrong, geluKinds, true)
		return
	}
	g.witness(core, geluKinds, false)
}
