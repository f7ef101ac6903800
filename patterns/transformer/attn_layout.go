package transformer

import (
	"fmt"
	"slices"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/shape"
)

// Layout algebra for attention operands.
//
// Attention is recognised from its math whatever the exporter's layout ops: Q, K and V
// are followed back from the two matmuls through Reshape, Transpose, Split, Slice,
// Gather, Squeeze/Unsqueeze, Expand and Tile to the op that computed them (a projection,
// a rotary embedding, anything), and replayed forward from there as "atoms": the factors
// of a tensor's index space. A [B,S,H] projection output is three atoms; a Reshape to
// [B,S,N,D] splits the channel atom into two; a Transpose permutes axes; a Reshape to
// [B·N,S,D] merges axes. At the matmuls the atoms say, exactly, which index is batch,
// heads, sequence and head size, so a rewrite is the same function whatever the path.

type atomKind uint8

const (
	atomBatch  atomKind = iota // the batch of the operand's source
	atomSeq                    // the sequence axis of the operand's source
	atomChan                   // a factor of the source's channels (heads, head size, a packed q|k|v index)
	atomRepeat                 // a broadcast: the data does not depend on this index (repeated K/V heads)
	atomTokens                 // batch and sequence flattened together ([B·S, C] sources)
)

var atomKindNames = [...]string{"batch", "seq", "chan", "repeat", "tokens"}

type atom struct {
	kind atomKind
	size ir.Dim
	// children replace the atom once a reshape split it (row-major: children[0] is the
	// most significant factor).
	children []*atom
	// parent is the batch or sequence atom this one is a factor of (outer: the most
	// significant one), when a reshape split the batch for a while (Swin adds its window
	// mask on a [B, nW, N, S, S] view of [B·nW, N, S, S] scores) or the source is a grid
	// of tokens ([B, h, w, C]: SAM's image encoder); unlike children, the split is local
	// to the layouts that hold the factors, and merging them back gives the parent.
	parent *atom
	outer  bool
}

func (a *atom) String() string { return fmt.Sprintf("%s(%v)", atomKindNames[a.kind], a.size) }

// leaves are the atoms a has become.
func (a *atom) leaves() []*atom {
	if len(a.children) == 0 {
		return []*atom{a}
	}
	var out []*atom
	for _, c := range a.children {
		out = append(out, c.leaves()...)
	}
	return out
}

// axis is the atoms of one tensor axis, most significant first; an empty axis has size 1.
type axis []*atom

// layout is the atoms of every axis of a tensor.
type layout []axis

func (l layout) String() string {
	s := "["
	for i, ax := range l {
		if i > 0 {
			s += " "
		}
		s += "("
		for j, a := range ax.leaves() {
			if j > 0 {
				s += " "
			}
			s += a.String()
		}
		s += ")"
	}
	return s + "]"
}

func (ax axis) leaves() axis {
	var out axis
	for _, a := range ax {
		out = append(out, a.leaves()...)
	}
	return out
}

func (ax axis) size() ir.Dim {
	ds := make([]ir.Dim, len(ax))
	for i, a := range ax {
		ds[i] = a.size
	}
	return shape.MulDims(ds...)
}

func (l layout) clone() layout {
	out := make(layout, len(l))
	for i, ax := range l {
		out[i] = append(axis(nil), ax.leaves()...)
	}
	return out
}

func (l layout) flat() []*atom {
	var out []*atom
	for _, ax := range l {
		out = append(out, ax.leaves()...)
	}
	return out
}

func dimIsOne(d ir.Dim) bool { return d.Known && d.Value == 1 }

// isBatchDim reports whether d is the batch: a symbol some graph input has first.
func isBatchDim(g *ir.Graph, d ir.Dim) bool {
	return g != nil && !d.Known && d.Param != "" && g.BatchDims()[d.Param]
}

// A reading says how sourceLayout takes a source whose rank leaves more than one layout.
// The caller tries them in order, and the matmuls and the softmax accept only the reading
// that is the math; where none does, the one that got further gives the reason.
type reading int

const (
	readAsNamed  reading = iota // as the rank, the producer and the batch symbol suggest
	readOther                   // the other reading of a rank whose dims leave two
	readSeqFirst                // rank 3 as [L, B, C] even where L is some input's first dim
)

var readings = []reading{readAsNamed, readOther, readSeqFirst}

// sourceLayout is the layout an operand's source is taken to have: [B,L,C] for a rank-3
// tensor ([B,C,L] when a Conv made it: channel-first; [L,B,C] when its second dim is the
// model's batch and its first is not: sequence-first, as nn.MultiheadAttention reads),
// [B·L,C] for a rank-2 one (a projection on the flattened tokens; the other reading, [B,C]
// where its first dim is the batch: one token each), and [.., B,N,L,D] for a
// rank-4 or higher one (a key/value cache or an encoder's keys fed as inputs, heads
// first; leading axes stack layers). readOther takes the other reading where the rank
// leaves two: [L,B,C] when no symbol names either leading dim the batch (a static export),
// [.., B,L,N,D] for the higher ranks. readSeqFirst takes every rank-3 source as [L,B,C],
// for where the batch symbol misleads: a model whose inputs are themselves
// sequence-first (nn.Transformer called on [S, B, E]) has the sequence first in them, so
// the symbols inputs have first include the sequence, and the batch is first in none or
// only in a mask.
func sourceLayout(v *ir.Value, r reading) (layout, string) {
	s := attnShape(v)
	mk := func(k atomKind, i int) *atom { return &atom{kind: k, size: s[i]} }
	alt := r == readOther
	n, _ := v.Producer()
	g := v.Graph()
	switch {
	case len(s) == 3 && n != nil && n.OpType == "Conv":
		return layout{{mk(atomBatch, 0)}, {mk(atomChan, 1)}, {mk(atomSeq, 2)}}, ""
	case len(s) == 3 && isBatchDim(g, s[1]) && !isBatchDim(g, s[0]),
		len(s) == 3 && alt && !isBatchDim(g, s[0]) && !isBatchDim(g, s[1]),
		len(s) == 3 && r == readSeqFirst:
		return layout{{mk(atomSeq, 0)}, {mk(atomBatch, 1)}, {mk(atomChan, 2)}}, ""
	case len(s) == 4 && alt && projection(v) != nil:
		// A projection over a grid of tokens [B, h, w, C]: its sequence is h·w, row-major.
		seq := &atom{kind: atomSeq, size: shape.MulDims(s[1], s[2])}
		hi, lo := &atom{kind: atomSeq, size: s[1], parent: seq, outer: true}, &atom{kind: atomSeq, size: s[2], parent: seq}
		return layout{{mk(atomBatch, 0)}, {hi}, {lo}, {mk(atomChan, 3)}}, ""
	case len(s) >= 4:
		var l layout
		r := len(s) - 4
		for i := 0; i < r; i++ {
			l = append(l, axis{mk(atomChan, i)})
		}
		if alt {
			return append(l, axis{mk(atomBatch, r)}, axis{mk(atomSeq, r+1)}, axis{mk(atomChan, r+2)}, axis{mk(atomChan, r+3)}), ""
		}
		return append(l, axis{mk(atomBatch, r)}, axis{mk(atomChan, r+1)}, axis{mk(atomSeq, r+2)}, axis{mk(atomChan, r+3)}), ""
	case len(s) == 3:
		return layout{{mk(atomBatch, 0)}, {mk(atomSeq, 1)}, {mk(atomChan, 2)}}, ""
	case len(s) == 2 && alt && isBatchDim(g, s[0]):
		// [B, C]: one token per batch (CaiT's class attention reads Q off x[:, 0]), a
		// sequence of one.
		return layout{{mk(atomBatch, 0), &atom{kind: atomSeq, size: ir.D(1)}}, {mk(atomChan, 1)}}, ""
	case len(s) == 2:
		// [B·L, C]: one tokens atom, split into batch and sequence by the reshape that
		// names them.
		return layout{{mk(atomTokens, 0)}, {mk(atomChan, 1)}}, ""
	}
	return nil, fmt.Sprintf("source %s has shape %v: not [B,S,C], [B,C,S], [B·S,C] or [B,N,S,D]", v.Name, s)
}

// regroup is a Reshape: the atoms in row-major order, grouped anew to the output dims;
// a channel atom of known size is split where an output dim divides it.
func regroup(in layout, out ir.Shape) (layout, string) {
	flat := in.flat()
	res := make(layout, len(out))
	i := 0
	for j, d := range out {
		var group axis
		acc := ir.D(1)
		if dimIsOne(d) {
			// A unit axis keeps the unit atoms here (a batch of 1 stays the batch).
			for ; i < len(flat) && dimIsOne(flat[i].size); i++ {
				group = append(group, flat[i])
			}
		}
		for !ir.SameDim(acc, d) {
			if i >= len(flat) {
				return nil, fmt.Sprintf("reshape to %v: atoms exhausted at dim %d", out, j)
			}
			a := flat[i]
			if dimIsOne(a.size) {
				group = append(group, a)
				i++
				continue
			}
			next := shape.MulDims(acc, a.size)
			if _, ok := shape.DivDims(d, next); ok && (next.Known || next.Param != "") {
				group = append(group, a)
				acc = next
				i++
				continue
			}
			f, ok := shape.DivDims(d, acc)
			if ok && a.kind == atomChan && a.size.Known && f.Known && f.Value > 1 && f.Value < a.size.Value && a.size.Value%f.Value == 0 {
				hi := &atom{kind: atomChan, size: f}
				lo := &atom{kind: atomChan, size: ir.D(a.size.Value / f.Value)}
				a.children = []*atom{hi, lo}
				flat = slices.Insert(slices.Delete(flat, i, i+1), i, hi, lo)
				continue
			}
			// A batch that is a product (B·nW), or a sequence viewed as its grid (SAM adds
			// its relative positions on [B·N, h, w, h, w] scores), splits into two factors.
			if ok && (a.kind == atomBatch || a.kind == atomSeq) && a.parent == nil && len(group) == 0 {
				if lo, ok := shape.DivDims(a.size, f); ok && !dimIsOne(lo) && !dimIsOne(f) && (lo.Known || f.Known) {
					hi, lo := &atom{kind: a.kind, size: f, parent: a, outer: true}, &atom{kind: a.kind, size: lo, parent: a}
					flat = slices.Insert(slices.Delete(flat, i, i+1), i, hi, lo)
					continue
				}
			}
			if ok && a.kind == atomTokens && len(group) == 0 {
				if lo, ok := shape.DivDims(a.size, f); ok && !dimIsOne(lo) && !dimIsOne(f) {
					hi, lo := &atom{kind: atomBatch, size: f}, &atom{kind: atomSeq, size: lo}
					a.children = []*atom{hi, lo}
					flat = slices.Insert(slices.Delete(flat, i, i+1), i, hi, lo)
					continue
				}
			}
			return nil, fmt.Sprintf("reshape to %v does not regroup %v", out, in)
		}
		res[j] = mergeFactors(group)
	}
	for ; i < len(flat); i++ {
		if !dimIsOne(flat[i].size) {
			return nil, fmt.Sprintf("reshape to %v leaves %v over", out, flat[i])
		}
	}
	return res, ""
}

// factorPair reports whether a and b are, in order, the outer and inner factors of one
// atom.
func factorPair(a, b *atom) bool {
	return a.parent != nil && a.outer && b.parent == a.parent && !b.outer
}

// mergeFactors gives back the batch or sequence atom whose two factors sit in order in
// one axis.
func mergeFactors(ax axis) axis {
	for k := 0; k+1 < len(ax); k++ {
		if a := ax[k]; factorPair(a, ax[k+1]) {
			return append(append(append(axis(nil), ax[:k]...), a.parent), ax[k+2:]...)
		}
	}
	return ax
}

// layoutStep is one op on an operand's path: the value it reads and the value it makes.
type layoutStep struct {
	node *ir.Node
	in   *ir.Value
	out  *ir.Value
	// scale is the constant factor a scalar Mul or Div multiplies by (1 for layout ops).
	scale float64
	// quant marks a QuantizeLinear/DequantizeLinear step.
	quant bool
}

// passThrough says whether n, reading v, moves data without computing (a layout op, a
// no-op, a scalar scale or a Q/DQ step), and the step. Scales by a non-scalar constant or
// by a value are not steps.
func passThrough(n *ir.Node, v *ir.Value) (layoutStep, bool) {
	st := layoutStep{node: n, in: v, out: n.Output(0), scale: 1}
	if n.Domain != "" && n.Domain != "ai.onnx" {
		return st, false
	}
	switch n.OpType {
	case "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Expand", "Tile", "Flatten":
		return st, n.Input(0) == v
	case "Dropout", "Cast":
		if n.OpType == "Cast" && !(v.Type != nil && v.Type.DType.IsFloat() && ir.DataType(n.AttrInt("to", 0)).IsFloat()) {
			return st, false
		}
		return st, n.Input(0) == v
	case "Split", "Slice", "Gather":
		return st, n.Input(0) == v
	case "QuantizeLinear", "DequantizeLinear":
		st.quant = true
		return st, n.Input(0) == v
	case "Mul", "Div":
		other := n.Input(1)
		if other == v {
			if n.OpType == "Div" {
				return st, false
			}
			other = n.Input(0)
		}
		c, ok := scalarConst(other)
		if !ok || c == 0 {
			return st, false
		}
		if n.OpType == "Div" {
			c = 1 / c
		}
		st.scale = c
		return st, true
	}
	return st, false
}

// scalarConst reads a constant holding one value (a scalar or a tensor filled with it).
func scalarConst(v *ir.Value) (float64, bool) { return patterns.UniformConst(v) }

// constInts reads a small int constant (shapes, axes, indices).
func constInts(v *ir.Value) ([]int64, bool) {
	t := patterns.ConstOf(v)
	if t == nil || !t.DType.IsInt() || t.NumElements() > 64 {
		return nil, false
	}
	x, err := t.Int64s()
	return x, err == nil
}

// axesOf reads a node's axes from the attribute (older opsets) or the second input.
func axesOf(n *ir.Node, input int) ([]int64, bool) {
	if a, ok := n.AttrInts("axes"); ok {
		return a, true
	}
	if n.Input(input) == nil {
		return nil, false
	}
	return constInts(n.Input(input))
}

func normAxis(a int64, rank int) (int, bool) {
	if a < 0 {
		a += int64(rank)
	}
	return int(a), a >= 0 && a < int64(rank)
}

// apply replays step st on the layout of its input.
func (st layoutStep) apply(in layout) (layout, string) {
	n := st.node
	outShape := attnShape(st.out)
	switch n.OpType {
	case "Identity", "Dropout", "Cast", "QuantizeLinear", "DequantizeLinear", "Mul", "Div", "Max", "Sub":
		if st.out.Type.Rank() != len(in) {
			return nil, fmt.Sprintf("%s broadcasts its input", n)
		}
		return in.clone(), ""
	case "Reshape", "Flatten":
		if outShape == nil {
			return nil, fmt.Sprintf("%s: output shape unknown", n)
		}
		return regroup(in, outShape)
	case "Transpose":
		perm, ok := n.AttrInts("perm")
		if !ok {
			perm = make([]int64, len(in))
			for i := range perm {
				perm[i] = int64(len(in) - 1 - i)
			}
		}
		if len(perm) != len(in) {
			return nil, fmt.Sprintf("%s: perm %v for rank %d", n, perm, len(in))
		}
		out := make(layout, len(in))
		for i, p := range perm {
			out[i] = in[p]
		}
		return out.clone(), ""
	case "Squeeze", "Unsqueeze":
		axes, ok := axesOf(n, 1)
		if !ok {
			return nil, fmt.Sprintf("%s: axes not constant", n)
		}
		if n.OpType == "Squeeze" {
			drop := map[int]bool{}
			for _, a := range axes {
				i, ok := normAxis(a, len(in))
				if !ok || !dimIsOne(in[i].leaves().size()) {
					return nil, fmt.Sprintf("%s squeezes a non-unit axis", n)
				}
				drop[i] = true
			}
			var out layout
			for i, ax := range in {
				if !drop[i] {
					out = append(out, ax)
				}
			}
			return out.clone(), ""
		}
		r := len(in) + len(axes)
		ins := map[int]bool{}
		for _, a := range axes {
			i, ok := normAxis(a, r)
			if !ok {
				return nil, fmt.Sprintf("%s: axis %d is out of range", n, a)
			}
			ins[i] = true
		}
		out := make(layout, 0, r)
		j := 0
		for i := 0; i < r; i++ {
			if ins[i] {
				out = append(out, axis{})
			} else {
				out = append(out, in[j])
				j++
			}
		}
		return out.clone(), ""
	case "Expand", "Tile":
		if outShape == nil || len(outShape) < len(in) {
			return nil, fmt.Sprintf("%s: output shape unknown", n)
		}
		out := make(layout, len(outShape))
		off := len(outShape) - len(in)
		for i, d := range outShape {
			var src axis
			if i >= off {
				src = in[i-off].leaves()
			}
			have := src.size()
			switch {
			case ir.SameDim(have, d):
				out[i] = src
			case dimIsOne(have) && d.Known:
				out[i] = axis{{kind: atomRepeat, size: d}}
			case n.OpType == "Tile" && d.Known && have.Known && d.Value%have.Value == 0:
				// Tile repeats the whole axis: the copy index is the most significant.
				out[i] = append(axis{{kind: atomRepeat, size: ir.D(d.Value / have.Value)}}, src...)
			default:
				return nil, fmt.Sprintf("%s: axis %d grows from %v to %v", n, i, have, d)
			}
		}
		return out, ""
	case "Split", "Slice", "Gather":
		return st.selectAxis(in, outShape)
	}
	return nil, fmt.Sprintf("%s is not a layout op", n)
}

// selectAxis is Split, Slice or Gather with one constant index: a part of one axis.
// The part is a new channel atom when the axis is one channel atom (a packed q|k|v),
// or the axis without its most significant atom when the part is one index of it.
func (st layoutStep) selectAxis(in layout, outShape ir.Shape) (layout, string) {
	n := st.node
	if outShape == nil {
		return nil, fmt.Sprintf("%s: output shape unknown", n)
	}
	ax := int64(0)
	if n.OpType != "Slice" {
		ax = n.AttrInt("axis", 0)
	} else {
		axes, ok := constInts(n.Input(3))
		if n.Input(3) == nil {
			axes, ok = []int64{0}, true
			if len(in) > 1 {
				ok = false
			}
		}
		if !ok || len(axes) != 1 {
			return nil, fmt.Sprintf("%s slices more than one axis", n)
		}
		ax = axes[0]
		if steps := n.Input(4); steps != nil {
			s, ok := constInts(steps)
			if !ok || len(s) != 1 || s[0] < 1 {
				return nil, fmt.Sprintf("%s: step is not a positive constant", n)
			}
			if s[0] > 1 {
				return st.strided(in, ax, s[0], outShape)
			}
		}
	}
	i, ok := normAxis(ax, len(in))
	if !ok {
		return nil, fmt.Sprintf("%s: axis %d is out of range", n, ax)
	}
	leaves := in[i].leaves()
	out := in.clone()
	// A Gather by a scalar index drops the axis; by a one-element list (x[:, [i]]) it
	// keeps it, as a Slice of width one does.
	removed := n.OpType == "Gather"
	if removed {
		idx, ok := constInts(n.Input(1))
		if !ok || len(idx) != 1 || n.Input(1).Type.Rank() > 1 {
			return nil, fmt.Sprintf("%s: index is not a constant scalar or a one-element list", n)
		}
		removed = n.Input(1).Type.Rank() == 0
	}
	var part ir.Dim
	if removed {
		part = ir.D(1)
	} else {
		if len(outShape) != len(in) {
			return nil, fmt.Sprintf("%s changes the rank", n)
		}
		part = outShape[i]
	}
	switch {
	case len(leaves) == 1 && leaves[0].kind == atomChan && part.Known && !removed:
		out[i] = axis{{kind: atomChan, size: part}}
	case len(leaves) >= 1 && leaves[0].kind == atomChan && ir.SameDim(axis(leaves[1:]).size(), part) || removed && len(leaves) == 1:
		out[i] = axis(leaves[1:])
		if removed && len(leaves) == 1 {
			out[i] = nil
		}
	default:
		return nil, fmt.Sprintf("%s takes %v of %v", n, part, in[i])
	}
	if removed {
		out = slices.Delete(out, i, i+1)
	}
	return out, ""
}

// strided is Slice with step k > 1 over one channel atom of size n (every k-th element,
// the interleaved halves of a rotary embedding): the atom splits into (n/k, k) and the
// slice keeps one index of the minor factor.
func (st layoutStep) strided(in layout, ax int64, k int64, outShape ir.Shape) (layout, string) {
	n := st.node
	i, ok := normAxis(ax, len(in))
	if !ok || len(outShape) != len(in) {
		return nil, fmt.Sprintf("%s: axis %d is out of range, or the slice changes the rank", n, ax)
	}
	lv := in[i].leaves()
	starts, ok1 := constInts(n.Input(1))
	if len(lv) != 1 || lv[0].kind != atomChan || !lv[0].size.Known || !ok1 || len(starts) != 1 {
		return nil, fmt.Sprintf("%s: a strided slice of %v", n, in[i])
	}
	a := lv[0]
	start := starts[0]
	if start < 0 {
		start += a.size.Value
	}
	if a.size.Value%k != 0 || start < 0 || start >= k || !ir.SameDim(outShape[i], ir.D(a.size.Value/k)) {
		return nil, fmt.Sprintf("%s takes every %d-th of %v from %d", n, k, a.size, start)
	}
	hi := &atom{kind: atomChan, size: ir.D(a.size.Value / k)}
	lo := &atom{kind: atomChan, size: ir.D(k)}
	a.children = []*atom{hi, lo}
	out := in.clone()
	out[i] = axis{hi}
	return out, ""
}
