// Package transformer holds the transformer block families: the patterns that recognise
// LayerNorm, GELU, residual+LayerNorm, attention and embeddings in whatever shape an
// exporter left them, and the rewrites that turn a recognised block into a fused
// operator for a target. One file per family; each family's variants are named rules.
//
// Recognition and rewriting are separate: Recognize describes blocks without touching
// the graph (the blocks analysis that fuse, qdq and codegen share), and a family's Fuse
// rewrites one block for a target.
package transformer

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
)

// Kind is a block kind.
type Kind string

const (
	LayerNorm     Kind = "LayerNorm"
	RMSNorm       Kind = "RMSNorm"
	SkipLayerNorm Kind = "SkipLayerNorm"
	SkipRMSNorm   Kind = "SkipRMSNorm"
	AffineNorm    Kind = "AffineNorm"
	FFN           Kind = "FFN"
	Gelu          Kind = "Gelu"
	Attention     Kind = "Attention"
	Embedding     Kind = "Embedding"
	Rotary        Kind = "Rotary"
)

// Target is what fuse rewrites into.
type Target string

const (
	// ORT is ONNX Runtime's com.microsoft contrib operators (plus LayerNormalization).
	ORT Target = "ort"
	// ONNX is standard operators only, for TensorRT.
	ONNX Target = "onnx"
)

// Block is one recognised transformer block.
type Block struct {
	Kind    Kind
	Variant string // the rule that recognised it, e.g. "layernorm/pow-div"
	// ID is stable for a given model: kind and ordinal in graph order ("attention.1").
	ID string
	// Layer is the encoder layer the block belongs to, -1 for blocks before the first
	// attention (embeddings) or when unknown.
	Layer int
	// LayerFrom is, for an attention block, the graph position of the node after which its
	// layer begins: the producer of the residual stream value its projections read (-1
	// for a graph input).
	LayerFrom int
	// Root is the block's output value.
	Root *ir.Value
	// Roles names the values the block reads and writes: "input", "output", "gamma",
	// "beta", "bias", "skip", "mask", "q_weight", "q_bias", ... (see each family's doc).
	Roles map[string]*ir.Value
	// Params holds the block's numbers: "epsilon", "num_heads", "head_size", "hidden", ...
	Params map[string]float64
	// Nodes are the nodes the block covers, in graph order.
	Nodes []*ir.Node
	// Fused reports that the block already is a fused operator.
	Fused bool
	// Match is the pattern match, for the family's rewrite.
	Match *patterns.Match
}

// Role returns a role's value, or nil.
func (b *Block) Role(r string) *ir.Value { return b.Roles[r] }

// Param returns a parameter, or def.
func (b *Block) Param(p string, def float64) float64 {
	if v, ok := b.Params[p]; ok {
		return v
	}
	return def
}

// Env is what a family's rewrite may consult: the model (opsets) and the fuse options.
type Env struct {
	Model  *ir.Model
	Target Target
	// RaiseOpset allows raising the default-domain opset import to this version when a
	// standard fused op needs it (0: never raise).
	RaiseOpset int64
	// Provider is the ONNX Runtime execution provider the model is for (target ort): ""
	// for any, "cpu" or "cuda". It only steers choices where a fused kernel of one
	// provider is slower than what it replaces.
	Provider string
	// Typed says the model's types are current: shape inference ran on the model as it
	// is (a pass that requires the shapes analysis gets it so). Fuse then does not infer
	// them again before the first family.
	Typed bool
}

// Family recognises and fuses one kind of block.
type Family struct {
	Kind Kind
	Doc  string
	// Rules recognise the block; their Check refusals are reported. Rules for the fused
	// forms (so recognition works on fused models and fuse is idempotent) set Fused in
	// Describe.
	Rules []*patterns.Rule
	// Describe turns an accepted match into a block (Kind, Variant, Nodes and Match are
	// filled in by the caller).
	Describe func(m *patterns.Match, b *Block)
	// Fuse rewrites a block for env.Target. It returns a reason when it leaves the block
	// as it is (no op for this target, opset too low, ...), and the new node otherwise.
	Fuse func(rw *patterns.Rewriter, b *Block, env *Env) (*ir.Node, string, error)
}

// Recognize finds the blocks of the given families in g without changing it. Blocks are
// returned in graph order with IDs and layers assigned.
func Recognize(g *ir.Graph, fams []*Family) ([]*Block, []patterns.Refusal) {
	var blocks []*Block
	var refusals []patterns.Refusal
	// Families of one kind share what they cover: a block is one family's.
	covered := map[Kind]map[*ir.Node]bool{}
	for _, f := range fams {
		if covered[f.Kind] == nil {
			covered[f.Kind] = map[*ir.Node]bool{}
		}
		found, refs := patterns.FindUncovered(g, f.Rules, covered[f.Kind])
		refusals = append(refusals, refs...)
		for _, fd := range found {
			b := &Block{Kind: f.Kind, Variant: fd.Rule.Name, Match: fd.Match, Nodes: fd.Match.All,
				Root: fd.Match.Root, Roles: map[string]*ir.Value{}, Params: map[string]float64{}, Layer: -1}
			if f.Describe != nil {
				f.Describe(fd.Match, b)
			}
			blocks = append(blocks, b)
		}
	}
	AssignIDs(g, blocks)
	return blocks, refusals
}

// AssignIDs numbers blocks per kind in graph order and gives each its layer: attention
// blocks count the layers, and a layer holds what follows the residual stream value its
// attention reads (layerStream): pre-LN, the norm before the attention; post-LN, the
// norms after it; the attention's rotary embeddings; its FFN.
func AssignIDs(g *ir.Graph, blocks []*Block) {
	pos := map[*ir.Node]int{}
	for i, n := range g.Nodes() {
		pos[n] = i
	}
	at := func(b *Block) int {
		if p, _ := b.Root.Producer(); p != nil {
			return pos[p]
		}
		return -1
	}
	sort.SliceStable(blocks, func(i, j int) bool { return at(blocks[i]) < at(blocks[j]) })
	count := map[Kind]int{}
	var attns []*Block
	for _, b := range blocks {
		b.ID = fmt.Sprintf("%s.%d", lower(b.Kind), count[b.Kind])
		count[b.Kind]++
		if b.Kind == Attention {
			b.LayerFrom = layerStream(b, pos, at(b))
			attns = append(attns, b)
		}
	}
	for _, b := range blocks {
		b.Layer = -1
		p := at(b)
		for i, a := range attns {
			if a == b || b.Kind != Attention && a.LayerFrom < p {
				b.Layer = i
			}
		}
	}
}

// layerStream is the graph position of the producer of the residual stream value that
// attention a's projections read: walking back from what they read, the nearest value
// that a residual Add after the attention also reads (pre-LN: the norm's input; post-LN:
// the previous layer's last norm). -1 for a graph input; without a residual, the
// position just before the attention's output, as when layers began there.
func layerStream(a *Block, pos map[*ir.Node]int, root int) int {
	best := -2
	for _, proj := range a.Projections() {
		seen := map[*ir.Node]bool{}
		queue := []*ir.Value{proj.Input(0)}
		for len(queue) > 0 && len(seen) < 48 {
			v := queue[0]
			queue = queue[1:]
			if v == nil || patterns.ConstOf(v) != nil {
				continue
			}
			around := false
			for _, u := range v.Uses() {
				around = around || Residual(u.Node) && pos[u.Node] > root
			}
			n, _ := v.Producer()
			if around {
				p := -1
				if n != nil {
					p = pos[n]
				}
				best = max(best, p)
				break
			}
			if n == nil || seen[n] || weighted(n) || isOp(n, "Shape") || isOp(n, "Size") {
				continue
			}
			seen[n] = true
			queue = append(queue, n.Inputs()...)
		}
	}
	if best == -2 {
		return root - 1
	}
	return best
}

// Projections are the projections behind an attention block's Q, K and V: the weighted
// ops its q/k/v_matmul roles name, and those behind its query, key and value
// (ProjectionsBehind), once each, nearest first.
func (b *Block) Projections() []*ir.Node {
	var out []*ir.Node
	seen := map[*ir.Node]bool{}
	add := func(n *ir.Node) {
		if n != nil && !seen[n] && weighted(n) {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, r := range []string{"q_matmul", "k_matmul", "v_matmul", "qkv_matmul"} {
		if v := b.Role(r); v != nil {
			n, _ := v.Producer()
			add(n)
		}
	}
	for _, r := range []string{RoleQuery, RoleKey, RoleValue} {
		if v := b.Role(r); v != nil {
			for _, n := range ProjectionsBehind(v, OperandNodes) {
				add(n)
			}
		}
	}
	return out
}

// OperandNodes bounds the walk back from an attention operand to its projections: the
// ops between them (head split, rotary embedding, Q/K norm, cache) number a few dozen.
const OperandNodes = 48

// ProjectionsBehind are the weighted ops (MatMul, Gemm, Conv on a constant or dequantized
// weight) whose outputs reach v through unweighted ops only: an attention operand's Q, K
// or V projections, through head reshapes, a split or gather of a packed projection,
// scaling, a rotary embedding, a Q/K norm or a cache Concat, whatever ops the export wrote
// them with. The walk does not enter a Shape or Size (a target shape is not the operand's
// data) or a Softmax (no operand comes through one), and visits at most maxNodes nodes,
// nearest first.
func ProjectionsBehind(v *ir.Value, maxNodes int) []*ir.Node {
	var out []*ir.Node
	seen := map[*ir.Node]bool{}
	queue := []*ir.Value{v}
	for len(queue) > 0 && len(seen) < maxNodes {
		x := queue[0]
		queue = queue[1:]
		if x == nil {
			continue
		}
		n, _ := x.Producer()
		if n == nil || seen[n] {
			continue
		}
		seen[n] = true
		if weighted(n) {
			out = append(out, n)
			continue
		}
		if isOp(n, "Shape") || isOp(n, "Size") || isOp(n, "Softmax") {
			continue
		}
		for _, in := range n.Inputs() {
			if in != nil && patterns.ConstOf(in) == nil {
				queue = append(queue, in)
			}
		}
	}
	return out
}

// weighted reports whether n is a MatMul, Gemm or Conv on a constant (or dequantized)
// weight.
func weighted(n *ir.Node) bool {
	if !isOp(n, "MatMul") && !isOp(n, "Gemm") && !isOp(n, "Conv") || len(n.Inputs()) < 2 || n.Input(1) == nil {
		return false
	}
	if patterns.ConstOf(n.Input(1)) != nil {
		return true
	}
	dq, _ := n.Input(1).Producer()
	return isOp(dq, "DequantizeLinear")
}

// Residual reports whether n is an Add of two activations: a residual, where the stream
// goes on around the block that read it.
func Residual(n *ir.Node) bool {
	return isOp(n, "Add") && len(n.Inputs()) == 2 &&
		patterns.ConstOf(n.Input(0)) == nil && patterns.ConstOf(n.Input(1)) == nil
}

func lower(k Kind) string {
	s := []byte(k)
	for i, c := range s {
		if c >= 'A' && c <= 'Z' {
			s[i] = c + 'a' - 'A'
		}
	}
	return string(s)
}

// Annotate records a block on a node's metadata_props, for debugging and for passes
// that run after the model was saved and loaded again.
func Annotate(n *ir.Node, b *Block) {
	n.SetMeta("qcc.block", b.ID)
	n.SetMeta("qcc.kind", string(b.Kind))
	n.SetMeta("qcc.variant", b.Variant)
	n.SetMeta("qcc.layer", strconv.Itoa(b.Layer))
}

// Families lists the families in the order fuse applies them: norms and activations
// first, so that skip, attention and embedding patterns see fused LayerNorms.
var Families = []*Family{
	LayerNormFamily,
	RMSNormFamily,
	GeluFamily,
	SkipFamily,
	SkipRMSNormFamily,
	AffineNormFamily,
	AttentionFamily,
	DebertaAttentionFamily,
	GeneralAttentionFamily,
	RotaryFamily,
	EmbeddingFamily,
	VisionEmbeddingFamily,
	FFNFamily,
}
