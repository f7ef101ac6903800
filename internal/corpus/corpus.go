// Package corpus finds the shared real-model corpus (../shared/models beside the module
// root) for tests, and skips them with a message where it is absent (a fresh clone).
package corpus

import (
	"github.com/qcc-dev/qcc/internal/modroot"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Root returns the module root (the folder holding go.mod).
func Root() (string, error) { return modroot.Find() }

// Dir returns the corpus folder, or skips t when it is absent.
func Dir(t testing.TB) string {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatalf("module root not found: %v", err)
	}
	dir := filepath.Join(root, "..", "shared", "models")
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		t.Skipf("real-model corpus ../shared/models is absent; skipping (%v)", err)
	}
	return dir
}

// Model is one corpus model with its sidecars.
type Model struct {
	Name    string // e.g. "bert.opset13"
	Path    string // the .onnx file
	Inputs  string // NAME.inputs.npz, "" when absent
	Outputs string // NAME.outputs.npz, "" when absent
	Sub     string // subfolder: "", "trained", "invalid" or "large"
}

// Models lists the corpus models in the given subfolders ("" is the top folder), sorted.
func Models(t testing.TB, subs ...string) []Model {
	t.Helper()
	dir := Dir(t)
	if len(subs) == 0 {
		subs = []string{""}
	}
	var out []Model
	for _, sub := range subs {
		files, _ := filepath.Glob(filepath.Join(dir, sub, "*.onnx"))
		sort.Strings(files)
		for _, f := range files {
			name := strings.TrimSuffix(filepath.Base(f), ".onnx")
			m := Model{Name: name, Path: f, Sub: sub}
			base := strings.TrimSuffix(f, ".onnx")
			if _, err := os.Stat(base + ".inputs.npz"); err == nil {
				m.Inputs = base + ".inputs.npz"
			}
			if _, err := os.Stat(base + ".outputs.npz"); err == nil {
				m.Outputs = base + ".outputs.npz"
			}
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		t.Skipf("no models in corpus folders %q", subs)
	}
	return out
}
