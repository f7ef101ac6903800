package fold

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

const ortTol = 1e-5

func runORT(t *testing.T, path string, in map[string]*ndarray.Array) map[string]*ndarray.Array {
	t.Helper()
	s, err := ort.NewSession(path, ort.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("ONNX Runtime refuses %s: %v", filepath.Base(path), err)
	}
	defer s.Close()
	out, err := s.Run(in)
	if err != nil {
		t.Fatalf("run %s: %v", filepath.Base(path), err)
	}
	return out
}

func compareOutputs(t *testing.T, what string, got, want map[string]*ndarray.Array) {
	t.Helper()
	if len(want) == 0 {
		t.Fatalf("%s: nothing to compare", what)
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: output %q missing", what, name)
			continue
		}
		d, err := ndarray.MaxAbsDiff(g, w)
		if err != nil || d > ortTol {
			t.Errorf("%s: output %q: max abs diff %g (%v)", what, name, d, err)
		} else {
			t.Logf("%s: output %q: max abs diff %g", what, name, d)
		}
	}
}

// TestFoldORT checks with ONNX Runtime that folding preserves every corpus model's
// outputs, and that the repaired DeBERTa opset-11 exports (which ORT refuses as exported)
// load and compute what their opset-13 siblings compute.
func TestFoldORT(t *testing.T) {
	orttest.RequireLib(t)
	dir := corpus.Dir(t)
	tmp := t.TempDir()
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		if cm.Inputs == "" {
			continue
		}
		t.Run(cm.Name, func(t *testing.T) {
			in, err := npz.Read(cm.Inputs)
			if err != nil {
				t.Fatal(err)
			}
			m, err := ir.Load(cm.Path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Run(m, Options{}); err != nil {
				t.Fatal(err)
			}
			folded := filepath.Join(tmp, cm.Name+".folded.onnx")
			if err := ir.Save(m, folded, ir.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			got := runORT(t, folded, in)
			if cm.Sub == "invalid" {
				if s, err := ort.NewSession(cm.Path, ort.Options{}); err == nil {
					s.Close()
					t.Errorf("ONNX Runtime accepts the unrepaired %s; the test no longer shows the repair", cm.Name)
				}
				sibling := filepath.Join(dir, strings.Replace(cm.Name, ".opset11", ".opset13", 1))
				if _, err := os.Stat(sibling + ".onnx"); err != nil {
					t.Fatalf("no opset-13 sibling for %s", cm.Name)
				}
				want := runORT(t, sibling+".onnx", in)
				compareOutputs(t, "repaired vs opset-13 export (ORT)", got, want)
				ref, err := npz.Read(sibling + ".outputs.npz")
				if err != nil {
					t.Fatal(err)
				}
				compareOutputs(t, "repaired vs opset-13 reference outputs", got, ref)
				return
			}
			want := runORT(t, cm.Path, in)
			compareOutputs(t, "folded vs original (ORT)", got, want)
		})
	}
}
