package qdq

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/blocks"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/quant/calib"
)

// ranges returns the amax of every tensor in need that can be quantized, by rangeKey (a
// tensor whose range came out zero is absent): ranges=const:V, else the JSON cache when it
// covers them all, else calibration through ONNX Runtime on the current model (then
// written to the cache). trt-cache=FILE also gets them in TensorRT's format.
func (o *options) ranges(ctx *pass.Context, m *ir.Model, vals []*ir.Value) (map[string]float32, error) {
	out := map[string]float32{}
	if len(vals) == 0 {
		return out, nil
	}
	if o.given != nil {
		for _, v := range vals {
			if a, ok := o.given[rangeKey(v)]; ok {
				out[rangeKey(v)] = a
			}
		}
		return out, nil
	}
	// A tensor whose values all come from one constant (DeBERTa's relative position
	// embeddings, tiled per batch at run time) takes the constant's range: nothing to
	// calibrate.
	var rest []*ir.Value
	fromConst := 0
	for _, v := range vals {
		if t := constSource(v); t != nil {
			if a := constAmax(t); a > 0 {
				out[rangeKey(v)] = a
				fromConst++
				continue
			}
		}
		rest = append(rest, v)
	}
	if fromConst > 0 {
		ctx.Count("qdq: ranges read from constants", fromConst)
	}
	vals = rest
	if len(vals) == 0 {
		ctx.Count("qdq: activation ranges", len(out))
		return out, nil
	}
	need := make([]string, len(vals))
	for i, v := range vals {
		need[i] = rangeKey(v)
	}
	source := ""
	var zero []string
	switch {
	case o.constRange > 0:
		for _, n := range need {
			out[n] = o.constRange
		}
		source = fmt.Sprintf("ranges=const:%g", o.constRange)
	default:
		var cached map[string]float32
		var meta calib.Meta
		if o.cache != "" {
			if _, err := os.Stat(o.cache); err == nil {
				c, mt, err := calib.ReadJSON(o.cache)
				if err != nil {
					return nil, fmt.Errorf("calibration cache: %w", err)
				}
				cached, meta = c, mt
			}
		}
		missing := 0
		for _, n := range need {
			if _, ok := cached[n]; !ok {
				missing++
			}
		}
		if cached != nil && missing == 0 {
			for _, n := range need {
				out[n] = cached[n]
			}
			source = fmt.Sprintf("cache %s (%s, %d batches of %s)", o.cache, meta.Method, meta.Batches, meta.Data)
			break
		}
		stats, err := o.calibrate(ctx, m, vals)
		if err != nil {
			return nil, err
		}
		ctx.Record(stats) // the histograms, for -report
		got, err := stats.Ranges(o.method)
		var zr *calib.ZeroRangeError
		if errors.As(err, &zr) {
			zero = zr.Tensors
		} else if err != nil {
			return nil, err
		}
		for n, a := range got {
			out[n] = a
		}
		source = fmt.Sprintf("calibrated %s on %s (%d batches)", o.method, o.data, stats.Batches)
		if stats.Passes > 1 {
			source += fmt.Sprintf(" in %d ORT passes (calib-mem)", stats.Passes)
		}
		if o.cache != "" {
			merged := map[string]float32{}
			for n, a := range cached {
				merged[n] = a
			}
			for n, a := range got {
				merged[n] = a
			}
			meta := calib.Meta{Model: m.Graph.Name, Method: o.method.String(), Batches: stats.Batches, Data: o.data}
			if err := calib.WriteJSON(o.cache, merged, meta); err != nil {
				return nil, err
			}
			if cached != nil {
				source += fmt.Sprintf("; cache %s lacked %d of %d tensors, rewritten", o.cache, missing, len(need))
			} else {
				source += "; written to cache " + o.cache
			}
		}
	}
	if o.trt != "" && len(out) > 0 {
		if err := calib.WriteTRT(o.trt, out, ""); err != nil {
			return nil, err
		}
	}
	ctx.Note("%s", rangeSummary(source, out, zero))
	ctx.Count("qdq: activation ranges", len(out))
	ctx.Count("qdq: zero-range tensors", len(zero))
	return out, nil
}

// calibrate collects statistics of the values through ONNX Runtime on the current
// model, by rangeKey. When a precision step on the same data and batch follows in the
// pipeline, the same ORT passes also collect every float32 activation, handed on to it
// (calib.Shared) so that it does not run the data again. Values inside If branches are
// collected on a copy of the model that passes them out (see calibrateBodies).
func (o *options) calibrate(ctx *pass.Context, m *ir.Model, vals []*ir.Value) (*calib.Stats, error) {
	if inBody(vals) {
		return o.calibrateBodies(ctx, m, vals)
	}
	tensors := make([]string, len(vals))
	for i, v := range vals {
		tensors[i] = v.Name
	}
	all, later := tensors, o.precisionAhead(ctx)
	if later != "" {
		all = union(tensors, calib.FloatActivations(m))
	}
	stats, err := calib.CollectModel(m, all, o.data, o.batch, calib.Options{MaxBytes: o.calibMem})
	if errors.Is(err, calib.ErrNoRuntime) {
		return nil, fmt.Errorf("%v; or give ranges=const:V, or a cache=FILE.json that covers the %d tensors", err, len(tensors))
	}
	if err != nil || later == "" {
		return stats, err
	}
	sh := calib.NewShared(m, stats, o.data, o.batch)
	noteNorms(sh, ctx.ResultOf(blocks.Pass).(*blocks.Result))
	ctx.Share(calib.SharedKey{Data: o.data, Batch: o.batch}, sh)
	ctx.Note("ranges: the same ORT run measured %d float32 activations of the float model for the later %s", len(stats.Tensors), later)
	return stats.Subset(tensors), nil
}

// calibrateBodies collects the values, some inside If branches, on a copy of m that
// passes them out through the Ifs (calib.ExposeBodies). A boolean input that is an If's
// condition decides which branch runs, so every batch runs once with each of its values
// (calib.EachSelector): random data would reach one branch by chance, and real data
// often holds one value. A later precision step calibrates on its own.
func (o *options) calibrateBodies(ctx *pass.Context, m *ir.Model, vals []*ir.Value) (*calib.Stats, error) {
	cm, names, err := calib.ExposeBodies(m, vals)
	if err != nil {
		return nil, err
	}
	fetch := make([]string, len(vals))
	for i, v := range vals {
		fetch[i] = names[v]
	}
	sel := calib.Selectors(cm)
	stats, err := calib.CollectModel(cm, fetch, o.data, o.batch, calib.Options{MaxBytes: o.calibMem, EachValue: sel})
	if errors.Is(err, calib.ErrNoRuntime) {
		return nil, fmt.Errorf("%v; or give ranges=const:V, or a cache=FILE.json that covers the %d tensors", err, len(vals))
	}
	if err != nil {
		return nil, err
	}
	byKey := make(map[string]*calib.Histogram, len(vals))
	for i, v := range vals {
		byKey[rangeKey(v)] = stats.Tensors[fetch[i]]
	}
	stats.Tensors = byKey
	if len(sel) > 0 {
		ctx.Note("ranges: values inside If branches calibrated with every batch run once per value of %s", strings.Join(sel, ", "))
	}
	return stats, nil
}

// inBody reports whether a value is defined inside a subgraph.
func inBody(vals []*ir.Value) bool {
	for _, v := range vals {
		if g := v.Graph(); g != nil && g.Parent != nil {
			return true
		}
	}
	return false
}

// rangeKey names a value's range (in the ranges, the cache and the statistics): its name
// in the main graph; inside an If branch, the name after the path of If outputs and
// branch attributes that leads to it ("out.then_branch/name"), since two branches may
// use the same names.
func rangeKey(v *ir.Value) string {
	key := v.Name
	for g := v.Graph(); g != nil && g.Parent != nil && g.Owner != nil; g = g.Parent {
		key = scopeOf(g) + "/" + key
	}
	return key
}

// scopeOf names a body by its owner's first output (unique in the owner's graph) and the
// attribute that holds it.
func scopeOf(g *ir.Graph) string {
	own := g.Owner
	where := own.OpType
	if o := own.Output(0); o != nil {
		where = o.Name
	}
	for _, a := range own.Attrs {
		if a.Graph == g {
			return where + "." + a.Name
		}
		for i, b := range a.Graphs {
			if b == g {
				return fmt.Sprintf("%s.%s[%d]", where, a.Name, i)
			}
		}
	}
	return where
}

// noteNorms records each norm block's output by the value it normalises, so that the
// operator a later fuse makes of it finds the block's statistics. A value two blocks
// normalise is left out: which output would be meant is not known.
func noteNorms(sh *calib.Shared, br *blocks.Result) {
	seen := map[*ir.Value]int{}
	for _, b := range br.Blocks {
		switch b.Kind {
		case transformer.LayerNorm, transformer.RMSNorm:
		default:
			continue
		}
		in, out := b.Role(transformer.RoleInput), b.Role(transformer.RoleOutput)
		if in == nil || out == nil {
			continue
		}
		seen[in]++
		if h := sh.ByValue[out]; h != nil && seen[in] == 1 {
			sh.ByNormInput[in] = h
		} else {
			delete(sh.ByNormInput, in)
		}
	}
}

// precisionAhead names the later precision step that calibrates on the same data and
// batch ("" when none).
func (o *options) precisionAhead(ctx *pass.Context) string {
	for _, s := range ctx.Ahead() {
		if s.Pass.Name != "precision" {
			continue
		}
		b, _ := strconv.Atoi(s.Opt("batch"))
		if s.Opt("data") == o.data && b == o.batch {
			return s.String()
		}
	}
	return ""
}

// union is a followed by the names of b not in a.
func union(a, b []string) []string {
	seen := map[string]bool{}
	out := append([]string(nil), a...)
	for _, n := range a {
		seen[n] = true
	}
	for _, n := range b {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// rangeSummary describes the ranges: how many, min/median/max amax, zero ranges.
func rangeSummary(source string, r map[string]float32, zero []string) string {
	type kv struct {
		name string
		amax float32
	}
	var all []kv
	for n, a := range r {
		all = append(all, kv{n, a})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].amax != all[j].amax {
			return all[i].amax < all[j].amax
		}
		return all[i].name < all[j].name
	})
	s := fmt.Sprintf("ranges: %s: %d tensors", source, len(all))
	if len(all) > 0 {
		lo, hi := all[0], all[len(all)-1]
		med := all[len(all)/2].amax
		if len(all)%2 == 0 {
			med = (all[len(all)/2-1].amax + all[len(all)/2].amax) / 2
		}
		s += fmt.Sprintf(", amax min %.4g (%s) median %.4g max %.4g (%s)", lo.amax, lo.name, med, hi.amax, hi.name)
	}
	s += fmt.Sprintf("; zero range: %d", len(zero))
	if len(zero) > 0 {
		s += " (" + strings.Join(zero, ", ") + ": left float)"
	}
	return s
}

// constSource returns the constant every value of v comes from, through ops that only
// move or repeat values (Tile and Expand by run-time counts included); nil when v is
// computed from anything else.
func constSource(v *ir.Value) *ir.Tensor {
	for d := 0; v != nil && d < 8; d++ {
		if t := constOf(v); t != nil {
			if t.DType != ir.Float {
				return nil
			}
			return t
		}
		p, _ := v.Producer()
		if p == nil || p.Domain != "" {
			return nil
		}
		switch p.OpType {
		case "Tile", "Expand", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten":
			v = p.Input(0)
		default:
			return nil
		}
	}
	return nil
}

// constAmax is max |t|.
func constAmax(t *ir.Tensor) float32 {
	vals, err := t.Float32s()
	if err != nil {
		return 0
	}
	a := float32(0)
	for _, x := range vals {
		a = max(a, x, -x)
	}
	return a
}
