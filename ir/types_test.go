package ir

import "testing"

func TestSameDim(t *testing.T) {
	cases := []struct {
		a, b Dim
		want bool
	}{
		{D(3), D(3), true},
		{D(3), D(4), false},
		{Sym("batch"), Sym("batch"), true},
		{Sym("4*batch"), Sym("4*batch"), true},
		{Sym("batch"), Sym("sequence"), false},
		{Sym("batch"), D(1), false},
		{Dim{}, Dim{}, false}, // two unknowns may differ
		{Dim{}, D(3), false},
		{Dim{}, Sym("batch"), false},
	}
	for _, c := range cases {
		if got := SameDim(c.a, c.b); got != c.want {
			t.Errorf("SameDim(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
		if got := SameDim(c.b, c.a); got != c.want {
			t.Errorf("SameDim(%s, %s) = %v, want %v", c.b, c.a, got, c.want)
		}
	}
}

func TestSameShape(t *testing.T) {
	bs := Shape{Sym("batch"), D(17), D(64)}
	cases := []struct {
		a, b Shape
		want bool
	}{
		{bs, Shape{Sym("batch"), D(17), D(64)}, true},
		{bs, Shape{Dim{}, D(17), D(64)}, false},
		{bs, Shape{Sym("batch"), D(17)}, false},
		{Shape{}, Shape{}, true}, // two scalars
		{nil, Shape{}, false},    // unknown rank
		{nil, nil, false},
	}
	for _, c := range cases {
		if got := SameShape(c.a, c.b); got != c.want {
			t.Errorf("SameShape(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
