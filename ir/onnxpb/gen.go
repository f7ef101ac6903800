// Package onnxpb holds the Go types of the ONNX model file format
// (ModelProto and everything below it), generated from onnx.proto in this
// folder. Only the ir package's load and save code uses it; the rest of qcc
// works on the ir types.
//
// To regenerate onnx.pb.go after editing onnx.proto, install protoc and
// protoc-gen-go at the google.golang.org/protobuf version named in go.mod
// (go install google.golang.org/protobuf/cmd/protoc-gen-go@VERSION), then
// run go generate ./ir/onnxpb/ from the repository root.
package onnxpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative onnx.proto
