package eval

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// scale multiplies its input by s: the reference with s = 1, candidates otherwise.
func scale(t *testing.T, s string) (*ir.Model, []byte) {
	t.Helper()
	m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13]>
g (float[batch,3] x) => (float[batch,3] y) <
  float[3] s = {` + s + `}
> {
  y = Mul (x, s)
}
`)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ir.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return m, b
}

func TestCountRight(t *testing.T) {
	logits := ndarray.FromFloat32([]int64{3, 2}, []float32{0.1, 0.9, 2, 1, 5, 5})
	right, err := CountRight(logits, []int64{1, 1, 0})
	if err != nil || right != 2 { // the tie goes to class 0
		t.Errorf("CountRight %d %v, want 2", right, err)
	}
	if _, err := CountRight(logits, []int64{1, 1, 0, 0}); err == nil {
		t.Errorf("no error for 6 values and 4 labels")
	}
}

func TestAutoBatch(t *testing.T) {
	for _, c := range []struct{ rows, width, want int }{{2000, 32, 32}, {5, 32, 5}, {100, 128, 8}, {10, 100000, 1}} {
		if got := AutoBatch(c.rows, c.width); got != c.want {
			t.Errorf("AutoBatch(%d, %d) = %d, want %d", c.rows, c.width, got, c.want)
		}
	}
}

func writeData(t *testing.T, rows int, labels bool) string {
	t.Helper()
	x := make([]float32, 3*rows)
	l := make([]int64, rows)
	for i := range rows {
		c := i % 3
		x[3*i+c] = float32(1 + i)
		l[i] = int64(c)
	}
	arrays := map[string]*ndarray.Array{"x": ndarray.FromFloat32([]int64{int64(rows), 3}, x)}
	if labels {
		arrays[LabelsKey] = ndarray.FromInt64([]int64{int64(rows)}, l)
	}
	path := filepath.Join(t.TempDir(), "eval.npz")
	if err := npz.Write(path, arrays); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoad(t *testing.T) {
	m, _ := scale(t, "1, 1, 1")
	d, err := Load(writeData(t, 10, true), m, 4, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Batches) != 3 || d.Len() != 10 || d.Rows[2] != 2 || len(d.Labels) != 10 || d.Labels[4] != 1 {
		t.Errorf("batches %d rows %v labels %v", len(d.Batches), d.Rows, d.Labels)
	}
	if _, err := Load(writeData(t, 10, false), m, 0, true); err == nil || !strings.Contains(err.Error(), `no "labels" array`) {
		t.Errorf("missing labels: %v", err)
	}
}

func TestEvaluator(t *testing.T) {
	orttest.RequireLib(t)
	m, ref := scale(t, "1, 1, 1")
	d, err := Load(writeData(t, 9, true), m, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEvaluator(ref, d, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e.RefRes.Right != 9 || e.RefRes.N != 9 || e.RefRes.Cosine != 1 {
		t.Errorf("reference %+v", e.RefRes)
	}
	// Scaling class 2 by -1 loses every row of class 2 (3 of 9) and bends the outputs.
	_, cand := scale(t, "1, 1, -1")
	r, err := e.Run(cand)
	if err != nil {
		t.Fatal(err)
	}
	if r.Right != 6 || math.Abs(r.Accuracy()-6.0/9) > 1e-12 || !(r.Cosine < 0.9) || e.Evals != 1 {
		t.Errorf("candidate %+v (%d evals)", r, e.Evals)
	}
	if e.RefRes.Agree != 9 || e.RefRes.Rows != 9 || r.Agree != 6 || r.Rows != 9 || math.Abs(r.Agreement()-6.0/9) > 1e-12 {
		t.Errorf("agreement with the reference: reference %+v, candidate %+v", e.RefRes, r)
	}
	// Agreement is with the reference, not the labels: against the wrong model as the
	// reference, the right one scores 9 of 9 and agrees on 6.
	e2, err := NewEvaluator(cand, d, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := e2.Run(ref); err != nil || r.Right != 9 || r.Agree != 6 || r.Rows != 9 {
		t.Errorf("the float model against the wrong one: %+v %v", r, err)
	}
	path := filepath.Join(t.TempDir(), "m.onnx")
	if err := ir.Save(m, path, ir.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if acc, err := Accuracy(path, d, ort.Options{}); err != nil || acc != 1 {
		t.Errorf("Accuracy %v %v", acc, err)
	}
}

// TestSplit: every other batch is held out at 0.5, a quarter of them at 0.25, the labels
// follow their rows, and data that cannot be split is not.
func TestSplit(t *testing.T) {
	d := &Data{Rows: []int{2, 2, 2, 1}, Labels: []int64{0, 1, 2, 3, 4, 5, 6}}
	for i := range d.Rows {
		d.Batches = append(d.Batches, map[string]*ndarray.Array{"x": ndarray.FromInt64([]int64{int64(d.Rows[i])}, make([]int64, d.Rows[i]))})
	}
	tune, held := d.Split(0.5)
	if held == nil || fmt.Sprint(tune.Rows, tune.Labels, held.Rows, held.Labels) != "[2 2] [0 1 4 5] [2 1] [2 3 6]" {
		t.Errorf("0.5: tune %v %v, held %+v", tune.Rows, tune.Labels, held)
	}
	if tune.Len()+held.Len() != d.Len() {
		t.Errorf("rows lost")
	}
	tune, held = d.Split(0.25)
	if held == nil || fmt.Sprint(tune.Rows, held.Rows, held.Labels) != "[2 2 2] [1] [6]" {
		t.Errorf("0.25: tune %v, held %+v", tune.Rows, held)
	}
	one := &Data{Batches: d.Batches[:1], Rows: d.Rows[:1], Labels: d.Labels[:2]}
	if tune, held := one.Split(0.5); held != nil || tune != one {
		t.Errorf("one batch split into %+v and %+v", tune, held)
	}
}

// TestLoadSelectors: a model whose boolean input is an If's condition gets every batch
// once per value of it, consecutive (Each 2); Split keeps the two runs of a batch in one
// part, so each part runs both branches.
func TestLoadSelectors(t *testing.T) {
	m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13]>
g (bool c, float[n,3] x) => (float[n,3] y) {
  y = If (c) <then_branch = then () => (float[n,3] a) {
    a = Relu (x)
  }, else_branch = else () => (float[n,3] b) {
    b = Neg (x)
  }>
}
`)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Load("random:3", m, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	conds := func(d *Data) string {
		var out []bool
		for _, b := range d.Batches {
			out = append(out, b["c"].Bools()[0])
		}
		return fmt.Sprint(out)
	}
	if d.Each != 2 || fmt.Sprint(d.Rows) != "[2 2 2 2 2 2]" || conds(d) != "[false true false true false true]" {
		t.Errorf("each %d rows %v conditions %s", d.Each, d.Rows, conds(d))
	}
	tune, held := d.Split(0.5)
	if held == nil || len(tune.Batches) != 4 || conds(held) != "[false true]" || held.Each != 2 ||
		fmt.Sprint(held.Batches[0]["x"].Float32s()) != fmt.Sprint(d.Batches[2]["x"].Float32s()) || fmt.Sprint(held.Batches[1]["x"].Float32s()) != fmt.Sprint(d.Batches[2]["x"].Float32s()) {
		t.Errorf("split: tune %v, held %+v", tune.Rows, held)
	}
}
