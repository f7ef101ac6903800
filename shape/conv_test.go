package shape

import (
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

func TestConvAndPool(t *testing.T) {
	conv := func(in string, w []int64, attrs ...*ir.Attr) func(*builder) *ir.Value {
		return func(b *builder) *ir.Value {
			return b.op("Conv", vs(b.in("x", ir.Float, in), b.floats(w)), attrs...)
		}
	}
	runCases(t, []opCase{
		// ViT's patch embedding: kernel = stride = patch size.
		{name: "patch conv", build: conv("batch,3,224,224", []int64{768, 3, 16, 16}, ir.IntsAttr("kernel_shape", 16, 16), ir.IntsAttr("strides", 16, 16)), want: "float[batch,768,14,14]"},
		{name: "kernel from weight", build: conv("batch,3,32,32", []int64{64, 3, 8, 8}, ir.IntsAttr("strides", 8, 8)), want: "float[batch,64,4,4]"},
		{name: "pads and dilation", build: conv("1,2,10,10", []int64{4, 2, 3, 3}, ir.IntsAttr("pads", 1, 2, 1, 2), ir.IntsAttr("dilations", 2, 1), ir.IntsAttr("strides", 2, 3)), want: "float[1,4,4,4]"},
		{name: "same padding keeps symbols", build: conv("batch,8,height,width", []int64{8, 8, 3, 3}, ir.IntsAttr("pads", 1, 1, 1, 1)), want: "float[batch,8,height,width]"},
		{name: "strided symbol", build: conv("batch,8,height,16", []int64{8, 8, 2, 2}, ir.IntsAttr("strides", 2, 2)), want: "float[batch,8,floor(height/2),8]"},
		{name: "patch grid of a dynamic image", build: conv("batch,3,height,width", []int64{768, 3, 16, 16}, ir.IntsAttr("strides", 16, 16)), want: "float[batch,768,floor(height/16),floor(width/16)]"},
		{name: "valid window", build: conv("batch,8,height,width", []int64{8, 8, 3, 3}), want: "float[batch,8,height - 2,width - 2]"},
		// The quotient of an offset the stride does not divide is a size of its own.
		{name: "strided window", build: conv("batch,8,height,width", []int64{8, 8, 3, 3}, ir.IntsAttr("strides", 2, 2)), want: "float[batch,8,floor((height-3)/2) + 1,floor((width-3)/2) + 1]"},
		// Whisper's second front-end conv halves the frames: floor((frames-1)/2)+1.
		{name: "strided padded window", build: conv("batch,8,frames", []int64{8, 8, 3}, ir.IntsAttr("strides", 2), ir.IntsAttr("pads", 1, 1)), want: "float[batch,8,floor((frames-1)/2) + 1]"},
		{name: "ceil mode strided symbol", build: func(b *builder) *ir.Value {
			return b.op("MaxPool", vs(b.in("x", ir.Float, "batch,8,height,10")), ir.IntsAttr("kernel_shape", 2, 2), ir.IntsAttr("strides", 2, 2), ir.IntAttr("ceil_mode", 1))
		}, want: "float[batch,8,floor((height-1)/2) + 1,5]"},
		// A window narrower than its stride may start past the input: ONNX drops it.
		{name: "ceil mode sparse window", build: func(b *builder) *ir.Value {
			return b.op("MaxPool", vs(b.in("x", ir.Float, "batch,8,height,10")), ir.IntsAttr("kernel_shape", 1, 1), ir.IntsAttr("strides", 2, 2), ir.IntAttr("ceil_mode", 1))
		}, want: "float[batch,8,?,5]"},
		{name: "ceil mode padded", build: func(b *builder) *ir.Value {
			return b.op("AveragePool", vs(b.in("x", ir.Float, "batch,8,height,10")), ir.IntsAttr("kernel_shape", 2, 2), ir.IntsAttr("strides", 2, 2), ir.IntsAttr("pads", 1, 1, 1, 1), ir.IntAttr("ceil_mode", 1))
		}, want: "float[batch,8,?,6]"},
		{name: "auto_pad same upper", build: conv("batch,8,15,height", []int64{8, 8, 3, 3}, ir.IntsAttr("strides", 2, 1), ir.StringAttr("auto_pad", "SAME_UPPER")), want: "float[batch,8,8,height]"},
		{name: "auto_pad valid", build: conv("batch,8,15,15", []int64{8, 8, 3, 3}, ir.IntsAttr("strides", 2, 2), ir.StringAttr("auto_pad", "VALID")), want: "float[batch,8,7,7]"},
		{name: "1x1 conv over a sequence", build: conv("batch,64,sequence", []int64{192, 64, 1}), want: "float[batch,192,sequence]"},
		{name: "grouped", build: conv("batch,64,sequence", []int64{64, 1, 3}, ir.IntAttr("group", 64), ir.IntsAttr("pads", 1, 1)), want: "float[batch,64,sequence]"},
		{name: "group mismatch", build: conv("batch,64,10", []int64{64, 2, 3}, ir.IntAttr("group", 64)), wantErr: "group"},
		{name: "conv rank mismatch", build: conv("batch,64,10,10", []int64{64, 64, 3}), wantErr: "rank"},
		{name: "conv transpose", build: func(b *builder) *ir.Value {
			return b.op("ConvTranspose", vs(b.in("x", ir.Float, "batch,16,7,7"), b.floats([]int64{16, 4, 4, 4})),
				ir.IntsAttr("strides", 2, 2), ir.IntsAttr("pads", 1, 1, 1, 1), ir.IntAttr("group", 2))
		}, want: "float[batch,8,14,14]"},
		{name: "max pool ceil", build: func(b *builder) *ir.Value {
			return b.op("MaxPool", vs(b.in("x", ir.Float, "batch,8,10,10")), ir.IntsAttr("kernel_shape", 3, 3), ir.IntsAttr("strides", 2, 2), ir.IntAttr("ceil_mode", 1))
		}, want: "float[batch,8,5,5]"},
		{name: "average pool", build: func(b *builder) *ir.Value {
			return b.op("AveragePool", vs(b.in("x", ir.Float, "batch,8,10,10")), ir.IntsAttr("kernel_shape", 2, 2), ir.IntsAttr("strides", 2, 2))
		}, want: "float[batch,8,5,5]"},
		{name: "global average pool", build: func(b *builder) *ir.Value {
			return b.op("GlobalAveragePool", vs(b.in("x", ir.Float, "batch,8,height,width")))
		}, want: "float[batch,8,1,1]"},
		{name: "flatten of a dynamic image", build: func(b *builder) *ir.Value {
			return b.op("Flatten", vs(b.in("x", ir.Float, "batch,4,height,width")), ir.IntAttr("axis", 2))
		}, want: "float[4*batch,height*width]"},
		{name: "flatten of a patch grid", build: func(b *builder) *ir.Value {
			c := b.op("Conv", vs(b.in("x", ir.Float, "batch,3,height,width"), b.floats([]int64{8, 3, 4, 4})), ir.IntsAttr("strides", 4, 4))
			return b.op("Flatten", vs(c), ir.IntAttr("axis", 1))
		}, want: "float[batch,8*floor(height/4)*floor(width/4)]"},
		{name: "conv integer", build: func(b *builder) *ir.Value {
			w := b.g.NewConst("w", ir.NewTensor(ir.Int8, []int64{4, 2, 1, 1}, make([]byte, 8)))
			return b.op("ConvInteger", vs(b.in("x", ir.Uint8, "batch,2,5,5"), w))
		}, want: "int32[batch,4,5,5]"},
	})
}

// vitFrontEnd builds what torch exports for a ViT/DeiT embedding:
//
//	p = conv(x).flatten(2).transpose(1, 2)     # Shape→Slice→Concat(-1)→Reshape
//	cls = cls_token.expand(B, -1, -1)          # Shape→Gather→Unsqueeze→Concat→Equal/Where→Expand
//	h = cat([cls, (dist,) p], 1) + pos
func vitFrontEnd(b *builder, dist bool) (h, p *ir.Value) {
	x := b.in("pixel_values", ir.Float, "batch,3,32,32")
	c := b.op("Conv", vs(x, b.floats([]int64{64, 3, 8, 8}), b.floats([]int64{64})),
		ir.IntsAttr("kernel_shape", 8, 8), ir.IntsAttr("strides", 8, 8))
	sh := b.op("Shape", vs(c))
	f := b.op("Reshape", vs(c, b.op("Concat", vs(b.op("Slice", vs(sh, b.ints(0), b.ints(2), b.ints(0))), b.ints(-1)), ir.IntAttr("axis", 0))))
	p = b.op("Transpose", vs(f), ir.IntsAttr("perm", 0, 2, 1))
	batch := b.op("Unsqueeze", vs(b.op("Gather", vs(b.op("Shape", vs(x)), b.scalar(0))), b.ints(0)))
	target := b.op("Concat", vs(batch, b.ints(-1), b.ints(-1)), ir.IntAttr("axis", 0))
	fix := b.op("Where", vs(b.op("Equal", vs(target, b.ints(-1, -1, -1))),
		b.op("ConstantOfShape", vs(b.ints(3)), ir.TensorAttr("value", ir.Int64Tensor([]int64{1}, []int64{1}))), target))
	toks := vs(b.op("Expand", vs(b.floats([]int64{1, 1, 64}), fix)))
	n := int64(17)
	if dist {
		toks = append(toks, b.op("Expand", vs(b.floats([]int64{1, 1, 64}), fix)))
		n++
	}
	cat := b.op("Concat", append(toks, p), ir.IntAttr("axis", 1))
	return b.op("Add", vs(cat, b.floats([]int64{1, n, 64}))), p
}

// TestPatchGridAgrees: the patch grid of a strided Conv over a dynamic image and the
// exporter's integer division of the image size get one name, so a reshape to
// [B, H // p, W // p, C] (Swin's windows) provably matches the Conv's output.
func TestPatchGridAgrees(t *testing.T) {
	b := newBuilder(t, 17)
	x := b.in("pixel_values", ir.Float, "batch,3,height,width")
	c := b.op("Conv", vs(x, b.floats([]int64{64, 3, 4, 4})), ir.IntsAttr("strides", 4, 4))
	sh := b.op("Shape", vs(x))
	h4 := b.op("Div", vs(b.op("Gather", vs(sh, b.ints(2))), b.ints(4)))
	w4 := b.op("Div", vs(b.op("Gather", vs(sh, b.ints(3))), b.ints(4)))
	grid := b.op("Reshape", vs(b.op("Transpose", vs(c), ir.IntsAttr("perm", 0, 2, 3, 1)),
		b.op("Concat", vs(b.ints(-1), h4, w4, b.ints(64)), ir.IntAttr("axis", 0))))
	b.infer()
	if got := grid.Type.String(); got != "float[batch,floor(height/4),floor(width/4),64]" {
		t.Errorf("got %s", got)
	}
}

func TestVisionFrontEnd(t *testing.T) {
	for _, dist := range []bool{false, true} {
		b := newBuilder(t, 17)
		h, p := vitFrontEnd(b, dist)
		cat, _ := h.Producer()
		b.infer()
		if got := p.Type.String(); got != "float[batch,16,64]" {
			t.Errorf("patches: got %s, want float[batch,16,64]", got)
		}
		want := "float[batch,17,64]"
		if dist {
			want = "float[batch,18,64]"
		}
		// The concatenation itself, not only the sum with the [1, n, 64] table, has the
		// token count.
		if got := cat.Input(0).Type.String(); got != want {
			t.Errorf("dist=%v: class tokens and patches: got %s, want %s", dist, got, want)
		}
		if got := h.Type.String(); got != want {
			t.Errorf("dist=%v: embeddings: got %s, want %s", dist, got, want)
		}
		// A residual over the embeddings is provably same-shape.
		r := b.op("Relu", vs(h))
		b.infer()
		if !ir.SameShape(h.Type.Shape, r.Type.Shape) {
			t.Errorf("residual operands %s and %s not provably equal", h.Type, r.Type)
		}
	}
}

// TestFusedAttentionOps types what fuse emits for attention, rotary and RMS norms.
func TestFusedAttentionOps(t *testing.T) {
	b := newBuilder(t, 23)
	x := b.in("x", ir.Float, "batch,sequence,64")
	q4 := b.in("q4", ir.Float, "batch,4,sequence,16")
	k4 := b.in("k4", ir.Float, "batch,2,sequence,16")
	v4 := b.in("v4", ir.Float, "batch,2,sequence,8")
	pk := b.in("past_key", ir.Float, "batch,2,past,16")
	pv := b.in("past_value", ir.Float, "batch,2,past,8")
	kv3 := b.in("kv3", ir.Float, "batch,memory,32")
	heads := []*ir.Attr{ir.IntAttr("q_num_heads", 4), ir.IntAttr("kv_num_heads", 2)}
	a4 := b.opN("Attention", "", vs(q4, k4, v4, nil, pk, pv), 4)
	a3 := b.opN("Attention", "", vs(x, kv3, kv3), 1, heads...)
	gqa := b.ms("GroupQueryAttention", vs(b.in("qkv", ir.Float, "batch,sequence,128")), 3, ir.IntAttr("num_heads", 4), ir.IntAttr("kv_num_heads", 2))
	gqa2 := b.ms("GroupQueryAttention", vs(x, kv3, kv3), 1, ir.IntAttr("num_heads", 4), ir.IntAttr("kv_num_heads", 2))
	rot := b.opN("RotaryEmbedding", "", vs(q4, b.floats([]int64{32, 8}), b.floats([]int64{32, 8})), 1)
	msRot := b.ms("RotaryEmbedding", vs(x, b.in("pos", ir.Int64, "batch,sequence"), b.floats([]int64{32, 8}), b.floats([]int64{32, 8})), 1)
	rms := b.op("RMSNormalization", vs(x, b.floats([]int64{64})), ir.FloatAttr("epsilon", 1e-6))
	b.infer()
	for _, tc := range []struct {
		v    *ir.Value
		want string
	}{
		{a4.Output(0), "float[batch,4,sequence,8]"},
		{a4.Output(1), "float[batch,2,past + sequence,16]"},
		{a4.Output(2), "float[batch,2,past + sequence,8]"},
		{a4.Output(3), "float[batch,4,sequence,past + sequence]"},
		{a3.Output(0), "float[batch,sequence,64]"},
		{gqa.Output(0), "float[batch,sequence,64]"},
		{gqa.Output(1), "float[batch,2,?,16]"},
		{gqa2.Output(0), "float[batch,sequence,64]"},
		{rot.Output(0), "float[batch,4,sequence,16]"},
		{msRot.Output(0), "float[batch,sequence,64]"},
		{rms, "float[batch,sequence,64]"},
	} {
		if got := tc.v.Type.String(); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.v.Name, got, tc.want)
		}
	}
}
