package calib

import (
	"math"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort/orttest"
)

const branches = `<ir_version: 8, opset_import: ["" : 13]>
g (bool c, float[2] x) => (float[2] y) {
  y = If (c) <then_branch = then_g () => (float[2] a) {
    t = Mul (x, x)
    a = Neg (t)
  }, else_branch = else_g () => (float[2] b) {
    e = Add (x, x)
    b = Relu (e)
  }>
}
`

// TestExposeBodies: values of both branches of an If are collected through a copy that
// passes them out, each over the batches that ran its branch (the other branch's empty
// tensors add nothing), with every batch run once per value of the If's condition.
func TestExposeBodies(t *testing.T) {
	orttest.RequireLib(t)
	m, err := text.Parse(branches)
	if err != nil {
		t.Fatal(err)
	}
	var vals []*ir.Value
	for _, g := range m.Graph.Nodes()[0].Subgraphs() {
		for _, n := range g.Nodes()[:1] {
			vals = append(vals, n.Output(0))
		}
	}
	cp, names, err := ExposeBodies(m, vals)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Graph.Nodes()[0].Outputs()) != 1 {
		t.Errorf("the model itself changed")
	}
	if got := Selectors(cp); len(got) != 1 || got[0] != "c" {
		t.Errorf("selectors %v, want [c]", got)
	}
	fetch := []string{names[vals[0]], names[vals[1]]}
	stats, err := CollectModel(cp, fetch, "random:1", 0, Options{EachValue: Selectors(cp)})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Batches != 2 {
		t.Errorf("%d batches, want 2 (one per value of c)", stats.Batches)
	}
	for i, v := range vals {
		h := stats.Tensors[fetch[i]]
		if h == nil || h.Count != 2 {
			t.Errorf("%s: %v samples, want the 2 of the batch that ran its branch", v.Name, h)
		}
	}
	// then: t = x², else: e = 2x, on the same x.
	tt, e := stats.Tensors[fetch[0]], stats.Tensors[fetch[1]]
	if tt == nil || e == nil || math.Abs(tt.AbsMax-e.AbsMax*e.AbsMax/4) > 1e-5*tt.AbsMax {
		t.Errorf("then's x² and else's 2x disagree on x: %v, %v", tt, e)
	}
}

// TestEachSelector: every batch once per value of the selector, the data otherwise the
// source's.
func TestEachSelector(t *testing.T) {
	x := ndarray.FromFloat32([]int64{1}, []float32{1})
	src := EachSelector(feeds{{"c": ndarray.FromBool(nil, []bool{true}), "x": x}}, []string{"c"})
	if src.Len() != 2 {
		t.Fatalf("%d batches, want 2", src.Len())
	}
	for i, want := range []bool{false, true} {
		b, err := src.Batch(i)
		if err != nil {
			t.Fatal(err)
		}
		if got := b["c"].Bools(); len(got) != 1 || got[0] != want {
			t.Errorf("batch %d: c = %v, want %v", i, got, want)
		}
	}
	if _, err := src.Batch(2); err == nil {
		t.Errorf("batch 2 of 2: no error")
	}
}

// feeds is a Source of whole batches.
type feeds []map[string]*ndarray.Array

func (f feeds) Len() int                                       { return len(f) }
func (f feeds) Batch(i int) (map[string]*ndarray.Array, error) { return f[i], nil }
