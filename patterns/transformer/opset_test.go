package transformer_test

import (
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// TestRequireOpsetFunctions: a fuse that needs a raise refuses it while the model's
// local functions (not inlined: fuse run without fold) import the older opset, whose
// bodies a raise would leave behind; the model keeps its import.
func TestRequireOpsetFunctions(t *testing.T) {
	m, err := ir.Load("../../testdata/probes/vit-functions.opset17.onnx")
	if err != nil {
		t.Fatal(err)
	}
	env := &transformer.Env{Model: m, Target: transformer.ONNX, RaiseOpset: 23}
	why := transformer.RequireOpset(env, 23, "Attention-23", nil)
	expectReason(t, []string{why}, "Attention-23 needs opset 23; the model-local function __main__.")
	if m.Opset("") != 17 {
		t.Errorf("the model imports opset %d after the refused raise", m.Opset(""))
	}
}
