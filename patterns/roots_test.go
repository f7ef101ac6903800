package patterns

import (
	"fmt"
	"sort"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
)

func TestRootOps(t *testing.T) {
	x := Var("x")
	cases := []struct {
		p    Pattern
		want string
	}{
		{Op("Add", x, x), "[Add] false"},
		{Bind("s", Float(Op("Sqrt", x))), "[Sqrt] false"},
		{Or(Op("Mul", x, Const()), Op("Div", x, Const())), "[Div Mul] false"},
		{Optional(Op("Cast", Op("Relu", x))), "[Cast Relu] false"},
		{Optional(Op("Cast", x)), "[] true"},
		{Or(Op("Neg", x), x), "[] true"},
		{Const(), "[] true"},
		{Trace("t", func(*ir.Value) *Traced { return nil }), "[] true"},
	}
	for _, c := range cases {
		ops, all := rootOps(c.p)
		sort.Strings(ops)
		if all {
			ops = nil
		}
		if got := fmt.Sprint(append([]string{}, ops...), all); got != c.want {
			t.Errorf("%s: %s, want %s", c.p, got, c.want)
		}
	}
}

// TestFindSkipsByRoot: the root filter keeps every match Find made without it, among
// them an Optional whose op is absent and a rule rooted at a variable.
func TestFindSkipsByRoot(t *testing.T) {
	m, err := text.Parse(`<ir_version: 8, opset_import: ["" : 13]>
g (float[4] x) => (float[4] y, float[4] z, float[4] w, float[4] s) {
  r = Relu (x)
  y = Neg (r)
  z = Cast <to = 1> (x)
  w = Relu (x)
  s = Sigmoid (x)
}`)
	if err != nil {
		t.Fatal(err)
	}
	rules := []*Rule{
		{Name: "neg-relu", Pattern: Op("Neg", Optional(Op("Cast", Op("Relu", Var("a")))))},
		{Name: "any-cast", Pattern: Bind("c", Op("Cast", Var("b")))},
		{Name: "opt-relu", Pattern: Optional(Op("Cast", Op("Relu", Var("a"))))},
		{Name: "var", Pattern: Var("v")},
	}
	found, _ := Find(m.Graph, rules)
	var got []string
	for _, f := range found {
		got = append(got, f.Rule.Name+"@"+f.Match.Root.Name)
	}
	if s := fmt.Sprint(got); s != "[neg-relu@y any-cast@z opt-relu@w var@s]" {
		t.Errorf("found %s", s)
	}
}
