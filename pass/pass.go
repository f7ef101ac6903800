// Package pass defines what a qcc pass is and runs pipelines of them.
//
// A pass is a value, not a type: a Name, a Doc, the analyses it Requires, the options it
// accepts, and a Run function. Analyses are passes too: they set a Result that passes
// requiring them read with Context.ResultOf, and the manager caches it until a pass
// reports that it changed the model.
package pass

import (
	"fmt"
	"sort"
	"strings"

	"github.com/qcc-dev/qcc/ir"
)

// Pass describes one transformation or analysis.
type Pass struct {
	Name string
	Doc  string // first line is the summary shown by -list-passes
	// Requires lists analyses whose results Run reads.
	Requires []*Pass
	// Options lists the <key=value> options the pass accepts.
	Options []Option
	// Analysis marks a pass that never changes the model; its result is cached.
	Analysis bool
	// Run does the work. A transformation calls ctx.Changed when it mutated the model.
	Run func(ctx *Context) error
}

// Option is one option a pass accepts in a pipeline (fold<max-size=1024>).
type Option struct {
	Name    string
	Default string
	Doc     string
	// Check validates a value; nil accepts anything.
	Check func(string) error
}

// Summary is the first line of Doc.
func (p *Pass) Summary() string {
	s, _, _ := strings.Cut(p.Doc, "\n")
	return s
}

func (p *Pass) option(name string) *Option {
	for i := range p.Options {
		if p.Options[i].Name == name {
			return &p.Options[i]
		}
	}
	return nil
}

// Context is what a running pass sees.
type Context struct {
	Model *ir.Model
	Pass  *Pass

	opts    map[string]string
	results map[*Pass]any
	changed bool
	stats   map[string]int
	result  any
	debug   func(format string, args ...any)
	notes   []string
	data    []any
	ahead   []Step
	shared  map[any]any
}

// Opt returns the value of an option (the default when the pipeline did not set it).
func (c *Context) Opt(name string) string {
	if v, ok := c.opts[name]; ok {
		return v
	}
	if o := c.Pass.option(name); o != nil {
		return o.Default
	}
	panic(fmt.Sprintf("pass %s reads undeclared option %q", c.Pass.Name, name))
}

// ResultOf returns the result of a required analysis.
func (c *Context) ResultOf(p *Pass) any {
	r, ok := c.results[p]
	if !ok {
		panic(fmt.Sprintf("pass %s reads the result of %s without requiring it", c.Pass.Name, p.Name))
	}
	return r
}

// SetResult records an analysis result.
func (c *Context) SetResult(r any) { c.result = r }

// Changed records that the model was mutated (cached analyses are dropped).
func (c *Context) Changed() { c.changed = true }

// Count adds n to a named statistic, shown by -stats.
func (c *Context) Count(stat string, n int) {
	if n != 0 {
		c.stats[stat] += n
	}
}

// Note records a line for the report (a refusal, a repair, ...), shown by -stats.
func (c *Context) Note(format string, args ...any) {
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
}

// Record keeps a structured result of the pass for reports (-report, -stats=json): what
// fuse refused and why, the calibration histograms of qdq. It does not change the model.
func (c *Context) Record(v any) { c.data = append(c.data, v) }

// Ahead returns the steps that run after this one in its pipeline (none for an analysis
// run because a pass requires it): a pass can prepare what a later step will need.
func (c *Context) Ahead() []Step { return c.ahead }

// Shared returns what an earlier pass of the same pipeline run handed on under key (see
// Share), nil when nothing.
func (c *Context) Shared(key any) any { return c.shared[key] }

// Share hands v on to the later passes of the pipeline run under key (nil removes it):
// the calibration statistics qdq collects for precision, say. Keys are compared with ==;
// use a type of the package that defines the meaning. Nothing outlives the run.
func (c *Context) Share(key, v any) {
	if v == nil {
		delete(c.shared, key)
		return
	}
	if c.shared == nil {
		c.shared = map[any]any{}
	}
	c.shared[key] = v
}

// Debugf prints when -debug-only names this pass.
func (c *Context) Debugf(format string, args ...any) {
	if c.debug != nil {
		c.debug(format, args...)
	}
}

// Stat is one pass's record in a Report.
type Stat struct {
	Pass     string
	Changed  bool
	Counts   map[string]int
	Notes    []string
	NodesIn  int
	NodesOut int
	Seconds  float64
	// Data holds what the pass recorded with Context.Record, for reports.
	Data []any `json:"-"`
}

// SortedCounts returns the statistic names in order.
func (s Stat) SortedCounts() []string {
	keys := make([]string, 0, len(s.Counts))
	for k := range s.Counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Report is what running a pipeline produced, one Stat per pass run (analyses included).
type Report struct {
	Stats []Stat
}
