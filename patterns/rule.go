package patterns

import (
	"fmt"
	"sort"
	"sync"

	"github.com/qcc-dev/qcc/ir"
)

// Match is a successful match: the bound values and nodes, and every node the pattern
// covered.
type Match struct {
	Root   *ir.Value
	Values map[string]*ir.Value
	Nodes  map[string]*ir.Node
	// All lists the covered nodes once each, in graph order.
	All []*ir.Node
	// Plan is what a Trace pattern in the match computed, or nil.
	Plan any
}

// V returns a bound value (nil if the name is unbound, e.g. an Or branch not taken).
func (m *Match) V(name string) *ir.Value { return m.Values[name] }

// N returns a bound node.
func (m *Match) N(name string) *ir.Node { return m.Nodes[name] }

// Const returns the tensor of a bound constant value, or nil.
func (m *Match) Const(name string) *ir.Tensor { return ConstOf(m.Values[name]) }

// Has reports whether name is bound.
func (m *Match) Has(name string) bool { _, ok := m.Values[name]; return ok }

// MatchValue matches p against v and returns the first complete match, or nil.
func MatchValue(p Pattern, v *ir.Value) *Match {
	s := statePool.Get().(*state)
	defer s.release()
	var res *Match
	p.match(s, v, func(s *state) bool {
		res = s.result(v)
		return true
	})
	return res
}

func (s *state) result(root *ir.Value) *Match {
	m := &Match{Root: root, Values: map[string]*ir.Value{}, Nodes: map[string]*ir.Node{}, Plan: s.plan}
	for k, v := range s.values {
		m.Values[k] = v
	}
	for k, n := range s.nodes {
		m.Nodes[k] = n
	}
	seen := map[*ir.Node]bool{}
	for _, n := range s.seen {
		if !seen[n] {
			seen[n] = true
			m.All = append(m.All, n)
		}
	}
	g := root.Graph()
	order := func(n *ir.Node) int {
		if n.Graph() != g {
			return 0
		}
		return n.Order()
	}
	sort.SliceStable(m.All, func(i, j int) bool { return order(m.All[i]) < order(m.All[j]) })
	return m
}

// Rule is a pattern with the check that may refuse a match and the rewrite that
// replaces it.
type Rule struct {
	// Name is family/variant, e.g. "layernorm/pow-div".
	Name    string
	Pattern Pattern
	// Benefit orders rules: higher first, then list order.
	Benefit int
	// Check returns why the match must not be rewritten, or "".
	Check func(m *Match) string
	// Rewrite builds the replacement; it runs only after the whole match and the checks
	// succeeded, and mutates only through rw.
	Rewrite func(rw *Rewriter, m *Match) error
	// Internal lists bound names whose values may be used outside the match (besides the
	// root): values the rewrite keeps, such as a shared projection.
	Internal []string
	// Escapes, when set, replaces the default check that no intermediate value is used
	// outside the match (a block whose sizes the exporter reads with Shape nodes).
	Escapes func(m *Match) string
	// Shared lists bound node names that other matches may hold too, and whose outputs
	// may be read outside the match: the statistics of two norms of one input, which an
	// exporter or CSE computed once. The rewrite replaces only the root, so a shared node
	// stays while another block reads it.
	Shared []string

	rootsOnce sync.Once
	roots     map[string]bool // rootOps of Pattern as a set; nil: any value
}

// rootSet returns the op types at which the rule can match (nil: any), computed at the
// rule's first use (its Pattern does not change after that).
func (r *Rule) rootSet() map[string]bool {
	r.rootsOnce.Do(func() {
		if ops, all := rootOps(r.Pattern); !all {
			r.roots = map[string]bool{}
			for _, op := range ops {
				r.roots[op] = true
			}
		}
	})
	return r.roots
}

// Match matches the rule's pattern at v, or nil; a v whose producer cannot be the
// pattern's root is refused without trying.
func (r *Rule) Match(v *ir.Value) *Match {
	if roots := r.rootSet(); roots != nil {
		p, _ := v.Producer()
		if p == nil || !roots[p.OpType] {
			return nil
		}
	}
	return MatchValue(r.Pattern, v)
}

// EscapeCheck runs the rule's escape check: its own, or Escapes with its Internal
// names, the outputs of its Shared nodes kept too.
func (r *Rule) EscapeCheck(m *Match) string {
	if r.Escapes != nil {
		return r.Escapes(m)
	}
	var extra []*ir.Value
	for n := range r.shared(m) {
		extra = append(extra, n.Outputs()...)
	}
	return escapes(m, r.Internal, extra)
}

// shared is the set of nodes of m that r lets other matches hold.
func (r *Rule) shared(m *Match) map[*ir.Node]bool {
	s := map[*ir.Node]bool{}
	for _, name := range r.Shared {
		if n := m.Nodes[name]; n != nil {
			s[n] = true
		}
	}
	return s
}

// Escapes returns a reason when a value computed inside the match (other than the root
// and the values the rule keeps) is used by a node outside it or is a graph output.
func Escapes(m *Match, keep ...string) string { return escapes(m, keep, nil) }

// escapes is Escapes with values kept besides the named ones.
func escapes(m *Match, keep []string, extra []*ir.Value) string {
	in := map[*ir.Node]bool{}
	for _, n := range m.All {
		in[n] = true
	}
	// The root node's other outputs (a fused op's optional outputs) leave the block too.
	kept := map[*ir.Value]bool{m.Root: true}
	if p, _ := m.Root.Producer(); p != nil {
		for _, o := range p.Outputs() {
			kept[o] = true
		}
	}
	for _, k := range keep {
		if v := m.Values[k]; v != nil {
			kept[v] = true
		}
	}
	for _, v := range extra {
		kept[v] = true
	}
	for _, n := range m.All {
		for _, o := range n.Outputs() {
			if o == nil || kept[o] {
				continue
			}
			if o.IsGraphOutput() {
				return fmt.Sprintf("intermediate value %q is a graph output", o.Name)
			}
			for _, u := range o.Uses() {
				if !in[u.Node] {
					return fmt.Sprintf("intermediate value %q is also used outside the block by %s", o.Name, u.Node)
				}
			}
		}
	}
	return ""
}

// Refusal records a structural match that a rule declined, and why.
type Refusal struct {
	Rule   string
	At     string // the root value
	Reason string
}

func (r Refusal) String() string { return fmt.Sprintf("%s at %s: %s", r.Rule, r.At, r.Reason) }

// Result is what Apply did.
type Result struct {
	Applied    map[string]int // by rule name
	Refusals   []Refusal      // sorted, each once
	Iterations int
}

// Options bound the driver.
type Options struct {
	MaxIterations int // whole-graph sweeps; default 10
}

// Apply rewrites g with the rules to a fixed point: it sweeps the nodes in order, and at
// each value tries the rules by benefit, then list order; the first that matches and is
// not refused rewrites. Sweeps repeat until one changes nothing or MaxIterations is hit.
func Apply(g *ir.Graph, rules []*Rule, opt Options) (*Result, error) {
	if opt.MaxIterations <= 0 {
		opt.MaxIterations = 10
	}
	rs := newRuleSet(rules)
	res := &Result{Applied: map[string]int{}}
	for res.Iterations < opt.MaxIterations {
		res.Iterations++
		changed := false
		for _, n := range g.NodesCopy() {
			if n.Graph() != g {
				continue // removed by an earlier rewrite in this sweep
			}
			r, m, v := rs.first(n, nil)
			if r == nil {
				continue
			}
			rw := &Rewriter{g: g, m: m}
			if err := r.Rewrite(rw, m); err != nil {
				return res, fmt.Errorf("rule %s at %s: %w", r.Name, v.Name, err)
			}
			rw.commit()
			res.Applied[r.Name]++
			changed = true
		}
		if !changed {
			break
		}
	}
	res.Refusals = rs.refusals()
	return res, nil
}

// ruleSet tries rules by benefit, then list order, and remembers what they refused.
type ruleSet struct {
	ordered []*Rule
	// roots[i] is the op types whose output rule i can match (nil: any value), so that
	// first skips a rule that cannot match without starting a match.
	roots   []map[string]bool
	refused map[Refusal]bool
}

func newRuleSet(rules []*Rule) *ruleSet {
	ordered := append([]*Rule(nil), rules...)
	sort.SliceStable(ordered, func(i, j int) bool { return ordered[i].Benefit > ordered[j].Benefit })
	rs := &ruleSet{ordered: ordered, roots: make([]map[string]bool, len(ordered)), refused: map[Refusal]bool{}}
	for i, r := range ordered {
		rs.roots[i] = r.rootSet()
	}
	return rs
}

// first returns the first rule that matches at an output of n (in output order), is not
// skipped, and whose Escapes and Check accept the match; refusals are recorded.
func (rs *ruleSet) first(n *ir.Node, skip func(*Rule, *Match) bool) (*Rule, *Match, *ir.Value) {
	for _, v := range n.Outputs() {
		if v == nil {
			continue
		}
		for i, r := range rs.ordered {
			if rs.roots[i] != nil && !rs.roots[i][n.OpType] {
				continue
			}
			m := MatchValue(r.Pattern, v)
			if m == nil || skip != nil && skip(r, m) {
				continue
			}
			reason := r.EscapeCheck(m)
			if reason == "" && r.Check != nil {
				reason = r.Check(m)
			}
			if reason != "" {
				rs.refused[Refusal{r.Name, v.Name, reason}] = true
				continue
			}
			return r, m, v
		}
	}
	return nil, nil, nil
}

// refusals returns the recorded refusals, sorted, each once.
func (rs *ruleSet) refusals() []Refusal {
	var refs []Refusal
	for r := range rs.refused {
		refs = append(refs, r)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].String() < refs[j].String() })
	return refs
}

// Rewriter is the only way a rule mutates the graph: it adds nodes and constants, and
// records which values replace which; commit redirects the uses and removes the matched
// nodes that are then dead.
type Rewriter struct {
	g       *ir.Graph
	m       *Match
	replace [][2]*ir.Value
	added   []*ir.Node
}

// Graph returns the graph being rewritten (for lookups; mutate through the Rewriter).
func (rw *Rewriter) Graph() *ir.Graph { return rw.g }

// Node adds a node with nOut fresh outputs named after base.
func (rw *Rewriter) Node(op, domain string, inputs []*ir.Value, nOut int, base string, attrs ...*ir.Attr) *ir.Node {
	used := make([]bool, nOut)
	for i := range used {
		used[i] = true
	}
	return rw.NodeOptional(op, domain, inputs, used, base, attrs...)
}

// NodeOptional adds a node as Node does, with output i only where used[i] (an operator's
// optional outputs left empty); output 0 is always there.
func (rw *Rewriter) NodeOptional(op, domain string, inputs []*ir.Value, used []bool, base string, attrs ...*ir.Attr) *ir.Node {
	outs := make([]*ir.Value, len(used))
	for i, u := range used {
		if u || i == 0 {
			outs[i] = rw.g.NewValue(base, nil)
		}
	}
	n, _ := rw.g.AddNode(&ir.Node{OpType: op, Domain: domain, Attrs: attrs}, inputs, outs)
	n.Name = outs[0].Name
	rw.added = append(rw.added, n)
	return n
}

// Const adds an initializer.
func (rw *Rewriter) Const(base string, t *ir.Tensor) *ir.Value { return rw.g.NewConst(base, t) }

// Replace makes every use of old use new instead (applied at commit). new takes old's
// type when it has none.
func (rw *Rewriter) Replace(old, new *ir.Value) {
	if new.Type == nil {
		new.Type = old.Type.Clone()
	}
	rw.replace = append(rw.replace, [2]*ir.Value{old, new})
}

// Added returns the nodes the rewrite created.
func (rw *Rewriter) Added() []*ir.Node { return rw.added }

func (rw *Rewriter) commit() {
	for _, r := range rw.replace {
		r[0].ReplaceAllUsesWith(r[1])
	}
	// Remove matched nodes that nothing uses any more, consumers before producers.
	for i := len(rw.m.All) - 1; i >= 0; i-- {
		n := rw.m.All[i]
		if n.Graph() != rw.g {
			continue
		}
		dead := true
		for _, o := range n.Outputs() {
			if o != nil && (len(o.Uses()) > 0 || o.IsGraphOutput()) {
				dead = false
			}
		}
		if dead {
			rw.g.RemoveNode(n)
		}
	}
}

// Found is a match that a rule accepted.
type Found struct {
	Rule  *Rule
	Match *Match
}

// Find runs the rules over g without changing it: at each value (in node order) the
// first rule (by benefit, then list order) that matches and is not refused wins, and
// nodes covered by an accepted match are not matched again. Refusals are returned sorted.
func Find(g *ir.Graph, rules []*Rule) ([]Found, []Refusal) {
	return FindUncovered(g, rules, map[*ir.Node]bool{})
}

// FindUncovered is Find over the nodes not in covered, which it extends with the nodes
// of the matches it accepts: rule lists run one after another this way match every node
// once.
func FindUncovered(g *ir.Graph, rules []*Rule, covered map[*ir.Node]bool) ([]Found, []Refusal) {
	rs := newRuleSet(rules)
	// held are the shared nodes of accepted matches: others may hold them too, but a
	// match that would take one as its own (not shared) overlaps.
	held := map[*ir.Node]bool{}
	overlaps := func(r *Rule, m *Match) bool {
		shared := r.shared(m)
		for _, n := range m.All {
			if covered[n] || held[n] && !shared[n] {
				return true
			}
		}
		return false
	}
	var found []Found
	// Roots are tried from the end of the graph backwards so that the largest block a
	// value belongs to (its last node) claims it first.
	nodes := g.Nodes()
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		if covered[n] || held[n] {
			continue // a shared node is part of the blocks that hold it, not a root
		}
		r, m, _ := rs.first(n, overlaps)
		if r == nil {
			continue
		}
		shared := r.shared(m)
		for _, c := range m.All {
			if shared[c] {
				held[c] = true
			} else {
				covered[c] = true
			}
		}
		found = append(found, Found{r, m})
	}
	// Report in graph order.
	for i, j := 0, len(found)-1; i < j; i, j = i+1, j-1 {
		found[i], found[j] = found[j], found[i]
	}
	return found, rs.refusals()
}

// NewRewriter returns a rewriter for an accepted match; Commit applies it.
func NewRewriter(g *ir.Graph, m *Match) *Rewriter { return &Rewriter{g: g, m: m} }

// Commit redirects the recorded replacements and removes the matched nodes left dead.
func (rw *Rewriter) Commit() { rw.commit() }
