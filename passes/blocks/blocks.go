// Package blocks is the analysis that recognises transformer blocks (attention, GELU,
// LayerNorm, skip+LayerNorm, embeddings) in a model, decomposed or fused, and describes
// each with a stable id, kind, layer and the roles of its values. fuse, qdq and the CUDA
// generator require it.
package blocks

import (
	"fmt"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/shapes"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// Result is the blocks of one graph in graph order, and the candidates the families
// refused with their reasons. The analysis's result is the main graph's; its Bodies hold
// those of the If, Loop and Scan bodies below it.
type Result struct {
	Graph    *ir.Graph
	Blocks   []*transformer.Block
	Refusals []patterns.Refusal
	// Bodies are the results of every subgraph, nested ones included, in the order
	// Graph.Walk visits them (a merged decoder holds its whole model in both branches
	// of an If). Their block IDs are prefixed with the body's graph name, as fuse
	// names them. Empty in a body's own Result.
	Bodies []*Result
}

// ByKind counts blocks per kind.
func (r *Result) ByKind() map[transformer.Kind]int {
	c := map[transformer.Kind]int{}
	for _, b := range r.Blocks {
		c[b.Kind]++
	}
	return c
}

// All returns the main graph's result and then every body's.
func (r *Result) All() []*Result {
	return append([]*Result{r}, r.Bodies...)
}

// IDPrefix is what the ids of r's blocks start with: nothing in the main graph,
// the body's graph name and a '/' in a body. Passes that number nodes of their own
// in a body name them alike.
func (r *Result) IDPrefix() string {
	if r.Graph == nil || r.Graph.Parent == nil {
		return ""
	}
	return r.Graph.Name + "/"
}

// Recognize is the analysis on m: the main graph's blocks, with every body's below.
func Recognize(m *ir.Model) *Result {
	var r *Result
	_ = m.Graph.Walk(func(g *ir.Graph) error {
		bs, refs := transformer.Recognize(g, transformer.Families)
		res := &Result{Graph: g, Blocks: bs, Refusals: refs}
		if r == nil {
			r = res
			return nil
		}
		for _, b := range bs {
			b.ID = res.IDPrefix() + b.ID
		}
		r.Bodies = append(r.Bodies, res)
		return nil
	})
	return r
}

// Pass is the blocks analysis.
var Pass = &pass.Pass{
	Name:     "blocks",
	Doc:      "recognise transformer blocks, decomposed or fused (result *blocks.Result)\nEvery block gets a stable id (kind.N in graph order), its encoder layer, and the roles of its values; the blocks of If, Loop and Scan bodies are in the result's Bodies.",
	Requires: []*pass.Pass{shapes.Pass},
	Analysis: true,
	Run: func(ctx *pass.Context) error {
		r := Recognize(ctx.Model)
		for k, n := range r.ByKind() {
			ctx.Count(fmt.Sprintf("blocks: %s", k), n)
		}
		for _, b := range r.Bodies {
			for k, n := range b.ByKind() {
				ctx.Count(fmt.Sprintf("blocks: %s in bodies", k), n)
			}
		}
		ctx.SetResult(r)
		return nil
	},
}
