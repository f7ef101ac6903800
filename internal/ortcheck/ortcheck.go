// Package ortcheck holds the test plumbing that checks a rewrite with ONNX Runtime: run a
// model (a file or an in-memory *ir.Model) on inputs at an optimization level, compare
// outputs by max abs difference, find a corpus model's reference and inputs, make
// [batch, seq] token inputs of another shape, run a pipeline and save the result, parse
// and print small text models, and run python3-onnx's checker.
//
// It does not import passes (whose dependencies' own tests use it): functions that run a
// pipeline take the pass registry, usually passes.All.
package ortcheck

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/synth"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/pass"
)

// Run runs the model file at path on the inputs in ONNX Runtime (one intra-op thread) with
// the given graph optimization level, and fails t if ORT refuses the model or the run.
func Run(t testing.TB, path string, inputs map[string]*ndarray.Array, level ort.OptLevel) map[string]*ndarray.Array {
	t.Helper()
	s, err := ort.NewSession(path, ort.Options{OptLevel: level, IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("ONNX Runtime refuses %s: %v", filepath.Base(path), err)
	}
	return run(t, s, filepath.Base(path), inputs)
}

// RunModel is Run for a model in memory (marshalled, not saved); when ORT refuses it, the
// failure shows the model's text.
func RunModel(t testing.TB, m *ir.Model, inputs map[string]*ndarray.Array, level ort.OptLevel) map[string]*ndarray.Array {
	t.Helper()
	b, err := ir.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSessionFromBytes(b, ort.Options{OptLevel: level, IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("ONNX Runtime refuses the model: %v\n%s", err, Text(t, m))
	}
	return run(t, s, "the model", inputs)
}

func run(t testing.TB, s *ort.Session, what string, inputs map[string]*ndarray.Array) map[string]*ndarray.Array {
	t.Helper()
	defer s.Close()
	out, err := s.Run(inputs)
	if err != nil {
		t.Fatalf("ONNX Runtime run of %s: %v", what, err)
	}
	return out
}

// MaxDiff is the largest max abs difference between an output of want and the same output
// of got; an output missing from got, or of another type or shape, fails t.
func MaxDiff(t testing.TB, want, got map[string]*ndarray.Array) float64 {
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

// CheckOutputs compares want and got output by output: an output missing from got, of
// another type or shape, or more than tol apart is an error of t (prefixed by what), and
// each difference is logged. It returns the largest difference; want must not be empty.
func CheckOutputs(t testing.TB, what string, want, got map[string]*ndarray.Array, tol float64) float64 {
	t.Helper()
	if len(want) == 0 {
		t.Fatalf("%s: nothing to compare", what)
	}
	worst := 0.0
	for _, name := range sortedKeys(want) {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: output %q missing", what, name)
			continue
		}
		d, err := ndarray.MaxAbsDiff(want[name], g)
		if err != nil || d > tol {
			t.Errorf("%s: output %q: max abs diff %g > %g (%v)", what, name, d, tol, err)
		} else {
			t.Logf("%s: output %q: max abs diff %g", what, name, d)
		}
		worst = math.Max(worst, d)
	}
	return worst
}

// Compare runs refPath with ORT's optimizations off, and gotPath at each level, on the
// inputs, and returns the largest difference of gotPath's outputs from refPath's.
func Compare(t testing.TB, refPath, gotPath string, inputs map[string]*ndarray.Array, levels ...ort.OptLevel) float64 {
	t.Helper()
	want := Run(t, refPath, inputs, ort.OptDisabled)
	worst := 0.0
	for _, level := range levels {
		worst = math.Max(worst, MaxDiff(t, want, Run(t, gotPath, inputs, level)))
	}
	return worst
}

// Reference returns the model ORT runs as cm's reference: cm itself, but for the invalid
// DeBERTa opset-11 exports, which ORT refuses, their opset-13 siblings (same weights).
func Reference(cm corpus.Model) string {
	if cm.Sub == "invalid" {
		return filepath.Join(filepath.Dir(cm.Path), "..", strings.Replace(cm.Name, "opset11", "opset13", 1)+".onnx")
	}
	return cm.Path
}

// Inputs reads cm's reference inputs (NAME.inputs.npz).
func Inputs(t testing.TB, cm corpus.Model) map[string]*ndarray.Array {
	t.Helper()
	in, err := npz.Read(cm.Inputs)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// OtherShape makes int64 inputs of shape [batch, seq] named like ref (synth.Inputs: token
// ids below 500, a mask with the last two positions of the last row off, token types 1 in
// the second half). A second shape catches sizes a rewrite baked into a dynamic graph.
func OtherShape(ref map[string]*ndarray.Array, batch, seq int) map[string]*ndarray.Array {
	return synth.Inputs(sortedKeys(ref), batch, seq, 2, 500)
}

// FirstShape is the shape of the first input by name, to say which inputs a check used.
func FirstShape(inputs map[string]*ndarray.Array) []int64 {
	keys := sortedKeys(inputs)
	if len(keys) == 0 {
		return nil
	}
	return inputs[keys[0]].Shape
}

func sortedKeys(m map[string]*ndarray.Array) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Load loads a model file.
func Load(t testing.TB, path string) *ir.Model {
	t.Helper()
	m, err := ir.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Pipeline parses spec against registry (usually passes.All) and runs it on m with inst
// (nil: none), returning the pass manager's report.
func Pipeline(t testing.TB, m *ir.Model, spec string, registry []*pass.Pass, inst *pass.Instrumentation) *pass.Report {
	t.Helper()
	p, err := pass.Parse(spec, registry)
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.Run(context.Background(), m, inst)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Fold loads path and runs the fold pass on it through the pass manager.
func Fold(t testing.TB, path string, registry []*pass.Pass) *ir.Model {
	t.Helper()
	m := Load(t, path)
	Pipeline(t, m, "fold", registry, nil)
	return m
}

// Save saves m as dir/name and returns the path.
func Save(t testing.TB, m *ir.Model, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := ir.Save(m, p, ir.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// Compile loads path, runs the pipeline (parsed against registry) with -verify-each, and
// saves the result in dir under path's base name. It returns the model as loaded, the saved
// model loaded back (it must verify) and its path.
func Compile(t testing.TB, path, spec string, registry []*pass.Pass, dir string) (in, out *ir.Model, outPath string) {
	t.Helper()
	in = Load(t, path)
	m := Load(t, path)
	Pipeline(t, m, spec, registry, &pass.Instrumentation{VerifyEach: true})
	outPath = Save(t, m, dir, filepath.Base(path))
	out, err := ir.Load(outPath)
	if err != nil {
		t.Fatalf("saved model does not load: %v", err)
	}
	if err := out.Verify(); err != nil {
		t.Fatalf("saved model does not verify: %v", err)
	}
	return in, out, outPath
}

// Parse parses a model in ONNX text syntax.
func Parse(t testing.TB, src string) *ir.Model {
	t.Helper()
	m, err := text.Parse(src)
	if err != nil {
		t.Fatalf("test model does not parse: %v\n%s", err, src)
	}
	return m
}

// SaveText parses a model in ONNX text syntax and saves it as dir/name; it returns the
// model and the path.
func SaveText(t testing.TB, dir, name, src string) (*ir.Model, string) {
	t.Helper()
	m := Parse(t, src)
	return m, Save(t, m, dir, name)
}

// Text prints m in ONNX text syntax (tensors abbreviated as text.Options{} does).
func Text(t testing.TB, m *ir.Model) string {
	t.Helper()
	var b strings.Builder
	if err := text.Print(&b, m, text.Options{}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// Ops counts the nodes of g by "domain.op" (the op alone in the default domain).
func Ops(g *ir.Graph) map[string]int {
	ops := map[string]int{}
	for _, n := range g.Nodes() {
		k := n.OpType
		if n.Domain != "" {
			k = n.Domain + "." + n.OpType
		}
		ops[k]++
	}
	return ops
}

// ErrNoChecker is returned by CheckONNX when python3-onnx is not installed.
var ErrNoChecker = errors.New("python3-onnx not installed")

// CheckONNX runs python3-onnx's checker, and its full check (strict shape inference), on
// the files: a file it rejects, or a checker that fails to run, is an error of t. It
// returns an error wrapping ErrNoChecker, having checked nothing, when python3-onnx is not
// installed: the caller skips or notes it.
func CheckONNX(t testing.TB, files []string) error {
	t.Helper()
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import onnx").Run(); err != nil {
		return fmt.Errorf("%w: %v", ErrNoChecker, err)
	}
	const script = `
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
	switch {
	case err != nil:
		t.Errorf("onnx.checker: %v\n%s", err, out)
	case strings.Contains(string(out), "FAIL"):
		t.Errorf("onnx.checker rejects outputs:\n%s", out)
	default:
		t.Logf("onnx.checker: %s", strings.TrimSpace(string(out)))
	}
	return nil
}

// RunEmulated runs m with its dt computation emulated (Emulate) on the inputs; a model
// Emulate cannot rewrite fails t.
func RunEmulated(t testing.TB, m *ir.Model, dt ir.DataType, inputs map[string]*ndarray.Array, level ort.OptLevel) map[string]*ndarray.Array {
	t.Helper()
	e, err := Emulate(m, dt)
	if err != nil {
		t.Fatal(err)
	}
	return RunModel(t, e, inputs, level)
}
