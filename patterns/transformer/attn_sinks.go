package transformer

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
)

// Attention sinks (GPT-OSS): each head's learned logit is joined to every row of the
// scores on the key axis, the softmax runs over the joined row, and the joined column is
// dropped before probs·V, so each row's weights sum to less than one. That is
// GroupQueryAttention's head_sink, a logit per head added to the softmax's normaliser.

// sinkJoin is the sink form around a softmax: the nodes that join and drop the column.
type sinkJoin struct {
	concat *ir.Node   // Concat(scores, sink) on the softmax axis
	value  *ir.Value  // the joined sink logits
	nodes  []*ir.Node // the Concat, the row statistics read through, the dropping Slice
	slice  int        // the Slice's index in the probs steps
	at     layout     // the scores' layout where they are joined
}

// findSink reads the softmax input back to a Concat of two on the softmax's last axis
// (joinedConcat) through Casts to the same type alone, and the probs forward through
// same-type Casts to a Slice that drops the last column. Nil when the softmax is not in
// the sink form.
func findSink(sm *ir.Node, probs []layoutStep) *sinkJoin {
	n, nodes := joinedConcat(sm)
	if n == nil || len(n.Inputs()) != 2 {
		return nil
	}
	rank := n.Output(0).Type.Rank()
	if a, _ := normAxis(n.AttrInt("axis", 0), rank); a != rank-1 {
		return nil
	}
	for _, c := range nodes {
		if c.OpType == "Cast" && !sameDType(c.Input(0), c.Output(0)) {
			return nil
		}
	}
	i := dropsLast(probs, rank)
	if i < 0 {
		return nil
	}
	nodes = append(nodes, n, probs[i].node)
	return &sinkJoin{concat: n, value: n.Input(1), nodes: nodes, slice: i}
}

// sameDType reports whether a and b have one known element type.
func sameDType(a, b *ir.Value) bool {
	return a.Type != nil && b.Type != nil && a.Type.DType == b.Type.DType
}

// dropsLast returns the index of the probs step that slices off the last column of the
// softmax's last axis, exactly that column (starts 0, ends -1, step 1), when only Casts
// to the same type come before it; -1 otherwise.
func dropsLast(probs []layoutStep, rank int) int {
	for i, st := range probs {
		n := st.node
		switch n.OpType {
		case "Cast":
			if !sameDType(st.in, st.out) {
				return -1
			}
			continue
		case "Slice":
		default:
			return -1
		}
		if len(n.Inputs()) < 4 || n.Input(0) != st.in || n.Input(1) == nil || n.Input(2) == nil || n.Input(3) == nil {
			return -1
		}
		starts, okS := constInts(n.Input(1))
		ends, okE := constInts(n.Input(2))
		axes, okA := constInts(n.Input(3))
		if !okS || !okE || !okA || len(starts) != 1 || len(ends) != 1 || len(axes) != 1 {
			return -1
		}
		if len(n.Inputs()) > 4 && n.Input(4) != nil {
			steps, ok := constInts(n.Input(4))
			if !ok || len(steps) != 1 || steps[0] != 1 {
				return -1
			}
		}
		a, ok := normAxis(axes[0], rank)
		if !ok || a != rank-1 || starts[0] != 0 || ends[0] != -1 {
			return -1
		}
		return i
	}
	return -1
}

// sinkSizes are the batch and sequence lengths the sink logits are evaluated at.
var sinkSizes = [][2]int64{{2, 3}, {1, 5}}

// sinkWhat begins every reason a sink is refused for.
const sinkWhat = "the softmax normalises the scores joined with a logit per row (attention sinks)"

// proveSink checks that the joined logits are one column that varies over the heads
// only and keeps each head's logit. It evaluates them, which needs the opset: the
// lowering calls it.
func (p *attnPlan) proveSink(opset int64) string {
	sl := p.sink.at
	hs := axis(p.q.headLeaves).size()
	hAxis := -1
	for j, ax := range sl {
		ls := ax.leaves()
		if len(ls) > 0 && slices.Equal(ls, p.q.headLeaves) {
			hAxis = j
		}
	}
	if hAxis < 0 || !hs.Known {
		return sinkWhat + ": the scores have no axis of the heads alone"
	}
	var sink []float64
	for _, sz := range sinkSizes {
		// A known batch or sequence is read off the shapes as it is.
		sizes := map[string]int64{}
		for i, d := range []ir.Dim{p.q.canon[0].size, p.q.seq.size} {
			if !d.Known {
				sizes[d.Param] = sz[i]
			}
		}
		t, err := evalTerm(p.sink.value, sizes, opset, 0)
		if err != nil {
			return fmt.Sprintf("%s: the logits %s are not computed from constants and sizes: %v", sinkWhat, p.sink.value.Name, err)
		}
		s, ok := perHead(t, len(sl), hAxis, hs.Value)
		if !ok || sink != nil && !slices.Equal(sink, s) {
			return fmt.Sprintf("%s: the logits %s are not one column of a finite logit per head", sinkWhat, p.sink.value.Name)
		}
		sink = s
	}
	p.sinkLogits = sink
	return ""
}

// perHead reads an evaluated sink tensor of rank r: one column (its last axis 1), each
// head's logit constant over every other axis.
func perHead(t *ir.Tensor, r, hAxis int, heads int64) ([]float64, bool) {
	if len(t.Dims) != r || t.Dims[r-1] != 1 || t.Dims[hAxis] != heads && t.Dims[hAxis] != 1 {
		return nil, false
	}
	vals, err := t.Float64s()
	if err != nil {
		return nil, false
	}
	inner := int64(1)
	for a := r - 1; a > hAxis; a-- {
		inner *= t.Dims[a]
	}
	out := make([]float64, heads)
	for i := range out {
		out[i] = math.NaN()
	}
	for i, x := range vals {
		h := int64(0)
		if t.Dims[hAxis] != 1 {
			h = int64(i) / inner % t.Dims[hAxis]
		}
		for _, hh := range headsOf(h, t.Dims[hAxis], heads) {
			switch {
			case math.IsNaN(out[hh]):
				out[hh] = x
			case out[hh] != x:
				return nil, false // varies over more than the heads
			}
		}
	}
	for _, x := range out {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, false
		}
	}
	return out, true
}

// headsOf are the heads index h of an axis of size n stands for: h, or all when n is 1.
func headsOf(h, n, heads int64) []int64 {
	if n != 1 {
		return []int64{h}
	}
	all := make([]int64, heads)
	for i := range all {
		all[i] = int64(i)
	}
	return all
}

// sinkTensor is the head_sink input: each head's logit as the query's type (the graph's
// logits are of the scores' type, so the values are exact in it); nil for a type
// GroupQueryAttention does not take.
func (p *attnPlan) sinkTensor(dt ir.DataType) *ir.Tensor {
	dims := []int64{int64(len(p.sinkLogits))}
	switch dt {
	case ir.Float:
		f := make([]float32, len(p.sinkLogits))
		for i, x := range p.sinkLogits {
			f[i] = float32(x)
		}
		return ir.FloatTensor(dims, f)
	case ir.Float16:
		b := make([]byte, 2*len(p.sinkLogits))
		for i, x := range p.sinkLogits {
			binary.LittleEndian.PutUint16(b[2*i:], ndarray.Float32ToHalf(float32(x)))
		}
		return ir.NewTensor(ir.Float16, dims, b)
	}
	return nil
}
