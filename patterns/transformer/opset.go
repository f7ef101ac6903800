package transformer

import (
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/opsets"
)

// RequireOpset makes the model's default-domain opset at least need for op, raising the
// import when env.RaiseOpset allows it and it is safe; it returns why not otherwise. The
// nodes of the block being replaced (skip) do not count against the raise.
func RequireOpset(env *Env, need int64, op string, skip []*ir.Node) string {
	return opsets.Require(env.Model, env.RaiseOpset, need, op, skip)
}
