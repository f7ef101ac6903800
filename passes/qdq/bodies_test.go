package qdq

import (
	"fmt"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	"github.com/qcc-dev/qcc/patterns"
)

const probes = "../../testdata/probes/"

func load(t *testing.T, path string) *ir.Model {
	t.Helper()
	m, err := ir.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// quantizedProjections counts, per graph name, the projections (MatMul, Gemm or Conv on
// a constant weight) whose activation and weight are both dequantized, and returns the
// first projection left float without a skip mark.
func quantizedProjections(m *ir.Model) (map[string]int, string) {
	counts := map[string]int{}
	float := ""
	_ = m.Graph.Walk(func(g *ir.Graph) error {
		for _, n := range g.Nodes() {
			if n.OpType != "MatMul" && n.OpType != "Gemm" && n.OpType != "Conv" {
				continue
			}
			w := n.Input(1)
			if patterns.ConstOf(w) == nil && !qdqcheck.Dequantized(w) {
				continue
			}
			if qdqcheck.Dequantized(n.Input(0)) && qdqcheck.Dequantized(w) {
				counts[g.Name]++
			} else if _, skip := n.Meta(qdqcheck.SkipKey); !skip && float == "" {
				float = fmt.Sprintf("%s in %s", qdqcheck.NodeName(n), g.Name)
			}
		}
		return nil
	})
	return counts, float
}

// TestMergedDecoder: a merged decoder (the whole model in both branches of an If on
// use_cache_branch, weights in the main graph) is quantized in both branches: each
// branch has as many quantized projections as the unmerged model, qdqcheck passes after
// the pass, and ORT's outputs stay within cosine 0.99 of the float model whichever
// branch runs, on ranges from random data.
func TestMergedDecoder(t *testing.T) {
	orttest.RequireLib(t)
	const spec = "qdq<min-gemm=2;data=random:4>"
	for _, opset := range []int{10, 13, 17} {
		t.Run(fmt.Sprintf("opset%d", opset), func(t *testing.T) {
			base := fmt.Sprintf("%sgpt2-%%s.opset%d.%%s", probes, opset)
			causal := load(t, fmt.Sprintf(base, "causal", "onnx"))
			if _, err := runPipeline(t, causal, spec); err != nil {
				t.Fatal(err)
			}
			want, _ := quantizedProjections(causal)
			if want[causal.Graph.Name] == 0 {
				t.Fatalf("the unmerged model has no quantized projection")
			}

			path := fmt.Sprintf(base, "merged", "onnx")
			m := load(t, path)
			rep, err := runPipeline(t, m, spec)
			if err != nil {
				t.Fatal(err)
			}
			got, float := quantizedProjections(m)
			if float != "" {
				t.Errorf("projection %s left float", float)
			}
			t.Logf("quantized projections per graph %v; gpt2-causal %d", got, want[causal.Graph.Name])
			for _, branch := range []string{"then", "else"} {
				if got[branch] != want[causal.Graph.Name] {
					t.Errorf("branch %s: %d quantized projections, want %d as in gpt2-causal (counts %v)", branch, got[branch], want[causal.Graph.Name], got)
				}
			}
			if err := qdqcheck.Check(m); err != nil {
				t.Error(err)
			}
			notes := strings.Join(rep.Stats[len(rep.Stats)-1].Notes, "\n")
			if !strings.Contains(notes, "once per value of use_cache_branch") {
				t.Errorf("no note on the branch calibration:\n%s", notes)
			}

			in, err := npz.Read(fmt.Sprintf(base, "merged", "inputs.npz"))
			if err != nil {
				t.Fatal(err)
			}
			qpath := save(t, m, "quantized.onnx")
			for _, cache := range []bool{true, false} {
				feed := map[string]*ndarray.Array{}
				for k, a := range in {
					feed[k] = a
				}
				feed["use_cache_branch"] = ndarray.FromBool(nil, []bool{cache})
				want := runORT(t, path, feed)
				have := runORT(t, qpath, feed)
				for name, w := range want {
					c, err := ndarray.CosineSimilarity(w, have[name])
					if err != nil {
						t.Fatal(err)
					}
					if c < 0.99 {
						t.Errorf("use_cache_branch=%v: %s has cosine %.5f to float, want ≥ 0.99", cache, name, c)
					}
					t.Logf("use_cache_branch=%v: %s cosine %.5f", cache, name, c)
				}
			}
		})
	}
}
