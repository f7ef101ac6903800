package cuda

import "hash/fnv"

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

// paddingMask is a [batch, seq] key padding mask: all ones, except that row
// b > 0 pads its last b * seq / (2 * batch) positions (never all of them).
func paddingMask(batch, seq int64) generator {
	return func(n int64) []float64 {
		v := make([]float64, n)
		for b := int64(0); b < batch; b++ {
			pad := b * seq / (2 * batch)
			for s := int64(0); s < seq; s++ {
				if s < seq-pad || s == 0 {
					v[b*seq+s] = 1
				}
			}
		}
		return v
	}
}
