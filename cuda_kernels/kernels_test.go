package cudakernels_test

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
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

// TestCheckHostRules runs check.cuh's host-side rules on the CPU (no GPU needed: the
// program calls no CUDA API). Matches decides each element of every GPU check: a NaN
// matches only a NaN (a row whose every key is masked out is NaN in the model);
// Representable decides when a float model's case cannot run in half or bfloat16
// (its -3.4e38 mask overflows), which check.cu then reports as skipped.
func TestCheckHostRules(t *testing.T) {
	nvcc.Require(t)
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := `#include <cstdio>
#include <limits>
#include "qcc/check.cuh"
using qcc::check::Matches;
using qcc::check::Representable;
static int bad = 0;
static void expect(bool got, bool want, const char* what) {
  if (got != want) {
    std::printf("%s: got %d, want %d\n", what, got, want);
    ++bad;
  }
}
int main() {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  expect(Matches(nan, nan, 1e-4, 1e-4), true, "NaN vs NaN");
  expect(Matches(nan, -nan, 1e-4, 1e-4), true, "NaN vs -NaN");
  expect(Matches(nan, 0.5, 1e-4, 1e-4), false, "NaN vs 0.5");
  expect(Matches(0.5, nan, 1e-4, 1e-4), false, "0.5 vs NaN");
  expect(Matches(-inf, -inf, 1e-4, 1e-4), true, "-inf vs -inf");
  expect(Matches(inf, -inf, 1e-4, 1e-4), false, "inf vs -inf");
  expect(Matches(1e30, inf, 1e-4, 1e-4), false, "1e30 vs inf");
  expect(Matches(1.0, 1.00015, 1e-4, 1e-4), true, "within atol + rtol");
  expect(Matches(1.0, 1.0003, 1e-4, 1e-4), false, "beyond atol + rtol");
  expect(Representable<__half>(65504), true, "half 65504");
  expect(Representable<__half>(65519), true, "half 65519 (rounds to 65504)");
  expect(Representable<__half>(65520), false, "half 65520 (rounds to inf)");
  expect(Representable<__half>(-3.4028234663852886e38), false, "half -FLT_MAX");
  expect(Representable<__half>(-inf), true, "half -inf");
  expect(Representable<__half>(nan), true, "half NaN");
  expect(Representable<__nv_bfloat16>(-1e38), true, "bfloat16 -1e38");
  expect(Representable<__nv_bfloat16>(-3.4028234663852886e38), false, "bfloat16 -FLT_MAX (rounds to -inf)");
  expect(Representable<float>(-3.4028234663852886e38), true, "float -FLT_MAX");
  std::printf("%d wrong\n", bad);
  return bad != 0;
}
`
	if err := os.WriteFile(filepath.Join(dir, "rules.cu"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "rules")
	if _, err := nvcc.Compile(context.Background(), dir, "-I", root, "-o", bin, "rules.cu"); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("%s", out)
}
