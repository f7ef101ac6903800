package transformer_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/modroot"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/shape"
)

// The LLaMA probe's rotaries (rotate-half, cos/sin gathered from [positions, D] tables by
// position ids) become one RotaryEmbedding per Q and K per layer for both targets (their
// numerics are checked with the probes in tests/); a table whose halves differ is
// refused with the reason, since the fused operators repeat one angle per pair.
func TestRotaryFamily(t *testing.T) {
	root, err := modroot.Find()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "testdata", "probes", "llama.opset17.onnx")
	for _, target := range []transformer.Target{transformer.ORT, transformer.ONNX} {
		m := ortcheck.Fold(t, path, passes.All)
		if _, err := shape.Infer(m); err != nil {
			t.Fatal(err)
		}
		rep, err := transformer.Fuse(m, []*transformer.Family{transformer.RotaryFamily}, &transformer.Env{Model: m, Target: target, RaiseOpset: 23})
		if err != nil {
			t.Fatal(err)
		}
		op := map[transformer.Target]string{transformer.ORT: "com.microsoft.RotaryEmbedding", transformer.ONNX: "RotaryEmbedding"}[target]
		if rep.Ops[op] != 4 {
			t.Errorf("%s: %v, want 4 %s (Q and K of 2 layers); refused %v", target, rep.Ops, op, rep.Refusals)
		}
	}
	// The second half of one table row off by one ulp: not a rotary.
	m := ortcheck.Fold(t, path, passes.All)
	changed := 0
	for _, v := range m.Graph.Initializers {
		if c := v.Const; c != nil && len(c.Dims) == 2 && c.Dims[1] == 8 && c.DType == ir.Float {
			vals, _ := c.Float32s()
			vals[len(vals)-1] *= 1.0000001
			v.Const = ir.FloatTensor(c.Dims, vals)
			changed++
		}
	}
	if changed == 0 {
		t.Fatal("no [positions, 8] table in the probe")
	}
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	rep, err := transformer.Fuse(m, []*transformer.Family{transformer.RotaryFamily}, &transformer.Env{Model: m, Target: transformer.ORT})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ops["com.microsoft.RotaryEmbedding"] != 0 || !strings.Contains(ortcheck.Text(t, m)+joinRefusals(rep), "does not provably repeat its first half") {
		t.Errorf("a table with unequal halves: ops %v, refusals %v", rep.Ops, rep.Refusals)
	}
}

func joinRefusals(rep *transformer.Report) string {
	var b strings.Builder
	for _, r := range rep.Refusals {
		b.WriteString(r.String() + "\n")
	}
	return b.String()
}
