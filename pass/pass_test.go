package pass

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	_ "github.com/qcc-dev/qcc/internal/update"
	"github.com/qcc-dev/qcc/ir"
)

func testModel() *ir.Model {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.D(2)))
	n := g.Add("Relu", []*ir.Value{x}, 1, "y")
	g.Outputs = append(g.Outputs, n.Output(0))
	return &ir.Model{IRVersion: 8, Opsets: []ir.OpsetID{{Version: 13}}, Graph: g}
}

// a registry whose analysis counts how often it ran.
func registry(runs *int) []*Pass {
	count := &Pass{Name: "count", Doc: "count nodes", Analysis: true, Run: func(c *Context) error {
		*runs++
		c.SetResult(c.Model.Graph.NumNodes())
		return nil
	}}
	return []*Pass{
		count,
		{Name: "use", Doc: "reads count", Requires: []*Pass{count}, Run: func(c *Context) error {
			c.Count("seen", c.ResultOf(count).(int))
			return nil
		}},
		{Name: "grow", Doc: "adds a node", Options: []Option{{Name: "op", Default: "Neg"}, {Name: "n", Default: "1", Check: func(s string) error {
			if s != "1" && s != "2" {
				return errors.New("want 1 or 2")
			}
			return nil
		}}}, Run: func(c *Context) error {
			g := c.Model.Graph
			out := g.Outputs[0]
			n := g.Add(c.Opt("op"), []*ir.Value{out}, 1, "z")
			g.Outputs[0] = n.Output(0)
			c.Changed()
			return nil
		}},
		{Name: "boom", Doc: "panics", Run: func(c *Context) error { panic("kaboom") }},
		{Name: "fail", Doc: "fails", Run: func(c *Context) error { return errors.New("no good") }},
		{Name: "break", Doc: "leaves a dangling use", Run: func(c *Context) error {
			g := c.Model.Graph
			g.RemoveNode(g.Nodes()[0])
			c.Changed()
			return nil
		}},
	}
}

func TestParse(t *testing.T) {
	var runs int
	reg := registry(&runs)
	cases := []struct {
		spec, want, err string
	}{
		{"use", "use", ""},
		{" use , grow<op=Relu; n=2> ,use", "use,grow<n=2;op=Relu>,use", ""},
		{"grow<>", "grow", ""},
		{"", "", "empty pass pipeline"},
		{"use,", "", "trailing ','"},
		{"nope", "", `unknown pass "nope"`},
		{"grow<op>", "", "needs a value"},
		{"grow<x=1>", "", `no option "x"`},
		{"grow<n=3>", "", "want 1 or 2"},
		{"grow<n=1;n=2>", "", "given twice"},
		{"grow<n=1", "", "not closed"},
		{"grow<n=1>use", "", "expected ','"},
		{",use", "", "empty pass name"},
	}
	for _, c := range cases {
		p, err := Parse(c.spec, reg)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Parse(%q) error = %v, want %q", c.spec, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", c.spec, err)
		} else if p.String() != c.want {
			t.Errorf("Parse(%q) = %s, want %s", c.spec, p, c.want)
		}
	}
}

// TestAnalysisCache: an analysis runs once while nothing changes and again after a pass
// reports a change.
func TestAnalysisCache(t *testing.T) {
	var runs int
	reg := registry(&runs)
	p, _ := Parse("use,use,grow,use", reg)
	r, err := p.Run(context.Background(), testModel(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if runs != 2 {
		t.Errorf("analysis ran %d times, want 2 (once, then after grow)", runs)
	}
	var seen []int
	for _, s := range r.Stats {
		if s.Pass == "use" {
			seen = append(seen, s.Counts["seen"])
		}
	}
	if len(seen) != 3 || seen[0] != 1 || seen[2] != 2 {
		t.Errorf("use saw node counts %v, want [1 1 2]", seen)
	}
}

func TestErrors(t *testing.T) {
	var runs int
	reg := registry(&runs)
	for spec, want := range map[string]string{
		"boom":  "pass boom: internal error: kaboom",
		"fail":  "pass fail: no good",
		"break": "verify after pass break",
	} {
		p, _ := Parse(spec, reg)
		_, err := p.Run(context.Background(), testModel(), &Instrumentation{VerifyEach: true})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", spec, err, want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p, _ := Parse("use", reg)
	if _, err := p.Run(ctx, testModel(), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled run: %v", err)
	}
}

func TestInstrumentation(t *testing.T) {
	var runs int
	reg := registry(&runs)
	var out bytes.Buffer
	inst := &Instrumentation{
		PrintAfter: []string{"use"}, PrintChanged: true, TimePasses: true, Out: &out,
		Print: func(w io.Writer, m *ir.Model) error {
			_, err := io.WriteString(w, "MODEL\n")
			return err
		},
	}
	p, _ := Parse("use,grow", reg)
	r, err := p.Run(context.Background(), testModel(), inst)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out.String(), "MODEL"); got != 2 {
		t.Errorf("printed %d times, want 2 (after use, and after grow changed):\n%s", got, out.String())
	}
	var stats bytes.Buffer
	r.WriteStats(&stats, true)
	if !strings.Contains(stats.String(), "grow       nodes 1 -> 2") {
		t.Errorf("stats:\n%s", stats.String())
	}
}

// TestShareAhead: a pass sees the steps after it (their options with defaults) and
// hands a value on to a later pass of the same run; a required analysis sees no steps
// ahead, and nothing outlives the run.
func TestShareAhead(t *testing.T) {
	type key struct{}
	var ahead []string
	var got []any
	an := &Pass{Name: "an", Analysis: true, Run: func(c *Context) error {
		if len(c.Ahead()) != 0 {
			t.Errorf("analysis sees %d steps ahead", len(c.Ahead()))
		}
		return nil
	}}
	give := &Pass{Name: "give", Run: func(c *Context) error {
		for _, s := range c.Ahead() {
			ahead = append(ahead, s.Pass.Name+":"+s.Opt("x"))
		}
		c.Share(key{}, 42)
		return nil
	}}
	take := &Pass{Name: "take", Requires: []*Pass{an}, Options: []Option{{Name: "x", Default: "d"}}, Run: func(c *Context) error {
		got = append(got, c.Shared(key{}))
		return nil
	}}
	reg := []*Pass{an, give, take}
	p, err := Parse("take,give,take<x=1>,take", reg)
	if err != nil {
		t.Fatal(err)
	}
	m := &ir.Model{Graph: ir.NewGraph("g")}
	if _, err := p.Run(context.Background(), m, nil); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ahead) != "[take:1 take:d]" || fmt.Sprint(got) != "[<nil> 42 42]" {
		t.Errorf("ahead %v, shared %v; want [take:1 take:d], [<nil> 42 42]", ahead, got)
	}
	got = nil
	if _, err := p.Run(context.Background(), m, nil); err != nil || got[0] != nil {
		t.Errorf("a second run starts with %v shared (%v)", got[0], err)
	}
}
