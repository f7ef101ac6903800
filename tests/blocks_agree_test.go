package tests

import (
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// blockKeys lists the blocks by kind, sorted: what the blocks analysis says the model is
// made of, whichever form (decomposed or fused) each block is in. Norms are listed once
// per normalised value, as "norm": a residual+norm block and the norm it holds are one
// norm (the skip form is only recognised once the norm is one op), and so are a fused
// embedding and its LayerNorm. Layers are left out: they number blocks in graph order,
// which a rewrite may change where the graph has independent branches (an
// encoder–decoder's decoder embedding).
func blockKeys(bs []*transformer.Block) []string {
	var keys []string
	norms := map[*ir.Value]bool{}
	for _, b := range bs {
		if normKinds[b.Kind] || b.Kind == transformer.Embedding && b.Role("gamma") != nil {
			if b.Kind == transformer.Embedding {
				keys = append(keys, string(b.Kind))
			}
			key := normalised(b)
			if !norms[key] {
				keys = append(keys, "norm")
			}
			norms[key] = true
			continue
		}
		keys = append(keys, string(b.Kind))
	}
	sort.Strings(keys)
	return keys
}

// normalised is the value a norm block normalises to: its root, or for an embedding
// masked after its LayerNorm (DeBERTa, XLM) the multiply's other input, the LayerNorm's.
func normalised(b *transformer.Block) *ir.Value {
	if b.Kind != transformer.Embedding || b.Role("mask") == nil {
		return b.Root
	}
	mul, _ := b.Root.Producer()
	if mul == nil || mul.OpType != "Mul" {
		return b.Root
	}
	for i := 0; i < 2; i++ {
		if p, _ := mul.Input(i).Producer(); p == nil || p.OpType != "Cast" {
			return mul.Input(i)
		}
	}
	return b.Root
}

// TestBlocksAgreeWithFuse: the blocks analysis and fuse run one driver, so they agree on
// every block in either order: the blocks recognised before fuse (kind and layer) are
// the blocks recognised in fuse's output, now fused wherever fuse rewrote them, for every
// corpus model and probe and both targets.
func TestBlocksAgreeWithFuse(t *testing.T) {
	type model struct{ name, path string }
	var models []model
	for _, p := range loadProbes(t) {
		models = append(models, model{p.name, p.path})
	}
	for _, cm := range corpus.Models(t, "", "trained") {
		models = append(models, model{cm.Name, cm.Path})
	}
	for _, md := range models {
		t.Run(md.name, func(t *testing.T) {
			before := blockKeys(recognisedAll(t, ortcheck.Fold(t, md.path, passes.All)))
			if len(before) == 0 {
				t.Fatal("no blocks recognised")
			}
			for _, spec := range []string{"fuse<target=ort>", "fuse<target=onnx;opset=23>"} {
				m := ortcheck.Fold(t, md.path, passes.All)
				ortcheck.Pipeline(t, m, spec, passes.All, nil)
				all := recognisedAll(t, m)
				if diff := cmp.Diff(before, blockKeys(all)); diff != "" {
					t.Errorf("%s: blocks before fuse (-) and in its output (+) differ:\n%s", spec, diff)
				}
				var unfused []string
				for _, b := range all {
					if !b.Fused {
						unfused = append(unfused, b.ID+" ("+b.Variant+")")
					}
				}
				t.Logf("%s: %d blocks, not fused: %s", spec, len(all), strings.Join(unfused, ", "))
			}
		})
	}
}
