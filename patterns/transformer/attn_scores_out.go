package transformer

import (
	"fmt"
	"slices"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// Residual attention (PatchTST): a layer's scores, before their softmax, are also added
// to the next layer's. The fused operator then outputs them besides the context, when
// the value read is exactly one it can output:
//   Attention-23 (target onnx): qk_matmul_output with qk_matmul_output_mode 0 is
//     scale·Q·Kᵀ, before softcap and attn_mask (ONNX Runtime's CPU kernel gives the same
//     in mode 1: attn_mask is not added), so the value must be the fully scaled product
//     with no term added;
//   MultiHeadAttention (target ort): output qk is scale·Q·Kᵀ + attention_bias, so the
//     value must be the softmax's input, every term added (the causal one too: it goes
//     to the bias, not to unidirectional).
// Both are [B, N, S, T], so the value must be in that layout.

// readScores notes the value on the scores path that a node outside the block reads
// (other than for its shape or to compute a term), and returns those readers; none when
// no such value, or more than one, is read (escapesButShape then says which).
func (p *attnPlan) readScores(m *patterns.Match) map[*ir.Node]bool {
	p.scoresRead = nil
	in := map[*ir.Node]bool{}
	for _, n := range m.All {
		in[n] = true
	}
	var read *ir.Value
	readers := map[*ir.Node]bool{}
	for _, v := range p.scoresValues() {
		if v.IsGraphOutput() {
			return nil
		}
		for _, u := range v.Uses() {
			if in[u.Node] || p.termReaders[u.Node] || readsShapeOnly(u.Node, 0) {
				continue
			}
			if read != nil && read != v {
				return nil
			}
			read, readers[u.Node] = v, true
		}
	}
	p.scoresRead = read
	return readers
}

// scoresValues are the values on the scores path, the Q·Kᵀ product first.
func (p *attnPlan) scoresValues() []*ir.Value {
	vs := []*ir.Value{p.scores.Output(0)}
	for _, s := range p.path {
		vs = append(vs, s.out)
	}
	return vs
}

// scoresReadWhy says why target's fused operator cannot output the scores read outside
// the block, or "".
func (p *attnPlan) scoresReadWhy(target Target) string {
	v := p.scoresRead
	pt := p.scoresAt[v]
	if !p.canonicalScores(pt.at) {
		return fmt.Sprintf("the scores read outside the block (%s) are in the layout %v: the fused operators output them as [B, N, S, T]", v.Name, pt.at)
	}
	// changed: a step before v changes the values other than by a term or the scale (a
	// soft cap, a clamp, a row constant taken off, a cast); scaled: no factor comes after v.
	changed, scaled := false, true
	for _, s := range p.path[:pt.steps] {
		changed = changed || s.softcap != 0 || len(s.extra) > 0 || s.node.OpType == "Max" || s.node.OpType == "Cast"
	}
	for _, s := range p.path[pt.steps:] {
		scaled = scaled && s.factor == nil && (s.term != nil || s.st.scale == 1)
	}
	switch target {
	case ONNX:
		if changed || !scaled || pt.terms > 0 {
			return fmt.Sprintf("the scores read outside the block (%s) are not scale·Q·Kᵀ alone: Attention-23's qk_matmul_output is that only (mode 0; ONNX Runtime's mode 1 does not add attn_mask)", v.Name)
		}
	case ORT:
		if changed || pt.steps != len(p.path) || p.softcap != 0 || p.sink != nil {
			return fmt.Sprintf("the scores read outside the block (%s) are not the softmax's input scale·Q·Kᵀ + terms, which MultiHeadAttention's qk output holds (soft-capped scores and sinks lower to GroupQueryAttention, which has no such output here)", v.Name)
		}
	}
	return ""
}

// canonicalScores reports whether scores in layout at are [B, N, S, T]: the batch, Q's
// heads, its sequence and K's, one group an axis.
func (p *attnPlan) canonicalScores(at layout) bool {
	want := []axis{axis(p.q.batch), axis(p.q.headLeaves), axis(p.q.rows), {p.k.seq}}
	if len(at) != len(want) || len(p.q.headLeaves) == 0 || !slices.Equal(p.q.rows, []*atom{p.q.seq}) {
		return false
	}
	for i, ax := range at {
		if !slices.Equal(ax.leaves(), want[i].leaves()) {
			return false
		}
	}
	return true
}
