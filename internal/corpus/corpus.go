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

// Required reports whether the corpus must be there (QCC_REQUIRE_CORPUS=1, as
// scripts/test.sh sets it): then a test that needs it fails instead of skipping.
func Required() bool { return os.Getenv("QCC_REQUIRE_CORPUS") == "1" }

// Skip skips t, or fails it when the corpus is required.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf(format+" (QCC_REQUIRE_CORPUS=1)", args...)
	}
	t.Skipf(format, args...)
}

// Dir returns the corpus folder, or skips t when it is absent (fails it when required).
func Dir(t testing.TB) string {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatalf("module root not found: %v", err)
	}
	dir := filepath.Join(root, "..", "shared", "models")
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		Skip(t, "real-model corpus ../shared/models is absent (%v)", err)
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
		Skip(t, "no models in corpus folders %q", subs)
	}
	return out
}
