package ir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/qcc-dev/qcc/ir/onnxpb"
)

// FuzzLoadWire checks the wire-level decoder against proto.Unmarshal on arbitrary bytes:
// both accept or both refuse (the decoder alone refuses subgraphs nested past
// maxGraphDepth), never a panic, and what they accept is the same message. A model that
// loads from a mapped file saves as the same model loaded from memory does.
//
//	go test ./ir -run=^$ -fuzz=FuzzLoadWire -fuzztime=10m
func FuzzLoadWire(f *testing.F) {
	for _, src := range wireSeeds(f) {
		f.Add(src)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		var want onnxpb.ModelProto
		errWant := proto.Unmarshal(data, &want)
		got, err := newWireDecoder(data, true).model()
		switch {
		case err != nil && errWant == nil:
			if !strings.Contains(err.Error(), "nested more than") {
				t.Fatalf("decoder refuses what proto.Unmarshal reads: %v", err)
			}
			return
		case err == nil && errWant != nil:
			t.Fatalf("decoder reads what proto.Unmarshal refuses (%v)", errWant)
		case err != nil:
			return
		}
		if !proto.Equal(&want, got) {
			t.Fatal("decoder and proto.Unmarshal disagree")
		}
		mb, err := LoadBytes(data, dir)
		if err != nil {
			return
		}
		path := filepath.Join(dir, "m.onnx")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		mm, err := Load(path)
		if err != nil {
			t.Fatalf("loads from memory, not from a file: %v", err)
		}
		a, errA := Marshal(mb)
		b, errB := Marshal(mm)
		if (errA == nil) != (errB == nil) || string(a) != string(b) {
			t.Fatalf("mapped and in-memory loads save differently (%v, %v)", errA, errB)
		}
	})
}

// wireSeeds: small models with initializers, tensor attributes, subgraphs, a function.
func wireSeeds(f *testing.F) [][]byte {
	raw := func(name string, n int) *onnxpb.TensorProto {
		return &onnxpb.TensorProto{Name: proto.String(name), Dims: []int64{int64(n)}, DataType: proto.Int32(int32(Uint8)), RawData: make([]byte, n)}
	}
	tensorAttr := &onnxpb.AttributeProto{Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: raw("c", 3)}
	sub := &onnxpb.GraphProto{Name: proto.String("s"), Initializer: []*onnxpb.TensorProto{raw("w2", 2)},
		Node:   []*onnxpb.NodeProto{{OpType: proto.String("Constant"), Output: []string{"k"}, Attribute: []*onnxpb.AttributeProto{tensorAttr}}},
		Output: []*onnxpb.ValueInfoProto{{Name: proto.String("k")}}}
	mp := &onnxpb.ModelProto{IrVersion: proto.Int64(8), OpsetImport: []*onnxpb.OperatorSetIdProto{{Version: proto.Int64(13)}},
		Graph: &onnxpb.GraphProto{Name: proto.String("g"), Initializer: []*onnxpb.TensorProto{raw("w", 4)},
			Input: []*onnxpb.ValueInfoProto{{Name: proto.String("c")}},
			Node: []*onnxpb.NodeProto{{OpType: proto.String("If"), Input: []string{"c"}, Output: []string{"y"},
				Attribute: []*onnxpb.AttributeProto{{Name: proto.String("then_branch"), Type: onnxpb.AttributeProto_GRAPH.Enum(), G: sub},
					{Name: proto.String("else_branch"), Type: onnxpb.AttributeProto_GRAPH.Enum(), G: sub},
					{Name: proto.String("ts"), Type: onnxpb.AttributeProto_TENSORS.Enum(), Tensors: []*onnxpb.TensorProto{raw("a", 1), raw("b", 0)}}}}},
			Output: []*onnxpb.ValueInfoProto{{Name: proto.String("y")}}},
		Functions: []*onnxpb.FunctionProto{{Name: proto.String("f"), Node: []*onnxpb.NodeProto{{OpType: proto.String("Constant"), Attribute: []*onnxpb.AttributeProto{tensorAttr}}}}}}
	b, err := proto.Marshal(mp)
	if err != nil {
		f.Fatal(err)
	}
	seeds := [][]byte{b, b[:len(b)/2]}
	// The same model twice over: singular fields repeated, which protobuf merges.
	seeds = append(seeds, append(append([]byte{}, b...), b...))
	if data, err := os.ReadFile(filepath.Join("..", "..", "shared", "models", "distilbert.opset17.onnx")); err == nil {
		seeds = append(seeds, data)
	}
	return seeds
}
