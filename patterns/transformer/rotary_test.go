package transformer_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/qcc-dev/qcc/internal/modroot"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/shape"
)

// Each rotary form of the probes (LLaMA's rotate-half with cos/sin gathered from
// [positions, D] tables; the pair-by-pair interleaved form with computed [S, D/2] angles;
// GPT-J's rotate-every-two with each gathered angle repeated by a stack and by an
// expand; GPT-NeoX's rotate-half on the first half of each head, the rest passed through;
// ChatGLM's pairs on a sequence-first layout) becomes one RotaryEmbedding per Q and K per layer for both targets, recognised
// by its variant (their numerics are checked with the probes in tests/). A cos or sin
// that does not repeat one angle per pair is refused with the reason, since the fused
// operators take one angle per pair.
func TestRotaryFamily(t *testing.T) {
	for _, c := range []struct {
		probe, variant string
		interleaved    int64
		dim            int64 // rotary_embedding_dim: the channels rotated when not all
	}{
		{"llama.opset17", "rotary/rotate-half", 0, 0},
		{"rotary-interleaved.opset17", "rotary/interleaved-pairs", 1, 0},
		{"gptj-rotary.opset17", "rotary/rotate-every-two", 1, 0},
		{"neox.opset17", "rotary/partial", 0, 4},
		// Sequence-first [S, B, H, D], the pairs as Gathers of a [..., D/4, 2] view, on
		// the first half of each head.
		{"chatglm.opset17", "rotary/partial", 1, 4},
		// cos and sin assembled from three position kinds' sections (M-RoPE).
		{"qwen2-vl.opset17", "rotary/rotate-half", 0, 0},
	} {
		path := probePath(t, c.probe)
		m := ortcheck.Fold(t, path, passes.All)
		if _, err := shape.Infer(m); err != nil {
			t.Fatal(err)
		}
		variants := map[string]int{}
		bs, _ := transformer.Recognize(m.Graph, []*transformer.Family{transformer.RotaryFamily})
		for _, b := range bs {
			variants[b.Variant]++
		}
		if variants[c.variant] != 4 || len(variants) != 1 {
			t.Errorf("%s: recognised %v, want 4 %s", c.probe, variants, c.variant)
		}
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
				t.Errorf("%s, %s: %v, want 4 %s (Q and K of 2 layers); refused %v", c.probe, target, rep.Ops, op, rep.Refusals)
			}
			for _, n := range m.Graph.Nodes() {
				if n.OpType != "RotaryEmbedding" {
					continue
				}
				if n.AttrInt("interleaved", -1) != c.interleaved {
					t.Errorf("%s, %s: %s has interleaved=%d, want %d", c.probe, target, n.Name, n.AttrInt("interleaved", -1), c.interleaved)
				}
				if got := n.AttrInt("rotary_embedding_dim", 0); got != c.dim {
					t.Errorf("%s, %s: %s has rotary_embedding_dim=%d, want %d", c.probe, target, n.Name, got, c.dim)
				}
			}
		}
	}
}

// Near misses: tables that do not hold one angle per pair.
func TestRotaryRefusesUnrepeatedAngles(t *testing.T) {
	refused := func(t *testing.T, m *ir.Model, reason string) {
		t.Helper()
		if _, err := shape.Infer(m); err != nil {
			t.Fatal(err)
		}
		rep, err := transformer.Fuse(m, []*transformer.Family{transformer.RotaryFamily}, &transformer.Env{Model: m, Target: transformer.ORT})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Ops["com.microsoft.RotaryEmbedding"] != 0 {
			t.Errorf("ops %v, refusals %v; want none fused", rep.Ops, rep.Refusals)
		}
		expectReason(t, refusalReasons(rep.Refusals), reason)
	}
	t.Run("halves", func(t *testing.T) {
		// The second half of one table row off by one ulp.
		m := ortcheck.Fold(t, probePath(t, "llama.opset17"), passes.All)
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
		refused(t, m, "does not provably repeat its first half in its second")
	})
	t.Run("sections", func(t *testing.T) {
		// Qwen2-VL's assembled cos and sin with the first section of the second half read
		// from the height row instead of the time row.
		m := ortcheck.Fold(t, probePath(t, "qwen2-vl.opset17"), passes.All)
		changed := 0
		for _, n := range m.Graph.Nodes() {
			if n.OpType != "Concat" || len(n.Inputs()) != 6 {
				continue
			}
			g3, _ := n.Input(3).Producer()
			g1, _ := n.Input(1).Producer()
			if g3 == nil || g1 == nil || g3.OpType != "Gather" || g1.OpType != "Gather" {
				continue
			}
			g3.SetInput(1, g1.Input(1))
			changed++
		}
		if changed != 2 {
			t.Fatalf("%d assembled cos and sin in the probe, want 2 (computed once for every layer)", changed)
		}
		refused(t, m, "does not provably repeat its first half in its second")
	})
	t.Run("pairs", func(t *testing.T) {
		// sin built as stack(sin, cos) instead of stack(sin, sin).
		m := ortcheck.Fold(t, probePath(t, "gptj-rotary.opset17"), passes.All)
		if _, err := shape.Infer(m); err != nil {
			t.Fatal(err)
		}
		typed := func(v *ir.Value) bool { return v.Type != nil && v.Type.DType == ir.Float }
		changed := 0
		for _, n := range m.Graph.Nodes() {
			if n.OpType != "Concat" || len(n.Inputs()) != 2 || n.Input(0) != n.Input(1) {
				continue
			}
			u, _ := n.Input(0).Producer()
			if u == nil || u.OpType != "Unsqueeze" {
				continue
			}
			for _, other := range m.Graph.Nodes() {
				o := other.Output(0)
				if other != u && other.OpType == "Unsqueeze" && typed(o) && typed(u.Output(0)) && ir.SameShape(o.Type.Shape, u.Output(0).Type.Shape) {
					n.SetInput(1, other.Output(0))
					changed++
					break
				}
			}
		}
		if changed == 0 {
			t.Fatal("no stack of one tensor with itself in the probe")
		}
		refused(t, m, "does not provably repeat each angle in two adjacent channels")
	})
}

func probePath(t *testing.T, name string) string {
	t.Helper()
	root, err := modroot.Find()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "testdata", "probes", name+".onnx")
}

// TestRotaryScaledTables: cos and sin times an attention factor (LongRoPE, YaRN) still
// hold one angle per pair; times a factor per channel that breaks the repeat they do not.
func TestRotaryScaledTables(t *testing.T) {
	load := func(t *testing.T) (*ir.Model, []*ir.Node) {
		m := ortcheck.Fold(t, probePath(t, "longrope.opset17"), passes.All)
		var scaled []*ir.Node
		for _, n := range m.Graph.Nodes() {
			if n.OpType != "Mul" {
				continue
			}
			// The factor √(1 + ln 4 / ln 8), a scalar.
			if v, ok := patterns.UniformConst(n.Input(1)); ok && len(patterns.ConstOf(n.Input(1)).Dims) == 0 && math.Abs(v-math.Sqrt(1+math.Log(4)/math.Log(8))) < 1e-6 {
				scaled = append(scaled, n)
			}
		}
		if len(scaled) != 2 {
			t.Fatalf("%d scaled cos and sin in the probe, want 2", len(scaled))
		}
		if _, err := shape.Infer(m); err != nil {
			t.Fatal(err)
		}
		return m, scaled
	}
	fuse := func(t *testing.T, m *ir.Model) *transformer.Report {
		rep, err := transformer.Fuse(m, []*transformer.Family{transformer.RotaryFamily}, &transformer.Env{Model: m, Target: transformer.ORT})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	t.Run("scalar", func(t *testing.T) {
		m, _ := load(t)
		if rep := fuse(t, m); rep.Ops["com.microsoft.RotaryEmbedding"] != 4 {
			t.Errorf("ops %v, refusals %v; want 4 RotaryEmbedding", rep.Ops, rep.Refusals)
		}
	})
	t.Run("per-channel", func(t *testing.T) {
		m, scaled := load(t)
		f, err := m.Graph.AddInitializer("per_channel_factor", ir.FloatTensor([]int64{8}, []float32{1, 1, 1, 1, 1, 1, 1, 1.5}))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range scaled {
			n.SetInput(1, f)
		}
		if _, err := shape.Infer(m); err != nil {
			t.Fatal(err)
		}
		rep := fuse(t, m)
		if rep.Ops["com.microsoft.RotaryEmbedding"] != 0 {
			t.Errorf("ops %v; want none fused", rep.Ops)
		}
		expectReason(t, refusalReasons(rep.Refusals), "does not provably repeat its first half in its second")
	})
}
