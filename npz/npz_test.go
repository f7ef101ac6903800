package npz

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"github.com/qcc-dev/qcc/internal/corpus"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ndarray"
)

// The shared model corpus sits beside the repository root.
const modelsDir = "../../shared/models"

func requireModels(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(modelsDir); err != nil {
		corpus.Skip(t, "model corpus ../shared/models not found beside the repo root: %v", err)
	}
}

func TestReadBERTInputs(t *testing.T) {
	requireModels(t)
	m, err := Read(filepath.Join(modelsDir, "bert.opset13.inputs.npz"))
	if err != nil {
		t.Fatal(err)
	}
	if got := sortedKeys(m); strings.Join(got, ",") != "attention_mask,input_ids,token_type_ids" {
		t.Fatalf("keys = %v", got)
	}
	for k, a := range m {
		if a.DType != ndarray.Int64 || !ndarray.SameShape(a.Shape, []int64{2, 16}) {
			t.Errorf("%s: %v, want int64[2 16]", k, a)
		}
	}
	// The corpus README documents these two inputs exactly.
	mask := m["attention_mask"].Int64s()
	tt := m["token_type_ids"].Int64s()
	for i := range 32 {
		wantMask := int64(1)
		if i >= 29 {
			wantMask = 0
		}
		if mask[i] != wantMask {
			t.Errorf("attention_mask[%d] = %d, want %d", i, mask[i], wantMask)
		}
		if want := int64(i % 16 / 8); tt[i] != want {
			t.Errorf("token_type_ids[%d] = %d, want %d", i, tt[i], want)
		}
	}
	for i, id := range m["input_ids"].Int64s() {
		if id < 0 || id >= 512 {
			t.Errorf("input_ids[%d] = %d out of vocab", i, id)
		}
	}
}

func TestReadBERTOutputs(t *testing.T) {
	requireModels(t)
	m, err := Read(filepath.Join(modelsDir, "bert.opset13.outputs.npz"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]int64{"last_hidden_state": {2, 16, 64}, "pooler_output": {2, 64}}
	if len(m) != len(want) {
		t.Fatalf("keys = %v", sortedKeys(m))
	}
	for k, shape := range want {
		a := m[k]
		if a == nil || a.DType != ndarray.Float32 || !ndarray.SameShape(a.Shape, shape) {
			t.Fatalf("%s: %v, want float32%v", k, a, shape)
		}
		for i, v := range a.Float32s() {
			if math.IsNaN(float64(v)) || math.Abs(float64(v)) > 100 {
				t.Fatalf("%s[%d] = %v: implausible", k, i, v)
			}
		}
	}
}

func sortedKeys(m map[string]*ndarray.Array) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// sample returns one small array of every dtype numpy can hold, plus edge
// shapes (scalar, empty, 1-d), filled with distinctive bytes.
func sample() map[string]*ndarray.Array {
	m := map[string]*ndarray.Array{}
	for _, dt := range []ndarray.DType{ndarray.Float32, ndarray.Uint8, ndarray.Int8, ndarray.Uint16,
		ndarray.Int16, ndarray.Int32, ndarray.Int64, ndarray.Bool, ndarray.Float16, ndarray.Float64,
		ndarray.Uint32, ndarray.Uint64} {
		a := ndarray.New(dt, []int64{2, 3})
		for i := range a.Data {
			a.Data[i] = byte(i*7 + int(dt))
		}
		if dt == ndarray.Bool {
			for i := range a.Data {
				a.Data[i] &= 1
			}
		}
		if dt == ndarray.Float16 || dt == ndarray.Float32 || dt == ndarray.Float64 {
			// Real values, so numpy's sum below is finite and comparable.
			f := ndarray.FromFloat64(a.Shape, []float64{1.5, -2, 0.25, 3, -0.5, 8})
			switch dt {
			case ndarray.Float16:
				a = ndarray.FromFloat16(a.Shape, f.Float32s())
			case ndarray.Float32:
				a = ndarray.FromFloat32(a.Shape, f.Float32s())
			default:
				a = f
			}
		}
		m["t_"+dt.String()] = a
	}
	m["scalar"] = ndarray.FromFloat64(nil, []float64{math.Pi})
	m["empty"] = ndarray.New(ndarray.Float32, []int64{0, 4})
	m["vec"] = ndarray.FromInt64([]int64{3}, []int64{-1, 0, 1 << 40})
	m["/encoder/layer.0/Add_output_0"] = ndarray.FromFloat32([]int64{1}, []float32{7}) // ONNX-style name
	return m
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	in := sample()
	p1, p2 := filepath.Join(dir, "a.npz"), filepath.Join(dir, "b.npz")
	if err := Write(p1, in); err != nil {
		t.Fatal(err)
	}
	if err := Write(p2, in); err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(p1)
	b2, _ := os.ReadFile(p2)
	if !bytes.Equal(b1, b2) {
		t.Error("two writes of the same map differ")
	}
	out, err := Read(p1)
	if err != nil {
		t.Fatal(err)
	}
	assertEqualMaps(t, in, out)
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func assertEqualMaps(t *testing.T, want, got map[string]*ndarray.Array) {
	t.Helper()
	if strings.Join(sortedKeys(want), ",") != strings.Join(sortedKeys(got), ",") {
		t.Fatalf("keys %v, want %v", sortedKeys(got), sortedKeys(want))
	}
	for k, w := range want {
		g := got[k]
		if g.DType != w.DType || !ndarray.SameShape(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
			t.Errorf("%s: got %v, want %v", k, g, w)
		}
	}
}

func TestNPYHeaderLayout(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteNPY(&buf, ndarray.FromFloat32([]int64{2, 16}, make([]float32, 32))); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	hlen := int(binary.LittleEndian.Uint16(b[8:]))
	hdr := string(b[10 : 10+hlen])
	if (10+hlen)%64 != 0 || !strings.HasSuffix(hdr, "\n") ||
		!strings.HasPrefix(hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 16), }") {
		t.Errorf("header %q (len %d)", hdr, hlen)
	}
}

// npyBytes builds a .npy stream by hand, for header variants our writer
// never produces.
func npyBytes(major byte, header string, data []byte) []byte {
	b := []byte(magic)
	b = append(b, major, 0)
	if major == 1 {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(header)))
	} else {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(header)))
	}
	return append(append(b, header...), data...)
}

func TestReadNPYVariants(t *testing.T) {
	two := []byte{1, 0, 0, 0, 2, 0, 0, 0}
	tests := []struct {
		name   string
		in     []byte
		want   string // ndarray String() of the result
		errSub string
	}{
		{"v2", npyBytes(2, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }\n", two), "int32[2]", ""},
		{"v3", npyBytes(3, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }\n", two), "int32[2]", ""},
		{"double quotes, py2 long", npyBytes(1, `{"descr": "<i4", "fortran_order": False, "shape": (1L, 2L)}`, two), "int32[1 2]", ""},
		{"one-byte big-endian ok", npyBytes(1, "{'descr': '>u1', 'fortran_order': False, 'shape': (8,)}", two), "uint8[8]", ""},
		{"fortran 1-d ok", npyBytes(1, "{'descr': '<i4', 'fortran_order': True, 'shape': (2,)}", two), "int32[2]", ""},
		{"bool ?", npyBytes(1, "{'descr': '|?', 'fortran_order': False, 'shape': ()}", []byte{1}), "bool[]", ""},
		{"bad magic", []byte("\x93NUMPX\x01\x00\x00\x00"), "", "bad magic"},
		{"empty", nil, "", "reading magic"},
		{"version", npyBytes(9, "{}", nil), "", "version 9.0"},
		{"fortran", npyBytes(1, "{'descr': '<i4', 'fortran_order': True, 'shape': (1, 2)}", two), "", "Fortran"},
		{"big-endian", npyBytes(1, "{'descr': '>i4', 'fortran_order': False, 'shape': (2,)}", two), "", "big-endian"},
		{"object", npyBytes(1, "{'descr': '|O', 'fortran_order': False, 'shape': (2,)}", two), "", "object arrays"},
		{"structured", npyBytes(1, "{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (2,)}", two), "", "structured"},
		{"unicode", npyBytes(1, "{'descr': '<U3', 'fortran_order': False, 'shape': (2,)}", two), "", "not supported"},
		{"complex", npyBytes(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}", two), "", "unsupported dtype"},
		{"truncated data", npyBytes(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,)}", two), "", "truncated"},
		{"truncated header", npyBytes(1, "{'descr'", nil)[:12], "", "reading header"},
		{"garbage header", npyBytes(1, "{'descr': <i4}", two), "", "bad header"},
		{"missing shape", npyBytes(1, "{'descr': '<i4', 'fortran_order': False}", two), "", "no tuple 'shape'"},
		{"negative dim", npyBytes(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (-2,)}", two), "", "bad dimension"},
		// A huge claimed shape on a tiny stream must fail fast, not allocate.
		{"huge shape", npyBytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,)}", two), "", "truncated"},
		{"overflow shape", npyBytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (9223372036854775807, 4)}", two), "", "too many"},
		{"huge header", append([]byte(magic+"\x02\x00"), 0xff, 0xff, 0xff, 0x7f), "", "implausibly large"},
	}
	for _, tc := range tests {
		a, err := ReadNPY(bytes.NewReader(tc.in))
		if tc.errSub != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errSub) {
				t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.errSub)
			}
			continue
		}
		if err != nil || a.String() != tc.want {
			t.Errorf("%s: got %v, %v; want %s", tc.name, a, err, tc.want)
		}
	}
}

func TestWriteErrors(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTo(&buf, map[string]*ndarray.Array{"x": ndarray.New(ndarray.BFloat16, []int64{1})}); err == nil ||
		!strings.Contains(err.Error(), "no dtype for bfloat16") {
		t.Errorf("bfloat16: %v", err)
	}
	if err := WriteTo(&buf, map[string]*ndarray.Array{"x": {DType: ndarray.Float32, Shape: []int64{2}}}); err == nil {
		t.Error("short data accepted")
	}
	if err := WriteTo(&buf, map[string]*ndarray.Array{"": ndarray.New(ndarray.Float32, nil)}); err == nil {
		t.Error("empty key accepted")
	}
	if err := Write(filepath.Join(t.TempDir(), "missing-dir", "x.npz"), sample()); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}

func TestReadDeflatedAndMalformedZip(t *testing.T) {
	in := sample()
	// Deflated archive, as np.savez_compressed writes.
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, k := range sortedKeys(in) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: k + ".npy", Method: zip.Deflate})
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteNPY(w, in[k]); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	out, err := ReadFrom(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	assertEqualMaps(t, in, out)

	// Every truncation must give an error, never a panic.
	for _, n := range []int{0, 1, 21, len(good) / 3, len(good) / 2, len(good) - 1} {
		if _, err := ReadFrom(bytes.NewReader(good[:n]), int64(n)); err == nil {
			t.Errorf("truncated to %d bytes: no error", n)
		}
	}
	// Corrupt a stored member's payload: the CRC check must catch it.
	var sbuf bytes.Buffer
	if err := WriteTo(&sbuf, map[string]*ndarray.Array{"x": ndarray.FromInt64([]int64{4}, []int64{1, 2, 3, 4})}); err != nil {
		t.Fatal(err)
	}
	bad := sbuf.Bytes()
	i := bytes.Index(bad, []byte{1, 0, 0, 0, 0, 0, 0, 0, 2})
	bad[i] = 9
	if _, err := ReadFrom(bytes.NewReader(bad), int64(len(bad))); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("corrupt member: err = %v", err)
	}
	// A member that is not a .npy.
	buf.Reset()
	zw = zip.NewWriter(&buf)
	w, _ := zw.Create("x.npy")
	w.Write([]byte("not numpy at all"))
	zw.Close()
	if _, err := ReadFrom(bytes.NewReader(buf.Bytes()), int64(buf.Len())); err == nil || !strings.Contains(err.Error(), `member "x.npy"`) {
		t.Errorf("bad member: err = %v", err)
	}
	if _, err := Read(filepath.Join(t.TempDir(), "absent.npz")); err == nil {
		t.Error("missing file: no error")
	}
}

func FuzzReadNPY(f *testing.F) {
	var buf bytes.Buffer
	WriteNPY(&buf, ndarray.FromFloat32([]int64{2, 2}, []float32{1, 2, 3, 4}))
	f.Add(buf.Bytes())
	f.Add(npyBytes(2, "{'descr': '<i8', 'fortran_order': False, 'shape': (1,)}", make([]byte, 8)))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ReadNPY(bytes.NewReader(b))
		if err == nil {
			if verr := a.Validate(); verr != nil {
				t.Fatalf("accepted an invalid array: %v", verr)
			}
		}
	})
}

// debianPython is Debian's interpreter, which has python3-numpy; a python3
// earlier on PATH may be another installation without it.
const debianPython = "/usr/bin/python3"

func TestNumpyInterop(t *testing.T) {
	if err := exec.Command(debianPython, "-c", "import numpy").Run(); err != nil {
		t.Skipf("%s with numpy not available (%v); scripts/setup.sh installs python3-numpy", debianPython, err)
	}
	dir := t.TempDir()
	in := sample()
	ours := filepath.Join(dir, "ours.npz")
	if err := Write(ours, in); err != nil {
		t.Fatal(err)
	}
	// numpy loads our file and prints dtype, shape and sum per key; it also
	// writes the arrays back as a compressed archive for us to read.
	theirs := filepath.Join(dir, "theirs.npz")
	script := `
import sys, numpy as np
d = np.load(sys.argv[1])
for k in sorted(d.files):
    a = d[k]
    print(k, a.dtype.name, list(a.shape), repr(float(a.astype(np.float64).sum())))
np.savez_compressed(sys.argv[2], **{k: d[k].copy(order="C") for k in d.files})
`
	outb, err := exec.Command(debianPython, "-c", script, ours, theirs).CombinedOutput()
	if err != nil {
		t.Fatalf("numpy failed: %v\n%s", err, outb)
	}
	got := strings.Split(strings.TrimSpace(string(outb)), "\n")
	keys := sortedKeys(in)
	if len(got) != len(keys) {
		t.Fatalf("numpy printed %d lines, want %d:\n%s", len(got), len(keys), outb)
	}
	for i, k := range keys {
		a := in[k]
		sum := 0.0
		for _, v := range a.Float64s() {
			sum += v
		}
		want := fmt.Sprintf("%s %s %s", k, a.DType, shapeList(a.Shape))
		cut := strings.LastIndexByte(got[i], ' ')
		var gsum float64
		_, serr := fmt.Sscan(got[i][cut+1:], &gsum)
		if got[i][:cut] != want || serr != nil || math.Abs(gsum-sum) > 1e-9*math.Max(1, math.Abs(sum)) {
			t.Errorf("numpy: %q, want %q with sum %v", got[i], want, sum)
		}
	}
	back, err := Read(theirs)
	if err != nil {
		t.Fatal(err)
	}
	assertEqualMaps(t, in, back)
}

// shapeList formats a shape the way Python prints a list: [2, 3].
func shapeList(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
