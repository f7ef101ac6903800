package transformer

import (
	"fmt"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// VisionEmbeddingFamily recognises the patch embedding of vision transformers.
var VisionEmbeddingFamily = &Family{
	Kind: Embedding,
	Doc: `Vision embedding: y = concat([cls, (dist,)] patches(x), axis 1) + pos, with
patches(x) = Conv(x, W, b) flattened over its spatial axes and transposed to
[batch, patches, hidden] (ViT, DeiT, CLIP's vision tower, BEiT).

The class token (and DeiT's distillation token) is a constant [1, 1, hidden] or [hidden]
expanded (Expand or Tile) to the batch; the position embeddings a constant
[1 or none, tokens, hidden], added to the concatenation or, before it, to the patches
alone; either may be absent (a patch embedding with neither, as in Swin, is a block too).
A LayerNorm after it is LayerNormFamily's block.

Rules: "embedding/vision" (tokens and positions), "embedding/vision-pos-first" (positions
added to the patches, then the tokens), "embedding/vision-tokens" (no positions),
"embedding/vision-patches" (patches and positions, no tokens), "embedding/patches".

Checks: the Conv over [batch, channels, spatial...] with a constant weight of rank 4 or
more (and bias), not grouped;
the flatten a Reshape to [batch, hidden, patches] and the transpose perm [0, 2, 1]; each
token a constant of the hidden size expanded to [batch, 1, hidden] with the patches'
batch, concatenated (the result has the batch first); the position table a constant whose rows are the tokens
and whose last dim is the hidden size; the result [batch, tokens, hidden] with the
pixel input's batch (the shape engine proves it); values inside the block may be read
outside only by Shape (the exporter's shape arithmetic).

Roles: pixel_values, patch_weight, patch_bias (opt), class_token (opt),
distillation_token (opt), position_embedding (opt), output. Params: hidden, tokens,
patches (when static), patch_size and patch_stride (of the first spatial axis).

Fuse: neither target has an operator for it; the block stays as it is, recognised and
annotated, with the reason.`,
	Rules:    visRules(),
	Describe: describeVisionEmbedding,
	Fuse: func(*patterns.Rewriter, *Block, *Env) (*ir.Node, string, error) {
		return nil, "no operator of the target computes a patch embedding; left as is", nil
	},
}

// visNames are the bound nodes whose outputs the exporter's shape arithmetic may read.
var visNames = []string{"conv", "flatten", "patches", "expand0", "expand1", "tokens", "pos_add"}

func visRules() []*patterns.Rule {
	Op, Bind, Const, Any, Or := patterns.Op, patterns.Bind, patterns.Const, patterns.Any, patterns.Or
	// Patches of an image (or a volume): a weight of rank 4 or more. A Conv1d over a
	// sequence is a projection (channel-first encoders), not a patch embedding.
	weight := Bind("patch_weight", patterns.Where("weight of rank >= 4", Const(), func(v *ir.Value) bool {
		t := patterns.ConstOf(v)
		return t != nil && len(t.Dims) >= 4
	}))
	conv := Or(
		Op("Conv", Bind("pixel_values", Any()), weight, Bind("patch_bias", Const())).As("conv"),
		Op("Conv", Bind("pixel_values", Any()), weight).As("conv"))
	patches := Op("Transpose", Op("Reshape", conv, Any()).As("flatten")).As("patches")
	token := func(i int) patterns.Pattern {
		name := fmt.Sprintf("token%d", i)
		return Or(
			Op("Expand", Bind(name, Const()), Any()).As(fmt.Sprintf("expand%d", i)),
			Op("Tile", Bind(name, Const()), Any()).As(fmt.Sprintf("expand%d", i)))
	}
	withTokens := func(p patterns.Pattern) patterns.Pattern {
		return Or(
			Op("Concat", token(0), token(1), p).As("tokens"),
			Op("Concat", token(0), p).As("tokens"))
	}
	pos := Bind("pos", Const())
	rule := func(name string, p patterns.Pattern) *patterns.Rule {
		return &patterns.Rule{Name: name, Pattern: p, Check: checkVisionEmbedding, Internal: visNames}
	}
	return []*patterns.Rule{
		rule("embedding/vision", Op("Add", withTokens(patches), pos).As("pos_add")),
		rule("embedding/vision-pos-first", withTokens(Op("Add", patches, pos).As("pos_add"))),
		rule("embedding/vision-tokens", withTokens(patches)),
		rule("embedding/vision-patches", Op("Add", patches, pos).As("pos_add")),
		rule("embedding/patches", patches),
	}
}

// visInfo is what a match of a vision rule means.
type visInfo struct {
	hidden, tokens         int64 // tokens 0 when not static
	patches                ir.Dim
	patchSize, patchStride int64
}

func visAnalyse(m *patterns.Match) (*visInfo, string) {
	info := &visInfo{}
	// Anything the block computes may be read outside it only by the exporter's shape
	// arithmetic.
	if why := escapesButShape(m.All, m.Root, nil); why != "" {
		return nil, why
	}
	// The convolution.
	x, w := m.V("pixel_values"), m.Const("patch_weight")
	xs := shapeOf(x)
	if len(xs) < 3 || x.Type == nil || !x.Type.DType.IsFloat() {
		return nil, fmt.Sprintf("pixel input is %s, not float [batch, channels, spatial...]", typeOrNone(x))
	}
	if len(w.Dims) != len(xs) || !w.DType.IsFloat() {
		return nil, fmt.Sprintf("patch weight is %s%v for an input of rank %d", w.DType, w.Dims, len(xs))
	}
	info.hidden = w.Dims[0]
	if b := m.Const("patch_bias"); b != nil && (len(b.Dims) != 1 || b.Dims[0] != info.hidden) {
		return nil, fmt.Sprintf("patch bias is %v, not [%d]", b.Dims, info.hidden)
	}
	conv := m.N("conv")
	if g := conv.AttrInt("group", 1); g != 1 {
		return nil, fmt.Sprintf("a grouped convolution (group %d), not a patch projection", g)
	}
	info.patchSize = w.Dims[2]
	info.patchStride = 1
	if s, ok := conv.AttrInts("strides"); ok && len(s) > 0 {
		info.patchStride = s[0]
	}
	batch := xs[0]
	// The flatten: [batch, hidden, spatial...] -> [batch, hidden, patches] (a reshape that
	// keeps batch and hidden leaves the spatial product).
	cs, fs := shapeOf(conv.Output(0)), shapeOf(m.V("flatten"))
	if len(fs) != 3 || len(cs) != len(xs) || !ir.SameDim(fs[0], batch) || !ir.SameDim(fs[1], ir.D(info.hidden)) {
		return nil, fmt.Sprintf("the convolution's %s is reshaped to %s, not [batch, %d, patches] with the input's batch", shapeString(cs), shapeString(fs), info.hidden)
	}
	info.patches = fs[2]
	if perm, _ := m.N("patches").AttrInts("perm"); len(perm) != 3 || perm[0] != 0 || perm[1] != 2 || perm[2] != 1 {
		return nil, fmt.Sprintf("the patches are transposed by %v, not [0, 2, 1]", perm)
	}
	// The tokens.
	for i, role := range []string{"class", "distillation"} {
		t := m.Const(fmt.Sprintf("token%d", i))
		if t == nil {
			continue
		}
		if n := t.NumElements(); n != info.hidden || len(t.Dims) == 0 || t.Dims[len(t.Dims)-1] != info.hidden || !t.DType.IsFloat() {
			return nil, fmt.Sprintf("the %s token is %s%v, not one row of the hidden size %d", role, t.DType, t.Dims, info.hidden)
		}
		es := shapeOf(m.V(fmt.Sprintf("expand%d", i)))
		if len(es) != 3 || !ir.SameDim(es[0], batch) || !ir.SameDim(es[1], ir.D(1)) || !ir.SameDim(es[2], ir.D(info.hidden)) {
			return nil, fmt.Sprintf("the %s token is expanded to %s, not provably [batch, 1, %d] with the input's batch", role, shapeString(es), info.hidden)
		}
	}
	// The position table: one row per token (of the sum it is added to), the hidden size.
	if p := m.Const("pos"); p != nil {
		add := shapeOf(m.V("pos_add"))
		n := len(p.Dims)
		if !p.DType.IsFloat() || n < 2 || n > 3 || (n == 3 && p.Dims[0] != 1) || p.Dims[n-1] != info.hidden {
			return nil, fmt.Sprintf("position table is %s%v, not [1, tokens, %d]", p.DType, p.Dims, info.hidden)
		}
		if len(add) != 3 || !ir.SameDim(add[1], ir.D(p.Dims[n-2])) {
			return nil, fmt.Sprintf("position table of %d rows added to %s", p.Dims[n-2], shapeString(add))
		}
	}
	// The result: [batch, tokens, hidden], each part's batch checked above.
	if out := shapeOf(m.Root); len(out) == 3 && out[1].Known {
		info.tokens = out[1].Value
	}
	return info, ""
}

func shapeOf(v *ir.Value) ir.Shape {
	if v == nil || v.Type == nil || !v.Type.HasShape {
		return nil
	}
	return v.Type.Shape
}

func shapeString(s ir.Shape) string {
	if s == nil {
		return "(unknown shape)"
	}
	return s.String()
}

func checkVisionEmbedding(m *patterns.Match) string {
	_, why := visAnalyse(m)
	return why
}

func describeVisionEmbedding(m *patterns.Match, b *Block) {
	info, why := visAnalyse(m)
	if why != "" {
		return
	}
	b.Roles["output"] = m.Root
	for role, name := range map[string]string{"pixel_values": "pixel_values", "patch_weight": "patch_weight",
		"patch_bias": "patch_bias", "class_token": "token0", "distillation_token": "token1", "position_embedding": "pos"} {
		if v := m.V(name); v != nil {
			b.Roles[role] = v
		}
	}
	b.Params["hidden"] = float64(info.hidden)
	if info.tokens > 0 {
		b.Params["tokens"] = float64(info.tokens)
	}
	if info.patches.Known {
		b.Params["patches"] = float64(info.patches.Value)
	}
	b.Params["patch_size"] = float64(info.patchSize)
	b.Params["patch_stride"] = float64(info.patchStride)
}
