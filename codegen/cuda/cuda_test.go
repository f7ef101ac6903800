package cuda

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/qcc-dev/qcc/codegen/cuda/nvcc"
	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/update"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
)

// goldenModels are the models whose generated files golden files pin: the BERT export
// the repository ships, and two small models written in the textual syntax that cover
// what BERT does not (skip+LayerNorm with its sum, LayerNorm without beta, FastGelu,
// QuickGelu after a bias, INT8 Q/DQ per tensor and per channel).
var goldenModels = []struct{ name, path string }{
	{"bert.opset13", "../../testdata/models/bert.opset13.onnx"},
	{"mix", "testdata/mix.onnx.txt"},
	{"qdq-ffn", "testdata/qdq-ffn.onnx.txt"},
}

// load reads an .onnx file or a model in the textual syntax, and runs fold,fuse on it
// (what `qcc -passes=fold,fuse -emit=cuda` does).
func load(t testing.TB, path string) *ir.Model {
	t.Helper()
	var m *ir.Model
	var err error
	if strings.HasSuffix(path, ".txt") {
		var src []byte
		if src, err = os.ReadFile(path); err == nil {
			m, err = text.Parse(string(src))
		}
	} else {
		m, err = ir.Load(path)
	}
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	p, err := pass.Parse("fold,fuse", passes.All)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true}); err != nil {
		t.Fatalf("%s: fold,fuse: %v", path, err)
	}
	return m
}

func planOf(t testing.TB, m *ir.Model, source string) *plan {
	t.Helper()
	p, err := analyse(m, source, sizer{defaultBatch, defaultSeq})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var generated = []string{"kernels.h", "kernels.cu", "check.cu"}

func TestGolden(t *testing.T) {
	for _, gm := range goldenModels {
		t.Run(gm.name, func(t *testing.T) {
			p := planOf(t, load(t, gm.path), filepath.Base(gm.path))
			files, err := Render(p)
			if err != nil {
				t.Fatal(err)
			}
			again, err := Render(planOf(t, load(t, gm.path), filepath.Base(gm.path)))
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range generated {
				if !bytes.Equal(files[name], again[name]) {
					t.Errorf("%s: two runs differ", name)
				}
				checkLayout(t, name, files[name])
				golden := filepath.Join("testdata", gm.name+"."+name+".golden")
				if *update.Golden {
					if err := os.WriteFile(golden, files[name], 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test ./codegen/cuda -update)", err)
				}
				if diff := cmp.Diff(string(want), string(files[name])); diff != "" {
					t.Errorf("%s differs from %s (-want +got):\n%s", name, golden, diff)
				}
			}
		})
	}
}

// checkLayout holds the emitted text to its fixed style: ASCII, no tabs, no trailing
// spaces, a final newline, and prototype lines within 100 columns. (Indentation is
// two spaces per level; continuation lines align with the first argument.)
func checkLayout(t *testing.T, name string, b []byte) {
	t.Helper()
	if len(b) == 0 || b[len(b)-1] != '\n' || bytes.HasSuffix(b, []byte("\n\n")) {
		t.Errorf("%s: must end in exactly one newline", name)
	}
	for i, line := range strings.Split(string(b), "\n") {
		for _, c := range []byte(line) {
			if c == '\t' || c > 0x7e || c < 0x20 {
				t.Errorf("%s:%d: tab or non-ASCII byte", name, i+1)
				break
			}
		}
		if strings.TrimRight(line, " ") != line {
			t.Errorf("%s:%d: trailing space", name, i+1)
		}
		if strings.HasPrefix(line, "cudaError_t ") && len(line) > lineWidth {
			t.Errorf("%s:%d: prototype line longer than %d", name, i+1, lineWidth)
		}
	}
}

// TestPlan checks what the generator makes of each golden model's blocks.
func TestPlan(t *testing.T) {
	want := map[string][]string{
		"bert.opset13": {"qcc_embed_layernorm_h64", "qcc_attention_n4_d16_qkv_mask", "qcc_skip_layernorm_h64", "qcc_bias_gelu_n256"},
		"mix":          {"qcc_skip_layernorm_h8", "qcc_bias_fast_gelu_n16", "qcc_bias_quick_gelu_n16", "qcc_layernorm_h8", "qcc_quantize_pc_c16_i1", "qcc_quantize_pt", "qcc_dequantize_pt"},
		"qdq-ffn":      {"qcc_bias_gelu_n4", "qcc_quantize_pt", "qcc_dequantize_pt", "qcc_dequantize_pc_c4_i1"},
	}
	for _, gm := range goldenModels {
		p := planOf(t, load(t, gm.path), gm.name)
		var got []string
		for _, k := range p.Kernels {
			got = append(got, k.Name)
		}
		if diff := cmp.Diff(want[gm.name], got); diff != "" {
			t.Errorf("%s kernels (-want +got):\n%s\nskipped: %v", gm.name, diff, p.Skipped)
		}
		if len(p.Skipped) > 0 {
			t.Errorf("%s: skipped %v", gm.name, p.Skipped)
		}
	}
}

// compiled remembers the kernels.cu files already compiled in this test binary, by
// their content past the first line (which names the model): the opset variants of an
// architecture generate the same kernels.
var compiled = struct {
	sync.Mutex
	by map[string]string
}{by: map[string]string{}}

// compileEmitted compiles an emitted folder for every architecture with warnings as
// errors: kernels.cu to an object and, when withCheck, check.cu linked with it into the
// harness (not run). The header must also be valid C. A kernels.cu compiled before
// under another name is not compiled again.
func compileEmitted(t *testing.T, dir, name string, withCheck bool) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(dir, "kernels.cu"))
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := bytes.Cut(src, []byte("\n"))
	sum := sha256.Sum256(body)
	key := hex.EncodeToString(sum[:])
	compiled.Lock()
	prev, seen := compiled.by[key]
	if !seen {
		compiled.by[key] = name
	}
	compiled.Unlock()
	if seen {
		t.Logf("%s: kernels.cu as %s's, compiled already", name, prev)
		return
	}
	ctx := context.Background()
	d, err := nvcc.Compile(ctx, dir, "-c", "kernels.cu", "-o", "kernels.o")
	if err != nil {
		t.Fatal(err)
	}
	msg := fmt.Sprintf("%s: nvcc (sm_%s): kernels.cu %.1fs", name, strings.Join(nvcc.Archs, ", sm_"), d.Seconds())
	if withCheck {
		d, err := nvcc.Compile(ctx, dir, "-o", "qcc_check", "check.cu", "kernels.o")
		if err != nil {
			t.Fatal(err)
		}
		msg += fmt.Sprintf(", check.cu + link %.1fs", d.Seconds())
	}
	t.Log(msg)
	if gcc, err := exec.LookPath("gcc"); err == nil {
		cmd := exec.Command(gcc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-x", "c", "kernels.h")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("kernels.h is not valid C: %v\n%s", err, out)
		}
	}
}

func TestCompileGolden(t *testing.T) {
	nvcc.Require(t)
	for _, gm := range goldenModels {
		t.Run(gm.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Emit(load(t, gm.path), dir, Options{Source: filepath.Base(gm.path)}); err != nil {
				t.Fatal(err)
			}
			compileEmitted(t, dir, gm.name, true)
		})
	}
}

// TestCompileProbeModels compiles the probe models' emitted kernels (causal
// com.microsoft.Attention, grouped-query and causal Attention-23, rows of 10 for the
// norms, GELU and Q/DQ), which the oracle emulates, with nvcc: every model's
// kernels.cu and check.cu in one translation unit and one nvcc run, linked into one
// program (not run) whose main calls each harness's. Each model's kernels.h becomes
// <model>.h, with its own include guard, and its check.cu (main and all) is put in a
// namespace of the model's; the headers both include are included once, first. The
// headers must also be valid C.
func TestCompileProbeModels(t *testing.T) {
	nvcc.Require(t)
	dir := t.TempDir()
	all := []string{"#include <cstdio>", "#include <vector>", ""}
	var checks []string
	kernels := map[string]string{}
	for i, pm := range probeModels {
		out := filepath.Join(t.TempDir(), pm.name)
		res, err := Emit(load(t, pm.path), out, Options{Source: filepath.Base(pm.path)})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range res.Kernels {
			if prev, ok := kernels[k]; ok {
				t.Fatalf("%s and %s both have kernel %s: they cannot share a translation unit", prev, pm.name, k)
			}
			kernels[k] = pm.name
		}
		if i == 0 {
			if err := os.CopyFS(dir, os.DirFS(out)); err != nil { // qcc/ and the first model's files
				t.Fatal(err)
			}
		}
		id := strings.ReplaceAll(pm.name, "-", "_")
		files := map[string]string{}
		for _, name := range generated {
			b, err := os.ReadFile(filepath.Join(out, name))
			if err != nil {
				t.Fatal(err)
			}
			files[name] = string(b)
		}
		h := strings.ReplaceAll(files["kernels.h"], "QCC_KERNELS_H_", fmt.Sprintf("QCC_KERNELS_H_%d_", i))
		if strings.Count(h, fmt.Sprintf("QCC_KERNELS_H_%d_", i)) < 2 {
			t.Fatalf("%s: kernels.h has no include guard QCC_KERNELS_H_", pm.name)
		}
		write := func(name, src string) {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write(id+".h", h)
		for _, name := range []string{"kernels.cu", "check.cu"} {
			src := files[name]
			if strings.Count(src, `#include "kernels.h"`) != 1 {
				t.Fatalf("%s: %s does not include kernels.h once", pm.name, name)
			}
			write(id+"_"+name, strings.Replace(src, `#include "kernels.h"`, `#include "`+id+`.h"`, 1))
		}
		all = append(all, `#include "`+id+`_kernels.cu"`)
		checks = append(checks, "namespace "+id+" {", `#include "`+id+`_check.cu"`, "}  // namespace "+id, "")
		if gcc, err := exec.LookPath("gcc"); err == nil {
			cmd := exec.Command(gcc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-x", "c", id+".h")
			cmd.Dir = dir
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s: kernels.h is not valid C: %v\n%s", pm.name, err, out)
			}
		}
	}
	all = append(append(append(all, "", `#include "qcc/check.cuh"`, ""), checks...), "int main(int argc, char** argv) {", "  int rc = 0;")
	for _, pm := range probeModels {
		all = append(all, fmt.Sprintf("  rc |= %s::main(argc, argv);", strings.ReplaceAll(pm.name, "-", "_")))
	}
	all = append(all, "  return rc;", "}", "")
	if err := os.WriteFile(filepath.Join(dir, "probes.cu"), []byte(strings.Join(all, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := nvcc.Compile(context.Background(), dir, "-o", "qcc_check_probes", "probes.cu")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d models, %d kernels: nvcc (sm_%s) %.1fs", len(probeModels), len(kernels), strings.Join(nvcc.Archs, ", sm_"), d.Seconds())
}

// TestCorpus emits CUDA for every model of the shared corpus after fold,fuse and
// compiles it for sm_80 and sm_90: the first model of each architecture fully (kernels.cu,
// and check.cu linked into the harness), the others' kernels.cu only, and only when it
// differs from one compiled before (opset variants generate the same kernels).
// Without nvcc the models are still emitted (and the test fails under
// QCC_REQUIRE_ORT=1).
func TestCorpus(t *testing.T) {
	models := corpus.Models(t, "", "trained")
	_, noNVCC := nvcc.Path()
	if noNVCC != nil {
		nvcc.Require(t) // fails under QCC_REQUIRE_ORT=1
	}
	start := time.Now()
	family := map[string]bool{}
	for _, cm := range models {
		t.Run(cm.Name, func(t *testing.T) {
			m := load(t, cm.Path)
			dir := t.TempDir()
			res, err := Emit(m, dir, Options{Source: filepath.Base(cm.Path)})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Instances) == 0 {
				t.Fatalf("no block got a kernel (skipped: %v)", res.Skipped)
			}
			for _, s := range res.Skipped {
				// DeBERTa's embedding stays decomposed (no position table): its LayerNorm is
				// a layernorm block of its own.
				if !strings.HasPrefix(cm.Name, "deberta") || !strings.HasPrefix(s, "embedding.0 (embedding/layernorm+mask)") {
					t.Errorf("no kernel for %s", s)
				}
			}
			arch, _, _ := strings.Cut(cm.Name, ".")
			first := !family[arch]
			family[arch] = true
			if noNVCC == nil {
				compileEmitted(t, dir, cm.Name, first)
			}
		})
	}
	t.Logf("corpus: %d models emitted and compiled in %.0fs", len(models), time.Since(start).Seconds())
}

// TestCheckData writes the check data with ONNX Runtime and checks that it is what
// check.cu expects and what the kernels compute: the manifest names ONNX Runtime on
// CPU, every file has its tensor's size and hash, check.cu loads exactly these files
// with these sizes, and an independent Go evaluation of each block's formula (the
// kernels' arithmetic) agrees with the outputs ORT computed.
func TestCheckData(t *testing.T) {
	orttest.RequireLib(t)
	models := append([]struct{ name, path string }{}, goldenModels...)
	if dir, err := corpusDir(); err == nil {
		for _, n := range []string{"deberta.opset13", "deberta-v2.opset17", "roberta.opset13", "albert.opset13", "distilbert.opset13"} {
			models = append(models, struct{ name, path string }{n, filepath.Join(dir, n+".onnx")})
		}
	}
	for _, gm := range models {
		t.Run(gm.name, func(t *testing.T) {
			m := load(t, gm.path)
			dir := t.TempDir()
			res, err := Emit(m, dir, Options{Source: filepath.Base(gm.path), CheckData: true})
			if err != nil {
				t.Fatal(err)
			}
			if !res.CheckData {
				t.Fatal("no check data written")
			}
			verifyCheckData(t, planOf(t, m, filepath.Base(gm.path)), dir)
		})
	}
}

func corpusDir() (string, error) {
	root, err := corpus.Root()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "..", "shared", "models")
	_, err = os.Stat(filepath.Join(dir, "README.md"))
	return dir, err
}

func verifyCheckData(t *testing.T, p *plan, dir string) {
	t.Helper()
	js, err := os.ReadFile(filepath.Join(dir, "check", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var man manifest
	if err := json.Unmarshal(js, &man); err != nil {
		t.Fatal(err)
	}
	if man.Reference.Runtime != "onnxruntime" || man.Reference.Version != ort.Version() || man.Reference.Provider != "CPUExecutionProvider" {
		t.Errorf("manifest reference = %+v, want onnxruntime %s on CPU", man.Reference, ort.Version())
	}
	checkCU, err := os.ReadFile(filepath.Join(dir, "check.cu"))
	if err != nil {
		t.Fatal(err)
	}
	if len(man.Instances) != len(p.Instances) {
		t.Fatalf("manifest has %d instances, plan %d", len(man.Instances), len(p.Instances))
	}
	for i, in := range p.Instances {
		mb := man.Instances[i]
		if mb.Block != in.ID || mb.Kernel != in.Kernel.Name || len(mb.Tensors) != len(in.Tensors) {
			t.Errorf("manifest instance %d = %s/%s with %d tensors, want %s/%s with %d", i, mb.Block, mb.Kernel, len(mb.Tensors), in.ID, in.Kernel.Name, len(in.Tensors))
			continue
		}
		for _, d := range in.Dims {
			if mb.Dims[d.Name] != d.Value {
				t.Errorf("%s: dim %s = %d, want %d", in.ID, d.Name, mb.Dims[d.Name], d.Value)
			}
		}
		arrays := map[string][]float64{}
		for j, tt := range in.Tensors {
			mt := mb.Tensors[j]
			wantRole, wantSource := "input", tt.Source
			if tt.Out {
				wantRole, wantSource = "expected", "onnxruntime"
			}
			size := tt.Count() * int64(tt.DType.Bits()/8)
			if mt.Param != tt.Param || mt.File != tt.File || !cmp.Equal(mt.Shape, tt.Shape) || mt.Role != wantRole || mt.Source != wantSource || mt.Bytes != size {
				t.Errorf("%s: manifest tensor %+v does not match the plan's %s %v (%d bytes)", in.ID, mt, tt.Param, tt.Shape, size)
			}
			data, err := os.ReadFile(filepath.Join(dir, "check", mt.File))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			if int64(len(data)) != size || hex.EncodeToString(sum[:]) != mt.SHA256 {
				t.Errorf("%s: %d bytes with sha256 %x, manifest says %d and %s", mt.File, len(data), sum, size, mt.SHA256)
			}
			load := []byte("h.Load<" + tt.CType() + ">(\"" + tt.File + "\", " + cInt(tt.Count()) + ")")
			if !bytes.Contains(checkCU, load) {
				t.Errorf("check.cu does not load %s", load)
			}
			arrays[tt.Param] = decode(tt.DType, data)
		}
		want := map[string][]float64{}
		for _, tt := range in.Tensors {
			if tt.Out {
				want[tt.Param] = arrays[tt.Param]
			}
		}
		for param, e := range compareOutputs(in, emulate(t, in, arrays), want) {
			if e.bad > 0 {
				t.Errorf("%s: %s: %d of %d elements disagree; first %s", in.ID, param, e.bad, e.n, e.first)
			}
		}
	}
}

// TestCommand runs the qcc command: -emit=cuda needs -o, and writes the folder.
func TestCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the qcc command")
	}
	root, err := corpus.Root()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "qcc")
	build := exec.Command("go", "build", "-o", bin, "./cmd/qcc")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	model := filepath.Join(root, "testdata", "models", "bert.opset13.onnx")
	out, err := exec.Command(bin, "-passes=fold,fuse", "-emit=cuda", model).CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "-emit=cuda needs an output folder") {
		t.Errorf("without -o: exit %d, %s", code, out)
	}
	dir := filepath.Join(t.TempDir(), "out")
	cmd := exec.Command(bin, "-passes=fold,fuse", "-emit=cuda", "-o", dir, model)
	cmd.Env = append(os.Environ(), ort.EnvLib+"=/nonexistent/libonnxruntime.so")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("qcc -emit=cuda: %v\n%s", err, out)
	} else if !strings.Contains(string(out), "check data not written") {
		t.Errorf("without ONNX Runtime qcc should say the check data was not written; said %q", out)
	}
	for _, f := range []string{"kernels.h", "kernels.cu", "check.cu", "qcc/common.cuh", "qcc/check.cuh"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	golden, _ := os.ReadFile(filepath.Join("testdata", "bert.opset13.kernels.h.golden"))
	got, _ := os.ReadFile(filepath.Join(dir, "kernels.h"))
	if !bytes.Equal(golden, got) {
		t.Error("qcc -emit=cuda wrote a kernels.h other than the golden one")
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestGPUCheckScriptWithoutGPU runs scripts/cuda-gpu-check.sh where there is no GPU: it
// must say so and exit 0. (On a machine with a GPU the test is skipped: the script
// would run every check.)
func TestGPUCheckScriptWithoutGPU(t *testing.T) {
	if out, err := exec.Command("nvidia-smi", "-L").CombinedOutput(); err == nil && len(out) > 0 {
		t.Skip("a GPU is present; run scripts/cuda-gpu-check.sh itself")
	}
	root, err := corpus.Root()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "cuda-gpu-check.sh"))
	cmd.Env = append(os.Environ(), "QCC_GPU_CHECK_DRY=0")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "no NVIDIA GPU here") {
		t.Errorf("cuda-gpu-check.sh without a GPU: %v\n%s", err, out)
	}
}
