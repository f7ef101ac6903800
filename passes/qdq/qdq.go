// Package qdq is the pass that places QuantizeLinear/DequantizeLinear pairs for
// TensorRT's explicit INT8 quantization.
//
// Placement follows TensorRT's rules (see passes/qdqcheck, which checks them): symmetric
// int8 (zero point 0), per-channel weight scales on the output-channel axis of the weight
// as stored, per-tensor activation scales, only the inputs of the ops the policy covers,
// one Q/DQ pair per activation tensor shared by all its quantized readers, nothing inside
// LayerNorm, Softmax or GELU, GEMMs too small for tensor cores left float, the residual
// Add's skip input quantized rather than the GEMM output it adds, and attention's scale
// moved onto Q before the BMM inputs are quantized. Which node is what comes
// from the blocks analysis (so placement works on folded and on fused graphs), with
// qdqcheck's structural definitions as the backstop.
//
// Every quantized input belongs to a group "layer<L>/<kind>", kind one of qkv,
// attn_matmul, attn_out, ffn, residual, inner, other (L = -1 before the first encoder layer);
// disable=REGEX leaves whole groups float, and budget=D turns off the groups that cost
// the most accuracy until the loss is at most D (see budget.go; a group inside an If
// branch is "<branch>/layer<L>/<kind>", and budget decides it with its twins in the
// If's other branches).
package qdq

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/blocks"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	"github.com/qcc-dev/qcc/quant/calib"
)

// Pass is the qdq pass.
var Pass = &pass.Pass{
	Name: "qdq",
	Doc: `place QuantizeLinear/DequantizeLinear pairs for TensorRT INT8 (explicit quantization)
Symmetric int8, per-channel weights on the output-channel axis, per-tensor activations.
policy=linear quantizes every input of every weighted MatMul/Gemm (Q/K/V, attention output,
FFN); attention adds both inputs of Q·Kᵀ and probs·V (and DeBERTa's c2p/p2c matmuls, which
share Q's pair), after moving the scale after Q·Kᵀ onto Q (folded into Q's projection when
its weight and bias are constants read only there, else a Mul on Q); full adds the skip
input of the residual Add that feeds a LayerNorm (residual=skip; both or none). GEMMs whose
M or N is or can be below min-gemm stay float (pooler, classifier; a symbolic batch can be
1), and so do attention matmuls over a known sequence above max-seq. Activation ranges come from calibration
through ONNX Runtime on the current model (calib, data, batch; cache/trt-cache files), or
from ranges=const:V (a precision step later on the same data reads the float model's
ranges from the same run; calib-mem bounds the bytes fetched per batch). Quantizers belong to groups "layer<L>/<kind>" (kind qkv, attn_matmul,
attn_out, ffn (an FFN block's projections, and those around a GELU or ReLU), residual, inner (another weighted op inside the layers), other (embedding projections, heads, routers)) that disable=REGEX turns off; exclude=REGEX leaves nodes
(by name or op type) float. budget=D measures each group against the float model in ONNX
Runtime and turns off the most harmful groups until the loss is at most D: the drop in
accuracy (argmax of the first output against the labels of eval=FILE.npz), or without
eval the drop in the outputs' cosine similarity on the calibration data. The search tunes
on part of that data and reports the result on the rest (holdout=F of the batches), or
on report-eval=FILE.npz; -stats says which figure comes from which data. pairs=per-reader
gives each reader of an activation its own Q/DQ pair (what ONNX Runtime's x86 int8
kernels need). Inside If branches (a merged decoder) each branch is placed from its own
blocks and calibrated through the If's outputs, every batch run once per value of a boolean
input that is an If's condition; budget= and report= measure them alike (a branch's group
is named after it, "then/layer0/qkv", and budget decides it with its twins in the other
branches, "{then,else}/layer0/qkv"); Loop and Scan bodies stay float. Models already carrying Q/DQ are not quantized twice. An opset-11/12 model is raised to 13 (per-channel axis), converting the operators whose
meaning changed. The policy is recorded in the model metadata qcc.qdq.policy.`,
	Requires: []*pass.Pass{blocks.Pass},
	Options: []pass.Option{
		{Name: "policy", Default: "linear", Doc: "linear | attention | full", Check: checkPolicy},
		{Name: "calib", Default: "percentile:99.99", Doc: "max | percentile:P | entropy | mse", Check: func(s string) error {
			_, err := calib.ParseMethod(s)
			return err
		}},
		{Name: "data", Default: "random", Doc: "calibration inputs: FILE.npz | DIR (ONNX test-data .pb files) | random[:N[:SEED]]"},
		{Name: "batch", Default: "0", Doc: "calibration batch size (0: the model's fixed batch, else the data's default)", Check: checkNonNeg},
		{Name: calib.MemOption.Name, Default: calib.MemOption.Default, Doc: calib.MemOption.Doc, Check: checkNonNeg},
		{Name: "cache", Default: "", Doc: "JSON range cache: read when it exists and covers the tensors, else written after calibrating"},
		{Name: "trt-cache", Default: "", Doc: "also write the ranges as a TensorRT calibration cache (text)"},
		{Name: "ranges", Default: "", Doc: "const:V gives every activation amax V (no calibration; for tests)", Check: func(s string) error {
			_, err := parseRanges(s)
			return err
		}},
		{Name: "dtype", Default: "int8", Doc: "int8 (scale amax/127, int8 zero point) | fp8 (FLOAT8E4M3FN, scale amax/448, float8e4m3fn zero point 0, saturating; QuantizeLinear/DequantizeLinear-19: the opset import is raised to 19)", Check: oneOf("int8", "fp8")},
		{Name: "weights", Default: "int8", Doc: "int8 (quantized initializers, int8 or float8e4m3fn by dtype, + DequantizeLinear, 4x smaller) | qdq (float weights + QuantizeLinear/DequantizeLinear)", Check: oneOf("int8", "qdq")},
		{Name: "exclude", Default: "", Doc: "regexp on node names or op types left float", Check: checkRegexp},
		{Name: "disable", Default: "", Doc: "regexp on quantizer group names (layer<L>/<kind>) left float", Check: checkRegexp},
		{Name: "fold-weights", Default: "false", Doc: "true: fold QuantizeLinear→DequantizeLinear on constant float weights into int8 initializers + DequantizeLinear", Check: oneOf("true", "false")},
		{Name: "pairs", Default: "shared", Doc: "shared: one activation Q/DQ pair per tensor, shared by its quantized readers (TensorRT's form) | per-reader: a pair per reader (ONNX Runtime on x86 fuses an int8 activation into MatMulIntegerToFloat only when its QuantizeLinear feeds one DequantizeLinear)", Check: oneOf("shared", "per-reader")},
		{Name: "residual", Default: "skip", Doc: "policy full's residual Add: skip (its skip input only, so the Add fuses into the GEMM's epilogue; TensorRT's recommendation) | both (also the GEMM-side input) | none", Check: oneOf(qdqcheck.Residuals...)},
		{Name: "min-gemm", Default: "16", Doc: "GEMMs whose M or N is, or can be (a batch dim can be 1), below this stay float (no tensor cores; NVIDIA's recipes leave the pooler and classifier float); 2 leaves only GEMV shapes float", Check: checkMinGemm},
		{Name: "max-seq", Default: "512", Doc: "attention matmuls over a known sequence length above this stay float (INT8 attention loses accuracy on long sequences; Model Optimizer's limit); 0 for no limit", Check: checkNonNeg},
		{Name: "qkv-scale", Default: "separate", Doc: "separate: Q, K and V heads get their own activation ranges | shared: one range (the largest) for the three, as a fused QKV GEMM with one output scale wants", Check: oneOf("separate", "shared")},
		{Name: "budget", Default: "", Doc: "accuracy budget D: turn off the most harmful quantizer groups until the loss against float is at most D (a fraction: 0.003 = 0.3 point of accuracy with eval, else a drop in cosine similarity)", Check: checkBudget},
		{Name: "eval", Default: "", Doc: "evaluation data for budget and report: FILE.npz with the model inputs and a labels array (accuracy = argmax of the first output)"},
		{Name: "eval-batch", Default: "0", Doc: "evaluation batch size for budget (0: about 1024 input elements per batch)", Check: checkNonNeg},
		{Name: "holdout", Default: "0.5", Doc: "budget: the fraction of the evaluation batches (eval=, else the calibration data) held out of the search and used only to report the result's accuracy; 0 reports on the data it tuned on", Check: checkHoldout},
		{Name: "report", Default: "", Doc: "FILE.json: the per-layer error report: per block the SQNR and relative error of its output with every group quantized, per quantizer group the measure (accuracy with eval=, else cosine) with it off, ranked, and with budget= the disable= list that meets it; also a table in -stats and a chart in -report (see errreport.go)"},
		{Name: "report-eval", Default: "", Doc: "budget: FILE.npz (with labels when eval= has them) the result is reported on instead of a held-out part; the search then tunes on all of the evaluation data"},
	},
	Run: run,
}

func checkPolicy(s string) error {
	for _, p := range qdqcheck.Policies {
		if s == p {
			return nil
		}
	}
	return fmt.Errorf("want %s", strings.Join(qdqcheck.Policies, ", "))
}

func checkNonNeg(s string) error {
	if v, err := strconv.Atoi(s); err != nil || v < 0 {
		return fmt.Errorf("want a non-negative integer")
	}
	return nil
}

func checkMinGemm(s string) error {
	if v, err := strconv.Atoi(s); err != nil || v < 1 {
		return fmt.Errorf("want a positive integer")
	}
	return nil
}

func checkRegexp(s string) error {
	_, err := regexp.Compile(s)
	return err
}

func oneOf(vals ...string) func(string) error {
	return func(s string) error {
		for _, v := range vals {
			if s == v {
				return nil
			}
		}
		return fmt.Errorf("want %s", strings.Join(vals, " or "))
	}
}

// parseRanges reads ranges=const:V; "" means calibrate.
func parseRanges(s string) (float32, error) {
	if s == "" {
		return 0, nil
	}
	v, ok := strings.CutPrefix(s, "const:")
	if !ok {
		return 0, fmt.Errorf("want const:V")
	}
	f, err := strconv.ParseFloat(v, 32)
	if err != nil || !(f > 0) || f > 3e38 {
		return 0, fmt.Errorf("want const:V with V a positive finite number")
	}
	return float32(f), nil
}

// options are the parsed options of one run.
type options struct {
	policy      string
	fp8         bool // dtype=fp8
	method      calib.Method
	data        string
	batch       int
	calibMem    int64 // calib-mem, as calib.Options.MaxBytes
	cache, trt  string
	constRange  float32
	int8Weights bool
	exclude     *regexp.Regexp
	disable     *regexp.Regexp
	foldWeights bool
	perReader   bool
	residual    string
	minGEMM     int64
	maxSeq      int64
	sharedQKV   bool

	budget    float64 // the accuracy budget; < 0 for none
	eval      string
	evalBatch int
	holdout   float64 // fraction of the evaluation batches reported on, not tuned on
	reportOn  string  // report-eval=FILE.npz

	reportPath string // report=FILE.json
	// off are the groups the budget search turned off, with why; keep the nodes a budget
	// left float in an earlier run.
	off  map[string]string
	keep map[*ir.Node]string
	// units are the groups of each unit the budget search decided (target.Unit).
	units map[string][]string
	// given are ranges computed already (by the budget search): authoritative, a tensor
	// absent from them has a zero range.
	given map[string]float32
}

func parseOptions(ctx *pass.Context) (*options, error) {
	o := &options{policy: ctx.Opt("policy"), data: ctx.Opt("data"), cache: ctx.Opt("cache"), trt: ctx.Opt("trt-cache"),
		int8Weights: ctx.Opt("weights") == "int8", foldWeights: ctx.Opt("fold-weights") == "true", fp8: ctx.Opt("dtype") == "fp8"}
	var err error
	if o.method, err = calib.ParseMethod(ctx.Opt("calib")); err != nil {
		return nil, err
	}
	o.batch, _ = strconv.Atoi(ctx.Opt("batch"))
	o.calibMem = calib.MaxBytesOf(ctx.Opt(calib.MemOption.Name))
	if o.constRange, err = parseRanges(ctx.Opt("ranges")); err != nil {
		return nil, err
	}
	if s := ctx.Opt("exclude"); s != "" {
		o.exclude = regexp.MustCompile(s)
	}
	if s := ctx.Opt("disable"); s != "" {
		o.disable = regexp.MustCompile(s)
	}
	o.perReader = ctx.Opt("pairs") == "per-reader"
	o.residual = ctx.Opt("residual")
	o.minGEMM, _ = strconv.ParseInt(ctx.Opt("min-gemm"), 10, 64)
	o.maxSeq, _ = strconv.ParseInt(ctx.Opt("max-seq"), 10, 64)
	o.sharedQKV = ctx.Opt("qkv-scale") == "shared"
	o.budget = -1
	if s := ctx.Opt("budget"); s != "" {
		o.budget, _ = strconv.ParseFloat(s, 64)
	}
	o.eval = ctx.Opt("eval")
	o.evalBatch, _ = strconv.Atoi(ctx.Opt("eval-batch"))
	o.holdout, _ = strconv.ParseFloat(ctx.Opt("holdout"), 64)
	o.reportOn = ctx.Opt("report-eval")
	if o.reportOn != "" && o.budget < 0 {
		return nil, fmt.Errorf("report-eval=%s is where budget=D reports its result; give budget too", o.reportOn)
	}
	o.reportPath = ctx.Opt("report")
	if o.eval != "" && o.budget < 0 && o.reportPath == "" {
		return nil, fmt.Errorf("eval=%s is the evaluation data of budget=D and report=FILE.json; give one of them too", o.eval)
	}
	return o, nil
}

func run(ctx *pass.Context) error {
	o, err := parseOptions(ctx)
	if err != nil {
		return err
	}
	br := ctx.ResultOf(blocks.Pass).(*blocks.Result)
	if o.policy != "linear" {
		notes := moveScales(place(ctx.Model, br, o).cores)
		for _, n := range notes {
			ctx.Note("%s", n)
			if !strings.Contains(n, "stays on the scores") {
				ctx.Count("qdq: attention scales moved onto Q", 1)
				ctx.Changed()
			}
		}
	}
	if o.budget >= 0 {
		if err := o.searchBudget(ctx, br); err != nil {
			return err
		}
	}
	var float []byte
	if o.reportPath != "" {
		if p := ctx.Model.Meta(qdqcheck.PolicyKey); p != "" {
			ctx.Note("report: the model carries qcc's Q/DQ already (%s %s): no float model to measure against; %s not written", qdqcheck.PolicyKey, p, o.reportPath)
		} else if float, err = ir.Marshal(ctx.Model); err != nil {
			return fmt.Errorf("report: serializing the float model: %w", err)
		}
	}
	if err := o.apply(ctx, br); err != nil {
		return err
	}
	if float == nil {
		return nil
	}
	return o.errorReport(ctx, br, float)
}

// apply places and inserts the quantizers the options select.
func (o *options) apply(ctx *pass.Context, br *blocks.Result) error {
	m := ctx.Model
	changed := false

	pl := place(m, br, o)
	for _, n := range pl.notes {
		ctx.Note("%s", n)
	}
	if pl.loops > 0 {
		ctx.Note("%d MatMul/Gemm/Conv on constant weights inside Loop or Scan bodies stay float: calibration reads a body's values through its If's outputs, and a loop body passes out only its loop outputs", pl.loops)
		ctx.Count("qdq: projections inside loop bodies left float", pl.loops)
	}
	// Decide what stays float before calibrating, so that only what is quantized is
	// calibrated.
	for _, t := range pl.targets {
		if t.skip == "" {
			t.skip = o.screen(m.Graph, t)
		}
	}
	raise13 := func() error {
		conv, err := raiseOpset13(m)
		if err != nil {
			return err
		}
		ctx.Note("%s", conv)
		changed = true
		return nil
	}
	// If before opset 11 merges its branches' shapes strictly, which the empty tensors
	// that pass a branch's values out for calibration break: the raise that per-channel
	// weights need comes first then.
	if m.Opset("") < 11 && anyWeight(pl.targets) && inBody(neededTensors(pl.targets)) {
		if err := raise13(); err != nil {
			return err
		}
	}
	need := neededTensors(pl.targets)
	ranges, err := o.ranges(ctx, m, need)
	if err != nil {
		return err
	}
	if o.sharedQKV {
		if n := shareQKV(pl, ranges); n > 0 {
			ctx.Count("qdq: attention blocks with one Q/K/V range", n)
		}
	}
	for _, t := range pl.targets {
		if t.skip != "" {
			continue
		}
		for _, i := range t.acts {
			if x := t.node.Input(i); !qdqcheck.Dequantized(x) && reusablePair(x, t.node.Graph()) == nil && ranges[rangeKey(x)] == 0 {
				t.skip = fmt.Sprintf("zero calibration range for %s", x.Name)
				break
			}
		}
	}

	// Per-channel weight scales need opset 13; Q/DQ at all, 10.
	if (anyWeight(pl.targets) || quantizes(pl.targets) && m.Opset("") < 10) && m.Opset("") < 13 {
		if err := raise13(); err != nil {
			return err
		}
	}
	if o.fp8 && m.Opset("") < 19 && quantizes(pl.targets) {
		if err := raiseOpset19(ctx, m); err != nil {
			return err
		}
		changed = true
	}
	ins := &inserter{m: m, g: m.Graph, o: o, ranges: ranges, weightDQ: map[weightKey]*ir.Value{}, weightQ: map[weightKey]*quantWeight{}, actDQ: map[actKey]*ir.Value{}, scales: Scales{ByName: map[string]string{}, ByValue: map[float32][]string{}}}
	added, err := ins.insert(pl.targets)
	ctx.Record(ins.scales)
	if added {
		changed = true
	}
	if err != nil {
		return err
	}
	if sh, ok := ctx.Shared(calib.SharedKey{Data: o.data, Batch: o.batch}).(*calib.Shared); ok {
		sh.NoteQuantizers(m) // what each pair quantizes, for precision after a fuse
	}
	if o.foldWeights {
		n := 0
		_ = m.Graph.Walk(func(g *ir.Graph) error {
			n += foldWeights(g)
			return nil
		})
		if n > 0 {
			ctx.Count("qdq: weight Q→DQ folded to int8", n)
			changed = true
		}
	}
	if markSkips(pl.targets) {
		changed = true
	}
	if qdqcheck.Summarize(m).DQ > 0 && m.SetMeta(qdqcheck.PolicyKey, o.policy) {
		changed = true
	}
	if o.policy == "full" && qdqcheck.Summarize(m).DQ > 0 && m.SetMeta(qdqcheck.ResidualKey, o.residual) {
		changed = true
	}
	report(ctx, pl.targets, ins)
	if changed {
		ctx.Changed()
	}
	return nil
}

// screen says why a target stays float before calibration ("" when it is quantized).
func (o *options) screen(g *ir.Graph, t *target) string {
	n := t.node
	if o.exclude != nil {
		switch {
		case n.Name != "" && o.exclude.MatchString(n.Name):
			return fmt.Sprintf("excluded: name matches exclude=%s", o.exclude)
		case o.exclude.MatchString(n.OpType):
			return fmt.Sprintf("excluded: op type %s matches exclude=%s", n.OpType, o.exclude)
		}
	}
	if o.disable != nil && o.disable.MatchString(t.Group()) {
		return fmt.Sprintf("group %s disabled (disable=%s)", t.Group(), o.disable)
	}
	if why, ok := o.off[t.Group()]; ok {
		return why
	}
	if why, ok := o.off[t.Unit()]; ok {
		return why
	}
	if why, ok := o.keep[n]; ok {
		return why
	}
	if why := qdqcheck.SmallGEMM(g, n, o.minGEMM); why != "" {
		return why
	}
	if t.kind == KindAttnMatMul && o.maxSeq > 0 {
		if s := seqLen(n); s > o.maxSeq {
			return fmt.Sprintf("sequence length %d above max-seq=%d: INT8 attention matmuls stay float on long sequences", s, o.maxSeq)
		}
	}
	for _, i := range t.acts {
		x := n.Input(i)
		if x == nil {
			return fmt.Sprintf("input %d is absent", i)
		}
		if qdqcheck.Dequantized(x) {
			continue
		}
		if x.Type != nil && x.Type.Kind == ir.TensorType && x.Type.DType != ir.Undefined && x.Type.DType != ir.Float {
			return fmt.Sprintf("input %s is %s; QuantizeLinear-13 quantizes float32", x.Name, x.Type.DType)
		}
	}
	if t.weight >= 0 {
		w, quantized, _ := qdqcheck.WeightTensor(n.Input(t.weight))
		if !quantized && w.DType != ir.Float {
			return fmt.Sprintf("weight %s is %s, not float32", n.Input(t.weight).Name, w.DType)
		}
	}
	return ""
}

// neededTensors are the activations that get a new Q/DQ pair (and so need a range), in
// the order of their range keys.
func neededTensors(ts []*target) []*ir.Value {
	seen := map[*ir.Value]bool{}
	var out []*ir.Value
	for _, t := range ts {
		if t.skip != "" {
			continue
		}
		for _, i := range t.acts {
			x := t.node.Input(i)
			if qdqcheck.Dequantized(x) || reusablePair(x, t.node.Graph()) != nil || seen[x] {
				continue
			}
			seen[x] = true
			out = append(out, x)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return rangeKey(out[i]) < rangeKey(out[j]) })
	return out
}

func anyWeight(ts []*target) bool {
	for _, t := range ts {
		if t.skip == "" && t.weight >= 0 && !qdqcheck.Dequantized(t.node.Input(t.weight)) {
			return true
		}
	}
	return false
}

// markSkips records on each node left float why (and clears stale marks).
func markSkips(ts []*target) bool {
	changed := false
	for _, t := range ts {
		old, had := t.node.Meta(qdqcheck.SkipKey)
		switch {
		case t.skip != "" && (!had || old != t.skip):
			t.node.SetMeta(qdqcheck.SkipKey, t.skip)
			changed = true
		case t.skip == "" && had:
			kept := t.node.Metadata[:0]
			for _, kv := range t.node.Metadata {
				if kv.Key != qdqcheck.SkipKey {
					kept = append(kept, kv)
				}
			}
			t.node.Metadata = kept
			changed = true
		}
	}
	return changed
}

// report writes the statistics -stats shows: quantized tensors by kind, what stayed
// float and why.
func report(ctx *pass.Context, ts []*target, ins *inserter) {
	acts, weights := map[string]map[*ir.Value]bool{}, map[string]map[*ir.Value]bool{}
	for _, k := range Kinds {
		acts[k], weights[k] = map[*ir.Value]bool{}, map[*ir.Value]bool{}
	}
	skipped := map[string]int{}
	quantized := 0
	for _, t := range ts {
		if t.skip != "" {
			skipped[reasonClass(t.skip)]++
			ctx.Note("left float: %s (%s, %s): %s", qdqcheck.NodeName(t.node), t.node.OpType, t.Group(), t.skip)
			continue
		}
		quantized++
		for _, i := range t.acts {
			acts[t.kind][throughDQ(t.node.Input(i))] = true
		}
		if t.weight >= 0 {
			weights[t.kind][throughDQ(t.node.Input(t.weight))] = true
		}
	}
	for _, k := range Kinds {
		ctx.Count("qdq: activations "+k, len(acts[k]))
		ctx.Count("qdq: weights "+k, len(weights[k]))
	}
	ctx.Count("qdq: nodes quantized", quantized)
	for r, n := range skipped {
		ctx.Count("qdq: left float, "+r, n)
	}
	ctx.Count("qdq: Q/DQ pairs added", ins.pairs)
	ctx.Count("qdq: weights int8 + DQ", ins.int8W)
	ctx.Count("qdq: weights fp8 + DQ", ins.fp8W)
	ctx.Count("qdq: weights float + Q/DQ", ins.qdqW)
	ctx.Count("qdq: uses already quantized", ins.already)
}

func reasonClass(s string) string {
	switch {
	case strings.HasPrefix(s, "excluded"):
		return "excluded"
	case strings.HasPrefix(s, "group"):
		return "group disabled"
	case strings.HasPrefix(s, "GEMV"):
		return "GEMV"
	case strings.HasPrefix(s, "small GEMM"):
		return "small GEMM"
	case strings.HasPrefix(s, "sequence length"):
		return "sequence length"
	case strings.HasPrefix(s, "zero calibration range"):
		return "zero range"
	case strings.HasPrefix(s, "inside"):
		return "inside LayerNorm/GELU"
	}
	return "type"
}

// throughDQ maps a dequantized value back to what was quantized.
func throughDQ(v *ir.Value) *ir.Value {
	if p, _ := producerOf(v); qdqcheck.IsOp(p, "DequantizeLinear") {
		x := p.Input(0)
		if q, _ := producerOf(x); qdqcheck.IsOp(q, "QuantizeLinear") {
			return q.Input(0)
		}
		return x
	}
	return v
}

// seqLen is the longest known sequence axis of an attention matmul: the last two axes of
// the scores it makes (Q·Kᵀ) or reads (probs·V); 0 when unknown.
func seqLen(n *ir.Node) int64 {
	v := n.Output(0)
	if !scoresOut(n) {
		v = n.Input(0)
	}
	if v == nil || v.Type == nil || !v.Type.HasShape || len(v.Type.Shape) < 2 {
		return 0
	}
	s := v.Type.Shape
	best := int64(0)
	for _, d := range s[len(s)-2:] {
		if d.Known && d.Value > best {
			best = d.Value
		}
	}
	return best
}

// scoresOut reports whether n's output reaches a Softmax (n is Q·Kᵀ, not probs·V).
func scoresOut(n *ir.Node) bool {
	p, _ := producerOf(n.Input(0))
	for d := 0; p != nil && d < 5; d++ {
		if qdqcheck.IsOp(p, "Softmax") {
			return false
		}
		p, _ = producerOf(p.Input(0))
	}
	return true
}

// shareQKV gives the Q, K and V heads of each attention block (the inputs of Q·Kᵀ and
// the V input of probs·V) one range, the largest of the three: a fused QKV GEMM has one
// output scale. It returns the number of blocks changed.
func shareQKV(pl *placement, ranges map[string]float32) int {
	quantized := map[*ir.Node]bool{}
	for _, t := range pl.targets {
		if t.skip == "" && t.kind == KindAttnMatMul {
			quantized[t.node] = true
		}
	}
	n := 0
	for _, c := range pl.cores {
		if len(c.mms) != 2 || !quantized[c.mms[0]] || !quantized[c.mms[1]] {
			continue
		}
		var names []string
		amax := float32(0)
		for _, v := range []*ir.Value{c.mms[0].Input(0), c.mms[0].Input(1), c.mms[1].Input(1)} {
			if a, ok := ranges[rangeKey(v)]; ok && a > 0 {
				names = append(names, rangeKey(v))
				amax = max(amax, a)
			}
		}
		if len(names) < 2 {
			continue
		}
		for _, name := range names {
			ranges[name] = amax
		}
		n++
	}
	return n
}
