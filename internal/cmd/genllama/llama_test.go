package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
)

// TestSmallLlamaFuses: small instances (grouped-query and multi-head) written by the
// generator load, fuse completely under fold,fuse (every attention, rotary and norm; the
// -stats counts), and compute what the generated model computes in ONNX Runtime.
func TestSmallLlamaFuses(t *testing.T) {
	orttest.RequireLib(t)
	for _, c := range []Config{
		{Layers: 2, Hidden: 64, Heads: 4, KVHeads: 2, Intermediate: 160, Vocab: 256, MaxPositions: 32, DType: ir.Float, Seed: 1},
		{Layers: 3, Hidden: 48, Heads: 3, KVHeads: 3, Intermediate: 96, Vocab: 100, MaxPositions: 16, DType: ir.Float, Seed: 2},
		{Layers: 2, Hidden: 64, Heads: 4, KVHeads: 2, Intermediate: 160, Vocab: 256, MaxPositions: 32, DType: ir.Float16, Seed: 3},
	} {
		dir := t.TempDir()
		m, err := Build(c)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "llama.onnx")
		if err := ir.Save(m, path, ir.SaveOptions{External: ir.ExternalAlways}); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(path + ".data")
		if err != nil || st.Size() < c.DType.ByteSize(c.Params()) {
			t.Fatalf("data file: %v (%d bytes for %d parameters)", err, st.Size(), c.Params())
		}
		fused := ortcheck.Load(t, path)
		rep := ortcheck.Pipeline(t, fused, "fold,fuse", passes.All, &pass.Instrumentation{VerifyEach: true})
		last := rep.Stats[len(rep.Stats)-1]
		notes := strings.Join(last.Notes, "\n")
		if !strings.Contains(notes, "fully fused: yes") ||
			last.Counts["fuse: com.microsoft.MultiHeadAttention"] != int(c.Layers) ||
			last.Counts["fuse: com.microsoft.RotaryEmbedding"] != int(2*c.Layers) ||
			last.Counts["fuse: com.microsoft.SkipSimplifiedLayerNormalization"] != int(2*c.Layers) {
			t.Fatalf("%+v: not fully fused: %v\n%s", c, last.Counts, notes)
		}
		out := ortcheck.Save(t, fused, dir, "fused.onnx")
		const batch, seq = 2, 7
		ids, mask, pos := make([]int64, batch*seq), make([]int64, batch*seq), make([]int64, batch*seq)
		for i := range ids {
			ids[i] = int64(i*37+5) % c.Vocab
			mask[i] = 1
			pos[i] = int64(i % seq)
		}
		mask[batch*seq-1], mask[batch*seq-2] = 0, 0 // padding at the end of the last row
		shape := []int64{batch, seq}
		inputs := map[string]*ndarray.Array{"input_ids": ndarray.FromInt64(shape, ids),
			"attention_mask": ndarray.FromInt64(shape, mask), "position_ids": ndarray.FromInt64(shape, pos)}
		if c.DType == ir.Float16 {
			// ORT's CPU provider computes float16 nodes it lacks kernels for in float32:
			// both models run through Emulate (each float16 node rounded), and the fused
			// kernels' float32 sums differ from the graph's per-node rounding.
			d := ortcheck.MaxDiff(t, ortcheck.RunEmulated(t, ortcheck.Load(t, path), ir.Float16, inputs, ort.OptDisabled),
				ortcheck.RunEmulated(t, fused, ir.Float16, inputs, ort.OptDisabled))
			if d > 2e-2 {
				t.Errorf("%+v: fused float16 model's logits differ by %g", c, d)
			}
			t.Logf("%d layers, %d/%d heads, float16: fully fused, logits within %.2g", c.Layers, c.Heads, c.KVHeads, d)
			continue
		}
		if d := ortcheck.Compare(t, path, out, inputs, ort.OptDisabled, ort.OptAll); d > 1e-4 {
			t.Errorf("%+v: fused model's logits differ by %g", c, d)
		} else {
			t.Logf("%d layers, %d/%d heads: fully fused, logits within %.2g", c.Layers, c.Heads, c.KVHeads, d)
		}
	}
}

// TestConfigRefused: sizes that make no LLaMA are refused by name.
func TestConfigRefused(t *testing.T) {
	ok := Config{Layers: 1, Hidden: 8, Heads: 2, KVHeads: 1, Intermediate: 8, Vocab: 4, MaxPositions: 4, DType: ir.Float}
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Heads = 3 }, "multiple of heads"},
		{func(c *Config) { c.KVHeads = 3 }, "multiple of kv-heads"},
		{func(c *Config) { c.Hidden, c.Heads, c.KVHeads = 6, 2, 2 }, "odd"},
		{func(c *Config) { c.Layers = 0 }, "positive"},
		{func(c *Config) { c.DType = ir.Double }, "want float"},
	} {
		cfg := ok
		c.edit(&cfg)
		if _, err := Build(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want %q", cfg, err, c.want)
		}
	}
	if _, err := Build(ok); err != nil {
		t.Fatal(err)
	}
}
