package shape

import (
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

func TestDimArithmetic(t *testing.T) {
	s := ir.Sym
	cases := []struct {
		name string
		got  ir.Dim
		want string
	}{
		{"product canonical", mulDims(s("sequence"), mulDims(ir.D(4), s("batch"))), "4*batch*sequence"},
		{"quotient", divDims(s("4*batch*sequence"), s("sequence")), "4*batch"},
		{"inexact quotient", divDims(s("batch"), ir.D(4)), "?"},
		{"sum canonical", addDims(s("sequence"), s("past")), "past + sequence"},
		{"sum with number", addDims(ir.D(2), s("sequence")), "sequence + 2"},
		{"difference", subDims(s("sequence"), ir.D(1)), "sequence - 1"},
		{"negative lead", subDims(ir.D(1), s("sequence")), "-sequence + 1"},
		{"cancels to symbol", subDims(s("past + sequence"), s("past")), "sequence"},
		{"cancels to number", subDims(s("sequence + 2"), s("sequence")), "2"},
		{"distributes", mulDims(s("sequence + 1"), ir.D(4)), "4*sequence + 4"},
		{"divides a sum", divDims(s("4*sequence + 4"), ir.D(4)), "sequence + 1"},
		{"sum by itself", divDims(s("2*past + 2*sequence"), s("past + sequence")), "2"},
		{"degree order", addDims(mulDims(s("b"), s("a")), addDims(s("z"), ir.D(3))), "a*b + z + 3"},
		{"round trip", addDims(s("-sequence + 1"), ir.D(0)), "-sequence + 1"},
		{"dashed name is a name", addDims(s("seq-len"), ir.D(1)), "seq-len + 1"},
		{"spaced name is opaque", mulDims(s("batch size"), ir.D(2)), "2*batch size"},
		{"unknown", addDims(ir.Dim{}, ir.D(1)), "?"},
		{"concat sum", sumDims([]ir.Dim{s("past"), s("sequence"), ir.D(0)}), "past + sequence"},
		{"product of zero", mulDims(ir.Dim{}, ir.D(0)), "0"},
		{"floor", floorDiv(s("height"), 16), "floor(height/16)"},
		{"floor takes out the constant", floorDiv(s("height - 4"), 4), "floor(height/4) - 1"},
		{"floor exact", floorDiv(s("4*batch + 8"), 4), "batch + 2"},
		{"floor of a number", floorDiv(ir.D(17), 4), "4"},
		{"floor of a product", mulDims(floorDiv(s("4*batch*sequence"), 3), ir.D(2)), "2*floor(4*batch*sequence/3)"},
		{"floor of an offset it does not divide", floorDiv(s("height - 3"), 2), "floor((height-3)/2)"},
		{"floor of a difference", floorDiv(s("height - sequence"), 2), "?"},
	}
	for _, c := range cases {
		if got := c.got.String(); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
	// A size is at least 1.
	bounds := []struct {
		d    string
		n    int64
		want bool
	}{
		{"sequence", 0, true},
		{"sequence", 1, true},
		{"sequence", 2, false},
		{"past + sequence", 2, true},
		{"sequence - 1", 0, true},
		{"sequence - 2", 0, false},
		{"4*batch", 4, true},
		{"height*width + 1", 2, true},
		{"height - width", 0, false},
	}
	for _, c := range bounds {
		if got := atLeast(ir.Sym(c.d), c.n); got != c.want {
			t.Errorf("atLeast(%s, %d) = %v, want %v", c.d, c.n, got, c.want)
		}
	}
}

// TestCacheArithmetic: a decoder with a key/value cache of past positions: the keys
// hold past + sequence positions, the new positions are Range(past, past + sequence),
// the causal mask buffer is sliced to [past : past + sequence, 0 : past + sequence].
func TestCacheArithmetic(t *testing.T) {
	b := newBuilder(t, 17)
	ids := b.in("input_ids", ir.Int64, "batch,sequence")
	pastK := b.in("past_key", ir.Float, "batch,4,past,16")
	newK := b.in("key", ir.Float, "batch,4,sequence,16")
	keys := b.op("Concat", vs(pastK, newK), ir.IntAttr("axis", 2))
	past := b.op("Gather", vs(b.op("Shape", vs(pastK)), b.scalar(2)))
	seq := b.op("Gather", vs(b.op("Shape", vs(ids)), b.scalar(1)))
	total := b.op("Add", vs(past, seq))
	pos := b.op("Range", vs(past, total, b.scalar(1)))
	un := func(v *ir.Value) *ir.Value { return b.op("Unsqueeze", vs(v, b.ints(0))) }
	buf := b.g.NewConst("bias", ir.NewTensor(ir.Bool, []int64{1, 1, 64, 64}, make([]byte, 64*64)))
	rows := b.op("Slice", vs(buf, un(past), un(total), b.ints(2), b.ints(1)))
	mask := b.op("Slice", vs(rows, b.ints(0), un(total), b.ints(3), b.ints(1)))
	seqV := b.op("Concat", vs(un(seq), b.ints(4)), ir.IntAttr("axis", 0))
	last := b.op("Slice", vs(newK, b.ints(-1), b.ints(9223372036854775807), b.ints(2)))
	allButLast := b.op("Slice", vs(newK, b.ints(0), b.ints(-1), b.ints(2)))
	firstFive := b.op("Slice", vs(newK, b.ints(0), b.ints(5), b.ints(2)))
	tiled := b.op("Tile", vs(keys, b.ints(1, 1, 2, 1)))
	r := b.infer()
	for _, tc := range []struct {
		v    *ir.Value
		want string
	}{
		{keys, "float[batch,4,past + sequence,16]"},
		{pos, "int64[sequence]"},
		{mask, "bool[1,1,sequence,past + sequence]"},
		{last, "float[batch,4,1,16]"},
		{allButLast, "float[batch,4,sequence - 1,16]"},
		{firstFive, "float[batch,4,?,16]"}, // fewer when sequence < 5
		{tiled, "float[batch,4,2*past + 2*sequence,16]"},
	} {
		if got := tc.v.Type.String(); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.v.Name, got, tc.want)
		}
	}
	if got, ok := r.ShapeValue(total); !ok || got.String() != "[past + sequence]" {
		t.Errorf("past + sequence: contents %v %v", got, ok)
	}
	if got, ok := r.ShapeValue(seqV); !ok || got.String() != "[sequence,4]" {
		t.Errorf("concat of sizes: contents %v %v", got, ok)
	}
}

// Atoms and EvalDim read a symbolic dim as its polynomial: optimum names a cache model's
// mask "past_sequence_length + sequence_length".
func TestEvalDim(t *testing.T) {
	d := ir.Sym("past_sequence_length + sequence_length")
	if got := Atoms(d); len(got) != 2 || got[0] != "past_sequence_length" || got[1] != "sequence_length" {
		t.Errorf("Atoms = %v", got)
	}
	if v, ok := EvalDim(d, map[string]int64{"past_sequence_length": 3, "sequence_length": 5}); !ok || v != 8 {
		t.Errorf("EvalDim = %d, %v; want 8", v, ok)
	}
	if v, ok := EvalDim(ir.Sym("2*batch + 1"), map[string]int64{"batch": 4}); !ok || v != 9 {
		t.Errorf("EvalDim(2*batch + 1) = %d, %v; want 9", v, ok)
	}
	if _, ok := EvalDim(ir.Sym("heads"), map[string]int64{}); ok {
		t.Error("EvalDim of a missing atom is ok")
	}
	if v, ok := EvalDim(ir.D(7), nil); !ok || v != 7 {
		t.Errorf("EvalDim(7) = %d, %v", v, ok)
	}
}
