package calib

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	_ "github.com/qcc-dev/qcc/internal/update"
)

// gaussian returns n N(0, sigma) samples plus the extra values.
func gaussian(seed uint64, n int, sigma float64, extra ...float32) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]float32, 0, n+len(extra))
	for range n {
		out = append(out, float32(rng.NormFloat64()*sigma))
	}
	return append(out, extra...)
}

// exactPercentile is numpy's default (linear) percentile of |x|.
func exactPercentile(vals []float32, p float64) float64 {
	a := make([]float64, len(vals))
	for i, v := range vals {
		a[i] = math.Abs(float64(v))
	}
	sort.Float64s(a)
	pos := p / 100 * float64(len(a)-1)
	lo := int(math.Floor(pos))
	if lo >= len(a)-1 {
		return a[len(a)-1]
	}
	return a[lo] + (pos-float64(lo))*(a[lo+1]-a[lo])
}

// int8MSE is the mean squared error of symmetric int8 fake quantization at amax t,
// computed on the raw samples.
func int8MSE(vals []float32, t float64) float64 {
	s := t / 127
	var e float64
	for _, v := range vals {
		x := float64(v)
		q := math.Max(-127, math.Min(127, math.Round(x/s))) * s
		e += (x - q) * (x - q)
	}
	return e / float64(len(vals))
}

func TestClippedKLByHand(t *testing.T) {
	// 256 bins: the head alternates 100, 50 over bins 0..127, the tail is 1 per bin.
	bins := make([]int64, 256)
	for k := range 128 {
		bins[k] = 100
		if k%2 == 1 {
			bins[k] = 50
		}
	}
	for k := 128; k < 256; k++ {
		bins[k] = 1
	}
	outliers := make([]float64, 257)
	for i := 255; i >= 0; i-- {
		outliers[i] = outliers[i+1] + float64(bins[i])
	}
	total := outliers[0] // 64*150 + 128 = 9728
	q := make([]float64, 256)
	// i = 128: Q = the head itself (groups of one bin), P moves the 128 tail samples
	// into bin 127: KL = (9550/9728) ln(9600/9728) + (178/9728) ln((178/9728)/(50/9600)).
	want128 := 9550.0/9728*math.Log(9600.0/9728) + 178.0/9728*math.Log((178.0/9728)/(50.0/9600))
	// i = 256: nothing clipped; Q averages each (100, 50) pair to 75 and leaves the tail:
	// KL = 64/9728 (100 ln(100/75) + 50 ln(50/75)).
	want256 := 64.0 / 9728 * (100*math.Log(100.0/75) + 50*math.Log(50.0/75))
	if got := clippedKL(bins, outliers, total, 128, q); math.Abs(got-want128) > 1e-12 {
		t.Errorf("KL(128) = %v, want %v", got, want128)
	}
	if got := clippedKL(bins, outliers, total, 256, q); math.Abs(got-want256) > 1e-12 {
		t.Errorf("KL(256) = %v, want %v", got, want256)
	}
	t.Logf("KL(128) = %.6f, KL(256) = %.6f", want128, want256)

	// Entropy picks the least divergence over every candidate.
	h := &Histogram{Bins: bins, Width: 0.5, AbsMax: 128, Count: int64(total)}
	best, bestI := math.Inf(1), 0
	for i := 128; i <= 256; i++ {
		if kl := clippedKL(bins, outliers, total, i, q); kl < best {
			best, bestI = kl, i
		}
	}
	if got := h.Entropy(); got != float64(bestI)*0.5 {
		t.Errorf("Entropy() = %v, want %v (bin %d, KL %v)", got, float64(bestI)*0.5, bestI, best)
	}
	if bestI == 256 {
		t.Errorf("entropy kept the whole thin tail: the head's pairs make Q poor without clipping")
	}

	// An empty bin under the clip point with mass beyond it is never chosen.
	bins2 := append([]int64{}, bins...)
	bins2[199] = 0
	outliers2 := make([]float64, 257)
	for i := 255; i >= 0; i-- {
		outliers2[i] = outliers2[i+1] + float64(bins2[i])
	}
	if kl := clippedKL(bins2, outliers2, outliers2[0], 200, q); !math.IsInf(kl, 1) {
		t.Errorf("KL at an empty clip bin = %v, want +Inf", kl)
	}
}

func TestHistogramMethods(t *testing.T) {
	// N(0, 1) with one far outlier, fed in batches whose max grows (the outlier last).
	vals := gaussian(7, 100000, 1, 40)
	h := NewHistogram(DefaultBins)
	for lo := 0; lo < len(vals); lo += 5000 {
		h.Add(vals[lo:min(lo+5000, len(vals))])
	}
	if h.Count != int64(len(vals)) {
		t.Fatalf("Count = %d, want %d", h.Count, len(vals))
	}
	var sum int64
	for _, c := range h.Bins {
		sum += c
	}
	if sum != h.Count {
		t.Errorf("bins hold %d samples, want %d", sum, h.Count)
	}
	if h.AbsMax != 40 || h.Max != 40 {
		t.Errorf("AbsMax, Max = %v, %v, want 40", h.AbsMax, h.Max)
	}
	tol := 1.5 * h.Width
	for _, p := range []float64{50, 99, 99.9, 99.99} {
		got, err := h.Percentile(p)
		if err != nil {
			t.Fatal(err)
		}
		if want := exactPercentile(vals, p); math.Abs(got-want) > tol {
			t.Errorf("percentile %v = %.4f, exact %.4f (tolerance %.4f)", p, got, want, tol)
		}
	}
	if got, _ := h.Percentile(100); got != 40 {
		t.Errorf("percentile 100 = %v, want 40", got)
	}
	if _, err := h.Percentile(0); err == nil {
		t.Error("percentile 0 accepted")
	}

	// MSE: the chosen threshold must be (near) optimal on the raw samples.
	tm := h.MSE()
	bestT, bestE := 0.0, math.Inf(1)
	for T := 0.5; T <= 40; T += 0.1 {
		if e := int8MSE(vals, T); e < bestE {
			bestT, bestE = T, e
		}
	}
	if e := int8MSE(vals, tm); e > 1.03*bestE {
		t.Errorf("mse threshold %.3f gives MSE %.3g; the best (%.3f) gives %.3g", tm, e, bestT, bestE)
	}

	// Entropy clips the outlier: its range is a few sigma.
	te := h.Entropy()
	if te < 2.5 || te > 8 {
		t.Errorf("entropy threshold %.3f, want a few sigma of N(0,1), far below the outlier 40", te)
	}
	t.Logf("N(0,1)+outlier: p99.99 %.3f entropy %.3f mse %.3f (brute-force mse optimum %.3f)",
		exactPercentile(vals, 99.99), te, tm, bestT)

	// Uniform data: nothing to clip, entropy and mse keep (almost) the whole range.
	rng := rand.New(rand.NewPCG(3, 3))
	uni := make([]float32, 100000)
	for i := range uni {
		uni[i] = float32(rng.Float64()*2 - 1)
	}
	hu := NewHistogram(0)
	hu.Add(uni)
	if te := hu.Entropy(); te < 0.95*hu.AbsMax {
		t.Errorf("uniform: entropy threshold %.4f, want near the max %.4f", te, hu.AbsMax)
	}
	if tm := hu.MSE(); tm < 0.95*hu.AbsMax {
		t.Errorf("uniform: mse threshold %.4f, want near the max %.4f", tm, hu.AbsMax)
	}
}

func TestHistogramEdgeCases(t *testing.T) {
	h := NewHistogram(16)
	h.Add([]float32{0, 0, float32(math.NaN()), float32(math.Inf(1))})
	if h.Count != 2 || h.NonFinite != 2 || h.Width != 0 || h.Bins[0] != 2 {
		t.Errorf("zeros: %+v", h)
	}
	for _, m := range []Method{{Kind: Max}, {Kind: Percentile, P: 99}, {Kind: Entropy}, {Kind: MSE}} {
		if a, err := h.Amax(m); err != nil || a != 0 {
			t.Errorf("%v on zeros = %v, %v", m, a, err)
		}
	}
	// The first nonzero batch sets the width; the zeros stay in bin 0.
	h.Add([]float32{-1, 0.5})
	if h.Width != 1.0/16 || h.Bins[0] != 2 || h.Bins[8] != 1 || h.Bins[15] != 1 || h.Min != -1 || h.Max != 0.5 {
		t.Errorf("after growth from zero: width %v bins %v min %v max %v", h.Width, h.Bins, h.Min, h.Max)
	}
	// A max 5x larger doubles the width three times (8x), merging counts exactly: 0.5
	// and -1 (bins 8 and 15) both land in bin 1.
	h.Add([]float32{5})
	if h.Width != 0.5 || h.Bins[0] != 2 || h.Bins[1] != 2 || h.Bins[2] != 0 || h.Bins[10] != 1 {
		t.Errorf("after growth: width %v bins %v", h.Width, h.Bins)
	}
	if h.used() != 10 {
		t.Errorf("used = %d, want 10", h.used())
	}
}

func TestBoundedState(t *testing.T) {
	h := NewHistogram(DefaultBins)
	h.Add(gaussian(1, 1000, 1))
	size := h.StateBytes()
	for b := range 50 {
		h.Add(gaussian(uint64(b+2), 1000, float64(b+1)))
		if h.StateBytes() != size || len(h.Bins) != DefaultBins {
			t.Fatalf("after %d batches: state %d bytes, %d bins; want %d, %d", b+2, h.StateBytes(), len(h.Bins), size, DefaultBins)
		}
	}
	if h.Count != 51000 {
		t.Errorf("Count = %d", h.Count)
	}
}
