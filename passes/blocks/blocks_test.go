package blocks

import (
	"context"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	qcorpus "github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/fold"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// TestBodies: a merged decoder holds its model in both branches of an If; the analysis
// finds each branch's blocks (as many as the decoder has, none in the main graph), with
// IDs named by their body and the body's graph alongside.
func TestBodies(t *testing.T) {
	m, err := ir.Load("../../testdata/probes/gpt2-merged.opset17.onnx")
	if err != nil {
		t.Fatal(err)
	}
	p, err := pass.Parse("fold,blocks", []*pass.Pass{fold.Pass, Pass})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Run(context.Background(), m, nil); err != nil {
		t.Fatal(err)
	}
	r := Recognize(m)
	if n := r.ByKind()[transformer.Attention]; n != 0 {
		t.Errorf("main graph: %d attention blocks, want 0 (the model is in the If's branches)", n)
	}
	if len(r.Bodies) != 2 {
		t.Fatalf("%d bodies, want the If's 2 branches", len(r.Bodies))
	}
	for _, b := range r.Bodies {
		if b.Graph == nil || b.Graph.Parent != m.Graph {
			t.Fatalf("body %v: its graph is not a branch of the main graph", b.Graph)
		}
		if n := b.ByKind()[transformer.Attention]; n != 2 {
			t.Errorf("body %s: %d attention blocks, want the decoder's 2", b.Graph.Name, n)
		}
		for _, bl := range b.Blocks {
			if !strings.HasPrefix(bl.ID, b.Graph.Name+"/") {
				t.Errorf("block %s of body %s: ID not named by its body", bl.ID, b.Graph.Name)
			}
		}
	}
	if got := len(r.All()); got != 3 {
		t.Errorf("All: %d results, want 3", got)
	}
}

// layerNameExceptions are the probes whose module names place blocks where no structural
// rule can, and why.
var layerNameExceptions = map[string]string{
	"conformer-block.opset17.onnx": "macaron layers: the first half-step FFN comes before the attention, on the stream the layer before ends with; by structure it is that layer's last FFN",
	"w2v-bert.opset17.onnx":        "macaron layers, as conformer-block",
	"mobilebert.opset17.onnx":      "the bottleneck norm before the attention reads the bottleneck projection, not the residual stream; the layer's stream is found through V, before it",
	"cait.opset17.onnx":            "talking-heads self-attention is recognised by no family, so its layers count no attention",
}

// TestLayersByName: a block's layer is the one the exporter's module path names, where
// the root's node name holds exactly one index ("/layers.3/…", "/input_layernorm.3/…",
// "/bert/encoder/layer.3/…"): the layer's own norms (pre-LN: the norm before the
// attention; post-LN: the norms after it), its rotary embeddings and its FFN; in every
// probe and corpus model at opset 17 whose named layers each hold one attention block
// (layers count attentions: an encoder-decoder layer with cross-attention counts two).
func TestLayersByName(t *testing.T) {
	models, _ := filepath.Glob("../../testdata/probes/*.opset17.onnx")
	for _, c := range qcorpus.Models(t) {
		models = append(models, c.Path)
	}
	index := regexp.MustCompile(`\.(\d+)`)
	named := func(n *ir.Node) (int, bool) {
		ix := index.FindAllStringSubmatch(n.Name, -1)
		if len(ix) != 1 {
			return 0, false
		}
		l, err := strconv.Atoi(ix[0][1])
		return l, err == nil
	}
	p, err := pass.Parse("fold", []*pass.Pass{fold.Pass})
	if err != nil {
		t.Fatal(err)
	}
	checked, skipped := 0, 0
	for _, path := range models {
		if strings.Contains(path, "nearmiss-") || layerNameExceptions[filepath.Base(path)] != "" {
			continue
		}
		m, err := ir.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Run(context.Background(), m, nil); err != nil {
			t.Fatal(err)
		}
		blocks := Recognize(m).Blocks
		// One attention block per named layer, and every attention named.
		perLayer := map[int]int{}
		for _, b := range blocks {
			if b.Kind != transformer.Attention {
				continue
			}
			n, _ := b.Root.Producer()
			if l, ok := named(n); ok {
				perLayer[l]++
			} else {
				perLayer[-1] = 2
			}
		}
		one := len(perLayer) > 0
		for _, c := range perLayer {
			one = one && c == 1
		}
		if !one {
			skipped++
			continue
		}
		for _, b := range blocks {
			n, _ := b.Root.Producer()
			want, ok := named(n)
			if !ok {
				continue
			}
			checked++
			if b.Layer != want {
				t.Errorf("%s: %s (%s, root %s) is in layer %d, want %d", filepath.Base(path), b.ID, b.Variant, n.Name, b.Layer, want)
			}
		}
	}
	t.Logf("%d blocks checked; %d models skipped (not one attention per named layer)", checked, skipped)
}
