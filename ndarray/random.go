package ndarray

import "math/rand/v2"

// RandNormal is a float32 array of the given shape with standard normal elements drawn
// from r: the inputs tests feed ONNX Runtime.
func RandNormal(r *rand.Rand, shape ...int64) *Array {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return FromFloat32(shape, v)
}
