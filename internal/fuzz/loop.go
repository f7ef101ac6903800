package fuzz

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a fuzzing run.
type Options struct {
	Workers  int
	Seed     int64         // first seed; worker k takes seeds Seed, Seed+1, ... as they come
	Count    int64         // stop after this many cases (0: no limit)
	Duration time.Duration // stop starting cases after this long (0: no limit)
	// Dir receives each failure's shrunk case ("" stores nothing); at most PerSignature
	// cases per failure kind, pipeline and class are shrunk and stored.
	Dir          string
	PerSignature int
	ShrinkTime   time.Duration
	Log          io.Writer // progress and failures (nil: quiet)
	// Classes restricts the run to these block classes ("dag" for random DAGs), seed k
	// taking the (k mod len)-th; empty: Gen's mix of DAGs and every class.
	Classes []string
}

// Summary counts what a run saw.
type Summary struct {
	Graphs   int64
	ByKind   map[string]int     // failures by kind (one per case and kind)
	Matched  map[string]int     // block classes: recognised (keep-math) / near-miss fused
	Refused  map[string]int     // block classes: not recognised
	Failures map[string][]int64 // signature → seeds
	Stored   []string
}

// Line is the closing line: graphs=N mismatches=M panics=P.
func (s *Summary) Line() string {
	return fmt.Sprintf("graphs=%d mismatches=%d panics=%d", s.Graphs, s.ByKind[Mismatch], s.ByKind[Panic])
}

// Write prints the closing line, the other failure kinds, and matched / refused per class.
func (s *Summary) Write(w io.Writer) {
	fmt.Fprintln(w, s.Line())
	var other []string
	for _, k := range []string{VerifyFail, NotIdem, RoundTrip, NearFused, PassError, Unstable, Invalid} {
		other = append(other, fmt.Sprintf("%s=%d", k, s.ByKind[k]))
	}
	fmt.Fprintln(w, strings.Join(other, " "))
	for _, c := range append([]string{"dag"}, Classes...) {
		if s.Matched[c]+s.Refused[c] == 0 {
			continue
		}
		what := "matched"
		if IsNearMiss(c) {
			what = "fused"
		}
		fmt.Fprintf(w, "  %-24s %s %d / refused %d\n", c, what, s.Matched[c], s.Refused[c])
	}
	sigs := make([]string, 0, len(s.Failures))
	for k := range s.Failures {
		sigs = append(sigs, k)
	}
	sort.Strings(sigs)
	for _, k := range sigs {
		seeds := s.Failures[k]
		if len(seeds) > 5 {
			seeds = seeds[:5]
		}
		fmt.Fprintf(w, "  failure %s: %d cases, seeds %v\n", k, len(s.Failures[k]), seeds)
	}
	for _, p := range s.Stored {
		fmt.Fprintf(w, "  stored %s\n", p)
	}
}

// Run generates and checks cases on opts.Workers goroutines.
func Run(opts Options) *Summary {
	s := &Summary{ByKind: map[string]int{}, Matched: map[string]int{}, Refused: map[string]int{}, Failures: map[string][]int64{}}
	var mu sync.Mutex
	var next atomic.Int64
	next.Store(opts.Seed)
	start := time.Now()
	shrunk := map[string]int{}
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			mu.Lock()
			fmt.Fprintf(opts.Log, format, args...)
			mu.Unlock()
		}
	}
	var wg sync.WaitGroup
	for w := 0; w < max(1, opts.Workers); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if opts.Duration > 0 && time.Since(start) > opts.Duration {
					return
				}
				seed := next.Add(1) - 1
				if opts.Count > 0 && seed-opts.Seed >= opts.Count {
					return
				}
				c, r := genCheck(seed, opts.Classes)
				mu.Lock()
				s.Graphs++
				if r.Matched {
					s.Matched[c.Class]++
				} else {
					s.Refused[c.Class]++
				}
				seen := map[string]bool{}
				var toShrink []Failure
				for _, f := range r.Failures {
					if !seen[f.Kind] {
						s.ByKind[f.Kind]++
						seen[f.Kind] = true
					}
					sig := f.Kind + " in " + f.Pipeline + " (" + c.Class + ")"
					s.Failures[sig] = append(s.Failures[sig], seed)
					if opts.Dir != "" && f.Kind != Invalid && f.Kind != Unstable && shrunk[sig] < opts.PerSignature {
						shrunk[sig]++
						toShrink = append(toShrink, f)
					}
				}
				mu.Unlock()
				for _, f := range r.Failures {
					logf("seed %d (%s): %s\n", seed, c.Class, firstLine(f.String()))
				}
				for _, f := range toShrink {
					small := Shrink(c, seed, f, opts.ShrinkTime)
					p, err := Store(opts.Dir, small, seed, f)
					if err != nil {
						logf("store: %v\n", err)
						continue
					}
					logf("seed %d shrunk from %d to %d nodes: %s\n", seed, c.Model.Graph.NumNodes(), small.Model.Graph.NumNodes(), p)
					mu.Lock()
					s.Stored = append(s.Stored, p)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return s
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// genCheck generates and checks one case; a generator panic is a failure of the case
// (kind Invalid), not the end of the run.
func genCheck(seed int64, classes []string) (c *Case, r *Result) {
	defer func() {
		if x := recover(); x != nil {
			c = &Case{Class: "dag"}
			r = &Result{Failures: []Failure{{Kind: Invalid, Detail: fmt.Sprintf("generator panic: %v", x)}}}
		}
	}()
	c = genClass(seed, classes)
	return c, Check(c, seed)
}

// genClass is Gen restricted to classes (none: Gen itself), deterministic by seed.
func genClass(seed int64, classes []string) *Case {
	if len(classes) == 0 {
		return Gen(seed)
	}
	switch class := classes[int(uint64(seed)%uint64(len(classes)))]; class {
	case "dag":
		return GenDAG(seed)
	default:
		return GenBlock(seed, class)
	}
}
