// Package calib collects calibration statistics for int8 quantization by running a model
// through ONNX Runtime, and turns them into per-tensor ranges (amax; the symmetric int8
// scale is amax/127).
//
// The pieces:
//
//   - LoadData opens the calibration inputs: an .npz file, a folder of ONNX test-data
//     TensorProto files, or random inputs drawn from the model's input types (Source).
//   - Collect runs the model batch by batch and keeps, per requested tensor, a fixed-size
//     Histogram of |x| plus the signed min/max and the absolute max. Memory does not grow
//     with the number of batches: no activation is stored.
//   - Stats.Ranges applies a Method: max, percentile:P, entropy (TensorRT's KL-divergence
//     search) or mse (least expected int8 quantization error).
//   - WriteJSON/ReadJSON keep ranges in qcc's JSON cache; WriteTRT/ReadTRT in TensorRT's
//     calibration-cache text format.
package calib
