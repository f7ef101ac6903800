package precision

import "github.com/qcc-dev/qcc/ir"

// slot says how one input or output of an operator is typed when the operator runs in
// the narrow type.
type slot int

const (
	slotT    slot = iota // follows the operator's compute type (the usual case)
	slotF32              // float32 whatever the compute type (statistics outputs, Resize scales)
	slotFree             // any float type, read as it is (Shape's input, Dropout's ratio)
)

// opType is one row of the operator table.
type opType struct {
	// bf16 is the default-domain opset from which the operator's T includes bfloat16
	// (0: never); fp16 is false for operators without float16 (Range).
	bf16  int64
	noF16 bool
	// in and out override the slots of some inputs and outputs (index → slot).
	in, out map[int]slot
}

// stdDefault is the row of a default-domain operator the table does not list: float16
// always, bfloat16 from opset 13, where most operators gained it.
var stdDefault = opType{bf16: 13}

// stdOps lists the default-domain operators that differ from stdDefault. The opsets
// are those of the ONNX operator changelog; LayerNormalization's Mean and InvStdDev are
// its stash type U, float32.
var stdOps = map[string]opType{
	"Range":                 {noF16: true},
	"Conv":                  {bf16: 22},
	"ConvTranspose":         {bf16: 22},
	"Where":                 {bf16: 16},
	"Relu":                  {bf16: 14},
	"LessOrEqual":           {bf16: 16},
	"GreaterOrEqual":        {bf16: 16},
	"CumSum":                {bf16: 14},
	"Trilu":                 {bf16: 14},
	"Einsum":                {bf16: 0},
	"Shape":                 {bf16: 1, in: map[int]slot{0: slotFree}},
	"Size":                  {bf16: 1, in: map[int]slot{0: slotFree}},
	"Dropout":               {bf16: 13, in: map[int]slot{1: slotFree}},
	"Resize":                {bf16: 13, in: map[int]slot{1: slotFree, 2: slotF32}},
	"LayerNormalization":    {bf16: 17, out: map[int]slot{1: slotF32, 2: slotF32}},
	"RMSNormalization":      {bf16: 23},
	"Attention":             {bf16: 23},
	"RotaryEmbedding":       {bf16: 23},
	"Gelu":                  {bf16: 20},
	"GroupNormalization":    {bf16: 18},
	"InstanceNormalization": {bf16: 0},
	// ONNX Runtime registers its RMSNorm in the default domain; inv_std_var is U, float32.
	"SimplifiedLayerNormalization": {bf16: 1, out: map[int]slot{1: slotF32}},

	// From 19 (qdqReason keeps them float32 below) the scale is T1/T2, float16 or
	// bfloat16; the quantized side (an FP8 zero point, input or output) is read as it is.
	"QuantizeLinear":   {bf16: 19, in: map[int]slot{2: slotFree}, out: map[int]slot{0: slotFree}},
	"DequantizeLinear": {bf16: 19, in: map[int]slot{0: slotFree, 2: slotFree}},
}

// msOps lists the com.microsoft operators whose type constraints allow float16, from
// ONNX Runtime's ContribOperators.md; bf16 is 1 where T also lists bfloat16. An
// operator absent from the table stays float32.
var msOps = map[string]opType{
	"Attention":                        {bf16: 1},
	"MultiHeadAttention":               {},
	"GroupQueryAttention":              {bf16: 1},
	"RotaryEmbedding":                  {bf16: 1},
	"SkipLayerNormalization":           {bf16: 1, out: map[int]slot{1: slotF32, 2: slotF32}},
	"SkipSimplifiedLayerNormalization": {bf16: 1, out: map[int]slot{1: slotF32, 2: slotF32}},
	"EmbedLayerNormalization":          {},
	"BiasGelu":                         {},
	"FastGelu":                         {bf16: 1},
	"Gelu":                             {bf16: 1},
	"QuickGelu":                        {bf16: 1},
	"FusedMatMul":                      {bf16: 1},
	"QAttention":                       {},
	"MatMulIntegerToFloat":             {},
}

// lookup returns the operator's row; ok is false for an operator of an unknown domain
// or a com.microsoft operator without float16.
func lookup(n *ir.Node) (opType, bool) {
	switch n.Domain {
	case "", "ai.onnx":
		if t, ok := stdOps[n.OpType]; ok {
			return t, true
		}
		return stdDefault, true
	case "com.microsoft":
		t, ok := msOps[n.OpType]
		return t, ok
	}
	return opType{}, false
}

func (t opType) inSlot(i int) slot {
	if s, ok := t.in[i]; ok {
		return s
	}
	return slotT
}

func (t opType) outSlot(i int) slot {
	if s, ok := t.out[i]; ok {
		return s
	}
	return slotT
}
