package fuzz

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/passes/blocks"
	"github.com/qcc-dev/qcc/patterns/transformer"
	shapes "github.com/qcc-dev/qcc/shape"
)

// Case is one generated (or stored) model with what the generator knows of it.
type Case struct {
	Model *ir.Model
	// Class is "dag" for a random DAG, else the block class (Classes).
	Class    string
	NearMiss bool
	// Witnesses name the nodes that block recognition must cover (keep-math classes) or
	// must not (Forbid: the near-miss's mutated node).
	Witnesses []Witness
}

// Witness is a node and the block kinds that concern it.
type Witness struct {
	Node   string
	Kinds  []transformer.Kind
	Forbid bool // a block of these kinds must not cover Node
}

// Gen returns the case for seed: a random DAG or a transformer block, half each.
func Gen(seed int64) *Case {
	if seed%2 == 0 {
		return GenDAG(seed)
	}
	return GenBlock(seed, "")
}

// Pipelines are the pipelines every case goes through.
var Pipelines = []string{
	"fold",
	"fold,fuse<target=ort>",
	"fold,fuse<target=onnx;opset=23>",
	"fold,qdq<ranges=const:4>,fuse",
}

// Failure kinds.
const (
	Invalid    = "invalid"     // ORT refuses the generated model or its run: a generator bug
	Panic      = "panic"       // a pass panicked
	PassError  = "error"       // a pass returned an error on a valid model
	VerifyFail = "verify"      // the output does not verify
	Mismatch   = "mismatch"    // outputs differ (or ORT refuses the output)
	NotIdem    = "idempotence" // the last pass changed its own output
	RoundTrip  = "roundtrip"   // load/save or text print/parse/print is not stable
	NearFused  = "near-miss"   // a near-miss was recognised as the block it imitates
	// Unstable: outputs differ, but so do the reference's own when its constants and
	// inputs move by PerturbTol (relative): the output is not determined to the tolerance
	// by float32 arithmetic (a LayerNorm of nearly equal values, a softmax of huge
	// scores), so any rounding difference — a constant folded in float64, ORT's
	// approximate tanh — shows. Counted apart from mismatches.
	Unstable = "unstable"
)

// QDQStep is the step of the qdq pipeline's quantizers (ranges=const:4 over int8): a
// float rewrite before a QuantizeLinear (a fused attention, a fused GELU) may move a value
// across a rounding boundary, which changes it by one step; that is how Q/DQ models work,
// not a fault of the rewrite.
const QDQStep = 4.0 / 127

// withinStep reports whether every output of got is within QDQStep·m of want's, m the
// largest magnitude of want's output.
func withinStep(want, got map[string]*ndarray.Array) bool {
	for name, w := range want {
		g := got[name]
		if g == nil || !w.DType.IsFloat() || w.DType != g.DType || !ndarray.SameShape(w.Shape, g.Shape) {
			return false
		}
		wv, gv := w.Float64s(), g.Float64s()
		scale := 0.0
		for _, x := range wv {
			if !math.IsNaN(x) && !math.IsInf(x, 0) {
				scale = math.Max(scale, math.Abs(x))
			}
		}
		for i := range wv {
			if math.IsNaN(wv[i]) != math.IsNaN(gv[i]) || math.Abs(wv[i]-gv[i]) > QDQStep*scale {
				return false
			}
		}
	}
	return true
}

// PerturbTol is the relative perturbation of the stability probe, about ten float32 ulps.
const PerturbTol = 1e-6

// Failure is one property the case broke.
type Failure struct {
	Kind     string
	Pipeline string
	Detail   string
}

func (f Failure) String() string {
	if f.Pipeline == "" {
		return f.Kind + ": " + f.Detail
	}
	return fmt.Sprintf("%s in %s: %s", f.Kind, f.Pipeline, f.Detail)
}

// Result is what Check found.
type Result struct {
	Failures []Failure
	// Matched: every witness of a keep-math class was recognised (for a near-miss: the
	// forbidden block was, which is also a failure).
	Matched bool
}

// Has reports whether r holds a failure of kind in pipeline.
func (r *Result) Has(kind, pipeline string) bool {
	for _, f := range r.Failures {
		if f.Kind == kind && f.Pipeline == pipeline {
			return true
		}
	}
	return false
}

// Tolerance of the output comparison: |a - b| ≤ RelTol·max(|a|, |b|) + RelTol·AbsScale·m
// + AbsTol, m the largest magnitude of the reference output (sums that cancel lose digits
// relative to their terms, not to their result; AbsTol covers results that are all
// rounding noise, such as 1e-7 left of a cancellation).
const (
	RelTol   = 1e-4
	AbsScale = 0.1
	AbsTol   = 1e-6
)

// Check runs every pipeline on c and checks the properties; it never panics for a pass's
// panic. ORT must be initialised.
func Check(c *Case, seed int64) *Result {
	res := &Result{}
	fail := func(kind, pipeline, format string, args ...any) {
		res.Failures = append(res.Failures, Failure{kind, pipeline, fmt.Sprintf(format, args...)})
	}
	orig, err := ir.Marshal(c.Model)
	if err != nil {
		fail(Invalid, "", "marshal: %v", err)
		return res
	}
	if d := roundTrip(orig); d != "" {
		fail(RoundTrip, "", "%s", d)
	}
	inputs, err := Inputs(c.Model, seed)
	if err != nil {
		fail(Invalid, "", "%v", err)
		return res
	}
	// ORT's outputs by model bytes: a pipeline that leaves the model as another left it
	// (fuse finding nothing to fuse) computes the same outputs, so it is not run again.
	runs := map[string][]map[string]*ndarray.Array{}
	run := func(b []byte) ([]map[string]*ndarray.Array, error) {
		if out, ok := runs[string(b)]; ok {
			return out, nil
		}
		out, err := runAll(b, inputs)
		if err == nil {
			runs[string(b)] = out
		}
		return out, err
	}
	want, err := run(orig)
	if err != nil {
		fail(Invalid, "", "ORT on the generated model: %v", err)
		return res
	}
	for _, spec := range Pipelines {
		ref, refBytes := want, orig
		var m *ir.Model
		var f *Failure
		if strings.Contains(spec, "qdq") {
			// Q/DQ changes the numbers: compare fuse against the Q/DQ model, the one
			// the pipeline had before its last pass (taken on the way: the prefix alone
			// would compute the same model again).
			prefix := spec[:lastComma(spec)]
			m, refBytes, f = runPipelineSnapshot(orig, spec)
			if f != nil {
				res.Failures = append(res.Failures, *f)
				continue
			}
			if refBytes == nil {
				fail(PassError, spec, "marshal after %s failed", prefix)
				continue
			}
			if ref, err = run(refBytes); err != nil {
				fail(Mismatch, prefix, "ORT refuses the output: %v", err)
				continue
			}
		} else if m, f = runPipeline(orig, spec); f != nil {
			res.Failures = append(res.Failures, *f)
			continue
		}
		if err := m.Verify(); err != nil {
			fail(VerifyFail, spec, "%v", err)
			continue
		}
		out, err := ir.Marshal(m)
		if err != nil {
			fail(PassError, spec, "marshal: %v", err)
			continue
		}
		if d := roundTrip(out); d != "" {
			fail(RoundTrip, spec, "%s", d)
		}
		if d := idempotent(m, spec); d != nil {
			d.Pipeline = spec
			res.Failures = append(res.Failures, *d)
		}
		got, err := run(out)
		if err != nil {
			fail(Mismatch, spec, "ORT refuses the output: %v", err)
			continue
		}
		for i := range ref {
			if d := compare(ref[i], got[i]); d != "" {
				if strings.Contains(spec, "qdq") && withinStep(ref[i], got[i]) {
					fail(Unstable, spec, "inputs #%d: %s; but within one quantization step (%.3g) of the output's scale: a rounding flip at a quantizer", i, d, QDQStep)
				} else if why := unstable(refBytes, inputs, ref, seed); why != "" {
					fail(Unstable, spec, "inputs #%d: %s; but %s", i, d, why)
				} else {
					fail(Mismatch, spec, "inputs #%d: %s", i, d)
				}
				break
			}
		}
	}
	if len(c.Witnesses) > 0 {
		checkWitnesses(c, orig, res, fail)
	}
	return res
}

// checkWitnesses recognises the blocks of the folded model and checks the witnesses.
func checkWitnesses(c *Case, orig []byte, res *Result, fail func(kind, pipeline, format string, args ...any)) {
	bs, f := recognise(orig)
	if f != nil {
		res.Failures = append(res.Failures, *f)
		return
	}
	covers := func(w Witness) *transformer.Block {
		for _, b := range bs {
			for _, k := range w.Kinds {
				if b.Kind != k {
					continue
				}
				for _, n := range b.Nodes {
					if n.Name == w.Node {
						return b
					}
				}
			}
		}
		return nil
	}
	res.Matched = true
	for _, w := range c.Witnesses {
		b := covers(w)
		switch {
		case w.Forbid && b != nil:
			fail(NearFused, "fold,blocks", "class %s: node %s is in block %s (%s)", c.Class, w.Node, b.ID, b.Variant)
		case w.Forbid:
			res.Matched = false
		case b == nil && !c.NearMiss:
			res.Matched = false
		}
	}
}

// recognise runs fold and the blocks analysis on a copy of the model.
func recognise(model []byte) ([]*transformer.Block, *Failure) {
	var got *blocks.Result
	keep := &pass.Pass{
		Name:     "fuzz-blocks",
		Doc:      "keep the blocks analysis' result",
		Requires: []*pass.Pass{blocks.Pass},
		Analysis: true,
		Run: func(ctx *pass.Context) error {
			got, _ = ctx.ResultOf(blocks.Pass).(*blocks.Result)
			return nil
		},
	}
	reg := append(append([]*pass.Pass(nil), passes.All...), keep)
	if _, f := runPipelineWith(model, "fold,fuzz-blocks", reg); f != nil {
		f.Pipeline = "fold,blocks"
		return nil, f
	}
	if got == nil {
		return nil, &Failure{PassError, "fold,blocks", "no blocks result"}
	}
	return got.Blocks, nil
}

func runPipeline(model []byte, spec string) (*ir.Model, *Failure) {
	return runPipelineWith(model, spec, passes.All)
}

// runPipelineSnapshot runs spec and also returns the model serialized before its last
// pass (nil if that failed), taken by an analysis inserted there: analyses change
// neither the model nor the cached results of the passes around them, so the pipeline
// computes what it computes alone.
func runPipelineSnapshot(model []byte, spec string) (*ir.Model, []byte, *Failure) {
	var snap []byte
	p := &pass.Pass{
		Name:     "fuzz-snapshot",
		Doc:      "serialize the model as the pipeline has it",
		Analysis: true,
		Run: func(ctx *pass.Context) error {
			snap, _ = ir.Marshal(ctx.Model)
			return nil
		},
	}
	i := lastComma(spec)
	reg := append(append([]*pass.Pass(nil), passes.All...), p)
	m, f := runPipelineWith(model, spec[:i]+","+p.Name+spec[i:], reg)
	if f != nil {
		f.Pipeline = spec
		return nil, nil, f
	}
	return m, snap, nil
}

// runPipelineWith loads a copy of the model and runs the pipeline on it, turning a panic
// into a Failure.
func runPipelineWith(model []byte, spec string, reg []*pass.Pass) (m *ir.Model, fl *Failure) {
	m, err := ir.LoadBytes(model, "")
	if err != nil {
		return nil, &Failure{Invalid, spec, fmt.Sprintf("load: %v", err)}
	}
	if f := runOn(m, spec, reg); f != nil {
		return nil, f
	}
	return m, nil
}

func runOn(m *ir.Model, spec string, reg []*pass.Pass) (fl *Failure) {
	p, err := pass.Parse(spec, reg)
	if err != nil {
		return &Failure{PassError, spec, fmt.Sprintf("parse: %v", err)}
	}
	defer func() {
		if r := recover(); r != nil {
			fl = &Failure{Panic, spec, fmt.Sprintf("%v\n%s", r, trimStack(debug.Stack()))}
		}
	}()
	if _, err := p.Run(context.Background(), m, nil); err != nil {
		return &Failure{PassError, spec, err.Error()}
	}
	return nil
}

// trimStack keeps the frames of the panic (after the runtime's own) for the report.
func trimStack(s []byte) string {
	lines := strings.Split(string(s), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic(") && i+2 < len(lines) {
			lines = lines[i+2:]
			break
		}
	}
	if len(lines) > 16 {
		lines = lines[:16]
	}
	return strings.Join(lines, "\n")
}

// idempotent runs the pipeline's last pass again on m and reports a change.
func idempotent(m *ir.Model, spec string) *Failure {
	last := spec
	if i := lastComma(spec); i >= 0 {
		last = spec[i+1:]
	}
	before := text.Sprint(m, text.Options{MaxElems: -1})
	if f := runOn(m, last, passes.All); f != nil {
		f.Detail = "running " + last + " again: " + f.Detail
		return f
	}
	after := text.Sprint(m, text.Options{MaxElems: -1})
	if before != after {
		return &Failure{NotIdem, spec, fmt.Sprintf("running %s again changes the model: %s", last, firstDiff(before, after))}
	}
	return nil
}

// lastComma finds the comma before the pipeline's last step (commas inside <...> are
// option separators only with ';', so any comma separates steps).
func lastComma(spec string) int {
	depth := 0
	for i := len(spec) - 1; i >= 0; i-- {
		switch spec[i] {
		case '>':
			depth++
		case '<':
			depth--
		case ',':
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

// roundTrip checks load → save and text print → parse → print.
func roundTrip(b []byte) string {
	m, err := ir.LoadBytes(b, "")
	if err != nil {
		return fmt.Sprintf("load: %v", err)
	}
	b2, err := ir.Marshal(m)
	if err != nil {
		return fmt.Sprintf("save: %v", err)
	}
	if !bytes.Equal(b, b2) {
		return "load → save changes the bytes"
	}
	t1 := text.Sprint(m, text.Options{MaxElems: -1})
	m2, err := text.Parse(t1)
	if err != nil {
		return fmt.Sprintf("text does not parse back: %v", err)
	}
	if t2 := text.Sprint(m2, text.Options{MaxElems: -1}); t1 != t2 {
		return "text print → parse → print: " + firstDiff(t1, t2)
	}
	return ""
}

func firstDiff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(la) || i < len(lb); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			return fmt.Sprintf("line %d: %q ≠ %q", i+1, x, y)
		}
	}
	return "same lines"
}

// Sizes are the two bindings of symbolic dims the oracle runs: a typical one and one
// with a batch of 1 and other sizes distinct.
var Sizes = []map[string]int64{
	{"batch": 2, "seq": 3},
	{"batch": 1, "seq": 5},
}

// Inputs makes the two input sets of m (Sizes), random with seed: floats in (-2, 2),
// an int64 "mask..." of 0/1 with a padded tail in the last row, bools at random, other
// integers in [0, 3).
func Inputs(m *ir.Model, seed int64) ([]map[string]*ndarray.Array, error) {
	r := rand.New(rand.NewSource(seed ^ 0x5eed))
	var sets []map[string]*ndarray.Array
	for k, sizes := range Sizes {
		set := map[string]*ndarray.Array{}
		for _, in := range m.Graph.Inputs {
			if in.IsConst() {
				continue
			}
			t := in.Type
			if t == nil || t.Kind != ir.TensorType || !t.HasShape {
				return nil, fmt.Errorf("input %s: no tensor shape", in.Name)
			}
			dims := make([]int64, len(t.Shape))
			for i, d := range t.Shape {
				switch {
				case d.Known:
					dims[i] = d.Value
				case sizes[d.Param] > 0:
					dims[i] = sizes[d.Param]
				default:
					dims[i] = int64(2 + k)
				}
			}
			n := numel(dims)
			switch t.DType {
			case ir.Float:
				v := make([]float32, n)
				for i := range v {
					v[i] = float32(4*r.Float64() - 2)
				}
				set[in.Name] = ndarray.FromFloat32(dims, v)
			case ir.Int64:
				v := make([]int64, n)
				last := int64(1)
				if len(dims) > 0 {
					last = dims[len(dims)-1]
				}
				for i := range v {
					if strings.Contains(in.Name, "mask") {
						v[i] = 1
						if i >= n-int(last)/2 {
							v[i] = 0
						}
					} else {
						v[i] = int64(r.Intn(3))
					}
				}
				set[in.Name] = ndarray.FromInt64(dims, v)
			case ir.Bool:
				v := make([]bool, n)
				for i := range v {
					v[i] = r.Intn(2) == 0
				}
				set[in.Name] = ndarray.FromBool(dims, v)
			default:
				return nil, fmt.Errorf("input %s: type %s not generated", in.Name, t.DType)
			}
		}
		sets = append(sets, set)
	}
	return sets, nil
}

// runAll runs the model on every input set.
func runAll(model []byte, sets []map[string]*ndarray.Array) ([]map[string]*ndarray.Array, error) {
	s, err := ort.NewSessionFromBytes(model, ort.Options{OptLevel: ort.OptDisabled, IntraOpThreads: 1})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var out []map[string]*ndarray.Array
	for _, in := range sets {
		o, err := s.Run(in)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}

// compare says how got differs from want, "" when every output agrees (NaN matches NaN,
// infinities match exactly).
func compare(want, got map[string]*ndarray.Array) string { return compareTol(want, got, 1) }

// compareTol is compare with the tolerance scaled by f.
func compareTol(want, got map[string]*ndarray.Array, f float64) string {
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		w, g := want[name], got[name]
		if g == nil {
			return fmt.Sprintf("output %s missing", name)
		}
		if w.DType != g.DType || !ndarray.SameShape(w.Shape, g.Shape) {
			return fmt.Sprintf("output %s: %s%v, want %s%v", name, g.DType, g.Shape, w.DType, w.Shape)
		}
		if !w.DType.IsFloat() {
			if !bytes.Equal(w.Data, g.Data) {
				return fmt.Sprintf("output %s: integer values differ", name)
			}
			continue
		}
		wv, gv := w.Float64s(), g.Float64s()
		scale := 0.0
		for _, x := range wv {
			if !math.IsNaN(x) && !math.IsInf(x, 0) {
				scale = math.Max(scale, math.Abs(x))
			}
		}
		for i := range wv {
			a, b := wv[i], gv[i]
			if math.IsNaN(a) || math.IsNaN(b) {
				if math.IsNaN(a) != math.IsNaN(b) {
					return fmt.Sprintf("output %s[%d]: %g, want %g", name, i, b, a)
				}
				continue
			}
			if math.IsInf(a, 0) || math.IsInf(b, 0) {
				if a != b {
					return fmt.Sprintf("output %s[%d]: %g, want %g", name, i, b, a)
				}
				continue
			}
			if math.Abs(a-b) > f*(RelTol*math.Max(math.Abs(a), math.Abs(b))+RelTol*AbsScale*scale+AbsTol) {
				return fmt.Sprintf("output %s[%d]: %g, want %g (|diff| %.3g, output scale %.3g)", name, i, b, a, math.Abs(a-b), scale)
			}
		}
	}
	return ""
}

// unstable runs the reference model with every float initializer (but exponents) and
// input scaled by 1 ± PerturbTol, and then with every op's float result so scaled, and
// says how its outputs moved when they moved past half the tolerance; "" when the
// reference is stable. Three draws of signs: random, all up, all down (a value just
// below a step moves past it only upwards).
func unstable(refBytes []byte, inputs []map[string]*ndarray.Array, want []map[string]*ndarray.Array, seed int64) string {
	r := rand.New(rand.NewSource(seed ^ 0x9e3779b9))
	for _, signs := range []int{0, 1, -1} { // random signs, then all up, then all down
		if why := jitteredMoves(refBytes, inputs, want, r, signs); why != "" {
			return why
		}
	}
	return ""
}

// sign is +1 or -1: as given, or drawn when signs is 0.
func sign(r *rand.Rand, signs int) float64 {
	if signs != 0 {
		return float64(signs)
	}
	return float64(2*r.Intn(2) - 1)
}

// jitteredMoves runs the two probes with one draw of signs.
func jitteredMoves(refBytes []byte, inputs []map[string]*ndarray.Array, want []map[string]*ndarray.Array, r *rand.Rand, signs int) string {
	m, err := ir.LoadBytes(refBytes, "")
	if err != nil {
		return ""
	}
	jitter := func(v []float32) {
		for i := range v {
			v[i] *= float32(1 + PerturbTol*sign(r, signs))
		}
	}
	for _, c := range m.Graph.Initializers {
		if c.Const.DType != ir.Float || isExponent(c) {
			continue
		}
		v, err := c.Const.Float32s()
		if err != nil {
			return ""
		}
		v = append([]float32(nil), v...)
		jitter(v)
		nb, _ := ir.FloatTensor(c.Const.Dims, v).Bytes()
		c.Const.SetBytes(nb)
	}
	b, err := ir.Marshal(m)
	if err != nil {
		return ""
	}
	var moved []map[string]*ndarray.Array
	for _, set := range inputs {
		p := map[string]*ndarray.Array{}
		for k, a := range set {
			if a.DType == ndarray.Float32 {
				v := append([]float32(nil), a.Float32s()...)
				jitter(v)
				a = ndarray.FromFloat32(a.Shape, v)
			}
			p[k] = a
		}
		moved = append(moved, p)
	}
	got, err := runAll(b, moved)
	if err != nil {
		return ""
	}
	for i := range want { // half the tolerance: one draw of signs estimates the sensitivity roughly
		if d := compareTol(want[i], got[i], 0.5); d != "" {
			return fmt.Sprintf("the reference itself moves that much when its constants and inputs move by %g: %s", PerturbTol, d)
		}
	}
	if why := roundingUnstable(refBytes, inputs, want, r, signs, false); why != "" {
		return why
	}
	return roundingUnstable(refBytes, inputs, want, r, signs, true)
}

// discontinuous ops compare or select values, where jittering both sides of an exact
// tie (x == x, the max of equal values) would flip a result no kernel's rounding flips:
// their inputs are not jittered. Steps (Floor, Ceil, Round, a Cast to an integer) are:
// a value within an ulp or so of a step is not fixed by float32 arithmetic.
var discontinuous = map[string]bool{
	"Equal": true, "Less": true, "LessOrEqual": true, "Greater": true, "GreaterOrEqual": true,
	"Where": true, "ArgMax": true, "ArgMin": true, "TopK": true, "Mod": true, "Max": true, "Min": true}

// roundingUnstable runs the reference with each op's float result moved by ±PerturbTol
// (what a different summation order or kernel may do), scaled also by the tensor's
// largest element when scaled is set, and says how its outputs moved
// when they moved past half the tolerance: a mean of values that cancel, then divided
// by, depends on the order of the sum, which float32 does not fix.
func roundingUnstable(refBytes []byte, inputs []map[string]*ndarray.Array, want []map[string]*ndarray.Array, r *rand.Rand, signs int, scaled bool) string {
	m, err := ir.LoadBytes(refBytes, "")
	if err != nil {
		return ""
	}
	if _, err := shapes.Infer(m); err != nil {
		return ""
	}
	g := m.Graph
	for _, n := range g.Nodes() {
		for _, v := range n.Outputs() {
			if v == nil || v.Type == nil || v.Type.DType != ir.Float || len(v.Uses()) == 0 {
				continue
			}
			smooth := true
			for _, u := range v.Uses() {
				smooth = smooth && !discontinuous[u.Node.OpType]
			}
			if !smooth {
				continue
			}
			uses := append([]ir.Use(nil), v.Uses()...)
			f := float32(PerturbTol * sign(r, signs))
			moved := g.Add("Mul", []*ir.Value{v, g.NewConst(v.Name+"_jitter", ir.FloatTensor(nil, []float32{1 + f}))}, 1, v.Name+"_jittered").Output(0)
			if scaled {
				moved = jitterScaled(g, v, moved, float32(PerturbTol*sign(r, signs)), boundedRange[n.OpType])
			}
			for _, u := range uses {
				u.Node.SetInput(u.Index, moved)
			}
		}
	}
	if err := g.TopoSort(); err != nil {
		return ""
	}
	b, err := ir.Marshal(m)
	if err != nil {
		return ""
	}
	got, err := runAll(b, inputs)
	if err != nil {
		return ""
	}
	for i := range want {
		if d := compareTol(want[i], got[i], 0.5); d != "" {
			return fmt.Sprintf("the reference itself moves that much when each op's result moves by %g of itself and of its tensor's scale (float32 does not fix the order of its sums, nor an approximate kernel its tiny values): %s", PerturbTol, d)
		}
	}
	return ""
}

// boundedRange are the ops whose result lies in [-1, 1] (or [0, 1]): an approximate
// kernel's error is relative to that range, however small the tensor's own elements (ORT's
// Sigmoid returns 0 for Sigmoid(-22) = 2e-10, a single such value its whole tensor).
var boundedRange = map[string]bool{"Sigmoid": true, "HardSigmoid": true, "Tanh": true, "Erf": true,
	"Softsign": true, "Softmax": true}

// jitterScaled adds to g the value moved + abs·max|v|, the max over v's finite
// elements, and at least 1 for an op of bounded range: a kernel's error is relative to the
// tensor's scale, not to each element (an approximate Sigmoid returns 0 for 3e-10), so an
// element near zero may move across it.
func jitterScaled(g *ir.Graph, v, moved *ir.Value, abs float32, bounded bool) *ir.Value {
	node := func(op string, base string, attrs []*ir.Attr, in ...*ir.Value) *ir.Value {
		return g.Add(op, in, 1, v.Name+base, attrs...).Output(0)
	}
	mag := node("Abs", "_jitter_abs", nil, v)
	bad := node("Or", "_jitter_bad", nil, node("IsInf", "_jitter_inf", nil, mag), node("IsNaN", "_jitter_nan", nil, mag))
	zero := g.NewConst(v.Name+"_jitter_zero", ir.FloatTensor(nil, []float32{0}))
	scale := node("ReduceMax", "_jitter_scale", []*ir.Attr{ir.IntAttr("keepdims", 0)}, node("Where", "_jitter_finite", nil, bad, zero, mag))
	if bounded {
		scale = node("Max", "_jitter_range", nil, scale, g.NewConst(v.Name+"_jitter_one", ir.FloatTensor(nil, []float32{1})))
	}
	factor := g.NewConst(v.Name+"_jitter_abs_factor", ir.FloatTensor(nil, []float32{abs}))
	return node("Add", "_jitter_scaled", nil, moved, node("Mul", "_jitter_abs_term", nil, scale, factor))
}

// isExponent reports whether v is read as Pow's exponent (2 must stay 2: a negative base
// to the power 2.000002 is NaN).
func isExponent(v *ir.Value) bool {
	for _, u := range v.Uses() {
		if u.Node.OpType == "Pow" && u.Index == 1 {
			return true
		}
	}
	return false
}
