package ir

import (
	"strings"
	"testing"
)

// An operator newer than the model's opset fails Verify with the node and both opsets;
// at the opset that added it, and outside the default domain, it passes.
func TestVerifyOperatorOpset(t *testing.T) {
	build := func(opset int64, domain string) *Model {
		m := &Model{Graph: NewGraph("g"), IRVersion: 7}
		m.SetOpset("", opset)
		if domain != "" {
			m.SetOpset(domain, 1)
		}
		x, _ := m.Graph.AddInput("x", TensorOf(Int64))
		n := m.Graph.Add("Range", []*Value{x, x, x}, 1, "r")
		n.Domain = domain
		m.Graph.Outputs = append(m.Graph.Outputs, n.Output(0))
		return m
	}
	err := build(10, "").Verify()
	if err == nil || !strings.Contains(err.Error(), "Range came with opset 11; the model imports 10") {
		t.Fatalf("Range at opset 10: %v", err)
	}
	if err := build(11, "").Verify(); err != nil {
		t.Fatalf("Range at opset 11: %v", err)
	}
	if err := build(10, "com.example").Verify(); err != nil {
		t.Fatalf("a Range of another domain at opset 10: %v", err)
	}
}
