package cuda

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/codegen/cuda/nvcc"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
)

// The decoder, encoder–decoder and grouped-query probes (testdata/probes, made from
// the equations by make_probes.py) fused for ONNX Runtime (RMSNorm →
// SimplifiedLayerNormalization, attention → MultiHeadAttention with the additive
// attention_bias) and for standard ONNX at opset 23 (RMSNormalization, Attention-23
// with a float attn_mask).
var probeDir = "../../testdata/probes"

var probePipelines = []struct{ name, passes string }{
	{"ort", "fold,fuse<target=ort>"},
	{"onnx23", "fold,fuse<target=onnx;opset=23>"},
}

// loadWith reads an .onnx file and runs the pipeline on it.
func loadWith(t testing.TB, path, pipeline string) *ir.Model {
	t.Helper()
	m, err := ir.Load(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	p, err := pass.Parse(pipeline, passes.All)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true}); err != nil {
		t.Fatalf("%s: %s: %v", path, pipeline, err)
	}
	return m
}

// TestProbeEmulation is the oracle on the probes: every kernel instance's emulation
// agrees with ONNX Runtime on the model's own subgraph, each probe gets the kernels its
// form calls for (every attention and norm block of the decoder and encoder–decoder
// forms, cross-attention included), and every block without one says why. It logs the
// largest errors per probe and kernel.
func TestProbeEmulation(t *testing.T) {
	orttest.RequireLib(t)
	want := map[string][]string{ // launchers each form (or pipeline/form) must use
		"gpt2-causal":        {"Attention", "LayerNorm", "SkipLayerNorm"},
		"gpt2-merged":        {"Attention", "LayerNorm", "SkipLayerNorm"}, // in both branches of an If
		"llama":              {"Attention", "LayerNorm", "SkipLayerNorm"},
		"t5":                 {"Attention", "LayerNorm", "SkipLayerNorm"},
		"t5-geglu":           {"Attention", "LayerNorm", "SkipLayerNorm"},
		"bart":               {"Attention"},
		"mqa":                {"Attention"},
		"cross-attn":         {"Attention"},
		"causal-range":       {"Attention"},
		"rotary-interleaved": {"Attention", "LayerNorm", "SkipLayerNorm"},
		"deepseek-mla":       {"Attention"}, // value heads narrower than query and key heads
		"levit":              {"Attention"}, // value heads wider
		"gemma2":             {"Attention"}, // soft-capped scores
		"patchtst":           {"Attention"}, // the scores read by the next layer
		"gemma2-sliding":     {"Attention"}, // and local layers
		// Attention sinks, and a sliding window: fused for target ort only (Attention-23
		// has no sink input).
		"ort/gpt-oss-sinks":   {"Attention"},
		"ort/gpt-oss-sliding": {"Attention"},
	}
	paths, err := filepath.Glob(filepath.Join(probeDir, "*.onnx"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no probes in %s (%v)", probeDir, err)
	}
	for _, pl := range probePipelines {
		for _, path := range paths {
			name := strings.TrimSuffix(filepath.Base(path), ".onnx")
			form, _, _ := strings.Cut(name, ".")
			t.Run(pl.name+"/"+name, func(t *testing.T) {
				m := loadWith(t, path, pl.passes)
				p := planOf(t, m, filepath.Base(path))
				for _, s := range p.Skipped {
					if _, why, ok := strings.Cut(s, "): "); !ok || why == "" {
						t.Errorf("skipped without a reason: %q", s)
					}
				}
				worst := map[string]*errs{}
				for _, in := range p.Instances {
					for param, e := range emulateInstance(t, m, in) {
						if e.bad > 0 {
							t.Errorf("%s (%s): %d of %d elements of %s disagree; first %s", in.ID, in.Kernel.Name, e.bad, e.n, param, e.first)
						}
						tally(worst, in, param, e)
					}
				}
				wants := want[pl.name+"/"+form]
				if wants == nil {
					wants = want[form]
				}
				for _, l := range wants {
					if worst[l] == nil {
						t.Errorf("no %s kernel (skipped: %v)", l, p.Skipped)
					}
				}
				if wants != nil {
					// Decomposed embeddings and fused rotaries have no kernel: the rotary
					// runs as the model's operator, the attention kernel reads its output.
					for _, s := range p.Skipped {
						id, _, _ := strings.Cut(s, " (")
						id = id[strings.LastIndex(id, "/")+1:] // a body's block as the main graph's
						if !strings.HasPrefix(id, "embedding.") && !(strings.HasPrefix(id, "rotary.") && strings.Contains(s, "has no kernel")) {
							t.Errorf("no kernel for %s", s)
						}
					}
				}
				var line []string
				for _, l := range sortedKeys(worst) {
					line = append(line, fmt.Sprintf("%s %.1e/%.1e", l, worst[l].maxAbs, worst[l].maxRel))
				}
				sort.Strings(line)
				t.Logf("%d instances; max abs/rel error per kernel: %s; %d skipped", len(p.Instances), strings.Join(line, ", "), len(p.Skipped))
				for _, s := range p.Skipped {
					t.Logf("  no kernel for %s", s)
				}
			})
		}
	}
}

// TestCompileProbes emits the decoder and encoder–decoder probes' kernels (RMSNorm and
// skip+RMSNorm, attention with a broadcast additive bias, grouped-query heads after an
// explicit repeat, a merged decoder's If branches, LeViT's value heads wider than its
// query and key heads, GPT-OSS's sinks and sliding window) for both targets and compiles
// them and the check harness with nvcc.
func TestCompileProbes(t *testing.T) {
	nvcc.Require(t)
	for _, pl := range probePipelines {
		for _, form := range []string{"llama", "gpt2-causal", "gpt2-merged", "t5", "bart", "mqa", "levit", "gpt-oss-sliding"} {
			name := pl.name + "/" + form + ".opset17"
			t.Run(name, func(t *testing.T) {
				path := filepath.Join(probeDir, form+".opset17.onnx")
				dir := t.TempDir()
				res, err := Emit(loadWith(t, path, pl.passes), dir, Options{Source: filepath.Base(path)})
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Instances) == 0 {
					t.Fatalf("no kernels (skipped: %v)", res.Skipped)
				}
				compileEmitted(t, dir, name, true)
			})
		}
	}
}

// probeInstance fuses a probe with a pipeline and returns its first instance of a
// launcher.
func probeInstance(t *testing.T, file, pipeline, launcher string) (*ir.Model, *instance) {
	t.Helper()
	m := loadWith(t, filepath.Join(probeDir, file), pipeline)
	p := planOf(t, m, file)
	for _, in := range p.Instances {
		if in.Kernel.Launcher == launcher {
			return m, in
		}
	}
	t.Fatalf("%s: no %s instance (skipped: %v)", file, launcher, p.Skipped)
	return nil, nil
}

// The bindings the decoder forms needed, each checked by the oracle as it is and as
// it would be without the fix, which must disagree.
func TestProbeBindings(t *testing.T) {
	orttest.RequireLib(t)
	ort, onnx23 := probePipelines[0].passes, probePipelines[1].passes
	t.Run("rmsnorm is not centred", func(t *testing.T) {
		for _, l := range []string{"qcc::LayerNorm", "qcc::SkipLayerNorm"} {
			m, in := probeInstance(t, "llama.opset17.onnx", ort, l)
			if constOf(t, in, "kCentred") != "false" || !strings.Contains(in.Kernel.Name, "rmsnorm") {
				t.Errorf("%s: kernel %s, kCentred %s", in.ID, in.Kernel.Name, constOf(t, in, "kCentred"))
			}
			fixedAndBroken(t, m, in, map[string]string{"kCentred": "true"})
		}
		m, in := probeInstance(t, "llama.opset17.onnx", onnx23, "qcc::LayerNorm") // RMSNormalization-23
		fixedAndBroken(t, m, in, map[string]string{"kCentred": "true"})
	})
	t.Run("heads from the operator", func(t *testing.T) {
		// The general family's block has no head_size: 4 heads of 8 come from
		// num_heads (q_num_heads) and the query width 32.
		for _, pl := range []string{ort, onnx23} {
			_, in := probeInstance(t, "llama.opset17.onnx", pl, "qcc::Attention")
			if constOf(t, in, "kHeads") != "4" || constOf(t, in, "kHeadSize") != "8" {
				t.Errorf("%s: kHeads %s, kHeadSize %s; want 4, 8", in.Kernel.Name, constOf(t, in, "kHeads"), constOf(t, in, "kHeadSize"))
			}
		}
	})
	t.Run("bias broadcast", func(t *testing.T) {
		// The bias of a causal decoder is shared by the heads; read as [batch, heads,
		// seq, seq] (the kernel before), it is read out of bounds.
		for _, pl := range []string{ort, onnx23} {
			m, in := probeInstance(t, "gpt2-causal.opset17.onnx", pl, "qcc::Attention")
			if constOf(t, in, "kBiasHeads") != "false" {
				t.Errorf("%s: kBiasHeads %s, want false", in.Kernel.Name, constOf(t, in, "kBiasHeads"))
			}
			fixedAndBroken(t, m, in, map[string]string{"kBiasBatch": "true", "kBiasHeads": "true", "kBiasRows": "true"})
		}
	})
	t.Run("fully masked row", func(t *testing.T) {
		// The check data's bias has a row of -inf and one of the lowest float:
		// MultiHeadAttention computes NaN and a uniform row, Attention-23 zeros both.
		m, in := probeInstance(t, "llama.opset17.onnx", ort, "qcc::Attention")
		fixedAndBroken(t, m, in, map[string]string{"kEmptyRow": "qcc::kEmptyRowZero"})
		m, in = probeInstance(t, "llama.opset17.onnx", onnx23, "qcc::Attention")
		fixedAndBroken(t, m, in, map[string]string{"kEmptyRow": "qcc::kEmptyRowNaN"})
	})
}

// TestProbeAttentionTerms: the score terms of modern decoders reach the kernel's Spec
// and matter there. Each probe's attention kernel agrees with ONNX Runtime on the
// block's subgraph, and the same kernel without the term disagrees: Gemma 2's soft
// cap (GroupQueryAttention for target ort, Attention-23 for onnx), GPT-OSS's attention
// sinks and sliding window (GroupQueryAttention's head_sink and local_window_size).
func TestProbeAttentionTerms(t *testing.T) {
	orttest.RequireLib(t)
	for _, c := range []struct {
		file, pipeline string
		without        map[string]string // the Spec without the term
	}{
		{"gemma2.opset17.onnx", "fold,fuse<target=ort>", map[string]string{"kSoftcap": "0.0f"}},
		{"gemma2.opset17.onnx", "fold,fuse<target=onnx;opset=23>", map[string]string{"kSoftcap": "0.0f"}},
		{"gpt-oss-sinks.opset17.onnx", "fold,fuse<target=ort>", map[string]string{"kHasSink": "false"}},
		{"gpt-oss-sliding.opset17.onnx", "fold,fuse<target=ort>", map[string]string{"kWindow": "0"}},
		{"gpt-oss-sliding.opset17.onnx", "fold,fuse<target=ort>", map[string]string{"kHasSink": "false"}},
	} {
		t.Run(c.file+"/"+c.pipeline, func(t *testing.T) {
			m := loadWith(t, filepath.Join(probeDir, c.file), c.pipeline)
			p := planOf(t, m, c.file)
			var found *instance
			for _, in := range p.Instances {
				off := in.Kernel.Launcher == "qcc::Attention"
				for name, v := range c.without {
					off = off && constOf(t, in, name) != v
				}
				if off && found == nil {
					found = in
				}
			}
			if found == nil {
				t.Fatalf("no attention kernel with %v otherwise (skipped: %v)", c.without, p.Skipped)
			}
			fixedAndBroken(t, m, found, c.without)
		})
	}
}

// TestGroupQueryAttentionLengths: GroupQueryAttention gets the attention kernel only
// when its seqlens_k and total_sequence_length are proved to be a prompt's S - 1 and S
// (here constants of a fixed-length model, with a window, a soft cap and sinks: the
// kernel agrees with ONNX Runtime); lengths the model takes as inputs (a padded batch)
// are refused with the reason.
func TestGroupQueryAttentionLengths(t *testing.T) {
	orttest.RequireLib(t)
	m, in := attentionOf(t, "testdata/gqa-fixed.onnx.txt")
	for name, want := range map[string]string{"kWindow": "9", "kHasSink": "true", "kKvHeads": "2", "kCausal": "true"} {
		if got := constOf(t, in, name); got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
	wantAgree(t, m, in)
	p := planOf(t, load(t, "testdata/gqa-padded.onnx.txt"), "gqa-padded")
	if len(p.Instances) != 0 || len(p.Skipped) != 1 || !strings.Contains(p.Skipped[0], "per-sequence lengths have no kernel") {
		t.Errorf("padded lengths: %d instances, skipped %q; want the block refused for its lengths", len(p.Instances), p.Skipped)
	}
}

// TestGroupQueryAttentionRefusals: the GroupQueryAttention forms the kernel does not
// compute are refused with the reason: smooth_softmax, rotary inside the operator,
// and a packed query/key/value.
func TestGroupQueryAttentionRefusals(t *testing.T) {
	p := planOf(t, load(t, "testdata/gqa-refused.onnx.txt"), "gqa-refused")
	if len(p.Instances) != 0 {
		t.Errorf("%d instances, want none", len(p.Instances))
	}
	wantSkipped(t, p,
		"smooth_softmax has no kernel",
		"rotary embedding inside the operator (do_rotary, cos/sin caches, position_ids) has no kernel",
		"GroupQueryAttention with packed query/key/value (no key or value input) has no kernel",
	)
}

// TestProbeHalfGroupQueryAttention: in a model made half, precision keeps a soft-capped
// or sink attention (GroupQueryAttention) in float and feeds it through Casts, while
// the operator's sequence lengths are computed from the half query's shape, which no
// kernel parameter binds. The check data reads that shape off the bound query (its
// Cast, of the same shape), and the kernel agrees with ONNX Runtime on the subgraph.
func TestProbeHalfGroupQueryAttention(t *testing.T) {
	orttest.RequireLib(t)
	for _, file := range []string{"gemma2.opset17.onnx", "gpt-oss-sinks.opset17.onnx"} {
		t.Run(file, func(t *testing.T) {
			m := loadWith(t, filepath.Join(probeDir, file), "fold,fuse<target=ort>,precision<type=fp16>")
			p := planOf(t, m, file)
			n := 0
			for _, in := range p.Instances {
				if in.Kernel.Launcher != "qcc::Attention" {
					continue
				}
				n++
				wantAgree(t, m, in)
			}
			if n == 0 {
				t.Fatalf("no attention kernel (skipped: %v)", p.Skipped)
			}
		})
	}
}
