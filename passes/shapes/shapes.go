// Package shapes is the shape-inference analysis and the value-info pass over the
// engine in package shape:
//   - "shapes" (Pass), an analysis: runs shape.Infer and sets a *Result. Setting
//     Value.Type is an annotation of the model, not a change: the pass never calls Changed.
//   - "value-info" (ValueInfoPass), a transformation requiring "shapes": records every
//     typed intermediate value in its graph's ValueInfo so that saving writes the types.
//
// The two are separate passes, rather than one pass with a write option, because whether
// a pass is an analysis is a property of the pass, not of its options: the manager caches
// analysis results and must not cache a run that changed the model.
package shapes

import (
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/shape"
)

// Result is the analysis result: the engine's.
type Result = shape.Result

// Infer runs the engine (for callers outside a pipeline).
func Infer(m *ir.Model) (*Result, error) { return shape.Infer(m) }

// WriteValueInfo records typed intermediate values (the engine's).
func WriteValueInfo(m *ir.Model) int { return shape.WriteValueInfo(m) }

// Pass is the shape inference analysis; its result is a *Result.
var Pass = &pass.Pass{
	Name: "shapes",
	Doc: `infer element types and (symbolic) shapes of every value
Sets Value.Type on node outputs, keeping more precise declared types, and records how many
values were typed and which ops have no inference rule. Conflicts between inferred and
declared types are errors. The result (*shapes.Result) also holds the symbolic contents
of small integer shape tensors.`,
	Analysis: true,
	Run: func(ctx *pass.Context) error {
		r, err := shape.Infer(ctx.Model)
		if err != nil {
			return err
		}
		ctx.SetResult(r)
		ctx.Count("values typed", r.Typed)
		ctx.Count("values with static shape", r.Static)
		ctx.Count("values left untyped", r.Unknown)
		if len(r.NoRule) > 0 {
			ctx.Note("no shape rule for: %s", strings.Join(r.NoRule, ", "))
		}
		return nil
	},
}

// ValueInfoPass writes inferred types of intermediate values into value_info.
var ValueInfoPass = &pass.Pass{
	Name: "value-info",
	Doc: `record inferred types of intermediate values as value_info
Appends every node output that has a known element type to its graph's ValueInfo list
(graph inputs, outputs and initializers excluded, values already listed skipped).`,
	Requires: []*pass.Pass{Pass},
	Run: func(ctx *pass.Context) error {
		n := WriteValueInfo(ctx.Model)
		ctx.Count("value_info entries added", n)
		if n > 0 {
			ctx.Changed()
		}
		return nil
	},
}
