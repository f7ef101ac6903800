package passes_test

import (
	"testing"

	"github.com/qcc-dev/qcc/internal/golden"
	"github.com/qcc-dev/qcc/passes"
)

// TestGolden runs the txtar cases in testdata/golden; `go test -run Golden -update`
// rewrites their want and report sections.
func TestGolden(t *testing.T) {
	golden.Run(t, "testdata/golden", passes.All)
}
