package blocks

import (
	"context"
	"strings"
	"testing"

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
