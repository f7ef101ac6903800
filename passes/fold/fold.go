// Package fold implements the "fold" pass: constant folding, shape-arithmetic folding
// with partially known shapes, removal of no-op nodes, then dead-code removal and CSE.
package fold

import (
	"fmt"
	"strconv"

	"github.com/qcc-dev/qcc/eval"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/cleanup"
	"github.com/qcc-dev/qcc/passes/repair"
	"github.com/qcc-dev/qcc/passes/shapes"
)

// DefaultMaxSize is the default of the max-size option (elements).
const DefaultMaxSize = 1 << 20

// maxIterations bounds the fixed-point loop; real models settle in 3 or 4 rounds.
const maxIterations = 16

// Pass is the fold pass.
var Pass = &pass.Pass{
	Name: "fold",
	Doc: `fold constants and shape arithmetic, remove no-op nodes, then DCE and CSE
Repeated until nothing changes (at most 16 rounds):
  - Calls of model-local functions (FunctionProto: torch's export_modules_as_functions
    and dynamo exporter wrap modules in them) are replaced by the functions' bodies.
  - Constant nodes become initializers named after their output.
  - A node whose inputs are all constant and whose op the evaluator (package eval) supports
    is computed; its outputs become initializers that keep the output names. Nodes with
    subgraphs, random ops and nodes producing graph outputs are never folded.
  - With shape inference (package shapes, re-run every round): Shape of a value whose
    shape is known (or the known part that start/end selects), Size of a static value,
    and any integer shape-vector computation (Gather, Slice, Concat, Unsqueeze, ... of a
    partially known shape) whose result is fully known become initializers.
  - Identity nodes and inference-mode Dropout (opset >= 12: training_mode absent or a
    false constant; 7..11: always inference; < 7: is_test=1) with an unused mask are
    removed. A graph output keeps its name; an Identity carrying a graph input, an
    initializer or an outer-scope value to a graph output stays (it is the only way to
    give that output its name).
  - No-op nodes exporters leave: Reshape and Expand to the input's own shape, Cast to
    the input's type, Transpose with the identity permutation, x*1, x/1, x-0 and x+(-0)
    (all exact in IEEE arithmetic; x+0 is not, for x = -0, and is kept) when broadcasting
    does not change the shape, and Squeeze(Unsqueeze(x, axes), axes).
  - Dead nodes and unused initializers are removed and duplicates merged (dce, cse).
Before the first round (and again once shapes are inferred) fold applies the repair
pass's rules (see "repair"), because an invalid model (an integer Clip at opset 11) cannot
be shape-inferred or run otherwise: "qcc -passes=fold" alone makes such a model valid.

Results with more than max-size elements are not materialised: folding a constant
Expand, Tile, ConstantOfShape or Range could otherwise turn a few bytes of graph into
megabytes of initializer (an attention mask broadcast to [batch, heads, seq, seq]), making
the model larger and slower to load, not faster. Such nodes are counted and left alone.`,
	Options: []pass.Option{{
		Name:    "max-size",
		Default: strconv.Itoa(DefaultMaxSize),
		Doc:     "largest folded result, in elements",
		Check: func(s string) error {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v < 1 {
				return fmt.Errorf("want a positive number of elements")
			}
			return nil
		},
	}},
	Run: func(ctx *pass.Context) error {
		maxSize, _ := strconv.ParseInt(ctx.Opt("max-size"), 10, 64)
		st, err := Run(ctx.Model, Options{MaxSize: maxSize, Debugf: ctx.Debugf})
		for _, n := range st.Notes {
			ctx.Note("%s", n)
		}
		for k, v := range st.Counts {
			ctx.Count(k, v)
		}
		if st.Changed {
			ctx.Changed()
		}
		return err
	},
}

// Options configures Run.
type Options struct {
	MaxSize int64                            // elements; <= 0 means DefaultMaxSize
	Debugf  func(format string, args ...any) // optional
}

// Stats is what Run did.
type Stats struct {
	Counts  map[string]int
	Notes   []string
	Changed bool
}

// Run folds m in place; see Pass.Doc.
func Run(m *ir.Model, opts Options) (*Stats, error) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	// Calls of model-local functions first: the blocks to fold and recognise are inside.
	inlined, inlineErr := m.InlineFunctions()
	f := &folder{m: m, opset: m.Opset(""), opts: opts, st: &Stats{Counts: map[string]int{}}}
	if inlined > 0 {
		f.count("fold: function calls inlined", inlined)
	}
	if inlineErr != nil {
		// The calls stay, and so do the blocks inside them; the rest still folds.
		f.st.Notes = append(f.st.Notes, "fold: functions left as calls: "+inlineErr.Error())
	}
	if f.opts.Debugf == nil {
		f.opts.Debugf = func(string, ...any) {}
	}
	for _, note := range repair.Apply(m) {
		f.st.Notes = append(f.st.Notes, note)
		f.count("fold: repairs", 1)
	}
	if k := dropTrailingAbsent(m.Graph); k > 0 {
		f.count("fold: trailing absent inputs dropped", k)
	}
	for iter := 0; iter < maxIterations; iter++ {
		f.count("fold: rounds", 1)
		before := f.changes
		res, err := shapes.Infer(m)
		if err != nil && iter == 0 {
			f.st.Notes = append(f.st.Notes, "fold: shape inference incomplete, folding what it can: "+firstLine(err.Error()))
		}
		f.shapes = res
		if iter == 0 {
			// Inference may have typed a Clip input the repair could not type by itself.
			for _, note := range repair.Apply(m) {
				f.st.Notes = append(f.st.Notes, note)
				f.count("fold: repairs", 1)
			}
		}
		m.Graph.Walk(func(g *ir.Graph) error {
			for _, n := range g.NodesCopy() {
				if n.Graph() == g {
					f.node(g, n)
				}
			}
			return nil
		})
		if k := cleanup.RemoveDead(m.Graph); k > 0 {
			f.count("fold: dead nodes and initializers removed", k)
		}
		if k := cleanup.Dedupe(m.Graph); k > 0 {
			f.count("fold: duplicates merged", k)
		}
		if f.changes == before {
			break
		}
	}
	if f.st.Changed {
		if err := m.Graph.TopoSort(); err != nil {
			return f.st, err
		}
	}
	return f.st, nil
}

// dropTrailingAbsent removes the absent optional inputs ("" in the file) that end a
// node's input list: the same node by the ONNX spec, and ONNX Runtime's optimizer (at
// level extended) crashes on a LayerNormalization whose absent bias is spelled "".
func dropTrailingAbsent(g *ir.Graph) int {
	k := 0
	g.Walk(func(g *ir.Graph) error {
		for _, n := range g.Nodes() {
			ins := n.Inputs()
			j := len(ins)
			for j > 0 && ins[j-1] == nil {
				j--
			}
			if j < len(ins) {
				n.SetInputs(append([]*ir.Value(nil), ins[:j]...))
				k++
			}
		}
		return nil
	})
	return k
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}

type folder struct {
	m       *ir.Model
	opset   int64
	opts    Options
	st      *Stats
	shapes  *shapes.Result
	changes int
}

func (f *folder) count(stat string, n int) {
	f.st.Counts[stat] += n
	if stat != "fold: rounds" && stat != "fold: too large to fold" {
		f.changes += n
		f.st.Changed = true
	}
}

func defaultDomain(n *ir.Node) bool { return n.Domain == "" || n.Domain == "ai.onnx" }

// node applies the first rule that fits n.
func (f *folder) node(g *ir.Graph, n *ir.Node) {
	if !defaultDomain(n) || len(n.Subgraphs()) > 0 {
		return
	}
	if n.OpType == "Identity" {
		// Before evaluation: an Identity of an initializer (shared weights) should read
		// the initializer, not a copy of it.
		if f.forward(g, n, n.Input(0)) {
			f.count("fold: Identity removed", 1)
		}
		return
	}
	if f.evalConst(g, n) || f.knownShape(g, n) {
		return
	}
	switch n.OpType {
	case "Dropout":
		f.dropout(g, n)
	case "Einsum":
		f.einsum(g, n)
	case "Softmax":
		f.softmaxLast(g, n)
	case "BatchNormalization":
		f.linearBN(g, n)
	default:
		f.noop(g, n)
	}
}

// producesGraphOutput reports whether an output of n is an output of its graph (or of a
// subgraph, for which the value is an outer-scope value).
func producesGraphOutput(n *ir.Node) bool {
	for _, o := range n.Outputs() {
		if o != nil && o.IsGraphOutput() {
			return true
		}
	}
	return false
}

// materialise replaces n by initializers holding ts (one per output), keeping the output
// values (and so their names and uses).
func (f *folder) materialise(g *ir.Graph, n *ir.Node, ts []*ir.Tensor) {
	outs := append([]*ir.Value(nil), n.Outputs()...)
	g.RemoveNode(n)
	for i, o := range outs {
		if o == nil || o.Graph() != g { // unused: RemoveNode deleted it
			continue
		}
		t := ts[i]
		t.Name = o.Name
		o.Const = t
		dims := make([]ir.Dim, len(t.Dims))
		for k, d := range t.Dims {
			dims[k] = ir.D(d)
		}
		o.Type = ir.TensorOf(t.DType, dims...)
		g.Initializers = append(g.Initializers, o)
	}
}

// evalConst folds a node whose inputs are all constant.
func (f *folder) evalConst(g *ir.Graph, n *ir.Node) bool {
	if !eval.Supported(n.OpType) || producesGraphOutput(n) {
		return false
	}
	ins := make([]*ir.Tensor, len(n.Inputs()))
	for i, v := range n.Inputs() {
		if v == nil {
			continue
		}
		if v.Const == nil {
			return false
		}
		ins[i] = v.Const
	}
	outs, err := eval.EvalLimit(n, ins, f.opset, f.opts.MaxSize)
	if err != nil {
		if isTooLarge(err) {
			f.count("fold: too large to fold", 1)
		}
		f.opts.Debugf("not folding %s: %v", n, err)
		return false
	}
	for i, o := range n.Outputs() {
		if o != nil && (i >= len(outs) || outs[i] == nil) {
			return false
		}
	}
	f.materialise(g, n, outs)
	if n.OpType == "Constant" {
		f.count("fold: constant nodes", 1)
	} else {
		f.count("fold: folded "+n.OpType, 1)
	}
	return true
}

// knownShape folds shape computations whose result shape inference knows.
func (f *folder) knownShape(g *ir.Graph, n *ir.Node) bool {
	if f.shapes == nil || producesGraphOutput(n) || len(n.Outputs()) != 1 || n.Output(0) == nil {
		return false
	}
	o := n.Output(0)
	var t *ir.Tensor
	switch n.OpType {
	case "Shape", "Size":
		x := n.Input(0)
		if x == nil || x.Type == nil || x.Type.Rank() < 0 {
			return false
		}
		dims := x.Type.Shape
		if n.OpType == "Shape" {
			s, e := eval.ShapeRange(n, len(dims), f.opset)
			dims = dims[s:e]
		}
		vals, ok := dims.Ints()
		if !ok {
			break // maybe the contents engine knows more
		}
		if n.OpType == "Shape" {
			t = ir.Int64Tensor([]int64{int64(len(vals))}, vals)
		} else {
			size := int64(1)
			for _, d := range vals {
				size *= d
			}
			t = ir.Int64Tensor(nil, []int64{size})
		}
	case "Constant", "ConstantOfShape", "RandomNormal", "RandomUniform", "RandomNormalLike",
		"RandomUniformLike", "Multinomial", "Bernoulli":
		return false
	}
	if t == nil {
		t = f.shapeTensor(o)
	}
	if t == nil {
		return false
	}
	f.materialise(g, n, []*ir.Tensor{t})
	f.count("fold: folded "+n.OpType+" (known shape)", 1)
	return true
}

// shapeTensor returns the contents of an integer vector or scalar when shape inference
// knows all of them.
func (f *folder) shapeTensor(o *ir.Value) *ir.Tensor {
	typ := o.Type
	if typ == nil || typ.Kind != ir.TensorType || typ.Rank() < 0 || typ.Rank() > 1 {
		return nil
	}
	if typ.DType != ir.Int64 && typ.DType != ir.Int32 {
		return nil
	}
	s, ok := f.shapes.ShapeValue(o)
	if !ok {
		return nil
	}
	vals, ok := s.Ints()
	if !ok {
		return nil
	}
	var dims []int64
	if typ.Rank() == 1 {
		if d := typ.Shape[0]; d.Known && d.Value != int64(len(vals)) {
			return nil // inconsistent: refuse rather than guess
		}
		dims = []int64{int64(len(vals))}
	} else if len(vals) != 1 {
		return nil
	}
	t := ir.Int64Tensor(dims, vals)
	if typ.DType == ir.Int32 {
		c, err := eval.Cast(t, ir.Int32)
		if err != nil {
			return nil
		}
		t = c
	}
	return t
}

func isTooLarge(err error) bool {
	for e := err; e != nil; {
		if e == eval.ErrTooLarge {
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}

// forward replaces n's first output by in and removes n. It refuses (false) when the
// output is a graph output that in cannot take the name of.
func (f *folder) forward(g *ir.Graph, n *ir.Node, in *ir.Value) bool {
	out := n.Output(0)
	if out == nil || in == nil || in == out {
		return false
	}
	for i, o := range n.Outputs() {
		if i > 0 && o != nil && (len(o.Uses()) > 0 || o.IsGraphOutput()) {
			return false
		}
	}
	if out.IsGraphOutput() {
		// ReplaceAllUsesWith would rename in to the output name, which is possible only
		// for an ordinary value of this graph; otherwise it adds an Identity (a loop).
		if in.Graph() != g || in.IsGraphInput() || in.IsGraphOutput() || in.IsConst() {
			return false
		}
	}
	out.ReplaceAllUsesWith(in)
	g.RemoveNode(n)
	return true
}

func (f *folder) dropout(g *ir.Graph, n *ir.Node) {
	switch {
	case f.opset >= 12:
		if tm := n.Input(2); tm != nil {
			if tm.Const == nil {
				return
			}
			v, err := tm.Const.Int64s()
			if err != nil || len(v) != 1 || v[0] != 0 {
				return
			}
		}
	case f.opset < 7:
		if n.AttrInt("is_test", 0) != 1 {
			return
		}
	}
	if f.forward(g, n, n.Input(0)) {
		f.count("fold: Dropout removed", 1)
	}
}

// noop removes nodes that compute their input unchanged.
func (f *folder) noop(g *ir.Graph, n *ir.Node) {
	x, o := n.Input(0), n.Output(0)
	if x == nil || o == nil {
		return
	}
	ok := false
	switch n.OpType {
	case "Reshape", "Expand":
		ok = sameShape(x.Type, o.Type)
	case "Cast":
		dt := repair.ElemType(x)
		ok = dt != ir.Undefined && dt == ir.DataType(n.AttrInt("to", 0))
	case "Transpose":
		perm, has := n.AttrInts("perm")
		if !has {
			ok = x.Type.Rank() == 0 || x.Type.Rank() == 1
		} else {
			r := x.Type.Rank()
			ok = r < 0 || r == len(perm)
			for i, p := range perm {
				if p != int64(i) {
					ok = false
				}
			}
		}
	case "Mul", "Div", "Sub", "Add":
		f.neutral(g, n)
		return
	case "Squeeze":
		f.squeezePair(g, n)
		return
	}
	if ok && f.forward(g, n, x) {
		f.count("fold: no-op "+n.OpType+" removed", 1)
	}
}

// sameShape reports whether two types are known to have the same shape: equal ranks and
// each dim provably equal (ir.SameDim).
func sameShape(a, b *ir.Type) bool {
	if a == nil || b == nil || a.Rank() < 0 || a.Rank() != b.Rank() {
		return false
	}
	for i := range a.Shape {
		if !ir.SameDim(a.Shape[i], b.Shape[i]) {
			return false
		}
	}
	return true
}

// neutral removes x*1, 1*x, x/1, x-0, x+(-0) and (-0)+x when the constant does not
// broadcast x to a larger shape.
func (f *folder) neutral(g *ir.Graph, n *ir.Node) {
	a, b := n.Input(0), n.Input(1)
	if a == nil || b == nil {
		return
	}
	try := func(x, c *ir.Value, want func(v float64, neg bool) bool) bool {
		if c.Const == nil || x.Const != nil {
			return false
		}
		r := x.Type.Rank()
		if r < 0 || len(c.Const.Dims) > r {
			return false
		}
		for _, d := range c.Const.Dims {
			if d != 1 {
				return false
			}
		}
		dt := c.Const.DType
		if dt != ir.Float && dt != ir.Double && dt != ir.Float16 && !dt.IsInt() {
			return false
		}
		if xt := repair.ElemType(x); xt != dt {
			return false
		}
		vals, err := c.Const.Float64s()
		if err != nil || len(vals) != 1 {
			return false
		}
		neg := vals[0] == 0 && 1/vals[0] < 0
		if dt.IsInt() {
			neg = vals[0] == 0 // integer zero has no sign: x+0 is exact
		}
		if !want(vals[0], neg) {
			return false
		}
		if f.forward(g, n, x) {
			f.count("fold: no-op "+n.OpType+" removed", 1)
			return true
		}
		return false
	}
	one := func(v float64, _ bool) bool { return v == 1 }
	zero := func(v float64, _ bool) bool { return v == 0 }
	negZero := func(v float64, neg bool) bool { return v == 0 && neg }
	switch n.OpType {
	case "Mul":
		_ = try(a, b, one) || try(b, a, one)
	case "Div":
		try(a, b, one)
	case "Sub":
		try(a, b, zero)
	case "Add":
		_ = try(a, b, negZero) || try(b, a, negZero)
	}
}

// squeezePair removes Squeeze(Unsqueeze(x, axes), axes).
func (f *folder) squeezePair(g *ir.Graph, n *ir.Node) {
	u, _ := n.Input(0).Producer()
	if u == nil || u.OpType != "Unsqueeze" || !defaultDomain(u) || u.Graph() != g {
		return
	}
	x := u.Input(0)
	ua, ok1 := f.axes(u)
	sa, ok2 := f.axes(n)
	if x == nil || !ok1 || !ok2 || len(ua) != len(sa) || len(ua) == 0 {
		return
	}
	// Both axis lists refer to the rank of the Unsqueeze output.
	r := x.Type.Rank()
	norm := func(axes []int64) map[int64]bool {
		m := map[int64]bool{}
		for _, a := range axes {
			if a < 0 {
				if r < 0 {
					return nil
				}
				a += int64(r + len(ua))
			}
			m[a] = true
		}
		return m
	}
	um, sm := norm(ua), norm(sa)
	if um == nil || sm == nil || len(um) != len(sm) {
		return
	}
	for a := range um {
		if !sm[a] {
			return
		}
	}
	if f.forward(g, n, x) {
		f.count("fold: Unsqueeze/Squeeze pair removed", 1)
	}
}

// axes reads the axes of an Unsqueeze or Squeeze: an attribute before opset 13, a
// constant input from then on.
func (f *folder) axes(n *ir.Node) ([]int64, bool) {
	if f.opset < 13 {
		return n.AttrInts("axes")
	}
	a := n.Input(1)
	if a == nil || a.Const == nil {
		return nil, false
	}
	v, err := a.Const.Int64s()
	return v, err == nil
}
