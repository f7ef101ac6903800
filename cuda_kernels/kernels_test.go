package cudakernels_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/codegen/cuda/nvcc"
	cudakernels "github.com/qcc-dev/qcc/cuda_kernels"
	_ "github.com/qcc-dev/qcc/internal/update"
)

func headers(t *testing.T) []string {
	t.Helper()
	names, err := fs.Glob(cudakernels.Headers, "qcc/*.cuh")
	if err != nil {
		t.Fatal(err)
	}
	onDisk, _ := filepath.Glob(filepath.Join("qcc", "*.cuh"))
	sort.Strings(names)
	if len(names) == 0 || len(names) != len(onDisk) {
		t.Fatalf("embedded headers %v, on disk %v", names, onDisk)
	}
	return names
}

// TestSelfTest compiles selftest.cu, which includes every header and instantiates every
// kernel in float and half, for sm_80 and sm_90 with warnings as errors, and links it
// (it runs on a GPU only: scripts/cuda-gpu-check.sh).
func TestSelfTest(t *testing.T) {
	nvcc.Require(t)
	out := filepath.Join(t.TempDir(), "selftest")
	d, err := nvcc.Compile(context.Background(), ".", "-I", ".", "-o", out, "selftest.cu")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("selftest.cu: %.1fs", d.Seconds())
}

// TestHeadersStandAlone compiles each header alone, so that each includes what it uses.
func TestHeadersStandAlone(t *testing.T) {
	nvcc.Require(t)
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers(t) {
		h := h
		t.Run(filepath.Base(h), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			src := "#include \"" + h + "\"\n#include \"" + h + "\"  // twice: #pragma once\n"
			if err := os.WriteFile(filepath.Join(dir, "tu.cu"), []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := nvcc.Compile(context.Background(), dir, "-I", root, "-c", "tu.cu", "-o", "tu.o"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestStyle holds the hand-written sources to the layout the generated code uses:
// ASCII, no tabs, no trailing spaces, a final newline, lines of at most 120 columns,
// #pragma once in headers.
func TestStyle(t *testing.T) {
	files := append(headers(t), "selftest.cu")
	for _, f := range files {
		b, err := os.ReadFile(filepath.FromSlash(f))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 || b[len(b)-1] != '\n' {
			t.Errorf("%s: no final newline", f)
		}
		if strings.HasSuffix(f, ".cuh") && !strings.Contains(string(b), "\n#pragma once\n") {
			t.Errorf("%s: no #pragma once", f)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if strings.ContainsAny(line, "\t") || strings.TrimRight(line, " ") != line || len(line) > 120 {
				t.Errorf("%s:%d: tab, trailing space or longer than 120 columns", f, i+1)
			}
			for _, c := range []byte(line) {
				if c > 0x7e {
					t.Errorf("%s:%d: non-ASCII", f, i+1)
					break
				}
			}
		}
	}
}
