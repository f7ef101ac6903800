package fold

import (
	"os"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

const ortTol = 1e-5

// TestFoldORT checks with ONNX Runtime that folding preserves every corpus model's
// outputs, and that the repaired DeBERTa opset-11 exports (which ORT refuses as exported)
// load and compute what their opset-13 siblings compute.
func TestFoldORT(t *testing.T) {
	orttest.RequireLib(t)
	tmp := t.TempDir()
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		if cm.Inputs == "" {
			continue
		}
		t.Run(cm.Name, func(t *testing.T) {
			in := ortcheck.Inputs(t, cm)
			m := ortcheck.Load(t, cm.Path)
			if _, err := Run(m, Options{}); err != nil {
				t.Fatal(err)
			}
			folded := ortcheck.Save(t, m, tmp, cm.Name+".folded.onnx")
			got := ortcheck.Run(t, folded, in, ort.OptDisabled)
			if cm.Sub == "invalid" {
				if s, err := ort.NewSession(cm.Path, ort.Options{}); err == nil {
					s.Close()
					t.Errorf("ONNX Runtime accepts the unrepaired %s; the test no longer shows the repair", cm.Name)
				}
				sibling := ortcheck.Reference(cm)
				if _, err := os.Stat(sibling); err != nil {
					t.Fatalf("no opset-13 sibling for %s", cm.Name)
				}
				want := ortcheck.Run(t, sibling, in, ort.OptDisabled)
				ortcheck.CheckOutputs(t, "repaired vs opset-13 export (ORT)", want, got, ortTol)
				ref, err := npz.Read(strings.TrimSuffix(sibling, ".onnx") + ".outputs.npz")
				if err != nil {
					t.Fatal(err)
				}
				ortcheck.CheckOutputs(t, "repaired vs opset-13 reference outputs", ref, got, ortTol)
				return
			}
			want := ortcheck.Run(t, cm.Path, in, ort.OptDisabled)
			ortcheck.CheckOutputs(t, "folded vs original (ORT)", want, got, ortTol)
		})
	}
}
