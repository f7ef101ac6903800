package cuda

import (
	"hash/fnv"
	"math"
)

// generator makes the n values of a random check-data tensor. The values are
// a pure function of the seed string (the block id and parameter), so the
// check data of a model is the same on every machine and every run.
type generator func(n int64) []float64

// stream is splitmix64 seeded from a string.
type stream struct{ s uint64 }

func newStream(seed string) *stream {
	h := fnv.New64a()
	h.Write([]byte(seed))
	return &stream{s: h.Sum64()}
}

func (r *stream) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// unit is uniform in [0, 1) with 24 bits, exact in float32.
func (r *stream) unit() float64 { return float64(r.next()>>40) / (1 << 24) }

// uniform values in [lo, hi).
func uniform(seed string, lo, hi float64) generator {
	return func(n int64) []float64 {
		r := newStream(seed)
		v := make([]float64, n)
		for i := range v {
			v[i] = lo + (hi-lo)*r.unit()
		}
		return v
	}
}

// ints are integers in [0, k); for an int8 tensor (k = 256) they are shifted
// to [-128, 128) when written.
func ints(seed string, k int64) generator {
	return func(n int64) []float64 {
		r := newStream(seed)
		v := make([]float64, n)
		for i := range v {
			v[i] = float64(r.next() % uint64(k))
		}
		return v
	}
}

// kept says whether token s of sequence b is a real token in the check data's
// padding pattern: sequence 0 has no padding, the last of three or more is all
// padding, and sequence b between them pads its last b * seq / (2 * batch)
// positions (never its first).
func kept(b, s, batch, seq int64) bool {
	switch {
	case b == 0:
		return true
	case batch >= 3 && b == batch-1:
		return false
	}
	return s < seq-b*seq/(2*batch) || s == 0
}

// paddingMask is a [batch, seq] key padding mask of the kept pattern: 1 for a
// real token, 0 for padding; with negative, the first padding position of
// sequence 1 holds -1 (ONNX Runtime's mask_index keeps keys > 0, so -1 pads).
func paddingMask(batch, seq int64, negative bool) generator {
	return func(n int64) []float64 {
		v := make([]float64, n)
		for b := int64(0); b < batch; b++ {
			first := true
			for s := int64(0); s < seq; s++ {
				switch {
				case kept(b, s, batch, seq):
					v[b*seq+s] = 1
				case negative && b == 1 && first:
					v[b*seq+s] = -1
					first = false
				}
			}
		}
		return v
	}
}

// minFloat32 is the fill DeBERTa's fused attention adds to masked scores.
const minFloat32 = -math.MaxFloat32

// maskedBias is a [batch, heads, seq, seq] score bias, uniform in [-2, 2); with
// masked, pairs where the query or the key is padding (kept) hold -FLT_MAX, as
// DeBERTa's bias does with its mask folded in.
func maskedBias(seed string, batch, heads, seq int64, masked bool) generator {
	return func(n int64) []float64 {
		v := uniform(seed, -2, 2)(n)
		if !masked {
			return v
		}
		for b := int64(0); b < batch; b++ {
			for h := int64(0); h < heads; h++ {
				for i := int64(0); i < seq; i++ {
					for j := int64(0); j < seq; j++ {
						if !kept(b, i, batch, seq) || !kept(b, j, batch, seq) {
							v[((b*heads+h)*seq+i)*seq+j] = minFloat32
						}
					}
				}
			}
		}
		return v
	}
}

// rowKeep is [batch, seq, 1]: 1 for a query row with a real token, 0 for padding.
func rowKeep(batch, seq int64) generator {
	return func(n int64) []float64 {
		v := make([]float64, n)
		for b := int64(0); b < batch; b++ {
			for s := int64(0); s < seq; s++ {
				if kept(b, s, batch, seq) {
					v[b*seq+s] = 1
				}
			}
		}
		return v
	}
}

// quantInput is a QuantizeLinear input for the given scales (one per channel of
// inner consecutive elements): x / scale spans [-140, 140), so the ends saturate,
// and every third element is an exact tie, x / scale = k + 0.5 (exact in float for
// a power-of-two scale), where rounding half to even and half away from zero
// differ.
func quantInput(seed string, scales []float64, inner int64) generator {
	return func(n int64) []float64 {
		u := uniform(seed, -140, 140)(n)
		for i := range u {
			s := scales[(int64(i)/inner)%int64(len(scales))]
			if i%3 == 0 {
				u[i] = (math.Trunc(u[i]) + 0.5) * s
			} else {
				u[i] *= s
			}
		}
		return u
	}
}

// additiveBias is the sum of a model's additive score terms, shaped [..., rows, keys]
// (rows 1 when the bias is shared by every query): values in [-2, 2) (a relative
// position bias), keys after the query filled with the lowest float (a causal mask as
// exporters write it), and in the last [rows, keys] slice a query row whose every key
// is -inf (a padding row whose masks overflowed), and in the first, where it has a
// second row, one whose every key is the lowest float.
func additiveBias(seed string, shape []int64) generator {
	return func(n int64) []float64 {
		v := uniform(seed, -2, 2)(n)
		if len(shape) < 2 {
			return v
		}
		rows, keys := shape[len(shape)-2], shape[len(shape)-1]
		slices := n / (rows * keys)
		for s := int64(0); s < slices; s++ {
			for i := int64(0); i < rows; i++ {
				for j := int64(0); j < keys; j++ {
					at := (s*rows+i)*keys + j
					switch {
					case s == slices-1 && i == 0:
						v[at] = math.Inf(-1)
					case s == 0 && i == 1:
						v[at] = minFloat32
					case rows > 1 && j > i:
						v[at] = minFloat32
					}
				}
			}
		}
		return v
	}
}
