package ort

import (
	"encoding/binary"
)

// Test-only builders of tiny ONNX models, made with the package's own
// protobuf encoders so tests need no model files or Python.

// Dim is one dimension of a TinyValue: a size, or a symbolic name.
type Dim struct {
	Value int64
	Param string
}

// TinyValue declares a graph input or output. Dims nil with Ranked false
// leaves the shape undeclared.
type TinyValue struct {
	Name   string
	DType  int32
	Dims   []Dim
	Ranked bool
}

// TinyNode is a default-domain node without attributes.
type TinyNode struct {
	Op      string
	Inputs  []string
	Outputs []string
}

// TinyModel encodes an opset-17 model.
func TinyModel(nodes []TinyNode, inputs, outputs []TinyValue) []byte {
	var g graphAdditions
	for i, n := range nodes {
		g.node(n.Op, n.Op+string(rune('a'+i)), n.Inputs, n.Outputs, nil)
	}
	g = appendStringField(g, 2, "tiny") // GraphProto.name
	for _, v := range inputs {
		g = appendBytesField(g, 11, valueInfo(v)) // GraphProto.input
	}
	for _, v := range outputs {
		g = appendBytesField(g, graphOutput, valueInfo(v))
	}
	var m []byte
	m = appendVarintField(m, 1, 8)                            // ir_version
	m = appendBytesField(m, 8, appendVarintField(nil, 2, 17)) // opset_import {version: 17}
	m = appendBytesField(m, modelGraph, g)
	return m
}

func valueInfo(v TinyValue) []byte {
	var tt []byte
	tt = appendVarintField(tt, 1, uint64(v.DType)) // elem_type
	if v.Ranked || v.Dims != nil {
		var shape []byte
		for _, d := range v.Dims {
			var dim []byte
			if d.Param != "" {
				dim = appendStringField(dim, 2, d.Param)
			} else {
				dim = appendVarintField(dim, 1, uint64(d.Value))
			}
			shape = appendBytesField(shape, 1, dim)
		}
		// An empty shape message still has to be present to mean rank 0.
		tt = appendTag(tt, 2, 2)
		tt = appendVarint(tt, uint64(len(shape)))
		tt = append(tt, shape...)
	}
	typ := appendBytesField(nil, 1, tt) // TypeProto.tensor_type
	vi := appendStringField(nil, valueInfoName, v.Name)
	return appendBytesField(vi, 2, typ)
}

// DeclaredIO is declaredIO.
var DeclaredIO = declaredIO

// AskedIO is what ORT reports for the model through a temporary session.
// The session is not optimised: ONNX Runtime 1.30 crashes optimising some valid models
// (a LayerNormalization whose absent bias is spelled "", as torch exports a bias-less one:
// the mpt probe), and inputs and outputs do not depend on it.
func AskedIO(model []byte) ([]IOInfo, []IOInfo, error) {
	ins, outs, err := infoOfBytes("", model, Options{OptLevel: OptDisabled})
	return convertInfo(ins), convertInfo(outs), err
}

// WithInitializer adds a 1-D INT64 initializer to the model's graph (list it among the
// inputs to make it an overridable one).
func WithInitializer(model []byte, name string, vals []int64) []byte {
	var t []byte
	t = appendVarintField(t, tensorDims, uint64(len(vals)))
	t = appendVarintField(t, tensorDataType, 7)
	t = appendStringField(t, tensorName, name)
	var raw []byte
	for _, v := range vals {
		raw = binary.LittleEndian.AppendUint64(raw, uint64(v))
	}
	t = appendBytesField(t, tensorRawData, raw)
	m, err := appendToGraph(model, graphAdditions(appendBytesField(nil, graphInitializer, t)))
	if err != nil {
		panic(err)
	}
	return m
}
