package calib

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/qcc-dev/qcc/ir/onnxpb"
	"github.com/qcc-dev/qcc/ndarray"
)

// DecodeTensorProto reads a serialized ONNX TensorProto (the .pb files of ONNX test data)
// into an array, returning the tensor's name ("" when unnamed). Data may be in raw_data
// or the typed fields; external data and string tensors are refused.
func DecodeTensorProto(b []byte) (string, *ndarray.Array, error) {
	var tp onnxpb.TensorProto
	if err := proto.Unmarshal(b, &tp); err != nil {
		return "", nil, fmt.Errorf("not a TensorProto: %w", err)
	}
	name := tp.GetName()
	if tp.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
		return name, nil, errors.New("externally stored tensor data is not supported")
	}
	dt := ndarray.DType(tp.GetDataType())
	if !dt.Supported() {
		return name, nil, fmt.Errorf("unsupported data type %d", tp.GetDataType())
	}
	for _, d := range tp.Dims {
		if d < 0 {
			return name, nil, fmt.Errorf("negative dimension in %v", tp.Dims)
		}
	}
	n, err := ndarray.NumElements(tp.Dims)
	if err != nil {
		return name, nil, err
	}
	a := &ndarray.Array{DType: dt, Shape: append([]int64{}, tp.Dims...)}
	size := dt.Size()
	if tp.RawData != nil {
		if len(tp.RawData) != n*size {
			return name, nil, fmt.Errorf("raw_data has %d bytes, %v%v needs %d", len(tp.RawData), dt, tp.Dims, n*size)
		}
		a.Data = append([]byte{}, tp.RawData...)
		return name, a, nil
	}
	a.Data = make([]byte, n*size)
	le := binary.LittleEndian
	count := func(have int, field string) error {
		if have != n {
			return fmt.Errorf("%s has %d values, %v%v needs %d", field, have, dt, tp.Dims, n)
		}
		return nil
	}
	switch dt {
	case ndarray.Float32:
		if err := count(len(tp.FloatData), "float_data"); err != nil {
			return name, nil, err
		}
		for i, v := range tp.FloatData {
			le.PutUint32(a.Data[4*i:], math.Float32bits(v))
		}
	case ndarray.Float64:
		if err := count(len(tp.DoubleData), "double_data"); err != nil {
			return name, nil, err
		}
		for i, v := range tp.DoubleData {
			le.PutUint64(a.Data[8*i:], math.Float64bits(v))
		}
	case ndarray.Int64:
		if err := count(len(tp.Int64Data), "int64_data"); err != nil {
			return name, nil, err
		}
		for i, v := range tp.Int64Data {
			le.PutUint64(a.Data[8*i:], uint64(v))
		}
	case ndarray.Uint32, ndarray.Uint64:
		if err := count(len(tp.Uint64Data), "uint64_data"); err != nil {
			return name, nil, err
		}
		for i, v := range tp.Uint64Data {
			if dt == ndarray.Uint32 {
				le.PutUint32(a.Data[4*i:], uint32(v))
			} else {
				le.PutUint64(a.Data[8*i:], v)
			}
		}
	default: // 1-, 2- and 4-byte integers, bool, float16, bfloat16: int32_data
		if err := count(len(tp.Int32Data), "int32_data"); err != nil {
			return name, nil, err
		}
		for i, v := range tp.Int32Data {
			switch size {
			case 1:
				a.Data[i] = byte(v)
			case 2:
				le.PutUint16(a.Data[2*i:], uint16(v))
			case 4:
				le.PutUint32(a.Data[4*i:], uint32(v))
			}
		}
	}
	return name, a, nil
}

// EncodeTensorProto serializes an array as a TensorProto with raw_data.
func EncodeTensorProto(name string, a *ndarray.Array) ([]byte, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	dt := int32(a.DType)
	tp := &onnxpb.TensorProto{
		Dims:     append([]int64{}, a.Shape...),
		DataType: &dt,
		RawData:  append([]byte{}, a.Data...),
	}
	if name != "" {
		tp.Name = &name
	}
	return proto.Marshal(tp)
}
