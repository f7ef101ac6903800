// Package prune removes what rewrites leave behind: dead nodes and initializers
// (RemoveDead) and duplicate computations (Dedupe). It is an engine below the passes:
// the "dce" and "cse" passes (passes/cleanup) wrap it, and rewriters call it directly.
package prune

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"math"
	"sort"
	"strconv"

	"github.com/qcc-dev/qcc/ir"
)

// RemoveDead removes dead nodes and unused initializers from g and its subgraphs and
// returns how many nodes and initializers it removed.
func RemoveDead(g *ir.Graph) int {
	n, i := removeDead(g)
	return n + i
}

// RemoveDeadCounts is RemoveDead, counting nodes and initializers apart.
func RemoveDeadCounts(g *ir.Graph) (nodes, inits int) { return removeDead(g) }

// Dedupe merges duplicate nodes and small identical initializers in g and its subgraphs
// and returns how many it merged away.
func Dedupe(g *ir.Graph) int {
	n, i := dedupe(g)
	return n + i
}

// DedupeCounts is Dedupe, counting nodes and initializers apart.
func DedupeCounts(g *ir.Graph) (nodes, inits int) { return dedupe(g) }

// subgraphOutputs collects values that a subgraph (at any depth) names as an output while
// they belong to an enclosing graph: such a value has no Use, but it is live.
func subgraphOutputs(g *ir.Graph) map[*ir.Value]bool {
	live := map[*ir.Value]bool{}
	g.Walk(func(sg *ir.Graph) error {
		if sg == g {
			return nil
		}
		for _, o := range sg.Outputs {
			if o != nil && o.Graph() != sg {
				live[o] = true
			}
		}
		return nil
	})
	return live
}

func removeDead(root *ir.Graph) (nodes, inits int) {
	live := subgraphOutputs(root)
	var visit func(g *ir.Graph)
	visit = func(g *ir.Graph) {
		for changed := true; changed; {
			changed = false
			ns := g.NodesCopy()
			// Reverse order: a chain of dead nodes dies in one sweep.
			for i := len(ns) - 1; i >= 0; i-- {
				n := ns[i]
				if n.Graph() != g || !dead(n, live) {
					continue
				}
				g.RemoveNode(n)
				nodes++
				changed = true
			}
		}
		var keep []*ir.Value
		for _, v := range g.Initializers {
			if len(v.Uses()) == 0 && !v.IsGraphOutput() && !v.IsGraphInput() && !live[v] {
				if err := g.RemoveValue(v); err == nil {
					inits++
					continue
				}
			}
			keep = append(keep, v)
		}
		g.Initializers = keep
		pruneValueInfo(g)
		for _, n := range g.Nodes() {
			for _, sg := range n.Subgraphs() {
				visit(sg)
			}
		}
	}
	visit(root)
	return nodes, inits
}

// dead reports whether no output of n is needed.
func dead(n *ir.Node, live map[*ir.Value]bool) bool {
	if len(n.Outputs()) == 0 {
		return false // a node without outputs is kept: it is there for a reason we can't see
	}
	for _, o := range n.Outputs() {
		if o != nil && (len(o.Uses()) > 0 || o.IsGraphOutput() || live[o]) {
			return false
		}
	}
	return true
}

// pruneValueInfo drops value_info entries of values that no longer exist in g.
func pruneValueInfo(g *ir.Graph) {
	out := g.ValueInfo[:0]
	for _, v := range g.ValueInfo {
		if v.Graph() == g && g.Value(v.Name) == v {
			out = append(out, v)
		}
	}
	for i := len(out); i < len(g.ValueInfo); i++ {
		g.ValueInfo[i] = nil
	}
	g.ValueInfo = out
}

// maxDedupeBytes bounds the initializers compared by content.
const maxDedupeBytes = 64 << 10

// nondeterministic ops are never merged: two draws are two different values.
var nondeterministic = map[string]bool{
	"RandomNormal": true, "RandomUniform": true, "RandomNormalLike": true, "RandomUniformLike": true,
	"Multinomial": true, "Bernoulli": true, "Dropout": true,
}

func dedupe(root *ir.Graph) (nodes, inits int) {
	live := subgraphOutputs(root)
	root.Walk(func(g *ir.Graph) error {
		inits += dedupeInits(g, live)
		nodes += dedupeNodes(g, live)
		return nil
	})
	return nodes, inits
}

func dedupeInits(g *ir.Graph, live map[*ir.Value]bool) int {
	// Keyed by a digest, not the bytes: a key holding a copy of every small tensor costs
	// more in fresh memory than the comparison it saves. Equal digests are confirmed byte
	// for byte.
	seen := map[initKey][]*ir.Value{}
	var keep, merged []*ir.Value
	for _, v := range g.Initializers {
		t := v.Const
		if t == nil || v.IsGraphInput() || v.IsGraphOutput() || live[v] || t.DType == ir.String ||
			t.DType.ByteSize(t.NumElements()) > maxDedupeBytes {
			keep = append(keep, v)
			continue
		}
		b, err := t.Bytes()
		if err != nil {
			keep = append(keep, v)
			continue
		}
		k := tensorKey(t, b)
		var orig *ir.Value
		for _, c := range seen[k] {
			if cb, err := c.Const.Bytes(); err == nil && bytes.Equal(cb, b) {
				orig = c
				break
			}
		}
		if orig == nil {
			seen[k] = append(seen[k], v)
			keep = append(keep, v)
			continue
		}
		v.ReplaceAllUsesWith(orig)
		merged = append(merged, v)
	}
	// Unused now, initializers and not outputs: removable together.
	if err := g.RemoveValues(merged); err != nil {
		return 0
	}
	g.Initializers = keep
	pruneValueInfo(g)
	return len(merged)
}

// initKey files a small initializer by type, shape and a digest of its bytes.
type initKey struct {
	dt   ir.DataType
	dims string
	sum  uint64
}

var keySeed = maphash.MakeSeed()

func tensorKey(t *ir.Tensor, b []byte) initKey {
	var dims []byte
	for _, d := range t.Dims {
		dims = strconv.AppendInt(append(dims, ','), d, 10)
	}
	return initKey{t.DType, string(dims), maphash.Bytes(keySeed, b)}
}

func dedupeNodes(g *ir.Graph, live map[*ir.Value]bool) int {
	merged := 0
	seen := map[string]*ir.Node{}
	ids := map[*ir.Value]int{}
	id := func(v *ir.Value) int {
		if v == nil {
			return 0
		}
		if i, ok := ids[v]; ok {
			return i
		}
		ids[v] = len(ids) + 1
		return ids[v]
	}
	for _, n := range g.NodesCopy() {
		if n.Graph() != g || len(n.Subgraphs()) > 0 || nondeterministic[n.OpType] || len(n.Outputs()) == 0 {
			continue
		}
		k, ok := nodeKey(n, id)
		if !ok {
			continue
		}
		orig := seen[k]
		if orig == nil {
			seen[k] = n
			continue
		}
		if !mergeable(n, orig, live) {
			continue
		}
		for i, o := range n.Outputs() {
			if o != nil {
				o.ReplaceAllUsesWith(orig.Output(i))
			}
		}
		g.RemoveNode(n)
		merged++
	}
	return merged
}

// mergeable checks that every output of dup can be redirected to orig's.
func mergeable(dup, orig *ir.Node, live map[*ir.Value]bool) bool {
	if len(dup.Outputs()) > len(orig.Outputs()) {
		return false
	}
	for i, o := range dup.Outputs() {
		if o == nil {
			continue
		}
		p := orig.Output(i)
		if p == nil || live[o] {
			return false
		}
		// Two graph outputs stay two values (merging would add an Identity).
		if o.IsGraphOutput() && p.IsGraphOutput() {
			return false
		}
	}
	return true
}

// nodeKey encodes what makes two nodes compute the same values.
func nodeKey(n *ir.Node, id func(*ir.Value) int) (string, bool) {
	var buf bytes.Buffer
	buf.WriteString(n.Domain)
	buf.WriteByte(0)
	buf.WriteString(n.OpType)
	buf.WriteByte(0)
	buf.WriteString(n.Overload)
	buf.WriteByte(0)
	for _, in := range n.Inputs() {
		buf.WriteString(strconv.Itoa(id(in)))
		buf.WriteByte(',')
	}
	buf.WriteByte('|')
	buf.WriteString(strconv.Itoa(len(n.Outputs())))
	for _, o := range n.Outputs() {
		if o == nil {
			buf.WriteString("-")
		} else {
			buf.WriteString("+")
		}
	}
	buf.WriteByte('|')
	if !attrsKey(&buf, n.Attrs) {
		return "", false
	}
	buf.WriteByte('|')
	for _, kv := range n.Metadata {
		writeStr(&buf, kv.Key)
		writeStr(&buf, kv.Value)
	}
	return buf.String(), true
}

// attrsKey writes a node's attributes in name order; false when one cannot be compared.
func attrsKey(buf *bytes.Buffer, attrs []*ir.Attr) bool {
	attrs = append([]*ir.Attr(nil), attrs...)
	sort.SliceStable(attrs, func(i, j int) bool { return attrs[i].Name < attrs[j].Name })
	for _, a := range attrs {
		if !attrKey(buf, a) {
			return false
		}
	}
	return true
}

// SameAttrs reports whether two attribute lists are provably equal, in any order: the
// test Dedupe applies, for rewriters that reuse a node instead of adding its twin.
func SameAttrs(a, b []*ir.Attr) bool {
	var ka, kb bytes.Buffer
	return attrsKey(&ka, a) && attrsKey(&kb, b) && bytes.Equal(ka.Bytes(), kb.Bytes())
}

func writeStr(buf *bytes.Buffer, s string) {
	buf.WriteString(strconv.Itoa(len(s)))
	buf.WriteByte(':')
	buf.WriteString(s)
}

func writeInt(buf *bytes.Buffer, v int64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(v))
	buf.Write(b[:])
}

// attrKey writes an attribute's encoding; false when it cannot be compared (graphs,
// unmodelled sparse tensors and type protos, tensors whose data cannot be read).
func attrKey(buf *bytes.Buffer, a *ir.Attr) bool {
	if a.RefAttrName != "" {
		return false
	}
	writeStr(buf, a.Name)
	writeInt(buf, int64(a.Type))
	switch a.Type {
	case ir.AttrFloat:
		writeInt(buf, int64(math.Float32bits(a.Float)))
	case ir.AttrInt:
		writeInt(buf, a.Int)
	case ir.AttrString:
		writeStr(buf, string(a.String))
	case ir.AttrFloats:
		writeInt(buf, int64(len(a.Floats)))
		for _, f := range a.Floats {
			writeInt(buf, int64(math.Float32bits(f)))
		}
	case ir.AttrInts:
		writeInt(buf, int64(len(a.Ints)))
		for _, v := range a.Ints {
			writeInt(buf, v)
		}
	case ir.AttrStrings:
		writeInt(buf, int64(len(a.Strings)))
		for _, s := range a.Strings {
			writeStr(buf, string(s))
		}
	case ir.AttrTensor:
		return tensorAttrKey(buf, a.Tensor)
	case ir.AttrTensors:
		writeInt(buf, int64(len(a.Tensors)))
		for _, t := range a.Tensors {
			if !tensorAttrKey(buf, t) {
				return false
			}
		}
	default:
		return false
	}
	return true
}

func tensorAttrKey(buf *bytes.Buffer, t *ir.Tensor) bool {
	if t == nil {
		return false
	}
	data := t.Strings()
	if t.DType != ir.String {
		b, err := t.Bytes()
		if err != nil {
			return false
		}
		data = [][]byte{b}
	}
	writeStr(buf, strconv.Itoa(int(t.DType)))
	writeInt(buf, int64(len(t.Dims)))
	for _, d := range t.Dims {
		writeInt(buf, d)
	}
	for _, x := range data {
		writeStr(buf, string(x))
	}
	return true
}
