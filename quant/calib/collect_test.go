package calib

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/shape"
)

var allMethods = []string{"max", "percentile:99.99", "entropy", "mse"}

// TestCollectKnown calibrates t = 2x on known x: 40 rows of 1000 N(0,1) samples with
// one outlier x = 25 in the last batch (so the histogram must grow), and checks each
// method against values computed from the raw samples.
func TestCollectKnown(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	m, path := saveText(t, dir, "tiny.onnx", tinySrc)
	x := gaussian(11, 40*1000-1, 1, 25)
	data := map[string]*ndarray.Array{
		"x":              ndarray.FromFloat32([]int64{40, 1000}, x),
		"ids":            ndarray.FromInt64([]int64{40, 6}, make([]int64, 240)),
		"attention_mask": seqInt64([]int64{40, 6}, 0),
	}
	p := filepath.Join(dir, "x.npz")
	if err := npz.Write(p, data); err != nil {
		t.Fatal(err)
	}
	src, err := LoadData(p, m, 8)
	if err != nil {
		t.Fatal(err)
	}
	var bar bytes.Buffer
	stats, err := Collect(path, []string{"t", "x", "y", "e", "t"}, src, Options{Progress: &bar})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Batches != 5 || stats.Model != "tiny" || len(stats.Tensors) != 4 {
		t.Fatalf("stats: %d batches, model %q, tensors %v", stats.Batches, stats.Model, stats.Names())
	}
	if out := bar.String(); !strings.HasSuffix(out, "5/5 batches\n") || strings.Count(out, "\n") != 1 {
		t.Errorf("progress output %q", out)
	}

	tv := make([]float32, len(x))
	yv := make([]float32, len(x))
	var xmin, xmax float32
	for i, v := range x {
		tv[i] = 2 * v
		yv[i] = max(0, 2*v)
		xmin, xmax = min(xmin, v), max(xmax, v)
	}
	ht := stats.Tensors["t"]
	if ht.AbsMax != 50 || ht.Max != 50 || ht.Min != 2*float64(xmin) || ht.Count != 40000 {
		t.Errorf("t: absmax %v max %v min %v count %d; want 50, 50, %v, 40000", ht.AbsMax, ht.Max, ht.Min, ht.Count, 2*xmin)
	}
	if hx := stats.Tensors["x"]; hx.AbsMax != 25 || hx.Min != float64(xmin) {
		t.Errorf("x (a graph input): absmax %v min %v", hx.AbsMax, hx.Min)
	}
	if hy := stats.Tensors["y"]; hy.AbsMax != 50 || hy.Min != 0 {
		t.Errorf("y (a graph output): absmax %v min %v", hy.AbsMax, hy.Min)
	}

	ranges := map[string]map[string]float32{}
	for _, ms := range allMethods {
		meth, err := ParseMethod(ms)
		if err != nil {
			t.Fatal(err)
		}
		r, err := stats.Ranges(meth)
		var zr *ZeroRangeError
		if !errors.As(err, &zr) || len(zr.Tensors) != 1 || zr.Tensors[0] != "e" {
			t.Errorf("%s: want a ZeroRangeError for e, got %v", ms, err)
		}
		if _, ok := r["e"]; ok || len(r) != 3 {
			t.Errorf("%s: ranges %v", ms, r)
		}
		ranges[ms] = r
	}
	tol := 1.5 * ht.Width
	if got := ranges["max"]["t"]; got != 50 {
		t.Errorf("max(t) = %v, want 50", got)
	}
	if got, want := float64(ranges["percentile:99.99"]["t"]), exactPercentile(tv, 99.99); math.Abs(got-want) > tol {
		t.Errorf("percentile:99.99(t) = %v, exact %v (tolerance %v)", got, want, tol)
	}
	if got, want := float64(ranges["percentile:99.99"]["y"]), exactPercentile(yv, 99.99); math.Abs(got-want) > tol {
		t.Errorf("percentile:99.99(y) = %v, exact %v (tolerance %v)", got, want, tol)
	}
	// mse: near-optimal on the raw samples.
	best := math.Inf(1)
	for T := 1.0; T <= 50; T += 0.05 {
		best = min(best, int8MSE(tv, T))
	}
	if got := float64(ranges["mse"]["t"]); int8MSE(tv, got) > 1.03*best {
		t.Errorf("mse(t) = %v has MSE %.4g, the best is %.4g", got, int8MSE(tv, got), best)
	}
	// entropy: clips the outlier to a few sigma (sigma of t is 2).
	if got := ranges["entropy"]["t"]; got < 5 || got > 16 {
		t.Errorf("entropy(t) = %v, want a few sigma (2 each), far below the outlier 50", got)
	}
	for _, ms := range allMethods {
		t.Logf("%-17s t %8.4f  y %8.4f  x %8.4f", ms, ranges[ms]["t"], ranges[ms]["y"], ranges[ms]["x"])
	}

	// Unknown names, constants and int tensors are refused up front.
	for _, c := range []struct{ name, want string }{
		{"nope", "no tensors named nope"},
		{"emb", "constants"},
		{"ids", "only float tensors"},
	} {
		if _, err := Collect(path, []string{c.name}, src, Options{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Collect(%q): %v, want %q", c.name, err, c.want)
		}
	}
}

// TestCollectBoundedState: 50 batches hold exactly the state of 1.
func TestCollectBoundedState(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	m, path := saveText(t, dir, "tiny.onnx", tinySrc)
	names := []string{"t", "y", "e"}
	size := map[int]int{}
	for _, n := range []int{1, 50} {
		src, err := NewRandomSource(m, 4, n, 1)
		if err != nil {
			t.Fatal(err)
		}
		stats, err := Collect(path, names, src, Options{Bins: 512})
		if err != nil {
			t.Fatal(err)
		}
		if stats.Batches != n || stats.Tensors["t"].Count != int64(n*4*1000) {
			t.Fatalf("%d batches: saw %d batches, %d samples", n, stats.Batches, stats.Tensors["t"].Count)
		}
		size[n] = stats.StateBytes()
		for _, name := range names {
			if l := len(stats.Tensors[name].Bins); l != 512 {
				t.Errorf("%d batches: %s has %d bins", n, name, l)
			}
		}
	}
	if size[1] != size[50] || size[1] != 3*NewHistogram(512).StateBytes() {
		t.Errorf("state: %d bytes after 1 batch, %d after 50", size[1], size[50])
	}
}

// TestRandomBERT feeds random inputs to the corpus BERT: ids must stay inside the
// 512-row word table and token types inside the 2-row table, or ORT's Gather fails.
func TestRandomBERT(t *testing.T) {
	orttest.RequireLib(t)
	path := filepath.Join(corpus.Dir(t), "bert.opset13.onnx")
	m, err := ir.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int64{"input_ids": 512, "token_type_ids": 2} {
		if rows, ok := embeddingRows(m.Graph.Value(name)); !ok || rows != want {
			t.Errorf("embedding rows of %s = %d, %v; want %d", name, rows, ok, want)
		}
	}
	src, err := LoadData("random:4", m, 2)
	if err != nil {
		t.Fatal(err)
	}
	b := mustBatch(t, src, 0)
	for _, id := range b["input_ids"].Int64s() {
		if id < 0 || id >= 512 {
			t.Fatalf("input id %d outside the vocabulary", id)
		}
	}
	for _, tt := range b["token_type_ids"].Int64s() {
		if tt != 0 && tt != 1 {
			t.Fatalf("token type %d", tt)
		}
	}
	if !ndarray.SameShape(b["input_ids"].Shape, []int64{2, DefaultSeq}) {
		t.Errorf("input_ids shape %v", b["input_ids"].Shape)
	}
	stats, err := Collect(path, []string{"last_hidden_state", "pooler_output"}, src, Options{})
	if err != nil {
		t.Fatalf("ORT on random BERT inputs: %v", err)
	}
	r, err := stats.Ranges(Method{Kind: Max})
	if err != nil || r["last_hidden_state"] <= 0 {
		t.Errorf("ranges %v, %v", r, err)
	}
}

// TestTrainedBERT calibrates the trained classifier on calib.npz at every MatMul
// activation input and prints the ranges per method.
func TestTrainedBERT(t *testing.T) {
	orttest.RequireLib(t)
	dir := filepath.Join(corpus.Dir(t), "trained")
	path := filepath.Join(dir, "bert-cls-trained.opset13.onnx")
	m, err := ir.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var names []string
	for _, n := range m.Graph.Nodes() {
		if n.OpType != "MatMul" {
			continue
		}
		for _, v := range n.Inputs() {
			if v != nil && !v.IsConst() && !seen[v.Name] {
				seen[v.Name] = true
				names = append(names, v.Name)
			}
		}
	}
	sort.Strings(names)
	src, err := LoadData(filepath.Join(dir, "calib.npz"), m, 16)
	if err != nil {
		t.Fatal(err)
	}
	if src.Len() != 8 {
		t.Errorf("calib.npz: %d batches of 16, want 8", src.Len())
	}
	stats, err := Collect(path, names, src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]map[string]float32{}
	for _, ms := range allMethods {
		meth, _ := ParseMethod(ms)
		r, err := stats.Ranges(meth)
		if err != nil {
			t.Fatalf("%s: %v", ms, err)
		}
		all[ms] = r
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d MatMul activation inputs, %d batches\n", len(names), stats.Batches)
	w := 0
	for _, n := range names {
		w = max(w, len(n))
	}
	fmt.Fprintf(&b, "%-*s %8s %8s %8s %8s %8s\n", w, "tensor", "min", "max", "p99.99", "entropy", "mse")
	for _, n := range names {
		h := stats.Tensors[n]
		fmt.Fprintf(&b, "%-*s %8.4f %8.4f %8.4f %8.4f %8.4f\n", w, n, h.Min, all["max"][n],
			all["percentile:99.99"][n], all["entropy"][n], all["mse"][n])
		for _, ms := range allMethods[1:] {
			if r := all[ms][n]; r > all["max"][n] {
				t.Errorf("%s: %s range %v exceeds the max %v", n, ms, r, all["max"][n])
			}
		}
	}
	t.Log("\n" + b.String())

	// The caches round-trip on real names.
	out := t.TempDir()
	if err := WriteJSON(filepath.Join(out, "c.json"), all["entropy"], Meta{Model: stats.Model, Method: "entropy", Batches: stats.Batches}); err != nil {
		t.Fatal(err)
	}
	back, meta, err := ReadJSON(filepath.Join(out, "c.json"))
	if err != nil || meta.Model != "bert-cls-trained.opset13" || len(back) != len(names) {
		t.Errorf("JSON: %v %+v %d", err, meta, len(back))
	}
	if err := WriteTRT(filepath.Join(out, "c.cache"), all["entropy"], ""); err != nil {
		t.Fatal(err)
	}
	if back, _, err := ReadTRT(filepath.Join(out, "c.cache")); err != nil || len(back) != len(names) {
		t.Errorf("TRT: %v %d", err, len(back))
	}
}

// TestCollectGroups: with a bound on the bytes per batch far below the tensors', the
// corpus BERT's float activations are collected in many ORT passes (one per tensor at 1
// byte), and every statistic is identical to one pass's; the tensor sizes the grouping
// reads are the real ones.
func TestCollectGroups(t *testing.T) {
	orttest.RequireLib(t)
	path := filepath.Join(corpus.Dir(t), "bert.opset13.onnx")
	m, err := ir.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	shape.Infer(m) // the types, to choose the float tensors
	var names []string
	for _, n := range m.Graph.Nodes() {
		if n.OpType == "Constant" {
			continue
		}
		for _, o := range n.Outputs() {
			if o != nil && !o.IsGraphOutput() && len(names) < 40 {
				names = append(names, o.Name)
			}
		}
	}
	names = append(names, "last_hidden_state") // a graph output: returned by every pass
	src, err := LoadData("random:3:7", m, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Only the float tensors calibrate.
	var float []string
	for _, n := range names {
		if v := m.Graph.Value(n); v != nil && v.Type != nil && v.Type.DType.IsFloat() {
			float = append(float, n)
		}
	}
	if len(float) < 10 {
		t.Fatalf("only %d float tensors typed in the model", len(float))
	}
	c0, p0 := Counts()
	one, err := Collect(path, float, src, Options{MaxBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	c1, p1 := Counts()
	if one.Passes != 1 || c1-c0 != 1 || p1-p0 != 1 {
		t.Errorf("unbounded: %d passes (counted %d collections, %d passes), want 1", one.Passes, c1-c0, p1-p0)
	}
	many, err := Collect(path, float, src, Options{MaxBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	c2, p2 := Counts()
	extra := len(float) - 1 // the graph output rides with the first group
	if many.Passes != extra || c2-c1 != 1 || p2-p1 != int64(extra) {
		t.Errorf("MaxBytes=1: %d passes (counted %d collections, %d passes), want %d", many.Passes, c2-c1, p2-p1, extra)
	}
	if many.Batches != one.Batches || len(many.Tensors) != len(one.Tensors) {
		t.Fatalf("grouped: %d batches, %d tensors; one pass: %d, %d", many.Batches, len(many.Tensors), one.Batches, len(one.Tensors))
	}
	for _, n := range one.Names() {
		a, b := one.Tensors[n], many.Tensors[n]
		if b == nil || a.Count != b.Count || a.Min != b.Min || a.Max != b.Max || a.AbsMax != b.AbsMax || a.Width != b.Width || fmt.Sprint(a.Bins) != fmt.Sprint(b.Bins) {
			t.Errorf("%s: grouped statistics differ from one pass's", n)
		}
	}
	// A bound of a few tensors' bytes groups them, and the sizes are what ORT returns.
	feed, _ := src.Batch(0)
	sess, err := ort.NewSession(path, ort.Options{OptLevel: ort.OptDisabled, ExtraOutputs: float[:len(float)-1]})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	outs, err := sess.Run(feed)
	if err != nil {
		t.Fatal(err)
	}
	mm, _ := ir.Load(path)
	sizes := tensorBytes(mm, feed, float[:len(float)-1])
	for _, n := range float[:len(float)-1] {
		if got := int64(len(outs[n].Data)); sizes[n] != got {
			t.Errorf("%s: estimated %d bytes per batch, ORT returns %d", n, sizes[n], got)
		}
	}
}
