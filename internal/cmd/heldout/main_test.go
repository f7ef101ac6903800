package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/npz"
)

// The rule explains eval.npz's labels up to the noise its metrics file states.
func TestScoreReproducesEvalLabels(t *testing.T) {
	dir := filepath.Join(corpus.Dir(t), "trained")
	arrays, err := npz.Read(filepath.Join(dir, "eval.npz"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "bert-cls-trained.metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var metrics struct {
		Flipped float64 `json:"eval_labels_flipped_by_noise"`
	}
	if err := json.Unmarshal(b, &metrics); err != nil || metrics.Flipped == 0 {
		t.Fatalf("metrics: %v (flipped %v)", err, metrics.Flipped)
	}
	like, err := bodies(arrays["input_ids"], arrays["attention_mask"])
	if err != nil {
		t.Fatal(err)
	}
	labels := arrays["labels"].Int64s()
	differ := 0
	for i, body := range like {
		s := score(body)
		if s == 0 {
			t.Errorf("row %d sums to 0; the task redraws those", i)
		}
		if (s > 0) != (labels[i] == 1) {
			differ++
		}
	}
	if want := int(math.Round(metrics.Flipped * float64(len(like)))); differ != want {
		t.Errorf("the rule disagrees with %d of %d labels; the metrics say %d were flipped", differ, len(like), want)
	}
}

func TestScore(t *testing.T) {
	for _, c := range []struct {
		body []int64
		want int
	}{
		{[]int64{5, 100, 25, 30}, -1},
		{[]int64{not, 5, very, 30}, -3},
		{[]int64{not, very, 5, 100, not, 100, 6}, -1}, // "not" before a filler word does nothing
		{[]int64{very, not, 5}, -1},
	} {
		if got := score(c.body); got != c.want {
			t.Errorf("score(%v) = %d, want %d", c.body, got, c.want)
		}
	}
}

func TestGenerate(t *testing.T) {
	like := [][]int64{{5, 100, 25, not, 7}, {very, 30, 101, 102}, {6, 6, 6}}
	const n, seq = 300, 8
	ids, mask, labels := generate(like, n, seq, 7)
	ids2, _, _ := generate(like, n, seq, 7)
	ids3, _, _ := generate(like, n, seq, 8)
	if !slices.Equal(ids, ids2) || slices.Equal(ids, ids3) {
		t.Errorf("not a function of the seed")
	}
	seen := map[int64]bool{}
	for _, b := range like {
		for _, x := range b {
			seen[x] = true
		}
	}
	pos := 0
	for i := range n {
		row, m := ids[i*seq:(i+1)*seq], mask[i*seq:(i+1)*seq]
		l := 0
		for l < seq && m[l] == 1 {
			l++
		}
		if slices.Contains(m[l:], 1) || l-2 < 3 || l-2 > 5 || row[0] != cls || row[l-1] != sep || slices.ContainsFunc(row[l:], func(x int64) bool { return x != pad }) {
			t.Fatalf("row %d: ids %v mask %v", i, row, m)
		}
		body := row[1 : l-1]
		for _, x := range body {
			if !seen[x] {
				t.Fatalf("row %d: token %d is not in the data it was drawn like", i, x)
			}
		}
		s := score(body)
		if s == 0 || (s > 0) != (labels[i] == 1) {
			t.Fatalf("row %d: score %d, label %d", i, s, labels[i])
		}
		pos += int(labels[i])
	}
	if pos == 0 || pos == n {
		t.Errorf("%d of %d labels positive", pos, n)
	}
}
