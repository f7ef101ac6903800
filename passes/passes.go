// Package passes is qcc's pass registry: the one list of every pass the command line and
// pipelines can name, in the order -list-passes shows them. The passes themselves live in
// the subpackages; a program that adds its own passes appends to a copy of All.
package passes

import (
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/blocks"
	"github.com/qcc-dev/qcc/passes/cleanup"
	"github.com/qcc-dev/qcc/passes/fold"
	"github.com/qcc-dev/qcc/passes/fuse"
	"github.com/qcc-dev/qcc/passes/precision"
	"github.com/qcc-dev/qcc/passes/qdq"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	"github.com/qcc-dev/qcc/passes/repair"
	"github.com/qcc-dev/qcc/passes/shapes"
)

// All lists the built-in passes.
var All = []*pass.Pass{
	shapes.Pass,
	shapes.ValueInfoPass,
	repair.Pass,
	fold.Pass,
	cleanup.DCE,
	cleanup.CSE,
	blocks.Pass,
	fuse.Pass,
	qdq.Pass,
	qdqcheck.Pass,
	precision.Pass,
}
