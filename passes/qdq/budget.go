package qdq

// The accuracy budget (budget=D): which quantizer groups to leave float so that the
// quantized model loses at most D against the float one.
//
// The search calibrates once (the ranges of every tensor any candidate quantizes), keeps
// the float model serialized in memory, and measures candidates: each is a copy of the
// float model on which the pass places Q/DQ with a set of groups off, run in ONNX
// Runtime over the evaluation data (eval=FILE.npz with labels: accuracy of the argmax of
// the first output; otherwise the calibration data: the smallest cosine similarity of the
// float outputs to the float model's).
//
//  1. All groups on. Within budget: done, nothing is turned off.
//  2. Each group's contribution, leave-one-out: all groups on except that one. Measuring
//     a group in the context it will run in (everything else quantized) captures how its
//     error compounds with the others' downstream, and it is exactly what turning it off
//     buys the greedy step; measuring a group alone (enable-one-at-a-time) sees it on an
//     otherwise float model, where most groups flip no prediction at all, so it ranks
//     poorly, and it predicts the cost of keeping a group rather than the gain of
//     dropping it. Groups are ranked by the gain in the measure (accuracy, then cosine
//     similarity as the tie-breaker that separates groups flipping the same number of
//     predictions), then fewer quantizers first, then by name.
//  3. Turn groups off in that order until the model is within budget. With every group
//     off the model is the float one, so this ends.
//  4. Try to turn each group that is off back on, least harmful first (more quantizers
//     first on ties): keep it on when the model stays within budget. This keeps as many
//     quantizers as the greedy order allows.
//
// The figures the search chooses by are biased towards it: they are the data it tuned
// on. So the search tunes on part of the evaluation data only and reports the result on
// the rest (holdout=F of the batches, every other one by default), or on
// report-eval=FILE.npz; the notes say which figure is on which data, and the held-out
// one is the one to quote.
//
// Inside If branches (a merged decoder holds its model in both) every quantizer counts,
// wherever its DequantizeLinear is, and every batch runs once per value of a boolean
// input that is an If's condition, so each branch is measured. The search decides units
// rather than groups: a group in a branch together with its twins, the same layer and
// kind in the If's other branches ("{then,else}/layer0/qkv", target.Unit). Both branches
// are the same layers on two paths; a user budgeting a merged decoder wants the same
// layers float whichever path runs, and the two decisions would each be measured on half
// the data. Main-graph groups are their own units.
//
// Every step is deterministic: groups are visited in sorted order with explicit
// tie-breakers, each distinct set of groups is measured once, and the data is read in
// order. The groups turned off are recorded in the skip reason of their nodes; a later
// run over a model qcc already quantized measures nothing again and keeps them off.

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/blocks"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	"github.com/qcc-dev/qcc/quant/eval"
)

// budgetMark is part of the skip reason of every group the budget turned off.
const budgetMark = "disabled by budget="

func checkHoldout(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v >= 0 && v < 1) {
		return fmt.Errorf("want a fraction in [0, 1)")
	}
	return nil
}

func checkBudget(s string) error {
	if s == "" {
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v >= 0 && v <= 1) {
		return fmt.Errorf("want a fraction in [0, 1] (0.003 = 0.3 point)")
	}
	return nil
}

// measurement is one candidate's score.
type measurement struct {
	off      []string // groups (units) off, sorted
	res      eval.Result
	quant    int            // quantizers placed (DequantizeLinear nodes qdq made, in every graph)
	perGroup map[string]int // quantizers serving each unit
}

// budgetSearch measures candidates.
type budgetSearch struct {
	o       *options
	ctx     *pass.Context
	float   []byte // the model before the pass
	dir     string // where its external data lives
	ev      *eval.Evaluator
	opts    ort.Options
	acc     bool // accuracy (eval=) rather than cosine similarity
	allowed int  // accuracy: predictions that may be lost
	seen    map[string]*measurement
	// unitOf maps a group to the unit the search decides it by (target.Unit); a group
	// absent is its own unit.
	unitOf map[string]string
}

// searchBudget runs the search and records in o.off the groups to leave float, and in
// o.given the ranges.
func (o *options) searchBudget(ctx *pass.Context, br *blocks.Result) error {
	m := ctx.Model
	pl := place(m, br, o)
	o.off = map[string]string{}
	if p := m.Meta(qdqcheck.PolicyKey); p != "" {
		// A model qcc quantized already: the nodes a budget left float stay float (by
		// node, whatever group placement now gives them).
		o.keep = map[*ir.Node]string{}
		_ = m.Graph.Walk(func(g *ir.Graph) error {
			for _, n := range g.Nodes() {
				if why, ok := n.Meta(qdqcheck.SkipKey); ok && strings.Contains(why, budgetMark) {
					o.keep[n] = why
				}
			}
			return nil
		})
		ctx.Note("budget: the model carries qcc's Q/DQ already (%s %s): nothing measured again; the %d nodes a budget left float stay float", qdqcheck.PolicyKey, p, len(o.keep))
		return nil
	}
	for _, t := range pl.targets {
		if t.skip == "" {
			t.skip = o.screen(m.Graph, t)
		}
	}
	need := neededTensors(pl.targets)
	if len(need) > 0 && m.Opset("") < 10 {
		return nil // apply refuses the model
	}
	ranges, err := o.ranges(ctx, m, need)
	if err != nil {
		return err
	}
	o.given = ranges
	// The search decides units: groups, twins in the branches of an If as one (see
	// target.Unit).
	var groups []string
	o.units = map[string][]string{}
	unitOf := map[string]string{}
	for _, t := range pl.targets {
		if t.skip != "" || !hasRanges(t, ranges) {
			continue
		}
		g, u := t.Group(), t.Unit()
		if _, ok := unitOf[g]; ok {
			continue
		}
		unitOf[g] = u
		if o.units[u] == nil {
			groups = append(groups, u)
		}
		o.units[u] = append(o.units[u], g)
	}
	sort.Strings(groups)
	if len(groups) == 0 {
		ctx.Note("budget: no quantizer group to measure")
		return nil
	}
	if twins := len(unitOf) - len(groups); twins > 0 {
		ctx.Note("budget: %d groups in If branches decided with their twins in the other branches: %d decisions for %d groups", twins, len(groups), len(unitOf))
	}

	s := &budgetSearch{o: o, ctx: ctx, dir: m.Dir, seen: map[string]*measurement{}, unitOf: unitOf}
	if s.float, err = ir.Marshal(m); err != nil {
		return fmt.Errorf("budget: serializing the float model: %w", err)
	}
	var d *eval.Data
	src, what := o.data, "cosine similarity of the outputs"
	if o.eval != "" {
		s.acc = true
		src, what = o.eval, "accuracy"
		if d, err = eval.Load(o.eval, m, o.evalBatch, true); err != nil {
			return fmt.Errorf("budget: %w", err)
		}
	} else {
		b := o.evalBatch
		if b == 0 {
			b = o.batch
		}
		if d, err = eval.Load(o.data, m, b, false); err != nil {
			return fmt.Errorf("budget: %w", err)
		}
	}
	tune, held, heldWhat, err := o.holdOut(m, d, src, s.acc)
	if err != nil {
		return err
	}
	// ORT's CPU provider refuses FP8 Q/DQ GEMMs from level extended on (it fuses them
	// into integer operators that take no float8: microsoft/onnxruntime#22269).
	s.opts = ort.Options{OptLevel: ort.OptAll}
	if o.fp8 {
		s.opts.OptLevel = ort.OptBasic
	}
	if s.ev, err = eval.NewEvaluator(s.float, tune, s.opts); err != nil {
		return fmt.Errorf("budget: %w", err)
	}
	s.allowed = int(math.Floor(o.budget*float64(tune.Len()) + 1e-9))
	ref := s.ev.RefRes

	all, err := s.measure(nil)
	if err != nil {
		return err
	}
	on := src
	if held != nil && o.reportOn == "" {
		on = "the tuning part of " + src
	}
	if s.acc {
		what += fmt.Sprintf(", float %.4f", ref.Accuracy())
	}
	ctx.Note("budget: tuning on %s: %d rows in %d batches (%s); all %d groups on (%d quantizers): %s, loss %s (budget %g)",
		on, tune.Len(), len(tune.Batches), what, len(groups), all.quant, s.describe(all.res), s.loss(all.res), o.budget)
	if held == nil {
		ctx.Note("budget: nothing held out (%s): every figure is on the data the search tuned on", heldWhat)
	}
	ctx.Count("qdq: budget rows tuned on", tune.Len())
	finish := func(cur *measurement, off []string) error {
		ctx.Count("qdq: budget evaluations", s.ev.Evals)
		ctx.Count("qdq: budget groups measured", len(groups))
		ctx.Count("qdq: budget groups turned off", len(off))
		ctx.Count("qdq: budget quantizers kept", cur.quant)
		ctx.Count("qdq: budget quantizers total", all.quant)
		cmp := "<="
		if !s.within(cur.res) {
			cmp = ">"
		}
		ctx.Note("budget: result: %d of %d groups off%s; %d of %d quantizers kept; on the tuning data %s, loss %s %s %g; %d models evaluated",
			len(off), len(groups), listSuffix(off), cur.quant, all.quant, s.describe(cur.res), s.loss(cur.res), cmp, o.budget, s.ev.Evals)
		if held == nil {
			return nil
		}
		return s.reportHeld(held, heldWhat, off)
	}
	if s.within(all.res) {
		ctx.Note("budget: within budget with every group on")
		return finish(all, nil)
	}

	// 2. Leave-one-out.
	type contribution struct {
		group   string
		without *measurement
	}
	var cs []contribution
	alone := map[string]*measurement{} // all on but the group
	for _, g := range groups {
		w, err := s.measure([]string{g})
		if err != nil {
			return err
		}
		cs = append(cs, contribution{g, w})
		alone[g] = w
		ctx.Note("budget: %s (%d quantizers): %s with it, %s without", g, all.perGroup[g], s.describe(all.res), s.describe(w.res))
	}
	// Most harmful first; on equal harm the group with fewer quantizers, then by name.
	sort.SliceStable(cs, func(i, j int) bool {
		if c := s.compare(cs[i].without.res, cs[j].without.res); c != 0 {
			return c > 0
		}
		if a, b := all.perGroup[cs[i].group], all.perGroup[cs[j].group]; a != b {
			return a < b
		}
		return cs[i].group < cs[j].group
	})

	// 3. Greedy: turn off in order of harm until within budget.
	var off []string
	cur := all
	for _, c := range cs {
		off = append(off, c.group)
		if cur, err = s.measure(off); err != nil {
			return err
		}
		ctx.Note("budget: turned off %s: %s, loss %s", c.group, s.describe(cur.res), s.loss(cur.res))
		if s.within(cur.res) {
			break
		}
	}
	if !s.within(cur.res) {
		ctx.Note("budget: over budget even with every group off (loss %s): the model stays float", s.loss(cur.res))
	}

	// 4. Turn back on what is no longer needed: least harmful first; on equal harm the
	// group with more quantizers, then by name.
	order := append([]string(nil), off...)
	sort.SliceStable(order, func(i, j int) bool {
		a, b := order[i], order[j]
		if c := s.compare(alone[a].res, alone[b].res); c != 0 {
			return c < 0
		}
		if all.perGroup[a] != all.perGroup[b] {
			return all.perGroup[a] > all.perGroup[b]
		}
		return a < b
	})
	for _, g := range order {
		trial := without(off, g)
		t, err := s.measure(trial)
		if err != nil {
			return err
		}
		if s.within(t.res) {
			off, cur = trial, t
			ctx.Note("budget: turned %s back on: %s, loss %s", g, s.describe(t.res), s.loss(t.res))
		}
	}

	// What each group still off costs in the final model.
	sort.Strings(off)
	for _, g := range off {
		with, err := s.measure(without(off, g))
		if err != nil {
			return err
		}
		o.off[g] = fmt.Sprintf("group %s %s%g (%s with it, %s without)", g, budgetMark, o.budget, s.short(with.res), s.short(cur.res))
		ctx.Note("budget: %s off (%d quantizers): %s with it on, %s without", g, all.perGroup[g], s.describe(with.res), s.describe(cur.res))
	}
	return finish(cur, off)
}

// holdOut splits the evaluation data d (read from src) into what the search tunes on
// and what its result is reported on: report-eval=FILE.npz when given (tuning on all of
// d), else the holdout fraction of d's batches. held is nil when nothing is held out,
// and what then says why.
func (o *options) holdOut(m *ir.Model, d *eval.Data, src string, labels bool) (tune, held *eval.Data, what string, err error) {
	if o.reportOn != "" {
		b := o.evalBatch
		if b == 0 && !labels {
			b = o.batch
		}
		if held, err = eval.Load(o.reportOn, m, b, labels); err != nil {
			return nil, nil, "", fmt.Errorf("budget: report-eval: %w", err)
		}
		return d, held, "report-eval=" + o.reportOn, nil
	}
	if o.holdout == 0 {
		return d, nil, "holdout=0", nil
	}
	if tune, held = d.Split(o.holdout); held == nil {
		return d, nil, fmt.Sprintf("%s has %d batch(es), too few to hold out holdout=%g of them; give report-eval=FILE.npz or more data", src, len(d.Batches), o.holdout), nil
	}
	what = fmt.Sprintf("the held-out part of %s (holdout=%g of its batches", src, o.holdout)
	if !labels && src == o.data {
		what += "; calibration saw them"
	}
	return tune, held, what + ")", nil
}

// reportHeld scores the float model, the model with every group on and the result
// (groups off) on the held-out data, which the search never saw, and notes the figures
// as the ones to quote.
func (s *budgetSearch) reportHeld(held *eval.Data, what string, off []string) error {
	ev, err := eval.NewEvaluator(s.float, held, s.opts)
	if err != nil {
		return fmt.Errorf("budget: held-out data: %w", err)
	}
	score := func(off []string) (eval.Result, error) {
		b, _, err := s.build(off)
		if err != nil {
			return eval.Result{}, err
		}
		r, err := ev.Run(b)
		if err != nil {
			return eval.Result{}, fmt.Errorf("budget: held-out data: %w", err)
		}
		return r, nil
	}
	all, err := score(nil)
	if err != nil {
		return err
	}
	cur := all
	if len(off) > 0 {
		if cur, err = score(off); err != nil {
			return err
		}
	}
	h := &budgetSearch{o: s.o, ev: ev, acc: s.acc, allowed: int(math.Floor(s.o.budget*float64(held.Len()) + 1e-9))}
	verdict := "within"
	if !h.within(cur) {
		verdict = "over"
	}
	float := ""
	if s.acc {
		float = fmt.Sprintf("float accuracy %.4f; ", ev.RefRes.Accuracy())
	}
	s.ctx.Count("qdq: budget rows reported on", held.Len())
	s.ctx.Note("budget: reported on %s, %d rows the search did not use: %severy group on %s, loss %s; result (%d groups off) %s, loss %s, %s budget %g",
		what, held.Len(), float, h.describe(all), h.loss(all), len(off), h.describe(cur), h.loss(cur), verdict, s.o.budget)
	return nil
}

// hasRanges: every activation the target quantizes anew has a range.
func hasRanges(t *target, ranges map[string]float32) bool {
	for _, i := range t.acts {
		if x := t.node.Input(i); !qdqcheck.Dequantized(x) && reusablePair(x, t.node.Graph()) == nil && ranges[rangeKey(x)] == 0 {
			return false
		}
	}
	return true
}

func without(list []string, g string) []string {
	var out []string
	for _, x := range list {
		if x != g {
			out = append(out, x)
		}
	}
	return out
}

func listSuffix(gs []string) string {
	if len(gs) == 0 {
		return ""
	}
	return " (" + strings.Join(gs, ", ") + ")"
}

// within says whether a score is within budget.
func (s *budgetSearch) within(r eval.Result) bool {
	if s.acc {
		return s.ev.RefRes.Right-r.Right <= s.allowed
	}
	return 1-r.Cosine <= s.o.budget // false for NaN
}

// loss formats the loss against float.
func (s *budgetSearch) loss(r eval.Result) string {
	if s.acc {
		return fmt.Sprintf("%.4f", float64(s.ev.RefRes.Right-r.Right)/float64(r.N))
	}
	return fmt.Sprintf("%.3g", 1-r.Cosine)
}

func (s *budgetSearch) describe(r eval.Result) string {
	if s.acc {
		return fmt.Sprintf("accuracy %.4f (cos %.5f)", r.Accuracy(), r.Cosine)
	}
	return fmt.Sprintf("cos %.6f (drop %.3g)", r.Cosine, 1-r.Cosine)
}

// short is describe without the tie-breaker, for node marks.
func (s *budgetSearch) short(r eval.Result) string {
	if s.acc {
		return fmt.Sprintf("accuracy %.4f", r.Accuracy())
	}
	return fmt.Sprintf("cos %.6f", r.Cosine)
}

// compare orders two scores: > 0 when a is better (closer to float) than b.
func (s *budgetSearch) compare(a, b eval.Result) int {
	if s.acc && a.Right != b.Right {
		if a.Right > b.Right {
			return 1
		}
		return -1
	}
	ca, cb := a.Cosine, b.Cosine
	if math.IsNaN(ca) {
		ca = math.Inf(-1)
	}
	if math.IsNaN(cb) {
		cb = math.Inf(-1)
	}
	switch {
	case ca > cb:
		return 1
	case ca < cb:
		return -1
	}
	return 0
}

// measure places the quantizers on a copy of the float model with the given groups off
// and scores it; each distinct set is measured once.
func (s *budgetSearch) measure(off []string) (*measurement, error) {
	off = append([]string(nil), off...)
	sort.Strings(off)
	key := strings.Join(off, "\x00")
	if m := s.seen[key]; m != nil {
		return m, nil
	}
	b, clone, err := s.build(off)
	if err != nil {
		return nil, err
	}
	res, err := s.ev.Run(b)
	if err != nil {
		return nil, fmt.Errorf("budget: evaluating with %s off: %w", describeOff(off), err)
	}
	m := &measurement{off: off, res: res}
	m.quant, m.perGroup = countQuantizers(clone, func(g string) string {
		if u, ok := s.unitOf[g]; ok {
			return u
		}
		return g
	})
	s.ctx.Debugf("budget: %s off: %s, %d quantizers", describeOff(off), s.describe(res), m.quant)
	s.seen[key] = m
	return m, nil
}

// build places the quantizers on a copy of the float model with the given groups off
// and returns it, serialized and as IR.
func (s *budgetSearch) build(off []string) ([]byte, *ir.Model, error) {
	clone, err := ir.LoadBytes(s.float, s.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("budget: copying the float model: %w", err)
	}
	o := *s.o
	o.budget, o.cache, o.trt = -1, "", ""
	o.off = map[string]string{}
	for _, g := range off {
		o.off[g] = "group " + g + " off (budget trial)"
	}
	trial := &pass.Pass{
		Name:     s.ctx.Pass.Name,
		Requires: []*pass.Pass{blocks.Pass},
		Run: func(c *pass.Context) error {
			return o.apply(c, c.ResultOf(blocks.Pass).(*blocks.Result))
		},
	}
	p := &pass.Pipeline{Steps: []pass.Step{{Pass: trial}}}
	if _, err := p.Run(context.Background(), clone, nil); err != nil {
		return nil, nil, fmt.Errorf("budget: placing with %s off: %w", describeOff(off), err)
	}
	b, err := ir.Marshal(clone)
	if err != nil {
		return nil, nil, fmt.Errorf("budget: %w", err)
	}
	return b, clone, nil
}

func describeOff(off []string) string {
	if len(off) == 0 {
		return "no group"
	}
	return strings.Join(off, ", ")
}

// countQuantizers counts the DequantizeLinear nodes qdq made in every graph of m (each
// If branch has its own, on the int8 weights of the main graph), in all and per group,
// unit mapping each group to what it is counted under: a node serving several groups of
// one unit counts once for it.
func countQuantizers(m *ir.Model, unit func(string) string) (total int, per map[string]int) {
	per = map[string]int{}
	_ = m.Graph.Walk(func(g *ir.Graph) error {
		for _, n := range g.Nodes() {
			gs, ok := n.Meta(qdqcheck.GroupKey)
			if !ok || n.OpType != "DequantizeLinear" {
				continue
			}
			total++
			seen := map[string]bool{}
			for _, g := range strings.Split(gs, ",") {
				if u := unit(g); !seen[u] {
					seen[u] = true
					per[u]++
				}
			}
		}
		return nil
	})
	return total, per
}
