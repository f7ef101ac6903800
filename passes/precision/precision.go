// Package precision is the pass that types a float32 model for FP16 or BF16 explicitly
// ("strongly typed", as TensorRT 11 needs it): weights and computation become float16 or
// bfloat16, and what overflows or loses accuracy in the narrow type stays float32, by
// rule and with the reason recorded, with Casts only at the borders of those regions.
//
// The pass works in three steps. Plan (rules.go) decides for every node that computes
// on floats whether it runs in the narrow type or stays float32, and why. Apply
// (apply.go) retypes the values, converts the constants offline and puts one Cast per
// value and target type where a reader wants the other type. The planning looks through
// the Casts an earlier run inserted and apply reuses them, and the nodes that run kept
// carry their reason in the qcc.precision metadata, so a second run changes nothing.
package precision

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/opsets"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/blocks"
	"github.com/qcc-dev/qcc/passes/shapes"
	"github.com/qcc-dev/qcc/quant/calib"
)

// MarkKey is the node metadata that holds why a node stays float32.
const MarkKey = "qcc.precision"

// Pass is the precision pass.
var Pass = &pass.Pass{
	Name: "precision",
	Doc: `type the model for FP16 or BF16: weights and computation in float16/bfloat16, Casts only at the borders of what stays float32
Kept in float32, each with its reason in -stats and in the node metadata qcc.precision:
decomposed LayerNorm/RMSNorm statistics (fused LayerNormalization-17 and the ORT norms run
in the narrow type with float32 statistics, stash_type=1), the mean of squares of an
RMSNorm, reductions over more than max-reduce elements or over an unknown length, any
node that reads or writes a value whose calibrated |max| exceeds the type's range divided
by margin (so Softmax over a masked score, an attention mask of -3.4e38; Pow(x,p) and Exp
with the margin raised to p and 2), constants beyond the range, operators without a
float16/bfloat16 type at the model's opset (ORT contrib operators by their type
constraints: EmbedLayerNormalization, MultiHeadAttention, BiasGelu and the integer
kernels have no bfloat16), QuantizeLinear/DequantizeLinear below opset 19 (float32 scales;
from 19 the scale takes the narrow type: qdq-opset=19, the default, raises a model with
Q/DQ to 19 so that INT8 and FP8 pairs take their neighbours' type), control flow, and nodes matching keep=REGEX.
Ranges come from a calibration run through ONNX Runtime (data=, as for qdq; none for the
static rules only); after qdq on the same data and batch in one pipeline they are the
float model's, from qdq's own calibration run (no second run). Integer tensors are never touched. One Cast per value and type; no
Cast pairs that cancel. keep-io=true keeps the graph inputs and outputs in their types.`,
	Requires: []*pass.Pass{shapes.Pass, blocks.Pass},
	Options: []pass.Option{
		{Name: "type", Default: "fp16", Doc: "fp16 | bf16", Check: oneOf("fp16", "bf16")},
		{Name: "keep-io", Default: "true", Doc: "true: graph inputs and outputs keep their types (Casts at the border) | false: float32 inputs and outputs take the narrow type", Check: oneOf("true", "false")},
		{Name: "keep", Default: "", Doc: "regexp on node names or op types kept float32", Check: checkRegexp},
		{Name: "data", Default: "random", Doc: "calibration inputs for the range rules: FILE.npz | DIR (ONNX test-data .pb files) | random[:N[:SEED]] | none (static rules only)"},
		{Name: "batch", Default: "0", Doc: "calibration batch size (0: the model's fixed batch, else the data's default)", Check: checkNonNeg},
		{Name: "margin", Default: "2", Doc: "an activation whose calibrated |max| exceeds the type's largest value divided by margin stays float32 (with its readers)", Check: checkMargin},
		{Name: "max-reduce", Default: "4096", Doc: "ReduceSum/ReduceMean/... over more elements than this, or over an unknown length, stay float32 (0: no limit)", Check: checkNonNeg},
		{Name: calib.MemOption.Name, Default: calib.MemOption.Default, Doc: calib.MemOption.Doc, Check: checkNonNeg},
		{Name: "qdq-opset", Default: "19", Doc: "19: a model with QuantizeLinear/DequantizeLinear below opset 19 is raised to 19 (the operators whose meaning changed rewritten), where the Q/DQ pairs take their neighbours' type (INT8 or FP8 scales in float16/bfloat16) | keep: the import stays, and the Q/DQ and the operators reading them stay float32", Check: oneOf("19", "keep")},
	},
	Run: run,
}

func oneOf(vals ...string) func(string) error {
	return func(s string) error {
		for _, v := range vals {
			if s == v {
				return nil
			}
		}
		return fmt.Errorf("want one of %q", vals)
	}
}

func checkRegexp(s string) error {
	_, err := regexp.Compile(s)
	return err
}

func checkNonNeg(s string) error {
	if v, err := strconv.Atoi(s); err != nil || v < 0 {
		return fmt.Errorf("want a non-negative integer")
	}
	return nil
}

func checkMargin(s string) error {
	if v, err := strconv.ParseFloat(s, 64); err != nil || !(v >= 1) || v > 1e6 {
		return fmt.Errorf("want a number >= 1")
	}
	return nil
}

// options are the parsed options of one run.
type options struct {
	low       ir.DataType // Float16 or BFloat16
	keepIO    bool
	keep      *regexp.Regexp
	data      string
	batch     int
	margin    float64
	maxReduce int64
	raiseQDQ  bool // qdq-opset=19
	calibMem  int64
}

func parseOptions(ctx *pass.Context) *options {
	o := &options{low: ir.Float16, keepIO: ctx.Opt("keep-io") == "true", data: ctx.Opt("data")}
	if ctx.Opt("type") == "bf16" {
		o.low = ir.BFloat16
	}
	if s := ctx.Opt("keep"); s != "" {
		o.keep = regexp.MustCompile(s)
	}
	o.batch, _ = strconv.Atoi(ctx.Opt("batch"))
	o.margin, _ = strconv.ParseFloat(ctx.Opt("margin"), 64)
	o.maxReduce, _ = strconv.ParseInt(ctx.Opt("max-reduce"), 10, 64)
	o.raiseQDQ = ctx.Opt("qdq-opset") == "19"
	o.calibMem = calib.MaxBytesOf(ctx.Opt(calib.MemOption.Name))
	return o
}

func run(ctx *pass.Context) error {
	o := parseOptions(ctx)
	m := ctx.Model
	br := ctx.ResultOf(blocks.Pass).(*blocks.Result)
	if o.raiseQDQ {
		raised, err := raiseForQDQ(ctx, m)
		if err != nil {
			return err
		}
		if raised {
			ctx.Changed()
		}
	}
	p := newPlan(m, o, br)

	// Calibrate before anything changes: the model as given is the one ORT can run.
	if err := p.calibrate(ctx); err != nil {
		return err
	}
	p.decide()
	st, err := p.apply()
	if err != nil {
		return err
	}
	if st.changed {
		ctx.Changed()
	}
	p.report(ctx, st)
	return nil
}

// raiseForQDQ raises a model holding QuantizeLinear/DequantizeLinear below opset 19 to
// 19, the first where their scale (and so DequantizeLinear's output and QuantizeLinear's
// input) may be float16 or bfloat16: below it an INT8 model typed FP16 keeps every
// quantized GEMM and its Q/DQ in float32, which is what TensorRT 11 then runs. The raise
// is precision's, not qdq's: only the typing gains from it, and a model quantized
// elsewhere (QAT exports) gets it too. A model that cannot be raised keeps its import,
// and the Q/DQ stay float32 (qdqReason), with the reason in a note.
func raiseForQDQ(ctx *pass.Context, m *ir.Model) (bool, error) {
	from := m.Opset("")
	if from >= 19 || !hasQDQ(m.Graph) {
		return false, nil
	}
	if why := opsets.Require(m, 19, 19, "float16/bfloat16 QuantizeLinear/DequantizeLinear scales", nil); why != "" {
		ctx.Note("Q/DQ stay float32: %s", why)
		return false, nil
	}
	ctx.Note("opset %d → 19: QuantizeLinear/DequantizeLinear take the narrow type with their neighbours", from)
	return true, nil
}

func hasQDQ(g *ir.Graph) bool {
	for _, n := range g.Nodes() {
		if (n.Domain == "" || n.Domain == "ai.onnx") && (n.OpType == "QuantizeLinear" || n.OpType == "DequantizeLinear") {
			return true
		}
	}
	return false
}

// calibrate fills p.ranges with the calibrated ranges of the float32 activations whose
// rules are not settled already (nodes kept by an earlier run are).
//
// After qdq in the same pipeline run on the same data, the ranges are the float
// model's, which qdq's calibration measured for this step (calib.Shared): the values
// the typing must keep within float16 are the model's, of which the Q/DQ pairs are an
// approximation. A DequantizeLinear output, which the float model lacks, takes the
// range its quantization grid gives the float range it reads (sharedQDQRange). Only what
// that leaves unknown (a value a later pass made) is calibrated here.
func (p *plan) calibrate(ctx *pass.Context) error {
	if p.o.data == "none" {
		ctx.Note("ranges: data=none: static rules only (constants' ranges, no calibration)")
		return nil
	}
	need := p.calibrationTensors()
	if len(need) == 0 {
		return nil
	}
	source := p.o.data
	if sh, ok := ctx.Shared(calib.SharedKey{Data: p.o.data, Batch: p.o.batch}).(*calib.Shared); ok {
		var rest []string
		for _, name := range need {
			if r, ok := sharedRange(sh, p.g.Value(name)); ok {
				p.ranges[name] = r
			} else {
				rest = append(rest, name)
			}
		}
		ctx.Count("precision: ranges from qdq's calibration", len(need)-len(rest))
		ctx.Debugf("not in the shared statistics, calibrated here: %s", strings.Join(rest, ", "))
		need = rest
		source = fmt.Sprintf("%s by the qdq step before (float model, %d batches)", p.o.data, sh.Batches)
		if len(rest) > 0 {
			source += fmt.Sprintf(", %d tensors here", len(rest))
		}
	}
	batches := 0
	if len(need) > 0 {
		stats, err := calib.CollectModel(p.m, need, p.o.data, p.o.batch, calib.Options{MaxBytes: p.o.calibMem})
		if err != nil {
			return fmt.Errorf("precision: range calibration: %w (data=none applies the static rules only)", err)
		}
		for name, h := range stats.Tensors {
			p.ranges[name] = valueRange{abs: h.AbsMax, max: h.Max, known: h.Count > 0}
		}
		ctx.Count("precision: tensors calibrated", len(stats.Tensors))
		ctx.Count("precision: calibration ORT passes", stats.Passes)
		batches = stats.Batches
	}
	ctx.Note("%s", p.rangeSummary(source, batches))
	return nil
}
