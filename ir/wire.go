package ir

import (
	"bytes"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/qcc-dev/qcc/ir/onnxpb"
)

// wireDecoder decodes a ModelProto at the wire level along the messages that can hold
// tensors (model → graph → initializer and node → attribute → tensor and subgraph), so an inline tensor's raw_data can be a slice of the input
// instead of a copy. Every other field goes through proto.Unmarshal: protobuf defines a
// message as the merge of its fields, so unmarshalling the runs between the walked fields
// one after the other gives what proto.Unmarshal of the whole would. Functions are left to
// proto.Unmarshal (their tensors are copied): the model keeps them as protos, which hold no
// reference to the mapping that would keep it alive.
type wireDecoder struct {
	data  []byte
	alias bool          // raw_data slices data (a mapped file) rather than copying it
	secs  map[any]int64 // *onnxpb.TensorProto → offset of its raw_data in data
	depth int           // graphs being decoded, nested
}

// maxGraphDepth bounds subgraph nesting; real models nest a handful of levels.
const maxGraphDepth = 100

var mergeOpts = proto.UnmarshalOptions{Merge: true}

func newWireDecoder(data []byte, alias bool) *wireDecoder {
	return &wireDecoder{data: data, alias: alias, secs: map[any]int64{}}
}

// walk goes through the fields of a message encoded in b, which starts at offset base of
// the input. Length-delimited fields numbered in path go to visit with their value and its
// offset; runs of other fields are unmarshalled into m.
func (d *wireDecoder) walk(b []byte, base int64, m proto.Message, path []protowire.Number,
	visit func(num protowire.Number, v []byte, off int64) error) error {
	run := 0
	for i := 0; i < len(b); {
		num, typ, n := protowire.ConsumeTag(b[i:])
		if n < 0 {
			return protowire.ParseError(n)
		}
		if typ == protowire.BytesType && hasNumber(path, num) {
			v, k := protowire.ConsumeBytes(b[i+n:])
			if k < 0 {
				return protowire.ParseError(k)
			}
			if run < i {
				if err := mergeOpts.Unmarshal(b[run:i], m); err != nil {
					return err
				}
			}
			end := i + n + k
			if err := visit(num, v, base+int64(end-len(v))); err != nil {
				return err
			}
			i, run = end, end
			continue
		}
		k := protowire.ConsumeFieldValue(num, typ, b[i+n:])
		if k < 0 {
			return protowire.ParseError(k)
		}
		i += n + k
	}
	if run < len(b) {
		return mergeOpts.Unmarshal(b[run:], m)
	}
	return nil
}

func hasNumber(path []protowire.Number, num protowire.Number) bool {
	for _, p := range path {
		if p == num {
			return true
		}
	}
	return false
}

// Field numbers of onnx.proto on the walked path.
const (
	modelGraph       = 7
	modelFunctions   = 25
	graphNode        = 1
	graphInitializer = 5
	nodeAttribute    = 5
	attrT            = 5
	attrG            = 6
	attrTensors      = 10
	attrGraphs       = 11
	functionNode     = 7
	tensorRawData    = 9
)

func (d *wireDecoder) model() (*onnxpb.ModelProto, error) {
	mp := &onnxpb.ModelProto{}
	err := d.walk(d.data, 0, mp, []protowire.Number{modelGraph}, func(_ protowire.Number, v []byte, off int64) error {
		g, err := d.graph(v, off)
		if err != nil {
			return err
		}
		mp.Graph = merge(mp.Graph, g)
		return nil
	})
	return mp, err
}

// merge gives protobuf's meaning to a singular message field that occurs more than once.
func merge[M proto.Message](old, m M) M {
	if old.ProtoReflect().IsValid() {
		proto.Merge(old, m)
		return old
	}
	return m
}

func (d *wireDecoder) graph(b []byte, base int64) (*onnxpb.GraphProto, error) {
	if d.depth++; d.depth > maxGraphDepth {
		return nil, fmt.Errorf("subgraphs nested more than %d deep", maxGraphDepth)
	}
	defer func() { d.depth-- }()
	gp := &onnxpb.GraphProto{}
	err := d.walk(b, base, gp, []protowire.Number{graphNode, graphInitializer}, func(num protowire.Number, v []byte, off int64) error {
		if num == graphNode {
			n, err := d.node(v, off)
			gp.Node = append(gp.Node, n)
			return err
		}
		t, err := d.tensor(v, off)
		gp.Initializer = append(gp.Initializer, t)
		return err
	})
	return gp, err
}

func (d *wireDecoder) node(b []byte, base int64) (*onnxpb.NodeProto, error) {
	np := &onnxpb.NodeProto{}
	err := d.walk(b, base, np, []protowire.Number{nodeAttribute}, func(_ protowire.Number, v []byte, off int64) error {
		a, err := d.attr(v, off)
		np.Attribute = append(np.Attribute, a)
		return err
	})
	return np, err
}

func (d *wireDecoder) attr(b []byte, base int64) (*onnxpb.AttributeProto, error) {
	ap := &onnxpb.AttributeProto{}
	err := d.walk(b, base, ap, []protowire.Number{attrT, attrG, attrTensors, attrGraphs}, func(num protowire.Number, v []byte, off int64) error {
		switch num {
		case attrT, attrTensors:
			t, err := d.tensor(v, off)
			if err != nil {
				return err
			}
			if num == attrT {
				ap.T = merge(ap.T, t)
			} else {
				ap.Tensors = append(ap.Tensors, t)
			}
		default:
			g, err := d.graph(v, off)
			if err != nil {
				return err
			}
			if num == attrG {
				ap.G = merge(ap.G, g)
			} else {
				ap.Graphs = append(ap.Graphs, g)
			}
		}
		return nil
	})
	return ap, err
}

func (d *wireDecoder) tensor(b []byte, base int64) (*onnxpb.TensorProto, error) {
	tp := &onnxpb.TensorProto{}
	var raw []byte
	var rawOff int64
	err := d.walk(b, base, tp, []protowire.Number{tensorRawData}, func(_ protowire.Number, v []byte, off int64) error {
		raw, rawOff = v, off // a repeated singular field: the last one counts
		return nil
	})
	if err != nil {
		return nil, err
	}
	if raw != nil {
		if d.alias {
			tp.RawData = raw[:len(raw):len(raw)]
			d.secs[tp] = rawOff
		} else {
			tp.RawData = bytes.Clone(raw)
		}
	}
	return tp, nil
}

// section returns where tp's raw_data lies in the input, when it still aliases it (a
// merge of repeated singular fields replaces it with a copy).
func (d *wireDecoder) section(tp *onnxpb.TensorProto, m *mapping) *section {
	off, ok := d.secs[tp]
	if !ok || m == nil || len(tp.RawData) == 0 || off+int64(len(tp.RawData)) > int64(len(d.data)) ||
		&tp.RawData[0] != &d.data[off] {
		return nil
	}
	return &section{m: m, off: off, n: int64(len(tp.RawData))}
}

var errEmpty = errors.New("not an ONNX model: the file is empty")
