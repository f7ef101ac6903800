package calib

import (
	"fmt"
	"math"
)

// DefaultBins is the histogram resolution Collect uses when Options.Bins is 0.
const DefaultBins = 2048

// Histogram is the running statistics of one tensor: the signed extremes, the absolute
// maximum and a histogram of |x| over [0, Width*len(Bins)).
//
// Memory is fixed at creation: the bin count never changes. The first batch with a
// nonzero value sets Width so that its absolute maximum ends at the last bin; a later
// batch whose absolute maximum does not fit doubles Width (as often as needed), merging
// adjacent pairs of bins, which is exact: no count is split between bins. After a growth
// the data occupies between half and all of the bins; the range methods use only the
// bins up to AbsMax.
type Histogram struct {
	Count     int64   // finite samples seen
	NonFinite int64   // NaN and ±Inf samples, ignored
	Min, Max  float64 // signed extremes of the finite samples (0 when Count is 0)
	AbsMax    float64 // max |x| over the finite samples
	Width     float64 // bin width; 0 until a nonzero sample arrives (zeros go to bin 0)
	Bins      []int64 // Bins[i] counts samples with i*Width <= |x| < (i+1)*Width
}

// NewHistogram returns an empty histogram with n bins (DefaultBins when n <= 0).
func NewHistogram(n int) *Histogram {
	if n <= 0 {
		n = DefaultBins
	}
	return &Histogram{Bins: make([]int64, n)}
}

// StateBytes is the memory the histogram holds: fixed for its lifetime.
func (h *Histogram) StateBytes() int { return 8*len(h.Bins) + 8*7 }

// Add accumulates samples. Non-finite values are counted in NonFinite and otherwise
// ignored.
func (h *Histogram) Add(vals []float32) {
	bmax := 0.0
	bmin, bmaxSigned := math.Inf(1), math.Inf(-1)
	finite := 0
	for _, v := range vals {
		x := float64(v)
		if math.IsNaN(x) || math.IsInf(x, 0) {
			h.NonFinite++
			continue
		}
		finite++
		bmin = min(bmin, x)
		bmaxSigned = max(bmaxSigned, x)
		bmax = max(bmax, math.Abs(x))
	}
	if finite == 0 {
		return
	}
	if h.Count == 0 {
		h.Min, h.Max = bmin, bmaxSigned
	} else {
		h.Min, h.Max = min(h.Min, bmin), max(h.Max, bmaxSigned)
	}
	h.Count += int64(finite)
	h.AbsMax = max(h.AbsMax, bmax)
	n := len(h.Bins)
	if h.Width == 0 && bmax > 0 {
		h.Width = bmax / float64(n)
	}
	for h.Width > 0 && bmax > h.Width*float64(n) {
		h.grow()
	}
	if h.Width == 0 { // every sample so far is zero
		h.Bins[0] += int64(finite)
		return
	}
	inv := 1 / h.Width
	for _, v := range vals {
		a := math.Abs(float64(v))
		if math.IsNaN(a) || math.IsInf(a, 0) {
			continue
		}
		i := int(a * inv)
		if i >= n {
			i = n - 1 // |x| == range end, or rounding in a*inv
		}
		h.Bins[i]++
	}
}

// grow doubles the bin width, merging bins 2i and 2i+1 into bin i.
func (h *Histogram) grow() {
	n := len(h.Bins)
	for i := 0; i < n; i++ {
		c := h.Bins[i]
		h.Bins[i] = 0
		h.Bins[i/2] += c
	}
	h.Width *= 2
}

// used returns the number of bins that the data can occupy: those up to AbsMax.
func (h *Histogram) used() int {
	if h.Width == 0 {
		return 1
	}
	nb := int(math.Ceil(h.AbsMax / h.Width))
	return min(max(nb, 1), len(h.Bins))
}

// Percentile returns the absolute value below which p percent of the samples fall
// (0 < p <= 100), interpolating linearly inside the bin that holds it, so it is
// accurate to one bin width. 100 gives AbsMax exactly.
func (h *Histogram) Percentile(p float64) (float64, error) {
	if !(p > 0 && p <= 100) {
		return 0, fmt.Errorf("calib: percentile %v is outside (0, 100]", p)
	}
	if h.Count == 0 || h.Width == 0 {
		return 0, nil
	}
	if p == 100 {
		return h.AbsMax, nil
	}
	target := p / 100 * float64(h.Count)
	cum := 0.0
	for i, c := range h.Bins {
		if c == 0 {
			continue
		}
		next := cum + float64(c)
		if next >= target {
			frac := (target - cum) / float64(c)
			return min((float64(i)+frac)*h.Width, h.AbsMax), nil
		}
		cum = next
	}
	return h.AbsMax, nil
}

// entropyLevels is the number of quantization levels of the positive half of the int8
// range that the entropy method compares against: TensorRT's 128.
const entropyLevels = 128

// Entropy returns the threshold that minimises the KL divergence between the histogram
// clipped at it (the clipped mass added to the last kept bin) and that clipped histogram
// quantized to 128 levels, the algorithm of TensorRT's entropy calibrator (Szymon Migacz,
// "8-bit Inference with TensorRT", GTC 2017). Candidate thresholds are the bin edges
// from bin 128 up to AbsMax; a histogram with no more used bins than that gives AbsMax.
func (h *Histogram) Entropy() float64 {
	if h.Count == 0 || h.Width == 0 {
		return 0
	}
	nb := h.used()
	if nb <= entropyLevels {
		return h.AbsMax
	}
	bins := h.Bins[:nb]
	var total float64
	for _, c := range bins {
		total += float64(c)
	}
	// outliers[i] = sum of bins[i:]
	outliers := make([]float64, nb+1)
	for i := nb - 1; i >= 0; i-- {
		outliers[i] = outliers[i+1] + float64(bins[i])
	}
	q := make([]float64, nb)
	best, bestI := math.Inf(1), nb
	for i := entropyLevels; i <= nb; i++ {
		if kl := clippedKL(bins, outliers, total, i, q); kl < best {
			best, bestI = kl, i
		}
	}
	return min(float64(bestI)*h.Width, h.AbsMax)
}

// clippedKL is the divergence for clipping at bin i: P is bins[:i] with the outliers
// (outliers[i], the mass of bins[i:]) added to bin i-1, normalised by total; Q is
// bins[:i] merged into 128 groups (group j is bins [j*i/128, (j+1)*i/128)), each group's
// mass spread evenly over its nonzero bins, normalised by its sum. q is scratch space of
// at least i elements. Where P has mass and Q none (the clipped mass landing on an empty
// bin) the divergence is +Inf.
func clippedKL(bins []int64, outliers []float64, total float64, i int, q []float64) float64 {
	if outliers[i] > 0 && bins[i-1] == 0 {
		return math.Inf(1)
	}
	var qsum float64
	for j := 0; j < entropyLevels; j++ {
		lo, hi := j*i/entropyLevels, (j+1)*i/entropyLevels
		var sum float64
		nz := 0
		for k := lo; k < hi; k++ {
			if bins[k] != 0 {
				sum += float64(bins[k])
				nz++
			}
		}
		for k := lo; k < hi; k++ {
			q[k] = 0
			if bins[k] != 0 {
				q[k] = sum / float64(nz)
			}
		}
		qsum += sum
	}
	var kl float64
	for k := 0; k < i; k++ {
		pc := float64(bins[k])
		if k == i-1 {
			pc += outliers[i]
		}
		if pc == 0 {
			continue
		}
		p := pc / total
		kl += p * math.Log(p/(q[k]/qsum))
	}
	return kl
}

// MSE returns the threshold T (a bin edge up to AbsMax) that minimises the expected
// squared error of symmetric int8 quantization with scale T/127 over the histogram.
// Each bin's samples are taken as uniform over the bin: a clipped bin costs
// (centre-T)² + w²/12; a kept bin costs step²/12 when the step is under 4 bins wide,
// else (centre - nearest level)² + w²/12.
func (h *Histogram) MSE() float64 {
	if h.Count == 0 || h.Width == 0 {
		return 0
	}
	nb := h.used()
	w := h.Width
	w2 := w * w / 12
	best, bestT := math.Inf(1), h.AbsMax
	for i := 1; i <= nb; i++ {
		t := min(float64(i)*w, h.AbsMax)
		s := t / 127
		var e float64
		for k := 0; k < nb; k++ {
			c := h.Bins[k]
			if c == 0 {
				continue
			}
			x := (float64(k) + 0.5) * w
			var ek float64
			switch {
			case x > t:
				ek = (x-t)*(x-t) + w2
			case s < 4*w:
				ek = s * s / 12
			default:
				d := x - s*math.Round(x/s)
				ek = d*d + w2
			}
			e += float64(c) * ek
		}
		if e < best {
			best, bestT = e, t
		}
	}
	return bestT
}

// Amax returns the range the method picks for this histogram (0 when it has seen no
// nonzero sample).
func (h *Histogram) Amax(m Method) (float64, error) {
	switch m.Kind {
	case Max:
		return h.AbsMax, nil
	case Percentile:
		return h.Percentile(m.P)
	case Entropy:
		return h.Entropy(), nil
	case MSE:
		return h.MSE(), nil
	}
	return 0, fmt.Errorf("calib: unknown method %v", m)
}
