// Command fuzz is qcc's differential fuzzer: it generates models (random DAGs and
// mutated transformer blocks, deterministic by seed), runs every pipeline on them and
// checks the results with ONNX Runtime, shrinks each failure to a minimal model stored
// in -out (replayed by internal/fuzz's tests), and ends with
//
//	graphs=N mismatches=M panics=P
//
// then the other failure kinds and, per mutation class, how often the block was
// recognised (matched) or not (refused). -classes restricts the run to some block classes
// (comma-separated, "dag" for the random DAGs), as after adding a class.
//
//	go run ./internal/cmd/fuzz -duration 10m -out testdata/fuzz
//	go run ./internal/cmd/fuzz -duration 5m -classes seq-first,nm-seq-first-softmax-batch
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/qcc-dev/qcc/internal/fuzz"
	"github.com/qcc-dev/qcc/ort"
)

func main() {
	duration := flag.Duration("duration", time.Minute, "stop starting cases after this long")
	count := flag.Int64("count", 0, "stop after this many cases (0: no limit)")
	seed := flag.Int64("seed", 0, "first seed (0: from the clock)")
	workers := flag.Int("workers", runtime.NumCPU(), "parallel workers")
	out := flag.String("out", "testdata/fuzz", "folder for shrunk failures (empty: store nothing)")
	per := flag.Int("per-signature", 2, "failures shrunk and stored per kind, pipeline and class")
	shrinkTime := flag.Duration("shrink-time", 2*time.Minute, "time limit of one shrink")
	quiet := flag.Bool("q", false, "print only the summary")
	lib := flag.String("ort-lib", "", "path of libonnxruntime.so (default: QCC_ORT_LIB or the project cache)")
	classes := flag.String("classes", "", "comma-separated block classes to generate, \"dag\" for random DAGs (default: all, half DAGs)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	var only []string
	if *classes != "" {
		only = strings.Split(*classes, ",")
		for _, c := range only {
			if c != "dag" && !slices.Contains(fuzz.Classes, c) {
				fmt.Fprintf(os.Stderr, "fuzz: unknown class %q (classes: dag %s)\n", c, strings.Join(fuzz.Classes, " "))
				os.Exit(2)
			}
		}
	}
	path, err := ort.LibraryPath(*lib)
	if err == nil {
		err = ort.Init(path)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fuzz:", err)
		os.Exit(1)
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano() & (1<<40 - 1)
	}
	opts := fuzz.Options{Workers: *workers, Seed: *seed, Count: *count, Duration: *duration,
		Dir: *out, PerSignature: *per, ShrinkTime: *shrinkTime, Classes: only}
	if !*quiet {
		opts.Log = os.Stderr
	}
	fmt.Fprintf(os.Stderr, "fuzz: seeds from %d, %d workers, %s\n", *seed, *workers, *duration)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "fuzz:", err)
			os.Exit(1)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	// The cases are small and short-lived: collecting less often trades a little memory
	// for CPU that the checks want (unless GOGC says otherwise).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	s := fuzz.Run(opts)
	s.Write(os.Stdout)
}
