package ir

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/qcc-dev/qcc/ir/onnxpb"
)

func fnNode(op, domain string, in, out []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{OpType: proto.String(op), Domain: proto.String(domain), Input: in, Output: out, Attribute: attrs}
}

func floatRef(name, ref string) *onnxpb.AttributeProto {
	t := onnxpb.AttributeProto_FLOAT
	return &onnxpb.AttributeProto{Name: proto.String(name), RefAttrName: proto.String(ref), Type: &t}
}

func floatAttr(name string, v float32) *onnxpb.AttributeProto {
	t := onnxpb.AttributeProto_FLOAT
	return &onnxpb.AttributeProto{Name: proto.String(name), F: proto.Float32(v), Type: &t}
}

// funcModel is y = Outer(x): Outer calls Scale twice, once with alpha set and once with
// its default; Scale is t = Constant(alpha), y = Mul(x, t). self makes Scale call itself.
func funcModel(t *testing.T, self bool, bodyOpset int64) *Model {
	t.Helper()
	elem := int32(onnxpb.TensorProto_FLOAT)
	vi := func(name string) *onnxpb.ValueInfoProto {
		return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: &elem}}}}
	}
	scaleBody := []*onnxpb.NodeProto{
		fnNode("Constant", "", nil, []string{"t"}, floatRef("value_float", "alpha")),
		fnNode("Mul", "", []string{"x", "t"}, []string{"y"}),
	}
	if self {
		scaleBody = append(scaleBody, fnNode("Scale", "local", []string{"y"}, []string{"z"}))
	}
	imports := []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(bodyOpset)}}
	scale := &onnxpb.FunctionProto{Name: proto.String("Scale"), Domain: proto.String("local"), Input: []string{"x"}, Output: []string{"y"},
		Attribute: []string{"alpha"}, AttributeProto: []*onnxpb.AttributeProto{floatAttr("alpha", 3)}, Node: scaleBody, OpsetImport: imports}
	outer := &onnxpb.FunctionProto{Name: proto.String("Outer"), Domain: proto.String("local"), Input: []string{"x"}, Output: []string{"y"},
		Node: []*onnxpb.NodeProto{
			fnNode("Scale", "local", []string{"x"}, []string{"a"}, floatAttr("alpha", 2)),
			fnNode("Scale", "local", []string{"a"}, []string{"y"}),
		}, OpsetImport: imports}
	mp := &onnxpb.ModelProto{IrVersion: proto.Int64(9),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}, {Domain: proto.String("local"), Version: proto.Int64(1)}},
		Graph: &onnxpb.GraphProto{Name: proto.String("g"), Input: []*onnxpb.ValueInfoProto{vi("in")}, Output: []*onnxpb.ValueInfoProto{vi("out")},
			Node: []*onnxpb.NodeProto{fnNode("Outer", "local", []string{"in"}, []string{"out"})}},
		Functions: []*onnxpb.FunctionProto{scale, outer}}
	b, err := proto.Marshal(mp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := LoadBytes(b, "")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Nested calls are inlined to the operators, attribute references bound to the call's
// value or the function's default, the body's values renamed apart, the functions dropped.
func TestInlineFunctions(t *testing.T) {
	m := funcModel(t, false, 17)
	if k := m.FunctionCalls(); k != 1 {
		t.Fatalf("%d calls, want 1", k)
	}
	k, err := m.InlineFunctions()
	if err != nil {
		t.Fatal(err)
	}
	if k != 3 || m.FunctionCalls() != 0 || len(m.functions()) != 0 {
		t.Fatalf("inlined %d calls (want 3), %d left, %d functions kept", k, m.FunctionCalls(), len(m.functions()))
	}
	if err := m.Verify(); err != nil {
		t.Fatal(err)
	}
	var ops []string
	var alphas []float32
	for _, n := range m.Graph.Nodes() {
		ops = append(ops, n.OpType)
		if n.OpType == "Constant" {
			alphas = append(alphas, n.AttrFloat("value_float", -1))
		}
	}
	if strings.Join(ops, ",") != "Constant,Mul,Constant,Mul" || len(alphas) != 2 || alphas[0] != 2 || alphas[1] != 3 {
		t.Errorf("ops %v, alphas %v; want two Constant·Mul with alpha 2 then the default 3", ops, alphas)
	}
	if out := m.Graph.Outputs[0]; out.Name != "out" {
		t.Errorf("graph output renamed to %q", out.Name)
	}
}

// A function that calls itself, and a body on another default-domain opset, are errors
// that leave the model as it was.
func TestInlineFunctionsRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		m    *Model
		want string
	}{
		{"recursive", funcModel(t, true, 17), "a function calls itself"},
		{"opset", funcModel(t, false, 13), "its body imports opset 13 of the default domain, the model 17"},
	} {
		if _, err := c.m.InlineFunctions(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
		if c.m.FunctionCalls() != 1 {
			t.Errorf("%s: the model changed", c.name)
		}
	}
}
