// Package eval measures what quantization costs a model: it runs a candidate model in
// ONNX Runtime on a fixed data set and compares it with the float model's outputs on the
// same data, as task accuracy (argmax of the first output against a labels array) and as
// the cosine similarity of every float output.
//
// The float reference is computed once (NewEvaluator); every candidate is then a single
// pass over the data (Evaluator.Run), so comparing many placements of one model costs one
// ORT session and one pass each.
package eval

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/quant/calib"
)

// LabelsKey is the array of an evaluation .npz file that holds the labels.
const LabelsKey = "labels"

// TokensPerBatch is how many input elements per batch AutoBatch aims at. Measured on the
// tiny trained BERT (2000 rows of 32 tokens, 2 CPU threads): batches of 16-32 rows (512-1024
// tokens) evaluate the set fastest, about 0.5 s with the session; 512 rows take 1.3 s and
// one batch of 2000 rows 2.2 s (the attention scores then fall out of cache). A full-size
// BERT at sequence 128 gets batch 8.
const TokensPerBatch = 1024

// Data is an evaluation set split into batches, with the labels of its rows when it has
// them.
type Data struct {
	Batches []map[string]*ndarray.Array
	Rows    []int   // rows of each batch
	Labels  []int64 // one per row in batch order; nil when the data has none
	// Each is how many consecutive batches are one batch of the source, run once per
	// value of the boolean inputs that are If conditions (calib.EachSelector), so that
	// every branch of a merged decoder is measured; 0 or 1 when the model has none.
	Each int
}

// Len is the number of rows.
func (d *Data) Len() int {
	n := 0
	for _, r := range d.Rows {
		n += r
	}
	return n
}

// Split divides d by whole batches into the part a search tunes on and the part held
// out to report on: a fraction frac of the batches, spread evenly over the data (batch i
// is held out when floor((i+1)·frac) > floor(i·frac), so frac 0.5 holds out every other
// batch), the labels following their rows. The Each batches of one source batch stay
// together, so that both parts run every branch. held is nil when d has fewer than two
// source batches or frac gives one part nothing.
func (d *Data) Split(frac float64) (tune, held *Data) {
	each := max(d.Each, 1)
	tune, held = &Data{Each: d.Each}, &Data{Each: d.Each}
	row := 0
	for i, b := range d.Batches {
		part := tune
		if j := i / each; math.Floor(float64(j+1)*frac) > math.Floor(float64(j)*frac) {
			part = held
		}
		part.Batches = append(part.Batches, b)
		part.Rows = append(part.Rows, d.Rows[i])
		if d.Labels != nil {
			part.Labels = append(part.Labels, d.Labels[row:row+d.Rows[i]]...)
		}
		row += d.Rows[i]
	}
	if len(tune.Batches) == 0 || len(held.Batches) == 0 {
		return d, nil
	}
	return tune, held
}

// AutoBatch picks the evaluation batch size for an .npz data set whose inputs have
// rows×width elements per row (width = the product of the dimensions after the first):
// TokensPerBatch / width rows, at least 1, at most rows.
func AutoBatch(rows, width int) int {
	b := TokensPerBatch / max(width, 1)
	return max(1, min(b, rows))
}

// Load reads evaluation data for model m from spec (anything calib.LoadData accepts).
// batch <= 0 picks one: the model's fixed batch, or AutoBatch for an .npz file. With
// needLabels, spec must be an .npz file with a LabelsKey array of one integer label per
// row. A model whose boolean inputs choose If branches gets every batch once per value of
// them (Data.Each), the labels repeated with their rows.
func Load(spec string, m *ir.Model, batch int, needLabels bool) (*Data, error) {
	var arrays map[string]*ndarray.Array
	if isNPZ(spec) {
		var err error
		if arrays, err = npz.Read(spec); err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		if batch <= 0 {
			batch = autoBatchOf(arrays, m)
		}
	}
	base, err := calib.LoadData(spec, m, batch)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	src := calib.EachSelector(base, calib.Selectors(m))
	d := &Data{Each: src.Len() / max(base.Len(), 1)}
	for i := 0; i < src.Len(); i++ {
		b, err := src.Batch(i)
		if err != nil {
			return nil, fmt.Errorf("eval: %w", err)
		}
		// The rows are the first axis of the inputs that have one (an If's condition is a
		// scalar).
		rows := 0
		for _, k := range slices.Sorted(maps.Keys(b)) {
			if a := b[k]; len(a.Shape) > 0 {
				rows = int(a.Shape[0])
				break
			}
		}
		d.Batches = append(d.Batches, b)
		d.Rows = append(d.Rows, rows)
	}
	if !needLabels {
		return d, nil
	}
	lab := arrays[LabelsKey]
	if lab == nil {
		return nil, fmt.Errorf("eval: %s has no %q array (want one integer label per row)", spec, LabelsKey)
	}
	if !lab.DType.IsInteger() {
		return nil, fmt.Errorf("eval: %s: %q is %v, want integers", spec, LabelsKey, lab.DType)
	}
	labels := lab.Int64s()
	if rows := d.Len() / max(d.Each, 1); len(labels) < rows {
		return nil, fmt.Errorf("eval: %s: %d labels for %d rows", spec, len(labels), rows)
	}
	row := 0
	for i, n := range d.Rows {
		d.Labels = append(d.Labels, labels[row:row+n]...)
		if (i+1)%max(d.Each, 1) == 0 {
			row += n
		}
	}
	return d, nil
}

func isNPZ(spec string) bool {
	return len(spec) > 4 && (spec[len(spec)-4:] == ".npz" || spec[len(spec)-4:] == ".NPZ")
}

// autoBatchOf applies AutoBatch to the first model input present in the arrays.
func autoBatchOf(arrays map[string]*ndarray.Array, m *ir.Model) int {
	for _, in := range m.Graph.Inputs {
		a := arrays[in.Name]
		if a == nil || len(a.Shape) == 0 || in.IsConst() {
			continue
		}
		if t := in.Type; t != nil && len(t.Shape) > 0 && t.Shape[0].Known {
			return 0 // the model fixes the batch
		}
		width := 1
		for _, d := range a.Shape[1:] {
			width *= int(d)
		}
		return AutoBatch(int(a.Shape[0]), width)
	}
	return 0
}

// Result is one model's score on the data.
type Result struct {
	Right, N int     // correct argmax predictions of the first output, of N labelled rows
	Cosine   float64 // the smallest cosine similarity to the reference over the float outputs
	// Agree counts the rows (of Rows) whose argmax of the first output is the reference's:
	// a measure that needs no labels and is not the one a placement was judged on.
	Agree, Rows int
}

// Agreement is Agree/Rows (0 without rows).
func (r Result) Agreement() float64 {
	if r.Rows == 0 {
		return 0
	}
	return float64(r.Agree) / float64(r.Rows)
}

// Accuracy is Right/N (0 without labels).
func (r Result) Accuracy() float64 {
	if r.N == 0 {
		return 0
	}
	return float64(r.Right) / float64(r.N)
}

// Evaluator scores models against the float reference on one data set.
type Evaluator struct {
	Data *Data
	// Opts are the session options of every run (the reference's too).
	Opts   ort.Options
	first  string                      // the first output's name
	ref    []map[string]*ndarray.Array // reference outputs per batch
	refArg []int                       // the reference's argmax of the first output per row
	outs   []string                    // float outputs compared by cosine, sorted
	RefRes Result                      // the reference's own score (Cosine 1)
	Evals  int                         // Run calls so far
}

// NewEvaluator runs the reference model (serialized) over the data and keeps its
// outputs.
func NewEvaluator(reference []byte, d *Data, opts ort.Options) (*Evaluator, error) {
	if err := initORT(); err != nil {
		return nil, err
	}
	e := &Evaluator{Data: d, Opts: opts}
	s, err := ort.NewSessionFromBytes(reference, opts)
	if err != nil {
		return nil, fmt.Errorf("eval: reference model: %w", err)
	}
	defer s.Close()
	outs := s.Outputs()
	if len(outs) == 0 {
		return nil, fmt.Errorf("eval: the model has no outputs")
	}
	e.first = outs[0].Name
	for _, o := range outs {
		if o.DType.IsFloat() {
			e.outs = append(e.outs, o.Name)
		}
	}
	sort.Strings(e.outs)
	for _, b := range d.Batches {
		got, err := s.Run(b)
		if err != nil {
			return nil, fmt.Errorf("eval: reference model: %w", err)
		}
		e.ref = append(e.ref, got)
	}
	for _, o := range e.ref {
		a := o[e.first]
		if a == nil {
			return nil, fmt.Errorf("eval: reference model: output %q missing", e.first)
		}
		e.refArg = append(e.refArg, argmaxRows(a)...)
	}
	res, err := e.score(e.ref)
	if err != nil {
		return nil, err
	}
	res.Cosine = 1 // to itself, without the rounding of the sums
	e.RefRes = res
	return e, nil
}

func initORT() error {
	lib, err := ort.LibraryPath("")
	if err == nil {
		err = ort.Init(lib)
	}
	if err != nil {
		return fmt.Errorf("eval: measuring accuracy needs ONNX Runtime: %w", err)
	}
	return nil
}

// Run scores a serialized candidate model.
func (e *Evaluator) Run(model []byte) (Result, error) {
	s, err := ort.NewSessionFromBytes(model, e.Opts)
	if err != nil {
		return Result{}, fmt.Errorf("eval: %w", err)
	}
	defer s.Close()
	e.Evals++
	outs := make([]map[string]*ndarray.Array, len(e.Data.Batches))
	for i, b := range e.Data.Batches {
		if outs[i], err = s.Run(b); err != nil {
			return Result{}, fmt.Errorf("eval: %w", err)
		}
	}
	return e.score(outs)
}

// score counts the right predictions and computes the cosine similarity to the
// reference of each float output over the whole data set (the smallest one).
func (e *Evaluator) score(outs []map[string]*ndarray.Array) (Result, error) {
	var r Result
	if e.Data.Labels != nil {
		row := 0
		for i, o := range outs {
			a := o[e.first]
			if a == nil {
				return r, fmt.Errorf("eval: output %q missing", e.first)
			}
			right, err := CountRight(a, e.Data.Labels[row:row+e.Data.Rows[i]])
			if err != nil {
				return r, err
			}
			r.Right += right
			row += e.Data.Rows[i]
		}
		r.N = row
	}
	for _, o := range outs {
		a := o[e.first]
		if a == nil {
			return r, fmt.Errorf("eval: output %q missing", e.first)
		}
		for _, c := range argmaxRows(a) {
			if r.Rows < len(e.refArg) && c == e.refArg[r.Rows] {
				r.Agree++
			}
			r.Rows++
		}
	}
	if r.Rows != len(e.refArg) {
		return r, fmt.Errorf("eval: output %q has %d rows, the reference %d", e.first, r.Rows, len(e.refArg))
	}
	r.Cosine = 1
	for _, name := range e.outs {
		var dot, na, nb float64
		for i, o := range outs {
			a, b := o[name], e.ref[i][name]
			if a == nil || b == nil {
				return r, fmt.Errorf("eval: output %q missing", name)
			}
			x, y := a.Float64s(), b.Float64s()
			if len(x) != len(y) {
				return r, fmt.Errorf("eval: output %q has %d values, the reference %d", name, len(x), len(y))
			}
			for j := range x {
				dot += x[j] * y[j]
				na += x[j] * x[j]
				nb += y[j] * y[j]
			}
		}
		c := 1.0
		switch {
		case math.IsNaN(dot) || math.IsNaN(na) || math.IsNaN(nb):
			c = math.NaN()
		case na == 0 && nb == 0:
		case na == 0 || nb == 0:
			c = 0
		default:
			c = dot / (math.Sqrt(na) * math.Sqrt(nb))
		}
		if !(c >= r.Cosine) { // NaN wins
			r.Cosine = c
		}
	}
	return r, nil
}

// argmaxRows is the argmax (first index on ties) of each row of a [rows, ..., classes]
// array (a scalar or a vector is one row).
func argmaxRows(a *ndarray.Array) []int {
	v := a.Float64s()
	rows := 1
	if len(a.Shape) > 1 {
		rows = int(a.Shape[0])
	}
	if rows == 0 || len(v) == 0 {
		return nil
	}
	k := len(v) / rows
	out := make([]int, rows)
	for i := range out {
		for j := 1; j < k; j++ {
			if v[i*k+j] > v[i*k+out[i]] {
				out[i] = j
			}
		}
	}
	return out
}

// CountRight counts the rows of logits ([rows, ..., classes], rows = len(labels)) whose
// argmax (first index on ties) equals the label.
func CountRight(logits *ndarray.Array, labels []int64) (int, error) {
	v := logits.Float64s()
	n := len(labels)
	if n == 0 || len(v)%n != 0 || len(v) == 0 {
		return 0, fmt.Errorf("eval: %d output values for %d labels", len(v), n)
	}
	k := len(v) / n
	right := 0
	for i := 0; i < n; i++ {
		best := 0
		for j := 1; j < k; j++ {
			if v[i*k+j] > v[i*k+best] {
				best = j
			}
		}
		if int64(best) == labels[i] {
			right++
		}
	}
	return right, nil
}

// Accuracy is a one-shot helper: the accuracy of the model file at path on labelled data.
func Accuracy(path string, d *Data, opts ort.Options) (float64, error) {
	if err := initORT(); err != nil {
		return 0, err
	}
	if d.Labels == nil {
		return 0, fmt.Errorf("eval: the data has no labels")
	}
	s, err := ort.NewSession(path, opts)
	if err != nil {
		return 0, fmt.Errorf("eval: %w", err)
	}
	defer s.Close()
	first := s.Outputs()[0].Name
	right, row := 0, 0
	for i, b := range d.Batches {
		o, err := s.Run(b)
		if err != nil {
			return 0, fmt.Errorf("eval: %w", err)
		}
		r, err := CountRight(o[first], d.Labels[row:row+d.Rows[i]])
		if err != nil {
			return 0, err
		}
		right += r
		row += d.Rows[i]
	}
	return float64(right) / float64(row), nil
}
