package transformer_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/shape"
)

func TestSkipCases(t *testing.T) {
	normRunCases(t, "skip-*.txtar", []*transformer.Family{transformer.LayerNormFamily, transformer.SkipFamily})
}

// TestQLinearCases runs testdata/qlinear-*.txtar through the families a quantized
// sublayer meets (GELU, LayerNorm, skip) and the quantized-linear rules that follow them.
func TestQLinearCases(t *testing.T) {
	normRunCases(t, "qlinear-*.txtar", []*transformer.Family{transformer.LayerNormFamily, transformer.GeluFamily, transformer.SkipFamily})
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
				// Raised from every corpus opset, 11 included.
				if got := rep.Ops["LayerNormalization"]; got != blocks {
					t.Errorf("onnx: %d LayerNormalization ops, want %d", got, blocks)
				}
			}},
	}

	var rows, checked []string
	tmp := t.TempDir()
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		if cm.Inputs == "" {
			continue
		}
		t.Run(cm.Name, func(t *testing.T) {
			m := ortcheck.Fold(t, cm.Path, passes.All)
			folded, err := ir.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			inputs := ortcheck.Inputs(t, cm)
			want := ortcheck.Run(t, ortcheck.Reference(cm), inputs, ort.OptDisabled)

			if _, err := shape.Infer(m); err != nil {
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
					checked = append(checked, ortcheck.Save(t, fm, tmp, cm.Name+".onnx"))
				}
				worst := 0.0
				for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptExtended} {
					got := ortcheck.RunModel(t, fm, inputs, level)
					worst = max(worst, ortcheck.CheckOutputs(t, fmt.Sprintf("%s (opt level %d)", c.name, level), want, got, 1e-4))
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
	if err := ortcheck.CheckONNX(t, files); err != nil {
		if os.Getenv(ort.EnvRequire) == "1" {
			t.Fatalf("python3-onnx is required for the checker: %v", err)
		}
		t.Skipf("onnx.checker not run: %v", err)
	}
}

func TestSkipRMSCases(t *testing.T) {
	normRunCases(t, "skiprms-*.txtar", []*transformer.Family{transformer.RMSNormFamily, transformer.SkipRMSNormFamily})
}
