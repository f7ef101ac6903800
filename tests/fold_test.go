package tests

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/synth"
	_ "github.com/qcc-dev/qcc/internal/update"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
)

// compile loads path, runs the pipeline with -verify-each and saves the result in dir.
func compile(t *testing.T, path, pipeline, dir string) (in, out *ir.Model, outPath string) {
	t.Helper()
	in, err := ir.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ir.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pass.Parse(pipeline, passes.All)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true}); err != nil {
		t.Fatal(err)
	}
	outPath = filepath.Join(dir, filepath.Base(path))
	if err := ir.Save(m, outPath, ir.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err = ir.Load(outPath)
	if err != nil {
		t.Fatalf("saved model does not load: %v", err)
	}
	if err := out.Verify(); err != nil {
		t.Fatalf("saved model does not verify: %v", err)
	}
	return in, out, outPath
}

// runORT runs a model file on the inputs with ORT's own optimizations off.
func runORT(t *testing.T, path string, inputs map[string]*ndarray.Array, level ort.OptLevel) map[string]*ndarray.Array {
	t.Helper()
	s, err := ort.NewSession(path, ort.Options{OptLevel: level, IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Run(inputs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// maxDiff compares every output of want with got.
func maxDiff(t *testing.T, want, got map[string]*ndarray.Array) float64 {
	t.Helper()
	worst := 0.0
	for name, w := range want {
		g := got[name]
		if g == nil {
			t.Fatalf("output %q missing", name)
		}
		d, err := ndarray.MaxAbsDiff(w, g)
		if err != nil {
			t.Fatalf("output %q: %v", name, err)
		}
		worst = math.Max(worst, d)
	}
	return worst
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
			inputs, err := npz.Read(cm.Inputs)
			if err != nil {
				t.Fatal(err)
			}
			ref := cm.Path
			if cm.Sub == "invalid" {
				// ORT rejects the original; its opset-13 sibling has the same weights.
				ref = filepath.Join(filepath.Dir(cm.Path), "..", strings.Replace(cm.Name, "opset11", "opset13", 1)+".onnx")
			}
			want := runORT(t, ref, inputs, ort.OptDisabled)
			got := runORT(t, outPath, inputs, ort.OptDisabled)
			d := maxDiff(t, want, got)
			if d > 1e-5 {
				t.Errorf("outputs differ from the original by %g (> 1e-5)", d)
			}
			if !strings.Contains(cm.Name, "static") {
				// A second shape catches sizes that folding baked into a dynamic graph.
				other := otherShapeInputs(inputs, 3, 11)
				if d2 := maxDiff(t, runORT(t, ref, other, ort.OptDisabled), runORT(t, outPath, other, ort.OptDisabled)); d2 > 1e-5 {
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

// checkONNX runs python3-onnx's checker (and strict shape inference) on the files.
func checkONNX(t *testing.T, files []string) {
	t.Helper()
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import onnx").Run(); err != nil {
		if os.Getenv("QCC_REQUIRE_ORT") == "1" {
			t.Fatalf("python3-onnx is required for the checker: %v", err)
		}
		t.Skipf("python3-onnx not installed: %v", err)
	}
	script := `
import sys, onnx
bad = 0
for f in sys.argv[1:]:
    try:
        m = onnx.load(f)
        onnx.checker.check_model(m)
        onnx.checker.check_model(m, full_check=True)
    except Exception as e:
        bad += 1
        print("FAIL", f, str(e).splitlines()[0] if str(e) else type(e).__name__)
print("checked", len(sys.argv) - 1, "bad", bad)
`
	out, err := exec.Command(py, append([]string{"-c", script}, files...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("checker: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "FAIL") {
		t.Errorf("onnx.checker rejects outputs:\n%s", out)
	} else {
		t.Logf("onnx.checker: %s", strings.TrimSpace(string(out)))
	}
}

// otherShapeInputs makes inputs of another shape with the reference inputs' names.
func otherShapeInputs(ref map[string]*ndarray.Array, batch, seq int) map[string]*ndarray.Array {
	var names []string
	for name := range ref {
		names = append(names, name)
	}
	return synth.Inputs(names, batch, seq, 2, 500)
}
