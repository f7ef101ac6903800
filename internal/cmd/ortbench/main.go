// Command ortbench times ONNX Runtime (CPU) on models with deterministic transformer
// inputs, for the benchmark scripts: after a warm-up it times -runs runs of each model in
// turn and prints, one model per line, the minimum and the median latency in seconds and
// the paired ratio: the median over rounds of the first model's time over this model's in
// the same round. Neighbouring runs see the same machine, so the paired ratio is steadier
// than a ratio of minima or medians when the machine's speed drifts.
//
//	ortbench -batch 8 -seq 128 -threads 1 -opt extended a.onnx b.onnx
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/qcc-dev/qcc/internal/synth"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
)

func main() {
	batch := flag.Int("batch", 8, "batch size")
	seq := flag.Int("seq", 128, "sequence length")
	threads := flag.Int("threads", 1, "intra-op threads")
	runs := flag.Int("runs", 5, "timed runs")
	opt := flag.String("opt", "extended", "ORT optimization level: disabled, basic, extended, all")
	lib := flag.String("ort-lib", "", "path of libonnxruntime.so (default: QCC_ORT_LIB or the project cache)")
	profile := flag.String("profile", "", "write ORT's per-node trace of each model into this folder and print time per op type")
	optimized := flag.String("optimized", "", "save each model as ORT's optimizer left it into this folder")
	saveOnly := flag.Bool("save-only", false, "with -optimized: only load each model (ORT optimizes and saves it) and exit, running nothing")
	minCos := flag.Float64("check-cos", 0, "before timing, require every output of each model to have at least this cosine similarity to the first model's (0: no check); a wrong fast model never reports a speed-up")
	flag.Parse()
	levels := map[string]ort.OptLevel{"disabled": ort.OptDisabled, "basic": ort.OptBasic, "extended": ort.OptExtended, "all": ort.OptAll}
	level, ok := levels[*opt]
	if !ok {
		fail("-opt=%s: want disabled, basic, extended or all", *opt)
	}
	path, err := ort.LibraryPath(*lib)
	if err != nil {
		fail("%v", err)
	}
	if err := ort.Init(path); err != nil {
		fail("%v", err)
	}
	// All sessions are created first and timed in turn, run by run, so that whatever
	// else the machine does affects every model alike; the minimum is the least disturbed.
	for _, dir := range []string{*profile, *optimized} {
		if dir != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				fail("%v", err)
			}
		}
	}
	if *saveOnly {
		if *optimized == "" {
			fail("-save-only needs -optimized")
		}
		for _, model := range flag.Args() {
			s, err := ort.NewSession(model, ort.Options{OptLevel: level, IntraOpThreads: *threads,
				OptimizedModelPath: filepath.Join(*optimized, filepath.Base(model))})
			if err != nil {
				fail("%s: %v", model, err)
			}
			s.Close()
		}
		return
	}
	var ss []*session
	for _, model := range flag.Args() {
		opts := ort.Options{OptLevel: level, IntraOpThreads: *threads}
		if *profile != "" {
			opts.ProfilePrefix = filepath.Join(*profile, filepath.Base(model))
		}
		if *optimized != "" {
			opts.OptimizedModelPath = filepath.Join(*optimized, filepath.Base(model))
		}
		s, err := open(model, opts, *batch, *seq)
		if err != nil {
			fail("%s: %v", model, err)
		}
		ss = append(ss, s)
	}
	if *minCos > 0 {
		for _, s := range ss[1:] {
			c, err := check(ss[0], s)
			if err != nil {
				fail("%s: %v", s.model, err)
			}
			if !(c >= *minCos) {
				fail("%s: output cosine %.5f to %s's, below -check-cos=%g: not timed", s.model, c, ss[0].model, *minCos)
			}
			fmt.Fprintf(os.Stderr, "ortbench: %s: outputs within cosine %.5f of %s's\n", filepath.Base(s.model), c, filepath.Base(ss[0].model))
		}
	}
	for r := 0; r < *runs; r++ {
		for _, s := range ss {
			if err := s.time(); err != nil {
				fail("%s: %v", s.model, err)
			}
		}
	}
	for _, s := range ss {
		s.Close() // writes the profile
		paired := pairedRatio(ss[0].times, s.times)
		sorted := append([]time.Duration{}, s.times...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
		fmt.Printf("%s\t%.6f\t%.6f\t%.4f\n", s.model, sorted[0].Seconds(), sorted[len(sorted)/2].Seconds(), paired)
	}
	if *profile != "" {
		for _, s := range ss {
			if err := printProfile(os.Stderr, filepath.Join(*profile, filepath.Base(s.model)), *runs+1); err != nil {
				fail("%s: %v", s.model, err)
			}
		}
	}
}

type session struct {
	*ort.Session
	model  string
	inputs map[string]*ndarray.Array
	times  []time.Duration
}

func open(model string, opts ort.Options, batch, seq int) (*session, error) {
	s, err := ort.NewSession(model, opts)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, in := range s.Inputs() {
		names = append(names, in.Name)
	}
	inputs := synth.Inputs(names, batch, seq, 8, 1000)
	for _, in := range s.Inputs() {
		switch in.DType {
		case ndarray.Int32:
			inputs[in.Name] = toInt32(inputs[in.Name])
		case ndarray.Float32: // micro-benchmarks of single operators
			inputs[in.Name] = floats(in.Dims, batch, seq)
		}
	}
	if _, err := s.Run(inputs); err != nil { // warm-up
		s.Close()
		return nil, err
	}
	return &session{Session: s, model: model, inputs: inputs}, nil
}

func (s *session) time() error {
	start := time.Now()
	if _, err := s.Run(s.inputs); err != nil {
		return err
	}
	s.times = append(s.times, time.Since(start))
	return nil
}

// check runs both sessions on base's inputs and returns the smallest cosine similarity
// between their outputs of the same name.
func check(base, s *session) (float64, error) {
	want, err := base.Run(base.inputs)
	if err != nil {
		return 0, err
	}
	got, err := s.Run(s.inputs)
	if err != nil {
		return 0, err
	}
	worst := math.Inf(1)
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			return 0, fmt.Errorf("no output %s", name)
		}
		c, err := ndarray.CosineSimilarity(w, g)
		if err != nil {
			return 0, fmt.Errorf("output %s: %v", name, err)
		}
		worst = math.Min(worst, c)
	}
	return worst, nil
}

// floats is a deterministic float input of the given dims, the first two
// symbolic ones taken as batch and sequence.
func floats(dims []int64, batch, seq int) *ndarray.Array {
	shape := append([]int64{}, dims...)
	n, sym := 1, []int{batch, seq}
	for i, d := range shape {
		if d < 0 {
			if len(sym) == 0 {
				fail("float input with more than two symbolic dims")
			}
			shape[i], sym = int64(sym[0]), sym[1:]
		}
		n *= int(shape[i])
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32((i*7919)%2001-1000) / 1000
	}
	return ndarray.FromFloat32(shape, v)
}

func toInt32(a *ndarray.Array) *ndarray.Array {
	v := a.Int64s()
	w := make([]int32, len(v))
	for i, x := range v {
		w[i] = int32(x)
	}
	return ndarray.FromInt32(a.Shape, w)
}

// pairedRatio is the median over rounds of base[i]/t[i].
func pairedRatio(base, t []time.Duration) float64 {
	r := make([]float64, len(t))
	for i := range t {
		r[i] = base[i].Seconds() / t[i].Seconds()
	}
	sort.Float64s(r)
	return r[len(r)/2]
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ortbench: "+format+"\n", args...)
	os.Exit(1)
}
