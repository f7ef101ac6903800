package qdq

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	"github.com/qcc-dev/qcc/passes/shapes"
	"github.com/qcc-dev/qcc/quant/calib"
)

// ffn is a small FFN with an erf GELU.
const ffn = `<ir_version: 8, opset_import: ["" : 13]>
ffn (float[batch,seq,4] x) => (float[batch,seq,4] y) <
  float[4,4] w1 = {-0.594, 0.352, 0.65, -0.303, -0.528, 0.336, -0.724, 0.618, -0.892, -0.629, 0.367, -0.269, -0.753, 0.545, -0.469, -0.0699},
  float[4] b1 = {0.1, -0.2, 0.3, -0.4},
  float[4,4] w2 = {-0.425, 0.0427, -0.115, 0.85, -0.538, -0.772, -0.355, -0.656, 0.291, -0.45, -0.719, -0.506, -0.548, -0.201, 0.0275, -0.498},
  float[4] b2 = {0.5, 0.25, -0.125, 0},
  float sqrt2 = {1.4142135},
  float one = {1},
  float half = {0.5}
> {
  ["/F/in/MatMul"] h = MatMul (x, w1)
  ["/F/in/Add"] hb = Add (b1, h)
  ["/F/gelu/Div"] d = Div (hb, sqrt2)
  ["/F/gelu/Erf"] e = Erf (d)
  ["/F/gelu/Add"] e1 = Add (e, one)
  ["/F/gelu/Mul"] m = Mul (hb, e1)
  ["/F/gelu/Mul_1"] gl = Mul (m, half)
  ["/F/out/MatMul"] o = MatMul (gl, w2)
  ["/F/out/Add"] y = Add (b2, o)
}
`

// opset11 has every operator whose meaning changes between opsets 11 and 13.
const opset11 = `<ir_version: 6, opset_import: ["" : 11]>
op11 (float[batch,seq,4] x, float[batch,4,seq] t) => (float[batch,seq,4] y, float[batch,1,4] r, float[batch,4,seq] s, float[batch,seq,4] lsm) <
  float[4,4] w = {0.575, -0.49, -0.095, -0.573, -0.345, -0.791, -0.305, 0.0429, -0.538, 0.463, -0.79, -0.388, -0.434, -0.158, 0.472, -0.261}
> {
  u = Unsqueeze <axes = [1]> (x)
  sq = Squeeze <axes = [1]> (u)
  h = MatMul (sq, w)
  p = Softmax <axis = 2> (h)
  a, b = Split <axis = 2, split = [1, 3]> (x)
  c = Concat <axis = 2> (b, a)
  dr = Dropout <ratio = 0.25> (c)
  y = Add (p, dr)
  r = ReduceSum <axes = [1], keepdims = 1> (x)
  s = Softmax <axis = 1> (t)
  lsm = LogSoftmax (x)
}
`

func parse(t *testing.T, src string) *ir.Model {
	t.Helper()
	m, err := text.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func runPipeline(t *testing.T, m *ir.Model, spec string) (*pass.Report, error) {
	t.Helper()
	p, err := pass.Parse(spec, []*pass.Pass{Pass, qdqcheck.Pass})
	if err != nil {
		t.Fatal(err)
	}
	return p.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true, Verifiers: []func(*ir.Model) error{qdqcheck.Check}})
}

func save(t *testing.T, m *ir.Model, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := ir.Save(m, path, ir.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return path
}

func runORT(t *testing.T, path string, in map[string]*ndarray.Array) map[string]*ndarray.Array {
	t.Helper()
	s, err := ort.NewSession(path, ort.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatalf("ONNX Runtime refuses %s: %v", filepath.Base(path), err)
	}
	defer s.Close()
	out, err := s.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// randn is ndarray.RandNormal.
var randn = ndarray.RandNormal

func maxDiff(t *testing.T, a, b map[string]*ndarray.Array) float64 {
	t.Helper()
	worst := 0.0
	for name, x := range a {
		d, err := ndarray.MaxAbsDiff(x, b[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		worst = math.Max(worst, d)
	}
	return worst
}

// TestRaiseOpset13: the opset-13 rewrite computes what the opset-11 model computed.
func TestRaiseOpset13(t *testing.T) {
	orttest.RequireLib(t)
	orig := parse(t, opset11)
	m := parse(t, opset11)
	if _, err := shapes.Infer(m); err != nil {
		t.Fatal(err)
	}
	note, err := raiseOpset13(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Graph.TopoSort(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Unsqueeze axes→input 1", "Squeeze axes→input 1", "Split split→input 1", "ReduceSum axes→input 1",
		"Dropout ratio→input 1", "Softmax coerced to 2-D rewritten 1", "LogSoftmax coerced to 2-D rewritten 1", "unchanged: Softmax (last axis) 1"} {
		if !strings.Contains(note, want) {
			t.Errorf("note %q lacks %q", note, want)
		}
	}
	if m.Opset("") != 13 || m.IRVersion != 7 {
		t.Errorf("opset %d IR %d, want 13 and 7", m.Opset(""), m.IRVersion)
	}
	if err := m.Verify(); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	in := map[string]*ndarray.Array{"x": randn(r, 2, 5, 4), "t": randn(r, 2, 4, 5)}
	want := runORT(t, save(t, orig, "op11.onnx"), in)
	got := runORT(t, save(t, m, "op13.onnx"), in)
	if d := maxDiff(t, want, got); d > 1e-6 {
		t.Errorf("opset-13 rewrite differs from the opset-11 model by %g", d)
	}
}

// opset9 holds what changed between 9 and 11: Slice, TopK, Pad and Clip with attributes.
const opset9 = `<ir_version: 4, opset_import: ["" : 9]>
op9 (float[batch,seq,4] x) => (float[batch,seq,2] y, float[batch,seq,2] k, float[batch,seq,7] pd, float[batch,seq,4] cl, float[batch,seq,4] h) <
  float[4,4] w = {0.575, -0.49, -0.095, -0.573, -0.345, -0.791, -0.305, 0.0429, -0.538, 0.463, -0.79, -0.388, -0.434, -0.158, 0.472, -0.261}
> {
  y = Slice <starts = [1], ends = [3], axes = [2]> (x)
  k, ki = TopK <axis = -1, k = 2> (x)
  pd = Pad <pads = [0, 0, 1, 0, 0, 2], value = 0.5> (x)
  cl = Clip <min = -0.5, max = 0.5> (x)
  mm = MatMul (x, w)
  h = Softmax <axis = 2> (mm)
}
`

// TestRaiseOpset13FromOpset9: below 11 the generic upgrader takes the model to 11 first;
// the opset-13 model computes what the opset-9 one did.
func TestRaiseOpset13FromOpset9(t *testing.T) {
	orttest.RequireLib(t)
	orig := parse(t, opset9)
	m := parse(t, opset9)
	if _, err := shapes.Infer(m); err != nil {
		t.Fatal(err)
	}
	if _, err := raiseOpset13(m); err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(); err != nil {
		t.Fatal(err)
	}
	if m.Opset("") != 13 || m.IRVersion != 7 {
		t.Errorf("opset %d IR %d, want 13 and 7", m.Opset(""), m.IRVersion)
	}
	r := rand.New(rand.NewPCG(3, 4))
	in := map[string]*ndarray.Array{"x": randn(r, 2, 5, 4)}
	want := runORT(t, save(t, orig, "op9.onnx"), in)
	got := runORT(t, save(t, m, "op13.onnx"), in)
	if d := maxDiff(t, want, got); d > 1e-6 {
		t.Errorf("opset-13 rewrite differs from the opset-9 model by %g", d)
	}
}

// A model below 11 holding what has no later spelling (Resize-10's coordinate mapping) is
// refused, naming the node; the input model is left at its opset.
func TestOpsetRaiseRefused(t *testing.T) {
	src := strings.Replace(strings.Replace(ffn, `"" : 13`, `"" : 10`, 1), "ir_version: 8", "ir_version: 5", 1)
	m := parse(t, src)
	x := m.Graph.Inputs[0]
	rs := m.Graph.Add("Resize", []*ir.Value{x, m.Graph.NewConst("scales", ir.FloatTensor([]int64{3}, []float32{1, 1, 1}))}, 1, "resized")
	m.Graph.Outputs = append(m.Graph.Outputs, rs.Output(0))
	_, err := runPipeline(t, m, "qdq<min-gemm=2;ranges=const:1>")
	want := "raising from 10 is unsafe: Resize changed at opset 11 (Resize(->resized"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "export the model at opset 13") {
		t.Errorf("error %v\nwant it to contain %s", err, want)
	}
}

func TestOptionErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"qdq<policy=all>":       "want linear, attention, full",
		"qdq<calib=median>":     `unknown calibration method "median"`,
		"qdq<ranges=12>":        "want const:V",
		"qdq<ranges=const:-1>":  "positive finite",
		"qdq<weights=fp8>":      "want int8 or qdq",
		"qdq<exclude=(>":        "missing closing )",
		"qdq<batch=-2>":         "non-negative",
		"qdq<fold-weights=yes>": "want true or false",
	} {
		_, err := pass.Parse(spec, []*pass.Pass{Pass})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", spec, err, want)
		}
	}
}

func TestQuantizeWeight(t *testing.T) {
	// (K=2, N=3), axis 1: channels are columns.
	w := []float32{1, -0.5, 0, -2, 0.25, 0}
	scales, q := quantizeWeight(w, []int64{2, 3}, 1, false)
	wantS := []float32{2.0 / 127, 0.5 / 127, 1}
	wantQ := []int8{64, -127, 0, -127, 64, 0} // 63.5 rounds to even 64
	for i := range wantS {
		if scales[i] != wantS[i] {
			t.Errorf("scale[%d] = %g, want %g", i, scales[i], wantS[i])
		}
	}
	for i := range wantQ {
		if int8(q[i]) != wantQ[i] {
			t.Errorf("q[%d] = %d, want %d", i, int8(q[i]), wantQ[i])
		}
	}
	// axis 0 of (N=2, K=3): channels are rows.
	scales, q = quantizeWeight([]float32{3, -1, 1, 0.5, 0.25, -0.5}, []int64{2, 3}, 0, false)
	if scales[0] != float32(3.0/127) || scales[1] != float32(0.5/127) || q[0] != 127 || int8(q[1]) != -42 || q[3] != 127 || int8(q[5]) != -127 {
		t.Errorf("axis 0: scales %v q %v", scales, q)
	}
	// fp8: scale max|w|/448; float8e4m3fn codes: 224 = 1.75·2^7 is 0x76, -448 is 0xfe.
	scales, q = quantizeWeight(w, []int64{2, 3}, 1, true)
	wantS = []float32{2.0 / 448, 0.5 / 448, 1}
	wantB := []byte{0x76, 0xfe, 0, 0xfe, 0x76, 0}
	for i := range wantS {
		if scales[i] != wantS[i] {
			t.Errorf("fp8: scale[%d] = %g, want %g", i, scales[i], wantS[i])
		}
	}
	for i := range wantB {
		if q[i] != wantB[i] {
			t.Errorf("fp8: q[%d] = %#02x, want %#02x", i, q[i], wantB[i])
		}
	}
}

// TestInt8AndQDQWeightsAgree: weights=int8 and weights=qdq compute the same in ONNX
// Runtime, close to the float model, and the checker accepts both.
func TestInt8AndQDQWeightsAgree(t *testing.T) {
	orttest.RequireLib(t)
	r := rand.New(rand.NewPCG(3, 4))
	in := map[string]*ndarray.Array{"x": randn(r, 2, 6, 4)}
	ref := runORT(t, save(t, parse(t, ffn), "f.onnx"), in)
	var outs []map[string]*ndarray.Array
	for _, w := range []string{"int8", "qdq"} {
		m := parse(t, ffn)
		if _, err := runPipeline(t, m, "qdq<min-gemm=2;data=random:2;weights="+w+">,qdqcheck"); err != nil {
			t.Fatal(err)
		}
		outs = append(outs, runORT(t, save(t, m, w+".onnx"), in))
	}
	if d := maxDiff(t, outs[0], outs[1]); d > 1e-6 {
		t.Errorf("weights=int8 and weights=qdq differ by %g", d)
	}
	cos, err := ndarray.CosineSimilarity(ref["y"], outs[0]["y"])
	if err != nil || cos < 0.99 {
		t.Errorf("cosine similarity to float %v (%v)", cos, err)
	}
}

// TestCaches: cache= is written after calibrating and read back when it covers the
// tensors (no calibration then); trt-cache= gets TensorRT's format.
func TestCaches(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	cache, trt := filepath.Join(dir, "ranges.json"), filepath.Join(dir, "trt.cache")
	m := parse(t, ffn)
	rep, err := runPipeline(t, m, "qdq<min-gemm=2;data=random:2;cache="+cache+";trt-cache="+trt+">")
	if err != nil {
		t.Fatal(err)
	}
	if notes := strings.Join(rep.Stats[len(rep.Stats)-1].Notes, "\n"); !strings.Contains(notes, "calibrated percentile:99.99 on random:2 (2 batches)") ||
		!strings.Contains(notes, "written to cache") {
		t.Errorf("notes:\n%s", notes)
	}
	ranges, meta, err := calib.ReadJSON(cache)
	if err != nil {
		t.Fatal(err)
	}
	if len(ranges) != 2 || ranges["x"] == 0 || ranges["gl"] == 0 || meta.Method != "percentile:99.99" || meta.Batches != 2 {
		t.Errorf("cache %v %+v", ranges, meta)
	}
	b, err := os.ReadFile(trt)
	if err != nil || !strings.HasPrefix(string(b), calib.DefaultTRTHeader+"\ngl: ") {
		t.Errorf("TensorRT cache %q (%v)", b, err)
	}

	// A cache that covers the tensors is used as it is.
	if err := calib.WriteJSON(cache, map[string]float32{"x": 2.54, "gl": 1.27}, calib.Meta{Method: "max", Batches: 9, Data: "mine"}); err != nil {
		t.Fatal(err)
	}
	m = parse(t, ffn)
	rep, err = runPipeline(t, m, "qdq<min-gemm=2;data=random:2;cache="+cache+">")
	if err != nil {
		t.Fatal(err)
	}
	if s := m.Graph.Initializer("x_scale"); s == nil {
		t.Fatal("no x_scale")
	} else if v, _ := s.Float32s(); v[0] != float32(0.02) {
		t.Errorf("x_scale %v, want 0.02 from the cache", v)
	}
	if notes := strings.Join(rep.Stats[len(rep.Stats)-1].Notes, "\n"); !strings.Contains(notes, "ranges: cache "+cache+" (max, 9 batches of mine)") {
		t.Errorf("notes:\n%s", notes)
	}

	// One that lacks a tensor is recalibrated and rewritten.
	if err := calib.WriteJSON(cache, map[string]float32{"x": 2.54, "other": 3}, calib.Meta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := runPipeline(t, parse(t, ffn), "qdq<min-gemm=2;data=random:2;cache="+cache+">"); err != nil {
		t.Fatal(err)
	}
	if ranges, _, _ = calib.ReadJSON(cache); len(ranges) != 3 || ranges["x"] == 2.54 {
		t.Errorf("rewritten cache %v: want x recalibrated, gl added, other kept", ranges)
	}
}

// TestZeroRange: a tensor that is zero on every calibration batch cannot be given a
// scale: its reader stays float, marked, and the model still passes the checker.
func TestZeroRange(t *testing.T) {
	orttest.RequireLib(t)
	src := strings.Replace(ffn, `["/F/in/MatMul"] h = MatMul (x, w1)`, `["/F/zero"] xz = Mul (x, zero)
  ["/F/in/MatMul"] h = MatMul (xz, w1)`, 1)
	src = strings.Replace(src, "float half = {0.5}", "float half = {0.5},\n  float zero = {0}", 1)
	m := parse(t, src)
	rep, err := runPipeline(t, m, "qdq<min-gemm=2;data=random:2>")
	if err != nil {
		t.Fatal(err)
	}
	st := rep.Stats[len(rep.Stats)-1]
	if st.Counts["qdq: left float, zero range"] != 1 || st.Counts["qdq: zero-range tensors"] != 1 {
		t.Errorf("counts %v", st.Counts)
	}
	var mm *ir.Node
	for _, n := range m.Graph.Nodes() {
		if n.Name == "/F/in/MatMul" {
			mm = n
		}
	}
	if why, _ := mm.Meta(qdqcheck.SkipKey); why != "zero calibration range for xz" {
		t.Errorf("skip mark %q", why)
	}
	if !strings.Contains(strings.Join(st.Notes, "\n"), "zero range: 1 (xz: left float)") {
		t.Errorf("notes %v", st.Notes)
	}
}

// TestScaleMovePreservesFunction: moving attention's scale onto Q (folded into Wq and bq,
// or a Mul on Q when Wq is shared with K) computes what the model computed, in ONNX
// Runtime; everything is excluded so that only the move is measured.
func TestScaleMovePreservesFunction(t *testing.T) {
	orttest.RequireLib(t)
	r := rand.New(rand.NewPCG(5, 6))
	in := map[string]*ndarray.Array{"x": randn(r, 2, 7, 4)}
	for name, c := range map[string]struct {
		src   string
		moved int
	}{
		"folded": {attention, 1},
		"mul":    {strings.Replace(attention, "km = MatMul (x, wk)", "km = MatMul (x, wq)", 1), 1},
		// The scaled scores are an output of the model too: the scale stays.
		"scores output": {strings.Replace(attention, "=> (float[batch,seq,4] y)", "=> (float[batch,seq,4] y, float[batch,2,seq,seq] sd)", 1), 0},
	} {
		src := c.src
		want := runORT(t, save(t, parse(t, src), name+".float.onnx"), in)
		m := parse(t, src)
		rep, err := runPipeline(t, m, "qdq<policy=attention;ranges=const:1;exclude=.>")
		if err != nil {
			t.Fatal(err)
		}
		if got := rep.Stats[len(rep.Stats)-1].Counts["qdq: attention scales moved onto Q"]; got != c.moved {
			t.Errorf("%s: %d scales moved, want %d", name, got, c.moved)
		}
		for _, n := range m.Graph.Nodes() {
			if n.OpType == "Div" && c.moved > 0 {
				t.Errorf("%s: Div %s left after the move", name, n.Name)
			}
		}
		got := runORT(t, save(t, m, name+".moved.onnx"), in)
		if d := maxDiff(t, want, got); d > 1e-6 {
			t.Errorf("%s: scale moved onto Q changes the outputs by %g", name, d)
		}
	}
}

// TestQKVScaleShared: qkv-scale=shared gives the Q, K and V heads one scale, the largest
// of the three separate ones.
func TestQKVScaleShared(t *testing.T) {
	orttest.RequireLib(t)
	scales := func(opt string) map[string]float32 {
		m := parse(t, attention)
		if _, err := runPipeline(t, m, "qdq<min-gemm=2;policy=attention;data=random:2"+opt+">"); err != nil {
			t.Fatal(err)
		}
		out := map[string]float32{}
		for _, v := range []string{"qt", "kt", "vt"} {
			s := m.Graph.Initializer(v + "_scale")
			if s == nil {
				t.Fatalf("no %s_scale", v)
			}
			f, _ := s.Float32s()
			out[v] = f[0]
		}
		return out
	}
	sep, shared := scales(""), scales(";qkv-scale=shared")
	want := max(sep["qt"], sep["kt"], sep["vt"])
	if sep["qt"] == sep["kt"] && sep["kt"] == sep["vt"] {
		t.Fatalf("separate scales are equal already (%v): the test cannot tell", sep)
	}
	for v, s := range shared {
		if s != want {
			t.Errorf("qkv-scale=shared: %s scale %g, want %g (largest of %v)", v, s, want, sep)
		}
	}
}

// TestIfBranches: projections inside an If's branches are quantized, each branch with a
// pair of its own on the outer-scope activation they read (a pair made in one branch is
// out of scope in the other) and one int8 weight in the main graph for both; ORT agrees
// with the float model on either branch.
func TestIfBranches(t *testing.T) {
	orttest.RequireLib(t)
	src := `<
  ir_version: 8,
  opset_import: ["" : 13]
>
g (bool c, float[2,2] x) => (float[2,2] y) <
  float[2,2] w = {1, 2, 3, 4}
> {
  y = If (c) <then_branch = then_g () => (float[2,2] a) {
    a = MatMul (x, w)
  }, else_branch = else_g () => (float[2,2] b) {
    h = MatMul (x, w)
    b = Relu (h)
  }>
}
`
	m := parse(t, src)
	rep, err := runPipeline(t, m, "qdq<min-gemm=1;data=random:1>")
	if err != nil {
		t.Fatal(err)
	}
	st := rep.Stats[len(rep.Stats)-1]
	if st.Counts["qdq: nodes quantized"] != 2 || st.Counts["qdq: Q/DQ pairs added"] != 2 || st.Counts["qdq: weights int8 + DQ"] != 1 {
		t.Errorf("counts %v", st.Counts)
	}
	if err := qdqcheck.Check(m); err != nil {
		t.Error(err)
	}
	for _, sg := range m.Graph.Nodes()[0].Subgraphs() {
		for _, n := range sg.Nodes() {
			if n.OpType == "MatMul" && (!qdqcheck.Dequantized(n.Input(0)) || !qdqcheck.Dequantized(n.Input(1))) {
				t.Errorf("%s: %s is not quantized", sg.Name, n)
			}
			if p, _ := n.Input(0).Producer(); n.OpType == "DequantizeLinear" && p != nil && p.Graph() != sg {
				t.Errorf("%s: %s reads a QuantizeLinear of another graph", sg.Name, n)
			}
		}
	}
	x := ndarray.FromFloat32([]int64{2, 2}, []float32{0.5, -1, 0.25, 1})
	path, qpath := save(t, parse(t, src), "float.onnx"), save(t, m, "quantized.onnx")
	for _, c := range []bool{true, false} {
		in := map[string]*ndarray.Array{"c": ndarray.FromBool(nil, []bool{c}), "x": x}
		if d := maxDiff(t, runORT(t, path, in), runORT(t, qpath, in)); d > 0.05 {
			t.Errorf("c=%v: quantized differs from float by %g", c, d)
		}
	}
}

// TestLoopBodyNoted: projections inside a Loop body stay float, and -stats says how many
// and why, instead of a silent "0 pairs".
func TestLoopBodyNoted(t *testing.T) {
	m := parse(t, `<
  ir_version: 8,
  opset_import: ["" : 13]
>
g (float[2,2] x) => (float[2,2] y) <
  float[2,2] w = {1, 2, 3, 4},
  int64 n = {2},
  bool go = {1}
> {
  y = Loop (n, go, x) <body = body_g (int64 i, bool c, float[2,2] a) => (bool co, float[2,2] b) {
    co = Identity (c)
    b = MatMul (a, w)
  }>
}
`)
	rep, err := runPipeline(t, m, "qdq<min-gemm=1;data=random:1>")
	if err != nil {
		t.Fatal(err)
	}
	st := rep.Stats[len(rep.Stats)-1]
	if st.Counts["qdq: projections inside loop bodies left float"] != 1 {
		t.Errorf("counts %v", st.Counts)
	}
	if !strings.Contains(strings.Join(st.Notes, "\n"), "1 MatMul/Gemm/Conv on constant weights inside Loop or Scan bodies stay float") {
		t.Errorf("notes %v", st.Notes)
	}
}
