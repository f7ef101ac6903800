package transformer_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/passes/shapes"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

func TestSkipCases(t *testing.T) {
	normRunCases(t, "skip-*.txtar", []*transformer.Family{transformer.LayerNormFamily, transformer.SkipFamily})
}

// TestNormCorpusORT folds every corpus model, fuses its LayerNorms (and RMSNorms) alone
// and then with the residual Adds, for both targets, and checks with ONNX Runtime
// (optimisations off and extended) that the outputs stay within 1e-4 of the original's
// on NAME.inputs.npz. Every model has 2 layers: 1 + 2×2 LayerNorm blocks at least (the
// embeddings' and two per layer), 2 per layer of which take a residual.
func TestNormCorpusORT(t *testing.T) {
	orttest.RequireLib(t)
	ln, rms, skip := transformer.LayerNormFamily, transformer.RMSNormFamily, transformer.SkipFamily
	configs := []struct {
		name  string
		fams  []*transformer.Family
		env   transformer.Env
		check func(t *testing.T, blocks int, rep *transformer.Report, opset int64)
	}{
		{"ort:ln", []*transformer.Family{ln, rms}, transformer.Env{Target: transformer.ORT},
			func(t *testing.T, blocks int, rep *transformer.Report, _ int64) {
				if got := rep.Ops["LayerNormalization"]; got != blocks {
					t.Errorf("ort: %d LayerNormalization ops for %d LayerNorm blocks", got, blocks)
				}
			}},
		{"ort:ln+skip", []*transformer.Family{ln, skip}, transformer.Env{Target: transformer.ORT},
			func(t *testing.T, blocks int, rep *transformer.Report, _ int64) {
				sk := rep.Ops["com.microsoft.SkipLayerNormalization"]
				if sk < 4 || sk+rep.Ops["LayerNormalization"] != blocks {
					t.Errorf("ort: %d SkipLayerNormalization + %d LayerNormalization for %d LayerNorm blocks (want >= 4 skips)",
						sk, rep.Ops["LayerNormalization"], blocks)
				}
			}},
		{"onnx:ln+skip raise=17", []*transformer.Family{ln, skip}, transformer.Env{Target: transformer.ONNX, RaiseOpset: 17},
			func(t *testing.T, blocks int, rep *transformer.Report, opset int64) {
				want := blocks
				if opset < 13 {
					want = 0 // not raised from below 13
				}
				if got := rep.Ops["LayerNormalization"]; got != want {
					t.Errorf("onnx: %d LayerNormalization ops, want %d", got, want)
				}
			}},
	}

	fold, err := pass.Parse("fold", passes.All)
	if err != nil {
		t.Fatal(err)
	}
	var rows, checked []string
	tmp := t.TempDir()
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		if cm.Inputs == "" {
			continue
		}
		t.Run(cm.Name, func(t *testing.T) {
			m, err := ir.Load(cm.Path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fold.Run(context.Background(), m, &pass.Instrumentation{}); err != nil {
				t.Fatal(err)
			}
			folded, err := ir.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			inputs, err := npz.Read(cm.Inputs)
			if err != nil {
				t.Fatal(err)
			}
			ref := cm.Path
			if cm.Sub == "invalid" { // ORT refuses the original; its opset-13 sibling has the same weights
				ref = filepath.Join(filepath.Dir(cm.Path), "..", strings.Replace(cm.Name, "opset11", "opset13", 1)+".onnx")
			}
			want := normRunFile(t, ref, inputs)

			if _, err := shapes.Infer(m); err != nil {
				t.Fatal(err)
			}
			found, refs := transformer.Recognize(m.Graph, []*transformer.Family{ln})
			blocks := len(found)
			if blocks < 5 {
				t.Errorf("%d LayerNorm blocks, want at least 5", blocks)
			}
			for _, r := range refs {
				t.Errorf("LayerNorm refused: %s", r)
			}
			if rb, _ := transformer.Recognize(m.Graph, []*transformer.Family{rms}); len(rb) > 0 {
				t.Errorf("%d RMSNorm blocks in a model without RMSNorm (first %s)", len(rb), rb[0].Root.Name)
			}
			row := fmt.Sprintf("%-28s LN blocks %d", cm.Name, blocks)
			for _, c := range configs {
				fm, err := ir.LoadBytes(folded, "")
				if err != nil {
					t.Fatal(err)
				}
				env := c.env
				env.Model = fm
				opset := fm.Opset("")
				rep, err := transformer.Fuse(fm, c.fams, &env)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if err := fm.Verify(); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				c.check(t, blocks, rep, opset)
				if c.env.Target == transformer.ONNX { // standard ops only: onnx.checker must accept it
					p := filepath.Join(tmp, cm.Name+".onnx")
					if err := ir.Save(fm, p, ir.SaveOptions{}); err != nil {
						t.Fatal(err)
					}
					checked = append(checked, p)
				}
				worst := 0.0
				for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptExtended} {
					got := normRunBytes(t, c.name, fm, inputs, level)
					for name, w := range want {
						d, err := ndarray.MaxAbsDiff(w, got[name])
						if err != nil || d > 1e-4 {
							t.Errorf("%s (opt level %d): output %s differs by %g (%v)", c.name, level, name, d, err)
						}
						worst = max(worst, d)
					}
				}
				row += fmt.Sprintf(" | %s: LN %d skip %d left %d diff %.0e", c.name, rep.Ops["LayerNormalization"],
					rep.Ops["com.microsoft.SkipLayerNormalization"], len(rep.Left), worst)
				for _, l := range rep.Left {
					t.Logf("%s: left %s", c.name, l)
				}
				for _, r := range rep.Refusals {
					t.Logf("%s: refused %s", c.name, r)
				}
			}
			rows = append(rows, row)
		})
	}
	t.Logf("norm fusion over the corpus:\n%s", strings.Join(rows, "\n"))
	normCheckONNX(t, checked)
}

// normCheckONNX runs python3-onnx's checker with strict shape inference on the files,
// when it is installed.
func normCheckONNX(t *testing.T, files []string) {
	t.Helper()
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import onnx").Run(); err != nil {
		t.Logf("python3-onnx not installed, onnx.checker not run: %v", err)
		return
	}
	script := `
import sys, onnx
for f in sys.argv[1:]:
    try:
        m = onnx.load(f)
        onnx.checker.check_model(m)
        onnx.checker.check_model(m, full_check=True)
    except Exception as e:
        print("FAIL", f, str(e).splitlines()[0] if str(e) else type(e).__name__)
`
	out, err := exec.Command(py, append([]string{"-c", script}, files...)...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "FAIL") {
		t.Errorf("onnx.checker rejects onnx-target outputs (%v):\n%s", err, out)
	}
}

func normRunFile(t *testing.T, path string, in map[string]*ndarray.Array) map[string]*ndarray.Array {
	t.Helper()
	s, err := ort.NewSession(path, ort.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("ONNX Runtime refuses %s: %v", filepath.Base(path), err)
	}
	defer s.Close()
	out, err := s.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
