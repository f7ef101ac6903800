package transformer

import (
	"fmt"
	"slices"
	"sort"
	"strconv"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/prune"
	"github.com/qcc-dev/qcc/shape"
)

// Report says what Fuse did.
type Report struct {
	// Ops counts the fused operators in the result, by op type ("com.microsoft.Attention").
	Ops map[string]int
	// Left lists blocks recognised but not rewritten, with the reason ("attention.0: ...").
	Left []string
	// Why maps the ID of each block in Left to the reason alone.
	Why map[string]string
	// Refusals are candidates a rule declined, with the rule's reason.
	Refusals []patterns.Refusal
	// Blocks are the blocks of the result, in graph order.
	Blocks []*Block
	// Softmax says, for each Softmax outside the attention blocks, why it is not one.
	Softmax []string
}

// Fuse rewrites every recognised block of the main graph, family by family in the
// given order (types are re-inferred before each family, so patterns can check ranks
// and sizes of what earlier families produced), then recognises the result once more to
// number the blocks, assign layers and annotate the nodes.
func Fuse(m *ir.Model, fams []*Family, env *Env) (*Report, error) {
	rep := &Report{Ops: map[string]int{}, Why: map[string]string{}}
	// The bodies of If, Loop and Scan are fused too: a merged decoder (Optimum's
	// decoder_model_merged) holds the whole model in both branches of an If.
	var graphs []*ir.Graph
	_ = m.Graph.Walk(func(g *ir.Graph) error { graphs = append(graphs, g); return nil })
	for i, g := range graphs {
		prefix := ""
		if i > 0 {
			prefix = g.Name + "/"
		}
		if err := fuseGraph(m, g, prefix, fams, env, rep, env.Typed && i == 0); err != nil {
			return nil, err
		}
	}
	sort.Strings(rep.Left)
	for _, g := range graphs {
		for _, n := range g.Nodes() {
			if n.Domain == "com.microsoft" || fusedStandardOps[n.OpType] {
				key := n.OpType
				if n.Domain != "" {
					key = n.Domain + "." + n.OpType
				}
				rep.Ops[key]++
			}
		}
	}
	return rep, nil
}

// fuseGraph fuses the blocks of g, one graph of m, into rep; prefix names the blocks of
// a body (its graph's name) apart from the main graph's. typed says m's types are current.
func fuseGraph(m *ir.Model, g *ir.Graph, prefix string, fams []*Family, env *Env, rep *Report, typed bool) error {
	left := map[string]string{}
	dirty := true // the graph changed since types were inferred and the nodes sorted
	for _, f := range fams {
		// A block whose nodes another block of the family held (a norm whose output a
		// larger norm also reads) is found once that one is fused: match again while a
		// fused block leaves nodes that compute values still read, a few rounds at most.
		for round := 0; round < 3; round++ {
			if dirty {
				// What an earlier family replaced may stay alive through Shape readers until
				// they are dead too; later families must not see it.
				// Removing dead nodes leaves the live values' types as they were.
				prune.RemoveDead(g)
				if !typed {
					if _, err := shape.Infer(m); err != nil {
						return fmt.Errorf("before %s fusion: %w", f.Kind, err)
					}
				}
				typed = false
				// Nodes an earlier family added sit at the end of the list; Find sweeps from
				// the end, so restore the order first.
				if err := g.TopoSort(); err != nil {
					return err
				}
				dirty = false
			}
			changed, again, err := fuseFound(g, f, env, rep, left)
			if err != nil {
				return err
			}
			dirty = dirty || changed
			if !again {
				break
			}
		}
	}
	// What stays of quantized linear layers (the Q/DQ MatMuls outside fused attention).
	ql, err := FuseQLinear(g, env)
	if err != nil {
		return err
	}
	rep.Refusals = append(rep.Refusals, ql.Refusals...)
	// Rewrites leave the exporter's shape arithmetic for the replaced blocks dead.
	prune.RemoveDead(g)
	if err := g.TopoSort(); err != nil {
		return err
	}
	if _, err := shape.Infer(m); err != nil {
		return fmt.Errorf("after fusion: %w", err)
	}
	blocks, _ := Recognize(g, fams)
	for _, b := range blocks {
		b.ID = prefix + b.ID
		if p, _ := b.Root.Producer(); p != nil {
			Annotate(p, b)
		}
		// A block one family left and a later one fused at the same root is not left.
		if why, ok := left[leftKey(b)]; ok && !b.Fused {
			rep.Left = append(rep.Left, fmt.Sprintf("%s (%s, layer %d): %s", b.ID, b.Variant, b.Layer, why))
			rep.Why[b.ID] = why
		}
	}
	for _, f := range fams {
		if f.Kind == Attention {
			for _, s := range unfusedSoftmax(g, blocks) {
				rep.Softmax = append(rep.Softmax, prefix+s)
			}
			break
		}
	}
	rep.Blocks = append(rep.Blocks, blocks...)
	uniqueNodeNames(g)
	return nil
}

// fuseFound finds family f's blocks in g and fuses each it can. changed says that the
// graph changed; again that a block it fused left nodes whose values are still read
// other than for their shape or by the rewrites: another block of the family may hold
// them. A refusal is reported once, whatever the rounds.
func fuseFound(g *ir.Graph, f *Family, env *Env, rep *Report, left map[string]string) (changed, again bool, err error) {
	found, refs := patterns.Find(g, f.Rules)
	var fused [][]*ir.Node
	added := map[*ir.Node]bool{}
	refuse := func(r patterns.Refusal) {
		if !slices.Contains(rep.Refusals, r) {
			rep.Refusals = append(rep.Refusals, r)
		}
	}
	for _, r := range refs {
		refuse(r)
	}
	for _, fd := range found {
		// An earlier rewrite in this family may have replaced a value this match
		// bound (a skip block's residual is the previous block's output): match
		// again at the root, which no other block covers, and check again.
		if p, _ := fd.Match.Root.Producer(); p == nil || p.Graph() != g {
			continue
		}
		fd.Match = patterns.MatchValue(fd.Rule.Pattern, fd.Match.Root)
		if fd.Match == nil {
			continue
		}
		if why := fd.Rule.EscapeCheck(fd.Match); why != "" {
			refuse(patterns.Refusal{Rule: fd.Rule.Name, At: fd.Match.Root.Name, Reason: why})
			continue
		}
		if fd.Rule.Check != nil {
			if why := fd.Rule.Check(fd.Match); why != "" {
				refuse(patterns.Refusal{Rule: fd.Rule.Name, At: fd.Match.Root.Name, Reason: why})
				continue
			}
		}
		b := &Block{Kind: f.Kind, Variant: fd.Rule.Name, Match: fd.Match, Nodes: fd.Match.All,
			Root: fd.Match.Root, Roles: map[string]*ir.Value{}, Params: map[string]float64{}, Layer: -1}
		if f.Describe != nil {
			f.Describe(fd.Match, b)
		}
		if b.Fused || f.Fuse == nil {
			continue
		}
		rw := patterns.NewRewriter(g, fd.Match)
		changed = true // a lowering that refuses may leave the nodes it added, dead
		if _, reason, err := f.Fuse(rw, b, env); err != nil {
			return changed, false, fmt.Errorf("fusing %s (%s) at %s: %w", f.Kind, b.Variant, b.Root.Name, err)
		} else if reason != "" {
			left[leftKey(b)] = reason
			continue
		}
		rw.Commit()
		fused = append(fused, fd.Match.All)
		for _, a := range rw.Added() {
			added[a] = true
		}
	}
	for _, nodes := range fused {
		alive := slices.DeleteFunc(slices.Clone(nodes), func(n *ir.Node) bool { return n.Graph() != g })
		if escapesButShape(alive, nil, added) != "" {
			return changed, true, nil
		}
	}
	return changed, false, nil
}

// fusedStandardOps are the default-domain operators fuse emits.
var fusedStandardOps = map[string]bool{
	"LayerNormalization": true, "SimplifiedLayerNormalization": true, "RMSNormalization": true,
	"Gelu": true, "Attention": true, "RotaryEmbedding": true,
}

func leftKey(b *Block) string { return string(b.Kind) + "@" + b.Root.Name }

// EnsureOpset adds a domain's opset import (version v) when absent.
func EnsureOpset(m *ir.Model, domain string, v int64) {
	if m.Opset(domain) == 0 {
		m.SetOpset(domain, v)
	}
}

// unfusedSoftmax says, for every Softmax outside an attention block, why it is not
// attention (or which check refused it).
func unfusedSoftmax(g *ir.Graph, blocks []*Block) []string {
	in := map[*ir.Node]bool{}
	for _, b := range blocks {
		if b.Kind == Attention {
			for _, n := range b.Nodes {
				in[n] = true
			}
		}
	}
	var out []string
	for _, n := range g.Nodes() {
		if n.OpType != "Softmax" || n.Domain != "" || in[n] {
			continue
		}
		p := analyseAttention(n)
		why := p.why
		if why == "" {
			why = p.coreEscapes()
		}
		if why == "" {
			why = "proved attention, but its output path was refused"
		}
		out = append(out, fmt.Sprintf("softmax %s: %s", n.Name, why))
	}
	return out
}

// uniqueNodeNames renames the later of two nodes that share a name, which ONNX Runtime
// refuses: a fused node is named after its block's node-name prefix, and in a model whose
// nodes carry no scoped names of their own, every block has the same (empty) prefix.
// Unnamed nodes stay unnamed.
func uniqueNodeNames(g *ir.Graph) {
	used := map[string]bool{}
	for _, n := range g.Nodes() {
		used[n.Name] = true
	}
	seen := map[string]bool{}
	for _, n := range g.Nodes() {
		if n.Name == "" {
			continue
		}
		if seen[n.Name] {
			base := n.Name
			for k := 2; ; k++ {
				if name := base + "_" + strconv.Itoa(k); !used[name] {
					n.Name = name
					used[name] = true
					break
				}
			}
		}
		seen[n.Name] = true
	}
}
