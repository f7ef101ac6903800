// Command ortbench times ONNX Runtime (CPU) on a model with deterministic transformer
// inputs, for the benchmark scripts: it prints the median latency of -runs runs after a
// warm-up, one model per line.
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
	for _, model := range flag.Args() {
		med, err := bench(model, level, *threads, *batch, *seq, *runs)
		if err != nil {
			fail("%s: %v", model, err)
		}
		fmt.Printf("%s\t%.4f\n", model, med.Seconds())
	}
}

func bench(model string, level ort.OptLevel, threads, batch, seq, runs int) (time.Duration, error) {
	s, err := ort.NewSession(model, ort.Options{OptLevel: level, IntraOpThreads: threads})
	if err != nil {
		return 0, err
	}
	defer s.Close()
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
		return 0, err
	}
	var times []time.Duration
	for i := 0; i < runs; i++ {
		start := time.Now()
		if _, err := s.Run(inputs); err != nil {
			return 0, err
		}
		times = append(times, time.Since(start))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	return times[len(times)/2], nil
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
