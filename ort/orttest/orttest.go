// Package orttest holds test helpers for code that needs ONNX Runtime or the
// shared model corpus.
package orttest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qcc-dev/qcc/ort"
)

// RequireLib initializes ONNX Runtime and returns the library path. If the
// library is missing it skips the test, or fails it when QCC_REQUIRE_ORT=1
// (CI sets that, so a broken install cannot pass by skipping).
func RequireLib(t testing.TB) string {
	t.Helper()
	p, err := ort.Available()
	if err != nil {
		if os.Getenv(ort.EnvRequire) == "1" {
			t.Fatalf("ONNX Runtime required (%s=1) but unavailable: %v", ort.EnvRequire, err)
		}
		t.Skipf("ONNX Runtime unavailable, skipping: %v", err)
	}
	return p
}

// ModelsDir returns the shared model corpus, ../shared/models beside the
// module root, or skips the test when it is absent.
func ModelsDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("no go.mod above the working directory; cannot locate ../shared/models")
		}
		dir = parent
	}
	models := filepath.Join(filepath.Dir(dir), "shared", "models")
	if _, err := os.Stat(models); err != nil {
		t.Skipf("model corpus ../shared/models (beside the repo root) not found: %v", err)
	}
	return models
}
