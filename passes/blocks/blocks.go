// Package blocks is the analysis that recognises transformer blocks (attention, GELU,
// LayerNorm, skip+LayerNorm, embeddings) in a model, decomposed or fused, and describes
// each with a stable id, kind, layer and the roles of its values. fuse, qdq and the CUDA
// generator require it.
package blocks

import (
	"fmt"

	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/shapes"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// Result is the blocks of the main graph in graph order, and the candidates the
// families refused with their reasons.
type Result struct {
	Blocks   []*transformer.Block
	Refusals []patterns.Refusal
}

// ByKind counts blocks per kind.
func (r *Result) ByKind() map[transformer.Kind]int {
	c := map[transformer.Kind]int{}
	for _, b := range r.Blocks {
		c[b.Kind]++
	}
	return c
}

// Pass is the blocks analysis.
var Pass = &pass.Pass{
	Name:     "blocks",
	Doc:      "recognise transformer blocks, decomposed or fused (result *blocks.Result)\nEvery block gets a stable id (kind.N in graph order), its encoder layer, and the roles of its values.",
	Requires: []*pass.Pass{shapes.Pass},
	Analysis: true,
	Run: func(ctx *pass.Context) error {
		bs, refs := transformer.Recognize(ctx.Model.Graph, transformer.Families)
		r := &Result{Blocks: bs, Refusals: refs}
		for k, n := range r.ByKind() {
			ctx.Count(fmt.Sprintf("blocks: %s", k), n)
		}
		ctx.SetResult(r)
		return nil
	},
}
