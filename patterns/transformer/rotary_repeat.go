package transformer

import (
	"fmt"
	"slices"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// A repeat proof shows that a cos or sin tensor holds one angle per rotated pair of
// channels. The two layouts differ only in which channels repeat: the halves (v[..., i]
// = v[..., i+D/2]) or adjacent channels (v[..., 2i] = v[..., 2i+1]).
type repeatProof struct {
	// pair gives the two channels of pair i in a row of width d.
	pair func(i, d int) (int, int)
	// built recognises a node that makes the repeat (from one tensor used twice).
	built func(n *ir.Node) bool
	// local: a pair lies within two adjacent channels, so parts that repeat, each of
	// even width, concatenated on the last axis repeat too (torch's repeat_interleave
	// exported column by column).
	local bool
}

var halvesRepeat = repeatProof{
	pair: func(i, d int) (int, int) { return i, i + d/2 },
	// Concat(t, t) on the last axis.
	built: func(n *ir.Node) bool {
		r := len(attnShape(n.Output(0)))
		a, ok := normAxis(n.AttrInt("axis", 0), r)
		return isOp(n, "Concat") && ok && a == r-1 && len(n.Inputs()) == 2 && n.Input(0) == n.Input(1)
	},
}

var pairsRepeat = repeatProof{
	pair:  func(i, d int) (int, int) { return 2 * i, 2*i + 1 },
	local: true,
	// Reshape(Concat(Unsqueeze(t), Unsqueeze(t))) or Reshape(Expand(Unsqueeze(t), [.., 2]))
	// with the new last axis merged back: every channel of t twice in a row.
	built: func(n *ir.Node) bool {
		if !isOp(n, "Reshape") {
			return false
		}
		out, in := attnShape(n.Output(0)), attnShape(n.Input(0))
		if len(in) != len(out)+1 || !ir.SameShape(in[:len(out)-1], out[:len(out)-1]) || !in[len(in)-1].Known || in[len(in)-1].Value != 2 {
			return false
		}
		src, _ := n.Input(0).Producer()
		unitLast := func(v *ir.Value) bool {
			u, _ := v.Producer()
			s := attnShape(v)
			return isOp(u, "Unsqueeze") && len(s) == len(in) && dimIsOne(s[len(s)-1])
		}
		switch {
		case isOp(src, "Concat"):
			a, ok := normAxis(src.AttrInt("axis", 0), len(in))
			return ok && a == len(in)-1 && len(src.Inputs()) == 2 && src.Input(0) == src.Input(1) && unitLast(src.Input(0))
		case isOp(src, "Expand"), isOp(src, "Tile"):
			return unitLast(src.Input(0))
		}
		return false
	},
}

// repeatedHalves proves v[..., :D/2] = v[..., D/2:]; repeatedPairs proves
// v[..., 2i] = v[..., 2i+1].
func repeatedHalves(v *ir.Value, depth int) bool { return halvesRepeat.proves(v, depth) }
func repeatedPairs(v *ir.Value, depth int) bool  { return pairsRepeat.proves(v, depth) }

// proves follows v back through ops that keep the last axis whole (Unsqueeze, Reshape of
// leading axes, Gather or Slice on other axes, Cast, Expand, Identity, and Cos or Sin,
// which map equal channels to equal channels) to a constant whose rows repeat, or to the
// node that builds the repeat.
func (p repeatProof) proves(v *ir.Value, depth int) bool {
	if v == nil || depth > 12 {
		return false
	}
	if t := patterns.ConstOf(v); t != nil {
		return p.constRepeats(t)
	}
	n, _ := v.Producer()
	if n == nil || n.Domain != "" {
		return false
	}
	if p.built(n) {
		return true
	}
	switch n.OpType {
	case "Cos", "Sin":
		return p.proves(n.Input(0), depth+1)
	case "Concat":
		r := len(attnShape(v))
		if a, ok := normAxis(n.AttrInt("axis", 0), r); !ok || a != r-1 {
			return false
		}
		if !p.local {
			return p.provesByChannels(v, depth)
		}
		for _, in := range n.Inputs() {
			if w := lastDim(in); w < 0 || w%2 != 0 || !p.proves(in, depth+1) {
				return false
			}
		}
		return len(n.Inputs()) > 0
	case "Mul", "Div", "Add", "Sub":
		return p.provesElementwise(n, lastDim(v), depth)
	case "Unsqueeze", "Reshape", "Cast", "Expand", "Identity", "Gather", "Slice":
		// Ops that must keep the last axis whole.
		if lastDim(n.Input(0)) < 0 || lastDim(n.Input(0)) != lastDim(v) {
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
		return p.proves(n.Input(0), depth+1)
	}
	return false
}

// provesElementwise proves the repeat of an elementwise op's output of width w (cos and
// sin times an attention factor, as LongRoPE and YaRN scale them): each operand either
// holds one value per row (a last axis of 1, or a scalar), which keeps equal channels
// equal, or has width w and repeats.
func (p repeatProof) provesElementwise(n *ir.Node, w int64, depth int) bool {
	if w < 0 || len(n.Inputs()) != 2 {
		return false
	}
	for _, in := range n.Inputs() {
		if in == nil || in.Type == nil || !in.Type.HasShape {
			return false
		}
		s := in.Type.Shape
		if len(s) == 0 || dimIsOne(s[len(s)-1]) {
			continue
		}
		if !s[len(s)-1].Known || s[len(s)-1].Value != w || !p.proves(in, depth+1) {
			return false
		}
	}
	return true
}

// provesByChannels proves the repeat of a value assembled on its last axis from parts of
// other values (Qwen2-VL's multimodal rotary: cos split into sections, each section taken
// from the row of its own position kind, concatenated): the two channels of every pair
// come from the same value under the same selection, either the same channel or a pair
// of a value that repeats itself.
func (p repeatProof) provesByChannels(v *ir.Value, depth int) bool {
	src := channelSources(v, 0)
	d := len(src)
	if d == 0 || d%2 != 0 {
		return false
	}
	proved := map[*ir.Value]bool{}
	for i := 0; i < d/2; i++ {
		a, b := p.pair(i, d)
		sa, sb := src[a], src[b]
		if sa.base != sb.base || sa.sel != sb.sel {
			return false
		}
		if sa.ch == sb.ch {
			continue
		}
		w := int(lastDim(sa.base))
		if !p.isPair(sa.ch, sb.ch, w) {
			return false
		}
		if ok, seen := proved[sa.base]; seen && !ok {
			return false
		} else if !seen {
			proved[sa.base] = p.proves(sa.base, depth+1)
			if !proved[sa.base] {
				return false
			}
		}
	}
	return true
}

// isPair reports whether channels a and b of a row of width w form one of the proof's pairs.
func (p repeatProof) isPair(a, b, w int) bool {
	for j := 0; j < w/2; j++ {
		if x, y := p.pair(j, w); x == a && y == b {
			return true
		}
	}
	return false
}

// chanSource is where one channel of a value comes from: channel ch of base, read
// through the selections sel on other axes (Gathers by a constant index), so that two
// channels with the same base and sel hold equal values when base's channels do.
type chanSource struct {
	base *ir.Value
	sel  string
	ch   int
}

// lastDim is the known size of v's last axis, or -1.
func lastDim(v *ir.Value) int64 {
	s := attnShape(v)
	if len(s) == 0 || !s[len(s)-1].Known {
		return -1
	}
	return s[len(s)-1].Value
}

// channelSources follows v's last axis back through Concats, Slices and Splits on it and
// through Gathers by a constant index on other axes, Unsqueezes, Casts and Identities,
// and lists each channel's source; nil when a width is unknown.
func channelSources(v *ir.Value, depth int) []chanSource {
	w := lastDim(v)
	if w < 0 || w > 1<<16 {
		return nil
	}
	whole := func() []chanSource {
		out := make([]chanSource, w)
		for i := range out {
			out[i] = chanSource{base: v, ch: i}
		}
		return out
	}
	n, _ := v.Producer()
	if n == nil || n.Domain != "" || depth > 12 {
		return whole()
	}
	r := len(attnShape(n.Input(0)))
	onLast := func(a int64) bool { i, ok := normAxis(a, r); return ok && i == r-1 }
	switch n.OpType {
	case "Concat":
		if !onLast(n.AttrInt("axis", 0)) {
			return whole()
		}
		var out []chanSource
		for _, in := range n.Inputs() {
			s := channelSources(in, depth+1)
			if s == nil {
				return nil
			}
			out = append(out, s...)
		}
		if int64(len(out)) != w {
			return nil
		}
		return out
	case "Split", "Slice":
		start := int64(0)
		if n.OpType == "Split" {
			if !onLast(n.AttrInt("axis", 0)) {
				return whole()
			}
			for _, o := range n.Outputs() {
				if o == v {
					break
				}
				if lastDim(o) < 0 {
					return nil
				}
				start += lastDim(o)
			}
		} else {
			st, ok1 := constInts(n.Input(1))
			axes, ok2 := constInts(n.Input(3))
			steps := []int64{1}
			if n.Input(4) != nil {
				steps, _ = constInts(n.Input(4))
			}
			if !ok1 || !ok2 || len(st) != 1 || len(axes) != 1 || !onLast(axes[0]) || len(steps) != 1 || steps[0] != 1 {
				return whole()
			}
			start = st[0]
			if start < 0 {
				start += lastDim(n.Input(0))
			}
		}
		in := channelSources(n.Input(0), depth+1)
		if in == nil || start < 0 || start+w > int64(len(in)) {
			return nil
		}
		return in[start : start+w]
	case "Gather":
		idx, ok := constInts(n.Input(1))
		if !ok || len(idx) != 1 || n.Input(1).Type.Rank() != 0 || onLast(n.AttrInt("axis", 0)) {
			return whole()
		}
		in := channelSources(n.Input(0), depth+1)
		for i := range in {
			in[i].sel += fmt.Sprintf("[axis %d = %d]", n.AttrInt("axis", 0), idx[0])
		}
		return in
	case "Unsqueeze", "Cast", "Identity":
		if lastDim(n.Input(0)) != w {
			return whole()
		}
		return channelSources(n.Input(0), depth+1)
	}
	return whole()
}

// constRepeats checks a constant's rows: the two channels of every pair are equal.
func (p repeatProof) constRepeats(t *ir.Tensor) bool {
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
			a, b := p.pair(i, d)
			if vals[r+a] != vals[r+b] {
				return false
			}
		}
	}
	return true
}
