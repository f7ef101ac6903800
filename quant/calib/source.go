package calib

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
)

// Source yields calibration batches: one array per model input, keyed by input name.
type Source interface {
	// Len is the number of batches.
	Len() int
	// Batch returns batch i (0 <= i < Len()). The arrays must not be modified.
	Batch(i int) (map[string]*ndarray.Array, error)
}

// DefaultBatch is the batch size LoadData uses for .npz data when batch <= 0 and the
// model's batch dimension is not fixed.
const DefaultBatch = 8

// LoadData opens calibration data for model m:
//
//   - a path ending in .npz whose keys include every model input (other keys, such as
//     labels, are ignored). The arrays are split along axis 0 into batches of batch rows
//     (DefaultBatch when batch <= 0); the last batch may be smaller.
//   - a folder in the ONNX test-data layout: input_0.pb, input_1.pb, ... directly in it
//     (one data set) or in test_data_set_*/ subfolders (one data set each). Each file is
//     a TensorProto; it is matched to the model input of its name, or, when unnamed or
//     named otherwise, to the model input of its index. With batch <= 0 each data set is
//     one batch; otherwise each set is split along axis 0 into batches of batch rows.
//   - "random", "random:N" or "random:N:SEED": N (default DefaultRandomBatches) batches
//     drawn from the model's input types (see RandomSource), seed 0 by default.
//
// When the model fixes its batch dimension, batch <= 0 takes that size, another size is
// an error, and a last batch that would be smaller is dropped.
func LoadData(spec string, m *ir.Model, batch int) (Source, error) {
	if m == nil || m.Graph == nil {
		return nil, fmt.Errorf("calib: LoadData needs a model")
	}
	inputs := modelInputs(m)
	if len(inputs) == 0 {
		return nil, fmt.Errorf("calib: the model has no inputs to feed")
	}
	fixed, err := fixedBatch(inputs)
	if err != nil {
		return nil, err
	}
	if fixed > 0 {
		if batch > 0 && int64(batch) != fixed {
			return nil, fmt.Errorf("calib: the model's batch dimension is fixed at %d; cannot use batch size %d", fixed, batch)
		}
		batch = int(fixed)
	}
	if spec == "random" || strings.HasPrefix(spec, "random:") {
		return parseRandom(spec, m, batch)
	}
	st, err := os.Stat(spec)
	if err != nil {
		return nil, fmt.Errorf("calib: calibration data: %w (want an .npz file, a folder of TensorProto .pb files, or random[:N[:SEED]])", err)
	}
	var sets []map[string]*ndarray.Array
	setBatch := batch
	switch {
	case st.IsDir():
		if sets, err = readPBFolder(spec, inputs); err != nil {
			return nil, err
		}
	case strings.HasSuffix(strings.ToLower(spec), ".npz"):
		arrays, err := npz.Read(spec)
		if err != nil {
			return nil, fmt.Errorf("calib: %w", err)
		}
		sets = []map[string]*ndarray.Array{arrays}
		if setBatch <= 0 {
			setBatch = DefaultBatch
		}
	default:
		return nil, fmt.Errorf("calib: calibration data %s: want an .npz file, a folder of TensorProto .pb files, or random[:N[:SEED]]", spec)
	}
	src := &arraySource{}
	for i, set := range sets {
		where := spec
		if len(sets) > 1 {
			where = fmt.Sprintf("%s (data set %d)", spec, i)
		}
		rows, err := checkSet(where, set, inputs)
		if err != nil {
			return nil, err
		}
		chunk := setBatch
		if chunk <= 0 {
			chunk = int(rows)
		}
		feed := map[string]*ndarray.Array{}
		for _, in := range inputs {
			feed[in.Name] = set[in.Name]
		}
		for lo := int64(0); lo < rows; lo += int64(chunk) {
			hi := min(lo+int64(chunk), rows)
			if fixed > 0 && hi-lo != fixed {
				break
			}
			src.batches = append(src.batches, batchRef{feed, lo, hi})
		}
	}
	if len(src.batches) == 0 {
		return nil, fmt.Errorf("calib: %s holds no complete batch", spec)
	}
	return src, nil
}

// modelInputs returns the graph inputs that must be fed (initializer-backed inputs of
// older models excluded).
func modelInputs(m *ir.Model) []*ir.Value {
	var out []*ir.Value
	for _, v := range m.Graph.Inputs {
		if !v.IsConst() {
			out = append(out, v)
		}
	}
	return out
}

// fixedBatch returns the model's fixed batch size (the known dim 0 of its inputs), or 0.
func fixedBatch(inputs []*ir.Value) (int64, error) {
	var fixed int64
	var first string
	for _, in := range inputs {
		if in.Type == nil || len(in.Type.Shape) == 0 || !in.Type.Shape[0].Known {
			continue
		}
		d := in.Type.Shape[0].Value
		if fixed != 0 && d != fixed {
			return 0, fmt.Errorf("calib: inputs %q and %q disagree on the batch size (%d, %d)", first, in.Name, fixed, d)
		}
		if fixed == 0 {
			fixed, first = d, in.Name
		}
	}
	return fixed, nil
}

// checkSet checks that a data set has every input, with the model's types and fixed
// dimensions and a common dim 0, and returns that dim.
func checkSet(where string, set map[string]*ndarray.Array, inputs []*ir.Value) (int64, error) {
	var missing []string
	for _, in := range inputs {
		if set[in.Name] == nil {
			missing = append(missing, in.Name)
		}
	}
	if len(missing) > 0 {
		have := make([]string, 0, len(set))
		for k := range set {
			have = append(have, k)
		}
		sort.Strings(have)
		return 0, fmt.Errorf("calib: %s lacks model inputs %s (it has %s)", where, strings.Join(missing, ", "), strings.Join(have, ", "))
	}
	rows := int64(-1)
	for _, in := range inputs {
		a := set[in.Name]
		if err := a.Validate(); err != nil {
			return 0, fmt.Errorf("calib: %s: %q: %w", where, in.Name, err)
		}
		if len(a.Shape) == 0 {
			return 0, fmt.Errorf("calib: %s: %q is a scalar; batches are split along axis 0", where, in.Name)
		}
		if t := in.Type; t != nil {
			if want := ndarray.DType(t.DType); t.DType != ir.Undefined && a.DType != want {
				return 0, fmt.Errorf("calib: %s: %q is %v, the model wants %v", where, in.Name, a.DType, want)
			}
			if t.HasShape {
				if len(t.Shape) != len(a.Shape) {
					return 0, fmt.Errorf("calib: %s: %q has shape %v, the model wants %v", where, in.Name, a.Shape, t.Shape)
				}
				for i := 1; i < len(t.Shape); i++ {
					if d := t.Shape[i]; d.Known && d.Value != a.Shape[i] {
						return 0, fmt.Errorf("calib: %s: %q has shape %v, the model wants %v", where, in.Name, a.Shape, t.Shape)
					}
				}
			}
		}
		if rows >= 0 && a.Shape[0] != rows {
			return 0, fmt.Errorf("calib: %s: inputs disagree on dim 0 (%q has %d rows, others %d)", where, in.Name, a.Shape[0], rows)
		}
		rows = a.Shape[0]
	}
	return rows, nil
}

// readPBFolder reads ONNX test data: input_*.pb in dir, or in dir/test_data_set_*/.
func readPBFolder(dir string, inputs []*ir.Value) ([]map[string]*ndarray.Array, error) {
	direct, err := pbFiles(dir)
	if err != nil {
		return nil, err
	}
	var setDirs []string
	if len(direct) == 0 {
		matches, _ := filepath.Glob(filepath.Join(dir, "test_data_set_*"))
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.IsDir() {
				setDirs = append(setDirs, m)
			}
		}
		sortNumeric(setDirs, "test_data_set_")
		if len(setDirs) == 0 {
			return nil, fmt.Errorf("calib: %s has neither input_*.pb files nor test_data_set_*/ folders", dir)
		}
	} else {
		setDirs = []string{dir}
	}
	var sets []map[string]*ndarray.Array
	for _, sd := range setDirs {
		files := direct
		if sd != dir {
			if files, err = pbFiles(sd); err != nil {
				return nil, err
			}
			if len(files) == 0 {
				return nil, fmt.Errorf("calib: %s has no input_*.pb files", sd)
			}
		}
		set := map[string]*ndarray.Array{}
		for idx, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("calib: %w", err)
			}
			name, a, err := DecodeTensorProto(b)
			if err != nil {
				return nil, fmt.Errorf("calib: %s: %w", f, err)
			}
			if !hasInput(inputs, name) {
				if idx >= len(inputs) {
					return nil, fmt.Errorf("calib: %s: tensor %q names no model input, and the model has only %d inputs", f, name, len(inputs))
				}
				name = inputs[idx].Name
			}
			if set[name] != nil {
				return nil, fmt.Errorf("calib: %s: a second tensor for input %q", f, name)
			}
			set[name] = a
		}
		sets = append(sets, set)
	}
	return sets, nil
}

func hasInput(inputs []*ir.Value, name string) bool {
	for _, in := range inputs {
		if in.Name == name {
			return true
		}
	}
	return false
}

// pbFiles lists dir/input_<k>.pb in numeric order; the indices must be 0..n-1.
func pbFiles(dir string) ([]string, error) {
	files, _ := filepath.Glob(filepath.Join(dir, "input_*.pb"))
	sortNumeric(files, "input_")
	for i, f := range files {
		k, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "input_"), ".pb"))
		if err != nil || k != i {
			return nil, fmt.Errorf("calib: %s: expected input_%d.pb (files must be numbered input_0.pb, input_1.pb, ...)", f, i)
		}
	}
	return files, nil
}

// sortNumeric sorts paths by the number after prefix in their base names (non-numbers
// last, by name).
func sortNumeric(paths []string, prefix string) {
	num := func(p string) (int, bool) {
		s := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), prefix), ".pb")
		k, err := strconv.Atoi(s)
		return k, err == nil
	}
	sort.SliceStable(paths, func(i, j int) bool {
		a, aok := num(paths[i])
		b, bok := num(paths[j])
		if aok != bok {
			return aok
		}
		if aok && a != b {
			return a < b
		}
		return paths[i] < paths[j]
	})
}

// arraySource serves row ranges of in-memory data sets.
type arraySource struct{ batches []batchRef }

type batchRef struct {
	set    map[string]*ndarray.Array
	lo, hi int64
}

func (s *arraySource) Len() int { return len(s.batches) }

func (s *arraySource) Batch(i int) (map[string]*ndarray.Array, error) {
	if i < 0 || i >= len(s.batches) {
		return nil, fmt.Errorf("calib: batch %d out of range [0, %d)", i, len(s.batches))
	}
	r := s.batches[i]
	out := make(map[string]*ndarray.Array, len(r.set))
	for name, a := range r.set {
		out[name] = sliceRows(a, r.lo, r.hi)
	}
	return out, nil
}

// sliceRows returns rows [lo, hi) of a along axis 0, sharing a's bytes.
func sliceRows(a *ndarray.Array, lo, hi int64) *ndarray.Array {
	if lo == 0 && hi == a.Shape[0] {
		return a
	}
	rowBytes := int64(len(a.Data)) / a.Shape[0]
	shape := append([]int64{hi - lo}, a.Shape[1:]...)
	return &ndarray.Array{DType: a.DType, Shape: shape, Data: a.Data[lo*rowBytes : hi*rowBytes : hi*rowBytes]}
}
