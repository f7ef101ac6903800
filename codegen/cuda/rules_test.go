package cuda

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/codegen/cuda/nvcc"
)

var (
	nan = math.NaN()
	inf = math.Inf(1)
)

// matchCases decide one output element: the GPU check (check.cuh's Matches) and the
// emulation oracle (compareOutputs) must both answer match.
var matchCases = []struct {
	got, want, atol, rtol float64
	match                 bool
}{
	{nan, nan, 1e-4, 1e-4, true}, // a row whose every key is masked out is NaN in the model
	{nan, 0.5, 1e-4, 1e-4, false},
	{0.5, nan, 1e-4, 1e-4, false},
	{-inf, -inf, 1e-4, 1e-4, true},
	{inf, -inf, 1e-4, 1e-4, false},
	{1e30, inf, 1e-4, 1e-4, false},
	{inf, 1e30, 1e-4, 1e-4, false},
	{1, 1.00015, 1e-4, 1e-4, true},
	{1, 1.0003, 1e-4, 1e-4, false},
}

// rangeCases decide whether a float block's case can run in a narrower type: check.cuh's
// Representable (else check.cu reports the case skipped) and the oracle's representable.
var rangeCases = []struct {
	x    float64
	elem int
	ok   bool
}{
	{65504, elemHalf, true},
	{65519, elemHalf, true},                   // rounds to 65504
	{65520, elemHalf, false},                  // rounds to inf
	{-3.4028234663852886e38, elemHalf, false}, // a float model's mask
	{-inf, elemHalf, true},
	{nan, elemHalf, true},
	{-1e38, elemBF16, true},
	{-3.4028234663852886e38, elemBF16, false}, // rounds to -inf
	{-3.4028234663852886e38, elemFloat, true},
}

// TestMatchRules holds the emulation oracle and the GPU harness to the same rules. The
// harness side runs on the CPU: the program calls no CUDA API.
func TestMatchRules(t *testing.T) {
	for _, c := range matchCases {
		in := &instance{Elem: elemFloat}
		in.Tol[elemFloat] = [2]float64{c.atol, c.rtol}
		e := compareOutputs(in, map[string][]float64{"y": {c.got}}, map[string][]float64{"y": {c.want}})["y"]
		if got := e.bad == 0; got != c.match {
			t.Errorf("oracle: %g against %g (atol %g, rtol %g): match %v, want %v", c.got, c.want, c.atol, c.rtol, got, c.match)
		}
	}
	for _, c := range rangeCases {
		in := &instance{Kernel: &kernel{Params: []param{{Name: "x", Elem: "T"}}}}
		if got := representable(in, map[string][]float64{"x": {c.x}}, c.elem); got != c.ok {
			t.Errorf("oracle: %g in %s: representable %v, want %v", c.x, elemNames[c.elem], got, c.ok)
		}
	}

	nvcc.Require(t)
	lit := func(x float64) string {
		switch {
		case math.IsNaN(x):
			return "nan"
		case math.IsInf(x, 1):
			return "inf"
		case math.IsInf(x, -1):
			return "-inf"
		}
		return fmt.Sprintf("%.17g", x)
	}
	ctype := map[int]string{elemFloat: "float", elemHalf: "__half", elemBF16: "__nv_bfloat16"}
	var b strings.Builder
	b.WriteString(`#include <cstdio>
#include <limits>
#include "qcc/check.cuh"
int main() {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  (void)nan;
  (void)inf;
`)
	for i, c := range matchCases {
		fmt.Fprintf(&b, "  std::printf(\"match %d %%d\\n\", qcc::check::Matches(%s, %s, %s, %s));\n", i, lit(c.got), lit(c.want), lit(c.atol), lit(c.rtol))
	}
	for i, c := range rangeCases {
		fmt.Fprintf(&b, "  std::printf(\"range %d %%d\\n\", qcc::check::Representable<%s>(%s));\n", i, ctype[c.elem], lit(c.x))
	}
	b.WriteString("  return 0;\n}\n")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.cu"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("../../cuda_kernels")
	if err != nil {
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
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var kind string
		var i, got int
		if _, err := fmt.Sscanf(line, "%s %d %d", &kind, &i, &got); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if kind == "match" {
			c := matchCases[i]
			if (got == 1) != c.match {
				t.Errorf("check.cuh: %g against %g (atol %g, rtol %g): match %v, want %v", c.got, c.want, c.atol, c.rtol, got == 1, c.match)
			}
		} else {
			c := rangeCases[i]
			if (got == 1) != c.ok {
				t.Errorf("check.cuh: %g in %s: representable %v, want %v", c.x, elemNames[c.elem], got == 1, c.ok)
			}
		}
	}
}
