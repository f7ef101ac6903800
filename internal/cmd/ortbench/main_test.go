package main

import (
	"testing"
	"time"
)

func TestPairedRatio(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		d := make([]time.Duration, len(v))
		for i, x := range v {
			d[i] = time.Duration(x) * time.Millisecond
		}
		return d
	}
	// Round ratios 3, 2, 4: the median is 3. An outlier round (10) moves it only to
	// the upper middle of 2, 3, 4, 10, i.e. 4.
	if got := pairedRatio(ms(30, 20, 40), ms(10, 10, 10)); got != 3 {
		t.Errorf("pairedRatio = %v, want 3", got)
	}
	if got := pairedRatio(ms(30, 20, 40, 100), ms(10, 10, 10, 10)); got != 4 {
		t.Errorf("pairedRatio with an outlier round = %v, want 4", got)
	}
	// The first model against itself is 1 whatever the machine did.
	base := ms(30, 90, 31)
	if got := pairedRatio(base, base); got != 1 {
		t.Errorf("pairedRatio(base, base) = %v, want 1", got)
	}
}
