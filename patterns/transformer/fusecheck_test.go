package transformer_test

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/prune"
	"github.com/qcc-dev/qcc/shape"
)

// parseAndFuse parses src twice and fuses the second copy with the general families for
// target (raising to raise when it is not 0): the original, the fused model, its Env and
// the report. The fused model has its dead nodes removed and is verified.
func parseAndFuse(t *testing.T, src string, target transformer.Target, raise int64) (orig, m *ir.Model, env *transformer.Env, rep *transformer.Report) {
	t.Helper()
	orig = ortcheck.Parse(t, src)
	m = ortcheck.Parse(t, src)
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	env = &transformer.Env{Model: m, Target: target, RaiseOpset: raise}
	rep, err := transformer.Fuse(m, generalFams, env)
	if err != nil {
		t.Fatal(err)
	}
	prune.RemoveDead(m.Graph)
	if err := m.Verify(); err != nil {
		t.Fatal(err)
	}
	return orig, m, env, rep
}

// checkFusedRuns compares the fused model with the original in ORT on in (levels disabled
// and all, within tol), then fuses it again and fails unless nothing changed.
func checkFusedRuns(t *testing.T, what string, orig, m *ir.Model, env *transformer.Env, in map[string]*ndarray.Array, tol float64) {
	t.Helper()
	for _, lv := range []ort.OptLevel{ort.OptDisabled, ort.OptAll} {
		d := ortcheck.CheckOutputs(t, what, ortcheck.RunModel(t, orig, in, lv), ortcheck.RunModel(t, m, in, lv), tol)
		t.Logf("ORT level %d: max abs diff %g", lv, d)
	}
	before := ortcheck.Text(t, m)
	if _, err := transformer.Fuse(m, generalFams, env); err != nil {
		t.Fatal(err)
	}
	prune.RemoveDead(m.Graph)
	if after := ortcheck.Text(t, m); after != before {
		t.Fatalf("not idempotent:\n%s\n---\n%s", before, after)
	}
}

// randomInitializer returns a writer of initializer lines for ONNX text: name, float
// dims, and values uniform in [-0.5, 0.5) drawn from seed in order.
func randomInitializer(seed int64) func(name string, dims ...int) string {
	r := rand.New(rand.NewSource(seed))
	return func(name string, dims ...int) string {
		n := 1
		ds := make([]string, len(dims))
		for i, d := range dims {
			n *= d
			ds[i] = fmt.Sprint(d)
		}
		v := make([]string, n)
		for i := range v {
			v[i] = fmt.Sprintf("%.3f", r.Float64()-0.5)
		}
		return fmt.Sprintf("  float[%s] %s = {%s},\n", strings.Join(ds, ","), name, strings.Join(v, ", "))
	}
}
