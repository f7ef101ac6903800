// Package orttest holds test helpers for code that needs ONNX Runtime or the
// shared model corpus.
package orttest

import (
	"github.com/qcc-dev/qcc/internal/corpus"
	"os"
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
func ModelsDir(t testing.TB) string { return corpus.Dir(t) }
