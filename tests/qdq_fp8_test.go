package tests

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
)

// fp8Level is the ORT optimisation level FP8 Q/DQ models run at: from extended on, ORT
// 1.30's CPU provider fuses FP8 Q/DQ around float32 GEMMs into integer operators
// (MatMulIntegerToFloat, QGemm) and moves them through Transposes that take no float8
// at opset 19, then refuses the graph it made (microsoft/onnxruntime#22269).
const fp8Level = ort.OptBasic

// TestFP8Corpus: every corpus model with FP8 (float8e4m3fn) Q/DQ, placed before or after
// fuse<target=onnx> and in TensorRT's placement typed FP16, is raised to opset 19,
// passes TensorRT's placement checker after every pass (FP8 rules included: every GEMM
// input FP8), runs in ONNX Runtime with outputs of cosine similarity >= 0.99 to the
// float model's (the FP16-typed one with every float16 node's outputs rounded,
// ortcheck.Emulate), and a second qdq<dtype=fp8> changes nothing. TensorRT's FP8+FP16
// output has no MatMul or Gemm whose output is float32.
func TestFP8Corpus(t *testing.T) {
	orttest.RequireLib(t)
	pipelines := []struct{ name, spec string }{
		{"qdq-then-fuse", "fold,qdq<dtype=fp8;data=random:4>,fuse<target=onnx>"},
		{"fuse-then-qdq", "fold,fuse<target=onnx>,qdq<dtype=fp8;data=random:4;policy=attention>"},
		{"tensorrt-fp16", "fold,qdq<policy=full;residual=skip;pairs=shared;dtype=fp8;data=random:4>,fuse<target=onnx;opset=17>,precision<type=fp16>"},
	}
	var rows []string
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		for _, pl := range pipelines {
			cm, pl := cm, pl
			t.Run(cm.Name+"/"+pl.name, func(t *testing.T) {
				m := ortcheck.Load(t, cm.Path)
				ortcheck.Pipeline(t, m, pl.spec, passes.All, &pass.Instrumentation{VerifyEach: true, Verifiers: []func(*ir.Model) error{qdqcheck.Verifier}})
				if v := m.Opset(""); v != 19 {
					t.Errorf("opset %d, want 19", v)
				}
				if err := qdqcheck.Check(m); err != nil {
					t.Fatal(err)
				}
				ops, _ := opCounts(m)
				fp8W, gemm32 := 0, 0
				for _, n := range m.Graph.Nodes() {
					if n.OpType == "DequantizeLinear" && n.Input(0).Const != nil && n.Input(0).Const.DType == ir.Float8E4M3FN {
						fp8W++
					}
					if (n.OpType == "MatMul" || n.OpType == "Gemm") && n.Output(0).Type != nil && n.Output(0).Type.DType == ir.Float {
						gemm32++
					}
				}
				if ops["QuantizeLinear"] == 0 || fp8W == 0 {
					t.Fatalf("%d activation pairs, %d FP8 weights", ops["QuantizeLinear"], fp8W)
				}
				typed := strings.Contains(pl.spec, "precision")
				if typed && gemm32 > 0 {
					t.Errorf("%d MatMul/Gemm left float32 after FP16 typing", gemm32)
				}
				run := m
				if typed {
					e, err := ortcheck.Emulate(m, ir.Float16)
					if err != nil {
						t.Fatal(err)
					}
					run = e
					ortcheck.RunModel(t, m, ortcheck.Inputs(t, cm), fp8Level) // ORT runs the typed model itself
				}
				inputs := ortcheck.Inputs(t, cm)
				want := ortcheck.Run(t, ortcheck.Reference(cm), inputs, ort.OptDisabled)
				worst := math.Inf(1)
				for _, level := range []ort.OptLevel{ort.OptDisabled, fp8Level} {
					got := ortcheck.RunModel(t, run, inputs, level)
					for name, w := range want {
						c, err := ndarray.CosineSimilarity(w, got[name])
						if err != nil {
							t.Fatal(err)
						}
						if !(c >= 0.99) {
							t.Errorf("ORT level %v: output %s cosine %.5f to float, want >= 0.99", level, name, c)
						}
						worst = math.Min(worst, c)
					}
				}
				before := ortcheck.Text(t, m)
				q := pl.spec[strings.Index(pl.spec, "qdq<"):]
				q = q[:strings.Index(q, ">")+1]
				ortcheck.Pipeline(t, m, q, passes.All, &pass.Instrumentation{VerifyEach: true})
				if ortcheck.Text(t, m) != before {
					t.Errorf("a second %s changed the model", q)
				}
				rows = append(rows, fmt.Sprintf("%-26s %-14s Q %3d  fp8 weights %3d  MatMul/Gemm fp32 %2d  cos>=%.5f", cm.Name, pl.name, ops["QuantizeLinear"], fp8W, gemm32, worst))
			})
		}
	}
	sort.Strings(rows)
	t.Logf("FP8 Q/DQ over the corpus:\n%s", strings.Join(rows, "\n"))
}
