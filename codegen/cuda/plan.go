package cuda

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// A plan is what the templates render: the kernels (one per distinct
// specialisation) and the block instances that use them.
type plan struct {
	Source    string
	Kernels   []*kernel
	Instances []*instance
	Skipped   []string // blocks and nodes without a kernel, with the reason
	Notes     []string // blocks with a kernel: which path each got and why
}

// kernel is one specialisation: a C++ Spec struct of compile-time constants
// and a pair of launch functions (_f32 and _f16).
type kernel struct {
	Name      string // C function name without the type suffix: qcc_skip_layernorm_h768
	Struct    string // the Spec struct in kernels.cu
	Doc       string // one line: what it computes
	Launcher  string // the C++ template it instantiates (qcc::SkipLayerNorm)
	Header    string // the qcc/ header that defines it
	Consts    []constant
	Params    []param // in the launcher's order; absent ones are passed as nullptr
	Scalars   []scalar
	Instances []*instance
	// Elems are the element types it has launch functions for, as indices into
	// variants; nil is float and half.
	Elems []int
	key   string
}

// elems are the element types k has launch functions for.
func (k *kernel) elems() []int {
	if k.Elems == nil {
		return []int{elemFloat, elemHalf}
	}
	return k.Elems
}

type constant struct{ Name, CType, Value string }

// param is a pointer argument. Elem is "T" for the kernel's element type
// (float or qcc_half), or a fixed C type.
type param struct {
	Name    string
	Elem    string
	Out     bool
	Present bool
	Doc     string
}

type scalar struct{ CType, Name string }

// instance is one block (or Q/DQ node) of the model, bound to its kernel.
type instance struct {
	ID string
	// Fn is the check function's name, a C identifier unique in the plan (a body's
	// block ids hold its graph's name: "then/attention.0").
	Fn      string
	Layer   int
	Where   string // "layer 3", "before the encoder", "node NAME"
	Variant string
	Kernel  *kernel
	// Bind names the model value behind each present parameter, for the header.
	Bind []binding
	// Check data: tensors in parameter order (inputs first, then outputs) and
	// the runtime dims.
	Tensors []*tensor
	Dims    []dim
	// Packed: q, k and v are uploaded as one [rows, 3 * hidden] buffer.
	Packed bool
	Hidden int64
	// Bytes moved by one launch per element size (read + written).
	bytes func(elem int) float64
	// flops is the arithmetic of one launch, where it is reported (attention).
	flops float64
	// bound is the model value behind each parameter: the check data's reference is
	// the model's own subgraph from the bound inputs to the bound outputs.
	bound map[string]*ir.Value
	// gemm: the packed q, k, v are X W + b, computed inside the model's operator.
	gemm *gemm
	// sz sizes the model values of the instance's subgraph.
	sz sizer
	// Elem is the element type of the block's values in the model (elemFloat,
	// elemHalf, elemBF16): check.cu runs a float model's instance in float and
	// half, a half or bfloat16 model's in its own type only, since ONNX Runtime's
	// expected outputs are then rounded to it.
	Elem int
	// Tolerances per type: f32, f16, bf16.
	Tol [3][2]float64
}

// elemNames name the element types in notes.
var elemNames = []string{"float", "half", "bfloat16"}

// The element types, indices into variants.
const (
	elemFloat = iota
	elemHalf
	elemBF16
)

// elemOf is the element variant of a model value's type: float unless half
// or bfloat16.
func elemOf(v *ir.Value) int {
	if v != nil && v.Type != nil {
		switch v.Type.DType {
		case ir.Float16:
			return elemHalf
		case ir.BFloat16:
			return elemBF16
		}
	}
	return elemFloat
}

// checked are the element types check.cu runs the instance in: its own, and
// half too for a float model; float for a bfloat16 model's block whose kernel has
// no bfloat16 launch function (only the tensor-core attention has one): float
// holds its values exactly.
func (in *instance) checked() []int {
	var out []int
	for _, e := range in.Kernel.elems() {
		if e == in.Elem || in.Elem == elemFloat && e == elemHalf {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		out = []int{elemFloat}
	}
	return out
}

// tol is the tolerance of a check in element type e: e's, or the model's type's
// when its expected outputs are rounded to it.
func (in *instance) tol(e int) [2]float64 {
	if in.Elem != elemFloat {
		return in.Tol[in.Elem]
	}
	return in.Tol[e]
}

type binding struct{ Param, Value, Type string }

// gemm is com.microsoft.Attention's QKV projection: x [.., in] times the constant w
// [in, 3 * hidden] plus b [3 * hidden]; q, k and v are its three column blocks.
type gemm struct {
	x, w, b *ir.Value
	hidden  int64
}

type dim struct {
	CType, Name string
	Value       int64
}

// tensor is one array of the check data.
type tensor struct {
	Param  string // the kernel parameter
	File   string // in check/, named by the instance when the builder adds it
	DType  ir.DataType
	Shape  []int64
	Out    bool
	Source string // "model", "random" or "onnxruntime"
	// from is the model constant a "model" tensor copies.
	from *ir.Tensor
	// gen makes a "random" tensor's values.
	gen generator
}

func (t *tensor) Count() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// CType is the host element type check.cu loads the file as.
func (t *tensor) CType() string {
	switch t.DType {
	case ir.Int32:
		return "int32_t"
	case ir.Int8:
		return "int8_t"
	}
	return "float"
}

// Defaults for symbolic dimensions in the check data.
const (
	defaultBatch = 3 // the last sequence of the check data is fully padded
	defaultSeq   = 128
	maxSeq       = 512
)

// sizer resolves a value's shape for the check data: known dims as they are,
// a symbolic dim named like a batch to batch, any other to seq.
type sizer struct{ batch, seq int64 }

func (s sizer) shape(v *ir.Value) ([]int64, bool) {
	if v == nil || v.Type == nil || !v.Type.HasShape {
		return nil, false
	}
	out := make([]int64, len(v.Type.Shape))
	for i, d := range v.Type.Shape {
		switch {
		case d.Known:
			out[i] = d.Value
		case strings.Contains(strings.ToLower(d.Param), "batch") || (d.Param == "" && i == 0):
			out[i] = s.batch
		default:
			out[i] = s.seq
		}
	}
	return out, true
}

func lastDim(v *ir.Value) (int64, bool) {
	if v == nil || v.Type == nil || len(v.Type.Shape) == 0 {
		return 0, false
	}
	d := v.Type.Shape[len(v.Type.Shape)-1]
	return d.Value, d.Known
}

func constDims(v *ir.Value) []int64 {
	if t := patterns.ConstOf(v); t != nil {
		return t.Dims
	}
	return nil
}

// width finds a block's row length: the length of a 1-D parameter (gamma,
// bias) or the last dim of a value.
func width(vs ...*ir.Value) (int64, bool) {
	for _, v := range vs {
		if ds := constDims(v); len(ds) == 1 && ds[0] > 0 {
			return ds[0], true
		}
		if v != nil && v.Type != nil && v.Type.Rank() == 1 && v.Type.Shape[0].Known {
			return v.Type.Shape[0].Value, true
		}
	}
	for _, v := range vs {
		if n, ok := lastDim(v); ok && n > 0 {
			return n, true
		}
	}
	return 0, false
}

func prod(ds []int64) int64 {
	n := int64(1)
	for _, d := range ds {
		n *= d
	}
	return n
}

// ---- literals ----

func cFloat(f float64) string {
	f32 := float32(f)
	switch {
	case math.IsInf(float64(f32), -1):
		return "-INFINITY"
	case math.IsInf(float64(f32), 1):
		return "INFINITY"
	case math.IsNaN(float64(f32)):
		return "NAN"
	}
	s := strconv.FormatFloat(float64(f32), 'g', -1, 32)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s + "f"
}

func cBool(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func cInt(n int64) string { return strconv.FormatInt(n, 10) }

// sanitize makes a model name safe inside a // comment and a string literal:
// printable ASCII, no backslash (which could splice lines) and no double quote.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '\\' || c == '"' {
			b[i] = '?'
		}
	}
	return string(b)
}

func typeString(v *ir.Value) string {
	if v == nil || v.Type == nil {
		return "?"
	}
	return v.Type.String()
}

// ---- building ----

type builder struct {
	p     *plan
	sz    sizer
	byKey map[string]*kernel
	// names are the kernel names, check functions and data file stems taken.
	names map[string]bool
	// counter numbers the node instances (quantize, dequantize, rotary) per graph.
	counter map[string]int
	// prefix names the graph whose nodes are planned: "" for the main graph,
	// "<name>/" for a body, as the blocks analysis names its blocks.
	prefix string
}

func newBuilder(source string, sz sizer) *builder {
	return &builder{p: &plan{Source: source}, sz: sz, byKey: map[string]*kernel{}, names: map[string]bool{}, counter: map[string]int{}}
}

func (b *builder) skip(id, variant, why string) {
	b.p.Skipped = append(b.p.Skipped, fmt.Sprintf("%s (%s): %s", id, variant, why))
}

func (b *builder) note(id, variant, what string) {
	b.p.Notes = append(b.p.Notes, fmt.Sprintf("%s (%s): %s", id, variant, what))
}

// kernelFor returns the kernel with k's specialisation, adding k when it is
// new. A name taken by another specialisation gets a _1, _2, ... suffix.
func (b *builder) kernelFor(k *kernel) *kernel {
	var key strings.Builder
	key.WriteString(k.Launcher)
	for _, c := range k.Consts {
		fmt.Fprintf(&key, ";%s=%s", c.Name, c.Value)
	}
	for _, p := range k.Params {
		fmt.Fprintf(&key, ";%s:%v", p.Name, p.Present)
	}
	fmt.Fprintf(&key, ";elems=%v", k.Elems)
	k.key = key.String()
	if old, ok := b.byKey[k.key]; ok {
		return old
	}
	k.Name = b.fresh(k.Name)
	k.Struct = structName(k.Name)
	b.byKey[k.key] = k
	b.p.Kernels = append(b.p.Kernels, k)
	return k
}

// structName turns qcc_skip_layernorm_h768 into SkipLayernormH768Spec.
func structName(name string) string {
	var s strings.Builder
	for _, part := range strings.Split(strings.TrimPrefix(name, "qcc_"), "_") {
		if part == "" {
			continue
		}
		s.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return s.String() + "Spec"
}

// fresh returns base, or base_1, base_2, ... when base is taken, and takes it.
func (b *builder) fresh(base string) string {
	name := base
	for i := 1; b.names[name]; i++ {
		name = fmt.Sprintf("%s_%d", base, i)
	}
	b.names[name] = true
	return name
}

func (b *builder) add(in *instance, k *kernel) {
	in.Kernel = b.kernelFor(k)
	in.Kernel.Instances = append(in.Kernel.Instances, in)
	in.Fn = b.fresh("Check" + identifier(in.ID))
	stem := b.fresh(fileStem(in.ID))
	for _, t := range in.Tensors {
		t.File = stem + "." + t.Param + ".bin"
	}
	b.p.Instances = append(b.p.Instances, in)
}

// fileStem makes a block id a file name in check/: a body's graph name may hold
// a '/' or anything else a path should not.
func fileStem(id string) string {
	return strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' {
			return c
		}
		return '_'
	}, id)
}

// bind records the model value behind each parameter; the first of the kernel's
// element type gives the instance's element type.
func (b *builder) bind(in *instance, k *kernel, values map[string]*ir.Value) {
	in.bound = map[string]*ir.Value{}
	typed := false
	for _, p := range k.Params {
		if !p.Present {
			continue
		}
		if v := values[p.Name]; v != nil {
			if p.Elem == "T" && !typed {
				in.Elem, typed = elemOf(v), true
			}
			in.bound[p.Name] = v
			in.Bind = append(in.Bind, binding{p.Name, sanitize(v.Name), sanitize(typeString(v))})
		}
	}
}

func nameOf(v *ir.Value) string {
	if v == nil {
		return "0"
	}
	return v.Name
}

// constOrRandom is a check-data input: the model's constant when there is
// one, else deterministic random values of the given shape.
func constOrRandom(param string, v *ir.Value, shape []int64, gen generator) *tensor {
	t := &tensor{Param: param, DType: ir.Float, Shape: shape, Source: "random", gen: gen}
	if c := patterns.ConstOf(v); c != nil && c.DType == ir.Float && prod(c.Dims) == prod(shape) {
		t.Source, t.from, t.Shape = "model", c, append([]int64{}, c.Dims...)
	}
	return t
}

func random(param string, dt ir.DataType, shape []int64, gen generator) *tensor {
	return &tensor{Param: param, DType: dt, Shape: shape, Source: "random", gen: gen}
}

func expected(param string, dt ir.DataType, shape []int64) *tensor {
	return &tensor{Param: param, DType: dt, Shape: shape, Out: true, Source: "onnxruntime"}
}

// The tolerances: |got - want| <= atol + rtol * |want|, in float and in half.
var (
	tolNorm      = [3][2]float64{{1e-4, 1e-4}, {3e-2, 1e-2}, {3e-2, 3e-2}}
	tolGelu      = [3][2]float64{{1e-5, 1e-4}, {1e-2, 1e-2}, {3e-2, 3e-2}}
	tolAttention = [3][2]float64{{1e-4, 1e-3}, {2e-2, 2e-2}, {3e-2, 3e-2}}
	// The tensor-core attention: half inputs and probabilities, float sums; bfloat16
	// keeps 8 bits where half keeps 11.
	tolFlash = [3][2]float64{{0, 0}, {1e-2, 1e-2}, {3e-2, 3e-2}}
	// Quantized values are exact in float (a rint-vs-round slip is one step); from half
	// inputs, x / scale itself moves and one step is allowed.
	tolQuantize = [3][2]float64{{0, 0}, {1, 0}, {1, 0}}
	tolDequant  = [3][2]float64{{1e-6, 1e-6}, {1e-3, 1e-3}, {1e-2, 1e-2}}
)

func (b *builder) block(bl *transformer.Block) {
	switch bl.Kind {
	case transformer.LayerNorm:
		b.layerNorm(bl, true)
	case transformer.RMSNorm:
		b.layerNorm(bl, false)
	case transformer.SkipLayerNorm:
		b.skipLayerNorm(bl, true)
	case transformer.SkipRMSNorm:
		b.skipLayerNorm(bl, false)
	case transformer.Gelu:
		b.gelu(bl)
	case transformer.Attention:
		b.attention(bl)
	case transformer.Embedding:
		b.embedding(bl)
	case transformer.FFN:
		// An annotation over GEMMs and an activation that is a block of its own.
	case transformer.Rotary:
		// Runs as the model's operator; the node check says so once, the attention
		// kernel reads the rotated Q and K.
	default:
		b.skip(bl.ID, bl.Variant, fmt.Sprintf("no kernel for %s blocks", bl.Kind))
	}
}

func newInstance(bl *transformer.Block) *instance {
	where := "before the encoder"
	if bl.Layer >= 0 {
		where = fmt.Sprintf("layer %d", bl.Layer)
	}
	return &instance{ID: bl.ID, Layer: bl.Layer, Where: where, Variant: bl.Variant}
}

// newInstance sizes the instance's values like the builder's.
func (b *builder) newInstance(bl *transformer.Block) *instance {
	in := newInstance(bl)
	in.sz = b.sz
	return in
}

func (b *builder) rowsShape(bl *transformer.Block, v *ir.Value, h int64) ([]int64, int64, bool) {
	shape, ok := b.sz.shape(v)
	if !ok || len(shape) == 0 || shape[len(shape)-1] != h {
		b.skip(bl.ID, bl.Variant, fmt.Sprintf("input shape %s does not end in the row length %d", typeString(v), h))
		return nil, 0, false
	}
	return shape, prod(shape[:len(shape)-1]), true
}

// rowsOf takes the row length from the first of vs that gives one (see width)
// and then the shape and row count of in (see rowsShape); it records the skip
// and returns false when either is missing.
func (b *builder) rowsOf(bl *transformer.Block, in *ir.Value, vs ...*ir.Value) (shape []int64, rows, h int64, ok bool) {
	h, ok = width(vs...)
	if !ok {
		// Kernels are specialised on the row length: a channel-first activation, which
		// ends in the sequence, has none.
		b.skip(bl.ID, bl.Variant, fmt.Sprintf("row length unknown: input %s does not end in a constant dimension", typeString(in)))
		return nil, 0, 0, false
	}
	shape, rows, ok = b.rowsShape(bl, in, h)
	return shape, rows, h, ok
}

// normTensors makes the gamma tensor and, when the block has one, the beta
// tensor of a LayerNorm-like block with rows of h.
func normTensors(bl *transformer.Block, gamma, beta *ir.Value, h int64) []*tensor {
	ts := []*tensor{constOrRandom("gamma", gamma, []int64{h}, uniform(bl.ID+".gamma", 0.5, 1.5))}
	if beta != nil {
		ts = append(ts, constOrRandom("beta", beta, []int64{h}, uniform(bl.ID+".beta", -0.5, 0.5)))
	}
	return ts
}

// normNames are the kernel name, the formula and the norm's name of a LayerNorm
// (centred) or an RMSNorm (not).
func normNames(centred bool, eps float64) (name, formula, norm string) {
	if centred {
		return "layernorm", fmt.Sprintf("(input - mean) / sqrt(var + %s)", trimF(cFloat(eps))), "LayerNorm"
	}
	return "rmsnorm", fmt.Sprintf("input / sqrt(mean(input^2) + %s)", trimF(cFloat(eps))), "RMSNorm"
}

// layerNorm plans a LayerNorm block or, uncentred, an RMSNorm block
// (SimplifiedLayerNormalization, RMSNormalization-23 or its decomposed form): one
// row routine with a switch.
func (b *builder) layerNorm(bl *transformer.Block, centred bool) {
	in, gamma, beta := bl.Role("input"), bl.Role("gamma"), bl.Role("beta")
	if gamma == nil {
		b.skip(bl.ID, bl.Variant, "no gamma (a norm without scale has no kernel)")
		return
	}
	shape, rows, h, ok := b.rowsOf(bl, in, gamma, beta, in)
	if !ok {
		return
	}
	eps := bl.Param("epsilon", 1e-5)
	name, formula, norm := normNames(centred, eps)
	k := &kernel{
		Name: fmt.Sprintf("qcc_%s_h%d", name, h), Launcher: "qcc::LayerNorm", Header: "qcc/layernorm.cuh",
		Doc: fmt.Sprintf("%s over rows of %d: output = %s * gamma%s.", norm, h, formula, plusIf(beta != nil, " + beta")),
		Consts: []constant{
			{"kHidden", "int", cInt(h)},
			{"kEpsilon", "float", cFloat(eps)},
			{"kHasBeta", "bool", cBool(beta != nil)},
			{"kCentred", "bool", cBool(centred)},
		},
		Params: []param{
			{Name: "input", Elem: "T", Present: true, Doc: "[rows, hidden]"},
			{Name: "gamma", Elem: "T", Present: true, Doc: "[hidden]"},
			{Name: "beta", Elem: "T", Present: beta != nil, Doc: "[hidden]"},
			{Name: "output", Elem: "T", Out: true, Present: true, Doc: "[rows, hidden]"},
		},
		Scalars: []scalar{{"int", "rows"}},
	}
	inst := b.newInstance(bl)
	inst.Dims = []dim{{"int", "rows", rows}}
	inst.Tensors = append([]*tensor{random("input", ir.Float, shape, uniform(bl.ID+".input", -2, 2))}, normTensors(bl, gamma, beta, h)...)
	inst.Tensors = append(inst.Tensors, expected("output", ir.Float, shape))
	inst.bytes = func(e int) float64 { return float64(e) * float64(2*rows*h+2*h) }
	inst.Tol = tolNorm
	b.bind(inst, k, map[string]*ir.Value{"input": in, "gamma": gamma, "beta": beta, "output": bl.Role("output")})
	b.add(inst, k)
}

// skipLayerNorm plans skip+LayerNorm or, uncentred, skip+RMSNorm
// (SkipSimplifiedLayerNormalization and the decomposed residual Add + RMSNorm).
func (b *builder) skipLayerNorm(bl *transformer.Block, centred bool) {
	in, skip, gamma, beta, bias, sum := bl.Role("input"), bl.Role("skip"), bl.Role("gamma"), bl.Role("beta"), bl.Role("bias"), bl.Role("sum")
	if gamma == nil || skip == nil {
		b.skip(bl.ID, bl.Variant, "no gamma or no skip input")
		return
	}
	shape, rows, h, ok := b.rowsOf(bl, in, gamma, beta, bias, in)
	if !ok {
		return
	}
	if ss, ok := b.sz.shape(skip); !ok || prod(ss) != prod(shape) {
		b.skip(bl.ID, bl.Variant, fmt.Sprintf("skip %s is broadcast against input %s; the kernel wants equal shapes", typeString(skip), typeString(in)))
		return
	}
	eps := bl.Param("epsilon", 1e-5)
	name, _, norm := normNames(centred, eps)
	k := &kernel{
		Name: fmt.Sprintf("qcc_skip_%s_h%d", name, h), Launcher: "qcc::SkipLayerNorm", Header: "qcc/layernorm.cuh",
		Doc: fmt.Sprintf("%s(input + skip%s) over rows of %d, epsilon %s%s.", norm, plusIf(bias != nil, " + bias"), h, trimF(cFloat(eps)), plusIf(sum != nil, "; the sum is written too")),
		Consts: []constant{
			{"kHidden", "int", cInt(h)},
			{"kEpsilon", "float", cFloat(eps)},
			{"kHasBeta", "bool", cBool(beta != nil)},
			{"kCentred", "bool", cBool(centred)},
			{"kHasBias", "bool", cBool(bias != nil)},
			{"kHasSum", "bool", cBool(sum != nil)},
		},
		Params: []param{
			{Name: "input", Elem: "T", Present: true, Doc: "[rows, hidden]"},
			{Name: "skip", Elem: "T", Present: true, Doc: "[rows, hidden]"},
			{Name: "bias", Elem: "T", Present: bias != nil, Doc: "[hidden]"},
			{Name: "gamma", Elem: "T", Present: true, Doc: "[hidden]"},
			{Name: "beta", Elem: "T", Present: beta != nil, Doc: "[hidden]"},
			{Name: "output", Elem: "T", Out: true, Present: true, Doc: "[rows, hidden]"},
			{Name: "sum", Elem: "T", Out: true, Present: sum != nil, Doc: "[rows, hidden]"},
		},
		Scalars: []scalar{{"int", "rows"}},
	}
	inst := b.newInstance(bl)
	inst.Dims = []dim{{"int", "rows", rows}}
	inst.Tensors = []*tensor{
		random("input", ir.Float, shape, uniform(bl.ID+".input", -2, 2)),
		random("skip", ir.Float, shape, uniform(bl.ID+".skip", -2, 2)),
	}
	if bias != nil {
		inst.Tensors = append(inst.Tensors, constOrRandom("bias", bias, []int64{h}, uniform(bl.ID+".bias", -0.5, 0.5)))
	}
	inst.Tensors = append(inst.Tensors, normTensors(bl, gamma, beta, h)...)
	inst.Tensors = append(inst.Tensors, expected("output", ir.Float, shape))
	if sum != nil {
		inst.Tensors = append(inst.Tensors, expected("sum", ir.Float, shape))
	}
	outs := int64(1)
	if sum != nil {
		outs = 2
	}
	inst.bytes = func(e int) float64 { return float64(e) * float64((2+outs)*rows*h+3*h) }
	inst.Tol = tolNorm
	b.bind(inst, k, map[string]*ir.Value{"input": in, "skip": skip, "bias": bias, "gamma": gamma, "beta": beta, "output": bl.Role("output"), "sum": sum})
	b.add(inst, k)
}

func (b *builder) gelu(bl *transformer.Block) {
	in, bias := bl.Role("input"), bl.Role("bias")
	shape, rows, n, ok := b.rowsOf(bl, in, bias, in)
	if !ok {
		return
	}
	approx := int(bl.Param("approximation", 0))
	alpha := bl.Param("alpha", 1.702)
	var name, doc string
	switch approx {
	case 0:
		name, doc = "gelu", "GELU (erf)"
	case 1:
		name, doc = "fast_gelu", "GELU (tanh approximation)"
	case 2:
		name, doc = "quick_gelu", fmt.Sprintf("QuickGelu x * sigmoid(%s * x)", trimF(cFloat(alpha)))
	default:
		b.skip(bl.ID, bl.Variant, fmt.Sprintf("unknown GELU approximation %d", approx))
		return
	}
	doc = fmt.Sprintf("%s of input%s", doc, plusIf(bias != nil, " + bias"))
	if bias != nil {
		name = "bias_" + name
	}
	if approx != 2 {
		alpha = 1.702 // unused; one value keeps equal kernels equal
	}
	k := &kernel{
		Name: fmt.Sprintf("qcc_%s_n%d", name, n), Launcher: "qcc::BiasGelu", Header: "qcc/gelu.cuh",
		Doc: fmt.Sprintf("%s, over rows of %d.", doc, n),
		Consts: []constant{
			{"kColumns", "int", cInt(n)},
			{"kApprox", "int", []string{"qcc::kGeluErf", "qcc::kGeluTanh", "qcc::kGeluSigmoid"}[approx]},
			{"kAlpha", "float", cFloat(alpha)},
			{"kHasBias", "bool", cBool(bias != nil)},
		},
		Params: []param{
			{Name: "input", Elem: "T", Present: true, Doc: "[rows, columns]"},
			{Name: "bias", Elem: "T", Present: bias != nil, Doc: "[columns]"},
			{Name: "output", Elem: "T", Out: true, Present: true, Doc: "[rows, columns]"},
		},
		Scalars: []scalar{{"int", "rows"}},
	}
	inst := b.newInstance(bl)
	inst.Dims = []dim{{"int", "rows", rows}}
	inst.Tensors = []*tensor{random("input", ir.Float, shape, uniform(bl.ID+".input", -4, 4))}
	if bias != nil {
		inst.Tensors = append(inst.Tensors, constOrRandom("bias", bias, []int64{n}, uniform(bl.ID+".bias", -0.5, 0.5)))
	}
	inst.Tensors = append(inst.Tensors, expected("output", ir.Float, shape))
	inst.bytes = func(e int) float64 { return float64(e) * float64(2*rows*n+n) }
	inst.Tol = tolGelu
	b.bind(inst, k, map[string]*ir.Value{"input": in, "bias": bias, "output": bl.Role("output")})
	b.add(inst, k)
}

func (b *builder) embedding(bl *transformer.Block) {
	if !bl.Fused {
		b.skip(bl.ID, bl.Variant, "only the fused EmbedLayerNormalization has a kernel (its LayerNorm, if recognised, is a layernorm block)")
		return
	}
	ids, segIDs, posIDs := bl.Role("input_ids"), bl.Role("segment_ids"), bl.Role("position_ids")
	word, pos, seg := bl.Role("word_embedding"), bl.Role("position_embedding"), bl.Role("segment_embedding")
	gamma, beta := bl.Role("gamma"), bl.Role("beta")
	wd, pd, sd := constDims(word), constDims(pos), constDims(seg)
	if len(wd) != 2 || len(pd) != 2 || (seg != nil && len(sd) != 2) || gamma == nil {
		b.skip(bl.ID, bl.Variant, "embedding tables are not constant [rows, hidden] tensors")
		return
	}
	h := wd[1]
	if pd[1] != h || (seg != nil && sd[1] != h) {
		b.skip(bl.ID, bl.Variant, "embedding tables differ in width")
		return
	}
	shape, ok := b.sz.shape(ids)
	if !ok || len(shape) != 2 {
		b.skip(bl.ID, bl.Variant, fmt.Sprintf("input_ids %s is not [batch, seq]", typeString(ids)))
		return
	}
	batch, seq := shape[0], shape[1]
	if posIDs == nil {
		seq = min(seq, pd[0]) // positions are the token indices
	}
	typeVocab := int64(0)
	if seg != nil && segIDs != nil {
		typeVocab = sd[0]
	}
	eps := bl.Param("epsilon", 1e-12)
	k := &kernel{
		Name: fmt.Sprintf("qcc_embed_layernorm_h%d", h), Launcher: "qcc::EmbedLayerNorm", Header: "qcc/embedding.cuh",
		Doc: fmt.Sprintf("LayerNorm(word[input_ids] + position[%s]%s) over rows of %d, epsilon %s.",
			map[bool]string{true: "position_ids", false: "token index"}[posIDs != nil], plusIf(typeVocab > 0, " + segment[segment_ids]"), h, trimF(cFloat(eps))),
		Consts: []constant{
			{"kHidden", "int", cInt(h)},
			{"kEpsilon", "float", cFloat(eps)},
			{"kHasBeta", "bool", cBool(beta != nil)},
			{"kCentred", "bool", "true"},
			{"kVocab", "int", cInt(wd[0])},
			{"kMaxPositions", "int", cInt(pd[0])},
			{"kTypeVocab", "int", cInt(typeVocab)},
			{"kPositionIds", "bool", cBool(posIDs != nil)},
		},
		Params: []param{
			{Name: "input_ids", Elem: "int32_t", Present: true, Doc: "[batch, seq]"},
			{Name: "segment_ids", Elem: "int32_t", Present: typeVocab > 0, Doc: "[batch, seq]"},
			{Name: "position_ids", Elem: "int32_t", Present: posIDs != nil, Doc: "[batch, seq]"},
			{Name: "word_embedding", Elem: "T", Present: true, Doc: fmt.Sprintf("[%d, hidden]", wd[0])},
			{Name: "position_embedding", Elem: "T", Present: true, Doc: fmt.Sprintf("[%d, hidden]", pd[0])},
			{Name: "segment_embedding", Elem: "T", Present: typeVocab > 0, Doc: fmt.Sprintf("[%d, hidden]", typeVocab)},
			{Name: "gamma", Elem: "T", Present: true, Doc: "[hidden]"},
			{Name: "beta", Elem: "T", Present: beta != nil, Doc: "[hidden]"},
			{Name: "output", Elem: "T", Out: true, Present: true, Doc: "[batch, seq, hidden]"},
		},
		Scalars: []scalar{{"int", "batch"}, {"int", "seq"}},
	}
	inst := b.newInstance(bl)
	inst.Dims = []dim{{"int", "batch", batch}, {"int", "seq", seq}}
	bs := []int64{batch, seq}
	inst.Tensors = []*tensor{random("input_ids", ir.Int32, bs, ints(bl.ID+".input_ids", wd[0]))}
	if typeVocab > 0 {
		inst.Tensors = append(inst.Tensors, random("segment_ids", ir.Int32, bs, ints(bl.ID+".segment_ids", typeVocab)))
	}
	if posIDs != nil {
		inst.Tensors = append(inst.Tensors, random("position_ids", ir.Int32, bs, ints(bl.ID+".position_ids", pd[0])))
	}
	inst.Tensors = append(inst.Tensors,
		constOrRandom("word_embedding", word, wd, uniform(bl.ID+".word", -1, 1)),
		constOrRandom("position_embedding", pos, pd, uniform(bl.ID+".position", -1, 1)))
	if typeVocab > 0 {
		inst.Tensors = append(inst.Tensors, constOrRandom("segment_embedding", seg, sd, uniform(bl.ID+".segment", -1, 1)))
	}
	inst.Tensors = append(inst.Tensors, normTensors(bl, gamma, beta, h)...)
	inst.Tensors = append(inst.Tensors, expected("output", ir.Float, []int64{batch, seq, h}))
	tables := int64(2)
	if typeVocab > 0 {
		tables = 3
	}
	idInputs := int64(1 + map[bool]int64{true: 1}[typeVocab > 0] + map[bool]int64{true: 1}[posIDs != nil])
	inst.bytes = func(e int) float64 {
		return float64(4*idInputs*batch*seq) + float64(e)*float64((tables+1)*batch*seq*h+2*h)
	}
	inst.Tol = tolNorm
	b.bind(inst, k, map[string]*ir.Value{"input_ids": ids, "segment_ids": segIDs, "position_ids": posIDs,
		"word_embedding": word, "position_embedding": pos, "segment_embedding": seg, "gamma": gamma, "beta": beta, "output": bl.Role("output")})
	b.add(inst, k)
}

// nodeID numbers a node instance of kind in the graph being planned, named like
// the blocks there.
func (b *builder) nodeID(kind string) string {
	id := fmt.Sprintf("%s%s.%d", b.prefix, kind, b.counter[b.prefix+kind])
	b.counter[b.prefix+kind]++
	return id
}

// rotary records a fused rotary embedding (RotaryEmbedding-23 or ONNX Runtime's):
// it has no kernel, and the reason says where the rotation happens instead.
func (b *builder) rotary(n *ir.Node) {
	id := b.nodeID("rotary")
	variant := n.OpType
	if n.Domain != "" && n.Domain != "ai.onnx" {
		variant = n.Domain + "." + n.OpType
	}
	b.skip(id, variant, fmt.Sprintf("node %s: rotary embedding has no kernel; it runs as the model's operator and the attention kernel reads the rotated Q and K", sanitize(n.Name)))
}

// qdq makes an instance for an INT8 QuantizeLinear or DequantizeLinear node.
func (b *builder) qdq(n *ir.Node) {
	quant := n.OpType == "QuantizeLinear"
	kind := map[bool]string{true: "quantize", false: "dequantize"}[quant]
	id := b.nodeID(kind)
	variant := n.OpType
	if n.Domain != "" {
		variant = n.Domain + "." + n.OpType
	}
	x, scaleV, zpV := n.Input(0), n.Input(1), n.Input(2)
	scale, zp := patterns.ConstOf(scaleV), patterns.ConstOf(zpV)
	switch {
	case scale == nil || scale.DType != ir.Float:
		b.skip(id, variant, "scale is not a float constant")
		return
	case zpV != nil && (zp == nil || zp.DType != ir.Int8):
		b.skip(id, variant, "zero point is not an int8 constant (only INT8 has kernels)")
		return
	case zpV == nil && quant:
		b.skip(id, variant, "no zero point: the output would be uint8 (only INT8 has kernels)")
		return
	case !quant && (x.Type == nil || x.Type.DType != ir.Int8):
		b.skip(id, variant, "input is not int8")
		return
	case quant && (x.Type == nil || x.Type.DType != ir.Float):
		b.skip(id, variant, "input is not float")
		return
	case n.Attr("block_size") != nil && n.AttrInt("block_size", 0) != 0:
		b.skip(id, variant, "blocked quantization has no kernel")
		return
	}
	shape, ok := b.sz.shape(x)
	if !ok {
		b.skip(id, variant, "input rank unknown")
		return
	}
	perChannel := len(scale.Dims) == 1 && scale.Dims[0] > 1
	channels, inner := int64(1), int64(1)
	axis := n.AttrInt("axis", 1)
	name := fmt.Sprintf("qcc_%s_pt", kind)
	if perChannel {
		if axis < 0 {
			axis += int64(len(shape))
		}
		if axis < 0 || axis >= int64(len(shape)) || x.Type.Shape[axis].Value != scale.Dims[0] || !x.Type.Shape[axis].Known {
			b.skip(id, variant, "per-channel axis does not match the scale")
			return
		}
		for _, d := range x.Type.Shape[axis+1:] {
			if !d.Known {
				b.skip(id, variant, "dims after the channel axis are not static")
				return
			}
			inner *= d.Value
		}
		channels = scale.Dims[0]
		name = fmt.Sprintf("qcc_%s_pc_c%d_i%d", kind, channels, inner)
	}
	if zpV == nil {
		name += "_nozp"
	}
	count := prod(shape)
	gran := "per tensor"
	if perChannel {
		gran = fmt.Sprintf("per channel (%d channels of %d elements)", channels, inner)
	}
	formula := "y = saturate(round(x / scale) + zero_point) to int8"
	inElem, outElem := "T", "int8_t"
	if !quant {
		formula = "y = (x - zero_point) * scale from int8"
		inElem, outElem = "int8_t", "T"
	}
	k := &kernel{
		Name: name, Launcher: map[bool]string{true: "qcc::QuantizeLinear", false: "qcc::DequantizeLinear"}[quant], Header: "qcc/quantize.cuh",
		Doc: fmt.Sprintf("INT8 %s %s: %s.", map[bool]string{true: "QuantizeLinear", false: "DequantizeLinear"}[quant], gran, formula),
		Consts: []constant{
			{"kPerChannel", "bool", cBool(perChannel)},
			{"kChannels", "int", cInt(channels)},
			{"kInner", "int", cInt(inner)},
			{"kHasZeroPoint", "bool", cBool(zpV != nil)},
		},
		Params: []param{
			{Name: "x", Elem: inElem, Present: true, Doc: "[n]"},
			{Name: "scale", Elem: "float", Present: true, Doc: fmt.Sprintf("[%d]", channels)},
			{Name: "zero_point", Elem: "int8_t", Present: zpV != nil, Doc: fmt.Sprintf("[%d]", channels)},
			{Name: "y", Elem: outElem, Out: true, Present: true, Doc: "[n]"},
		},
		Scalars: []scalar{{"long long", "n"}},
	}
	inst := &instance{ID: id, Layer: -1, Where: "node " + sanitize(n.Name), Variant: variant, sz: b.sz}
	inst.Dims = []dim{{"long long", "n", count}}
	scales, err := scale.Float64s()
	if err != nil || int64(len(scales)) != channels {
		b.skip(id, variant, "scale is not readable")
		return
	}
	xt := random("x", ir.Float, shape, quantInput(id+".x", scales, inner))
	if !quant {
		xt = &tensor{Param: "x", DType: ir.Int8, Shape: shape, Source: "random", gen: ints(id+".x", 256)}
		if c := patterns.ConstOf(x); c != nil {
			xt.Source, xt.from = "model", c
		}
	}
	inst.Tensors = []*tensor{xt, {Param: "scale", DType: ir.Float, Shape: append([]int64{}, scale.Dims...), Source: "model", from: scale}}
	if zpV != nil {
		inst.Tensors = append(inst.Tensors, &tensor{Param: "zero_point", DType: ir.Int8, Shape: append([]int64{}, zp.Dims...), Source: "model", from: zp})
	}
	outDT := ir.Int8
	if !quant {
		outDT = ir.Float
	}
	inst.Tensors = append(inst.Tensors, expected("y", outDT, shape))
	inst.bytes = func(e int) float64 {
		return float64(count) + float64(e)*float64(count) + float64(5*channels)
	}
	inst.Tol = tolQuantize
	if !quant {
		inst.Tol = tolDequant
	}
	b.bind(inst, k, map[string]*ir.Value{"x": x, "scale": scaleV, "zero_point": zpV, "y": n.Output(0)})
	b.add(inst, k)
}

func plusIf(c bool, s string) string {
	if c {
		return s
	}
	return ""
}

func trimF(s string) string { return strings.TrimSuffix(s, "f") }
