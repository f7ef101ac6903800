package calib

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/onnxpb"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
)

// tinySrc: t = 2x (known activations), y = Relu(t), e = an embedding lookup into a
// zero table of 10 rows (a tensor that is always 0); the mask is fed but unused.
const tinySrc = `<
  ir_version: 8,
  opset_import: ["" : 13]
>
tiny (float[N,1000] x, int64[N,6] ids, int64[N,6] attention_mask) => (float[N,1000] y, float[N,6,4] e) <
  float two = {2},
  float[10,4] emb = {...}
> {
  t = Mul (x, two)
  y = Relu (t)
  e = Gather (emb, ids)
}
`

// fixedSrc has a fixed batch of 2.
const fixedSrc = `<
  ir_version: 8,
  opset_import: ["" : 13]
>
fixed (float[2,3] x) => (float[2,3] y) {
  y = Relu (x)
}
`

// saveText parses a text model and saves it under dir; it returns the model and path.
func saveText(t *testing.T, dir, name, src string) (*ir.Model, string) {
	t.Helper()
	m, err := text.Parse(src)
	if err != nil {
		t.Fatalf("test model does not parse: %v", err)
	}
	p := filepath.Join(dir, name)
	if err := ir.Save(m, p, ir.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	m, err = ir.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return m, p
}

func seqInt64(shape []int64, start int64) *ndarray.Array {
	n, _ := ndarray.NumElements(shape)
	v := make([]int64, n)
	for i := range v {
		v[i] = start + int64(i)
	}
	return ndarray.FromInt64(shape, v)
}

func TestNPZSource(t *testing.T) {
	dir := t.TempDir()
	m, _ := saveText(t, dir, "tiny.onnx", tinySrc)
	x := make([]float32, 10*1000)
	for i := range x {
		x[i] = float32(i)
	}
	data := map[string]*ndarray.Array{
		"x":              ndarray.FromFloat32([]int64{10, 1000}, x),
		"ids":            seqInt64([]int64{10, 6}, 0),
		"attention_mask": seqInt64([]int64{10, 6}, 100),
		"labels":         seqInt64([]int64{10}, 0), // extra keys are ignored
	}
	p := filepath.Join(dir, "data.npz")
	if err := npz.Write(p, data); err != nil {
		t.Fatal(err)
	}
	src, err := LoadData(p, m, 4)
	if err != nil {
		t.Fatal(err)
	}
	if src.Len() != 3 {
		t.Fatalf("Len = %d, want 3 (rows 10 in batches of 4)", src.Len())
	}
	for i, rows := range []int64{4, 4, 2} {
		b, err := src.Batch(i)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 3 || b["labels"] != nil {
			t.Errorf("batch %d has keys %v, want the 3 model inputs", i, keys(b))
		}
		if got := b["x"].Shape; got[0] != rows || got[1] != 1000 {
			t.Errorf("batch %d: x shape %v", i, got)
		}
		if got := b["x"].Float32s()[0]; got != float32(4000*i) {
			t.Errorf("batch %d: x[0,0] = %v, want %v", i, got, 4000*i)
		}
		ids := b["ids"].Int64s()
		if ids[0] != int64(24*i) || ids[len(ids)-1] != int64(24*i)+6*rows-1 {
			t.Errorf("batch %d: ids %v", i, ids)
		}
	}
	if _, err := src.Batch(3); err == nil {
		t.Error("Batch(3) of 3 succeeded")
	}
	// batch <= 0 uses DefaultBatch.
	if src, err := LoadData(p, m, 0); err != nil || src.Len() != 2 {
		t.Errorf("default batch: Len %v, %v; want 2 batches of %d", lenOf(src), err, DefaultBatch)
	}

	// Errors name the problem.
	delete(data, "ids")
	data["x"] = seqInt64([]int64{10, 1000}, 0)
	bad := filepath.Join(dir, "bad.npz")
	if err := npz.Write(bad, data); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadData(bad, m, 4); err == nil || !strings.Contains(err.Error(), "lacks model inputs ids") {
		t.Errorf("missing input: %v", err)
	}
	data["ids"] = seqInt64([]int64{10, 6}, 0)
	if err := npz.Write(bad, data); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadData(bad, m, 4); err == nil || !strings.Contains(err.Error(), `"x" is int64, the model wants float32`) {
		t.Errorf("wrong dtype: %v", err)
	}
	for _, spec := range []string{filepath.Join(dir, "none.npz"), filepath.Join(dir, "tiny.onnx"), "random:0", "random:x", "random:1:2:3"} {
		if _, err := LoadData(spec, m, 4); err == nil {
			t.Errorf("LoadData(%q) succeeded", spec)
		}
	}
}

func TestFixedBatch(t *testing.T) {
	dir := t.TempDir()
	m, _ := saveText(t, dir, "fixed.onnx", fixedSrc)
	p := filepath.Join(dir, "d.npz")
	if err := npz.Write(p, map[string]*ndarray.Array{"x": ndarray.New(ndarray.Float32, []int64{5, 3})}); err != nil {
		t.Fatal(err)
	}
	src, err := LoadData(p, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	if src.Len() != 2 {
		t.Errorf("Len = %d, want 2 (5 rows, fixed batch 2, the last row dropped)", src.Len())
	}
	if _, err := LoadData(p, m, 3); err == nil || !strings.Contains(err.Error(), "fixed at 2") {
		t.Errorf("batch 3 on a fixed batch of 2: %v", err)
	}
	r, err := LoadData("random:3", m, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := r.Batch(0)
	if r.Len() != 3 || !ndarray.SameShape(b["x"].Shape, []int64{2, 3}) {
		t.Errorf("random on fixed: %d batches, shape %v", r.Len(), b["x"].Shape)
	}
}

func TestPBFolder(t *testing.T) {
	dir := t.TempDir()
	m, _ := saveText(t, dir, "tiny.onnx", tinySrc)
	write := func(path, name string, a *ndarray.Array) {
		t.Helper()
		b, err := EncodeTensorProto(name, a)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	x := ndarray.FromFloat32([]int64{3, 1000}, make([]float32, 3000))
	// Layout 1: test_data_set_*/; the second set names its tensors in another order.
	data := filepath.Join(dir, "data")
	for s := range 2 {
		set := filepath.Join(data, "test_data_set_"+string(rune('0'+s)))
		ids := seqInt64([]int64{3, 6}, int64(100*s))
		mask := seqInt64([]int64{3, 6}, 50)
		if s == 0 {
			write(filepath.Join(set, "input_0.pb"), "", x)
			write(filepath.Join(set, "input_1.pb"), "", ids)
			write(filepath.Join(set, "input_2.pb"), "", mask)
		} else {
			write(filepath.Join(set, "input_0.pb"), "attention_mask", mask)
			write(filepath.Join(set, "input_1.pb"), "ids", ids)
			write(filepath.Join(set, "input_2.pb"), "x", x)
		}
	}
	src, err := LoadData(data, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	if src.Len() != 2 {
		t.Fatalf("Len = %d, want one batch per data set", src.Len())
	}
	for s := range 2 {
		b, err := src.Batch(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := b["ids"].Int64s()[0]; got != int64(100*s) {
			t.Errorf("set %d: ids[0] = %d", s, got)
		}
		if got := b["attention_mask"].Int64s()[0]; got != 50 || b["x"].Shape[0] != 3 {
			t.Errorf("set %d: mask[0] = %d, x %v", s, got, b["x"].Shape)
		}
	}
	if src, err := LoadData(data, m, 2); err != nil || src.Len() != 4 {
		t.Errorf("batch 2: Len %v, %v; want 4 (each set of 3 rows split 2+1)", lenOf(src), err)
	}

	// Layout 2: input_*.pb directly in the folder.
	flat := filepath.Join(dir, "flat")
	write(filepath.Join(flat, "input_0.pb"), "x", x)
	write(filepath.Join(flat, "input_1.pb"), "", seqInt64([]int64{3, 6}, 7))
	write(filepath.Join(flat, "input_2.pb"), "", seqInt64([]int64{3, 6}, 1))
	src, err = LoadData(flat, m, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := src.Batch(0)
	if src.Len() != 1 || b["ids"].Int64s()[0] != 7 {
		t.Errorf("flat folder: Len %d, ids %v", src.Len(), b["ids"])
	}
	// A gap in the numbering is an error.
	if err := os.Rename(filepath.Join(flat, "input_2.pb"), filepath.Join(flat, "input_3.pb")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadData(flat, m, 0); err == nil || !strings.Contains(err.Error(), "input_2.pb") {
		t.Errorf("numbering gap: %v", err)
	}
}

func TestTensorProtoTypedFields(t *testing.T) {
	for _, a := range []*ndarray.Array{
		ndarray.FromFloat32([]int64{2, 2}, []float32{1, -2, 3.5, 0}),
		ndarray.FromInt64([]int64{3}, []int64{-1, 0, 1 << 40}),
		ndarray.FromInt32([]int64{2}, []int32{-7, 7}),
		ndarray.FromBool([]int64{2}, []bool{true, false}),
		ndarray.FromFloat16([]int64{2}, []float32{0.5, -2}),
	} {
		b, err := EncodeTensorProto("n", a)
		if err != nil {
			t.Fatal(err)
		}
		name, got, err := DecodeTensorProto(b)
		if err != nil || name != "n" || got.DType != a.DType || !ndarray.SameShape(got.Shape, a.Shape) || !bytes.Equal(got.Data, a.Data) {
			t.Errorf("%v: round trip gave %q %v %v", a, name, got, err)
		}
	}
	// Typed-field encodings, as some writers produce them.
	typed := func(dt ndarray.DType, dims []int64, fill func(*onnxpb.TensorProto)) []byte {
		code := int32(dt)
		tp := &onnxpb.TensorProto{Dims: dims, DataType: &code}
		fill(tp)
		b, err := proto.Marshal(tp)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		b    []byte
		want *ndarray.Array
	}{
		{typed(ndarray.Float32, []int64{2}, func(tp *onnxpb.TensorProto) { tp.FloatData = []float32{1.5, -2} }),
			ndarray.FromFloat32([]int64{2}, []float32{1.5, -2})},
		{typed(ndarray.Int64, []int64{1, 2}, func(tp *onnxpb.TensorProto) { tp.Int64Data = []int64{5, -6} }),
			ndarray.FromInt64([]int64{1, 2}, []int64{5, -6})},
		{typed(ndarray.Int32, []int64{2}, func(tp *onnxpb.TensorProto) { tp.Int32Data = []int32{7, -8} }),
			ndarray.FromInt32([]int64{2}, []int32{7, -8})},
		{typed(ndarray.Float16, []int64{1}, func(tp *onnxpb.TensorProto) { tp.Int32Data = []int32{0x3c00} }),
			ndarray.FromFloat16([]int64{1}, []float32{1})},
		{typed(ndarray.Float64, []int64{1}, func(tp *onnxpb.TensorProto) { tp.DoubleData = []float64{0.25} }),
			ndarray.FromFloat64([]int64{1}, []float64{0.25})},
	} {
		_, got, err := DecodeTensorProto(c.b)
		if err != nil || got.DType != c.want.DType || !ndarray.SameShape(got.Shape, c.want.Shape) || !bytes.Equal(got.Data, c.want.Data) {
			t.Errorf("typed %v: got %v %v", c.want, got, err)
		}
	}
	short := typed(ndarray.Float32, []int64{3}, func(tp *onnxpb.TensorProto) { tp.FloatData = []float32{1} })
	if _, _, err := DecodeTensorProto(short); err == nil || !strings.Contains(err.Error(), "float_data has 1 values") {
		t.Errorf("short float_data: %v", err)
	}
	if _, _, err := DecodeTensorProto([]byte{0xff, 0xff}); err == nil {
		t.Error("garbage decoded")
	}
}

func TestRandomSource(t *testing.T) {
	dir := t.TempDir()
	m, _ := saveText(t, dir, "tiny.onnx", tinySrc)
	if rows, ok := embeddingRows(m.Graph.Value("ids")); !ok || rows != 10 {
		t.Errorf("embedding rows of ids = %d, %v; want 10", rows, ok)
	}
	src, err := LoadData("random:5:9", m, 0)
	if err != nil {
		t.Fatal(err)
	}
	if src.Len() != 5 {
		t.Errorf("Len = %d", src.Len())
	}
	sawPad := false
	for i := range 5 {
		b, err := src.Batch(i)
		if err != nil {
			t.Fatal(err)
		}
		if !ndarray.SameShape(b["x"].Shape, []int64{DefaultBatch, 1000}) || !ndarray.SameShape(b["ids"].Shape, []int64{DefaultBatch, 6}) {
			t.Fatalf("shapes x %v ids %v", b["x"].Shape, b["ids"].Shape)
		}
		for _, id := range b["ids"].Int64s() {
			if id < 0 || id >= 10 {
				t.Fatalf("id %d outside the 10-row table", id)
			}
		}
		mask := b["attention_mask"].Int64s()
		for r := range DefaultBatch {
			row := mask[6*r : 6*r+6]
			if row[0] != 1 {
				t.Errorf("mask row %v starts with padding", row)
			}
			for j := 1; j < 6; j++ {
				if row[j] > row[j-1] || row[j] < 0 {
					t.Errorf("mask row %v is not ones then zeros", row)
				}
			}
			if row[5] == 0 {
				sawPad = true
			}
		}
		// Deterministic: the same batch again is identical.
		again, _ := src.Batch(i)
		if !bytes.Equal(again["x"].Data, b["x"].Data) || !bytes.Equal(again["ids"].Data, b["ids"].Data) {
			t.Errorf("batch %d is not deterministic", i)
		}
	}
	if !sawPad {
		t.Error("no mask row had trailing zeros")
	}
	x := mustBatch(t, src, 0)["x"].Float64s()
	var mean, sq float64
	for _, v := range x {
		mean += v
		sq += v * v
	}
	mean /= float64(len(x))
	if std := sq/float64(len(x)) - mean*mean; mean > 0.05 || mean < -0.05 || std < 0.9 || std > 1.1 {
		t.Errorf("floats: mean %.3f var %.3f, want N(0,1)", mean, std)
	}
	other, _ := LoadData("random:5:10", m, 0)
	if bytes.Equal(mustBatch(t, other, 0)["x"].Data, mustBatch(t, src, 0)["x"].Data) {
		t.Error("seeds 9 and 10 gave the same data")
	}
}

func mustBatch(t *testing.T, s Source, i int) map[string]*ndarray.Array {
	t.Helper()
	b, err := s.Batch(i)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keys(m map[string]*ndarray.Array) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func lenOf(s Source) int {
	if s == nil {
		return -1
	}
	return s.Len()
}

// TestRandomSourceKeepsBodyTypes: drawing random data tries sizes by shape inference on
// the model itself and puts every type back after, the values inside an If's branches
// too (a branch output left typed at a trial's sizes makes ORT refuse any other size).
func TestRandomSourceKeepsBodyTypes(t *testing.T) {
	m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13]>
g (bool c, float[batch,seq,4] x) => (float[batch,seq,4] y) {
  y = If (c) <then_branch = then () => (float[batch,seq,4] a) {
    a = Relu (x)
  }, else_branch = else () => (float[batch,seq,4] b) {
    h = Neg (x)
    b = Relu (h)
  }>
}
`)
	if err != nil {
		t.Fatal(err)
	}
	types := func() map[string]string {
		out := map[string]string{}
		_ = m.Graph.Walk(func(g *ir.Graph) error {
			for _, n := range g.Nodes() {
				for _, o := range n.Outputs() {
					out[g.Name+"/"+o.Name] = fmt.Sprint(o.Type)
				}
			}
			return nil
		})
		return out
	}
	want := types()
	if _, err := LoadData("random:2", m, 0); err != nil {
		t.Fatal(err)
	}
	for k, v := range types() {
		if v != want[k] {
			t.Errorf("%s: type %s after drawing random data, was %s", k, v, want[k])
		}
	}
}
