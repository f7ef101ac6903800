// Package synth makes deterministic transformer inputs for tests and benchmarks: token
// ids, an attention mask with some padding, and token types.
package synth

import (
	"strings"

	"github.com/qcc-dev/qcc/ndarray"
)

// Inputs returns [batch, seq] int64 arrays for the named inputs, recognised by name:
// "...mask..." is 1 but for the last `pad` positions of the last row, "...type..." is 0
// for the first half of the sequence and 1 after, anything else gets token ids below
// vocab.
func Inputs(names []string, batch, seq, pad int, vocab int64) map[string]*ndarray.Array {
	out := map[string]*ndarray.Array{}
	for _, name := range names {
		v := make([]int64, batch*seq)
		for i := 0; i < batch; i++ {
			for j := 0; j < seq; j++ {
				k := i*seq + j
				switch {
				case strings.Contains(name, "mask"):
					if !(i == batch-1 && j >= seq-pad) {
						v[k] = 1
					}
				case strings.Contains(name, "type"):
					if j >= seq/2 {
						v[k] = 1
					}
				default:
					v[k] = int64(i*7919+j*31+101) % vocab
				}
			}
		}
		out[name] = ndarray.FromInt64([]int64{int64(batch), int64(seq)}, v)
	}
	return out
}
