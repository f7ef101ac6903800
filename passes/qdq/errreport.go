package qdq

// The per-layer error report (report=FILE.json): what each quantizer group and each
// block costs.
//
// Two measurements, both against the float model in ONNX Runtime over the evaluation
// data (eval=FILE.npz, else the calibration data):
//
//   - per block (the blocks analysis: attention, FFN, GELU, LayerNorm, ...), the error of
//     its output with every group quantized: SQNR = 10·log10(Σ f² / Σ (q − f)²) and the
//     relative error √(Σ (q − f)² / Σ f²), f the float model's value and q the quantized
//     model's, summed over every element of the data;
//   - per quantizer group, the model's measure (accuracy with labels, else the smallest
//     cosine similarity of the float outputs) with that group off and the rest on, and
//     the gain over every group on: exactly the budget search's leave-one-out step, so
//     the ranking is the order budget=D turns groups off in.
//
// Both see every graph the pass places in: the groups and blocks of an If's branches (a
// merged decoder) are listed with their graph named, their outputs fetched through the
// If (calib.ExposeBodies), and every batch runs once per value of a boolean input that
// is an If's condition, so each branch is measured. Groups are ranked by gain (most
// harmful first), blocks by relative error (worst first). With budget=D, the report gives the disable= expression that turns off the
// groups the search chose. The file is JSON; -stats shows the same as a table, and the
// -report page charts the largest relative error of each layer.

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/blocks"
	"github.com/qcc-dev/qcc/quant/calib"
	"github.com/qcc-dev/qcc/quant/eval"
)

// ErrorReport is what report=FILE.json writes, and what the pass records for -report.
type ErrorReport struct {
	Model string `json:"model"`
	Data  string `json:"data"`
	Rows  int    `json:"rows"`
	// Measure is "accuracy" (eval= with labels) or "cosine" (the smallest cosine
	// similarity of the float outputs to the float model's).
	Measure string  `json:"measure"`
	Float   float64 `json:"float"`  // the float model's measure (cosine: 1)
	AllOn   float64 `json:"all_on"` // with every group quantized
	// Groups, most harmful first; Blocks, largest relative error first.
	Groups []GroupError `json:"groups"`
	Blocks []BlockError `json:"blocks"`
	// Budget, when given, and the groups the budget search turned off for it, as a
	// disable= expression.
	Budget  *float64 `json:"budget,omitempty"`
	Off     []string `json:"off,omitempty"`
	Disable string   `json:"disable,omitempty"`
}

// GroupError is one quantizer group's effect on the model output.
type GroupError struct {
	Group string `json:"group"`
	// Graph is the If branch the group's sites are in ("" for the main graph).
	Graph      string  `json:"graph,omitempty"`
	Quantizers int     `json:"quantizers"` // DequantizeLinear nodes serving it
	Without    float64 `json:"without"`    // the measure with this group off, the rest on
	Gain       float64 `json:"gain"`       // Without - AllOn: what turning it off buys
	Cosine     float64 `json:"cosine"`     // the cosine similarity with it off
}

// BlockError is the error of one block's output with every group quantized.
type BlockError struct {
	Block string `json:"block"`
	// Graph is the If branch the block is in ("" for the main graph).
	Graph  string `json:"graph,omitempty"`
	Kind   string `json:"kind"`
	Layer  int    `json:"layer"`
	Output string `json:"output"`
	// SQNR in dB; null when the output is exact.
	SQNR     *float64 `json:"sqnr_db"`
	RelError float64  `json:"rel_error"`
}

// errorReport measures the float model (serialized before the pass placed anything) and
// its quantized forms and writes the report.
func (o *options) errorReport(ctx *pass.Context, br *blocks.Result, float []byte) error {
	m := ctx.Model
	s := &budgetSearch{o: o, ctx: ctx, dir: m.Dir, seen: map[string]*measurement{}, float: float}
	s.opts = ort.Options{OptLevel: ort.OptAll}
	if o.fp8 {
		s.opts.OptLevel = ort.OptBasic // see searchBudget
	}
	src := o.data
	var d *eval.Data
	var err error
	if o.eval != "" {
		s.acc, src = true, o.eval
		d, err = eval.Load(o.eval, m, o.evalBatch, true)
	} else {
		b := o.evalBatch
		if b == 0 {
			b = o.batch
		}
		d, err = eval.Load(o.data, m, b, false)
	}
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if s.ev, err = eval.NewEvaluator(float, d, s.opts); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	rep := &ErrorReport{Model: m.Graph.Name, Data: src, Rows: d.Len(), Measure: "cosine", Float: 1}
	if s.acc {
		rep.Measure, rep.Float = "accuracy", s.ev.RefRes.Accuracy()
	}
	measure := func(r eval.Result) float64 {
		if s.acc {
			return r.Accuracy()
		}
		return r.Cosine
	}

	// Every group on, and each group off in turn.
	allBytes, all, err := s.build(nil)
	if err != nil {
		return err
	}
	allRes, err := s.ev.Run(allBytes)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	rep.AllOn = measure(allRes)
	_, perGroup := countQuantizers(all, func(g string) string { return g })
	for _, g := range sortedKeys(perGroup) {
		b, _, err := s.build([]string{g})
		if err != nil {
			return err
		}
		r, err := s.ev.Run(b)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		rep.Groups = append(rep.Groups, GroupError{Group: g, Graph: groupGraph(g), Quantizers: perGroup[g], Without: measure(r), Gain: measure(r) - rep.AllOn, Cosine: r.Cosine})
	}
	sort.SliceStable(rep.Groups, func(i, j int) bool {
		a, b := rep.Groups[i], rep.Groups[j]
		if a.Gain != b.Gain {
			return a.Gain > b.Gain
		}
		if a.Cosine != b.Cosine {
			return a.Cosine > b.Cosine
		}
		return a.Group < b.Group
	})

	// Block outputs, float against every group on.
	if rep.Blocks, err = blockErrors(br, float, allBytes, d, s.opts); err != nil {
		return err
	}
	if o.budget >= 0 {
		bud := o.budget
		rep.Budget = &bud
		for g := range o.off {
			rep.Off = append(rep.Off, g)
		}
		sort.Strings(rep.Off)
		if len(rep.Off) > 0 {
			// A unit of twins in If branches is off in each of its groups.
			var q []string
			for _, u := range rep.Off {
				gs := o.units[u]
				if len(gs) == 0 {
					gs = []string{u}
				}
				for _, g := range gs {
					q = append(q, regexp.QuoteMeta(g))
				}
			}
			rep.Disable = "^(" + strings.Join(q, "|") + ")$"
		}
	}
	if err := writeJSON(o.reportPath, rep); err != nil {
		return err
	}
	ctx.Record(rep)
	rep.notes(ctx)
	return nil
}

// blockErrors runs the float and the quantized model over the data with every block's
// output fetched (a branch's through its If) and sums the squared values and errors per
// block.
func blockErrors(br *blocks.Result, float, quant []byte, d *eval.Data, opts ort.Options) ([]BlockError, error) {
	type acc struct {
		b        BlockError
		graph    int // the block's graph, in walk order
		typ      *ir.Type
		sig, err float64
	}
	var accs []*acc
	for gi, r := range br.All() {
		graph := ""
		if r.Graph != nil && r.Graph.Parent != nil {
			graph = r.Graph.Name
			if !inBranches(r.Graph) {
				continue // a Loop or Scan body passes out only its loop outputs, and stays float
			}
		}
		byOut := map[string]bool{}
		for _, b := range r.Blocks {
			v := b.Root
			if v == nil || v.Type == nil || v.Type.DType != ir.Float || byOut[v.Name] {
				continue
			}
			byOut[v.Name] = true
			accs = append(accs, &acc{b: BlockError{Block: b.ID, Graph: graph, Kind: string(b.Kind), Layer: b.Layer, Output: v.Name}, graph: gi, typ: v.Type})
		}
	}
	if len(accs) == 0 {
		return nil, nil
	}
	// open exposes the block outputs of a serialized model and opens a session on it;
	// names[i] is what accs[i]'s output is fetched as.
	open := func(model []byte, what string) (*ort.Session, []string, error) {
		m, err := ir.LoadBytes(model, "")
		if err != nil {
			return nil, nil, fmt.Errorf("report: %s model: %w", what, err)
		}
		var graphs []*ir.Graph
		_ = m.Graph.Walk(func(g *ir.Graph) error { graphs = append(graphs, g); return nil })
		vals := make([]*ir.Value, len(accs))
		for i, a := range accs {
			var v *ir.Value
			if a.graph < len(graphs) {
				v = graphs[a.graph].Value(a.b.Output)
			}
			if v == nil {
				return nil, nil, fmt.Errorf("report: %s model: block %s output %s missing", what, a.b.Block, a.b.Output)
			}
			if v.Type == nil {
				v.Type = a.typ
			}
			vals[i] = v
		}
		cm, byVal, err := calib.ExposeBodies(m, vals)
		if err != nil {
			return nil, nil, fmt.Errorf("report: %s model: %w", what, err)
		}
		names := make([]string, len(vals))
		o := opts
		for i, v := range vals {
			names[i] = byVal[v]
			if out := cm.Graph.Value(names[i]); out == nil || !out.IsGraphOutput() {
				o.ExtraOutputs = append(o.ExtraOutputs, names[i])
			}
		}
		b, err := ir.Marshal(cm)
		if err != nil {
			return nil, nil, fmt.Errorf("report: %s model: %w", what, err)
		}
		sess, err := ort.NewSessionFromBytes(b, o)
		if err != nil {
			return nil, nil, fmt.Errorf("report: %s model: %w", what, err)
		}
		return sess, names, nil
	}
	fs, fnames, err := open(float, "float")
	if err != nil {
		return nil, err
	}
	defer fs.Close()
	qs, qnames, err := open(quant, "quantized")
	if err != nil {
		return nil, err
	}
	defer qs.Close()
	for i, b := range d.Batches {
		fo, err := fs.Run(b)
		if err != nil {
			return nil, fmt.Errorf("report: float model, batch %d: %w", i, err)
		}
		qo, err := qs.Run(b)
		if err != nil {
			return nil, fmt.Errorf("report: quantized model, batch %d: %w", i, err)
		}
		for j, a := range accs {
			f, q := fo[fnames[j]], qo[qnames[j]]
			if f == nil || q == nil {
				return nil, fmt.Errorf("report: block %s output %s missing", a.b.Block, a.b.Output)
			}
			sig, e, err := sumSquares(f, q)
			if err != nil {
				return nil, fmt.Errorf("report: block %s output %s: %w", a.b.Block, a.b.Output, err)
			}
			a.sig += sig
			a.err += e
		}
	}
	out := make([]BlockError, len(accs))
	for i, a := range accs {
		a.b.RelError = math.Sqrt(a.err / a.sig)
		if a.err > 0 {
			db := 10 * math.Log10(a.sig/a.err)
			a.b.SQNR = &db
		}
		if a.sig == 0 {
			a.b.RelError = 0
			if a.err > 0 {
				a.b.RelError = math.Inf(1)
			}
		}
		out[i] = a.b
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].RelError != out[j].RelError {
			return out[i].RelError > out[j].RelError
		}
		return out[i].Block < out[j].Block
	})
	return out, nil
}

// groupGraph is the If branch a group is in: its name's scope ("" in the main graph).
func groupGraph(g string) string {
	if i := strings.LastIndex(g, "/layer"); i >= 0 {
		return g[:i]
	}
	return ""
}

// sumSquares returns Σ f² and Σ (q − f)².
func sumSquares(f, q *ndarray.Array) (sig, err float64, e error) {
	x, y := f.Float64s(), q.Float64s()
	if len(x) != len(y) {
		return 0, 0, fmt.Errorf("%d values, quantized %d", len(x), len(y))
	}
	for i := range x {
		sig += x[i] * x[i]
		err += (y[i] - x[i]) * (y[i] - x[i])
	}
	return sig, err, nil
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func writeJSON(path string, rep *ErrorReport) error {
	for i := range rep.Blocks {
		if math.IsInf(rep.Blocks[i].RelError, 0) || math.IsNaN(rep.Blocks[i].RelError) {
			rep.Blocks[i].RelError = -1 // JSON has no Inf/NaN: a float output of zeros quantized to non-zeros
		}
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return nil
}

// notes prints the report as the -stats table.
func (r *ErrorReport) notes(ctx *pass.Context) {
	ctx.Count("qdq: report groups", len(r.Groups))
	ctx.Count("qdq: report blocks", len(r.Blocks))
	ctx.Note("report: %s on %s (%d rows): float %.6f, every group on %.6f", r.Measure, r.Data, r.Rows, r.Float, r.AllOn)
	ctx.Note("report: %-26s %10s %10s %10s", "group (most harmful first)", "quantizers", "without", "gain")
	for _, g := range r.Groups {
		ctx.Note("report: %-26s %10d %10.6f %+10.6f", g.Group, g.Quantizers, g.Without, g.Gain)
	}
	ctx.Note("report: %-26s %6s %10s %10s  %s", "block (worst first)", "layer", "SQNR dB", "rel error", "output")
	for _, b := range r.Blocks {
		db := "exact"
		if b.SQNR != nil {
			db = fmt.Sprintf("%.2f", *b.SQNR)
		}
		ctx.Note("report: %-26s %6d %10s %10.4g  %s", b.Block, b.Layer, db, b.RelError, b.Output)
	}
	switch {
	case r.Budget == nil:
		ctx.Note("report: give budget=D for the disable= list that meets it")
	case len(r.Off) == 0:
		ctx.Note("report: budget %g: met with every group on (nothing to disable)", *r.Budget)
	default:
		ctx.Note("report: budget %g: disable=%s", *r.Budget, r.Disable)
	}
}
