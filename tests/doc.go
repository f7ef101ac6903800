// Package tests holds qcc's end-to-end tests over the real-model corpus in
// ../shared/models: every rewrite that claims to preserve a model's function is checked
// by running ONNX Runtime on the original and the rewritten model.
package tests
