package onnxpb

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// modelsDir is the shared model folder, relative to this package directory.
const modelsDir = "../../../shared/models"

// unknownFields returns the paths of all messages in m's tree that carry
// fields our schema does not know.
func unknownFields(m protoreflect.Message, path string) []string {
	var bad []string
	if len(m.GetUnknown()) > 0 {
		bad = append(bad, path)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		name := path + "." + string(fd.Name())
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				bad = append(bad, unknownFields(l.Get(i).Message(), name+"["+itoa(i)+"]")...)
			}
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapValue().Message() != nil {
					bad = append(bad, unknownFields(mv.Message(), name+"{}")...)
				}
				return true
			})
		default:
			bad = append(bad, unknownFields(v.Message(), name)...)
		}
		return true
	})
	return bad
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for ; i > 0; i /= 10 {
		n--
		b[n] = byte('0' + i%10)
	}
	return string(b[n:])
}

func TestModelsRoundTrip(t *testing.T) {
	if _, err := os.Stat(modelsDir); err != nil {
		t.Skipf("model folder %s not available: %v", modelsDir, err)
	}
	var files []string
	err := filepath.WalkDir(modelsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".onnx") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Skipf("no .onnx files under %s", modelsDir)
	}
	for _, p := range files {
		rel, _ := filepath.Rel(modelsDir, p)
		t.Run(rel, func(t *testing.T) {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var m ModelProto
			if err := proto.Unmarshal(data, &m); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if m.GetGraph() == nil {
				t.Fatalf("model has no graph")
			}
			if bad := unknownFields(m.ProtoReflect(), "ModelProto"); len(bad) > 0 {
				if len(bad) > 10 {
					bad = append(bad[:10], "...")
				}
				t.Errorf("unknown fields in: %s", strings.Join(bad, ", "))
			}
			out, err := proto.Marshal(&m)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			var back ModelProto
			if err := proto.Unmarshal(out, &back); err != nil {
				t.Fatalf("unmarshal again: %v", err)
			}
			if !proto.Equal(&m, &back) {
				t.Errorf("model changed in a marshal/unmarshal round trip")
			}
			if !bytes.Equal(data, out) {
				t.Logf("re-encoded bytes differ from the file (%d vs %d bytes); content is equal", len(out), len(data))
			}
		})
	}
}

// TestUnknownFieldsDetected checks that the walk above finds unknown fields
// deep in the tree, so a schema gap cannot pass unnoticed.
func TestUnknownFieldsDetected(t *testing.T) {
	attr := &AttributeProto{Name: proto.String("a")}
	m := &ModelProto{Graph: &GraphProto{Node: []*NodeProto{{}, {Attribute: []*AttributeProto{attr}}}}}
	if bad := unknownFields(m.ProtoReflect(), "ModelProto"); len(bad) != 0 {
		t.Fatalf("clean model reported unknown fields: %v", bad)
	}
	// Field 99, varint 1: not part of AttributeProto.
	attr.ProtoReflect().SetUnknown(protoreflect.RawFields{0x98, 0x06, 0x01})
	bad := unknownFields(m.ProtoReflect(), "ModelProto")
	if want := "ModelProto.graph.node[1].attribute[0]"; len(bad) != 1 || bad[0] != want {
		t.Fatalf("got %v, want [%s]", bad, want)
	}
}
