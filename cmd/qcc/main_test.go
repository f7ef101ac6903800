package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	_ "github.com/qcc-dev/qcc/internal/update"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
)

// qcc runs the command in-process and returns exit code, stdout and stderr.
func qcc(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// writeText writes a model given in ONNX text syntax as a binary .onnx file.
func writeText(t *testing.T, dir, name, src string) string {
	t.Helper()
	m, err := text.Parse(src)
	if err != nil {
		t.Fatalf("test model does not parse: %v", err)
	}
	b, err := ir.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const small = `<ir_version: 8, opset_import: ["" : 13]>
g (float[2,3] x) => (float[2,3] y) <int64[2] shape = {2, 3}> {
  z = Reshape (x, shape)
  y = Identity (z)
}
`

func TestFoldSmallModel(t *testing.T) {
	dir := t.TempDir()
	in := writeText(t, dir, "m.onnx", small)
	orig, _ := os.ReadFile(in)
	out := filepath.Join(dir, "out.onnx")
	code, _, stderr := qcc(t, "-passes=fold", "-stats", in, "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	m, err := ir.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if n := m.Graph.NumNodes(); n != 1 {
		t.Errorf("folded model has %d nodes, want 1 (the Identity to the output)", n)
	}
	if !strings.Contains(stderr, "fold") {
		t.Errorf("-stats printed no fold line: %q", stderr)
	}
	now, _ := os.ReadFile(in)
	if !bytes.Equal(orig, now) {
		t.Error("the input file was modified")
	}
}

func TestEmitText(t *testing.T) {
	in := writeText(t, t.TempDir(), "m.onnx", small)
	code, stdout, stderr := qcc(t, "-emit=text", in)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := text.Parse(stdout); err != nil {
		t.Fatalf("-emit=text output does not parse: %v\n%s", err, stdout)
	}
}

func TestInstrumentationFlags(t *testing.T) {
	dir := t.TempDir()
	in := writeText(t, dir, "m.onnx", small)
	out := filepath.Join(dir, "o.onnx")
	code, _, stderr := qcc(t, "-passes=fold,dce", "-print-after=fold", "-verify-each", "-time-passes", in, "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"model after fold", "dce", "s\n"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	// -time-passes times the load and the write too, each on a line of its own.
	for _, re := range []string{`(?m)^load +nodes \d+  \d+\.\d{3}s$`, `(?m)^emit +onnx  \d+\.\d{3}s$`} {
		if !regexp.MustCompile(re).MatchString(stderr) {
			t.Errorf("-time-passes: no line matching %s:\n%s", re, stderr)
		}
	}
	code, stdout, _ := qcc(t, "-list-passes")
	if code != 0 || !strings.Contains(stdout, "fold") || !strings.Contains(stdout, "shapes") {
		t.Errorf("-list-passes: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = qcc(t, "-version")
	if code != 0 || !strings.HasPrefix(stdout, "qcc ") {
		t.Errorf("-version: exit %d %q", code, stdout)
	}
}

// TestBadInput: every kind of bad input gets a non-zero exit and a message that names
// the problem, never a panic, and the input file is left as it was.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	good := writeText(t, dir, "good.onnx", small)
	goodBytes, _ := os.ReadFile(good)
	trunc := filepath.Join(dir, "trunc.onnx")
	os.WriteFile(trunc, goodBytes[:len(goodBytes)/2], 0o644)
	garbage := filepath.Join(dir, "garbage.onnx")
	os.WriteFile(garbage, []byte("this is not a protobuf \xff\xfe\x00\x01 at all"), 0o644)
	empty := filepath.Join(dir, "empty.onnx")
	os.WriteFile(empty, nil, 0o644)
	unknownOp := writeText(t, dir, "unknown.onnx", `<ir_version: 8, opset_import: ["" : 13]>
g (float[2] x) => (float[2] y) {
  y = FrobnicateTheTensor (x)
}
`)
	missing := writeRaw(t, dir, "missing.onnx", func(m *ir.Model) {})
	out := filepath.Join(dir, "out.onnx")

	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no model", []string{"-passes=fold"}, exitUsage, "expected one model file"},
		{"no such file", []string{"-o", out, filepath.Join(dir, "nope.onnx")}, exitFail, "no such file"},
		{"truncated", []string{"-o", out, trunc}, exitFail, "not a valid ONNX model"},
		{"garbage", []string{"-o", out, garbage}, exitFail, "not a valid ONNX model"},
		{"empty", []string{"-o", out, empty}, exitFail, "empty"},
		{"unknown flag", []string{"-frobnicate", good}, exitUsage, "flag provided but not defined"},
		{"unknown pass", []string{"-passes=fold,nosuch", "-o", out, good}, exitUsage, `unknown pass "nosuch"`},
		{"bad provider", []string{"-passes=fold,fuse<provider=gpu>", "-o", out, good}, exitUsage, "fuse option provider=gpu: want any, cpu or cuda"},
		{"bad option", []string{"-passes=fold<nosuch=1>", "-o", out, good}, exitUsage, `no option "nosuch"`},
		{"unclosed option", []string{"-passes=fold<max-size=1", "-o", out, good}, exitUsage, "not closed"},
		{"bad emit", []string{"-emit=pdf", "-o", out, good}, exitUsage, "-emit=pdf"},
		{"no output", []string{"-passes=fold", good}, exitUsage, "needs an output file"},
		{"output is input", []string{"-passes=fold", "-o", good, good}, exitUsage, "is the input file"},
		{"bad print-after", []string{"-print-after=nosuch", "-o", out, good}, exitUsage, `no pass named "nosuch"`},
		{"missing initializer", []string{"-o", out, missing}, exitFail, `"w" is not defined`},
		{"unknown op", []string{"-passes=fold", "-o", out, unknownOp}, exitOK, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := qcc(t, c.args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, c.code, stderr)
			}
			if !strings.Contains(stderr, c.want) {
				t.Errorf("stderr %q does not mention %q", stderr, c.want)
			}
			if strings.Contains(stderr, "goroutine ") {
				t.Errorf("a panic escaped: %s", stderr)
			}
		})
	}
	if now, _ := os.ReadFile(good); !bytes.Equal(now, goodBytes) {
		t.Error("an input file was modified")
	}
}

// writeRaw writes a model whose node reads an initializer that is not there.
func writeRaw(t *testing.T, dir, name string, _ func(*ir.Model)) string {
	t.Helper()
	m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13]>
g (float[2] x) => (float[2] y) <float[2] w = {1, 2}> {
  y = Add (x, w)
}
`)
	if err != nil {
		t.Fatal(err)
	}
	// Drop the initializer behind the IR's back by saving a model without it.
	w := m.Graph.Value("w")
	m.Graph.Initializers = nil
	b, err := ir.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	_ = w
	p := filepath.Join(dir, name)
	os.WriteFile(p, b, 0o644)
	return p
}

func TestCyclicGraph(t *testing.T) {
	dir := t.TempDir()
	// a = Add(x, b); b = Relu(a): each node needs the other's output.
	m := ir.NewGraph("g")
	x, _ := m.AddInput("x", ir.TensorOf(ir.Float, ir.D(2)))
	a := &ir.Value{Name: "a"}
	b := &ir.Value{Name: "b"}
	n1, _ := m.AddNode(&ir.Node{OpType: "Add"}, []*ir.Value{x, nil}, []*ir.Value{a})
	m.AddNode(&ir.Node{OpType: "Relu"}, []*ir.Value{a}, []*ir.Value{b})
	n1.SetInput(1, b)
	m.Outputs = append(m.Outputs, b)
	model := &ir.Model{IRVersion: 8, Opsets: []ir.OpsetID{{Domain: "", Version: 13}}, Graph: m}
	data, err := ir.Marshal(model)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "cycle.onnx")
	os.WriteFile(p, data, 0o644)
	code, _, stderr := qcc(t, "-passes=fold", "-o", filepath.Join(dir, "o.onnx"), p)
	if code != exitFail || !strings.Contains(stderr, "cycle") {
		t.Fatalf("exit %d, stderr %q; want a cycle error", code, stderr)
	}
}

// TestCorpusCLI runs the command on a corpus model with external data output.
func TestCorpusCLI(t *testing.T) {
	ms := corpus.Models(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "bert.onnx")
	in := ms[0].Path
	for _, m := range ms {
		if m.Name == "bert.opset13" {
			in = m.Path
		}
	}
	code, _, stderr := qcc(t, "-passes=fold", "-external-data=always", in, "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(out + ".data"); err != nil {
		t.Fatalf("no external data written: %v", err)
	}
	if _, err := ir.Load(out); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyEachAcrossLowering: -verify-each applies TensorRT's Q/DQ rules from qdq on,
// and stops applying them once fuse<target=ort;provider=cpu> lowers the Q/DQ form to ONNX
// Runtime's integer operators (the model records qcc.lowered); the explicit qdqcheck pass
// still refuses such a model, naming the operators.
func TestVerifyEachAcrossLowering(t *testing.T) {
	in, err := filepath.Abs("../../testdata/models/bert.opset13.onnx")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "cpu.onnx")
	code, _, stderr := qcc(t, "-verify-each", "-stats", "-passes=fold,qdq<ranges=const:4>,fuse<target=ort;provider=cpu>", in, "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "com.microsoft.QAttention") || !strings.Contains(stderr, "com.microsoft.MatMulIntegerToFloat") {
		t.Errorf("no QAttention or MatMulIntegerToFloat in the report:\n%s", stderr)
	}
	m, err := ir.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Meta("qcc.lowered"); got != "ort-cpu" {
		t.Errorf("qcc.lowered = %q, want ort-cpu", got)
	}
	code, _, stderr = qcc(t, "-passes=qdqcheck", out, "-o", filepath.Join(dir, "again.onnx"))
	if code == 0 || !strings.Contains(stderr, "com.microsoft.MatMulIntegerToFloat is an ONNX Runtime quantized operator") {
		t.Errorf("qdqcheck on the lowered model: exit %d, stderr:\n%s", code, stderr)
	}
}

// -stats with -emit=cuda says how many kernels were emitted and why a block has none.
func TestEmitCUDAStats(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join("..", "..", "testdata", "probes", "llama.opset17.onnx")
	code, _, errs := qcc(t, "-passes=fold,fuse<target=ort>", "-stats", "-emit=cuda", in, "-o", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"emit-cuda  kernels 4 for 7 blocks", "note: no kernel: embedding.0 (embedding/token)"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stats lack %q:\n%s", want, errs)
		}
	}
}

// TestPrintPipeline: -print-pipeline prints what -target/-precision stand for (alone on
// stdout, needing no model), says where it came from on stderr, lets -passes win and
// say so, and rejects what a target cannot do with exit code 2 and the reason.
func TestPrintPipeline(t *testing.T) {
	code, out, errs := qcc(t, "-target=ort-cpu", "-print-pipeline")
	if code != 0 || strings.TrimSpace(out) != "fold,qdq<disable=other$;pairs=per-reader;policy=linear>,fuse<opset=23;provider=cpu;target=ort>" ||
		!strings.Contains(errs, "from -target=ort-cpu -precision=int8") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, errs = qcc(t, "-target=tensorrt", "-passes=fold", "-print-pipeline")
	if code != 0 || strings.TrimSpace(out) != "fold" || !strings.Contains(errs, "-passes, which wins over -target=tensorrt") {
		t.Errorf("-passes with -target: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-target=ort-cpu", "-precision=fp8"}, "fake quantization"},
		{[]string{"-target=ort-cpu", "-precision=fp16"}, "no FP16 kernels"},
		{[]string{"-target=gpu"}, "unknown target"},
		{[]string{"-precision=int8"}, "needs -target"},
		{[]string{"-passes=fold", "-calib-data=x.npz"}, "applies to a -target pipeline"},
		{[]string{"-target=onnx", "-precision=fp32", "-calib-data=x.npz"}, "does not calibrate"},
	} {
		code, out, errs := qcc(t, append(tc.args, "-print-pipeline")...)
		if code != 2 || out != "" || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 saying %q", tc.args, code, out, errs, tc.want)
		}
	}
}

// TestTargetStatsReport: a -target run on the shipped model prints the summary first
// (the pipeline it ran, blocks, Q/DQ pairs), then the per-pass detail; -stats=json is one
// JSON object on stdout whose counts agree with the text; -report writes one HTML page
// that names the pipeline and reaches for nothing outside itself.
func TestTargetStatsReport(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	in := filepath.Join("..", "..", "testdata", "models", "bert.opset13.onnx")
	out := filepath.Join(dir, "out.onnx")
	page := filepath.Join(dir, "r.html")
	code, _, errs := qcc(t, "-target=tensorrt", "-calib-data=random:2", "-stats", "-report", page, in, "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	spec := "fold,qdq<data=random:2;pairs=shared;policy=full;residual=skip>,fuse<opset=17;target=onnx>,precision<data=random:2;type=fp16>"
	if !strings.HasPrefix(errs, "summary") || !strings.Contains(errs, "pipeline   "+spec+"  (from -target=tensorrt -precision=int8)") ||
		strings.Index(errs, "blocks ") > strings.Index(errs, "fold       nodes") {
		t.Errorf("-stats does not start with the summary and the pipeline:\n%s", errs)
	}
	m, err := ir.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := qdqcheck.Check(m); err != nil {
		t.Error(err)
	}
	q := 0
	for _, n := range m.Graph.Nodes() {
		if n.OpType == "QuantizeLinear" {
			q++
		}
		if n.Domain != "" {
			t.Errorf("tensorrt output has the non-standard operator %s.%s", n.Domain, n.OpType)
		}
	}
	if want := fmt.Sprintf("%d activation Q/DQ pairs", q); !strings.Contains(errs, want) {
		t.Errorf("summary lacks %q:\n%s", want, errs)
	}
	code, js, errs := qcc(t, "-target=tensorrt", "-calib-data=random:2", "-stats=json", in, "-o", filepath.Join(dir, "out2.onnx"))
	if code != 0 {
		t.Fatalf("-stats=json: exit %d: %s", code, errs)
	}
	var rec struct {
		Pipeline string
		Summary  struct {
			QDQ         int   `json:"qdq_pairs"`
			OutputBytes int64 `json:"output_bytes"`
		}
		Passes []struct{ Pass string }
	}
	if err := json.Unmarshal([]byte(js), &rec); err != nil {
		t.Fatalf("-stats=json is not JSON: %v\n%s", err, js)
	}
	st, _ := os.Stat(filepath.Join(dir, "out2.onnx"))
	if rec.Pipeline != spec || rec.Summary.QDQ != q || st == nil || rec.Summary.OutputBytes != st.Size() || len(rec.Passes) < 3 {
		t.Errorf("-stats=json: %+v; want pipeline %s, %d Q/DQ pairs, output %v bytes", rec, spec, q, st)
	}
	html, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	h := string(html)
	// (The one URL in it is the SVG namespace, a name, not a fetch.)
	if !strings.HasPrefix(h, "<!DOCTYPE html>") || !strings.Contains(h, "-target=tensorrt -precision=int8") ||
		regexp.MustCompile(`(src|href|url)[=(]["']?(https?:)?//`).MatchString(h) {
		t.Errorf("report page: not a self-contained page naming the target")
	}
}

// TestCPUProfile: -cpuprofile writes a profile go tool pprof reads (gzipped protobuf),
// and an unwritable path is a usage error that names the flag.
func TestCPUProfile(t *testing.T) {
	dir := t.TempDir()
	in := writeText(t, dir, "m.onnx", small)
	prof := filepath.Join(dir, "cpu.prof")
	if code, _, stderr := qcc(t, "-passes=fold", "-cpuprofile", prof, in, "-o", filepath.Join(dir, "out.onnx")); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(prof)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("profile is %d bytes and not gzip", len(b))
	}
	code, _, stderr := qcc(t, "-passes=fold", "-cpuprofile", filepath.Join(dir, "no", "such", "dir", "p"), in, "-o", filepath.Join(dir, "out2.onnx"))
	if code != exitUsage || !strings.Contains(stderr, "-cpuprofile") {
		t.Errorf("exit %d, stderr %q: want a usage error naming -cpuprofile", code, stderr)
	}
}
