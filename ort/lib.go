// Package ort runs ONNX models with ONNX Runtime (through
// github.com/yalue/onnxruntime_go), exchanging tensors as ndarray.Arrays.
// qcc uses it as the reference implementation: calibration data and
// accuracy checks come from ORT runs of the original model.
package ort

import (
	"errors"
	"fmt"
	"github.com/qcc-dev/qcc/internal/modroot"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	onnxruntime "github.com/yalue/onnxruntime_go"
)

// EnvLib is the environment variable that names the shared library.
const EnvLib = "QCC_ORT_LIB"

// EnvRequire, set to 1, makes tests fail instead of skip when the library is
// missing, so CI cannot pass by silently skipping every ORT test.
const EnvRequire = "QCC_REQUIRE_ORT"

// cacheRel is where scripts/setup.sh puts the library, under the module root.
const cacheRel = ".cache/onnxruntime/libonnxruntime.so.1"

// LibraryPath picks the ONNX Runtime shared library: flagValue if non-empty,
// else $QCC_ORT_LIB, else the project cache written by scripts/setup.sh.
// Only the cache candidate is checked for existence; an explicit choice is
// returned as given so that loading it reports the real problem.
func LibraryPath(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if p := os.Getenv(EnvLib); p != "" {
		return p, nil
	}
	root, err := modroot.Find()
	if err == nil {
		p := filepath.Join(root, cacheRel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("ort: ONNX Runtime library not found: run scripts/setup.sh (it fetches " +
		cacheRel + "), or set " + EnvLib + " or pass the library path")
}

var (
	initMu   sync.Mutex
	initPath string // library loaded by the successful Init, "" before
)

// Init loads the library and creates the process-wide ORT environment. It is
// safe for concurrent use; after a success, later calls with the same path
// (or "") return nil, and a different path is an error because a process can
// hold only one ORT environment. A failed Init may be retried.
func Init(libPath string) error {
	initMu.Lock()
	defer initMu.Unlock()
	if initPath != "" {
		if libPath == "" || libPath == initPath {
			return nil
		}
		return fmt.Errorf("ort: already initialized with %s, cannot switch to %s", initPath, libPath)
	}
	if libPath == "" {
		return errors.New("ort: Init needs a library path (see LibraryPath)")
	}
	// Arrays are little-endian bytes handed to ORT as is.
	if x := uint16(1); *(*byte)(unsafe.Pointer(&x)) != 1 {
		return errors.New("ort: big-endian hosts are not supported")
	}
	if _, err := os.Stat(libPath); err != nil {
		return fmt.Errorf("ort: library %s: %w (run scripts/setup.sh)", libPath, err)
	}
	onnxruntime.SetSharedLibraryPath(libPath)
	// Warnings are off: torch exports make ORT warn about every unused
	// initializer, which buries test output. Errors still come back as errors.
	if err := onnxruntime.InitializeEnvironment(onnxruntime.WithLogLevelError()); err != nil {
		return fmt.Errorf("ort: loading %s: %w", libPath, err)
	}
	initPath = libPath
	return nil
}

// Available finds the library with LibraryPath("") and initializes it,
// returning its path. Tests use it (through orttest) to decide whether to
// run or skip.
func Available() (string, error) {
	p, err := LibraryPath("")
	if err != nil {
		return "", err
	}
	if err := Init(p); err != nil {
		return "", err
	}
	return p, nil
}

// Version returns the loaded library's version string, e.g. "1.30.0".
func Version() string { return onnxruntime.GetVersion() }
