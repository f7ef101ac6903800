// Package nvcc compiles CUDA sources with NVIDIA's nvcc for the tests of the CUDA
// emitter and of cuda_kernels: every emitted and hand-written .cu is compiled for
// each architecture in Archs with warnings as errors, on machines without a GPU
// too (nothing is run).
package nvcc

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Archs are the GPU architectures every source is compiled for: sm_80 (A100) and
// sm_90 (H100; needs CUDA 11.8 or later).
var Archs = []string{"80", "90"}

// EnvRequire, set to 1, turns "nvcc is missing" from a skip into a failure (CI sets
// it, with QCC_REQUIRE_ORT).
const EnvRequire = "QCC_REQUIRE_ORT"

// Path returns nvcc's path, or an error when it is not on PATH.
func Path() (string, error) {
	p, err := exec.LookPath("nvcc")
	if err != nil {
		return "", fmt.Errorf("nvcc not found on PATH (scripts/setup.sh installs Debian's nvidia-cuda-toolkit): %w", err)
	}
	return p, nil
}

// Require returns nvcc's path, or skips t (fails it when QCC_REQUIRE_ORT=1).
func Require(t testing.TB) string {
	t.Helper()
	p, err := Path()
	if err != nil {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%v (%s=1 requires it)", err, EnvRequire)
		}
		t.Skipf("skipping CUDA compilation: %v", err)
	}
	return p
}

// Flags are the flags of every compilation: C++17, one -gencode per architecture
// (SASS for each, so ptxas checks the code for the real target; two architectures
// compile in parallel), and every warning of nvcc, the device front end and the host
// compiler an error.
func Flags(archs ...string) []string {
	if len(archs) == 0 {
		archs = Archs
	}
	f := []string{"-std=c++17", "--threads", "2"}
	for _, a := range archs {
		f = append(f, "-gencode", "arch=compute_"+a+",code=sm_"+a)
	}
	return append(f, "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror")
}

// Compile runs nvcc with Flags() followed by args in dir, and returns the time it took.
// The error carries nvcc's output.
func Compile(ctx context.Context, dir string, args ...string) (time.Duration, error) {
	p, err := Path()
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, p, append(Flags(), args...)...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("nvcc %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return d, nil
}
