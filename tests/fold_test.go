package tests

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	_ "github.com/qcc-dev/qcc/internal/update"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/passes"
)

// compile loads path, runs the pipeline with -verify-each and saves the result in dir.
func compile(t *testing.T, path, pipeline, dir string) (in, out *ir.Model, outPath string) {
	t.Helper()
	return ortcheck.Compile(t, path, pipeline, passes.All, dir)
}

// runORT runs a model file on the inputs at an ORT optimization level.
func runORT(t *testing.T, path string, inputs map[string]*ndarray.Array, level ort.OptLevel) map[string]*ndarray.Array {
	t.Helper()
	return ortcheck.Run(t, path, inputs, level)
}

// maxDiff compares every output of want with got.
func maxDiff(t *testing.T, want, got map[string]*ndarray.Array) float64 {
	t.Helper()
	return ortcheck.MaxDiff(t, want, got)
}

func countNodes(m *ir.Model) int {
	n := 0
	m.Graph.Walk(func(g *ir.Graph) error { n += g.NumNodes(); return nil })
	return n
}

// TestFoldCorpus: after -passes=fold every corpus model verifies, has fewer nodes, and ONNX
// Runtime computes the same outputs (max abs difference <= 1e-5) as on the original. The
// invalid DeBERTa opset-11 exports are repaired and checked against their opset-13
// siblings (same weights).
func TestFoldCorpus(t *testing.T) {
	orttest.RequireLib(t)
	models := corpus.Models(t, "", "trained", "invalid")
	dir := t.TempDir()
	var rows []string
	var outputs []string
	for _, cm := range models {
		cm := cm
		t.Run(cm.Name, func(t *testing.T) {
			in, out, outPath := compile(t, cm.Path, "fold", dir)
			n0, n1 := countNodes(in), countNodes(out)
			if n1 >= n0 {
				t.Errorf("fold did not reduce the node count: %d -> %d", n0, n1)
			}
			outputs = append(outputs, outPath)
			inputs := ortcheck.Inputs(t, cm)
			ref := ortcheck.Reference(cm)
			d := ortcheck.Compare(t, ref, outPath, inputs, ort.OptDisabled)
			if d > 1e-5 {
				t.Errorf("outputs differ from the original by %g (> 1e-5)", d)
			}
			if !strings.Contains(cm.Name, "static") {
				// A second shape catches sizes that folding baked into a dynamic graph.
				other := ortcheck.OtherShape(inputs, 3, 11)
				if d2 := ortcheck.Compare(t, ref, outPath, other, ort.OptDisabled); d2 > 1e-5 {
					t.Errorf("on a [3,11] input, outputs differ by %g (> 1e-5)", d2)
				}
			}
			rows = append(rows, fmt.Sprintf("%-32s %4d -> %4d nodes (-%4.1f%%)  max|diff| %.1e", cm.Name, n0, n1, 100*float64(n0-n1)/float64(n0), d))
		})
	}
	sort.Strings(rows)
	t.Logf("fold over the corpus:\n%s", strings.Join(rows, "\n"))
	checkONNX(t, outputs)
}

// checkONNX runs python3-onnx's checker (and strict shape inference) on the files, and
// skips the test where it is not installed (fails it when QCC_REQUIRE_ORT=1).
func checkONNX(t *testing.T, files []string) {
	t.Helper()
	if err := ortcheck.CheckONNX(t, files); err != nil {
		if os.Getenv(ort.EnvRequire) == "1" {
			t.Fatalf("python3-onnx is required for the checker: %v", err)
		}
		t.Skip(err)
	}
}

// otherShapeInputs makes inputs of another shape with the reference inputs' names.
func otherShapeInputs(ref map[string]*ndarray.Array, batch, seq int) map[string]*ndarray.Array {
	return ortcheck.OtherShape(ref, batch, seq)
}
