package ort

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Just enough protobuf wire format to append nodes, initializers and outputs
// to a serialized ModelProto's graph, without a protobuf dependency and
// without decoding (and so possibly altering) the rest of the model.

// ONNX field numbers used here.
const (
	modelGraph = 7 // ModelProto.graph

	graphNode   = 1  // GraphProto.node
	graphOutput = 12 // GraphProto.output

	nodeInput     = 1 // NodeProto.input
	nodeOutput    = 2 // NodeProto.output
	nodeName      = 3 // NodeProto.name
	nodeOpType    = 4 // NodeProto.op_type
	nodeAttribute = 5 // NodeProto.attribute

	attrName = 1  // AttributeProto.name
	attrI    = 3  // AttributeProto.i
	attrT    = 5  // AttributeProto.t
	attrType = 20 // AttributeProto.type; INT = 2, TENSOR = 4

	tensorDims     = 1 // TensorProto.dims
	tensorDataType = 2 // TensorProto.data_type
	tensorName     = 8 // TensorProto.name
	tensorRawData  = 9 // TensorProto.raw_data

	valueInfoName = 1 // ValueInfoProto.name
)

func appendVarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendTag(b []byte, field, wire int) []byte {
	return appendVarint(b, uint64(field)<<3|uint64(wire))
}

func appendBytesField(b []byte, field int, v []byte) []byte {
	b = appendTag(b, field, 2)
	b = appendVarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendStringField(b []byte, field int, s string) []byte {
	return appendBytesField(b, field, []byte(s))
}

func appendVarintField(b []byte, field int, v uint64) []byte {
	return appendVarint(appendTag(b, field, 0), v)
}

// graphAdditions accumulates encoded GraphProto fields to append.
type graphAdditions []byte

func (g *graphAdditions) output(name string) {
	*g = appendBytesField(*g, graphOutput, appendStringField(nil, valueInfoName, name))
}

// node adds a default-domain node; intAttrs are INT attributes.
func (g *graphAdditions) node(opType, name string, inputs, outputs []string, intAttrs map[string]int64) {
	var n []byte
	for _, s := range inputs {
		n = appendStringField(n, nodeInput, s)
	}
	for _, s := range outputs {
		n = appendStringField(n, nodeOutput, s)
	}
	n = appendStringField(n, nodeName, name)
	n = appendStringField(n, nodeOpType, opType)
	for k, v := range intAttrs {
		var a []byte
		a = appendStringField(a, attrName, k)
		a = appendVarintField(a, attrI, uint64(v))
		a = appendVarintField(a, attrType, 2)
		n = appendBytesField(n, nodeAttribute, a)
	}
	*g = appendBytesField(*g, graphNode, n)
}

// int64Constant adds a Constant node producing a 1-D INT64 tensor. A node
// rather than an initializer: models with IR version < 4 must list every
// initializer among the graph inputs.
func (g *graphAdditions) int64Constant(name string, vals []int64) {
	var t []byte
	t = appendVarintField(t, tensorDims, uint64(len(vals)))
	t = appendVarintField(t, tensorDataType, 7)
	t = appendStringField(t, tensorName, name)
	raw := make([]byte, 0, 8*len(vals))
	for _, v := range vals {
		raw = binary.LittleEndian.AppendUint64(raw, uint64(v))
	}
	t = appendBytesField(t, tensorRawData, raw)
	var a []byte
	a = appendStringField(a, attrName, "value")
	a = appendBytesField(a, attrT, t)
	a = appendVarintField(a, attrType, 4)
	var n []byte
	n = appendStringField(n, nodeOutput, name)
	n = appendStringField(n, nodeName, name)
	n = appendStringField(n, nodeOpType, "Constant")
	n = appendBytesField(n, nodeAttribute, a)
	*g = appendBytesField(*g, graphNode, n)
}

// appendToGraph returns a copy of model with extra appended to its graph.
// Protobuf merges repeated occurrences of a message field, so appending to
// the last graph field is the same as appending to the graph.
func appendToGraph(model []byte, extra graphAdditions) ([]byte, error) {
	start, bodyStart, end := -1, -1, -1
	for i := 0; i < len(model); {
		fieldStart := i
		key, n := binary.Uvarint(model[i:])
		if n <= 0 {
			return nil, errors.New("ort: model is not a valid ONNX protobuf (bad field key)")
		}
		i += n
		field, wire := key>>3, key&7
		switch wire {
		case 0:
			_, n = binary.Uvarint(model[i:])
			if n <= 0 {
				return nil, errors.New("ort: model is not a valid ONNX protobuf (bad varint)")
			}
			i += n
		case 1:
			i += 8
		case 5:
			i += 4
		case 2:
			l, n := binary.Uvarint(model[i:])
			if n <= 0 || l > uint64(len(model)-i-n) {
				return nil, errors.New("ort: model is not a valid ONNX protobuf (bad length)")
			}
			i += n
			if field == modelGraph {
				start, bodyStart, end = fieldStart, i, i+int(l)
			}
			i += int(l)
		default:
			return nil, fmt.Errorf("ort: model is not a valid ONNX protobuf (wire type %d)", wire)
		}
		if i > len(model) {
			return nil, errors.New("ort: model is not a valid ONNX protobuf (truncated)")
		}
	}
	if start < 0 {
		return nil, errors.New("ort: model has no graph")
	}
	out := make([]byte, 0, len(model)+len(extra)+16)
	out = append(out, model[:start]...)
	out = appendTag(out, modelGraph, 2)
	out = appendVarint(out, uint64(end-bodyStart+len(extra)))
	out = append(out, model[bodyStart:end]...)
	out = append(out, extra...)
	return append(out, model[end:]...), nil
}
