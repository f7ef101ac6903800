package pass

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/qcc-dev/qcc/ir"
)

// Step is one pass of a pipeline with its options.
type Step struct {
	Pass *Pass
	Opts map[string]string
}

// Opt returns the value of an option of the step, its default when the step does not
// set it ("" for an option the pass lacks).
func (s Step) Opt(name string) string {
	if v, ok := s.Opts[name]; ok {
		return v
	}
	if o := s.Pass.option(name); o != nil {
		return o.Default
	}
	return ""
}

func (s Step) String() string {
	if len(s.Opts) == 0 {
		return s.Pass.Name
	}
	keys := make([]string, 0, len(s.Opts))
	for k := range s.Opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + s.Opts[k]
	}
	return s.Pass.Name + "<" + strings.Join(keys, ";") + ">"
}

// Pipeline is a parsed pass list.
type Pipeline struct{ Steps []Step }

func (p *Pipeline) String() string {
	parts := make([]string, len(p.Steps))
	for i, s := range p.Steps {
		parts[i] = s.String()
	}
	return strings.Join(parts, ",")
}

// Lookup finds a pass by name in a registry.
func Lookup(registry []*Pass, name string) *Pass {
	for _, p := range registry {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Parse reads a pipeline such as `fold,fuse<target=ort>,qdq<calib=percentile:99.99;policy=linear>`:
// comma-separated pass names, each optionally followed by <key=value;...>.
func Parse(spec string, registry []*Pass) (*Pipeline, error) {
	p := &Pipeline{}
	rest := strings.TrimSpace(spec)
	if rest == "" {
		return nil, fmt.Errorf("empty pass pipeline")
	}
	for rest != "" {
		i := strings.IndexAny(rest, ",<")
		if i < 0 {
			i = len(rest)
		}
		name := strings.TrimSpace(rest[:i])
		rest = rest[i:]
		if name == "" {
			return nil, fmt.Errorf("pipeline %q: empty pass name", spec)
		}
		ps := Lookup(registry, name)
		if ps == nil {
			return nil, fmt.Errorf("pipeline %q: unknown pass %q (known: %s)", spec, name, names(registry))
		}
		step := Step{Pass: ps, Opts: map[string]string{}}
		if strings.HasPrefix(rest, "<") {
			end := strings.IndexByte(rest, '>')
			if end < 0 {
				return nil, fmt.Errorf("pipeline %q: options of %s are not closed with '>'", spec, name)
			}
			for _, kv := range strings.Split(rest[1:end], ";") {
				kv = strings.TrimSpace(kv)
				if kv == "" {
					continue
				}
				k, v, ok := strings.Cut(kv, "=")
				k, v = strings.TrimSpace(k), strings.TrimSpace(v)
				o := ps.option(k)
				switch {
				case !ok:
					return nil, fmt.Errorf("pipeline %q: option %q of %s needs a value (key=value)", spec, kv, name)
				case o == nil:
					return nil, fmt.Errorf("pipeline %q: pass %s has no option %q%s", spec, name, k, optionList(ps))
				case o.Check != nil:
					if err := o.Check(v); err != nil {
						return nil, fmt.Errorf("pipeline %q: %s option %s=%s: %w", spec, name, k, v, err)
					}
				}
				if _, dup := step.Opts[k]; dup {
					return nil, fmt.Errorf("pipeline %q: option %s of %s given twice", spec, k, name)
				}
				step.Opts[k] = v
			}
			rest = rest[end+1:]
		}
		p.Steps = append(p.Steps, step)
		rest = strings.TrimSpace(rest)
		if rest == "" {
			break
		}
		if rest[0] != ',' {
			return nil, fmt.Errorf("pipeline %q: expected ',' after %s, found %q", spec, name, rest)
		}
		rest = strings.TrimSpace(rest[1:])
		if rest == "" {
			return nil, fmt.Errorf("pipeline %q: trailing ','", spec)
		}
	}
	return p, nil
}

func names(registry []*Pass) string {
	var ns []string
	for _, p := range registry {
		ns = append(ns, p.Name)
	}
	return strings.Join(ns, ", ")
}

func optionList(p *Pass) string {
	if len(p.Options) == 0 {
		return " (it takes none)"
	}
	var ns []string
	for _, o := range p.Options {
		ns = append(ns, o.Name)
	}
	return " (options: " + strings.Join(ns, ", ") + ")"
}

// Instrumentation is what every pass gets for free.
type Instrumentation struct {
	PrintAfter   []string // pass names, or "all"
	PrintChanged bool     // print the model after each pass that changed it
	VerifyEach   bool     // run ir.Verify (and any Verifiers) after each pass
	TimePasses   bool     // record wall time per pass
	DebugOnly    []string // passes whose Debugf lines are printed
	Out          io.Writer
	// Print renders the model for -print-after / -print-changed.
	Print func(w io.Writer, m *ir.Model) error
	// Verifiers run after each pass with -verify-each, besides ir.Verify.
	Verifiers []func(m *ir.Model) error
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s || x == "all" {
			return true
		}
	}
	return false
}

// Run executes the pipeline on m.
func (p *Pipeline) Run(ctx context.Context, m *ir.Model, inst *Instrumentation) (*Report, error) {
	if inst == nil {
		inst = &Instrumentation{}
	}
	r := &runner{m: m, inst: inst, cache: map[*Pass]any{}, report: &Report{}, shared: map[any]any{}}
	for i, s := range p.Steps {
		if err := ctx.Err(); err != nil {
			return r.report, err
		}
		r.ahead = p.Steps[i+1:]
		if err := r.run(s, nil); err != nil {
			return r.report, err
		}
	}
	return r.report, nil
}

type runner struct {
	m      *ir.Model
	inst   *Instrumentation
	cache  map[*Pass]any
	report *Report
	ahead  []Step      // the pipeline's steps after the running one
	shared map[any]any // what passes hand on to later ones (Context.Share)
}

func (r *runner) run(s Step, stack []*Pass) (err error) {
	for _, q := range stack {
		if q == s.Pass {
			return fmt.Errorf("pass %s requires itself", s.Pass.Name)
		}
	}
	results := map[*Pass]any{}
	for _, req := range s.Pass.Requires {
		if _, ok := r.cache[req]; !ok {
			if err := r.run(Step{Pass: req}, append(stack, s.Pass)); err != nil {
				return err
			}
		}
		results[req] = r.cache[req]
	}
	c := &Context{Model: r.m, Pass: s.Pass, opts: s.Opts, results: results, stats: map[string]int{}, shared: r.shared}
	if len(stack) == 0 {
		c.ahead = append([]Step(nil), r.ahead...)
	}
	if contains(r.inst.DebugOnly, s.Pass.Name) && r.inst.Out != nil {
		c.debug = func(format string, args ...any) {
			fmt.Fprintf(r.inst.Out, "[%s] %s\n", s.Pass.Name, fmt.Sprintf(format, args...))
		}
	}
	nodesIn := countNodes(r.m)
	start := time.Now()
	func() {
		defer func() {
			if e := recover(); e != nil {
				err = fmt.Errorf("pass %s: internal error: %v\n%s", s.Pass.Name, e, debug.Stack())
			}
		}()
		err = s.Pass.Run(c)
	}()
	if err != nil {
		if !strings.HasPrefix(err.Error(), "pass "+s.Pass.Name) {
			err = fmt.Errorf("pass %s: %w", s.Pass.Name, err)
		}
		return err
	}
	st := Stat{Pass: s.Pass.Name, Changed: c.changed, Counts: c.stats, Notes: c.notes, NodesIn: nodesIn, Data: c.data}
	if r.inst.TimePasses {
		st.Seconds = time.Since(start).Seconds()
	}
	if s.Pass.Analysis {
		if c.changed {
			return fmt.Errorf("analysis %s changed the model", s.Pass.Name)
		}
		r.cache[s.Pass] = c.result
	}
	if c.changed {
		// New nodes are appended by passes; restore a topological order before anyone looks.
		if err := r.m.Graph.TopoSort(); err != nil {
			return fmt.Errorf("after pass %s: %w", s.Pass.Name, err)
		}
		for k := range r.cache {
			delete(r.cache, k)
		}
	}
	st.NodesOut = countNodes(r.m)
	r.report.Stats = append(r.report.Stats, st)
	if r.inst.VerifyEach {
		if err := r.m.Verify(); err != nil {
			return fmt.Errorf("verify after pass %s: %w", s.Pass.Name, err)
		}
		for _, v := range r.inst.Verifiers {
			if err := v(r.m); err != nil {
				return fmt.Errorf("verify after pass %s: %w", s.Pass.Name, err)
			}
		}
	}
	if r.inst.Out != nil && r.inst.Print != nil &&
		(contains(r.inst.PrintAfter, s.Pass.Name) || (r.inst.PrintChanged && c.changed)) {
		fmt.Fprintf(r.inst.Out, "; *** model after %s ***\n", s.Pass.Name)
		if err := r.inst.Print(r.inst.Out, r.m); err != nil {
			return err
		}
	}
	return nil
}

// countNodes counts nodes in the main graph and all subgraphs.
func countNodes(m *ir.Model) int {
	n := 0
	m.Graph.Walk(func(g *ir.Graph) error { n += g.NumNodes(); return nil })
	return n
}

// WriteStats prints a report the way -stats and -time-passes show it.
func (r *Report) WriteStats(w io.Writer, times bool) {
	for _, s := range r.Stats {
		line := fmt.Sprintf("%-10s nodes %d -> %d", s.Pass, s.NodesIn, s.NodesOut)
		if times {
			line += fmt.Sprintf("  %.3fs", s.Seconds)
		}
		fmt.Fprintln(w, line)
		for _, k := range s.SortedCounts() {
			fmt.Fprintf(w, "  %-40s %d\n", k, s.Counts[k])
		}
		for _, n := range s.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
}
