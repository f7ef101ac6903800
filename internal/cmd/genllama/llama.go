package main

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"runtime"
	"sync"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
)

// Config is the size of a LLaMA-shaped decoder.
type Config struct {
	Layers, Hidden, Heads, KVHeads, Intermediate, Vocab, MaxPositions int64
	DType                                                             ir.DataType // Float or Float16
	Seed                                                              uint64
	Eps                                                               float32
}

func (c Config) check() error {
	switch {
	case c.Layers < 1 || c.Hidden < 1 || c.Heads < 1 || c.KVHeads < 1 || c.Intermediate < 1 || c.Vocab < 1 || c.MaxPositions < 1:
		return fmt.Errorf("every size must be positive: %+v", c)
	case c.Hidden%c.Heads != 0:
		return fmt.Errorf("hidden %d is not a multiple of heads %d", c.Hidden, c.Heads)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("heads %d is not a multiple of kv-heads %d", c.Heads, c.KVHeads)
	case (c.Hidden/c.Heads)%2 != 0:
		return fmt.Errorf("head size %d is odd: rotary needs it even", c.Hidden/c.Heads)
	case c.DType != ir.Float && c.DType != ir.Float16:
		return fmt.Errorf("dtype %s: want float or float16", c.DType)
	}
	return nil
}

// Params is the number of weights.
func (c Config) Params() int64 {
	d := c.Hidden / c.Heads
	attn := c.Hidden*c.Hidden*2 + 2*c.Hidden*c.KVHeads*d
	return c.Layers*(attn+3*c.Hidden*c.Intermediate+2*c.Hidden) + 2*c.Vocab*c.Hidden + c.Hidden
}

// builder writes nodes the way torch.onnx.export names and orders them.
type builder struct {
	g     *ir.Graph
	c     Config
	count map[string]int
	mm    int // onnx::MatMul_N numbering of transposed weights
}

func (b *builder) name(scope, op string) string {
	key := scope + "/" + op
	k := b.count[key]
	b.count[key]++
	if k == 0 {
		return key
	}
	return fmt.Sprintf("%s_%d", key, k)
}

// op adds a node with one output.
func (b *builder) op(scope, op string, ins []*ir.Value, attrs ...*ir.Attr) *ir.Value {
	name := b.name(scope, op)
	n := b.g.Add(op, ins, 1, name+"_output_0", attrs...)
	n.Name = name
	return n.Output(0)
}

func (b *builder) constant(scope string, t *ir.Tensor) *ir.Value {
	return b.op(scope, "Constant", nil, ir.TensorAttr("value", t))
}

func (b *builder) ints(scope string, v ...int64) *ir.Value {
	return b.constant(scope, ir.Int64Tensor([]int64{int64(len(v))}, v))
}

func (b *builder) int0(scope string, v int64) *ir.Value {
	return b.constant(scope, ir.Int64Tensor(nil, []int64{v}))
}

// scalar is a constant of the model's type.
func (b *builder) scalar(scope string, v float32) *ir.Value {
	return b.constant(scope, floats(b.c.DType, nil, []float32{v}))
}

// dim is torch's x.shape[i]: Shape, Gather of a scalar index.
func (b *builder) dim(scope string, x *ir.Value, i int64) *ir.Value {
	return b.op(scope, "Gather", []*ir.Value{b.op(scope, "Shape", []*ir.Value{x}), b.int0(scope, i)}, ir.IntAttr("axis", 0))
}

func (b *builder) unsqueeze(scope string, x *ir.Value, axis int64) *ir.Value {
	return b.op(scope, "Unsqueeze", []*ir.Value{x, b.ints(scope, axis)})
}

// shape is the Concat of scalars (unsqueezed) and constants that torch writes for a view.
func (b *builder) shape(scope string, parts ...any) *ir.Value {
	var ins []*ir.Value
	for _, p := range parts {
		switch p := p.(type) {
		case *ir.Value:
			ins = append(ins, b.unsqueeze(scope, p, 0))
		case int64:
			ins = append(ins, b.ints(scope, p))
		}
	}
	return b.op(scope, "Concat", ins, ir.IntAttr("axis", 0))
}

func (b *builder) reshape(scope string, x *ir.Value, parts ...any) *ir.Value {
	return b.op(scope, "Reshape", []*ir.Value{x, b.shape(scope, parts...)}, ir.IntAttr("allowzero", 0))
}

// weight adds a [rows, cols] weight as torch stores a transposed Linear weight.
func (b *builder) weight(rows, cols int64) *ir.Value {
	b.mm++
	name := fmt.Sprintf("onnx::MatMul_%d", 1000+b.mm)
	v, _ := b.g.AddInitializer(name, synthTensor(b.c.DType, []int64{rows, cols}, name, b.c.Seed, 1/math.Sqrt(float64(rows))))
	return v
}

// normWeight is an RMSNorm weight, near 1.
func (b *builder) normWeight(name string) *ir.Value {
	t := synthTensor(b.c.DType, []int64{b.c.Hidden}, name, b.c.Seed, 0.1)
	inner := t
	t = ir.NewLazyTensor(b.c.DType, []int64{b.c.Hidden}, func() ([]byte, error) {
		raw, err := inner.ReadBytes()
		if err != nil {
			return nil, err
		}
		vals := decode(b.c.DType, raw)
		for i := range vals {
			vals[i]++
		}
		return encode(b.c.DType, vals), nil
	})
	v, _ := b.g.AddInitializer(name, t)
	return v
}

func (b *builder) cast(scope string, x *ir.Value, to ir.DataType) *ir.Value {
	return b.op(scope, "Cast", []*ir.Value{x}, ir.IntAttr("to", int64(to)))
}

// rmsNorm is LlamaRMSNorm: in float32, x·(1/√(mean(x²)+ε)), back to the model's type,
// times the weight.
func (b *builder) rmsNorm(scope string, x *ir.Value, w *ir.Value) (*ir.Value, *ir.Value) {
	x32 := b.cast(scope, x, ir.Float)
	pow := b.op(scope, "Pow", []*ir.Value{x32, b.constant(scope, ir.FloatTensor(nil, []float32{2}))})
	mean := b.op(scope, "ReduceMean", []*ir.Value{pow}, ir.IntsAttr("axes", -1), ir.IntAttr("keepdims", 1))
	add := b.op(scope, "Add", []*ir.Value{mean, b.constant(scope, ir.FloatTensor(nil, []float32{b.c.Eps}))})
	sqrt := b.op(scope, "Sqrt", []*ir.Value{add})
	inv := b.op(scope, "Div", []*ir.Value{b.constant(scope, ir.FloatTensor(nil, []float32{1})), sqrt})
	mul := b.op(scope, "Mul", []*ir.Value{x32, inv})
	return b.op(scope, "Mul", []*ir.Value{w, b.cast(scope, mul, b.c.DType)}), x32
}

// rotateHalf is cat(−x[..., D/2:], x[..., :D/2]) with D/2 computed from the shape.
func (b *builder) rotate(scope string, x, cos, sin *ir.Value) *ir.Value {
	half := b.op(scope, "Div", []*ir.Value{b.dim(scope, x, 3), b.int0(scope, 2)})
	half = b.cast(scope, b.cast(scope, half, ir.Int64), ir.Int64)
	x1 := b.op(scope, "Slice", []*ir.Value{x, b.ints(scope, 0), b.unsqueeze(scope, half, 0), b.ints(scope, 3), b.ints(scope, 1)})
	x2 := b.op(scope, "Slice", []*ir.Value{x, b.unsqueeze(scope, half, 0), b.ints(scope, math.MaxInt64), b.ints(scope, 3), b.ints(scope, 1)})
	rot := b.op(scope, "Concat", []*ir.Value{b.op(scope, "Neg", []*ir.Value{x2}), x1}, ir.IntAttr("axis", -1))
	return b.op(scope, "Add", []*ir.Value{b.op(scope, "Mul", []*ir.Value{x, cos}), b.op(scope, "Mul", []*ir.Value{rot, sin})})
}

// heads projects x and views it [B, n, S, D].
func (b *builder) heads(scope string, x *ir.Value, n int64) *ir.Value {
	d := b.c.Hidden / b.c.Heads
	p := b.op(scope, "MatMul", []*ir.Value{x, b.weight(b.c.Hidden, n*d)})
	r := b.reshape(scope, p, b.dim(scope, p, 0), b.dim(scope, p, 1), n, int64(-1))
	return b.op(scope, "Transpose", []*ir.Value{r}, ir.IntsAttr("perm", 0, 2, 1, 3))
}

// repeatKV is transformers' repeat_kv: x[:, :, None] expanded n times, viewed [B, H, S, D].
func (b *builder) repeatKV(scope string, x *ir.Value, n int64) *ir.Value {
	if n == 1 {
		return x
	}
	d := [4]*ir.Value{b.dim(scope, x, 0), b.dim(scope, x, 1), b.dim(scope, x, 2), b.dim(scope, x, 3)}
	u := b.unsqueeze(scope, x, 2)
	sh := b.op(scope, "Reshape", []*ir.Value{b.shape(scope, d[0], d[1], n, d[2], d[3]), b.ints(scope, -1)}, ir.IntAttr("allowzero", 0))
	// torch's expand spells -1 ("keep") as a Where over the shape.
	ones := b.op(scope, "ConstantOfShape", []*ir.Value{b.ints(scope, 5)}, ir.TensorAttr("value", ir.Int64Tensor([]int64{1}, []int64{1})))
	neg := b.op(scope, "Mul", []*ir.Value{ones, b.int0(scope, -1)})
	sh = b.op(scope, "Where", []*ir.Value{b.op(scope, "Equal", []*ir.Value{sh, neg}), ones, sh})
	e := b.op(scope, "Expand", []*ir.Value{u, sh})
	return b.reshape(scope, e, d[0], b.op(scope, "Mul", []*ir.Value{d[1], b.int0(scope, n)}), d[2], d[3])
}

// Build returns the decoder graph; its weights are computed when saved.
func Build(c Config) (*ir.Model, error) {
	if c.Eps == 0 {
		c.Eps = 1e-6
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	g := ir.NewGraph("torch_jit")
	b := &builder{g: g, c: c, count: map[string]int{}}
	bs, seq := ir.Sym("batch"), ir.Sym("sequence")
	ids, _ := g.AddInput("input_ids", ir.TensorOf(ir.Int64, bs, seq))
	mask, _ := g.AddInput("attention_mask", ir.TensorOf(ir.Int64, bs, seq))
	pos, _ := g.AddInput("position_ids", ir.TensorOf(ir.Int64, bs, seq))
	d := c.Hidden / c.Heads
	lowest := float32(-math.MaxFloat32)
	if c.DType == ir.Float16 {
		lowest = -65504
	}

	embed, _ := g.AddInitializer("embed_tokens.weight", synthTensor(c.DType, []int64{c.Vocab, c.Hidden}, "embed_tokens.weight", c.Seed, 1))
	s := b.dim("", ids, 1)
	x := b.op("/embed_tokens", "Gather", []*ir.Value{embed, ids})

	// Rotary tables [maxpos, D] (cat(freqs, freqs)), sliced to the sequence, gathered by
	// position, unsqueezed over heads.
	table := func(f func(float64) float64) *ir.Value {
		v := make([]float32, c.MaxPositions*d)
		for p := int64(0); p < c.MaxPositions; p++ {
			for i := int64(0); i < d; i++ {
				inv := math.Pow(10000, -float64(2*(i%(d/2)))/float64(d))
				v[p*d+i] = float32(f(float64(p) * inv))
			}
		}
		t := b.constant("", floats(c.DType, []int64{c.MaxPositions, d}, v))
		sl := b.op("", "Slice", []*ir.Value{t, b.ints("", 0), b.unsqueeze("", s, 0), b.ints("", 0), b.ints("", 1)})
		return b.unsqueeze("", b.op("", "Gather", []*ir.Value{sl, pos}, ir.IntAttr("axis", 0)), 1)
	}
	cos, sin := table(math.Cos), table(math.Sin)

	// Causal mask triu(full((S, S), lowest), 1)[None, None] + (1 − mask[:, None, None, :])·lowest.
	full := b.op("", "ConstantOfShape", []*ir.Value{b.shape("", s, s)}, ir.TensorAttr("value", floats(c.DType, []int64{1}, []float32{lowest})))
	causal := b.op("", "Trilu", []*ir.Value{full, b.int0("", 1)}, ir.IntAttr("upper", 1))
	causal = b.unsqueeze("", b.unsqueeze("", causal, 0), 1)
	pad := b.cast("", b.unsqueeze("", b.unsqueeze("", mask, 1), 2), c.DType)
	pad = b.op("", "Mul", []*ir.Value{b.op("", "Sub", []*ir.Value{b.scalar("", 1), pad}), b.scalar("", lowest)})
	attnMask := b.op("", "Add", []*ir.Value{causal, pad})

	for l := int64(0); l < c.Layers; l++ {
		norm := fmt.Sprintf("/layers.%d/input_layernorm", l)
		h, _ := b.rmsNorm(norm, x, b.normWeight(fmt.Sprintf("layers.%d.input_layernorm.weight", l)))
		at := fmt.Sprintf("/layers.%d/self_attn", l)
		q := b.heads(at, h, c.Heads)
		k := b.heads(at, h, c.KVHeads)
		v := b.heads(at, h, c.KVHeads)
		q, k = b.rotate(at, q, cos, sin), b.rotate(at, k, cos, sin)
		k, v = b.repeatKV(at, k, c.Heads/c.KVHeads), b.repeatKV(at, v, c.Heads/c.KVHeads)
		kt := b.op(at, "Transpose", []*ir.Value{k}, ir.IntsAttr("perm", 0, 1, 3, 2))
		scores := b.op(at, "Div", []*ir.Value{b.op(at, "MatMul", []*ir.Value{q, kt}), b.scalar(at, float32(math.Sqrt(float64(d))))})
		scores = b.op(at, "Add", []*ir.Value{scores, attnMask})
		// softmax(dim=-1, dtype=float32).to(query.dtype)
		probs := b.cast(at, b.op(at, "Softmax", []*ir.Value{b.cast(at, scores, ir.Float)}, ir.IntAttr("axis", -1)), c.DType)
		ctx := b.op(at, "MatMul", []*ir.Value{probs, v})
		bsz, sl := b.dim(at, ctx, 0), b.dim(at, ctx, 2)
		ctx = b.op(at, "Transpose", []*ir.Value{ctx}, ir.IntsAttr("perm", 0, 2, 1, 3))
		ctx = b.reshape(at, ctx, bsz, sl, c.Hidden)
		o := b.op(at+"/o_proj", "MatMul", []*ir.Value{ctx, b.weight(c.Hidden, c.Hidden)})
		x = b.op("", "Add", []*ir.Value{x, o})

		post := fmt.Sprintf("/layers.%d/post_attention_layernorm", l)
		h, _ = b.rmsNorm(post, x, b.normWeight(fmt.Sprintf("layers.%d.post_attention_layernorm.weight", l)))
		mlp := fmt.Sprintf("/layers.%d/mlp", l)
		gate := b.op(mlp+"/gate_proj", "MatMul", []*ir.Value{h, b.weight(c.Hidden, c.Intermediate)})
		silu := b.op(mlp, "Mul", []*ir.Value{gate, b.op(mlp, "Sigmoid", []*ir.Value{gate})})
		up := b.op(mlp+"/up_proj", "MatMul", []*ir.Value{h, b.weight(c.Hidden, c.Intermediate)})
		down := b.op(mlp+"/down_proj", "MatMul", []*ir.Value{b.op(mlp, "Mul", []*ir.Value{silu, up}), b.weight(c.Intermediate, c.Hidden)})
		x = b.op("", "Add", []*ir.Value{x, down})
	}
	x, _ = b.rmsNorm("/norm", x, b.normWeight("norm.weight"))
	logits := b.op("/lm_head", "MatMul", []*ir.Value{x, b.weight(c.Hidden, c.Vocab)})
	logits.Type = ir.TensorOf(c.DType, bs, seq, ir.D(c.Vocab))
	if err := logits.Rename("logits"); err != nil {
		return nil, err
	}
	g.Outputs = append(g.Outputs, logits)
	return &ir.Model{IRVersion: 8, ProducerName: "pytorch", ProducerVersion: "1.13.0",
		Opsets: []ir.OpsetID{{Version: 17}}, Graph: g}, nil
}

// synthTensor is a lazy tensor of deterministic values uniform in [−scale, scale), a
// function of name and seed alone, computed on all CPUs when the save writes it.
func synthTensor(dt ir.DataType, dims []int64, name string, seed uint64, scale float64) *ir.Tensor {
	h := fnv.New64a()
	h.Write([]byte(name))
	base := h.Sum64() ^ seed*0x9e3779b97f4a7c15
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	return ir.NewLazyTensor(dt, dims, func() ([]byte, error) {
		es := int64(dt.ByteSize(1))
		out := make([]byte, n*es)
		const chunk = 1 << 16
		var wg sync.WaitGroup
		next := make(chan int64)
		for w := 0; w < runtime.GOMAXPROCS(0); w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for start := range next {
					fill(out[start*es:min(start+chunk, n)*es], dt, base+uint64(start), float32(scale))
				}
			}()
		}
		for start := int64(0); start < n; start += chunk {
			next <- start
		}
		close(next)
		wg.Wait()
		return out, nil
	})
}

// fill writes values from a splitmix64 stream started at state.
func fill(b []byte, dt ir.DataType, state uint64, scale float32) {
	es := dt.ByteSize(1)
	state *= 0xbf58476d1ce4e5b9
	for i := 0; i < len(b); i += int(es) {
		state += 0x9e3779b97f4a7c15
		z := state
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		z ^= z >> 31
		f := (float32(z>>40)/(1<<24)*2 - 1) * scale
		if dt == ir.Float16 {
			binary.LittleEndian.PutUint16(b[i:], ndarray.Float32ToHalf(f))
		} else {
			binary.LittleEndian.PutUint32(b[i:], math.Float32bits(f))
		}
	}
}

func floats(dt ir.DataType, dims []int64, v []float32) *ir.Tensor {
	return ir.NewTensor(dt, dims, encode(dt, v))
}

func encode(dt ir.DataType, v []float32) []byte {
	es := dt.ByteSize(1)
	b := make([]byte, int64(len(v))*es)
	for i, f := range v {
		if dt == ir.Float16 {
			binary.LittleEndian.PutUint16(b[2*i:], ndarray.Float32ToHalf(f))
		} else {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
		}
	}
	return b
}

func decode(dt ir.DataType, b []byte) []float32 {
	es := int(dt.ByteSize(1))
	v := make([]float32, len(b)/es)
	for i := range v {
		if dt == ir.Float16 {
			v[i] = ir.HalfToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		} else {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	}
	return v
}
