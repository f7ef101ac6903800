package ort_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qcc-dev/qcc/internal/fuzz"
	"github.com/qcc-dev/qcc/internal/modroot"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// TestDeclaredIO: where a model declares every input and output, what the session takes
// from the bytes is what ORT itself reports (through the temporary session it replaces),
// over the corpus, the probe exports and generated models; where it does not, ORT is
// asked.
func TestDeclaredIO(t *testing.T) {
	orttest.RequireLib(t)
	root, err := modroot.Find()
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, glob := range []string{filepath.Join(orttest.ModelsDir(t), "*.onnx"), filepath.Join(root, "testdata", "probes", "*.onnx")} {
		p, _ := filepath.Glob(glob)
		paths = append(paths, p...)
	}
	type model struct {
		name string
		b    []byte
	}
	var models []model
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		models = append(models, model{filepath.Base(p), b})
	}
	// An initializer listed among the inputs (an overridable one) is not an input.
	tiny := ort.TinyModel([]ort.TinyNode{{Op: "Add", Inputs: []string{"x", "w"}, Outputs: []string{"y"}}},
		[]ort.TinyValue{{Name: "x", DType: int32(ndarray.Int64), Dims: []ort.Dim{{Param: "n"}, {Value: 2}}}, {Name: "w", DType: int32(ndarray.Int64), Dims: []ort.Dim{{Value: 2}}}},
		[]ort.TinyValue{{Name: "y", DType: int32(ndarray.Int64), Dims: []ort.Dim{{Param: "n"}, {Value: 2}}}})
	models = append(models, model{"initializer input", ort.WithInitializer(tiny, "w", []int64{1, 2})})
	for s := int64(0); s < 60; s++ {
		b, err := ir.Marshal(fuzz.Gen(s).Model)
		if err != nil {
			t.Fatal(err)
		}
		models = append(models, model{fmt.Sprintf("fuzz seed %d", s), b})
	}
	declared := 0
	for _, m := range models {
		ins, outs, ok := ort.DeclaredIO(m.b)
		if !ok {
			continue
		}
		declared++
		wantIns, wantOuts, err := ort.AskedIO(m.b)
		if err != nil {
			continue // ORT refuses the model; so will the session
		}
		if got, want := fmt.Sprint(ins), fmt.Sprint(wantIns); got != want {
			t.Errorf("%s: declared inputs %s\nORT reports %s", m.name, got, want)
		}
		// Outputs: ORT may know sizes that the model leaves unknown (or gets wrong); the
		// fetches depend on names, types and ranks only.
		same := len(outs) == len(wantOuts)
		for i := 0; same && i < len(outs); i++ {
			o, w := outs[i], wantOuts[i]
			same = o.Name == w.Name && o.DType == w.DType && len(o.Dims) == len(w.Dims)
		}
		if !same {
			t.Errorf("%s: declared outputs %v\nORT reports %v", m.name, outs, wantOuts)
		}
		// The session's Outputs are ORT's.
		s, err := ort.NewSessionFromBytes(m.b, ort.Options{OptLevel: ort.OptDisabled, IntraOpThreads: 1})
		if err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		if got, want := fmt.Sprint(s.Inputs(), s.Outputs()), fmt.Sprint(wantIns, wantOuts); got != want {
			t.Errorf("%s: session reports %s\nORT %s", m.name, got, want)
		}
		s.Close()
	}
	if declared < len(models)/2 {
		t.Errorf("only %d of %d models declare their inputs and outputs", declared, len(models))
	}
	// Undeclared shape and element type: ORT is asked.
	for _, v := range []ort.TinyValue{{Name: "y", DType: int32(ndarray.Float32)}, {Name: "y", Ranked: true}} {
		b := ort.TinyModel([]ort.TinyNode{{Op: "Identity", Inputs: []string{"x"}, Outputs: []string{"y"}}},
			[]ort.TinyValue{{Name: "x", DType: int32(ndarray.Float32), Dims: []ort.Dim{{Param: "n"}, {Value: 3}}}}, []ort.TinyValue{v})
		if ins, outs, ok := ort.DeclaredIO(b); ok {
			t.Errorf("output %+v: declared %v %v", v, ins, outs)
		}
	}
	b := ort.TinyModel([]ort.TinyNode{{Op: "Identity", Inputs: []string{"x"}, Outputs: []string{"y"}}},
		[]ort.TinyValue{{Name: "x", DType: int32(ndarray.Float32), Dims: []ort.Dim{{Param: "n"}, {Value: 3}}}},
		[]ort.TinyValue{{Name: "y", DType: int32(ndarray.Float32), Ranked: true}})
	ins, outs, ok := ort.DeclaredIO(b)
	if got := fmt.Sprint(ins, outs, ok); got != "[{x float32 [-1 3]}] [{y float32 []}] true" {
		t.Errorf("tiny model: %s", got)
	}
}
