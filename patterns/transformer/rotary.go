package transformer

import (
	"fmt"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// RotaryFamily recognises rotary position embeddings written out as plain ops — the
// rotate-half form and the two interleaved forms — and fuses them into
// com.microsoft.RotaryEmbedding (target ort) or RotaryEmbedding-23 (target onnx, when the
// opset allows), with interleaved=1 for the interleaved ones.
var RotaryFamily = &Family{
	Kind: Rotary,
	Doc: `Rotary position embedding: each pair of channels of x is rotated by its angle.

Variants:
  rotary/rotate-half       y = x·cos + rotate_half(x)·sin, rotate_half(x) =
                           Concat(-x[..., D/2:], x[..., :D/2]); pair i is (x[i], x[i+D/2]);
                           cos, sin [B|1, 1, S, D] repeat their first half in the second.
  rotary/interleaved-pairs e = x[..., 0::2], o = x[..., 1::2];
                           y = interleave(e·cos - o·sin, e·sin + o·cos) (Unsqueeze on a
                           new last axis, Concat, Reshape back to D); pair i is
                           (x[2i], x[2i+1]); cos, sin [B|1, 1, S, D/2].
  rotary/rotate-every-two  y = x·cos + rotate_every_two(x)·sin, rotate_every_two(x) =
                           interleave(-x[..., 1::2], x[..., 0::2]); cos, sin [B|1, 1, S, D]
                           repeat each angle in two adjacent channels.

x is [B, N, S, D] (the heads of Q or K). The repeats in cos and sin are proved from the
constant table they are gathered or sliced from, or from how they are computed (Cos/Sin
of a concatenation of one tensor with itself; a stack of one tensor with itself). The
fused operators read cos and sin as given by the graph, one angle per pair:
RotaryEmbedding-23 as [B, S, D/2] caches without position ids;
com.microsoft.RotaryEmbedding as a [B·S, D/2] cache with position ids b·S + s.

Roles: input (x), output, cos, sin. Params: head_size, interleaved.`,
	Rules: []*patterns.Rule{
		{Name: "rotary/fused", Pattern: patterns.Op("RotaryEmbedding").In("com.microsoft").As("rotary")},
		{Name: "rotary/fused-onnx", Pattern: patterns.Op("RotaryEmbedding").As("rotary")},
		{Name: "rotary/rotate-half", Pattern: patterns.Trace("rotary", traceRotary), Check: checkRotary, Escapes: attnEscapes},
		{Name: "rotary/interleaved-pairs", Pattern: patterns.Trace("rotary", traceRotaryPairs), Check: checkRotary, Escapes: attnEscapes},
		{Name: "rotary/rotate-every-two", Pattern: patterns.Trace("rotary", traceRotateEveryTwo), Check: checkRotary, Escapes: attnEscapes},
		{Name: "rotary/partial", Pattern: patterns.Trace("rotary", traceRotaryPartial), Check: checkRotary, Escapes: attnEscapes, Benefit: 1},
	},
	Describe: describeRotary,
	Fuse:     fuseRotary,
}

// rotaryForm is what a rotary trace proved, for Check and the lowering.
type rotaryForm int

const (
	rotateHalf       rotaryForm = iota // pairs (i, i+D/2); cos, sin repeat their halves
	interleavedPairs                   // pairs (2i, 2i+1) written out; cos, sin hold D/2
	rotateEveryTwo                     // pairs (2i, 2i+1); cos, sin repeat each angle twice
)

// interleaved reports whether the form pairs adjacent channels.
func (f rotaryForm) interleaved() bool { return f != rotateHalf }

// rotaryPlan is what a rotary trace proved: the form, and whether only the first
// channels of each head are rotated (x[..., :r] rotated, x[..., r:] passed through, as
// GPT-NeoX and Phi do).
type rotaryPlan struct {
	form    rotaryForm
	partial bool
}

// traceRotary matches y = Add(Mul(x, cos), Mul(rotate_half(x), sin)).
func traceRotary(v *ir.Value) *patterns.Traced {
	return traceRotated(v, rotateHalf, func(rot, x *ir.Value) ([]*ir.Node, map[string]*ir.Node) {
		cat, _ := rot.Producer()
		if !isOp(cat, "Concat") || len(cat.Inputs()) != 2 {
			return nil, nil
		}
		neg, _ := cat.Input(0).Producer()
		if !isOp(neg, "Neg") {
			return nil, nil
		}
		hi, _ := neg.Input(0).Producer()
		lo, _ := cat.Input(1).Producer()
		if !isOp(hi, "Slice") || !isOp(lo, "Slice") || hi.Input(0) != x || lo.Input(0) != x {
			return nil, nil
		}
		return []*ir.Node{lo, hi, neg, cat}, map[string]*ir.Node{"concat": cat, "hi": hi, "lo": lo}
	})
}

// traceRotateEveryTwo matches y = Add(Mul(x, cos), Mul(rotate_every_two(x), sin)),
// rotate_every_two(x) = interleave(-x[..., 1::2], x[..., 0::2]).
func traceRotateEveryTwo(v *ir.Value) *patterns.Traced {
	return traceRotated(v, rotateEveryTwo, func(rot, x *ir.Value) ([]*ir.Node, map[string]*ir.Node) {
		a, b, nodes, named := traceInterleave(rot)
		if nodes == nil {
			return nil, nil
		}
		neg, _ := a.Producer()
		if !isOp(neg, "Neg") {
			return nil, nil
		}
		src, pn, pairs := pairSource(b, neg.Input(0))
		if src != x {
			return nil, nil
		}
		for k, n := range pairs {
			named[k] = n
		}
		return append(append(pn, neg), nodes...), named
	})
}

// traceRotated matches Add(Mul(x, cos), Mul(rot, sin)) in any operand order, where
// rotOf proves rot a rotation of x and returns its nodes.
func traceRotated(v *ir.Value, form rotaryForm, rotOf func(rot, x *ir.Value) ([]*ir.Node, map[string]*ir.Node)) *patterns.Traced {
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
				nodes, named := rotOf(rot, x)
				if nodes == nil {
					continue
				}
				return &patterns.Traced{
					Nodes:  append(nodes, ma, mb, add),
					Values: map[string]*ir.Value{"input": x, "rotated": x, "cos": cos, "sin": sin, "output": v},
					Named:  named,
					Plan:   rotaryPlan{form: form},
				}
			}
		}
	}
	return nil
}

// traceRotaryPairs matches the interleaved rotary written out pair by pair:
// e = x[..., 0::2], o = x[..., 1::2], y = interleave(e·cos - o·sin, e·sin + o·cos).
func traceRotaryPairs(v *ir.Value) *patterns.Traced {
	a, b, nodes, named := traceInterleave(v)
	if nodes == nil {
		return nil
	}
	sub, _ := a.Producer()
	add, _ := b.Producer()
	if !isOp(sub, "Sub") || !isOp(add, "Add") {
		return nil
	}
	ma, _ := sub.Input(0).Producer()
	mb, _ := sub.Input(1).Producer()
	if !isOp(ma, "Mul") || !isOp(mb, "Mul") {
		return nil
	}
	for j := 0; j < 2; j++ {
		for k := 0; k < 2; k++ {
			e, cos := ma.Input(j), ma.Input(1-j)
			o, sin := mb.Input(k), mb.Input(1-k)
			x, pn, pairs := pairSource(e, o)
			if x == nil {
				continue
			}
			// The second component: Mul(e, sin) + Mul(o, cos), in any order.
			mc, _ := add.Input(0).Producer()
			md, _ := add.Input(1).Producer()
			if !isOp(mc, "Mul") || !isOp(md, "Mul") {
				continue
			}
			if !mulOf(mc, e, sin) {
				mc, md = md, mc
			}
			if !mulOf(mc, e, sin) || !mulOf(md, o, cos) {
				continue
			}
			for k, n := range pairs {
				named[k] = n
			}
			return &patterns.Traced{
				Nodes:  append(append(pn, ma, mb, sub, mc, md, add), nodes...),
				Values: map[string]*ir.Value{"input": x, "rotated": x, "cos": cos, "sin": sin, "output": v},
				Named:  named,
				Plan:   rotaryPlan{form: interleavedPairs},
			}
		}
	}
	return nil
}

// rotaryForms are the tracers of the whole-head forms, which a partial rotary wraps.
var rotaryForms = []func(*ir.Value) *patterns.Traced{traceRotary, traceRotaryPairs, traceRotateEveryTwo}

// traceRotaryPartial matches y = Concat(rotary(x[..., :r]), x[..., r:]) on the last axis,
// the rotary in any of its forms.
func traceRotaryPartial(v *ir.Value) *patterns.Traced {
	join, _ := v.Producer()
	if !isOp(join, "Concat") || len(join.Inputs()) != 2 {
		return nil
	}
	pass, _ := join.Input(1).Producer()
	if !isOp(pass, "Slice") {
		return nil
	}
	for _, f := range rotaryForms {
		t := f(join.Input(0))
		if t == nil {
			continue
		}
		head, _ := t.Values["input"].Producer()
		if !isOp(head, "Slice") || head.Input(0) != pass.Input(0) {
			continue
		}
		t.Values["rotated"], t.Values["input"], t.Values["output"] = t.Values["input"], head.Input(0), v
		t.Named["head"], t.Named["pass"], t.Named["join"] = head, pass, join
		t.Nodes = append(append([]*ir.Node{head, pass}, t.Nodes...), join)
		t.Plan = rotaryPlan{form: t.Plan.(rotaryPlan).form, partial: true}
		return t
	}
	return nil
}

// mulOf reports whether n multiplies a by b, in either order.
func mulOf(n *ir.Node, a, b *ir.Value) bool {
	return (n.Input(0) == a && n.Input(1) == b) || (n.Input(0) == b && n.Input(1) == a)
}

// pairSource matches the channels of each rotated pair taken apart: e = x[..., 0::2] and
// o = x[..., 1::2] as two Slices, or e = p[..., 0] and o = p[..., 1] as two Gathers of
// one Reshape p of x to [..., D/2, 2] (ChatGLM's view of the head as pairs). It returns
// x, the nodes and their names; checkPairs checks the steps and axes.
func pairSource(e, o *ir.Value) (x *ir.Value, nodes []*ir.Node, named map[string]*ir.Node) {
	even, _ := e.Producer()
	odd, _ := o.Producer()
	switch {
	case isOp(even, "Slice") && isOp(odd, "Slice") && even.Input(0) == odd.Input(0):
		return even.Input(0), []*ir.Node{even, odd}, map[string]*ir.Node{"even": even, "odd": odd}
	case isOp(even, "Gather") && isOp(odd, "Gather") && even.Input(0) == odd.Input(0):
		view, _ := even.Input(0).Producer()
		if !isOp(view, "Reshape") {
			return nil, nil, nil
		}
		return view.Input(0), []*ir.Node{view, even, odd}, map[string]*ir.Node{"even": even, "odd": odd, "pairs": view}
	}
	return nil, nil, nil
}

// checkPairs checks a pairSource match on x whose first r channels are rotated: the
// Slices step by two from 0 and 1, or the Reshape splits exactly the last axis into
// [r/2, 2] and the Gathers take index 0 and 1 of the new last axis.
func checkPairs(m *patterns.Match, r int64) string {
	even, odd := m.N("even"), m.N("odd")
	view := m.N("pairs")
	if view == nil {
		if !sliceIs(even, 0, r, 2) || !sliceIs(odd, 1, r, 2) {
			return "the pairs are not x[..., 0::2] and x[..., 1::2]"
		}
		return ""
	}
	x, p := attnShape(view.Input(0)), attnShape(view.Output(0))
	if len(x) != 4 || len(p) != 5 || !ir.SameShape(p[:3], x[:3]) || !x[3].Known || x[3].Value != r ||
		!p[3].Known || p[3].Value != r/2 || !p[4].Known || p[4].Value != 2 {
		return fmt.Sprintf("%s gives %v, not the channels of %v as [%d, 2] pairs", view, p, x, r/2)
	}
	for i, g := range []*ir.Node{even, odd} {
		idx := patterns.ConstOf(g.Input(1))
		at, ok := constInts(g.Input(1))
		if a, aok := normAxis(g.AttrInt("axis", 0), 5); idx == nil || len(idx.Dims) != 0 || !ok || at[0] != int64(i) || !aok || a != 4 {
			return fmt.Sprintf("%s does not take channel %d of each pair", g, i)
		}
	}
	return ""
}

// traceInterleave matches v = Reshape(Concat(Unsqueeze(a), Unsqueeze(b))): a stack of a and
// b on a new last axis flattened back into the last one, so v[..., 2i] = a[..., i] and
// v[..., 2i+1] = b[..., i] (the axes are checked by checkInterleave).
func traceInterleave(v *ir.Value) (a, b *ir.Value, nodes []*ir.Node, named map[string]*ir.Node) {
	merge, _ := v.Producer()
	if !isOp(merge, "Reshape") {
		return nil, nil, nil, nil
	}
	stack, _ := merge.Input(0).Producer()
	if !isOp(stack, "Concat") || len(stack.Inputs()) != 2 {
		return nil, nil, nil, nil
	}
	ua, _ := stack.Input(0).Producer()
	ub, _ := stack.Input(1).Producer()
	if !isOp(ua, "Unsqueeze") || !isOp(ub, "Unsqueeze") {
		return nil, nil, nil, nil
	}
	return ua.Input(0), ub.Input(0), []*ir.Node{ua, ub, stack, merge},
		map[string]*ir.Node{"stack": stack, "unsqueeze_a": ua, "unsqueeze_b": ub, "merge": merge}
}

// checkInterleave checks the axes of a traceInterleave match whose result has shape out:
// both Unsqueezes add a last axis, the Concat joins on it, and the Reshape keeps the
// leading axes (so it can only merge the last two).
func checkInterleave(m *patterns.Match, out ir.Shape) string {
	r := len(out)
	for _, u := range []string{"unsqueeze_a", "unsqueeze_b"} {
		n := m.N(u)
		axes, ok := axesOf(n, 1)
		if !ok || len(axes) != 1 {
			return fmt.Sprintf("%s does not add one known axis", n)
		}
		if a, ok := normAxis(axes[0], r+1); !ok || a != r {
			return fmt.Sprintf("%s does not add a new last axis", n)
		}
	}
	stack := m.N("stack")
	if a, ok := normAxis(stack.AttrInt("axis", 0), r+1); !ok || a != r {
		return fmt.Sprintf("%s does not stack on the new last axis", stack)
	}
	if got := attnShape(m.N("merge").Output(0)); !ir.SameShape(got, out) {
		return fmt.Sprintf("%s gives %v, not %v", m.N("merge"), got, out)
	}
	return ""
}

// rotaryInput is x when v is an interleaved rotary of x written out as plain ops (its
// last op is a Reshape, which a walk through layout ops would otherwise take for one).
func rotaryInput(v *ir.Value) *ir.Value {
	for _, f := range []func(*ir.Value) *patterns.Traced{traceRotaryPairs, traceRotateEveryTwo, traceRotaryPartial} {
		if t := f(v); t != nil {
			return t.Values["input"]
		}
	}
	return nil
}

func isOp(n *ir.Node, op string) bool { return n != nil && n.OpType == op && n.Domain == "" }

func checkRotary(m *patterns.Match) string {
	plan := m.Plan.(rotaryPlan)
	x := attnShape(m.V("input"))
	batch, heads, seq, ok := rotaryAxes(m)
	if len(x) != 4 || !x[3].Known || x[3].Value%2 != 0 || !ok || !x[heads].Known {
		return fmt.Sprintf("input %v is not [batch, heads, seq, even head size], [batch, seq, heads, even head size] or [seq, batch, heads, even head size] against cos %v", x, attnShape(m.V("cos")))
	}
	d := x[3].Value
	// r channels of each head are rotated, in r/2 pairs.
	r := d
	if plan.partial {
		xr := attnShape(m.V("rotated"))
		if len(xr) != 4 || !xr[3].Known || xr[3].Value%2 != 0 || xr[3].Value >= d {
			return fmt.Sprintf("the rotated part %v is not an even number of channels below %d", xr, d)
		}
		r = xr[3].Value
		if !sliceIs(m.N("head"), 0, r, 1) || !sliceIs(m.N("pass"), r, d, 1) {
			return fmt.Sprintf("the parts are not x[..., :%d] and x[..., %d:]", r, r)
		}
		if a, ok := normAxis(m.N("join").AttrInt("axis", 0), 4); !ok || a != 3 {
			return "the rotated and passed parts are not concatenated on the last axis"
		}
	}
	h := r / 2
	// tableWidth is the last axis of cos and sin; repeats proves they hold one angle per pair.
	tableWidth, repeats, what := r, repeatedHalves, "repeat its first half in its second"
	switch plan.form {
	case rotateHalf:
		cat := m.N("concat")
		if a, ok := normAxis(cat.AttrInt("axis", 0), 4); !ok || a != 3 {
			return "the halves are not concatenated on the last axis"
		}
		if !sliceIs(m.N("hi"), h, r, 1) || !sliceIs(m.N("lo"), 0, h, 1) {
			return fmt.Sprintf("the halves are not x[..., %d:] and x[..., :%d]", h, h)
		}
	case interleavedPairs, rotateEveryTwo:
		if why := checkPairs(m, r); why != "" {
			return why
		}
		if why := checkInterleave(m, attnShape(m.V("rotated"))); why != "" {
			return why
		}
		if plan.form == interleavedPairs {
			tableWidth, repeats = h, nil
		} else {
			repeats, what = repeatedPairs, "repeat each angle in two adjacent channels"
		}
	}
	for _, t := range []string{"cos", "sin"} {
		s := attnShape(m.V(t))
		if len(s) != 4 || !dimIsOne(s[heads]) || !ir.SameDim(s[seq], x[seq]) || !s[3].Known || s[3].Value != tableWidth ||
			!(dimIsOne(s[batch]) || ir.SameDim(s[batch], x[batch])) {
			return fmt.Sprintf("%s has shape %v, not one angle row per batch|1 and position (%v) of width %d", t, s, x[seq], tableWidth)
		}
		if repeats != nil && !repeats(m.V(t), 0) {
			return fmt.Sprintf("%s does not provably %s", t, what)
		}
	}
	return ""
}

// rotaryAxes says where a rank-4 rotary input holds its batch, heads and positions, read
// off cos, which broadcasts over the heads: [B, H, S, D] (cos [B|1, 1, S, w]); [B, S, H,
// D] as GPT-J and CodeGen rotate before moving the heads forward (cos [B|1, S, 1, w]); or
// sequence-first [S, B, H, D] as ChatGLM rotates (cos [S, 1, 1, w]). Any reading in which
// cos broadcasts over the heads computes the same rotation, so the names only steer the
// lowering's transposes.
func rotaryAxes(m *patterns.Match) (batch, heads, seq int, ok bool) {
	x, c := attnShape(m.V("input")), attnShape(m.V("cos"))
	if len(x) != 4 || len(c) != 4 {
		return 0, 0, 0, false
	}
	switch {
	case dimIsOne(c[1]) && ir.SameDim(c[2], x[2]) && !dimIsOne(x[2]):
		return 0, 1, 2, true
	case dimIsOne(c[2]) && ir.SameDim(c[1], x[1]) && !dimIsOne(x[1]):
		return 0, 2, 1, true
	case dimIsOne(c[1]) && dimIsOne(c[2]) && ir.SameDim(c[0], x[0]) && !dimIsOne(x[0]):
		return 1, 2, 0, true
	case dimIsOne(c[1]):
		return 0, 1, 2, true // one position: either reading is the same
	}
	return 0, 0, 0, false
}

// sliceIs reports whether a Slice takes start:end:step of the last axis of a rank-4
// tensor whose last dimension is ≥ end (an end past the axis counts as its end).
func sliceIs(n *ir.Node, start, end, step int64) bool {
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
	got := []int64{1}
	if s := n.Input(4); s != nil {
		var ok bool
		if got, ok = constInts(s); !ok {
			return false
		}
	}
	return len(got) == 1 && got[0] == step
}

func describeRotary(m *patterns.Match, b *Block) {
	if n := m.N("rotary"); n != nil {
		b.Fused = true
		b.Roles["input"], b.Roles["output"] = n.Input(0), n.Output(0)
		b.Params["interleaved"] = float64(n.AttrInt("interleaved", 0))
		if r := n.AttrInt("rotary_embedding_dim", 0); r > 0 {
			b.Params["rotary_dim"] = float64(r)
		}
		return
	}
	for _, r := range []string{"input", "output", "cos", "sin"} {
		b.Roles[r] = m.V(r)
	}
	if s := attnShape(m.V("input")); len(s) == 4 && s[3].Known {
		b.Params["head_size"] = float64(s[3].Value)
	}
	if _, _, seq, ok := rotaryAxes(m); ok && seq != 2 {
		b.Params["heads_after_seq"] = 1 // [B, S, H, D] or [S, B, H, D]
		if seq == 0 {
			b.Params["seq_first"] = 1 // [S, B, H, D]
		}
	}
	plan := m.Plan.(rotaryPlan)
	if plan.form.interleaved() {
		b.Params["interleaved"] = 1
	}
	if s := attnShape(m.V("rotated")); plan.partial && len(s) == 4 && s[3].Known {
		b.Params["rotary_dim"] = float64(s[3].Value)
	}
}

func fuseRotary(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error) {
	x := b.Role("input")
	dt := ir.Undefined
	if x.Type != nil {
		dt = x.Type.DType // cos and sin too: the graph multiplies them with x
	}
	if why := loweredDType(env.Target, dt, "rotary"); why != "" {
		return nil, why, nil
	}
	if env.Target == ONNX {
		if why := RequireOpset(env, 23, "RotaryEmbedding", b.Nodes); why != "" {
			return nil, why, nil
		}
	}
	form := b.Match.Plan.(rotaryPlan).form
	d := int64(b.Param("rotary_dim", b.Params["head_size"])) // the channels rotated
	h := d / 2
	last, _ := b.Root.Producer()
	name := nodePrefix(last) + "RotaryEmbedding"
	attrs := []*ir.Attr{ir.IntAttr("interleaved", int64(b.Param("interleaved", 0)))}
	headAxis, seqAxis := int64(1), int64(2)
	bshd := b.Param("heads_after_seq", 0) == 1
	if bshd {
		headAxis, seqAxis = 2, 1
	}
	// A sequence-first [S, B, H, D] input is lowered as [B, S, H, D] between two
	// Transposes, and so is its cos and sin.
	seqFirst := b.Param("seq_first", 0) == 1
	swap := func(v *ir.Value, name string) *ir.Value {
		if !seqFirst {
			return v
		}
		return reuseNode(rw, "Transpose", []*ir.Value{v}, name, ir.IntsAttr("perm", 1, 0, 2, 3))
	}
	x = swap(x, x.Name+"_bshd")
	_, partial := b.Params["rotary_dim"]
	if partial {
		attrs = append(attrs, ir.IntAttr("rotary_embedding_dim", d))
	}
	if partial || bshd {
		// A [B, S, H·D] input (below) is cut into heads by num_heads.
		attrs = append(attrs, ir.IntAttr("num_heads", attnShape(b.Role("input"))[headAxis].Value))
	}
	// [B|1, 1, S, D] → [B, S, D/2]: the first half (the second repeats it), the head axis
	// dropped, the batch spelled out.
	shapeX := reuseNode(rw, "Shape", []*ir.Value{x}, x.Name+"_shape")
	batch := reuseNode(rw, "Gather", []*ir.Value{shapeX, rw.Const("rotary_axis0", ir.Int64Tensor([]int64{1}, []int64{0}))}, x.Name+"_batch", ir.IntAttr("axis", 0))
	seq := reuseNode(rw, "Gather", []*ir.Value{shapeX, rw.Const(fmt.Sprintf("rotary_axis%d", seqAxis), ir.Int64Tensor([]int64{1}, []int64{seqAxis}))}, x.Name+"_seq", ir.IntAttr("axis", 0))
	one := rw.Const("rotary_one", ir.Int64Tensor([]int64{1}, []int64{1}))
	target := reuseNode(rw, "Concat", []*ir.Value{batch, one, one}, x.Name+"_batch11", ir.IntAttr("axis", 0))
	cache := func(v *ir.Value) *ir.Value {
		// One angle per pair: the first half, the even channels, or the table as given.
		half := v
		zero, lastAxis := rw.Const("rotary_zero", ir.Int64Tensor([]int64{1}, []int64{0})), rw.Const("rotary_last", ir.Int64Tensor([]int64{1}, []int64{3}))
		switch form {
		case rotateHalf:
			half = reuseNode(rw, "Slice", []*ir.Value{v, zero, rw.Const("rotary_half", ir.Int64Tensor([]int64{1}, []int64{h})), lastAxis}, v.Name+"_half")
		case rotateEveryTwo:
			half = reuseNode(rw, "Slice", []*ir.Value{v, zero, rw.Const("rotary_width", ir.Int64Tensor([]int64{1}, []int64{d})), lastAxis,
				rw.Const("rotary_two", ir.Int64Tensor([]int64{1}, []int64{2}))}, v.Name+"_even")
		}
		bsh := reuseNode(rw, "Reshape", []*ir.Value{half, rw.Const("rotary_bsh", ir.Int64Tensor([]int64{3}, []int64{0, -1, h}))}, v.Name+"_bsh")
		c := reuseNode(rw, "Expand", []*ir.Value{bsh, target}, v.Name+"_cache")
		if env.Target == ONNX {
			return c
		}
		return reuseNode(rw, "Reshape", []*ir.Value{c, rw.Const("rotary_rows", ir.Int64Tensor([]int64{2}, []int64{-1, h}))}, v.Name+"_rows")
	}
	cos, sin := cache(swap(b.Role("cos"), b.Role("cos").Name+"_bs")), cache(swap(b.Role("sin"), b.Role("sin").Name+"_bs"))
	in := x
	if bshd {
		// The operators take [B, H, S, D] or [B, S, H·D]: the heads merged in place.
		in = reuseNode(rw, "Reshape", []*ir.Value{x, rw.Const("rotary_merge_heads", ir.Int64Tensor([]int64{3}, []int64{0, 0, -1}))}, x.Name+"_bsd")
	}
	var n *ir.Node
	if env.Target == ONNX {
		n = rw.Node("RotaryEmbedding", "", []*ir.Value{in, cos, sin}, 1, name+"_output_0", attrs...)
	} else {
		// Position ids b·S + s index the [B·S, D/2] cache: each batch row its own angles.
		bs := reuseNode(rw, "Mul", []*ir.Value{batch, seq}, x.Name+"_rows")
		var r *ir.Value
		if env.Model.Opset("") >= ir.OpIntroduced("Range") {
			zero := rw.Const("rotary_zero_scalar", ir.Int64Tensor(nil, []int64{0}))
			step := rw.Const("rotary_one_scalar", ir.Int64Tensor(nil, []int64{1}))
			// Squeeze without axes drops the one unit axis, at every opset.
			limit := reuseNode(rw, "Squeeze", []*ir.Value{bs}, x.Name+"_rows_scalar")
			r = reuseNode(rw, "Range", []*ir.Value{zero, limit, step}, x.Name+"_positions")
		} else {
			// Before Range: the indices of B·S ones, [[0 .. B·S-1]].
			ones := reuseNode(rw, "ConstantOfShape", []*ir.Value{bs}, x.Name+"_ones",
				ir.TensorAttr("value", ir.Int64Tensor([]int64{1}, []int64{1})))
			r = reuseNode(rw, "NonZero", []*ir.Value{ones}, x.Name+"_positions")
		}
		bsShape := reuseNode(rw, "Concat", []*ir.Value{batch, seq}, x.Name+"_bs", ir.IntAttr("axis", 0))
		pos := reuseNode(rw, "Reshape", []*ir.Value{r, bsShape}, x.Name+"_position_ids")
		n = rw.Node("RotaryEmbedding", "com.microsoft", []*ir.Value{in, pos, cos, sin}, 1, name+"_output_0", attrs...)
		EnsureOpset(env.Model, "com.microsoft", 1)
	}
	n.Name = name // Q's and K's share it: Fuse makes node names unique
	// The interleaved forms' Reshape reads its target from a Shape of the stack.
	out := n.Output(0)
	if bshd {
		hd := attnShape(b.Role("input"))
		split := rw.Const(fmt.Sprintf("rotary_split_heads_%d_%d", hd[2].Value, hd[3].Value), ir.Int64Tensor([]int64{4}, []int64{0, 0, hd[2].Value, hd[3].Value}))
		out = rw.Node("Reshape", "", []*ir.Value{out, split}, 1, name+"_bshd").Output(0)
	}
	if seqFirst {
		out = rw.Node("Transpose", "", []*ir.Value{out}, 1, name+"_sbhd", ir.IntsAttr("perm", 1, 0, 2, 3)).Output(0)
	}
	rebuildShapes(rw, b, []*ir.Value{b.Role("input"), b.Root})
	rw.Replace(b.Root, out)
	return n, "", nil
}
