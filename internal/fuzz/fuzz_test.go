package fuzz

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/qcc-dev/qcc/internal/modroot"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// TestFixedSeeds is a short fuzzing run with fixed seeds: DAGs and two blocks of every
// class, each through every pipeline. No failure is allowed, and the plain block, the
// rotary forms and the readings the attention recogniser gained (sliding window,
// sequence-first, per-head bias, scores read outside) must be recognised.
func TestFixedSeeds(t *testing.T) {
	orttest.RequireLib(t)
	type job struct {
		c    *Case
		seed int64
	}
	var jobs []job
	for s := int64(0); s < 40; s++ {
		jobs = append(jobs, job{GenDAG(s), s})
	}
	for i, class := range Classes {
		for k := int64(0); k < 2; k++ {
			s := int64(1000 + 2*i + int(k))
			jobs = append(jobs, job{GenBlock(s, class), s})
		}
	}
	results := make([]*Result, len(jobs))
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				results[i] = Check(jobs[i].c, jobs[i].seed)
			}
		}()
	}
	for i := range jobs {
		work <- i
	}
	close(work)
	wg.Wait()
	matched := map[string]int{}
	for i, r := range results {
		for _, f := range r.Failures {
			if f.Kind == Unstable {
				t.Logf("seed %d (%s): %s", jobs[i].seed, jobs[i].c.Class, f)
				continue
			}
			t.Errorf("seed %d (%s): %s", jobs[i].seed, jobs[i].c.Class, f)
		}
		if r.Matched {
			matched[jobs[i].c.Class]++
		}
	}
	// The plain block, and each rotary form, must be recognised (else the near-miss
	// verdicts would be vacuous); so must the newer readings, in every draw: recognition
	// does not depend on the target, so a sliding window with sinks at a static length
	// (which fuse leaves: GroupQueryAttention needs the causal term, read only over a
	// symbolic length) or scores read as no operator outputs them still count.
	for _, class := range []string{"base", "rotary-half", "rotary-interleaved", "rotary-partial", "rotary-gathered-pairs",
		"sliding-window", "seq-first", "head-bias", "scores-read"} {
		if matched[class] != 2 {
			t.Errorf("class %s was recognised %d times of 2", class, matched[class])
		}
	}
	t.Logf("%d cases; matched per class: %v", len(jobs), matched)
}

// TestReplay replays every stored failure: each must now pass every check (outputs that
// float32 arithmetic does not determine to the tolerance are logged, not failed).
func TestReplay(t *testing.T) {
	root, err := modroot.Find()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "testdata", "fuzz", "*.txt"))
	if len(files) == 0 {
		t.Skip("no stored cases in testdata/fuzz")
	}
	orttest.RequireLib(t)
	sort.Strings(files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			c, seed, err := Decode(string(src))
			if err != nil {
				t.Fatal(err)
			}
			for _, fl := range Check(c, seed).Failures {
				if fl.Kind == Unstable { // not a property of qcc: see Unstable
					t.Log(fl)
					continue
				}
				t.Error(fl)
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	for _, s := range []int64{3, 4, 17, 18} {
		a := text.Sprint(Gen(s).Model, text.Options{MaxElems: -1})
		b := text.Sprint(Gen(s).Model, text.Options{MaxElems: -1})
		if a != b {
			t.Errorf("seed %d: two generations differ: %s", s, firstDiff(a, b))
		}
	}
}

// TestOracleCatches checks that the oracle sees what it is for: a recognised block whose
// witness is marked forbidden is reported as a fused near-miss, and Shrink reduces it to
// a smaller model that still fails the same way, which Encode/Decode keep.
func TestOracleCatches(t *testing.T) {
	orttest.RequireLib(t)
	c := GenBlock(7, "base")
	for i := range c.Witnesses {
		c.Witnesses[i].Forbid = c.Witnesses[i].Kinds[0] == attnKinds[0]
	}
	c.NearMiss = true
	r := Check(c, 7)
	if !r.Has(NearFused, "fold,blocks") {
		t.Fatalf("a recognised attention marked forbidden is not reported: %v", r.Failures)
	}
	f := r.Failures[0]
	small := Shrink(c, 7, f, 20*time.Second)
	if small.Model.Graph.NumNodes() >= c.Model.Graph.NumNodes() {
		t.Errorf("shrink kept %d of %d nodes", small.Model.Graph.NumNodes(), c.Model.Graph.NumNodes())
	}
	back, seed, err := Decode(Encode(small, 7, f))
	if err != nil {
		t.Fatal(err)
	}
	if seed != 7 || back.Class != "base" || len(back.Witnesses) != len(c.Witnesses) {
		t.Errorf("decoded seed %d class %s %d witnesses", seed, back.Class, len(back.Witnesses))
	}
	if !Check(back, seed).Has(NearFused, "fold,blocks") {
		t.Errorf("the shrunk case no longer fails:\n%s", Encode(small, 7, f))
	}
	t.Logf("shrunk from %d to %d nodes", c.Model.Graph.NumNodes(), small.Model.Graph.NumNodes())
}

func TestCompare(t *testing.T) {
	nan := float32(0)
	nan /= nan
	a := map[string]*ndarray.Array{"y": ndarray.FromFloat32([]int64{3}, []float32{1, nan, 100})}
	for _, tc := range []struct {
		got  []float32
		same bool
	}{
		{[]float32{1, nan, 100}, true},
		{[]float32{1.00005, nan, 100.005}, true},
		{[]float32{1.01, nan, 100}, false},
		{[]float32{1, 0, 100}, false},
		{[]float32{1, nan, 101}, false},
	} {
		g := map[string]*ndarray.Array{"y": ndarray.FromFloat32([]int64{3}, tc.got)}
		if d := compare(a, g); (d == "") != tc.same {
			t.Errorf("compare %v: %q, want same=%v", tc.got, d, tc.same)
		}
	}
}

// TestSnapshot: the model that runPipelineSnapshot takes before the last pass is the one
// the pipeline's prefix computes alone, and the inserted analysis changes nothing of the
// pipeline's result.
func TestSnapshot(t *testing.T) {
	spec := "fold,qdq<ranges=const:4>,fuse"
	for _, c := range []*Case{GenDAG(2), GenDAG(4), GenBlock(1001, "base"), GenBlock(1003, "qdq"), GenBlock(1005, "ln-op")} {
		orig, err := ir.Marshal(c.Model)
		if err != nil {
			t.Fatal(err)
		}
		m, snap, f := runPipelineSnapshot(orig, spec)
		if f != nil {
			t.Fatalf("%s: %v", c.Class, f)
		}
		prefix, f := runPipeline(orig, spec[:lastComma(spec)])
		if f != nil {
			t.Fatalf("%s: %v", c.Class, f)
		}
		whole, f := runPipeline(orig, spec)
		if f != nil {
			t.Fatalf("%s: %v", c.Class, f)
		}
		for _, p := range []struct {
			what      string
			got, want []byte
		}{
			{"snapshot", snap, marshal(t, prefix)},
			{"result", marshal(t, m), marshal(t, whole)},
		} {
			if !bytes.Equal(p.got, p.want) {
				t.Errorf("%s: the %s differs from the pipeline's own", c.Class, p.what)
			}
		}
		if bytes.Equal(snap, orig) {
			t.Errorf("%s: the snapshot is the original model", c.Class)
		}
	}
}

func marshal(t *testing.T, m *ir.Model) []byte {
	t.Helper()
	b, err := ir.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
