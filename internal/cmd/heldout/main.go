// Command heldout writes fresh labelled examples of the synthetic task the trained
// classifier of ../shared/models/trained learned, so that accuracy figures can be
// reported on data no placement or budget was judged on (eval.npz has 2000 rows: one
// prediction is 0.05 point).
//
// The task (../shared/models/README.md): 20 positive and 20 negative words, "not" flips
// the next word's sentiment and "very" doubles it; the label is whether the sum is
// positive, sums of 0 are redrawn. The token ids below reproduce eval.npz's labels on
// every row but the 2.85% its metrics file says were flipped as noise (tested). Tokens
// and sentence lengths are drawn independently from their frequencies in the -like file
// (eval.npz); labels are written without noise.
//
//	heldout -like eval.npz -n 40000 -seed 1 -o heldout.npz
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"

	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
)

// The vocabulary of the task.
const (
	pad, cls, sep = 0, 1, 2
	posLo, posHi  = 5, 25  // positive words: [posLo, posHi)
	negLo, negHi  = 25, 45 // negative words
	not, very     = 45, 46
)

// score is the signed, weighted sentiment sum of a sentence (without [CLS]/[SEP]): ±1
// per sentiment word, negated after "not", doubled after "very", -2× after "not very".
func score(body []int64) int {
	sum := 0
	for j, t := range body {
		v := 0
		switch {
		case t >= posLo && t < posHi:
			v = 1
		case t >= negLo && t < negHi:
			v = -1
		default:
			continue
		}
		if j >= 1 && body[j-1] == not {
			v = -v
		} else if j >= 1 && body[j-1] == very {
			v *= 2
			if j >= 2 && body[j-2] == not {
				v = -v
			}
		}
		sum += v
	}
	return sum
}

// bodies returns the sentences of an input_ids/attention_mask pair, without [CLS] and
// [SEP].
func bodies(ids, mask *ndarray.Array) ([][]int64, error) {
	if len(ids.Shape) != 2 || !ndarray.SameShape(ids.Shape, mask.Shape) {
		return nil, fmt.Errorf("input_ids %v and attention_mask %v: want the same [rows, seq] shape", ids.Shape, mask.Shape)
	}
	rows, seq := int(ids.Shape[0]), int(ids.Shape[1])
	iv, mv := ids.Int64s(), mask.Int64s()
	out := make([][]int64, rows)
	for i := range rows {
		n := 0
		for j := range seq {
			n += int(mv[i*seq+j])
		}
		r := iv[i*seq : i*seq+n]
		if n < 2 || r[0] != cls || r[n-1] != sep {
			return nil, fmt.Errorf("row %d is not [CLS] words [SEP] under its mask", i)
		}
		out[i] = r[1 : n-1]
	}
	return out, nil
}

// sampler draws from the frequencies of values seen.
type sampler struct {
	vals []int64
	cum  []int // cumulative counts
}

func newSampler(counts map[int64]int) *sampler {
	s := &sampler{}
	for v := range counts {
		s.vals = append(s.vals, v)
	}
	sort.Slice(s.vals, func(i, j int) bool { return s.vals[i] < s.vals[j] })
	total := 0
	for _, v := range s.vals {
		total += counts[v]
		s.cum = append(s.cum, total)
	}
	return s
}

func (s *sampler) draw(r *rand.Rand) int64 {
	x := r.IntN(s.cum[len(s.cum)-1])
	return s.vals[sort.SearchInts(s.cum, x+1)]
}

// generate draws n labelled rows of width seq like the sentences given.
func generate(like [][]int64, n, seq int, seed uint64) (ids, mask, labels []int64) {
	words, lens := map[int64]int{}, map[int64]int{}
	for _, b := range like {
		lens[int64(len(b))]++
		for _, t := range b {
			words[t]++
		}
	}
	ws, ls := newSampler(words), newSampler(lens)
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	ids, mask, labels = make([]int64, n*seq), make([]int64, n*seq), make([]int64, n)
	body := make([]int64, seq)
	for i := 0; i < n; {
		l := int(ls.draw(r))
		b := body[:l]
		for j := range b {
			b[j] = ws.draw(r)
		}
		s := score(b)
		if s == 0 {
			continue // redrawn, as the task's generator does
		}
		row := ids[i*seq : (i+1)*seq]
		row[0], row[l+1] = cls, sep
		copy(row[1:], b)
		for j := 0; j < l+2; j++ {
			mask[i*seq+j] = 1
		}
		if s > 0 {
			labels[i] = 1
		}
		i++
	}
	return ids, mask, labels
}

func main() {
	likePath := flag.String("like", "", "labelled data of the task (eval.npz): token and length frequencies")
	n := flag.Int("n", 40000, "rows to write")
	seed := flag.Uint64("seed", 1, "random seed")
	out := flag.String("o", "", "output .npz (input_ids, attention_mask, token_type_ids, labels)")
	flag.Parse()
	if *likePath == "" || *out == "" || *n <= 0 {
		fmt.Fprintln(os.Stderr, "usage: heldout -like eval.npz [-n 40000] [-seed 1] -o heldout.npz")
		os.Exit(2)
	}
	arrays, err := npz.Read(*likePath)
	if err != nil {
		fail("%v", err)
	}
	ids, mask := arrays["input_ids"], arrays["attention_mask"]
	if ids == nil || mask == nil {
		fail("%s: want input_ids and attention_mask arrays", *likePath)
	}
	like, err := bodies(ids, mask)
	if err != nil {
		fail("%s: %v", *likePath, err)
	}
	seq := int(ids.Shape[1])
	iv, mv, lv := generate(like, *n, seq, *seed)
	shape := []int64{int64(*n), int64(seq)}
	err = npz.Write(*out, map[string]*ndarray.Array{
		"input_ids":      ndarray.FromInt64(shape, iv),
		"attention_mask": ndarray.FromInt64(shape, mv),
		"token_type_ids": ndarray.FromInt64(shape, make([]int64, len(iv))),
		"labels":         ndarray.FromInt64([]int64{int64(*n)}, lv),
	})
	if err != nil {
		fail("%v", err)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "heldout: "+format+"\n", args...)
	os.Exit(1)
}
