package fuzz

import (
	"math"
	"math/rand"

	"github.com/qcc-dev/qcc/ir"
)

// dagOp grows the graph by one operator over values of the pool; it returns false when
// the values it drew do not fit (the generator then draws again).
type dagOp struct {
	name   string
	weight int
	gen    func(d *dag) bool
}

// dagOps is the operator table of random DAGs: what the evaluator folds and the shape
// engine infers, with numerics kept in range (divisors away from 0, Exp after Tanh).
var dagOps = []dagOp{
	{"unary", 6, (*dag).unary},
	{"binary", 8, (*dag).binary},
	{"binary-const", 6, (*dag).binaryConst},
	{"matmul", 4, (*dag).matmul},
	{"matmul-pair", 2, (*dag).matmulPair},
	{"gemm", 2, (*dag).gemm},
	{"linear-bn", 2, (*dag).linearBN},
	{"reshape", 4, (*dag).reshape},
	{"transpose", 3, (*dag).transposeOp},
	{"slice", 3, (*dag).slice},
	{"concat", 2, (*dag).concat},
	{"gather", 2, (*dag).gather},
	{"split", 2, (*dag).split},
	{"reduce", 3, (*dag).reduceOp},
	{"softmax", 2, (*dag).softmax},
	{"layernorm", 2, (*dag).layerNorm},
	{"cast", 2, (*dag).castOp},
	{"where", 2, (*dag).where},
	{"expand", 2, (*dag).expand},
	{"shape-scale", 2, (*dag).shapeScale},
	{"range-add", 1, (*dag).rangeAdd},
	{"constant-of-shape", 1, (*dag).constantOfShape},
	{"const-subgraph", 2, (*dag).constSubgraph},
	{"int-arith", 3, (*dag).intArith},
	{"misc", 6, (*dag).misc},
	{"norm-fragment", 4, (*dag).normFragment},
	{"gelu-fragment", 3, (*dag).geluFragment},
	{"attention-fragment", 2, (*dag).attentionFragment},
}

type dag struct {
	*builder
	pool []val // float values, newest last
	intv []val // int64 values (shape arithmetic, casts), newest last
}

// GenDAG returns a random DAG model for seed.
func GenDAG(seed int64) *Case {
	r := rand.New(rand.NewSource(seed))
	opsets := []int64{11, 13, 17, 18} // 11: Softmax over the flattened trailing axes, axes as attributes
	d := &dag{builder: newBuilder(r, opsets[r.Intn(len(opsets))])}
	syms := []string{"batch", "seq"}
	nIn := 1 + r.Intn(2)
	for i := 0; i < nIn; i++ {
		rank := 1 + r.Intn(3)
		sh := make(shape, rank)
		for j := range sh {
			switch {
			case r.Intn(3) == 0 && j < 2:
				sh[j] = dim{sym: syms[j]}
			case r.Intn(5) == 0:
				sh[j] = sd(1)
			default:
				sh[j] = sd(int64(2 + r.Intn(4)))
			}
		}
		// Later inputs often share the first one's shape so that binary ops meet.
		if i > 0 && r.Intn(2) == 0 {
			sh = d.pool[0].sh.clone()
		}
		d.pool = append(d.pool, d.input(string(rune('x'+i)), ir.Float, sh))
	}
	// Constants in the pool make whole subgraphs that fold evaluates: the differential
	// test of the evaluator against ORT.
	for i := r.Intn(3); i > 0; i-- {
		dims := make([]int64, 1+r.Intn(3))
		for j := range dims {
			dims[j] = int64(1 + r.Intn(4))
		}
		d.pool = append(d.pool, d.randConst(dims, 2))
	}
	steps := 4 + r.Intn(18)
	total := 0
	for _, o := range dagOps {
		total += o.weight
	}
	for done, tries := 0, 0; done < steps && tries < 20*steps; tries++ {
		k := r.Intn(total)
		for _, o := range dagOps {
			if k < o.weight {
				if o.gen(d) {
					done++
				}
				break
			}
			k -= o.weight
		}
	}
	// Outputs: every value nothing reads (at most four, newest first), and sometimes an
	// intermediate one too.
	var outs []val
	for i := len(d.pool) - 1; i >= 0 && len(outs) < 4; i-- {
		x := d.pool[i]
		if len(x.v.Uses()) == 0 && !x.v.IsGraphInput() && !x.v.IsConst() {
			outs = append(outs, x)
		}
	}
	if len(outs) == 0 || r.Intn(4) == 0 {
		x := d.pool[len(d.pool)-1]
		if !x.v.IsGraphInput() && !x.v.IsConst() && !contains(outs, x) {
			outs = append(outs, x)
		}
	}
	if len(d.intv) > 0 && r.Intn(2) == 0 {
		x := d.intv[len(d.intv)-1]
		if !x.v.IsConst() && !x.v.IsGraphOutput() {
			outs = append(outs, x)
		}
	}
	if len(outs) == 0 { // nothing was generated: one op on the input
		outs = append(outs, d.op1("Relu", []val{d.pool[0]}, ir.Float, d.pool[0].sh))
	}
	for _, x := range outs {
		d.output(x)
	}
	return &Case{Model: d.m, Class: "dag"}
}

func contains(vs []val, x val) bool {
	for _, v := range vs {
		if v.v == x.v {
			return true
		}
	}
	return false
}

// pick draws a pool value, the newest more often.
func (d *dag) pick() val {
	n := len(d.pool)
	if d.r.Intn(3) == 0 {
		return d.pool[d.r.Intn(n)]
	}
	return d.pool[max(0, n-1-d.r.Intn(3))]
}

func (d *dag) push(x val) bool {
	d.pool = append(d.pool, x)
	return true
}

// bounded returns x squashed into (-3, 3) when its magnitude may have grown.
func (d *dag) bounded(x val) val {
	t := d.op1("Tanh", []val{x}, x.dt, x.sh)
	return d.op1("Mul", []val{t, d.scalarF(3)}, x.dt, x.sh)
}

func (d *dag) unary() bool {
	x := d.pick()
	switch d.r.Intn(10) {
	case 0:
		return d.push(d.op1("Relu", []val{x}, x.dt, x.sh))
	case 1:
		return d.push(d.op1("Neg", []val{x}, x.dt, x.sh))
	case 2:
		return d.push(d.op1("Abs", []val{x}, x.dt, x.sh))
	case 3:
		return d.push(d.op1("Tanh", []val{x}, x.dt, x.sh))
	case 4:
		return d.push(d.op1("Sigmoid", []val{x}, x.dt, x.sh))
	case 5:
		return d.push(d.op1("Erf", []val{x}, x.dt, x.sh))
	case 6:
		return d.push(d.op1("Exp", []val{d.op1("Tanh", []val{x}, x.dt, x.sh)}, x.dt, x.sh))
	case 7:
		a := d.op1("Abs", []val{x}, x.dt, x.sh)
		return d.push(d.op1("Sqrt", []val{a}, x.dt, x.sh))
	case 8:
		a := d.op1("Abs", []val{x}, x.dt, x.sh)
		p := d.op1("Add", []val{a, d.scalarF(1)}, x.dt, x.sh)
		if d.r.Intn(2) == 0 {
			return d.push(d.op1("Log", []val{p}, x.dt, x.sh))
		}
		return d.push(d.op1("Reciprocal", []val{p}, x.dt, x.sh))
	default:
		return d.push(d.op1("Pow", []val{d.bounded(x), d.scalarF(2)}, x.dt, x.sh))
	}
}

// binary combines two pool values that broadcast.
func (d *dag) binary() bool {
	x, y := d.pick(), d.pick()
	sh, ok := broadcast(x.sh, y.sh)
	if !ok {
		return false
	}
	ops := []string{"Add", "Sub", "Mul", "Div", "Max", "Min"}
	op := ops[d.r.Intn(len(ops))]
	if op == "Div" { // a divisor in [1, ∞)
		a := d.op1("Abs", []val{y}, y.dt, y.sh)
		y = d.op1("Add", []val{a, d.scalarF(1)}, y.dt, y.sh)
	}
	if op == "Mul" {
		x, y = d.bounded(x), d.bounded(y)
	}
	return d.push(d.op1(op, []val{x, y}, ir.Float, sh))
}

// constShape draws the shape of a constant operand for x: a scalar, x's last dim, or x's
// shape with some dims 1 (symbolic dims always 1).
func (d *dag) constShape(x val) []int64 {
	switch d.r.Intn(4) {
	case 0:
		return nil
	case 1:
		if x.rank() > 0 && x.sh[x.rank()-1].static() {
			return []int64{x.sh[x.rank()-1].n}
		}
		return []int64{1}
	default:
		out := make([]int64, x.rank())
		for i, dd := range x.sh {
			out[i] = 1
			if dd.static() && d.r.Intn(2) == 0 {
				out[i] = dd.n
			}
		}
		return out
	}
}

func (d *dag) binaryConst() bool {
	x := d.pick()
	dims := d.constShape(x)
	ops := []string{"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"}
	op := ops[d.r.Intn(len(ops))]
	var c val
	switch op {
	case "Div":
		v := d.randF(numel(dims), 1)
		for i := range v {
			v[i] = float32(math.Copysign(0.5+math.Abs(float64(v[i])), float64(v[i])))
		}
		c = d.constF(dims, v)
	case "Pow":
		x = d.op1("Abs", []val{d.bounded(x)}, x.dt, x.sh)
		exps := []float32{0.5, 1, 2, 3}
		c = d.constF(nil, []float32{exps[d.r.Intn(len(exps))]})
		dims = nil
	default:
		c = d.randConst(dims, 2)
	}
	sh, _ := broadcast(x.sh, dims64(dims))
	ins := []val{x, c}
	if op != "Sub" && op != "Div" && op != "Pow" && d.r.Intn(2) == 0 {
		ins = []val{c, x}
	} else if op == "Sub" && d.r.Intn(2) == 0 {
		ins = []val{c, x}
	}
	return d.push(d.op1(op, ins, ir.Float, sh))
}

func (d *dag) lastStatic(x val) (int64, bool) {
	if x.rank() == 0 || !x.sh[x.rank()-1].static() {
		return 0, false
	}
	return x.sh[x.rank()-1].n, true
}

func (d *dag) matmul() bool {
	x := d.pick()
	k, ok := d.lastStatic(x)
	if !ok || x.rank() < 1 {
		return false
	}
	n := int64(1 + d.r.Intn(6))
	sh := x.sh.clone()
	if x.rank() == 1 {
		sh = shape{}
	}
	out := d.op1("MatMul", []val{x, d.weight(k, n)}, ir.Float, append(sh[:max(0, len(sh)-1)], sd(n)))
	if x.rank() == 1 {
		out.sh = shape{sd(n)}
	}
	if d.r.Intn(2) == 0 {
		bias := d.randConst([]int64{n}, 0.5)
		ins := []val{out, bias}
		if d.r.Intn(2) == 0 {
			ins = []val{bias, out}
		}
		out = d.op1("Add", ins, ir.Float, out.sh)
	}
	return d.push(out)
}

// linearBN is a projection followed by an inference BatchNormalization of its output
// channels: on a rank-2 projection directly, or on a rank-3 one flattened to [B·S, n]
// and reshaped back by its Shape (LeViT's Linear+BN), which fold moves into the weights.
func (d *dag) linearBN() bool {
	x := d.pick()
	k, ok := d.lastStatic(x)
	if !ok || (x.rank() != 2 && x.rank() != 3) {
		return false
	}
	n := int64(1 + d.r.Intn(6))
	sh := append(x.sh[:x.rank()-1:x.rank()-1], sd(n))
	y := d.op1("MatMul", []val{x, d.weight(k, n)}, ir.Float, sh)
	in := y
	if x.rank() == 3 {
		in = d.op1("Flatten", []val{y}, ir.Float, shape{{sym: d.fresh("rows")}, sd(n)}, ir.IntAttr("axis", 2))
	}
	variance := d.randF(int(n), 0.5)
	for i := range variance {
		variance[i] = 0.6 + variance[i]*variance[i]
	}
	bn := d.op1("BatchNormalization", []val{in, d.randConst([]int64{n}, 1), d.randConst([]int64{n}, 0.5),
		d.randConst([]int64{n}, 0.5), d.constF([]int64{n}, variance)}, ir.Float, in.sh)
	if x.rank() == 3 {
		bn = d.op1("Reshape", []val{bn, d.shapeOf(y)}, ir.Float, sh)
	}
	return d.push(bn)
}

// matmulPair multiplies x by the transpose of its last two axes (x·xᵀ or x·yᵀ), as
// attention scores do.
func (d *dag) matmulPair() bool {
	x := d.pick()
	if x.rank() < 2 {
		return false
	}
	y := x
	for _, c := range d.pool {
		if len(c.sh) == len(x.sh) && c.v != x.v && sameShape(c.sh, x.sh) && d.r.Intn(2) == 0 {
			y = c
		}
	}
	r := int64(x.rank())
	perm := make([]int64, r)
	for i := range perm {
		perm[i] = int64(i)
	}
	perm[r-1], perm[r-2] = r-2, r-1
	yt := d.transpose(d.bounded(y), perm...)
	sh := x.sh.clone()
	sh[r-1] = x.sh[r-2]
	return d.push(d.op1("MatMul", []val{d.bounded(x), yt}, ir.Float, sh))
}

func sameShape(a, b shape) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].same(b[i]) {
			return false
		}
	}
	return true
}

// gemm runs Gemm on x flattened to 2-D [-1, K], reshaping back through shape arithmetic
// (Shape, Slice, Concat) as exporters do.
func (d *dag) gemm() bool {
	x := d.pick()
	k, ok := d.lastStatic(x)
	if !ok || x.rank() < 2 {
		return false
	}
	n := int64(1 + d.r.Intn(6))
	x2 := x
	var rows dim = x.sh[0]
	if x.rank() > 2 {
		rows = dim{sym: d.fresh("rows")}
		if st, ok := x.sh[:x.rank()-1].static(); ok {
			rows = sd(int64(numel(st)))
		}
		x2 = d.op1("Reshape", []val{x, d.ints(-1, k)}, ir.Float, shape{rows, sd(k)})
	}
	transB := d.r.Intn(2) == 0
	w := d.weight(k, n)
	if transB {
		w = d.constF([]int64{n, k}, d.randF(int(n*k), math.Sqrt(3/float64(k))))
	}
	attrs := []*ir.Attr{}
	if transB {
		attrs = append(attrs, ir.IntAttr("transB", 1))
	}
	if d.r.Intn(2) == 0 {
		attrs = append(attrs, ir.FloatAttr("alpha", float32(0.5+d.r.Float64())), ir.FloatAttr("beta", float32(0.5+d.r.Float64())))
	}
	ins := []val{x2, w}
	switch d.r.Intn(3) {
	case 0:
		ins = append(ins, d.randConst([]int64{n}, 1))
	case 1:
		ins = append(ins, d.randConst([]int64{1, n}, 1))
	}
	y := d.op1("Gemm", ins, ir.Float, shape{rows, sd(n)}, attrs...)
	if x.rank() == 2 {
		return d.push(y)
	}
	lead := d.op1("Slice", []val{d.shapeOf(x), d.ints(0), d.ints(-1)}, ir.Int64, shape{sd(int64(x.rank() - 1))})
	target := d.op1("Concat", []val{lead, d.ints(n)}, ir.Int64, shape{sd(int64(x.rank()))}, ir.IntAttr("axis", 0))
	sh := x.sh.clone()
	sh[len(sh)-1] = sd(n)
	return d.push(d.op1("Reshape", []val{y, target}, ir.Float, sh))
}

func (d *dag) reshape() bool {
	x := d.pick()
	r := x.rank()
	zeros := func(n int) []int64 { return make([]int64, n) }
	switch d.r.Intn(4) {
	case 0: // split the last dim in two
		k, ok := d.lastStatic(x)
		if !ok || k < 4 || k%2 != 0 {
			return false
		}
		a := int64(2)
		sh := append(x.sh[:r-1].clone(), sd(a), sd(k/a))
		return d.push(d.op1("Reshape", []val{x, d.ints(append(zeros(r-1), a, k/a)...)}, ir.Float, sh))
	case 1: // merge the last two dims
		if r < 2 || !x.sh[r-1].static() || !x.sh[r-2].static() {
			return false
		}
		sh := append(x.sh[:r-2].clone(), sd(x.sh[r-1].n*x.sh[r-2].n))
		return d.push(d.op1("Reshape", []val{x, d.ints(append(zeros(r-2), -1)...)}, ir.Float, sh))
	case 2: // a static shape, flattened differently
		st, ok := x.sh.static()
		if !ok || r == 0 {
			return false
		}
		n := int64(numel(st))
		return d.push(d.op1("Reshape", []val{x, d.ints(1, -1, 1)}, ir.Float, shape{sd(1), sd(n), sd(1)}))
	default: // shape arithmetic: Concat(Shape(x)[:-1], [1, last])
		if r < 1 {
			return false
		}
		lead := d.op1("Slice", []val{d.shapeOf(x), d.ints(0), d.ints(int64(r - 1))}, ir.Int64, shape{sd(int64(r - 1))})
		last := d.dimOf(x, r-1)
		target := d.op1("Concat", []val{lead, d.ints(1), last}, ir.Int64, shape{sd(int64(r + 1))}, ir.IntAttr("axis", 0))
		sh := append(x.sh[:r-1].clone(), sd(1), x.sh[r-1])
		return d.push(d.op1("Reshape", []val{x, target}, ir.Float, sh))
	}
}

func (d *dag) transposeOp() bool {
	x := d.pick()
	if x.rank() < 2 {
		return false
	}
	perm := d.r.Perm(x.rank())
	p := make([]int64, len(perm))
	for i, v := range perm {
		p[i] = int64(v)
	}
	return d.push(d.transpose(x, p...))
}

// sliceLen is the number of elements Slice keeps of a dim of size n (ONNX's clamping).
func sliceLen(n, start, end, step int64) int64 {
	clamp := func(v, lo, hi int64) int64 { return min(max(v, lo), hi) }
	if start < 0 {
		start += n
	}
	if end < 0 {
		end += n
	}
	if step > 0 {
		start, end = clamp(start, 0, n), clamp(end, 0, n)
		if end <= start {
			return 0
		}
		return (end - start + step - 1) / step
	}
	start, end = clamp(start, -1, n-1), clamp(end, -1, n-1)
	if start <= end {
		return 0
	}
	return (start - end - step - 1) / -step
}

func (d *dag) slice() bool {
	x := d.pick()
	if x.rank() == 0 {
		return false
	}
	axis := d.r.Intn(x.rank())
	dd := x.sh[axis]
	sh := x.sh.clone()
	var start, end, step int64
	if !dd.static() { // the whole axis, written the ways exporters do
		start, step = 0, 1
		end = []int64{math.MaxInt64, 1 << 30, -1 + 1<<62}[d.r.Intn(3)]
	} else {
		n := dd.n
		step = []int64{1, 1, 2, -1}[d.r.Intn(4)]
		start = int64(d.r.Intn(int(2*n+2))) - n - 1
		end = int64(d.r.Intn(int(2*n+2))) - n - 1
		if d.r.Intn(4) == 0 {
			end = math.MaxInt64
			if step < 0 {
				end = math.MinInt64
			}
		}
		k := sliceLen(n, start, end, step)
		if k == 0 {
			return false
		}
		sh[axis] = sd(k)
	}
	ax := int64(axis)
	if d.r.Intn(2) == 0 {
		ax -= int64(x.rank())
	}
	ins := []val{x, d.ints(start), d.ints(end), d.ints(ax)}
	if step != 1 || d.r.Intn(2) == 0 {
		ins = append(ins, d.ints(step))
	}
	return d.push(d.op1("Slice", ins, x.dt, sh))
}

func (d *dag) concat() bool {
	x := d.pick()
	var axes []int
	for i, dd := range x.sh {
		if dd.static() {
			axes = append(axes, i)
		}
	}
	if len(axes) == 0 {
		return false
	}
	axis := axes[d.r.Intn(len(axes))]
	var others []val
	for _, c := range d.pool {
		if len(c.sh) == len(x.sh) {
			ok := true
			for i := range c.sh {
				if i != axis && !c.sh[i].same(x.sh[i]) || i == axis && !c.sh[i].static() {
					ok = false
				}
			}
			if ok {
				others = append(others, c)
			}
		}
	}
	y := others[d.r.Intn(len(others))] // x itself is always there
	sh := x.sh.clone()
	sh[axis] = sd(x.sh[axis].n + y.sh[axis].n)
	ins := []val{x, y}
	if d.r.Intn(2) == 0 {
		ins = []val{y, x}
	}
	if st, ok := x.sh.static(); ok && d.r.Intn(2) == 0 { // and a constant block
		st[axis] = 1 + int64(d.r.Intn(2))
		ins = append(ins, d.randConst(st, 1))
		sh[axis] = sd(sh[axis].n + st[axis])
	}
	ax := int64(axis)
	if d.r.Intn(2) == 0 {
		ax -= int64(x.rank())
	}
	return d.push(d.op1("Concat", ins, x.dt, sh, ir.IntAttr("axis", ax)))
}

func (d *dag) gather() bool {
	x := d.pick()
	var axes []int
	for i, dd := range x.sh {
		if dd.static() {
			axes = append(axes, i)
		}
	}
	if len(axes) == 0 {
		return false
	}
	axis := axes[d.r.Intn(len(axes))]
	n := x.sh[axis].n
	if n == 0 {
		return false
	}
	idx := func() int64 { return int64(d.r.Intn(int(2*n))) - n }
	sh := x.sh[:axis].clone()
	var ind val
	if d.r.Intn(2) == 0 {
		ind = d.constI(nil, []int64{idx()})
	} else {
		k := 1 + d.r.Intn(3)
		v := make([]int64, k)
		for i := range v {
			v[i] = idx()
		}
		ind = d.constI([]int64{int64(k)}, v)
		sh = append(sh, sd(int64(k)))
	}
	sh = append(sh, x.sh[axis+1:]...)
	return d.push(d.op1("Gather", []val{x, ind}, x.dt, sh, ir.IntAttr("axis", int64(axis))))
}

func (d *dag) split() bool {
	x := d.pick()
	var axes []int
	for i, dd := range x.sh {
		if dd.static() && dd.n >= 2 {
			axes = append(axes, i)
		}
	}
	if len(axes) == 0 {
		return false
	}
	axis := axes[d.r.Intn(len(axes))]
	n := x.sh[axis].n
	a := 1 + int64(d.r.Intn(int(n-1)))
	parts := []int64{a, n - a}
	outs := make([]val, len(parts))
	for i, p := range parts {
		sh := x.sh.clone()
		sh[axis] = sd(p)
		outs[i] = val{dt: x.dt, sh: sh}
	}
	if d.opset < 13 {
		_, outs = d.node("Split", []val{x}, outs, ir.IntAttr("axis", int64(axis)), ir.IntsAttr("split", parts...))
	} else {
		_, outs = d.node("Split", []val{x, d.ints(parts...)}, outs, ir.IntAttr("axis", int64(axis)))
	}
	d.push(outs[0])
	return d.push(outs[1])
}

func (d *dag) reduceOp() bool {
	x := d.pick()
	if x.rank() == 0 {
		return false
	}
	ops := []string{"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"}
	perm := d.r.Perm(x.rank())
	k := 1 + d.r.Intn(x.rank())
	axes := make([]int64, k)
	for i := 0; i < k; i++ {
		axes[i] = int64(perm[i])
		if d.r.Intn(2) == 0 {
			axes[i] -= int64(x.rank())
		}
	}
	y, _ := d.reduce(ops[d.r.Intn(len(ops))], x, axes, d.r.Intn(2) == 0)
	return d.push(y)
}

func (d *dag) softmax() bool {
	x := d.pick()
	if x.rank() == 0 {
		return false
	}
	axis := int64(d.r.Intn(x.rank()))
	if d.r.Intn(2) == 0 {
		axis -= int64(x.rank())
	}
	return d.push(d.op1("Softmax", []val{x}, x.dt, x.sh, ir.IntAttr("axis", axis)))
}

func (d *dag) layerNorm() bool {
	x := d.pick()
	if d.opset < 17 || x.rank() == 0 {
		return false
	}
	first := x.rank()
	for first > 0 && x.sh[first-1].static() {
		first--
	}
	if first == x.rank() {
		return false
	}
	axis := first + d.r.Intn(x.rank()-first)
	st, _ := x.sh[axis:].static()
	ins := []val{x, d.randConst(st, 1.5)}
	if d.r.Intn(2) == 0 {
		ins = append(ins, d.randConst(st, 1))
	}
	eps := []float32{1e-5, 1e-12, 1e-3}[d.r.Intn(3)]
	ax := int64(axis)
	if d.r.Intn(2) == 0 {
		ax -= int64(x.rank())
	}
	return d.push(d.op1("LayerNormalization", ins, x.dt, x.sh, ir.IntAttr("axis", ax), ir.FloatAttr("epsilon", eps)))
}

func (d *dag) castOp() bool {
	x := d.bounded(d.pick())
	switch d.r.Intn(4) {
	case 0: // through int64 and back: truncation
		s := d.op1("Mul", []val{x, d.scalarF(3)}, x.dt, x.sh)
		return d.push(d.cast(d.cast(s, ir.Int64), ir.Float))
	case 1:
		return d.push(d.cast(d.cast(x, ir.Double), ir.Float))
	case 2:
		return d.push(d.cast(d.cast(x, ir.Float16), ir.Float))
	default: // a no-op Cast
		return d.push(d.cast(x, ir.Float))
	}
}

func (d *dag) where() bool {
	x, y := d.pick(), d.pick()
	sh, ok := broadcast(x.sh, y.sh)
	if !ok {
		return false
	}
	c := d.pick()
	sh2, ok := broadcast(sh, c.sh)
	if !ok {
		return false
	}
	ops := []string{"Greater", "Less", "Equal", "GreaterOrEqual"}
	if d.opset < 12 { // GreaterOrEqual is opset 12
		ops = ops[:3]
	}
	cond := d.op1(ops[d.r.Intn(len(ops))], []val{c, d.scalarF(float32(d.r.Intn(3) - 1))}, ir.Bool, c.sh)
	if d.r.Intn(3) == 0 {
		cond = d.op1("Not", []val{cond}, ir.Bool, cond.sh)
	}
	return d.push(d.op1("Where", []val{cond, x, y}, ir.Float, sh2))
}

// expand broadcasts x to the shape of another pool value, read with Shape (or to a
// constant shape when static).
func (d *dag) expand() bool {
	x, y := d.pick(), d.pick()
	sh, ok := broadcast(x.sh, y.sh)
	if !ok {
		return false
	}
	var target val
	if st, ok := y.sh.static(); ok && d.r.Intn(2) == 0 {
		target = d.ints(st...)
	} else {
		target = d.shapeOf(y)
	}
	return d.push(d.op1("Expand", []val{x, target}, x.dt, sh))
}

// shapeScale multiplies x by a size read from a shape (Shape, Gather, Cast): a number
// that depends on the symbolic dims.
func (d *dag) shapeScale() bool {
	x, y := d.pick(), d.pick()
	if y.rank() == 0 {
		return false
	}
	n := d.dimOf(y, d.r.Intn(y.rank()))
	f := d.cast(n, ir.Float)
	f = d.op1("Reciprocal", []val{f}, ir.Float, f.sh)
	sh, _ := broadcast(x.sh, f.sh)
	return d.push(d.op1("Mul", []val{x, f}, ir.Float, sh))
}

// rangeAdd adds Range(0, size of x's last axis) to x.
func (d *dag) rangeAdd() bool {
	x := d.pick()
	if x.rank() == 0 {
		return false
	}
	n := d.op1("Gather", []val{d.shapeOf(x), d.constI(nil, []int64{-1})}, ir.Int64, shape{}, ir.IntAttr("axis", 0))
	rg := d.op1("Range", []val{d.constI(nil, []int64{0}), n, d.constI(nil, []int64{1})}, ir.Int64, shape{x.sh[x.rank()-1]})
	f := d.cast(rg, ir.Float)
	f = d.op1("Mul", []val{f, d.scalarF(0.25)}, ir.Float, f.sh)
	return d.push(d.op1("Add", []val{x, f}, ir.Float, x.sh))
}

func (d *dag) constantOfShape() bool {
	x := d.pick()
	c := ir.FloatTensor([]int64{1}, []float32{float32(d.r.Intn(5)) - 2})
	k := d.op1("ConstantOfShape", []val{d.shapeOf(x)}, ir.Float, x.sh, ir.TensorAttr("value", c))
	return d.push(d.op1("Add", []val{x, k}, ir.Float, x.sh))
}

// constSubgraph adds an operation on constants only (fold's work) and uses it on x.
func (d *dag) constSubgraph() bool {
	x := d.pick()
	dims := d.constShape(x)
	a, c := d.randConst(dims, 1), d.randConst(dims, 1)
	var k val
	switch d.r.Intn(4) {
	case 0:
		k = d.op1("Add", []val{a, c}, ir.Float, a.sh)
	case 1:
		k = d.op1("Mul", []val{a, d.op1("Sigmoid", []val{c}, ir.Float, c.sh)}, ir.Float, a.sh)
	case 2:
		k = d.op1("Sqrt", []val{d.op1("Abs", []val{a}, ir.Float, a.sh)}, ir.Float, a.sh)
	default:
		if len(dims) < 2 {
			k = d.op1("Neg", []val{a}, ir.Float, a.sh)
		} else {
			p := make([]int64, len(dims))
			for i := range p {
				p[i] = int64(len(dims) - 1 - i)
			}
			k = d.transpose(d.transpose(a, p...), p...)
		}
	}
	sh, _ := broadcast(x.sh, k.sh)
	return d.push(d.op1("Add", []val{x, k}, ir.Float, sh))
}

// intArith computes with int64 tensors — a shape, or a float value cast (truncating) —
// and constants of both signs: integer Div truncates, Mod follows the divisor's sign
// (fmod=0) or the dividend's (fmod=1).
func (d *dag) intArith() bool {
	var x val
	switch {
	case len(d.intv) > 0 && d.r.Intn(2) == 0:
		x = d.intv[d.r.Intn(len(d.intv))]
	case d.r.Intn(2) == 0:
		y := d.pick()
		if y.rank() == 0 { // Shape of a scalar is empty
			return false
		}
		x = d.shapeOf(y)
	default:
		f := d.pick()
		x = d.cast(d.op1("Mul", []val{d.bounded(f), d.scalarF(3)}, ir.Float, f.sh), ir.Int64)
	}
	k := d.r.Int63n(13) - 6
	if k == 0 || k == -1 {
		// Not 0, and not -1: a Cast of NaN or of a huge value gives INT64_MIN, and
		// INT64_MIN / -1 traps (SIGFPE) inside ONNX Runtime, killing the process.
		k = []int64{3, -2}[k+1]
	}
	c := d.constI(nil, []int64{k})
	var y val
	switch d.r.Intn(7) {
	case 0:
		y = d.op1("Div", []val{x, c}, ir.Int64, x.sh)
	case 1:
		y = d.op1("Mod", []val{x, c}, ir.Int64, x.sh)
	case 2:
		y = d.op1("Mod", []val{x, c}, ir.Int64, x.sh, ir.IntAttr("fmod", 1))
	case 3:
		y = d.op1("Sub", []val{c, x}, ir.Int64, x.sh)
	case 4:
		y = d.op1("Mul", []val{x, c}, ir.Int64, x.sh)
	case 5:
		y = d.op1("Abs", []val{d.op1("Neg", []val{x}, ir.Int64, x.sh)}, ir.Int64, x.sh)
	default:
		e := d.op1("Equal", []val{x, c}, ir.Bool, x.sh)
		y = d.op1("Where", []val{e, c, x}, ir.Int64, x.sh)
	}
	d.intv = append(d.intv, y)
	if d.r.Intn(3) == 0 { // back into the float world
		f := d.cast(y, ir.Float)
		if sh, ok := broadcast(d.pool[len(d.pool)-1].sh, f.sh); ok {
			return d.push(d.op1("Add", []val{d.pool[len(d.pool)-1], f}, ir.Float, sh))
		}
	}
	return true
}

// misc covers the rest of what the evaluator folds: Clip, Floor/Ceil/Sign, CumSum,
// Squeeze, Tile, Size, Shape with start/end, Constant, logical ops, Identity, Dropout,
// ReduceProd.
func (d *dag) misc() bool {
	x := d.pick()
	switch d.r.Intn(12) {
	case 0:
		lo, hi := d.scalarF(float32(-d.r.Float64())), d.scalarF(float32(d.r.Float64()))
		switch d.r.Intn(3) {
		case 0:
			return d.push(d.op1("Clip", []val{x, lo, hi}, x.dt, x.sh))
		case 1:
			return d.push(d.op1("Clip", []val{x, lo}, x.dt, x.sh))
		default:
			return d.push(d.op1("Clip", []val{x, {}, hi}, x.dt, x.sh))
		}
	case 1:
		ops := []string{"Floor", "Ceil", "Sign"}
		s := d.op1("Mul", []val{d.bounded(x), d.scalarF(1.7)}, x.dt, x.sh)
		return d.push(d.op1(ops[d.r.Intn(3)], []val{s}, x.dt, x.sh))
	case 2:
		if x.rank() == 0 {
			return false
		}
		ax := int64(d.r.Intn(x.rank()))
		return d.push(d.op1("CumSum", []val{x, d.constI(nil, []int64{ax})}, x.dt, x.sh,
			ir.IntAttr("exclusive", int64(d.r.Intn(2))), ir.IntAttr("reverse", int64(d.r.Intn(2)))))
	case 3:
		var axes []int64
		sh := shape{}
		for i, dd := range x.sh {
			if dd.static() && dd.n == 1 && d.r.Intn(3) > 0 {
				axes = append(axes, int64(i))
			} else {
				sh = append(sh, dd)
			}
		}
		if len(axes) == 0 {
			return false
		}
		if d.opset < 13 {
			return d.push(d.op1("Squeeze", []val{x}, x.dt, sh, ir.IntsAttr("axes", axes...)))
		}
		return d.push(d.op1("Squeeze", []val{x, d.ints(axes...)}, x.dt, sh))
	case 4:
		reps := make([]int64, x.rank())
		sh := x.sh.clone()
		for i, dd := range x.sh {
			reps[i] = 1
			if dd.static() && d.r.Intn(2) == 0 {
				reps[i] = int64(1 + d.r.Intn(2))
				sh[i] = sd(dd.n * reps[i])
			}
		}
		return d.push(d.op1("Tile", []val{x, d.ints(reps...)}, x.dt, sh))
	case 5:
		n := d.cast(d.op1("Size", []val{x}, ir.Int64, shape{}), ir.Float)
		sh, _ := broadcast(x.sh, shape{})
		return d.push(d.op1("Div", []val{x, n}, ir.Float, sh))
	case 6:
		if d.opset < 15 || x.rank() < 2 {
			return false
		}
		st := int64(d.r.Intn(x.rank())) - int64(d.r.Intn(2))*int64(x.rank())
		sh := d.op1("Shape", []val{x}, ir.Int64, shape{sd(int64(x.rank()) - int64(norm(st, x.rank())))}, ir.IntAttr("start", st))
		d.intv = append(d.intv, sh)
		return true
	case 7:
		dims := d.constShape(x)
		c := d.op1("Constant", nil, ir.Float, dims64(dims), ir.TensorAttr("value", ir.FloatTensor(dims, d.randF(numel(dims), 1))))
		sh, _ := broadcast(x.sh, c.sh)
		return d.push(d.op1("Sub", []val{x, c}, ir.Float, sh))
	case 8:
		y := d.pick()
		sh, ok := broadcast(x.sh, y.sh)
		if !ok {
			return false
		}
		a := d.op1("Greater", []val{x, d.scalarF(0)}, ir.Bool, x.sh)
		b := d.op1("Less", []val{y, d.scalarF(0.5)}, ir.Bool, y.sh)
		op := []string{"And", "Or", "Xor"}[d.r.Intn(3)]
		c := d.op1(op, []val{a, b}, ir.Bool, sh)
		return d.push(d.op1("Where", []val{c, x, y}, ir.Float, sh))
	case 9:
		return d.push(d.op1("Identity", []val{x}, x.dt, x.sh))
	case 10:
		return d.push(d.op1("Dropout", []val{x}, x.dt, x.sh))
	default:
		if x.rank() == 0 {
			return false
		}
		b := d.op1("Add", []val{d.op1("Sigmoid", []val{x}, x.dt, x.sh), d.scalarF(0.5)}, x.dt, x.sh)
		y, _ := d.reduce("ReduceProd", b, []int64{int64(d.r.Intn(x.rank()))}, d.r.Intn(2) == 0)
		return d.push(y)
	}
}

// normFragment writes a LayerNorm or RMSNorm over the last axis of a pool value, often
// slightly wrong: gamma or beta broadcasting over another axis, a large epsilon, the
// mean over another axis, a residual Add in front whose operands broadcast. The
// recognisers see shapes here that blocks never have (a last axis of 1, a symbolic one,
// rank 1 or 4); the output comparison judges whatever they do.
func (d *dag) normFragment() bool {
	x := d.pick()
	if x.rank() == 0 {
		return false
	}
	if d.r.Intn(3) == 0 { // a residual in front
		y := d.pick()
		sh, ok := broadcast(x.sh, y.sh)
		if !ok {
			return false
		}
		x = d.op1("Add", []val{x, y}, ir.Float, sh)
	}
	r := x.rank()
	last := x.sh[r-1]
	axis := int64(-1)
	if r >= 2 && d.r.Intn(6) == 0 {
		axis = -2
	}
	rms := d.r.Intn(3) == 0
	dev := x
	if !rms {
		mean, _ := d.reduce("ReduceMean", x, []int64{axis}, true)
		dev = d.op1("Sub", []val{x, mean}, ir.Float, x.sh)
	}
	var sq val
	if d.r.Intn(2) == 0 {
		sq = d.op1("Pow", []val{dev, d.scalarF(2)}, ir.Float, dev.sh)
	} else {
		sq = d.op1("Mul", []val{dev, dev}, ir.Float, dev.sh)
	}
	if d.r.Intn(8) == 0 {
		axis = -1
		if r >= 2 {
			axis = -2
		}
	}
	v, _ := d.reduce("ReduceMean", sq, []int64{axis}, true)
	eps := d.scalarF([]float32{1e-5, 1e-12, 1e-3, 1e-2, 0.5}[d.r.Intn(5)])
	ve := d.op1("Add", []val{v, eps}, ir.Float, v.sh)
	var n val
	switch d.r.Intn(3) {
	case 0:
		n = d.op1("Div", []val{dev, d.op1("Sqrt", []val{ve}, ir.Float, ve.sh)}, ir.Float, dev.sh)
	case 1:
		n = d.op1("Mul", []val{dev, d.op1("Pow", []val{ve, d.scalarF(-0.5)}, ir.Float, ve.sh)}, ir.Float, dev.sh)
	default:
		sdv := d.op1("Sqrt", []val{ve}, ir.Float, ve.sh)
		n = d.op1("Mul", []val{d.op1("Reciprocal", []val{sdv}, ir.Float, sdv.sh), dev}, ir.Float, dev.sh)
	}
	affine := func() []int64 {
		switch k := d.r.Intn(5); {
		case k <= 1 && last.static():
			return []int64{last.n}
		case k == 2 && last.static():
			return []int64{1, last.n}
		case k == 3 && r >= 2 && x.sh[r-2].static():
			return []int64{x.sh[r-2].n, 1} // over another axis
		default:
			return []int64{1}
		}
	}
	gd := affine()
	gamma := d.constF(gd, d.randGamma(numel(gd)))
	sh, _ := broadcast(n.sh, dims64(gd))
	y := d.op1("Mul", []val{n, gamma}, ir.Float, sh)
	if !rms || d.r.Intn(3) == 0 {
		bd := affine()
		sh, _ = broadcast(y.sh, dims64(bd))
		y = d.op1("Add", []val{y, d.randConst(bd, 0.3)}, ir.Float, sh)
	}
	return d.push(y)
}

func (d *dag) randGamma(n int) []float32 {
	v := d.randF(n, 0.5)
	for i := range v {
		v[i]++
	}
	return v
}

// geluFragment writes a GELU form on a pool value, its constants exact, rounded as an
// exporter's float32 printing rounds them (1e-6), or 1% off.
func (d *dag) geluFragment() bool {
	x := d.pick()
	k := func(v float64) val {
		switch d.r.Intn(6) {
		case 0:
			v *= 1 + 1e-6
		case 1:
			v *= 1.01
		}
		return d.scalarF(float32(v))
	}
	if d.r.Intn(4) == 0 { // a bias in front
		if last, ok := d.lastStatic(x); ok {
			x = d.op1("Add", []val{d.randConst([]int64{last}, 0.5), x}, ir.Float, x.sh)
		}
	}
	var p val
	switch d.r.Intn(3) {
	case 0:
		a := d.op1("Div", []val{x, k(math.Sqrt2)}, ir.Float, x.sh)
		p = d.op1("Add", []val{d.op1("Erf", []val{a}, ir.Float, x.sh), k(1)}, ir.Float, x.sh)
	case 1:
		c := d.op1("Mul", []val{d.op1("Pow", []val{x, k(3)}, ir.Float, x.sh), k(0.044715)}, ir.Float, x.sh)
		in := d.op1("Mul", []val{d.op1("Add", []val{x, c}, ir.Float, x.sh), k(math.Sqrt(2 / math.Pi))}, ir.Float, x.sh)
		p = d.op1("Add", []val{d.op1("Tanh", []val{in}, ir.Float, x.sh), k(1)}, ir.Float, x.sh)
	default:
		s := d.op1("Sigmoid", []val{d.op1("Mul", []val{x, k(1.702)}, ir.Float, x.sh)}, ir.Float, x.sh)
		return d.push(d.op1("Mul", []val{x, s}, ir.Float, x.sh))
	}
	return d.push(d.op1("Mul", []val{d.op1("Mul", []val{x, p}, ir.Float, x.sh), k(0.5)}, ir.Float, x.sh))
}

// attentionFragment writes softmax(a·bᵀ·s [+ m])·c over pool values of one shape.
func (d *dag) attentionFragment() bool {
	a := d.pick()
	if a.rank() < 2 {
		return false
	}
	var same []val
	for _, c := range d.pool {
		if sameShape(c.sh, a.sh) {
			same = append(same, c)
		}
	}
	b, c := same[d.r.Intn(len(same))], same[d.r.Intn(len(same))]
	r := int64(a.rank())
	perm := make([]int64, r)
	for i := range perm {
		perm[i] = int64(i)
	}
	perm[r-1], perm[r-2] = r-2, r-1
	ssh := a.sh.clone()
	ssh[r-1] = a.sh[r-2]
	sc := d.op1("MatMul", []val{d.bounded(a), d.transpose(d.bounded(b), perm...)}, ir.Float, ssh)
	sc = d.op1("Mul", []val{sc, d.scalarF(float32(0.1 + d.r.Float64()))}, ir.Float, ssh)
	if d.r.Intn(2) == 0 { // an additive term over the keys
		m := d.randConst([]int64{1}, 1)
		if st := a.sh[r-2]; st.static() {
			m = d.randConst([]int64{st.n}, 1)
		}
		sc = d.op1("Add", []val{sc, m}, ir.Float, ssh)
	}
	axis := int64(-1)
	if d.r.Intn(4) == 0 {
		axis = -2
	}
	p := d.op1("Softmax", []val{sc}, ir.Float, ssh, ir.IntAttr("axis", axis))
	return d.push(d.op1("MatMul", []val{p, c}, ir.Float, a.sh))
}
