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
	"github.com/qcc-dev/qcc/target"
)

// TestTargetsCorpus: every corpus model compiled for each target at each precision this
// build expands (-target=X -precision=P, calibrated on 2 random batches) verifies after
// every pass and runs in ONNX Runtime's CPU provider close to the float model: cosine
// >= 0.99 with Q/DQ, max |diff| <= 1e-4 without. tensorrt's and onnx's outputs use
// standard operators only and pass TensorRT's placement checker (qdqcheck); ort-cpu's
// INT8 output has its GEMMs in integer kernels (MatMulIntegerToFloat) and no Q/DQ GEMM
// left. tensorrt's INT8, FP8 and FP16 outputs are typed FP16: no MatMul or Gemm with a
// float32 output, no Cast pair that cancels, no value cast twice to one type.
func TestTargetsCorpus(t *testing.T) {
	orttest.RequireLib(t)
	var rows []string
	models := corpus.Models(t, "", "trained", "invalid")
	for _, tg := range target.Targets {
		for _, prec := range tg.Available(passes.All) {
			e, err := target.Expand(tg.Name, prec, passes.All)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range e.Pipeline.Steps {
				if s.Pass.Name == "qdq" {
					s.Opts["data"] = "random:2" // as -calib-data=random:2
				}
			}
			spec := e.Spec()
			for _, cm := range models {
				tg, prec, cm := tg, prec, cm
				t.Run(tg.Name+"/"+string(prec)+"/"+cm.Name, func(t *testing.T) {
					m := ortcheck.Load(t, cm.Path)
					// As qcc -verify-each checks: TensorRT's rules until a pass lowers the
					// Q/DQ form to a runtime's integer operators.
					ortcheck.Pipeline(t, m, spec, passes.All, &pass.Instrumentation{VerifyEach: true, Verifiers: []func(*ir.Model) error{qdqcheck.Verifier}})
					ops, _ := opCounts(m)
					standard := tg.Name == "tensorrt" || tg.Name == "onnx"
					for op := range ops {
						if standard && strings.Contains(op, ".") {
							t.Errorf("%s emitted the non-standard operator %s", spec, op)
						}
					}
					if standard {
						if err := qdqcheck.Check(m); err != nil {
							t.Errorf("%s: %v", spec, err)
						}
					}
					if tg.Name == "tensorrt" && prec != target.FP32 {
						// TensorRT 11 runs what the model declares: typed FP16 throughout,
						// the quantized GEMMs included, with no Cast pair that cancels.
						if n := gemmFP32(m); n > 0 {
							t.Errorf("%s: %d MatMul/Gemm with a float32 output", spec, n)
						}
						checkTyped(t, m)
					}
					q := ops["QuantizeLinear"] + ops["com.microsoft.MatMulIntegerToFloat"]
					if (prec == target.INT8 || prec == target.FP8) && q == 0 {
						t.Errorf("%s: nothing quantized", spec)
					}
					if tg.Name == "ort-cpu" && prec == target.INT8 {
						if ops["com.microsoft.MatMulIntegerToFloat"] == 0 {
							t.Errorf("%s: no MatMulIntegerToFloat", spec)
						}
						for _, n := range m.Graph.Nodes() {
							if n.OpType == "MatMul" && qdqcheck.Dequantized(n.Input(0)) && qdqcheck.Dequantized(n.Input(1)) && n.Input(1).Const != nil {
								t.Errorf("%s: Q/DQ MatMul %s left for ORT's slower path", spec, n.Name)
							}
						}
					}
					inputs := ortcheck.Inputs(t, cm)
					want := ortcheck.Run(t, ortcheck.Reference(cm), inputs, ort.OptDisabled)
					level := ort.OptAll
					if prec == target.FP8 {
						level = fp8Level // ORT refuses FP8 Q/DQ GEMMs from extended on
					}
					got := ortcheck.RunModel(t, m, inputs, level)
					worst, diff := math.Inf(1), ortcheck.MaxDiff(t, want, got)
					for name, w := range want {
						c, err := ndarray.CosineSimilarity(w, got[name])
						if err != nil {
							t.Fatal(err)
						}
						worst = math.Min(worst, c)
					}
					if prec == target.FP32 && !(diff <= 1e-4) {
						t.Errorf("%s: outputs differ from the float model's by %g (> 1e-4)", spec, diff)
					}
					if !(worst >= 0.99) {
						t.Errorf("%s: output cosine %.5f to the float model, want >= 0.99", spec, worst)
					}
					rows = append(rows, fmt.Sprintf("%-8s %-4s %-26s nodes %3d  Q %2d  cos %.5f  max|diff| %.2g", tg.Name, prec, cm.Name, countNodes(m), ops["QuantizeLinear"], worst, diff))
				})
			}
		}
	}
	sort.Strings(rows)
	t.Logf("each target on the corpus:\n%s", strings.Join(rows, "\n"))
}

// gemmFP32 counts the MatMul and Gemm nodes whose output is float32 (what TensorRT 11
// runs in FP32; -stats counts them the same way).
func gemmFP32(m *ir.Model) int {
	n := 0
	for _, x := range m.Graph.Nodes() {
		if (x.OpType == "MatMul" || x.OpType == "Gemm") && x.Domain == "" && x.Output(0).Type != nil && x.Output(0).Type.DType == ir.Float {
			n++
		}
	}
	return n
}
