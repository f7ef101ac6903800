package fuse_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/modroot"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/passes/fuse"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// The pass on a causal decoder (a probe export): its counts name the fused operators,
// its notes say whether the model is fully fused and why not, and a Softmax that is not
// attention is listed with the reason.
func TestFusePass(t *testing.T) {
	root, err := modroot.Find()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		spec, op string
	}{
		{"fold,fuse<target=ort>", "fuse: com.microsoft.MultiHeadAttention"},
		{"fold,fuse<target=onnx;opset=23>", "fuse: Attention"},
	} {
		for _, file := range []string{"gpt2-causal.opset17.onnx", "nearmiss-softmax-axis.opset17.onnx"} {
			m, err := ir.Load(filepath.Join(root, "testdata", "probes", file))
			if err != nil {
				t.Fatal(err)
			}
			p, err := pass.Parse(c.spec, passes.All)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := p.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true})
			if err != nil {
				t.Fatal(err)
			}
			st := rep.Stats[len(rep.Stats)-1]
			if st.Pass != "fuse" {
				t.Fatalf("last pass %s", st.Pass)
			}
			notes := strings.Join(st.Notes, "\n")
			if file == "gpt2-causal.opset17.onnx" {
				if st.Counts[c.op] != 2 || !strings.Contains(notes, "fully fused: yes") {
					t.Errorf("%s %s: counts %v\n%s", c.spec, file, st.Counts, notes)
				}
				continue
			}
			if st.Counts[c.op] != 0 || !strings.Contains(notes, "fully fused: no: no attention") ||
				!strings.Contains(notes, "not attention: softmax /attn.0/Softmax: the softmax runs over [seq(sequence)], not the key sequence") {
				t.Errorf("%s %s: counts %v\n%s", c.spec, file, st.Counts, notes)
			}
		}
	}
}

// Bad options are refused by the pipeline parser, naming the option.
func TestFuseOptions(t *testing.T) {
	for _, spec := range []string{"fuse<target=tensorrt>", "fuse<provider=rocm>", "fuse<opset=-1>", "fuse<opset=x>"} {
		if _, err := pass.Parse(spec, passes.All); err == nil {
			t.Errorf("%s accepted", spec)
		} else if opt := spec[strings.Index(spec, "<")+1 : strings.Index(spec, "=")]; !strings.Contains(err.Error(), opt) {
			t.Errorf("%s: error %q does not name %q", spec, err, opt)
		}
	}
}

// FullyFused names the kinds left decomposed and counts norms of every kind.
func TestFullyFused(t *testing.T) {
	b := func(k transformer.Kind, fused bool) *transformer.Block {
		return &transformer.Block{Kind: k, Fused: fused}
	}
	got := fuse.FullyFused([]*transformer.Block{
		b(transformer.Attention, true), b(transformer.RMSNorm, true), b(transformer.SkipRMSNorm, true),
		b(transformer.FFN, false), b(transformer.Gelu, false),
	})
	want := "fully fused: no: 1 Gelu left; fused embedding 0, attention 1, gelu 0, ffn 0, norms 2 (skip 1); recognised embedding 0, attention 1, gelu 1, ffn 1, norms 2 (skip 1)"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := fuse.FullyFused([]*transformer.Block{b(transformer.Attention, true), b(transformer.LayerNorm, true)}); !strings.HasPrefix(got, "fully fused: yes;") {
		t.Errorf("got %s", got)
	}
}

// Typed lets Fuse skip its first shape inference. On every opset-17 probe, with the types
// as the shapes analysis leaves them, Fuse with Typed writes the same model as Fuse
// inferring them again.
func TestFuseTyped(t *testing.T) {
	root, err := modroot.Find()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "testdata", "probes", "*.opset17.onnx"))
	if err != nil || len(files) < 50 {
		t.Fatalf("%d probes (%v)", len(files), err)
	}
	fold, err := pass.Parse("fold,shapes", passes.All)
	if err != nil {
		t.Fatal(err)
	}
	fused := func(file string, typed bool) string {
		m, err := ir.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fold.Run(context.Background(), m, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := transformer.Fuse(m, transformer.Families, &transformer.Env{Model: m, Target: transformer.ORT, Typed: typed}); err != nil {
			t.Fatalf("%s: %v", filepath.Base(file), err)
		}
		var sb strings.Builder
		if err := text.Print(&sb, m, text.Options{}); err != nil {
			t.Fatal(err)
		}
		return sb.String()
	}
	for _, f := range files {
		if a, b := fused(f, false), fused(f, true); a != b {
			t.Errorf("%s: Fuse with Typed writes another model", filepath.Base(f))
		}
	}
}
