// Package cleanup holds the passes that tidy a graph after rewrites: dead-code removal
// ("dce") and common-subexpression elimination ("cse"), over the engine in package prune.
package cleanup

import (
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/prune"
)

// DCE removes nodes and initializers nothing uses.
var DCE = &pass.Pass{
	Name: "dce",
	Doc: `remove nodes whose outputs are unused, and unused initializers
A node is dead when none of its outputs is used (by a node of its graph or of a nested
subgraph) or is a graph output (of its graph or, for outer-scope values, of a subgraph).
Graph inputs are never removed, even unused ones: they are the model's interface.
Initializers that are also listed as graph inputs count as inputs. Runs in subgraphs too.`,
	Run: func(ctx *pass.Context) error {
		nodes, inits := prune.RemoveDeadCounts(ctx.Model.Graph)
		ctx.Count("dce: nodes removed", nodes)
		ctx.Count("dce: initializers removed", inits)
		if nodes+inits > 0 {
			ctx.Changed()
		}
		return nil
	},
}

// CSE merges duplicate computations.
var CSE = &pass.Pass{
	Name: "cse",
	Doc: `merge duplicate nodes and duplicate small constant initializers
Two nodes are merged when they have the same op, domain, overload, attributes (compared
deeply, tensor attributes by dtype, dims and bytes), metadata and the same input values;
nodes with subgraphs and non-deterministic ops (Random*, Multinomial, Bernoulli, Dropout)
are left alone. Initializers of at most 64 KiB with the same dtype, dims and bytes are
merged too (never graph inputs or outputs). The earliest node or initializer survives, so
the result is deterministic. Graph output names are kept.`,
	Run: func(ctx *pass.Context) error {
		nodes, inits := prune.DedupeCounts(ctx.Model.Graph)
		ctx.Count("cse: nodes merged", nodes)
		ctx.Count("cse: initializers merged", inits)
		if nodes+inits > 0 {
			ctx.Changed()
		}
		return nil
	},
}

// RemoveDead is prune.RemoveDead, for the passes that call it.
func RemoveDead(g *ir.Graph) int { return prune.RemoveDead(g) }

// Dedupe is prune.Dedupe.
func Dedupe(g *ir.Graph) int { return prune.Dedupe(g) }
