package transformer

import (
	"fmt"
	"slices"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// RotaryFamily recognises rotary position embeddings written out in the rotate-half form
// and fuses them into com.microsoft.RotaryEmbedding (target ort) or RotaryEmbedding-23
// (target onnx, when the opset allows).
var RotaryFamily = &Family{
	Kind: Rotary,
	Doc: `Rotary position embedding, rotate-half form: y = x·cos + rotate_half(x)·sin, with
rotate_half(x) = Concat(-x[..., D/2:], x[..., :D/2]) over the last axis.

x is [B, N, S, D] (the heads of Q or K); cos and sin are [B|1, 1, S, D] and each holds one
angle per pair, repeated in both halves of the last axis (proved from the constant table
they are gathered or sliced from, or from Cos/Sin of a concatenation of one tensor with
itself). The fused operators read cos and sin as given by the graph: RotaryEmbedding-23
as [B, S, D/2] caches without position ids; com.microsoft.RotaryEmbedding as a
[B·S, D/2] cache with position ids b·S + s. Interleaved rotaries (even/odd pairs) are
left as they are (the attention around them is still fused).

Roles: input (x), output, cos, sin. Params: head_size.`,
	Rules: []*patterns.Rule{
		{Name: "rotary/fused", Pattern: patterns.Op("RotaryEmbedding").In("com.microsoft").As("rotary")},
		{Name: "rotary/fused-onnx", Pattern: patterns.Op("RotaryEmbedding").As("rotary")},
		{Name: "rotary/rotate-half", Pattern: patterns.Trace("rotary", traceRotary), Check: checkRotary},
	},
	Describe: describeRotary,
	Fuse:     fuseRotary,
}

// traceRotary matches y = Add(Mul(x, cos), Mul(Concat(Neg(Slice(x)), Slice(x)), sin)).
func traceRotary(v *ir.Value) *patterns.Traced {
	add, _ := v.Producer()
	if add == nil || add.OpType != "Add" || add.Domain != "" || len(add.Inputs()) != 2 {
		return nil
	}
	for i := 0; i < 2; i++ {
		ma, _ := add.Input(i).Producer()
		mb, _ := add.Input(1 - i).Producer()
		if !isOp(ma, "Mul") || !isOp(mb, "Mul") {
			continue
		}
		for j := 0; j < 2; j++ {
			for k := 0; k < 2; k++ {
				x, cos := ma.Input(j), ma.Input(1-j)
				rot, sin := mb.Input(k), mb.Input(1-k)
				cat, _ := rot.Producer()
				if !isOp(cat, "Concat") || len(cat.Inputs()) != 2 {
					continue
				}
				neg, _ := cat.Input(0).Producer()
				if !isOp(neg, "Neg") {
					continue
				}
				hi, _ := neg.Input(0).Producer()
				lo, _ := cat.Input(1).Producer()
				if !isOp(hi, "Slice") || !isOp(lo, "Slice") || hi.Input(0) != x || lo.Input(0) != x {
					continue
				}
				return &patterns.Traced{
					Nodes:  []*ir.Node{lo, hi, neg, cat, ma, mb, add},
					Values: map[string]*ir.Value{"input": x, "cos": cos, "sin": sin, "output": v},
					Named:  map[string]*ir.Node{"concat": cat, "hi": hi, "lo": lo},
				}
			}
		}
	}
	return nil
}

func isOp(n *ir.Node, op string) bool { return n != nil && n.OpType == op && n.Domain == "" }

func checkRotary(m *patterns.Match) string {
	x := attnShape(m.V("input"))
	if len(x) != 4 || !x[3].Known || x[3].Value%2 != 0 || !x[1].Known {
		return fmt.Sprintf("input %v is not [batch, heads, seq, even head size]", x)
	}
	d, h := x[3].Value, x[3].Value/2
	cat := m.N("concat")
	if a, ok := normAxis(cat.AttrInt("axis", 0), 4); !ok || a != 3 {
		return "the halves are not concatenated on the last axis"
	}
	if !sliceIs(m.N("hi"), h, d) || !sliceIs(m.N("lo"), 0, h) {
		return fmt.Sprintf("the halves are not x[..., %d:] and x[..., :%d]", h, h)
	}
	for _, r := range []string{"cos", "sin"} {
		s := attnShape(m.V(r))
		if len(s) != 4 || !dimIsOne(s[1]) || !ir.SameDim(s[2], x[2]) || !ir.SameDim(s[3], x[3]) ||
			!(dimIsOne(s[0]) || ir.SameDim(s[0], x[0])) {
			return fmt.Sprintf("%s has shape %v, not [batch|1, 1, %v, %d]", r, s, x[2], d)
		}
		if !repeatedHalves(m.V(r), 0) {
			return fmt.Sprintf("%s does not provably repeat its first half in its second", r)
		}
	}
	return ""
}

// sliceIs reports whether a Slice takes [start, end) of the last axis of a rank-4 tensor
// of last dimension ≥ end (an end past the axis counts as its end), step 1.
func sliceIs(n *ir.Node, start, end int64) bool {
	st, ok1 := constInts(n.Input(1))
	en, ok2 := constInts(n.Input(2))
	if !ok1 || !ok2 || len(st) != 1 || len(en) != 1 || st[0] != start {
		return false
	}
	if en[0] != end && !(en[0] > end && end == attnShape(n.Input(0))[3].Value) {
		return false
	}
	if a := n.Input(3); a != nil {
		ax, ok := constInts(a)
		if !ok || len(ax) != 1 || (ax[0] != -1 && ax[0] != 3) {
			return false
		}
	} else {
		return false // axes default to 0
	}
	if s := n.Input(4); s != nil {
		if st, ok := constInts(s); !ok || len(st) != 1 || st[0] != 1 {
			return false
		}
	}
	return true
}

// repeatedHalves proves that v[..., :D/2] equals v[..., D/2:]: v comes, through ops that
// keep the last axis (Unsqueeze, Reshape of leading axes, Gather or Slice on other axes,
// Cast, Expand, Identity), from a constant whose rows repeat their halves, or from Cos or
// Sin of a Concat of one tensor with itself on the last axis.
func repeatedHalves(v *ir.Value, depth int) bool {
	if v == nil || depth > 12 {
		return false
	}
	if t := patterns.ConstOf(v); t != nil {
		return constHalvesEqual(t)
	}
	n, _ := v.Producer()
	if n == nil || n.Domain != "" {
		return false
	}
	last := func(x *ir.Value) int64 {
		s := attnShape(x)
		if len(s) == 0 || !s[len(s)-1].Known {
			return -1
		}
		return s[len(s)-1].Value
	}
	switch n.OpType {
	case "Cos", "Sin":
		c, _ := n.Input(0).Producer()
		if isOp(c, "Concat") && len(c.Inputs()) == 2 && c.Input(0) == c.Input(1) {
			r := len(attnShape(c.Output(0)))
			a, ok := normAxis(c.AttrInt("axis", 0), r)
			return ok && a == r-1
		}
		return repeatedHalves(n.Input(0), depth+1)
	case "Concat":
		r := len(attnShape(n.Output(0)))
		a, ok := normAxis(n.AttrInt("axis", 0), r)
		return ok && a == r-1 && len(n.Inputs()) == 2 && n.Input(0) == n.Input(1)
	case "Unsqueeze", "Reshape", "Cast", "Expand", "Identity", "Gather", "Slice":
		// Ops that must keep the last axis whole.
		if last(n.Input(0)) < 0 || last(n.Input(0)) != last(v) {
			return false
		}
		if n.OpType == "Gather" {
			r := len(attnShape(n.Input(0)))
			if a, ok := normAxis(n.AttrInt("axis", 0), r); !ok || a == r-1 {
				return false
			}
		}
		if n.OpType == "Slice" {
			r := len(attnShape(n.Input(0)))
			axes, ok := constInts(n.Input(3))
			if n.Input(3) == nil {
				axes, ok = []int64{0}, true
			}
			if !ok || slices.ContainsFunc(axes, func(a int64) bool { i, _ := normAxis(a, r); return i == r-1 }) {
				return false
			}
		}
		return repeatedHalves(n.Input(0), depth+1)
	}
	return false
}

// constHalvesEqual checks a constant's rows: the first half of the last axis equals the
// second.
func constHalvesEqual(t *ir.Tensor) bool {
	if len(t.Dims) == 0 || t.Dims[len(t.Dims)-1]%2 != 0 || !t.DType.IsFloat() {
		return false
	}
	vals, err := t.Float64s()
	if err != nil {
		return false
	}
	d := int(t.Dims[len(t.Dims)-1])
	for r := 0; r+d <= len(vals); r += d {
		for i := 0; i < d/2; i++ {
			if vals[r+i] != vals[r+d/2+i] {
				return false
			}
		}
	}
	return true
}

func describeRotary(m *patterns.Match, b *Block) {
	if n := m.N("rotary"); n != nil {
		b.Fused = true
		b.Roles["input"], b.Roles["output"] = n.Input(0), n.Output(0)
		return
	}
	for _, r := range []string{"input", "output", "cos", "sin"} {
		b.Roles[r] = m.V(r)
	}
	if s := attnShape(m.V("input")); len(s) == 4 && s[3].Known {
		b.Params["head_size"] = float64(s[3].Value)
	}
}

func fuseRotary(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error) {
	x := b.Role("input")
	if x.Type == nil || x.Type.DType != ir.Float {
		return nil, "only float32 rotaries are lowered", nil
	}
	if env.Target == ONNX {
		if why := RequireOpset(env, 23, "RotaryEmbedding", b.Nodes); why != "" {
			return nil, why, nil
		}
	}
	h := int64(b.Params["head_size"]) / 2
	add, _ := b.Root.Producer()
	name := nodePrefix(add) + "RotaryEmbedding"
	// [B|1, 1, S, D] → [B, S, D/2]: the first half (the second repeats it), the head axis
	// dropped, the batch spelled out.
	shapeX := reuseNode(rw, "Shape", []*ir.Value{x}, x.Name+"_shape")
	batch := reuseNode(rw, "Gather", []*ir.Value{shapeX, rw.Const("rotary_axis0", ir.Int64Tensor([]int64{1}, []int64{0}))}, x.Name+"_batch", ir.IntAttr("axis", 0))
	seq := reuseNode(rw, "Gather", []*ir.Value{shapeX, rw.Const("rotary_axis2", ir.Int64Tensor([]int64{1}, []int64{2}))}, x.Name+"_seq", ir.IntAttr("axis", 0))
	one := rw.Const("rotary_one", ir.Int64Tensor([]int64{1}, []int64{1}))
	target := reuseNode(rw, "Concat", []*ir.Value{batch, one, one}, x.Name+"_batch11", ir.IntAttr("axis", 0))
	cache := func(v *ir.Value) *ir.Value {
		half := reuseNode(rw, "Slice", []*ir.Value{v, rw.Const("rotary_zero", ir.Int64Tensor([]int64{1}, []int64{0})),
			rw.Const("rotary_half", ir.Int64Tensor([]int64{1}, []int64{h})), rw.Const("rotary_last", ir.Int64Tensor([]int64{1}, []int64{3}))}, v.Name+"_half")
		bsh := reuseNode(rw, "Reshape", []*ir.Value{half, rw.Const("rotary_bsh", ir.Int64Tensor([]int64{3}, []int64{0, -1, h}))}, v.Name+"_bsh")
		c := reuseNode(rw, "Expand", []*ir.Value{bsh, target}, v.Name+"_cache")
		if env.Target == ONNX {
			return c
		}
		return reuseNode(rw, "Reshape", []*ir.Value{c, rw.Const("rotary_rows", ir.Int64Tensor([]int64{2}, []int64{-1, h}))}, v.Name+"_rows")
	}
	cos, sin := cache(b.Role("cos")), cache(b.Role("sin"))
	var n *ir.Node
	if env.Target == ONNX {
		n = rw.Node("RotaryEmbedding", "", []*ir.Value{x, cos, sin}, 1, name+"_output_0", ir.IntAttr("interleaved", 0))
	} else {
		// Position ids b·S + s index the [B·S, D/2] cache: each batch row its own angles.
		bs := reuseNode(rw, "Mul", []*ir.Value{batch, seq}, x.Name+"_rows")
		zero := rw.Const("rotary_zero_scalar", ir.Int64Tensor(nil, []int64{0}))
		step := rw.Const("rotary_one_scalar", ir.Int64Tensor(nil, []int64{1}))
		// Squeeze without axes drops the one unit axis, at every opset.
		limit := reuseNode(rw, "Squeeze", []*ir.Value{bs}, x.Name+"_rows_scalar")
		r := reuseNode(rw, "Range", []*ir.Value{zero, limit, step}, x.Name+"_positions")
		bsShape := reuseNode(rw, "Concat", []*ir.Value{batch, seq}, x.Name+"_bs", ir.IntAttr("axis", 0))
		pos := reuseNode(rw, "Reshape", []*ir.Value{r, bsShape}, x.Name+"_position_ids")
		n = rw.Node("RotaryEmbedding", "com.microsoft", []*ir.Value{x, pos, cos, sin}, 1, name+"_output_0", ir.IntAttr("interleaved", 0))
		EnsureOpset(env.Model, "com.microsoft", 1)
	}
	n.Name = name // Q's and K's share it: Fuse makes node names unique
	rw.Replace(b.Root, n.Output(0))
	return n, "", nil
}
