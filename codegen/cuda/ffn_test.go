package cuda

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// packedConvFFN is a SqueezeBERT-layout gated FFN on channel-first [batch, 4, seq]: one
// 1×1 Conv packs the up and gate projections into 8 channels, Split on the channels
// (axis 1), GELU on the second half, and a 1×1 Conv down projection added to x.
const packedConvFFN = "../../testdata/models/packed-conv-ffn.onnx.txt"

// TestPackedConvFFN: the FFN block of a channel-first packed FFN is an annotation (its
// projections run as the model's Convs). Its GELU, on the gate half [batch, 4, 6], gets
// the GELU kernel over rows of 6, whose emulation agrees with ONNX Runtime on the model's
// subgraph; over [batch, 4, seq] it is refused, as kernels are specialised on the row
// length, the last axis.
func TestPackedConvFFN(t *testing.T) {
	orttest.RequireLib(t)
	planned := func(path string) (*ir.Model, *plan) {
		m := load(t, path)
		bs, _ := transformer.Recognize(m.Graph, transformer.Families)
		kinds := map[transformer.Kind]int{}
		for _, b := range bs {
			kinds[b.Kind]++
		}
		if kinds[transformer.FFN] != 1 || kinds[transformer.Gelu] != 1 {
			t.Fatalf("blocks %v, want one FFN and one GELU", kinds)
		}
		return m, planOf(t, m, "packed-conv-ffn")
	}
	src, err := os.ReadFile(packedConvFFN)
	if err != nil {
		t.Fatal(err)
	}
	static := filepath.Join(t.TempDir(), "packed-conv-ffn-6.onnx.txt")
	if err := os.WriteFile(static, []byte(strings.ReplaceAll(string(src), "float[batch,4,seq]", "float[batch,4,6]")), 0o644); err != nil {
		t.Fatal(err)
	}

	m, p := planned(static)
	if len(p.Skipped) != 0 {
		t.Errorf("skipped %v", p.Skipped)
	}
	gelus := 0
	for _, in := range p.Instances {
		if in.Kernel.Launcher != "qcc::BiasGelu" {
			continue
		}
		gelus++
		wantAgree(t, m, in)
	}
	if gelus != 1 {
		t.Errorf("%d GELU kernels, want 1 (instances %d)", gelus, len(p.Instances))
	}

	_, p = planned(packedConvFFN)
	const why = "row length unknown: input float[batch,4,seq] does not end in a constant dimension"
	if len(p.Skipped) != 1 || !strings.HasSuffix(p.Skipped[0], why) {
		t.Errorf("skipped %q, want the GELU alone: %s", p.Skipped, why)
	}
}
