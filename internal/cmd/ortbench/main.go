// Command ortbench times ONNX Runtime (CPU) on models with deterministic transformer
// inputs, for the benchmark scripts: after a warm-up it times -runs runs of each model in
// turn and prints, one model per line, the minimum and the median latency in seconds.
//
//	ortbench -batch 8 -seq 128 -threads 1 -opt extended a.onnx b.onnx
package main

import (
	"flag"
	"fmt"
	"os"
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
	var ss []*session
	for _, model := range flag.Args() {
		s, err := open(model, level, *threads, *batch, *seq)
		if err != nil {
			fail("%s: %v", model, err)
		}
		defer s.Close()
		ss = append(ss, s)
	}
	for r := 0; r < *runs; r++ {
		for _, s := range ss {
			if err := s.time(); err != nil {
				fail("%s: %v", s.model, err)
			}
		}
	}
	for _, s := range ss {
		sort.Slice(s.times, func(i, j int) bool { return s.times[i] < s.times[j] })
		fmt.Printf("%s\t%.4f\t%.4f\n", s.model, s.times[0].Seconds(), s.times[len(s.times)/2].Seconds())
	}
}

type session struct {
	*ort.Session
	model  string
	inputs map[string]*ndarray.Array
	times  []time.Duration
}

func open(model string, level ort.OptLevel, threads, batch, seq int) (*session, error) {
	s, err := ort.NewSession(model, ort.Options{OptLevel: level, IntraOpThreads: threads})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, in := range s.Inputs() {
		names = append(names, in.Name)
	}
	inputs := synth.Inputs(names, batch, seq, 8, 1000)
	for _, in := range s.Inputs() {
		if in.DType == ndarray.Int32 {
			inputs[in.Name] = toInt32(inputs[in.Name])
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

func toInt32(a *ndarray.Array) *ndarray.Array {
	v := a.Int64s()
	w := make([]int32, len(v))
	for i, x := range v {
		w[i] = int32(x)
	}
	return ndarray.FromInt32(a.Shape, w)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ortbench: "+format+"\n", args...)
	os.Exit(1)
}
