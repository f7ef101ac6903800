package qdq

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/passes/blocks"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// Quantizer kinds: the second half of a group name "layer<L>/<kind>".
const (
	KindQKV        = "qkv"         // the Q, K and V projections
	KindAttnMatMul = "attn_matmul" // Q·Kᵀ and probs·V
	KindAttnOut    = "attn_out"    // the attention output projection
	KindFFN        = "ffn"         // the feed-forward projections around the activation
	KindResidual   = "residual"    // the residual Add that feeds a LayerNorm
	KindInner      = "inner"       // another weighted op inside the layers (a bottleneck, a convolution module)
	KindOther      = "other"       // every other weighted op (embedding projections, pooler, classifier, LM head, router)
)

// Kinds in report order.
var Kinds = []string{KindQKV, KindAttnMatMul, KindAttnOut, KindFFN, KindResidual, KindInner, KindOther}

// target is one node whose inputs the policy quantizes.
type target struct {
	node   *ir.Node
	kind   string
	layer  int
	acts   []int // inputs quantized per tensor
	weight int   // the weight input (per channel), -1 for none
	pos    int
	skip   string // why the node stays float ("" to quantize)
	scope  string // "<body>/" for a node inside an If branch, as blocks names its blocks
}

// Group is the target's quantizer group, "layer<L>/<kind>" (L = -1 before the first
// encoder layer), after the branch's name for a node inside an If branch.
func (t *target) Group() string { return fmt.Sprintf("%slayer%d/%s", t.scope, t.layer, t.kind) }

// Unit is what budget=D decides on: the group, except that a group inside an If branch
// is one decision with its twins, the same layer and kind in the If's other branches,
// named after all of them ("{then,else}/layer0/qkv"). A merged decoder runs the same
// layers in either branch; deciding each branch alone could leave a layer float on one
// path and quantized on the other, for a loss measured on whichever branch the data ran.
func (t *target) Unit() string {
	g := t.node.Graph()
	if t.scope == "" || g == nil || g.Owner == nil {
		return t.Group()
	}
	var names []string
	for _, b := range g.Owner.Subgraphs() {
		names = append(names, b.Name)
	}
	if len(names) < 2 {
		return t.Group()
	}
	return fmt.Sprintf("{%s}/layer%d/%s", strings.Join(names, ","), t.layer, t.kind)
}

// core is one attention block as placement sees it.
type core struct {
	qkv   []*ir.Node // projection MatMuls
	mms   []*ir.Node // Q·Kᵀ and probs·V
	out   *ir.Value  // what the output projection reads (through reshapes)
	start int        // graph position of its first node
	layer int
}

// placement is what the policy selects in a model, before anything changes.
type placement struct {
	targets []*target
	cores   []*core
	notes   []string
	// loops counts the projections in Loop and Scan bodies, which stay float.
	loops int
}

// place finds the targets of a policy in the main graph and in every If branch, each
// from its own blocks.
func place(m *ir.Model, br *blocks.Result, o *options) *placement {
	pl := &placement{}
	for _, r := range br.All() {
		g := r.Graph
		if g == nil {
			g = m.Graph
		}
		if !inBranches(g) {
			pl.loops += projectionCount(g)
			continue
		}
		placeGraph(pl, g, r, o)
	}
	return pl
}

// inBranches reports whether g is the main graph or inside If branches only: calibration
// reads a branch's values through the If's outputs, which a Loop or Scan body lacks.
func inBranches(g *ir.Graph) bool {
	for ; g.Parent != nil; g = g.Parent {
		if own := g.Owner; own == nil || !qdqcheck.IsOp(own, "If") {
			return false
		}
	}
	return true
}

// projectionCount counts g's MatMul, Gemm and Conv nodes on a constant weight.
func projectionCount(g *ir.Graph) int {
	n := 0
	for _, nd := range g.Nodes() {
		switch nd.OpType {
		case "MatMul", "Gemm", "Conv":
			if nd.Domain == "" && len(nd.Inputs()) > 1 && patterns.ConstOf(nd.Input(1)) != nil {
				n++
			}
		}
	}
	return n
}

// placeGraph adds the targets of a policy in g (the main graph or an If branch) from
// its blocks, with the structural definitions of qdqcheck as the backstop (so that what
// the checker demands is always placed): weighted ops (every policy), attention matmuls
// (attention, full), residual adds (full).
func placeGraph(pl *placement, g *ir.Graph, br *blocks.Result, o *options) {
	policy := o.policy
	scope := ""
	if g.Parent != nil {
		scope = g.Name + "/"
	}
	pos := map[*ir.Node]int{}
	for i, n := range g.Nodes() {
		pos[n] = i
	}
	noQuant := map[*ir.Node]string{} // nodes inside LayerNorm and GELU blocks
	var cores []*core
	covered := map[*ir.Node]bool{} // Softmax nodes inside attention blocks
	ffnIn, ffnOut := map[*ir.Node]bool{}, map[*ir.Node]bool{}
	var norms []*transformer.Block
	for _, b := range br.Blocks {
		switch b.Kind {
		case transformer.LayerNorm, transformer.RMSNorm, transformer.SkipLayerNorm, transformer.Gelu:
			for _, n := range b.Nodes {
				noQuant[n] = string(b.Kind)
			}
		}
		switch b.Kind {
		case transformer.Attention:
			c := blockCore(b, pos, pl)
			for _, n := range b.Nodes {
				if qdqcheck.IsOp(n, "Softmax") {
					covered[n] = true
				}
			}
			cores = append(cores, c)
		case transformer.Gelu:
			markFFN(b.Role("input"), b.Role("output"), ffnIn, ffnOut)
		case transformer.FFN:
			// The block's weights name its projections where the activation does not:
			// a half of a packed projection (whichever axis it is cut on), or SiLU, which
			// is no block of its own.
			for _, r := range []string{transformer.RoleUpWeight, transformer.RoleGateWeight} {
				markWeightReaders(b.Role(r), ffnIn)
			}
			markWeightReaders(b.Role(transformer.RoleDownWeight), ffnOut)
		case transformer.LayerNorm, transformer.RMSNorm, transformer.SkipLayerNorm:
			norms = append(norms, b)
		}
	}
	// Attention the blocks analysis did not recognise (DeBERTa's disentangled attention,
	// say): found from its Softmax.
	for _, n := range g.Nodes() {
		if qdqcheck.IsOp(n, "Softmax") && !covered[n] {
			if c := softmaxCore(n, pos); c != nil {
				cores = append(cores, c)
			}
		}
		// Activations fuse recognises no block for (ReLU FFNs, fused GELU ops).
		switch {
		case qdqcheck.IsOp(n, "Relu"), n.OpType == "Gelu", n.OpType == "FastGelu", n.OpType == "BiasGelu", n.OpType == "QuickGelu":
			if noQuant[n] == "" {
				markFFN(n.Input(0), n.Output(0), ffnIn, ffnOut)
			}
		}
	}
	sort.SliceStable(cores, func(i, j int) bool { return cores[i].start < cores[j].start })
	pl.cores = append(pl.cores, cores...)
	qkv, attnMM, attnOut := map[*ir.Node]int{}, map[*ir.Node]int{}, map[*ir.Node]int{}
	for i, c := range cores {
		c.layer = i
		for _, n := range c.qkv {
			qkv[n] = i
		}
		for _, n := range c.mms {
			attnMM[n] = i
		}
		for _, n := range weightedReaders(c.out) {
			attnOut[n] = i
		}
	}
	layerAt := func(p int) int {
		l := -1
		for _, c := range cores {
			if c.start <= p {
				l = c.layer
			}
		}
		return l
	}
	residual := map[*ir.Node]bool{}
	if policy == "full" {
		for _, b := range norms {
			if b.Fused {
				continue
			}
			if ln, _ := b.Root.Producer(); ln != nil {
				in := b.Role("input")
				if b.Kind == transformer.SkipLayerNorm {
					in = ln.Input(0)
				}
				if add, _ := producerOf(in); add != nil && qdqcheck.ResidualAdd(add) {
					residual[add] = true
				}
			}
		}
	}
	// The layers begin after the stream value the first attention reads (its block
	// knows; an attention found from its Softmax alone, at its first projection).
	layersFrom := -1
	if len(cores) > 0 {
		layersFrom = cores[0].start - 1
	}
	for _, b := range br.Blocks {
		if b.Kind == transformer.Attention {
			layersFrom = b.LayerFrom
			break
		}
	}
	data := tokenData(g)
	for _, n := range g.Nodes() {
		t := &target{node: n, weight: -1, pos: pos[n], layer: layerAt(pos[n]), scope: scope}
		if w, ok := qdqcheck.WeightInput(n); ok {
			t.weight = w
			t.acts = qdqcheck.ActivationInputs(n)
			switch {
			case has(qkv, n):
				t.kind, t.layer = KindQKV, qkv[n]
			case has(attnOut, n):
				t.kind, t.layer = KindAttnOut, attnOut[n]
			case ffnIn[n] || ffnOut[n]:
				t.kind = KindFFN
			case layersFrom >= 0 && pos[n] > layersFrom && inner(n, data):
				t.kind = KindInner
			default:
				t.kind = KindOther
			}
		} else if policy != "linear" && (has(attnMM, n) || qdqcheck.AttentionMatMul(n)) {
			t.kind, t.acts = KindAttnMatMul, []int{0, 1}
			if l, ok := attnMM[n]; ok {
				t.layer = l
			}
		} else if policy == "full" && o.residual != "none" && (residual[n] || qdqcheck.ResidualAdd(n)) {
			t.kind, t.acts = KindResidual, []int{0, 1}
			if o.residual == "skip" {
				// The skip input only: the weighted layer's side stays float so that the
				// Add fuses into its GEMM's epilogue.
				skip := qdqcheck.SkipInput(n)
				if skip < 0 {
					continue
				}
				t.acts = []int{skip}
			}
		} else {
			continue
		}
		if why, ok := noQuant[n]; ok && t.kind != KindResidual {
			t.skip = "inside a " + why + " block"
		}
		pl.targets = append(pl.targets, t)
	}
}

func has(m map[*ir.Node]int, n *ir.Node) bool { _, ok := m[n]; return ok }

func producerOf(v *ir.Value) (*ir.Node, int) {
	if v == nil {
		return nil, 0
	}
	return v.Producer()
}

// blockCore reads a recognised attention block.
func blockCore(b *transformer.Block, pos map[*ir.Node]int, pl *placement) *core {
	c := &core{start: -1}
	for _, n := range b.Projections() {
		if _, ok := qdqcheck.WeightInput(n); ok {
			c.qkv = append(c.qkv, n)
		}
	}
	if s := scoresMatMul(b.Role("scores"), 4); s != nil {
		c.mms = append(c.mms, s)
	}
	if n, _ := producerOf(b.Role("context")); qdqcheck.IsOp(n, "MatMul") {
		c.mms = append(c.mms, n)
	}
	if b.Fused {
		if root, _ := b.Root.Producer(); root != nil {
			if root.Domain == "com.microsoft" {
				pl.notes = append(pl.notes, fmt.Sprintf("%s: fused %s.%s carries its own projections and matmuls; TensorRT reads only standard operators, nothing placed inside", b.ID, root.Domain, root.OpType))
			} else if len(c.mms) == 0 {
				pl.notes = append(pl.notes, fmt.Sprintf("%s: Q·Kᵀ and probs·V are inside the fused %s operator; not quantized", b.ID, root.OpType))
			}
		}
	}
	c.out = b.Role("output")
	for _, n := range b.Nodes {
		if p, ok := pos[n]; ok && (c.start < 0 || p < c.start) {
			c.start = p
		}
	}
	for _, n := range c.qkv {
		if p := pos[n]; c.start < 0 || p < c.start {
			c.start = p
		}
	}
	return c
}

// scoresMatMul finds the Q·Kᵀ MatMul behind a scores value (through its scaling).
func scoresMatMul(v *ir.Value, depth int) *ir.Node {
	n, _ := producerOf(v)
	if n == nil || depth == 0 {
		return nil
	}
	if qdqcheck.IsOp(n, "MatMul") {
		return n
	}
	if qdqcheck.IsOp(n, "Div") || qdqcheck.IsOp(n, "Mul") {
		for i := 0; i < 2; i++ {
			if s := scoresMatMul(n.Input(i), depth-1); s != nil {
				return s
			}
		}
	}
	return nil
}

// softmaxCore finds an attention core around a Softmax no block covers: the Q·Kᵀ MatMul
// before it, the probs·V MatMul after it, the projections that feed them.
func softmaxCore(sm *ir.Node, pos map[*ir.Node]int) *core {
	c := &core{start: pos[sm]}
	var scores, ctx *ir.Node
	// Back from the Softmax input through masking and scaling, nearest first.
	frontier := []*ir.Value{sm.Input(0)}
	for d := 0; d < 6 && scores == nil && len(frontier) > 0; d++ {
		var next []*ir.Value
		for _, v := range frontier {
			n, _ := producerOf(v)
			if n == nil || n.Domain != "" {
				continue
			}
			if n.OpType == "MatMul" && qdqcheck.AttentionMatMul(n) {
				scores = n
				break
			}
			switch n.OpType {
			case "Add", "Sub", "Mul", "Div", "Cast", "Reshape":
				next = append(next, n.Input(0))
				if n.OpType != "Reshape" && n.OpType != "Cast" {
					next = append(next, n.Input(1))
				}
			case "Where":
				next = append(next, n.Input(1), n.Input(2))
			}
		}
		frontier = next
	}
	// Forward from the Softmax output to the MatMul that reads the probabilities.
	frontier = []*ir.Value{sm.Output(0)}
	for d := 0; d < 5 && ctx == nil && len(frontier) > 0; d++ {
		var next []*ir.Value
		for _, v := range frontier {
			for _, u := range v.Uses() {
				n := u.Node
				if qdqcheck.IsOp(n, "MatMul") && u.Index == 0 && qdqcheck.AttentionMatMul(n) {
					ctx = n
					break
				}
				switch n.OpType {
				case "Dropout", "Cast", "Where", "Reshape", "Identity":
					next = append(next, n.Output(0))
				}
			}
		}
		frontier = next
	}
	if scores == nil && ctx == nil {
		return nil
	}
	seen := map[*ir.Node]bool{}
	add := func(v *ir.Value) {
		for _, n := range transformer.ProjectionsBehind(v, transformer.OperandNodes) {
			if _, ok := qdqcheck.WeightInput(n); ok && !seen[n] {
				seen[n] = true
				c.qkv = append(c.qkv, n)
			}
		}
	}
	if scores != nil {
		c.mms = append(c.mms, scores)
		add(scores.Input(0))
		add(scores.Input(1))
	}
	if ctx != nil {
		c.mms = append(c.mms, ctx)
		add(ctx.Input(1))
		c.out = ctx.Output(0)
	}
	for _, n := range append(append([]*ir.Node(nil), c.qkv...), c.mms...) {
		if p := pos[n]; p < c.start {
			c.start = p
		}
	}
	return c
}

// inner reports whether weighted op n, placed after the layers begin, works inside them:
// it reads the token stream (data: its input depends on a graph input's data, not on
// constants and shapes alone, as a relative-position projection's does) and its output
// returns to the residual stream (an Add of two activations) within innerNodes nodes,
// through any ops, without choosing among experts (TopK: a router, whose ranking int8 may
// flip). The heads (pooler, classifier, LM head) and routers stay "other".
func inner(n *ir.Node, data map[*ir.Value]bool) bool {
	if !data[n.Input(0)] {
		return false
	}
	seen := map[*ir.Node]bool{}
	queue := []*ir.Value{n.Output(0)}
	residual := false
	for len(queue) > 0 && len(seen) < innerNodes {
		x := queue[0]
		queue = queue[1:]
		if x == nil {
			continue
		}
		for _, u := range x.Uses() {
			m := u.Node
			if seen[m] {
				continue
			}
			seen[m] = true
			switch {
			case m.OpType == "TopK":
				return false
			case transformer.Residual(m):
				residual = true
				continue
			}
			queue = append(queue, m.Outputs()...)
		}
	}
	return residual
}

// innerNodes bounds inner's walk: a bottleneck, a convolution module or a Mix-FFN is
// a few dozen ops.
const innerNodes = 48

// tokenData marks, in one pass over g in graph order, the values that depend on a graph
// input's data (an input, or a value of an enclosing graph) and not on constants and
// shapes alone: positions computed from an input's shape are no token's data.
func tokenData(g *ir.Graph) map[*ir.Value]bool {
	data := map[*ir.Value]bool{}
	reads := func(v *ir.Value) bool {
		if v == nil || patterns.ConstOf(v) != nil {
			return false
		}
		if p, _ := v.Producer(); p == nil || p.Graph() != g {
			return true
		}
		return data[v]
	}
	for _, n := range g.Nodes() {
		if n.OpType == "Shape" || n.OpType == "Size" || !slices.ContainsFunc(n.Inputs(), reads) {
			continue
		}
		for _, o := range n.Outputs() {
			if o != nil {
				data[o] = true
			}
		}
	}
	return data
}

// weightedReaders are the weighted ops that read v (as their activation) through
// unweighted ops only: an attention's output projection through the head merge, a
// sub-norm (BitNet) or an activation (LeViT's Hardswish); an FFN's down projection through
// its gate. The walk stops at an Add of two activations (a residual: what reads the sum is
// the next block's), does not enter a Shape or Size, and visits at most readerNodes nodes.
func weightedReaders(v *ir.Value) []*ir.Node {
	var out []*ir.Node
	seen := map[*ir.Node]bool{}
	queue := []*ir.Value{v}
	for len(queue) > 0 && len(seen) < readerNodes {
		x := queue[0]
		queue = queue[1:]
		if x == nil {
			continue
		}
		for _, u := range x.Uses() {
			n := u.Node
			if seen[n] {
				continue
			}
			seen[n] = true
			if _, ok := qdqcheck.WeightInput(n); ok {
				if u.Index == 0 {
					out = append(out, n)
				}
				continue
			}
			switch {
			case n.OpType == "Shape" || n.OpType == "Size":
				continue
			case transformer.Residual(n):
				continue
			}
			queue = append(queue, n.Outputs()...)
		}
	}
	return out
}

// readerNodes bounds weightedReaders' walk: a head merge, a norm or an activation is a
// dozen ops.
const readerNodes = 24

// markFFN records the weighted op before an activation (through its bias Add) and the
// ones reading its output.
func markFFN(in, out *ir.Value, ffnIn, ffnOut map[*ir.Node]bool) {
	n, _ := producerOf(in)
	if qdqcheck.IsOp(n, "Add") {
		for i := 0; i < 2; i++ {
			if in := n.Input(i); in != nil && in.Const != nil {
				n, _ = producerOf(n.Input(1 - i))
				break
			}
		}
	}
	if _, ok := qdqcheck.WeightInput(n); ok {
		ffnIn[n] = true
	}
	for _, r := range weightedReaders(out) {
		ffnOut[r] = true
	}
}

// markWeightReaders records the weighted ops that take w as their weight.
func markWeightReaders(w *ir.Value, into map[*ir.Node]bool) {
	if w == nil {
		return
	}
	for _, u := range w.Uses() {
		if i, ok := qdqcheck.WeightInput(u.Node); ok && i == u.Index {
			into[u.Node] = true
		}
	}
}
