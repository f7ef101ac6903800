package fold

import (
	"context"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/shapes"
)

// TestCorpus runs shapes+fold on every corpus model: the node count must drop, the model
// must verify, and static-shape exports must lose every Shape, Constant and Identity.
func TestCorpus(t *testing.T) {
	for _, cm := range corpus.Models(t, "", "trained", "invalid", "large") {
		t.Run(cm.Name, func(t *testing.T) {
			m, err := ir.Load(cm.Path)
			if err != nil {
				t.Fatal(err)
			}
			before := m.Graph.NumNodes()
			steps := []pass.Step{{Pass: Pass}}
			if cm.Sub != "invalid" {
				// The invalid exports cannot be shape-inferred before fold repairs them.
				steps = append([]pass.Step{{Pass: shapes.Pass}}, steps...)
			}
			pl := &pass.Pipeline{Steps: steps}
			r, err := pl.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true})
			if err != nil {
				t.Fatal(err)
			}
			after := m.Graph.NumNodes()
			st := r.Stats[len(r.Stats)-1]
			t.Logf("%d -> %d nodes, %d rounds", before, after, st.Counts["fold: rounds"])
			if after >= before {
				t.Errorf("node count did not drop: %d -> %d", before, after)
			}
			if err := m.Verify(); err != nil {
				t.Fatal(err)
			}
			if st.Counts["fold: rounds"] >= maxIterations {
				t.Errorf("no fixed point after %d rounds", maxIterations)
			}
			hist := map[string]int{}
			for _, n := range m.Graph.Nodes() {
				hist[n.OpType]++
			}
			if strings.Contains(cm.Name, ".static.") {
				for _, op := range []string{"Shape", "Constant", "Identity"} {
					if hist[op] > 0 {
						t.Errorf("%d %s nodes left in a static model", hist[op], op)
					}
				}
			}
			if hist["Constant"] > 0 {
				t.Errorf("%d Constant nodes left", hist["Constant"])
			}
			if cm.Sub == "invalid" {
				if len(st.Notes) == 0 || !strings.Contains(strings.Join(st.Notes, "\n"), "Clip") {
					t.Errorf("no repair noted: %v", st.Notes)
				}
				for _, n := range m.Graph.Nodes() {
					if n.OpType == "Clip" && n.Input(0).Type != nil && n.Input(0).Type.DType != ir.Float {
						t.Errorf("%s still reads %s", n, n.Input(0).Type)
					}
				}
			}
			// Folding again finds nothing to do.
			st2, err := Run(m, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if st2.Changed {
				t.Errorf("second fold changed the model: %v", st2.Counts)
			}
		})
	}
}
