package tests

import (
	"context"
	"errors"
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
)

// runStats runs a pipeline like runPipeline and returns the counts of its last pass.
func runStats(t *testing.T, m *ir.Model, spec string) map[string]int {
	t.Helper()
	p, err := pass.Parse(spec, passes.All)
	if err != nil {
		t.Fatal(err)
	}
	inst := &pass.Instrumentation{VerifyEach: true, Verifiers: []func(*ir.Model) error{qdqcheck.Check}}
	rep, err := p.Run(context.Background(), m, inst)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, st := range rep.Stats {
		for k, v := range st.Counts {
			counts[k] += v
		}
	}
	return counts
}

// TestQDQEveryPolicy: every corpus model under every policy, with qdq before and after
// fuse<target=onnx;opset=17>, passes the TensorRT placement checker after every pass.
// Beyond the checker: the attention scale moved onto Q in every non-DeBERTa model under
// attention and full; the classifier head of bert-cls (pooler M = batch, classifier
// N = 2) stays float; DeBERTa's c2p and p2c matmuls are quantized with Q·Kᵀ; with
// policy=full (residual=skip) no residual Add reads a quantized GEMM output. The
// policy=full, qdq-first models are run in ONNX Runtime: cosine >= 0.99 to float.
func TestQDQEveryPolicy(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	var rows []string
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		for _, policy := range []string{"linear", "attention", "full"} {
			for _, order := range []string{"qdq-fuse", "fuse-qdq"} {
				cm, policy, order := cm, policy, order
				t.Run(cm.Name+"/"+policy+"/"+order, func(t *testing.T) {
					m, err := ir.Load(cm.Path)
					if err != nil {
						t.Fatal(err)
					}
					ranges := "ranges=const:4"
					numeric := policy == "full" && order == "qdq-fuse"
					if numeric {
						ranges = "data=random:2"
					}
					q := "qdq<policy=" + policy + ";" + ranges + ">"
					spec := "fold," + q + ",fuse<target=onnx;opset=17>"
					if order == "fuse-qdq" {
						spec = "fold,fuse<target=onnx;opset=17>," + q
					}
					counts := runStats(t, m, spec)
					if err := qdqcheck.Check(m); err != nil {
						t.Fatal(err)
					}
					deberta := strings.Contains(cm.Name, "deberta")
					if policy != "linear" && !deberta {
						// The scale is on Q (DistilBERT's export puts it there; the others
						// had it moved): no quantized Q·Kᵀ is scaled afterwards.
						for _, n := range m.Graph.Nodes() {
							if s := scaledScores(n); s != nil {
								t.Errorf("the scores of %s are scaled after Q·Kᵀ by %s", n.Name, s.Name)
							}
						}
						if !strings.HasPrefix(cm.Name, "distilbert") && counts["qdq: attention scales moved onto Q"] != 2 {
							t.Errorf("%d attention scales moved onto Q, want 2 (one per layer)", counts["qdq: attention scales moved onto Q"])
						}
					}
					if strings.HasPrefix(cm.Name, "bert-cls") && counts["qdq: left float, small GEMM"] != 2 {
						t.Errorf("%d small GEMMs left float, want 2 (pooler, classifier)", counts["qdq: left float, small GEMM"])
					}
					mms := attentionMatMuls(m)
					if deberta && policy != "linear" && mms.quantized != 8 {
						t.Errorf("%d quantized attention matmuls (%d with a c2p/p2c gather), want 8 (Q·Kᵀ, c2p, p2c, probs·V per layer)", mms.quantized, mms.gathered)
					}
					for _, n := range m.Graph.Nodes() {
						if skip := qdqcheck.SkipInput(n); qdqcheck.ResidualAdd(n) && skip >= 0 && qdqcheck.Dequantized(n.Input(1-skip)) {
							t.Errorf("residual Add %s reads the quantized GEMM output %s", n.Name, n.Input(1-skip).Name)
						}
					}
					row := fmt.Sprintf("%-24s %-9s %-8s quantized attention matmuls %2d (gathered %d), scales moved %d, small GEMMs float %d",
						cm.Name, policy, order, mms.quantized, mms.gathered, counts["qdq: attention scales moved onto Q"], counts["qdq: left float, small GEMM"])
					if numeric {
						path := filepath.Join(dir, cm.Name+".full.onnx")
						if err := ir.Save(m, path, ir.SaveOptions{}); err != nil {
							t.Fatal(err)
						}
						inputs, err := npz.Read(cm.Inputs)
						if err != nil {
							t.Fatal(err)
						}
						want := runORT(t, referenceFor(cm), inputs, ort.OptDisabled)
						got := runORT(t, path, inputs, ort.OptDisabled)
						worst := math.Inf(1)
						for name, w := range want {
							cos, err := ndarray.CosineSimilarity(w, got[name])
							if err != nil {
								t.Fatal(err)
							}
							if !(cos >= 0.99) {
								t.Errorf("output %s cosine similarity %.5f < 0.99", name, cos)
							}
							worst = math.Min(worst, cos)
						}
						row += fmt.Sprintf(", cos to float >= %.5f", worst)
					}
					rows = append(rows, row)
				})
			}
		}
	}
	sort.Strings(rows)
	t.Logf("qdq under every policy:\n%s", strings.Join(rows, "\n"))
}

// scaledScores returns the Div or Mul by a constant that reads the output of n, a MatMul of
// two quantized activations; nil when there is none.
func scaledScores(n *ir.Node) *ir.Node {
	if n.OpType != "MatMul" || !qdqcheck.Dequantized(n.Input(0)) || !qdqcheck.Dequantized(n.Input(1)) {
		return nil
	}
	if _, weighted := qdqcheck.WeightInput(n); weighted {
		return nil
	}
	for _, u := range n.Output(0).Uses() {
		if r := u.Node; (r.OpType == "Div" || r.OpType == "Mul") && (r.Input(1-u.Index).Const != nil) {
			return r
		}
	}
	return nil
}

type mmCount struct{ quantized, gathered int }

// attentionMatMuls counts the activation×activation MatMuls with both inputs quantized,
// and those of them whose output is gathered (DeBERTa's c2p/p2c).
func attentionMatMuls(m *ir.Model) mmCount {
	var c mmCount
	for _, n := range m.Graph.Nodes() {
		if n.OpType != "MatMul" || !qdqcheck.Dequantized(n.Input(0)) || !qdqcheck.Dequantized(n.Input(1)) {
			continue
		}
		if _, weighted := qdqcheck.WeightInput(n); weighted {
			continue
		}
		c.quantized++
		for _, u := range n.Output(0).Uses() {
			if u.Node.OpType == "GatherElements" {
				c.gathered++
			}
		}
	}
	return c
}

// insertPair puts a Q/DQ pair (scale 0.1) on input i of n.
func insertPair(m *ir.Model, n *ir.Node, i int) {
	g := m.Graph
	x := n.Input(i)
	s := g.NewConst("mutation_scale", ir.FloatTensor(nil, []float32{0.1}))
	z := g.NewConst("mutation_zero_point", ir.NewTensor(ir.Int8, nil, []byte{0}))
	q := g.Add("QuantizeLinear", []*ir.Value{x, s, z}, 1, "mutation_quantized")
	q.Name = "mutation_QuantizeLinear"
	dq := g.Add("DequantizeLinear", []*ir.Value{q.Output(0), s, z}, 1, "mutation_dequantized")
	dq.Name = "mutation_DequantizeLinear"
	n.SetInput(i, dq.Output(0))
}

// undoPair makes input i of n read what its Q/DQ pair quantizes.
func undoPair(n *ir.Node, i int) {
	dq, _ := n.Input(i).Producer()
	q, _ := dq.Input(0).Producer()
	n.SetInput(i, q.Input(0))
}

// TestQDQCheckerMutations: each placement TensorRT does not fuse, made by hand in a
// quantized corpus model, is rejected with a violation naming the node and the rule
// (and citing TensorRT's guide).
func TestQDQCheckerMutations(t *testing.T) {
	dir := corpus.Dir(t)
	cases := []struct {
		name, model, policy string
		rule                string
		mutate              func(m *ir.Model) *ir.Node // returns the node the violation names
	}{
		{"residual Add with the GEMM side quantized", "bert.opset13", "full", "residual", func(m *ir.Model) *ir.Node {
			for _, n := range m.Graph.Nodes() {
				if s := qdqcheck.SkipInput(n); qdqcheck.ResidualAdd(n) && s >= 0 {
					insertPair(m, n, 1-s)
					return n
				}
			}
			return nil
		}},
		{"residual Add with only the GEMM side quantized (linear)", "roberta.opset13", "linear", "residual", func(m *ir.Model) *ir.Node {
			for _, n := range m.Graph.Nodes() {
				if s := qdqcheck.SkipInput(n); qdqcheck.ResidualAdd(n) && s >= 0 && !qdqcheck.Dequantized(n.Input(s)) {
					insertPair(m, n, 1-s)
					return n
				}
			}
			return nil
		}},
		{"BMM with one input quantized under linear", "bert.opset13", "linear", "matmul-inputs", func(m *ir.Model) *ir.Node {
			for _, n := range m.Graph.Nodes() {
				if qdqcheck.AttentionMatMul(n) {
					insertPair(m, n, 0)
					return n
				}
			}
			return nil
		}},
		{"stray pair on the scores before the mask", "bert.opset13", "attention", "scores", func(m *ir.Model) *ir.Node {
			for _, n := range m.Graph.Nodes() {
				if n.OpType != "Softmax" {
					continue
				}
				add, _ := n.Input(0).Producer()
				if add == nil || add.OpType != "Add" {
					return nil
				}
				for i := 0; i < 2; i++ {
					if p, _ := add.Input(i).Producer(); p != nil && p.OpType == "MatMul" {
						insertPair(m, add, i)
						dq, _ := add.Input(i).Producer()
						return dq
					}
				}
			}
			return nil
		}},
		{"DequantizeLinear feeding GELU's Div", "bert.opset13", "linear", "interior", func(m *ir.Model) *ir.Node {
			for _, n := range m.Graph.Nodes() {
				if n.OpType != "Div" {
					continue
				}
				for _, u := range n.Output(0).Uses() {
					if u.Node.OpType == "Erf" {
						insertPair(m, n, 0)
						dq, _ := n.Input(0).Producer()
						return dq
					}
				}
			}
			return nil
		}},
		{"DeBERTa c2p half quantized", "deberta-v2.opset13", "attention", "matmul-inputs", func(m *ir.Model) *ir.Node {
			for _, n := range m.Graph.Nodes() {
				if n.OpType != "MatMul" || !qdqcheck.Dequantized(n.Input(0)) || !qdqcheck.Dequantized(n.Input(1)) {
					continue
				}
				for _, u := range n.Output(0).Uses() {
					if u.Node.OpType == "GatherElements" {
						undoPair(n, 1)
						return n
					}
				}
			}
			return nil
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := ir.Load(filepath.Join(dir, c.model+".onnx"))
			if err != nil {
				t.Fatal(err)
			}
			runPipeline(t, m, "fold,qdq<policy="+c.policy+";ranges=const:4>")
			if err := qdqcheck.Check(m); err != nil {
				t.Fatalf("before the mutation: %v", err)
			}
			target := c.mutate(m)
			if target == nil {
				t.Fatal("nothing to mutate")
			}
			if err := m.Graph.TopoSort(); err != nil {
				t.Fatal(err)
			}
			err = qdqcheck.Check(m)
			var ce *qdqcheck.Error
			if !errors.As(err, &ce) {
				t.Fatalf("mutation not rejected (%v)", err)
			}
			found := false
			for _, v := range ce.Violations {
				if v.Node == qdqcheck.NodeName(target) && v.Rule == c.rule {
					found = true
					if !strings.Contains(v.Msg, "TensorRT guide") {
						t.Errorf("message cites no TensorRT rule: %s", v)
					}
					t.Logf("%s", v)
				}
			}
			if !found {
				t.Errorf("no %s violation naming %s in:\n%v", c.rule, qdqcheck.NodeName(target), err)
			}
		})
	}
}
