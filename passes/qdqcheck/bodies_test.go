package qdqcheck_test

import (
	"context"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/qdq"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
)

// TestBodies: the rules hold inside If branches. The merged decoder quantized by qdq
// passes; a DequantizeLinear bypassed inside one branch (a projection's activation under
// policy linear, one input of Q·Kᵀ under policy attention) is a violation that names the
// node in the branch.
func TestBodies(t *testing.T) {
	for _, c := range []struct {
		policy, branch, op, rule string
		input                    func(n *ir.Node) int // the input to bypass, -1 for none
	}{
		{"linear", "else", "Gemm", "coverage", func(n *ir.Node) int { return 0 }},
		{"attention", "then", "MatMul", "matmul-inputs", func(n *ir.Node) int {
			if _, ok := qdqcheck.WeightInput(n); ok || !qdqcheck.AttentionMatMul(n) {
				return -1
			}
			return 1
		}},
	} {
		t.Run(c.policy, func(t *testing.T) {
			m, err := ir.Load("../../testdata/probes/gpt2-merged.opset17.onnx")
			if err != nil {
				t.Fatal(err)
			}
			p, err := pass.Parse("qdq<min-gemm=2;ranges=const:4;policy="+c.policy+">", []*pass.Pass{qdq.Pass})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Run(context.Background(), m, nil); err != nil {
				t.Fatal(err)
			}
			if err := qdqcheck.Check(m); err != nil {
				t.Fatalf("the quantized model: %v", err)
			}
			victim := bypass(t, m, c.branch, c.op, c.input)
			err = qdqcheck.Check(m)
			if err == nil {
				t.Fatalf("%s with a DequantizeLinear bypassed passes", victim)
			}
			if want := victim + ": " + c.rule + ":"; !strings.Contains(err.Error(), want) {
				t.Errorf("error does not say %q:\n%v", want, err)
			}
		})
	}
}

// bypass makes the first op of the branch named that reads a DequantizeLinear on the
// input pick chooses read the quantized value's float source instead, and returns its
// name.
func bypass(t *testing.T, m *ir.Model, branch, op string, pick func(*ir.Node) int) string {
	t.Helper()
	for _, g := range m.Graph.Nodes()[0].Subgraphs() {
		if g.Name != branch {
			continue
		}
		for _, n := range g.Nodes() {
			if n.OpType != op {
				continue
			}
			i := pick(n)
			if i < 0 || !qdqcheck.Dequantized(n.Input(i)) {
				continue
			}
			dq, _ := n.Input(i).Producer()
			q, _ := dq.Input(0).Producer()
			if q == nil {
				continue
			}
			n.SetInput(i, q.Input(0))
			return qdqcheck.NodeName(n)
		}
	}
	t.Fatalf("no %s reading a DequantizeLinear in branch %s", op, branch)
	return ""
}
