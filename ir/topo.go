package ir

import (
	"container/heap"
	"fmt"
	"strings"
)

// freeVars returns the values a subgraph (recursively) reads from enclosing scopes.
func (g *Graph) freeVars() []*Value {
	var out []*Value
	seen := map[*Value]bool{}
	var visit func(sg *Graph)
	visit = func(sg *Graph) {
		for _, n := range sg.Nodes() {
			for _, in := range n.inputs {
				if in != nil && in.graph != nil && in.graph != sg && !seen[in] && isAncestor(in.graph, sg) && in.graph != g && !isAncestor(g, in.graph) {
					seen[in] = true
					out = append(out, in)
				}
			}
			for _, s := range n.Subgraphs() {
				visit(s)
			}
		}
		for _, o := range sg.Outputs {
			if o != nil && o.graph != sg && !seen[o] && o.graph != g && !isAncestor(g, o.graph) {
				seen[o] = true
				out = append(out, o)
			}
		}
	}
	visit(g)
	return out
}

// isAncestor reports whether a encloses b (strictly).
func isAncestor(a, b *Graph) bool {
	for s := b.Parent; s != nil; s = s.Parent {
		if s == a {
			return true
		}
	}
	return false
}

// deps returns the nodes of g that n must follow: producers of its inputs and of the
// outer-scope values its subgraphs read.
func (n *Node) deps(g *Graph) []*Node {
	var ds []*Node
	add := func(v *Value) {
		if v != nil && v.producer != nil && v.producer.graph == g {
			ds = append(ds, v.producer)
		}
	}
	for _, in := range n.inputs {
		add(in)
	}
	for _, sg := range n.Subgraphs() {
		for _, v := range sg.freeVars() {
			add(v)
		}
	}
	return ds
}

type nodeHeap []*Node

func (h nodeHeap) Len() int           { return len(h) }
func (h nodeHeap) Less(i, j int) bool { return h[i].index < h[j].index }
func (h nodeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *nodeHeap) Push(x any)        { *h = append(*h, x.(*Node)) }
func (h *nodeHeap) Pop() any {
	old := *h
	n := old[len(old)-1]
	*h = old[:len(old)-1]
	return n
}

// CycleError reports nodes that depend on each other.
type CycleError struct{ Nodes []*Node }

func (e *CycleError) Error() string {
	var names []string
	for i, n := range e.Nodes {
		if i == 8 {
			names = append(names, fmt.Sprintf("... (%d more)", len(e.Nodes)-8))
			break
		}
		names = append(names, n.String())
	}
	return "graph has a cycle through " + strings.Join(names, ", ")
}

// TopoSort reorders the nodes so that every node follows its producers. Among nodes that
// are ready at the same time the earlier one (in current order) goes first, so an already
// sorted graph is left as it is and new nodes appended by a pass settle right after what
// they need. Subgraphs are sorted too.
func (g *Graph) TopoSort() error {
	order, err := g.topoOrder()
	if err != nil {
		return err
	}
	for i, n := range order {
		n.index = i
	}
	copy(g.nodes, order)
	for _, n := range order {
		for _, sg := range n.Subgraphs() {
			if err := sg.TopoSort(); err != nil {
				return err
			}
		}
	}
	return nil
}

// topoOrder computes the stable topological order without changing the graph.
func (g *Graph) topoOrder() ([]*Node, error) {
	nodes := g.Nodes()
	indeg := make(map[*Node]int, len(nodes))
	succ := make(map[*Node][]*Node, len(nodes))
	for _, n := range nodes {
		for _, d := range n.deps(g) {
			indeg[n]++
			succ[d] = append(succ[d], n)
		}
	}
	h := &nodeHeap{}
	for _, n := range nodes {
		if indeg[n] == 0 {
			*h = append(*h, n)
		}
	}
	heap.Init(h)
	order := make([]*Node, 0, len(nodes))
	for h.Len() > 0 {
		n := heap.Pop(h).(*Node)
		order = append(order, n)
		for _, s := range succ[n] {
			if indeg[s]--; indeg[s] == 0 {
				heap.Push(h, s)
			}
		}
	}
	if len(order) != len(nodes) {
		var stuck []*Node
		for _, n := range nodes {
			if indeg[n] > 0 {
				stuck = append(stuck, n)
			}
		}
		return nil, &CycleError{stuck}
	}
	return order, nil
}
