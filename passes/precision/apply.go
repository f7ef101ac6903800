package precision

import (
	"fmt"
	"sort"
	"strings"

	"github.com/qcc-dev/qcc/ir"
)

// applyStats is what apply did, for -stats.
type applyStats struct {
	changed     bool
	consts      int   // initializers and Constant nodes converted
	constCopies int   // narrow copies of initializers float32 readers also read
	savedBytes  int64 // initializer bytes saved
	retargeted  int   // Casts from integers, Constant and ConstantOfShape nodes retyped
	casts       int   // Casts between float32 and the narrow type in the result
	ioCasts     int   // of which at graph inputs and outputs
}

// root looks through border Casts (an earlier run's, or the model's own) to the value
// they convert: the planning sees the graph without them, and apply keeps the ones the
// decisions still need, so a second run finds the same graph.
func (p *plan) root(v *ir.Value) *ir.Value {
	for d := 0; v != nil && d < 8; d++ {
		n := producer(v)
		if n == nil || !p.border(n) {
			break
		}
		v = n.Input(0)
	}
	return v
}

// use is one reader slot and the type it wants.
type use struct {
	n    *ir.Node
	i    int
	want ir.DataType
}

func (p *plan) apply() (*applyStats, error) {
	st := &applyStats{}
	g, low := p.g, p.o.low
	setType := func(v *ir.Value, dt ir.DataType) {
		if v.Type.DType != dt {
			t := v.Type.Clone()
			t.DType = dt
			v.Type = t
			st.changed = true
		}
	}

	// What every reader wants, and the types the nodes produce.
	wants := map[*ir.Value][]use{}
	var order []*ir.Value // values in first-use order, for deterministic Casts
	for _, n := range g.Nodes() {
		isLow, isKeep := p.low[n], p.keep[n] != ""
		if !isLow && !isKeep {
			continue
		}
		t, _ := lookup(n)
		for i, v := range n.Inputs() {
			if !p.convertible(v) {
				continue
			}
			v = p.root(v)
			w := ir.Float
			switch t.inSlot(i) {
			case slotFree:
				continue
			case slotT:
				if isLow {
					w = low
				}
			}
			if _, seen := wants[v]; !seen {
				order = append(order, v)
			}
			wants[v] = append(wants[v], use{n, i, w})
		}
		for i, v := range n.Outputs() {
			if !p.convertible(v) {
				continue
			}
			if isLow && t.outSlot(i) == slotT {
				setType(v, low)
			} else {
				setType(v, ir.Float)
			}
		}
	}
	wantsOf := func(v *ir.Value) (narrow, wide bool) {
		for _, u := range wants[v] {
			if u.want == low {
				narrow = true
			} else {
				wide = true
			}
		}
		return
	}

	// Producers that can make either type for free follow their readers.
	for _, n := range g.Nodes() {
		if !p.retargetable(n) {
			continue
		}
		out := n.Output(0)
		narrow, wide := wantsOf(out)
		dt := out.Type.DType
		switch {
		case out.IsGraphOutput() && p.o.keepIO:
			dt = p.origOut[out]
		case narrow && !wide:
			dt = low
		case wide:
			dt = ir.Float
		}
		if dt == out.Type.DType {
			continue
		}
		if err := p.retype(n, dt); err != nil {
			return nil, err
		}
		setType(out, dt)
		st.retargeted++
	}

	// Graph inputs take the narrow type unless keep-io.
	if !p.o.keepIO {
		for _, v := range g.Inputs {
			if v.IsConst() || !p.convertible(v) || v.Type.DType != ir.Float {
				continue
			}
			if narrow, _ := wantsOf(v); narrow {
				setType(v, low)
			}
		}
	}

	// Initializers are converted offline: in place when every reader wants the narrow
	// type, else a narrow copy for the narrow readers.
	for _, v := range append([]*ir.Value(nil), g.Initializers...) {
		if !p.convertible(v) || v.Type.DType != ir.Float || v.IsGraphInput() {
			continue
		}
		narrow, wide := wantsOf(v)
		if !narrow {
			continue
		}
		t, err := convertTensor(v.Const, low)
		if err != nil {
			return nil, err
		}
		if !wide {
			v.Const = t
			setType(v, low)
			st.consts++
			st.savedBytes += t.NumElements() * 2
			continue
		}
		name := g.FreshName(v.Name + "_" + p.typeName())
		c, err := g.AddInitializer(name, t)
		if err != nil {
			return nil, err
		}
		t.Name = name
		var rest []use
		for _, u := range wants[v] {
			if u.want == low {
				u.n.SetInput(u.i, c)
			} else {
				rest = append(rest, u)
			}
		}
		wants[v] = rest
		st.constCopies++
		st.changed = true
	}

	// One Cast per value and type where a reader wants the other type; the border Casts
	// already there are reused, and those no reader needs any more are removed.
	casts := map[castKey]*ir.Value{}
	var borders []*ir.Node
	for _, n := range g.Nodes() {
		if p.border(n) {
			borders = append(borders, n)
			if n.Input(0).Type.DType != n.Output(0).Type.DType {
				casts[castKey{n.Input(0), n.Output(0).Type.DType}] = n.Output(0)
			}
		}
	}
	for _, v := range order {
		for _, u := range wants[v] {
			want := v
			if v.Type.DType != u.want {
				want = p.castOf(casts, v, u.want)
			}
			if u.n.Input(u.i) != want {
				u.n.SetInput(u.i, want)
				st.changed = true
			}
		}
	}
	for _, n := range borders {
		if len(n.Output(0).Uses()) == 0 && !n.Output(0).IsGraphOutput() {
			g.RemoveNode(n)
			st.changed = true
		}
	}

	// keep-io: outputs go back to their original types; without it they keep the type
	// they are computed in.
	for i, y := range g.Outputs {
		if c := producer(y); c != nil && p.border(c) {
			x := c.Input(0)
			if p.o.keepIO && x.Type.DType != y.Type.DType || producer(x) == nil || x.IsGraphOutput() {
				continue
			}
			// The border is not needed any more: the output takes its name back.
			name := y.Name
			g.RemoveNode(c)
			g.Outputs[i] = x
			if err := g.RemoveValue(y); err != nil {
				return nil, err
			}
			if err := x.Rename(name); err != nil {
				return nil, err
			}
			st.changed = true
			continue
		}
		orig, ok := p.origOut[y]
		if !p.o.keepIO || !ok || !p.convertible(y) || orig == y.Type.DType || (orig != ir.Float && orig != low) || producer(y) == nil {
			continue
		}
		name := y.Name
		if err := y.Rename(g.FreshName(name + "_" + suffix(y.Type.DType))); err != nil {
			return nil, err
		}
		t := y.Type.Clone()
		t.DType = orig
		out := &ir.Value{Name: name, Type: t}
		if _, err := g.AddNode(&ir.Node{Name: name + "_cast", OpType: "Cast", Attrs: []*ir.Attr{ir.IntAttr("to", int64(orig))}}, []*ir.Value{y}, []*ir.Value{out}); err != nil {
			return nil, err
		}
		g.Outputs[i] = out
		st.changed = true
		p.added = true
	}

	// Marks: why each float32 node stays so; none on the others.
	for _, n := range g.Nodes() {
		old, had := n.Meta(MarkKey)
		if why := p.keep[n]; why != "" {
			if !had || old != "fp32: "+why {
				n.SetMeta(MarkKey, "fp32: "+why)
				st.changed = true
			}
		} else if had {
			kept := n.Metadata[:0]
			for _, kv := range n.Metadata {
				if kv.Key != MarkKey {
					kept = append(kept, kv)
				}
			}
			n.Metadata = kept
			st.changed = true
		}
	}
	for _, n := range g.Nodes() {
		if p.border(n) {
			st.casts++
			if n.Output(0).IsGraphOutput() || n.Input(0).IsGraphInput() {
				st.ioCasts++
			}
		}
	}
	if p.added {
		if err := g.TopoSort(); err != nil {
			return nil, err
		}
	}
	return st, nil
}

type castKey struct {
	v  *ir.Value
	to ir.DataType
}

func suffix(dt ir.DataType) string {
	switch dt {
	case ir.Float16:
		return "fp16"
	case ir.BFloat16:
		return "bf16"
	}
	return "fp32"
}

// castOf returns v converted to type to, adding the Cast once per value and type. A
// value that is itself a widening Cast of a value of type to is read directly: the pair
// would cancel.
func (p *plan) castOf(casts map[castKey]*ir.Value, v *ir.Value, to ir.DataType) *ir.Value {
	if c, ok := casts[castKey{v, to}]; ok {
		return c
	}
	p.added = true
	if n := producer(v); n != nil && n.OpType == "Cast" && n.Domain == "" && isFloat(n.Input(0)) &&
		n.Input(0).Type.DType == to && v.Type.DType == ir.Float {
		return n.Input(0)
	}
	t := v.Type.Clone()
	t.DType = to
	out := &ir.Value{Name: p.g.FreshName(v.Name + "_" + suffix(to)), Type: t}
	p.g.AddNode(&ir.Node{Name: out.Name, OpType: "Cast", Attrs: []*ir.Attr{ir.IntAttr("to", int64(to))}}, []*ir.Value{v}, []*ir.Value{out})
	casts[castKey{v, to}] = out
	return out
}

// retype makes a retargetable producer output type dt.
func (p *plan) retype(n *ir.Node, dt ir.DataType) error {
	switch n.OpType {
	case "Cast":
		n.SetAttr(ir.IntAttr("to", int64(dt)))
	case "Constant":
		t, err := convertTensor(n.Attr("value").Tensor, dt)
		if err != nil {
			return err
		}
		n.SetAttr(ir.TensorAttr("value", t))
	case "ConstantOfShape":
		var t *ir.Tensor
		if a := n.Attr("value"); a != nil && a.Tensor != nil {
			var err error
			if t, err = convertTensor(a.Tensor, dt); err != nil {
				return err
			}
		} else {
			t, _ = convertTensor(ir.FloatTensor([]int64{1}, []float32{0}), dt)
		}
		n.SetAttr(ir.TensorAttr("value", t))
	}
	return nil
}

// convertTensor converts a float tensor (float32, float16 or bfloat16) to dt with
// round-to-nearest-even; values beyond the range become infinities, which the range
// rules keep from the narrow readers.
func convertTensor(t *ir.Tensor, dt ir.DataType) (*ir.Tensor, error) {
	if t.DType == dt {
		return t, nil
	}
	switch dt {
	case ir.Float, ir.Float16, ir.BFloat16:
	default:
		return nil, fmt.Errorf("precision: cannot convert %s to %s", t.Name, dt)
	}
	if !t.DType.IsInt() && t.DType != ir.Bool && t.DType != ir.Float && t.DType != ir.Double &&
		t.DType != ir.Float16 && t.DType != ir.BFloat16 && t.DType != ir.Float8E4M3FN {
		return nil, fmt.Errorf("precision: converting %s: cannot read %s as numbers", t.Name, t.DType)
	}
	// Converted when the bytes are wanted (a save writes them and lets them go), from the
	// source as it is now, read without keeping it.
	src := t.Clone()
	out := ir.NewLazyTensor(dt, t.Dims, func() ([]byte, error) {
		raw, err := src.ReadBytes()
		if err != nil {
			return nil, fmt.Errorf("precision: converting %s: %w", src.Name, err)
		}
		vals, err := ir.NewTensor(src.DType, src.Dims, raw).Float64s()
		if err != nil {
			return nil, fmt.Errorf("precision: converting %s: %w", src.Name, err)
		}
		return convertValues(vals, dt), nil
	})
	out.Name = t.Name
	return out, nil
}

// convertValues encodes vals as dt (FLOAT, FLOAT16 or BFLOAT16), each rounded once.
func convertValues(vals []float64, dt ir.DataType) []byte {
	t, err := ir.FloatsTensor(dt, []int64{int64(len(vals))}, vals)
	if err != nil {
		return nil // callers convert to the float types only
	}
	b, _ := t.Bytes() // in memory: cannot fail
	return b
}

// reasonClass is the part of a reason before the first colon: keep, type, norm, ...
func reasonClass(why string) string {
	c, _, _ := strings.Cut(why, ":")
	return c
}

func (p *plan) report(ctx interface {
	Count(string, int)
	Note(string, ...any)
}, st *applyStats) {
	tn := p.typeName()
	ctx.Count("precision: nodes in "+tn, len(p.low))
	classes := map[string]int{}
	var kept []*ir.Node
	for n, why := range p.keep {
		classes[reasonClass(why)]++
		kept = append(kept, n)
	}
	for c, k := range classes {
		ctx.Count("precision: nodes kept fp32, "+c, k)
	}
	// One note per reason: a decomposed norm's nodes share theirs.
	gemm := 0
	sort.Slice(kept, func(i, j int) bool { return nodeKey(kept[i]) < nodeKey(kept[j]) })
	byReason := map[string][]*ir.Node{}
	var reasons []string
	for _, n := range kept {
		if n.Domain == "" && (n.OpType == "MatMul" || n.OpType == "Gemm") {
			gemm++
		}
		why := p.keep[n]
		if byReason[why] == nil {
			reasons = append(reasons, why)
		}
		byReason[why] = append(byReason[why], n)
	}
	for _, why := range reasons {
		ns := byReason[why]
		if len(ns) == 1 {
			ctx.Note("fp32: %s (%s): %s", nodeKey(ns[0]), opName(ns[0]), why)
			continue
		}
		names := make([]string, len(ns))
		for i, n := range ns {
			names[i] = nodeKey(n)
		}
		ctx.Note("fp32: %d nodes (%s): %s", len(ns), strings.Join(names, ", "), why)
	}
	ctx.Count("precision: MatMul/Gemm left fp32", gemm)
	ctx.Count("precision: constants converted to "+tn, st.consts)
	ctx.Count("precision: constants copied to "+tn+" (also read in fp32)", st.constCopies)
	ctx.Count("precision: constant KiB saved", int(st.savedBytes/1024))
	ctx.Count("precision: producers retyped (Cast from integers, Constant, ConstantOfShape)", st.retargeted)
	ctx.Count("precision: Casts fp32<->"+tn, st.casts)
	ctx.Count("precision: Casts at graph inputs/outputs", st.ioCasts)
}

// nodeKey names a node for reports: its name, else its first output.
func nodeKey(n *ir.Node) string {
	if n.Name != "" {
		return n.Name
	}
	if o := n.Output(0); o != nil {
		return "->" + o.Name
	}
	return n.OpType
}
