package ort

import (
	"encoding/binary"

	"github.com/qcc-dev/qcc/ndarray"
)

// ONNX field numbers that declaredIO reads (besides those in onnxwire.go).
const (
	graphInitializer       = 5  // GraphProto.initializer
	graphInput             = 11 // GraphProto.input
	graphSparseInitializer = 15 // GraphProto.sparse_initializer

	sparseValues = 1 // SparseTensorProto.values (its name is the initializer's)

	valueInfoType   = 2 // ValueInfoProto.type
	typeTensor      = 1 // TypeProto.tensor_type
	tensorTypeElem  = 1 // TypeProto.Tensor.elem_type
	tensorTypeShape = 2 // TypeProto.Tensor.shape
	shapeDim        = 1 // TensorShapeProto.dim
	dimValue        = 1 // TensorShapeProto.Dimension.dim_value
	dimParam        = 2 // TensorShapeProto.Dimension.dim_param
	dimDenotation   = 3 // TensorShapeProto.Dimension.denotation
)

// wireField is one field of a serialized message: its number and wire type, the value
// of a varint field or the bytes of a length-delimited one.
type wireField struct {
	num  uint64
	wire uint64
	v    uint64
	b    []byte
}

// fields splits a serialized message into its fields; ok is false on malformed input.
func fields(msg []byte) ([]wireField, bool) {
	var out []wireField
	for i := 0; i < len(msg); {
		key, n := binary.Uvarint(msg[i:])
		if n <= 0 {
			return nil, false
		}
		i += n
		f := wireField{num: key >> 3, wire: key & 7}
		switch f.wire {
		case 0:
			f.v, n = binary.Uvarint(msg[i:])
			if n <= 0 {
				return nil, false
			}
			i += n
		case 1:
			i += 8
		case 5:
			i += 4
		case 2:
			l, n := binary.Uvarint(msg[i:])
			if n <= 0 || l > uint64(len(msg)-i-n) {
				return nil, false
			}
			i += n
			f.b = msg[i : i+int(l)]
			i += int(l)
		default:
			return nil, false
		}
		if i > len(msg) {
			return nil, false
		}
		out = append(out, f)
	}
	return out, true
}

// declaredIO reads the inputs (initializers excluded) and outputs that a serialized
// model declares, as ORT reports them for a model that loads: names in graph order, the
// element type, and the dims with -1 for a symbolic or unknown one. It saves the
// temporary session that asking ORT costs (one more graph load and optimisation per
// session). ok is false unless every one is a tensor whose element type and shape are
// declared, and the message is in the plain form this reader knows (one graph, each
// value's type given once); ORT is asked then, since it infers what a model leaves out.
func declaredIO(model []byte) (ins, outs []IOInfo, ok bool) {
	top, ok := fields(model)
	if !ok {
		return nil, nil, false
	}
	var graph []byte
	for _, f := range top {
		if f.num == modelGraph {
			if graph != nil || f.wire != 2 {
				return nil, nil, false
			}
			graph = f.b
		}
	}
	gf, ok := fields(graph)
	if graph == nil || !ok {
		return nil, nil, false
	}
	inits := map[string]bool{}
	for _, f := range gf {
		switch {
		case f.num == graphInitializer && f.wire == 2:
			name, ok := stringField(f.b, tensorName)
			if !ok {
				return nil, nil, false
			}
			inits[name] = true
		case f.num == graphSparseInitializer && f.wire == 2:
			sf, ok := fields(f.b)
			if !ok {
				return nil, nil, false
			}
			for _, s := range sf {
				if s.num == sparseValues && s.wire == 2 {
					name, ok := stringField(s.b, tensorName)
					if !ok {
						return nil, nil, false
					}
					inits[name] = true
				}
			}
		}
	}
	for _, f := range gf {
		if (f.num != graphInput && f.num != graphOutput) || f.wire != 2 {
			continue
		}
		info, ok := declaredValue(f.b)
		if !ok {
			return nil, nil, false
		}
		if f.num == graphOutput {
			outs = append(outs, info)
		} else if !inits[info.Name] {
			ins = append(ins, info)
		}
	}
	return ins, outs, true
}

// stringField returns the one occurrence of a string field (empty when absent).
func stringField(msg []byte, num uint64) (string, bool) {
	fs, ok := fields(msg)
	if !ok {
		return "", false
	}
	s, seen := "", false
	for _, f := range fs {
		if f.num == num {
			if seen || f.wire != 2 {
				return "", false
			}
			s, seen = string(f.b), true
		}
	}
	return s, true
}

// declaredValue reads a ValueInfoProto that declares a tensor's element type and shape.
func declaredValue(vi []byte) (IOInfo, bool) {
	fs, ok := fields(vi)
	if !ok {
		return IOInfo{}, false
	}
	var info IOInfo
	var typ []byte
	for _, f := range fs {
		switch f.num {
		case valueInfoName:
			if f.wire != 2 || info.Name != "" {
				return IOInfo{}, false
			}
			info.Name = string(f.b)
		case valueInfoType:
			if f.wire != 2 || typ != nil {
				return IOInfo{}, false
			}
			typ = f.b
		}
	}
	tf, ok := fields(typ)
	if info.Name == "" || typ == nil || !ok {
		return IOInfo{}, false
	}
	var tensor []byte
	for _, f := range tf {
		if f.num != typeTensor || f.wire != 2 || tensor != nil {
			return IOInfo{}, false // another kind of type, or a denotation this reader skips
		}
		tensor = f.b
	}
	ttf, ok := fields(tensor)
	if tensor == nil || !ok {
		return IOInfo{}, false
	}
	var elem uint64
	var shape []byte
	for _, f := range ttf {
		switch {
		case f.num == tensorTypeElem && f.wire == 0 && elem == 0:
			elem = f.v
		case f.num == tensorTypeShape && f.wire == 2 && shape == nil:
			shape = f.b
		default:
			return IOInfo{}, false
		}
	}
	if elem == 0 || shape == nil {
		return IOInfo{}, false
	}
	info.DType = ndarray.DType(elem)
	dims, ok := fields(shape)
	if !ok {
		return IOInfo{}, false
	}
	info.Dims = []int64{}
	for _, d := range dims {
		if d.num != shapeDim || d.wire != 2 {
			return IOInfo{}, false
		}
		df, ok := fields(d.b)
		if !ok {
			return IOInfo{}, false
		}
		size := int64(-1)
		for _, x := range df {
			switch {
			case x.num == dimValue && x.wire == 0:
				size = int64(x.v)
			case (x.num == dimParam || x.num == dimDenotation) && x.wire == 2:
			default:
				return IOInfo{}, false
			}
		}
		if size < 0 {
			size = -1
		}
		info.Dims = append(info.Dims, size)
	}
	return info, true
}
