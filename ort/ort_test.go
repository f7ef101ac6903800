package ort_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

const tol = 1e-4

func TestLibraryPath(t *testing.T) {
	if p, err := ort.LibraryPath("/x/lib.so"); err != nil || p != "/x/lib.so" {
		t.Errorf("flag: %q, %v", p, err)
	}
	t.Setenv(ort.EnvLib, "/env/lib.so")
	if p, err := ort.LibraryPath(""); err != nil || p != "/env/lib.so" {
		t.Errorf("env: %q, %v", p, err)
	}
	t.Setenv(ort.EnvLib, "")
	if p, err := ort.LibraryPath(""); err == nil {
		if !strings.HasSuffix(p, filepath.Join(".cache", "onnxruntime", "libonnxruntime.so.1")) {
			t.Errorf("cache: %q", p)
		}
	}
	// Outside any module there is no cache: the error must say what to do.
	t.Chdir(t.TempDir())
	if _, err := ort.LibraryPath(""); err == nil || !strings.Contains(err.Error(), "scripts/setup.sh") {
		t.Errorf("no library: err = %v", err)
	}
}

func TestInit(t *testing.T) {
	lib := orttest.RequireLib(t)
	if err := ort.Init(lib); err != nil {
		t.Errorf("second Init: %v", err)
	}
	if err := ort.Init(""); err != nil {
		t.Errorf("Init(\"\") after success: %v", err)
	}
	if err := ort.Init(lib + ".other"); err == nil {
		t.Error("Init with another library succeeded")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := ort.Init(lib); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if v := ort.Version(); !strings.HasPrefix(v, "1.") {
		t.Errorf("Version() = %q", v)
	}
}

func TestBERTInfo(t *testing.T) {
	orttest.RequireLib(t)
	s, err := ort.NewSession(filepath.Join(orttest.ModelsDir(t), "bert.opset13.onnx"), ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got []string
	for _, io := range append(s.Inputs(), s.Outputs()...) {
		got = append(got, io.Name+":"+io.DType.String()+":"+dimsString(io.Dims))
	}
	want := "input_ids:int64:[-1 -1] attention_mask:int64:[-1 -1] token_type_ids:int64:[-1 -1] " +
		"last_hidden_state:float32:[-1 -1 64] pooler_output:float32:[-1 64]"
	if strings.Join(got, " ") != want {
		t.Errorf("io = %s\nwant %s", strings.Join(got, " "), want)
	}
}

func dimsString(d []int64) string { return fmt.Sprint(d) }

// TestCorpus runs every top-level model with reference sidecars and compares
// with the PyTorch outputs.
func TestCorpus(t *testing.T) {
	orttest.RequireLib(t)
	dir := orttest.ModelsDir(t)
	paths, err := filepath.Glob(filepath.Join(dir, "*.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range paths {
		stem := strings.TrimSuffix(p, ".onnx")
		if _, err := os.Stat(stem + ".inputs.npz"); err != nil {
			continue
		}
		if _, err := os.Stat(stem + ".outputs.npz"); err != nil {
			continue
		}
		n++
		t.Run(filepath.Base(stem), func(t *testing.T) {
			runAndCompare(t, p, ort.Options{})
		})
	}
	if n == 0 {
		t.Fatalf("no model with sidecars in %s", dir)
	}
}

func runAndCompare(t *testing.T, model string, opts ort.Options) {
	t.Helper()
	stem := strings.TrimSuffix(model, ".onnx")
	in, err := npz.Read(stem + ".inputs.npz")
	if err != nil {
		t.Fatal(err)
	}
	want, err := npz.Read(stem + ".outputs.npz")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSession(model, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	compare(t, got, want)
}

func compare(t *testing.T, got, want map[string]*ndarray.Array) {
	t.Helper()
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("output %q missing", name)
			continue
		}
		d, err := ndarray.MaxAbsDiff(g, w)
		if err != nil || d > tol {
			t.Errorf("output %q: max abs diff %g, %v", name, d, err)
		}
	}
}

func TestOptionsAndConcurrency(t *testing.T) {
	orttest.RequireLib(t)
	model := filepath.Join(orttest.ModelsDir(t), "bert.opset17.onnx")
	runAndCompare(t, model, ort.Options{OptLevel: ort.OptAll, IntraOpThreads: 1})

	s, err := ort.NewSession(model, ort.Options{OptLevel: ort.OptExtended, IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	in, _ := npz.Read(strings.TrimSuffix(model, ".onnx") + ".inputs.npz")
	want, _ := npz.Read(strings.TrimSuffix(model, ".onnx") + ".outputs.npz")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			got, err := s.Run(in)
			if err != nil {
				t.Error(err)
				return
			}
			compare(t, got, want)
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Run(in); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Run after Close: %v", err)
	}
	if _, err := ort.NewSession(model, ort.Options{OptLevel: 9}); err == nil {
		t.Error("bad OptLevel accepted")
	}
}

func dyn(name string, dt ndarray.DType) ort.TinyValue {
	return ort.TinyValue{Name: name, DType: int32(dt), Dims: []ort.Dim{{Param: "n"}, {Value: 3}}}
}

// TestDTypes round-trips every supported element type through Identity,
// including the 2-byte float types the binding cannot return directly.
func TestDTypes(t *testing.T) {
	orttest.RequireLib(t)
	for _, dt := range []ndarray.DType{ndarray.Float32, ndarray.Float64, ndarray.Float16, ndarray.BFloat16,
		ndarray.Int8, ndarray.Uint8, ndarray.Int16, ndarray.Uint16, ndarray.Int32, ndarray.Uint32,
		ndarray.Int64, ndarray.Uint64, ndarray.Bool} {
		t.Run(dt.String(), func(t *testing.T) {
			model := ort.TinyModel([]ort.TinyNode{{Op: "Identity", Inputs: []string{"x"}, Outputs: []string{"y"}}},
				[]ort.TinyValue{dyn("x", dt)}, []ort.TinyValue{dyn("y", dt)})
			s, err := ort.NewSessionFromBytes(model, ort.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if o := s.Outputs(); len(o) != 1 || o[0].DType != dt || dimsString(o[0].Dims) != "[-1 3]" {
				t.Errorf("Outputs() = %+v", o)
			}
			for _, rows := range []int64{2, 0} {
				x := ndarray.New(dt, []int64{rows, 3})
				for i := range x.Data {
					x.Data[i] = byte(i*37 + 5)
				}
				if dt == ndarray.Bool {
					for i := range x.Data {
						x.Data[i] &= 1
					}
				}
				if dt == ndarray.Float16 || dt == ndarray.BFloat16 {
					for i := 1; i < len(x.Data); i += 2 {
						x.Data[i] &= 0x7b // keep exponents finite: NaN payloads need not survive
					}
				}
				out, err := s.Run(map[string]*ndarray.Array{"x": x})
				if err != nil {
					t.Fatal(err)
				}
				y := out["y"]
				if y == nil || y.DType != dt || !ndarray.SameShape(y.Shape, x.Shape) || string(y.Data) != string(x.Data) {
					t.Errorf("rows=%d: y = %v %x, want %v %x", rows, y, y.Data, x, x.Data)
				}
			}
		})
	}
}

func TestScalarAndUnrankedOutputs(t *testing.T) {
	orttest.RequireLib(t)
	for _, dt := range []ndarray.DType{ndarray.Float32, ndarray.Int64, ndarray.Bool} {
		scalar := ort.TinyValue{Name: "x", DType: int32(dt), Ranked: true}
		model := ort.TinyModel([]ort.TinyNode{{Op: "Identity", Inputs: []string{"x"}, Outputs: []string{"y"}}},
			[]ort.TinyValue{scalar}, []ort.TinyValue{{Name: "y", DType: int32(dt), Ranked: true}})
		s, err := ort.NewSessionFromBytes(model, ort.Options{})
		if err != nil {
			t.Fatal(err)
		}
		x := ndarray.New(dt, nil)
		x.Data[0] = 1
		out, err := s.Run(map[string]*ndarray.Array{"x": x})
		s.Close()
		if err != nil {
			t.Fatalf("%v scalar: %v", dt, err)
		}
		if y := out["y"]; y.DType != dt || len(y.Shape) != 0 || string(y.Data) != string(x.Data) {
			t.Errorf("%v scalar: y = %v %x", dt, y, y.Data)
		}
	}
	// Output without a declared shape, and a float16 one of rank 0.
	model := ort.TinyModel([]ort.TinyNode{
		{Op: "Identity", Inputs: []string{"x"}, Outputs: []string{"y"}},
		{Op: "ReduceMax", Inputs: []string{"h"}, Outputs: []string{"m"}},
	}, []ort.TinyValue{dyn("x", ndarray.Int32), dyn("h", ndarray.Float16)},
		[]ort.TinyValue{{Name: "y", DType: int32(ndarray.Int32)}, {Name: "m", DType: int32(ndarray.Float16), Ranked: true}})
	s, err := ort.NewSessionFromBytes(model, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := ndarray.FromInt32([]int64{2, 3}, []int32{1, 2, 3, 4, 5, 6})
	h := ndarray.FromFloat16([]int64{1, 3}, []float32{0.5, -3, 2.25})
	out, err := s.Run(map[string]*ndarray.Array{"x": x, "h": h})
	if err != nil {
		t.Fatal(err)
	}
	if y := out["y"]; y.String() != "int32[2 3]" || string(y.Data) != string(x.Data) {
		t.Errorf("unranked: y = %v", y)
	}
	// ReduceMax keeps dims by default: [1 1].
	if m := out["m"]; m.String() != "float16[1 1]" || m.Float32s()[0] != 2.25 {
		t.Errorf("float16 reduce: m = %v %v", m, m.Float32s())
	}
}

func TestExtraOutputs(t *testing.T) {
	orttest.RequireLib(t)
	model := ort.TinyModel([]ort.TinyNode{
		{Op: "Neg", Inputs: []string{"x"}, Outputs: []string{"t"}},
		{Op: "Abs", Inputs: []string{"t"}, Outputs: []string{"y"}},
	}, []ort.TinyValue{dyn("x", ndarray.Float32)}, []ort.TinyValue{dyn("y", ndarray.Float32)})
	s, err := ort.NewSessionFromBytes(model, ort.Options{ExtraOutputs: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if o := s.Outputs(); len(o) != 2 || o[1].Name != "t" || o[1].DType != ndarray.Float32 {
		t.Errorf("Outputs() = %+v", o)
	}
	x := ndarray.FromFloat32([]int64{1, 3}, []float32{1, -2, 3})
	out, err := s.Run(map[string]*ndarray.Array{"x": x})
	if err != nil {
		t.Fatal(err)
	}
	if got := out["t"].Float32s(); got[0] != -1 || got[1] != 2 || got[2] != -3 {
		t.Errorf("t = %v", got)
	}
	if got := out["y"].Float32s(); got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Errorf("y = %v", got)
	}
	if _, err := ort.NewSessionFromBytes(model, ort.Options{ExtraOutputs: []string{"nope"}}); err == nil {
		t.Error("unknown extra output accepted")
	}
}

func TestErrors(t *testing.T) {
	orttest.RequireLib(t)
	model := ort.TinyModel([]ort.TinyNode{{Op: "Identity", Inputs: []string{"x"}, Outputs: []string{"y"}}},
		[]ort.TinyValue{dyn("x", ndarray.Float32)}, []ort.TinyValue{dyn("y", ndarray.Float32)})
	s, err := ort.NewSessionFromBytes(model, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := ndarray.FromFloat32([]int64{1, 3}, []float32{1, 2, 3})
	tests := []struct {
		name string
		in   map[string]*ndarray.Array
		want string
	}{
		{"missing", map[string]*ndarray.Array{}, "missing inputs x"},
		{"unknown", map[string]*ndarray.Array{"x": x, "z": x}, "no inputs named z"},
		{"dtype", map[string]*ndarray.Array{"x": ndarray.FromInt64([]int64{1, 3}, []int64{1, 2, 3})}, "is int64, the model wants float32"},
		{"bad array", map[string]*ndarray.Array{"x": {DType: ndarray.Float32, Shape: []int64{1, 3}}}, "needs 12 bytes"},
		{"ort shape check", map[string]*ndarray.Array{"x": ndarray.FromFloat32([]int64{3}, []float32{1, 2, 3})}, "ort:"},
	}
	for _, tc := range tests {
		if _, err := s.Run(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := ort.NewSessionFromBytes([]byte("not a model"), ort.Options{}); err == nil {
		t.Error("garbage model accepted")
	}
	if _, err := ort.NewSession(filepath.Join(t.TempDir(), "absent.onnx"), ort.Options{}); err == nil ||
		!strings.Contains(err.Error(), "absent.onnx") {
		t.Errorf("absent model: %v", err)
	}
}
