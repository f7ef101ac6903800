package calib

import (
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/shape"
)

// groupTensors splits the tensors Collect fetches as extra outputs into groups whose
// bytes per batch stay within maxBytes (DefaultMaxBytes when 0; one group when
// negative), in the order given. Graph inputs (read from the feed) and outputs (which
// ORT returns in every pass anyway) go with the first group and count nothing. A tensor
// larger than the bound alone makes a group of one.
//
// m is Collect's own copy of the model: its types are overwritten.
func groupTensors(m *ir.Model, names, extra []string, src Source, maxBytes int64) ([]group, error) {
	if maxBytes == 0 {
		maxBytes = DefaultMaxBytes
	}
	isExtra := map[string]bool{}
	for _, n := range extra {
		isExtra[n] = true
	}
	first := group{}
	for _, n := range names {
		if !isExtra[n] {
			first.names = append(first.names, n)
		}
	}
	if maxBytes < 0 || len(extra) == 0 {
		first.names, first.extra = names, extra
		return []group{first}, nil
	}
	feed, err := src.Batch(0)
	if err != nil {
		return nil, err
	}
	sizes := tensorBytes(m, feed, extra)
	groups := []group{first}
	var used int64
	for _, n := range extra {
		cur := &groups[len(groups)-1]
		if len(cur.extra) > 0 && used+sizes[n] > maxBytes {
			groups = append(groups, group{})
			cur, used = &groups[len(groups)-1], 0
		}
		cur.names = append(cur.names, n)
		cur.extra = append(cur.extra, n)
		used += sizes[n]
	}
	return groups, nil
}

// tensorBytes estimates each named tensor's bytes per batch: the model's shapes
// inferred again with the graph inputs bound to the batch's shapes. A tensor whose size
// stays unknown (a data-dependent shape) counts as the largest known one.
func tensorBytes(m *ir.Model, feed map[string]*ndarray.Array, names []string) map[string]int64 {
	g := m.Graph
	for _, v := range g.Inputs {
		a := feed[v.Name]
		if a == nil || v.Type == nil || v.IsConst() {
			continue
		}
		t := v.Type.Clone()
		t.HasShape = true
		t.Shape = make(ir.Shape, len(a.Shape))
		for i, d := range a.Shape {
			t.Shape[i] = ir.D(d)
		}
		v.Type = t
	}
	// The declared (symbolic) types of the intermediates would count as conflicts.
	for _, n := range g.Nodes() {
		for _, o := range n.Outputs() {
			if o != nil && !o.IsGraphOutput() {
				o.Type = nil
			}
		}
	}
	shape.Infer(m) // best effort: what stays unknown is estimated below
	sizes := make(map[string]int64, len(names))
	var largest int64
	var unknown []string
	for _, n := range names {
		v := g.Value(n)
		if v == nil || v.Type == nil || v.Type.Kind != ir.TensorType || !v.Type.HasShape || !v.Type.DType.Known() {
			unknown = append(unknown, n)
			continue
		}
		dims, ok := v.Type.Shape.Ints()
		if !ok {
			unknown = append(unknown, n)
			continue
		}
		elems := int64(1)
		for _, d := range dims {
			elems *= d
		}
		sizes[n] = v.Type.DType.ByteSize(elems)
		largest = max(largest, sizes[n])
	}
	for _, n := range unknown {
		sizes[n] = largest
	}
	return sizes
}
