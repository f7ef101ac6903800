package calib

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
)

// Options configure Collect. The zero value is a valid default.
type Options struct {
	// Bins is the histogram resolution per tensor (DefaultBins when 0).
	Bins int
	// IntraOpThreads is ORT's intra-op thread count; 0 lets ORT choose.
	IntraOpThreads int
	// Progress receives the progress bar, one line rewritten in place per batch.
	// nil means standard error when it is a terminal, and nothing otherwise.
	Progress io.Writer
	// MaxBytes bounds the bytes of the tensors ORT hands back for one batch: when the
	// collected tensors' bytes per batch exceed it, they are collected in groups, one
	// ORT pass over the data each, so that peak memory is ORT's own plus about this
	// much whatever the number of tensors. 0 means DefaultMaxBytes; negative, no bound.
	MaxBytes int64
	// EachValue names boolean inputs (If conditions, see Selectors) that CollectModel
	// sets to each value for every batch of the data (see EachSelector).
	EachValue []string
}

// DefaultMaxBytes is Options.MaxBytes's default: 256 MiB of collected tensors per batch.
const DefaultMaxBytes = 256 << 20

// counters of ORT work, for tests and benchmarks (a cache that avoids a run is tested
// by counting them).
var collections, passes atomic.Int64

// Counts returns how many collections (Collect calls that ran ORT) and ORT passes over
// the data (a collection makes several when its tensors are grouped) this process made.
func Counts() (collections_, passes_ int64) { return collections.Load(), passes.Load() }

// Stats are the collected statistics: one Histogram per tensor.
type Stats struct {
	Model   string // the model's file name without .onnx
	Batches int    // batches seen
	// Passes is the number of ORT passes over the data the collection took (tensor
	// groups under Options.MaxBytes); not part of the statistics.
	Passes  int
	Bins    int
	Tensors map[string]*Histogram
}

// NewStats returns empty statistics for the named tensors, with bins bins each
// (DefaultBins when bins <= 0).
func NewStats(names []string, bins int) *Stats {
	if bins <= 0 {
		bins = DefaultBins
	}
	s := &Stats{Bins: bins, Tensors: make(map[string]*Histogram, len(names))}
	for _, n := range names {
		s.Tensors[n] = NewHistogram(bins)
	}
	return s
}

// Add accumulates one batch of a tensor's values. The tensor must be one the Stats were
// made for, with a float element type.
func (s *Stats) Add(name string, a *ndarray.Array) error {
	h := s.Tensors[name]
	if h == nil {
		return fmt.Errorf("calib: no statistics for tensor %q", name)
	}
	if !a.DType.IsFloat() {
		return fmt.Errorf("calib: tensor %q is %v; only float tensors are calibrated", name, a.DType)
	}
	h.Add(a.Float32s())
	return nil
}

// Names returns the tensor names, sorted.
func (s *Stats) Names() []string {
	names := make([]string, 0, len(s.Tensors))
	for n := range s.Tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// StateBytes is the memory held by the statistics, which does not depend on the number
// of batches seen.
func (s *Stats) StateBytes() int {
	total := 0
	for _, h := range s.Tensors {
		total += h.StateBytes()
	}
	return total
}

// ZeroRangeError lists tensors whose range came out 0 (no nonzero finite sample was seen,
// or the method chose 0): they cannot be given an int8 scale. Ranges returns it together
// with the ranges of the other tensors.
type ZeroRangeError struct {
	Method  Method
	Tensors []string // sorted
}

func (e *ZeroRangeError) Error() string {
	return fmt.Sprintf("calib: %s: zero range (no nonzero values seen) for %d tensor(s): %s",
		e.Method, len(e.Tensors), strings.Join(e.Tensors, ", "))
}

// Ranges returns each tensor's amax under the method (the int8 scale is amax/127).
// Tensors with a zero amax are left out of the map and listed in a *ZeroRangeError,
// which is returned along with the map of the others.
func (s *Stats) Ranges(m Method) (map[string]float32, error) {
	switch m.Kind {
	case Max, Entropy, MSE:
	case Percentile:
		if !(m.P > 0 && m.P <= 100) {
			return nil, fmt.Errorf("calib: percentile %v is outside (0, 100]", m.P)
		}
	default:
		return nil, fmt.Errorf("calib: invalid method %v", m)
	}
	out := make(map[string]float32, len(s.Tensors))
	var zero []string
	for _, name := range s.Names() {
		a, err := s.Tensors[name].Amax(m)
		if err != nil {
			return nil, fmt.Errorf("calib: %q: %w", name, err)
		}
		if f := float32(a); f > 0 && !math.IsInf(float64(f), 0) {
			out[name] = f
		} else {
			zero = append(zero, name)
		}
	}
	if len(zero) > 0 {
		return out, &ZeroRangeError{Method: m, Tensors: zero}
	}
	return out, nil
}

// Collect runs the model at modelPath through ONNX Runtime (optimizations off, so the
// tensors are the graph's own) on every batch of src and accumulates a Histogram for each
// named tensor: graph inputs are taken from the batch, other tensors are fetched as extra
// outputs. Activations are reduced batch by batch and never stored. ORT must be
// initialized (ort.Init).
func Collect(modelPath string, tensors []string, src Source, opts Options) (*Stats, error) {
	if len(tensors) == 0 {
		return nil, errors.New("calib: Collect needs at least one tensor")
	}
	if src == nil || src.Len() == 0 {
		return nil, errors.New("calib: no calibration batches")
	}
	m, err := ir.Load(modelPath)
	if err != nil {
		return nil, fmt.Errorf("calib: %w", err)
	}
	g := m.Graph
	names := dedupe(tensors)
	isInput, isOutput := map[string]bool{}, map[string]bool{}
	for _, v := range modelInputs(m) {
		isInput[v.Name] = true
	}
	for _, v := range g.Outputs {
		isOutput[v.Name] = true
	}
	var extra, unknown, consts []string
	for _, n := range names {
		v := g.Value(n)
		switch {
		case v == nil:
			unknown = append(unknown, n)
		case v.IsConst():
			consts = append(consts, n)
		case isInput[n] || isOutput[n]:
		default:
			if t := v.Type; t != nil && t.Kind == ir.TensorType && t.DType != ir.Undefined && !t.DType.IsFloat() {
				return nil, fmt.Errorf("calib: tensor %q is %v; only float tensors are calibrated", n, t.DType)
			}
			extra = append(extra, n)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("calib: %s has no tensors named %s", modelPath, strings.Join(unknown, ", "))
	}
	if len(consts) > 0 {
		return nil, fmt.Errorf("calib: %s are constants (weights), not activations", strings.Join(consts, ", "))
	}
	groups, err := groupTensors(m, names, extra, src, opts.MaxBytes)
	if err != nil {
		return nil, err
	}
	collections.Add(1)
	stats := NewStats(names, opts.Bins)
	stats.Model = strings.TrimSuffix(filepath.Base(modelPath), ".onnx")
	bar := newProgress(opts.Progress, len(groups)*src.Len())
	for gi, grp := range groups {
		if err := collectGroup(modelPath, grp, src, opts, stats, isInput, bar, gi); err != nil {
			return nil, err
		}
	}
	stats.Batches = src.Len()
	stats.Passes = len(groups)
	bar.done()
	return stats, nil
}

// group is the tensors one ORT pass collects: names (inputs and outputs included) and,
// of them, the extra outputs the session must return.
type group struct{ names, extra []string }

// collectGroup runs every batch through a session returning grp's tensors and adds them
// to stats. Each histogram sees the same batches in the same order as in one pass, so
// grouping changes no statistic.
func collectGroup(modelPath string, grp group, src Source, opts Options, stats *Stats, isInput map[string]bool, bar *progress, gi int) error {
	sess, err := ort.NewSession(modelPath, ort.Options{
		OptLevel:       ort.OptDisabled,
		IntraOpThreads: opts.IntraOpThreads,
		ExtraOutputs:   grp.extra,
	})
	if err != nil {
		return fmt.Errorf("calib: %w", err)
	}
	defer sess.Close()
	passes.Add(1)
	for i := 0; i < src.Len(); i++ {
		feed, err := src.Batch(i)
		if err != nil {
			return fmt.Errorf("calib: batch %d: %w", i, err)
		}
		outs, err := sess.Run(feed)
		if err != nil {
			return fmt.Errorf("calib: batch %d: %w", i, err)
		}
		for _, n := range grp.names {
			a := outs[n]
			if isInput[n] {
				a = feed[n]
			}
			if a == nil {
				return fmt.Errorf("calib: batch %d: ORT returned no value for %q", i, n)
			}
			if err := stats.Add(n, a); err != nil {
				return err
			}
		}
		bar.update(gi*src.Len() + i + 1)
	}
	return nil
}

func dedupe(names []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// progress draws "calib [#####.....] 5/10 batches" on one line, rewritten with \r.
type progress struct {
	w     io.Writer
	total int
	last  time.Time
	shown bool
}

func newProgress(w io.Writer, total int) *progress {
	if w == nil {
		if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			w = os.Stderr
		}
	}
	return &progress{w: w, total: total}
}

const barWidth = 30

func (p *progress) update(done int) {
	if p.w == nil {
		return
	}
	// At most ten redraws a second, but always the last one.
	if now := time.Now(); done < p.total && now.Sub(p.last) < 100*time.Millisecond {
		return
	} else {
		p.last = now
	}
	fill := barWidth * done / p.total
	fmt.Fprintf(p.w, "\rcalib [%s%s] %d/%d batches", strings.Repeat("#", fill), strings.Repeat(".", barWidth-fill), done, p.total)
	p.shown = true
}

func (p *progress) done() {
	if p.w != nil && p.shown {
		fmt.Fprintln(p.w)
	}
}
