package calib

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort"
)

// ErrNoRuntime is wrapped by CollectModel's error when ONNX Runtime cannot be loaded.
var ErrNoRuntime = errors.New("calibration needs ONNX Runtime")

// CollectModel is Collect for a model in memory, as a pass holds it: it loads ONNX
// Runtime, opens the data (LoadData's spec and batch), saves m to a temporary file and
// collects the tensors' statistics there (opts as for Collect). The qdq and precision
// passes calibrate through it.
func CollectModel(m *ir.Model, tensors []string, data string, batch int, opts Options) (*Stats, error) {
	lib, err := ort.LibraryPath("")
	if err == nil {
		err = ort.Init(lib)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoRuntime, err)
	}
	src, err := LoadData(data, m, batch)
	if err != nil {
		return nil, err
	}
	src = EachSelector(src, opts.EachValue)
	dir, err := os.MkdirTemp("", "qcc-calib-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "model.onnx")
	// Tensor data goes to model.onnx.data: the graph ORT's binding rewrites (it adds the
	// outputs) stays small, and ORT reads the weights once from the file
	// (session.model_external_initializers_file_folder_path), instead of a whole-model
	// buffer copied on each of Go's and ORT's sides for every tensor group.
	if err := ir.Save(m, path, ir.SaveOptions{External: ir.ExternalAlways}); err != nil {
		return nil, fmt.Errorf("saving the model for calibration: %w", err)
	}
	return Collect(path, tensors, src, opts)
}

// MemOption is the calib-mem option of the passes that calibrate, in MiB.
var MemOption = struct{ Name, Default, Doc string }{"calib-mem", "256",
	"MiB of collected tensors per calibration batch: more are collected in several ORT passes over the data, so that memory stays ORT's model plus this (0: one pass, no bound)"}

// MaxBytesOf converts a calib-mem value (MiB, 0 for no bound) to Options.MaxBytes.
func MaxBytesOf(mib string) int64 {
	v, err := strconv.ParseInt(mib, 10, 64)
	if err != nil || v <= 0 {
		return -1
	}
	return v << 20
}
