package tests

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	qeval "github.com/qcc-dev/qcc/quant/eval"
)

// runPipeline runs a pipeline on m with -verify-each and the TensorRT placement checker
// as a verifier (what the command's -verify-each does after qdq).
func runPipeline(t *testing.T, m *ir.Model, spec string) {
	t.Helper()
	p, err := pass.Parse(spec, passes.All)
	if err != nil {
		t.Fatal(err)
	}
	inst := &pass.Instrumentation{VerifyEach: true, Verifiers: []func(*ir.Model) error{qdqcheck.Check}}
	if _, err := p.Run(context.Background(), m, inst); err != nil {
		t.Fatal(err)
	}
}

// quantizers counts the Q/DQ nodes of a model per quantizer kind (from the groups qdq
// records on them): activations (QuantizeLinear nodes) and int8 weights
// (DequantizeLinear of a constant).
func quantizers(m *ir.Model) (acts, weights map[string]int, q, dq int) {
	acts, weights = map[string]int{}, map[string]int{}
	for _, n := range m.Graph.Nodes() {
		var into map[string]int
		switch n.OpType {
		case "QuantizeLinear":
			q++
			into = acts
		case "DequantizeLinear":
			dq++
			if n.Input(0).Const != nil {
				into = weights
			}
		}
		if into == nil {
			continue
		}
		groups, _ := n.Meta(qdqcheck.GroupKey)
		kinds := map[string]bool{}
		for _, g := range strings.Split(groups, ",") {
			if _, k, ok := strings.Cut(g, "/"); ok {
				kinds[k] = true
			}
		}
		for k := range kinds {
			into[k]++
		}
	}
	return acts, weights, q, dq
}

func kindString(acts, weights map[string]int) string {
	var parts []string
	for _, k := range []string{"qkv", "attn_matmul", "attn_out", "ffn", "residual", "other"} {
		if acts[k]+weights[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d/%dw", k, acts[k], weights[k]))
		}
	}
	return strings.Join(parts, " ")
}

// TestQDQCorpus: every corpus model quantized with fold,fuse<target=onnx>,qdq<policy=attention>
// and with fold,qdq,fuse<target=onnx> passes the TensorRT placement checker after every
// pass, keeps its Q/DQ pairs through fuse, is accepted by onnx.checker, and ONNX
// Runtime's INT8 (QDQ) outputs have cosine similarity >= 0.99 to the float model's on the
// reference input.
func TestQDQCorpus(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	pipelines := []struct{ name, first, then string }{
		{"fuse-then-qdq", "fold,fuse<target=onnx>,qdq<data=random:4;policy=attention>", ""},
		{"qdq-then-fuse", "fold,qdq<data=random:4>", "fuse<target=onnx>"},
	}
	var rows, outputs []string
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		for _, pl := range pipelines {
			cm, pl := cm, pl
			t.Run(cm.Name+"/"+pl.name, func(t *testing.T) {
				m, err := ir.Load(cm.Path)
				if err != nil {
					t.Fatal(err)
				}
				runPipeline(t, m, pl.first)
				acts, weights, q, dq := quantizers(m)
				if q == 0 {
					t.Fatalf("no quantizers placed")
				}
				if acts["qkv"] == 0 || weights["qkv"] == 0 || acts["ffn"] == 0 || acts["attn_out"] == 0 {
					t.Errorf("placement misses a kind: %s", kindString(acts, weights))
				}
				if pl.then != "" {
					runPipeline(t, m, pl.then)
					if _, _, q2, dq2 := quantizers(m); q2 != q || dq2 != dq {
						t.Errorf("%s changed the Q/DQ nodes: %d/%d -> %d/%d", pl.then, q, dq, q2, dq2)
					}
				}
				if err := qdqcheck.Check(m); err != nil {
					t.Fatal(err)
				}
				if got := m.Meta(qdqcheck.PolicyKey); got == "" {
					t.Errorf("no %s metadata", qdqcheck.PolicyKey)
				}
				outPath := filepath.Join(dir, cm.Name+"."+pl.name+".onnx")
				if err := ir.Save(m, outPath, ir.SaveOptions{}); err != nil {
					t.Fatal(err)
				}
				outputs = append(outputs, outPath)
				inputs, err := npz.Read(cm.Inputs)
				if err != nil {
					t.Fatal(err)
				}
				want := runORT(t, referenceFor(cm), inputs, ort.OptDisabled)
				worst := math.Inf(1)
				for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptAll} {
					got := runORT(t, outPath, inputs, level)
					for name, w := range want {
						g := got[name]
						if g == nil {
							t.Fatalf("output %q missing", name)
						}
						cos, err := ndarray.CosineSimilarity(w, g)
						if err != nil {
							t.Fatal(err)
						}
						if !(cos >= 0.99) {
							t.Errorf("ORT level %v: output %s cosine similarity %.5f < 0.99", level, name, cos)
						}
						worst = math.Min(worst, cos)
					}
				}
				rows = append(rows, fmt.Sprintf("%-26s %-13s Q %3d DQ %3d  %-62s cos>=%.5f", cm.Name, pl.name, q, dq, kindString(acts, weights), worst))
			})
		}
	}
	sort.Strings(rows)
	t.Logf("qdq over the corpus (activations/weights per kind):\n%s", strings.Join(rows, "\n"))
	checkONNX(t, outputs)
}

// TestQDQTrainedAccuracy: the trained classifier calibrated on its calib.npz keeps its
// accuracy on eval.npz (the first 1000 of its 2000 examples, to stay fast) within 2
// points of float under every policy.
func TestQDQTrainedAccuracy(t *testing.T) {
	orttest.RequireLib(t)
	dir := corpus.Dir(t)
	model := filepath.Join(dir, "trained", "bert-cls-trained.opset13.onnx")
	eval, err := npz.Read(filepath.Join(dir, "trained", "eval.npz"))
	if err != nil {
		t.Skipf("no eval data: %v", err)
	}
	const rows = 1000
	labels := eval["labels"].Int64s()[:rows]
	inputs := map[string]*ndarray.Array{}
	for _, k := range []string{"input_ids", "attention_mask", "token_type_ids"} {
		a := eval[k]
		inputs[k] = ndarray.FromInt64([]int64{rows, a.Shape[1]}, a.Int64s()[:rows*int(a.Shape[1])])
	}
	accuracy := func(path string) float64 {
		s, err := ort.NewSession(path, ort.Options{OptLevel: ort.OptAll})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		out, err := s.Run(inputs)
		if err != nil {
			t.Fatal(err)
		}
		logits := out["logits"]
		if logits == nil {
			t.Fatalf("no logits output")
		}
		right, err := qeval.CountRight(logits, labels)
		if err != nil {
			t.Fatal(err)
		}
		return float64(right) / float64(len(labels))
	}
	fp32 := accuracy(model)
	var report []string
	for _, policy := range []string{"linear", "attention", "full"} {
		m, err := ir.Load(model)
		if err != nil {
			t.Fatal(err)
		}
		runPipeline(t, m, "fold,qdq<data="+filepath.Join(dir, "trained", "calib.npz")+";policy="+policy+">")
		path := filepath.Join(t.TempDir(), policy+".onnx")
		if err := ir.Save(m, path, ir.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		acc := accuracy(path)
		if acc < fp32-0.02 {
			t.Errorf("policy %s: int8 accuracy %.4f, float %.4f: more than 2 points lost", policy, acc, fp32)
		}
		report = append(report, fmt.Sprintf("%-9s int8 %.4f (float %.4f)", policy, acc, fp32))
	}
	t.Logf("bert-cls-trained on %d eval.npz examples, calibrated on calib.npz (percentile:99.99):\n%s", rows, strings.Join(report, "\n"))
}

// TestQDQCorpusORTCPU: every corpus model quantized with fold,qdq<pairs=per-reader> and then
// fused for ONNX Runtime's CPU provider (fuse<target=ort;provider=cpu>) runs in ORT with
// the same numbers as the Q/DQ model it came from (cosine >= 0.9999 at every ORT level; the
// integer kernels are the ones ORT itself picks for the Q/DQ form) and cosine >= 0.99 to the
// float model; every non-DeBERTa model's attention becomes one QAttention per layer and its
// other quantized matmuls MatMulIntegerToFloat, with no Q/DQ matmul left.
func TestQDQCorpusORTCPU(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	var rows []string
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		cm := cm
		t.Run(cm.Name, func(t *testing.T) {
			m, err := ir.Load(cm.Path)
			if err != nil {
				t.Fatal(err)
			}
			runPipeline(t, m, "fold,qdq<data=random:4;pairs=per-reader>")
			qdqPath := filepath.Join(dir, cm.Name+".qdq.onnx")
			if err := ir.Save(m, qdqPath, ir.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			inputs, err := npz.Read(cm.Inputs)
			if err != nil {
				t.Fatal(err)
			}
			float := runORT(t, referenceFor(cm), inputs, ort.OptDisabled)
			levels := []ort.OptLevel{ort.OptDisabled, ort.OptAll}
			qdqOut := map[ort.OptLevel]map[string]*ndarray.Array{}
			for _, level := range levels {
				qdqOut[level] = runORT(t, qdqPath, inputs, level)
			}
			// Without an opset raise quantized attention becomes QAttention; with opset=23
			// the standard Attention over MatMulIntegerToFloat projections.
			for _, v := range []struct{ opts, attention string }{
				{"", "QAttention"},
				{";opset=23", "Attention"},
			} {
				m, err := ir.Load(qdqPath)
				if err != nil {
					t.Fatal(err)
				}
				pipeline := "fuse<target=ort;provider=cpu" + v.opts + ">"
				p, err := pass.Parse(pipeline, passes.All)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := p.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true}); err != nil {
					t.Fatal(err)
				}
				ops := map[string]int{}
				for _, n := range m.Graph.Nodes() {
					ops[n.OpType]++
					if n.OpType == "MatMul" {
						if a, _ := n.Input(0).Producer(); a != nil && a.OpType == "DequantizeLinear" {
							if b, _ := n.Input(1).Producer(); b != nil && b.OpType == "DequantizeLinear" && b.Input(0).Const != nil {
								t.Errorf("%s: Q/DQ MatMul %s left", pipeline, n.Name)
							}
						}
					}
				}
				if !strings.Contains(cm.Name, "deberta") && (ops[v.attention] != 2 || ops["QAttention"]+ops["Attention"] != 2) {
					t.Errorf("%s: %d QAttention and %d Attention, want one %s per layer (2)", pipeline, ops["QAttention"], ops["Attention"], v.attention)
				}
				if ops["MatMulIntegerToFloat"] == 0 {
					t.Errorf("%s: no MatMulIntegerToFloat", pipeline)
				}
				outPath := filepath.Join(dir, cm.Name+".cpu.onnx")
				if err := ir.Save(m, outPath, ir.SaveOptions{}); err != nil {
					t.Fatal(err)
				}
				worstQ, worstF, diff := math.Inf(1), math.Inf(1), 0.0
				for _, level := range levels {
					qdq := qdqOut[level]
					got := runORT(t, outPath, inputs, level)
					diff = math.Max(diff, maxDiff(t, qdq, got))
					for name, w := range float {
						cq, err := ndarray.CosineSimilarity(qdq[name], got[name])
						if err != nil {
							t.Fatal(err)
						}
						cf, err := ndarray.CosineSimilarity(w, got[name])
						if err != nil {
							t.Fatal(err)
						}
						if !(cq >= 0.9999) {
							t.Errorf("%s, ORT level %v: output %s cosine %.6f to the Q/DQ model's, want >= 0.9999", pipeline, level, name, cq)
						}
						if !(cf >= 0.99) {
							t.Errorf("%s, ORT level %v: output %s cosine %.5f to float, want >= 0.99", pipeline, level, name, cf)
						}
						worstQ, worstF = math.Min(worstQ, cq), math.Min(worstF, cf)
					}
				}
				rows = append(rows, fmt.Sprintf("%-26s %-34s QAttention %d Attention %d MatMulIntegerToFloat %2d  vs QDQ: cos >= %.7f max |diff| %.2g; cos to float >= %.5f",
					cm.Name, pipeline, ops["QAttention"], ops["Attention"], ops["MatMulIntegerToFloat"], worstQ, diff, worstF))
			}
		})
	}
	sort.Strings(rows)
	t.Logf("fold,qdq then fuse<target=ort;provider=cpu[;opset=23]>:\n%s", strings.Join(rows, "\n"))
}
