package shape

import (
	"strconv"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

// builder makes small models with the ir constructors.
type builder struct {
	t *testing.T
	m *ir.Model
	g *ir.Graph
}

func newBuilder(t *testing.T, opset int64) *builder {
	g := ir.NewGraph("test")
	m := &ir.Model{IRVersion: 8, Graph: g, Opsets: []ir.OpsetID{{Domain: "", Version: opset}, {Domain: "com.microsoft", Version: 1}}}
	return &builder{t: t, m: m, g: g}
}

// shp parses "batch,?,64" into a shape; "" is a scalar.
func shp(s string) []ir.Dim {
	if s == "" {
		return nil
	}
	var ds []ir.Dim
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.ParseInt(f, 10, 64); err == nil {
			ds = append(ds, ir.D(n))
		} else if f == "?" {
			ds = append(ds, ir.Dim{})
		} else {
			ds = append(ds, ir.Sym(f))
		}
	}
	return ds
}

func (b *builder) in(name string, dt ir.DataType, dims string) *ir.Value {
	v, err := b.g.AddInput(name, ir.TensorOf(dt, shp(dims)...))
	if err != nil {
		b.t.Fatal(err)
	}
	return v
}

// ints adds a 1-D int64 initializer.
func (b *builder) ints(xs ...int64) *ir.Value {
	return b.g.NewConst("c", ir.Int64Tensor([]int64{int64(len(xs))}, xs))
}

// scalar adds a 0-D int64 initializer.
func (b *builder) scalar(x int64) *ir.Value {
	return b.g.NewConst("s", ir.Int64Tensor(nil, []int64{x}))
}

func (b *builder) floats(dims []int64) *ir.Value {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	return b.g.NewConst("w", ir.FloatTensor(dims, make([]float32, n)))
}

func (b *builder) op(op string, ins []*ir.Value, attrs ...*ir.Attr) *ir.Value {
	return b.opN(op, "", ins, 1, attrs...).Output(0)
}

func (b *builder) ms(op string, ins []*ir.Value, nout int, attrs ...*ir.Attr) *ir.Node {
	return b.opN(op, "com.microsoft", ins, nout, attrs...)
}

func (b *builder) opN(op, domain string, ins []*ir.Value, nout int, attrs ...*ir.Attr) *ir.Node {
	outs := make([]*ir.Value, nout)
	for i := range outs {
		outs[i] = b.g.NewValue(strings.ToLower(op), nil)
	}
	n, err := b.g.AddNode(&ir.Node{OpType: op, Domain: domain, Attrs: attrs}, ins, outs)
	if err != nil {
		b.t.Fatal(err)
	}
	return n
}

func (b *builder) infer() *Result {
	b.t.Helper()
	r, err := Infer(b.m)
	if err != nil {
		b.t.Fatalf("Infer: %v", err)
	}
	return r
}

func vs(v ...*ir.Value) []*ir.Value { return v }

type opCase struct {
	name    string
	opset   int64
	build   func(b *builder) *ir.Value
	want    string // the type of the returned value
	wantErr string // substring of Infer's error
}

func runCases(t *testing.T, cases []opCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opset := tc.opset
			if opset == 0 {
				opset = 13
			}
			b := newBuilder(t, opset)
			v := tc.build(b)
			_, err := Infer(b.m)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Infer: %v", err)
			}
			if got := v.Type.String(); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestBroadcast(t *testing.T) {
	bin := func(op, a, b string) func(*builder) *ir.Value {
		return func(bl *builder) *ir.Value {
			return bl.op(op, vs(bl.in("a", ir.Float, a), bl.in("b", ir.Float, b)))
		}
	}
	runCases(t, []opCase{
		{name: "sym vs 1", build: bin("Add", "batch,1,64", "1,sequence,1"), want: "float[batch,sequence,64]"},
		{name: "rank extension", build: bin("Mul", "batch,sequence,64", "64"), want: "float[batch,sequence,64]"},
		{name: "equal syms", build: bin("Sub", "batch,sequence", "batch,sequence"), want: "float[batch,sequence]"},
		{name: "different syms", build: bin("Add", "batch,sequence", "batch,length"), want: "float[batch,?]"},
		{name: "sym vs number", build: bin("Add", "batch,8", "4,8"), want: "float[4,8]"},
		{name: "unknown vs sym", build: bin("Div", "?,8", "batch,8"), want: "float[?,8]"},
		{name: "unknown vs 1", build: bin("Div", "?,8", "1,8"), want: "float[?,8]"},
		{name: "scalar", build: bin("Pow", "batch,3", ""), want: "float[batch,3]"},
		{name: "mismatch", build: bin("Add", "3,4", "5,4"), wantErr: "do not broadcast"},
		{name: "compare gives bool", build: bin("Equal", "batch,1", "1,7"), want: "bool[batch,7]"},
		{name: "where", build: func(b *builder) *ir.Value {
			return b.op("Where", vs(b.in("c", ir.Bool, "batch,1,1,sequence"), b.in("x", ir.Float, ""), b.in("y", ir.Float, "batch,4,sequence,sequence")))
		}, want: "float[batch,4,sequence,sequence]"},
		{name: "variadic max", build: func(b *builder) *ir.Value {
			return b.op("Max", vs(b.in("a", ir.Int32, "2,1"), b.in("b", ir.Int32, "3"), b.in("c", ir.Int32, "1,1")))
		}, want: "int32[2,3]"},
		{name: "unknown rank", build: func(b *builder) *ir.Value {
			x, _ := b.g.AddInput("x", &ir.Type{Kind: ir.TensorType, DType: ir.Float})
			return b.op("Add", vs(x, b.in("y", ir.Float, "3")))
		}, want: "float"},
	})
}

// bertReshape builds torch's attention reshape: the target is
// Concat(Unsqueeze(Gather(Shape(x), 0)), Unsqueeze(Gather(Shape(x), 1)), [4], [16]) or,
// with minus, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1], [4], [16]).
func bertReshape(b *builder, opset int64, minus bool) (*ir.Value, *ir.Value) {
	x := b.in("x", ir.Float, "batch,sequence,64")
	s := b.op("Shape", vs(x))
	dim := func(i int64) *ir.Value {
		g := b.op("Gather", vs(s, b.scalar(i)), ir.IntAttr("axis", 0))
		if opset < 13 {
			return b.op("Unsqueeze", vs(g), ir.IntsAttr("axes", 0))
		}
		return b.op("Unsqueeze", vs(g, b.ints(0)))
	}
	second := b.ints(-1)
	if !minus {
		second = dim(1)
	}
	target := b.op("Concat", vs(dim(0), second, b.ints(4), b.ints(16)), ir.IntAttr("axis", 0))
	return b.op("Reshape", vs(x, target)), target
}

func TestReshapeConcatOfShape(t *testing.T) {
	for _, opset := range []int64{11, 13} {
		for _, minus := range []bool{false, true} {
			b := newBuilder(t, opset)
			out, target := bertReshape(b, opset, minus)
			r := b.infer()
			if got := out.Type.String(); got != "float[batch,sequence,4,16]" {
				t.Errorf("opset %d minus=%v: reshape gives %s", opset, minus, got)
			}
			want := "[batch,sequence,4,16]"
			if minus {
				want = "[batch,-1,4,16]"
			}
			if s, ok := r.ShapeValue(target); !ok || s.String() != want {
				t.Errorf("opset %d minus=%v: target contents %v %v, want %s", opset, minus, s, ok, want)
			}
		}
	}
	// With an unknown dim, -1 cannot be resolved and stays unknown.
	b := newBuilder(t, 13)
	x := b.in("x", ir.Float, "batch,?,64")
	y := b.op("Reshape", vs(x, b.ints(0, -1, 4, 16)))
	b.infer()
	if got := y.Type.String(); got != "float[batch,?,4,16]" {
		t.Errorf("unknown dim: %s", got)
	}
}

func TestShapeValues(t *testing.T) {
	b := newBuilder(t, 13)
	x := b.in("x", ir.Float, "batch,sequence,64")
	s := b.op("Shape", vs(x))
	sl := b.op("Slice", vs(s, b.ints(1), b.ints(3)))
	prod := b.op("Mul", vs(b.op("Gather", vs(s, b.scalar(0))), b.scalar(4)))
	back := b.op("Div", vs(prod, b.scalar(4)))
	sum := b.op("Add", vs(b.op("Gather", vs(s, b.ints(2))), b.ints(1)))
	cast := b.op("Cast", vs(sl), ir.IntAttr("to", int64(ir.Int32)))
	eq := b.op("Equal", vs(s, b.ints(-1, -1, 64)))
	where := b.op("Where", vs(eq, b.ints(1, 1, 1), s))
	cos := b.op("ConstantOfShape", vs(b.ints(3)), ir.TensorAttr("value", ir.Int64Tensor([]int64{1}, []int64{7})))
	rng := b.op("Range", vs(b.scalar(0), b.scalar(4), b.scalar(1)))
	r := b.infer()
	for _, tc := range []struct {
		v    *ir.Value
		want string
	}{
		{s, "[batch,sequence,64]"},
		{sl, "[sequence,64]"},
		{prod, "[4*batch]"},
		{back, "[batch]"},
		{sum, "[65]"},
		{cast, "[sequence,64]"},
		{eq, "[0,0,1]"},
		{where, "[batch,sequence,1]"},
		{cos, "[7,7,7]"},
		{rng, "[0,1,2,3]"},
	} {
		got, ok := r.ShapeValue(tc.v)
		if !ok || got.String() != tc.want {
			t.Errorf("%s = %s: contents %v %v, want %s", tc.v.Name, func() string { p, _ := tc.v.Producer(); return p.String() }(), got, ok, tc.want)
		}
	}
	if _, ok := r.ShapeValue(x); ok {
		t.Error("a float input has contents")
	}
	if got := prod.Type.String(); got != "int64[]" {
		t.Errorf("scalar product typed %s", got)
	}
}

func TestMatMul(t *testing.T) {
	mm := func(a, b string) func(*builder) *ir.Value {
		return func(bl *builder) *ir.Value {
			return bl.op("MatMul", vs(bl.in("a", ir.Float, a), bl.in("b", ir.Float, b)))
		}
	}
	runCases(t, []opCase{
		{name: "attention scores", build: mm("batch,4,sequence,16", "batch,4,16,sequence"), want: "float[batch,4,sequence,sequence]"},
		{name: "weight", build: mm("batch,sequence,64", "64,256"), want: "float[batch,sequence,256]"},
		{name: "batch broadcast", build: mm("2,1,3,4", "5,4,6"), want: "float[2,5,3,6]"},
		{name: "sym batch broadcast", build: mm("batch,1,3,4", "1,heads,4,6"), want: "float[batch,heads,3,6]"},
		{name: "vector left", build: mm("4", "batch,4,6"), want: "float[batch,6]"},
		{name: "vector right", build: mm("batch,3,4", "4"), want: "float[batch,3]"},
		{name: "vector dot", build: mm("4", "4"), want: "float[]"},
		{name: "inner mismatch", build: mm("3,4", "5,6"), wantErr: "inner dimensions"},
		{name: "gemm transB", build: func(b *builder) *ir.Value {
			return b.op("Gemm", vs(b.in("a", ir.Float, "batch,64"), b.floats([]int64{2, 64}), b.floats([]int64{2})), ir.IntAttr("transB", 1))
		}, want: "float[batch,2]"},
		{name: "einsum", build: func(b *builder) *ir.Value {
			return b.op("Einsum", vs(b.in("a", ir.Float, "batch,4,sequence,16"), b.in("b", ir.Float, "batch,4,length,16")), ir.StringAttr("equation", "bhqd,bhkd->bhqk"))
		}, want: "float[batch,4,sequence,length]"},
		{name: "einsum ellipsis implicit", build: func(b *builder) *ir.Value {
			return b.op("Einsum", vs(b.in("a", ir.Float, "batch,3,4"), b.in("b", ir.Float, "4,5")), ir.StringAttr("equation", "...ij,jk"))
		}, want: "float[batch,3,5]"},
		{name: "fused matmul", build: func(b *builder) *ir.Value {
			return b.ms("FusedMatMul", vs(b.in("a", ir.Float, "batch,16,sequence"), b.in("b", ir.Float, "batch,16,8")), 1, ir.IntAttr("transA", 1)).Output(0)
		}, want: "float[batch,sequence,8]"},
	})
}

// TestAxesOpsets covers ops whose axes or sizes moved from attributes to inputs.
func TestAxesOpsets(t *testing.T) {
	x := func(b *builder) *ir.Value { return b.in("x", ir.Float, "batch,sequence") }
	runCases(t, []opCase{
		{name: "unsqueeze attr opset 11", opset: 11, build: func(b *builder) *ir.Value {
			return b.op("Unsqueeze", vs(x(b)), ir.IntsAttr("axes", 1, 2))
		}, want: "float[batch,1,1,sequence]"},
		{name: "unsqueeze input opset 13", opset: 13, build: func(b *builder) *ir.Value {
			return b.op("Unsqueeze", vs(x(b), b.ints(1, -1)))
		}, want: "float[batch,1,sequence,1]"},
		{name: "unsqueeze attr ignored at 13", opset: 13, build: func(b *builder) *ir.Value {
			return b.op("Unsqueeze", vs(x(b)), ir.IntsAttr("axes", 0))
		}, want: "float"},
		{name: "unsqueeze runtime axes", opset: 13, build: func(b *builder) *ir.Value {
			return b.op("Unsqueeze", vs(x(b), b.in("axes", ir.Int64, "2")))
		}, want: "float[?,?,?,?]"},
		{name: "squeeze attr opset 11", opset: 11, build: func(b *builder) *ir.Value {
			return b.op("Squeeze", vs(b.in("x", ir.Float, "batch,1,8")), ir.IntsAttr("axes", 1))
		}, want: "float[batch,8]"},
		{name: "squeeze input opset 13", build: func(b *builder) *ir.Value {
			return b.op("Squeeze", vs(b.in("x", ir.Float, "batch,1,8"), b.ints(-2)))
		}, want: "float[batch,8]"},
		{name: "squeeze all ones", build: func(b *builder) *ir.Value {
			return b.op("Squeeze", vs(b.in("x", ir.Float, "1,batch,1")))
		}, want: "float[batch]"},
		{name: "squeeze non-1", build: func(b *builder) *ir.Value {
			return b.op("Squeeze", vs(b.in("x", ir.Float, "2,3"), b.ints(0)))
		}, wantErr: "cannot squeeze"},
		{name: "reducemean attr opset 13", opset: 13, build: func(b *builder) *ir.Value {
			return b.op("ReduceMean", vs(b.in("x", ir.Float, "batch,sequence,64")), ir.IntsAttr("axes", -1))
		}, want: "float[batch,sequence,1]"},
		{name: "reducemean input opset 18", opset: 18, build: func(b *builder) *ir.Value {
			return b.op("ReduceMean", vs(b.in("x", ir.Float, "batch,sequence,64"), b.ints(-1)), ir.IntAttr("keepdims", 0))
		}, want: "float[batch,sequence]"},
		{name: "reducesum input opset 13", opset: 13, build: func(b *builder) *ir.Value {
			return b.op("ReduceSum", vs(b.in("x", ir.Float, "batch,sequence,64"), b.ints(1)))
		}, want: "float[batch,1,64]"},
		{name: "reducesum all", opset: 13, build: func(b *builder) *ir.Value {
			return b.op("ReduceSum", vs(b.in("x", ir.Float, "batch,sequence,64")), ir.IntAttr("keepdims", 0))
		}, want: "float[]"},
		{name: "reducesum noop", opset: 13, build: func(b *builder) *ir.Value {
			return b.op("ReduceSum", vs(b.in("x", ir.Float, "batch,8"), b.ints()), ir.IntAttr("noop_with_empty_axes", 1))
		}, want: "float[batch,8]"},
		{name: "reducemax opset 11", opset: 11, build: func(b *builder) *ir.Value {
			return b.op("ReduceMax", vs(b.in("x", ir.Float, "batch,8")), ir.IntsAttr("axes", 0))
		}, want: "float[1,8]"},
		{name: "argmax", build: func(b *builder) *ir.Value {
			return b.op("ArgMax", vs(b.in("x", ir.Float, "batch,8")), ir.IntAttr("axis", 1), ir.IntAttr("keepdims", 0))
		}, want: "int64[batch]"},
		{name: "shape start end opset 15", opset: 15, build: func(b *builder) *ir.Value {
			return b.op("Shape", vs(b.in("x", ir.Float, "batch,sequence,64")), ir.IntAttr("start", 1), ir.IntAttr("end", -1))
		}, want: "int64[1]"},
		{name: "shape opset 13 ignores start", opset: 13, build: func(b *builder) *ir.Value {
			return b.op("Shape", vs(b.in("x", ir.Float, "batch,sequence,64")), ir.IntAttr("start", 1))
		}, want: "int64[3]"},
	})
}

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		opset int64
		extra func(b *builder) ([]*ir.Value, []*ir.Attr)
		nout  int
		want  string
	}{
		{11, func(b *builder) ([]*ir.Value, []*ir.Attr) { return nil, []*ir.Attr{ir.IntsAttr("split", 16, 48)} }, 2, "float[batch,16] float[batch,48]"},
		{13, func(b *builder) ([]*ir.Value, []*ir.Attr) { return vs(b.ints(16, 48)), nil }, 2, "float[batch,16] float[batch,48]"},
		{13, func(b *builder) ([]*ir.Value, []*ir.Attr) { return nil, nil }, 4, "float[batch,16] float[batch,16] float[batch,16] float[batch,16]"},
		{18, func(b *builder) ([]*ir.Value, []*ir.Attr) { return nil, []*ir.Attr{ir.IntAttr("num_outputs", 3)} }, 3, "float[batch,22] float[batch,22] float[batch,20]"},
	} {
		b := newBuilder(t, tc.opset)
		ins, attrs := tc.extra(b)
		x := b.in("x", ir.Float, "batch,64")
		n := b.opN("Split", "", append(vs(x), ins...), tc.nout, append(attrs, ir.IntAttr("axis", 1))...)
		b.infer()
		var got []string
		for _, o := range n.Outputs() {
			got = append(got, o.Type.String())
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("opset %d: %s, want %s", tc.opset, strings.Join(got, " "), tc.want)
		}
	}
}

func TestDataMovement(t *testing.T) {
	runCases(t, []opCase{
		{name: "gather embedding", build: func(b *builder) *ir.Value {
			return b.op("Gather", vs(b.floats([]int64{512, 64}), b.in("ids", ir.Int64, "batch,sequence")))
		}, want: "float[batch,sequence,64]"},
		{name: "gather scalar index", build: func(b *builder) *ir.Value {
			return b.op("Gather", vs(b.in("x", ir.Float, "batch,sequence,64"), b.scalar(0)), ir.IntAttr("axis", 1))
		}, want: "float[batch,64]"},
		{name: "gather elements", build: func(b *builder) *ir.Value {
			return b.op("GatherElements", vs(b.in("x", ir.Float, "batch,sequence,512"), b.in("i", ir.Int64, "batch,sequence,sequence")), ir.IntAttr("axis", -1))
		}, want: "float[batch,sequence,sequence]"},
		{name: "concat", build: func(b *builder) *ir.Value {
			return b.op("Concat", vs(b.in("a", ir.Float, "batch,3,?"), b.in("b", ir.Float, "?,5,8")), ir.IntAttr("axis", 1))
		}, want: "float[batch,8,8]"},
		{name: "concat sym", build: func(b *builder) *ir.Value {
			return b.op("Concat", vs(b.in("a", ir.Float, "batch,sequence"), b.in("b", ir.Float, "batch,0")), ir.IntAttr("axis", -1))
		}, want: "float[batch,sequence]"},
		{name: "concat mismatch", build: func(b *builder) *ir.Value {
			return b.op("Concat", vs(b.in("a", ir.Float, "2,3"), b.in("b", ir.Float, "4,3")), ir.IntAttr("axis", 1))
		}, wantErr: "differ"},
		{name: "transpose", build: func(b *builder) *ir.Value {
			return b.op("Transpose", vs(b.in("x", ir.Float, "batch,sequence,4,16")), ir.IntsAttr("perm", 0, 2, 3, 1))
		}, want: "float[batch,4,16,sequence]"},
		{name: "transpose default", build: func(b *builder) *ir.Value {
			return b.op("Transpose", vs(b.in("x", ir.Float, "2,3,4")))
		}, want: "float[4,3,2]"},
		{name: "slice known", build: func(b *builder) *ir.Value {
			return b.op("Slice", vs(b.in("x", ir.Float, "10,20"), b.ints(2, -5), b.ints(8, 1000), b.ints(0, 1), b.ints(2, 1)))
		}, want: "float[3,5]"},
		{name: "slice reverse", build: func(b *builder) *ir.Value {
			return b.op("Slice", vs(b.in("x", ir.Float, "10"), b.ints(-1), b.ints(-1000), b.ints(0), b.ints(-1)))
		}, want: "float[10]"},
		{name: "slice to symbolic end", build: func(b *builder) *ir.Value {
			x := b.in("x", ir.Int64, "batch,sequence")
			seq := b.op("Unsqueeze", vs(b.op("Gather", vs(b.op("Shape", vs(x)), b.scalar(1))), b.ints(0)))
			return b.op("Slice", vs(b.floats([]int64{1, 512}), b.ints(0), seq, b.ints(1)))
		}, want: "float[1,sequence]"},
		{name: "slice whole sym", build: func(b *builder) *ir.Value {
			return b.op("Slice", vs(b.in("x", ir.Float, "batch,sequence"), b.ints(0), b.ints(9223372036854775807), b.ints(1)))
		}, want: "float[batch,sequence]"},
		{name: "slice opset 9 attrs", opset: 9, build: func(b *builder) *ir.Value {
			return b.op("Slice", vs(b.in("x", ir.Float, "10,20")), ir.IntsAttr("starts", 1), ir.IntsAttr("ends", 4), ir.IntsAttr("axes", 1))
		}, want: "float[10,3]"},
		// x[:, :1] of 1 + h·w tokens: the size is provably at least 1.
		{name: "slice head of a size at least its end", build: func(b *builder) *ir.Value {
			x := b.in("x", ir.Float, "batch,3,height,width")
			flat := b.op("Reshape", vs(x, b.ints(0, 3, -1)))
			tok := b.op("Concat", vs(b.in("cls", ir.Float, "batch,3,1"), flat), ir.IntAttr("axis", 2))
			return b.op("Slice", vs(tok, b.ints(0), b.ints(1), b.ints(2)))
		}, want: "float[batch,3,1]"},
		{name: "slice head of a size that may be smaller", build: func(b *builder) *ir.Value {
			return b.op("Slice", vs(b.in("x", ir.Float, "batch,sequence"), b.ints(0), b.ints(2), b.ints(1)))
		}, want: "float[batch,?]"},
		// Funnel's pooled queries: cat(x[:, :1], x[:, :-1]) keeps the runtime length, a
		// size being at least 1.
		{name: "slice head and all but the last of a runtime length", build: func(b *builder) *ir.Value {
			x := b.in("x", ir.Float, "batch,sequence,8")
			head := b.op("Slice", vs(x, b.ints(0), b.ints(1), b.ints(1)))
			rest := b.op("Slice", vs(x, b.ints(0), b.ints(-1), b.ints(1)))
			return b.op("Concat", vs(head, rest), ir.IntAttr("axis", 1))
		}, want: "float[batch,sequence,8]"},
		{name: "slice head past the least size", build: func(b *builder) *ir.Value {
			return b.op("Slice", vs(b.in("x", ir.Float, "batch,sequence"), b.ints(1), b.ints(2), b.ints(1)))
		}, want: "float[batch,?]"},
		// ONNX clamps a start of -1 to 0 on an empty axis; a size is at least 1, so it is
		// the last element.
		{name: "slice last of a runtime length", build: func(b *builder) *ir.Value {
			return b.op("Slice", vs(b.in("x", ir.Float, "batch,sequence"), b.ints(-1), b.ints(9223372036854775807), b.ints(1)))
		}, want: "float[batch,1]"},
		// A position grid resized to the patch grid of the input (DINOv2 at any image size).
		{name: "resize to sizes read off a shape", build: func(b *builder) *ir.Value {
			px := b.in("px", ir.Float, "batch,3,height,width")
			s := b.op("Shape", vs(px))
			h := b.op("Div", vs(b.op("Gather", vs(s, b.ints(2))), b.ints(4)))
			w := b.op("Div", vs(b.op("Gather", vs(s, b.ints(3))), b.ints(4)))
			sizes := b.op("Concat", vs(b.ints(1, 32), h, w), ir.IntAttr("axis", 0))
			return b.op("Resize", vs(b.floats([]int64{1, 32, 4, 4}), nil, nil, sizes), ir.StringAttr("mode", "cubic"))
		}, want: "float[1,32,floor(height/4),floor(width/4)]"},
		{name: "resize by scales", build: func(b *builder) *ir.Value {
			sc := b.g.NewConst("sc", ir.FloatTensor([]int64{4}, []float32{1, 1, 2, 0.5}))
			return b.op("Resize", vs(b.in("x", ir.Float, "batch,8,height,6"), nil, sc))
		}, want: "float[batch,8,2*height,3]"},
		{name: "resize of axes, sizes unknown", build: func(b *builder) *ir.Value {
			return b.op("Resize", vs(b.in("x", ir.Float, "batch,8,5,6"), nil, nil, b.in("sz", ir.Int64, "2")), ir.IntsAttr("axes", 2, 3))
		}, want: "float[batch,8,?,?]"},
		{name: "slice runtime starts", build: func(b *builder) *ir.Value {
			return b.op("Slice", vs(b.in("x", ir.Float, "batch,20"), b.in("s", ir.Int64, "1"), b.ints(9), b.ints(1)))
		}, want: "float[batch,?]"},
		{name: "expand", build: func(b *builder) *ir.Value {
			s := b.op("Shape", vs(b.in("x", ir.Float, "batch,sequence")))
			bt, sq := b.op("Gather", vs(s, b.ints(0))), b.op("Gather", vs(s, b.ints(1)))
			target := b.op("Concat", vs(bt, b.ints(4), sq, sq), ir.IntAttr("axis", 0))
			return b.op("Expand", vs(b.in("m", ir.Float, "batch,1,1,sequence"), target))
		}, want: "float[batch,4,sequence,sequence]"},
		{name: "expand unknown target", build: func(b *builder) *ir.Value {
			return b.op("Expand", vs(b.in("m", ir.Float, "1,7"), b.in("s", ir.Int64, "3")))
		}, want: "float[?,?,7]"},
		{name: "tile", build: func(b *builder) *ir.Value {
			x := b.in("x", ir.Float, "batch,sequence")
			bt := b.op("Unsqueeze", vs(b.op("Gather", vs(b.op("Shape", vs(x)), b.scalar(0))), b.ints(0)))
			reps := b.op("Concat", vs(bt, b.ints(1, 1)), ir.IntAttr("axis", 0))
			return b.op("Tile", vs(b.floats([]int64{4, 512, 16}), reps))
		}, want: "float[4*batch,512,16]"},
		{name: "reshape to heads*batch", build: func(b *builder) *ir.Value {
			x := b.in("x", ir.Float, "batch,4,sequence,16")
			seq := b.op("Slice", vs(b.op("Shape", vs(x)), b.ints(2), b.ints(3)))
			return b.op("Reshape", vs(x, b.op("Concat", vs(b.ints(-1), seq, b.ints(16)), ir.IntAttr("axis", 0))))
		}, want: "float[4*batch,sequence,16]"},
		{name: "reshape back from product", build: func(b *builder) *ir.Value {
			x := b.in("x", ir.Float, "batch,4,sequence,16")
			seq := b.op("Slice", vs(b.op("Shape", vs(x)), b.ints(2), b.ints(3)))
			y := b.op("Reshape", vs(x, b.op("Concat", vs(b.ints(-1), seq, b.ints(16)), ir.IntAttr("axis", 0))))
			return b.op("Reshape", vs(y, b.op("Concat", vs(b.ints(-1, 4), seq, b.ints(16)), ir.IntAttr("axis", 0))))
		}, want: "float[batch,4,sequence,16]"},
		{name: "reshape bad size", build: func(b *builder) *ir.Value {
			return b.op("Reshape", vs(b.in("x", ir.Float, "4,4"), b.ints(3, 5)))
		}, wantErr: "cannot reshape"},
		{name: "flatten", build: func(b *builder) *ir.Value {
			return b.op("Flatten", vs(b.in("x", ir.Float, "batch,4,16")), ir.IntAttr("axis", 1))
		}, want: "float[batch,64]"},
		{name: "constant of shape", build: func(b *builder) *ir.Value {
			x := b.in("x", ir.Float, "batch,sequence")
			return b.op("ConstantOfShape", vs(b.op("Shape", vs(x))), ir.TensorAttr("value", ir.Int64Tensor([]int64{1}, []int64{1})))
		}, want: "int64[batch,sequence]"},
		{name: "range sym", build: func(b *builder) *ir.Value {
			x := b.in("x", ir.Float, "batch,sequence")
			return b.op("Range", vs(b.scalar(0), b.op("Gather", vs(b.op("Shape", vs(x)), b.scalar(1))), b.scalar(1)))
		}, want: "int64[sequence]"},
		{name: "range float", build: func(b *builder) *ir.Value {
			x := b.in("x", ir.Float, "batch,sequence")
			n := b.op("Cast", vs(b.op("Gather", vs(b.op("Shape", vs(x)), b.scalar(1)))), ir.IntAttr("to", int64(ir.Float)))
			zero := b.g.NewConst("z", ir.FloatTensor(nil, []float32{0}))
			one := b.g.NewConst("o", ir.FloatTensor(nil, []float32{1}))
			return b.op("Range", vs(zero, n, one))
		}, want: "float[sequence]"},
		{name: "range float fraction", build: func(b *builder) *ir.Value {
			x := b.in("x", ir.Float, "batch,sequence")
			n := b.op("Cast", vs(b.op("Gather", vs(b.op("Shape", vs(x)), b.scalar(1)))), ir.IntAttr("to", int64(ir.Float)))
			zero := b.g.NewConst("z", ir.FloatTensor(nil, []float32{0}))
			half := b.g.NewConst("h", ir.FloatTensor(nil, []float32{0.5}))
			return b.op("Range", vs(zero, n, half))
		}, want: "float[?]"},
		{name: "range known", build: func(b *builder) *ir.Value {
			return b.op("Range", vs(b.scalar(10), b.scalar(0), b.scalar(-3)))
		}, want: "int64[4]"},
		{name: "constant", build: func(b *builder) *ir.Value {
			return b.op("Constant", nil, ir.TensorAttr("value", ir.FloatTensor([]int64{2, 3}, make([]float32, 6))))
		}, want: "float[2,3]"},
		{name: "constant ints", build: func(b *builder) *ir.Value {
			return b.op("Constant", nil, ir.IntsAttr("value_ints", 1, 2))
		}, want: "int64[2]"},
		{name: "cast", build: func(b *builder) *ir.Value {
			return b.op("Cast", vs(b.in("m", ir.Int64, "batch,sequence")), ir.IntAttr("to", int64(ir.Float)))
		}, want: "float[batch,sequence]"},
		{name: "pad", build: func(b *builder) *ir.Value {
			return b.op("Pad", vs(b.in("x", ir.Float, "batch,10"), b.ints(0, 1, 0, 2)))
		}, want: "float[batch,13]"},
		{name: "pad symbolic", build: func(b *builder) *ir.Value {
			return b.op("Pad", vs(b.in("x", ir.Float, "batch,8,sequence"), b.ints(0, 0, 4, 0, 0, 0)))
		}, want: "float[batch,8,sequence + 4]"},
		{name: "topk", build: func(b *builder) *ir.Value {
			return b.op("TopK", vs(b.in("x", ir.Float, "batch,10"), b.ints(3)))
		}, want: "float[batch,3]"},
		{name: "nonzero", build: func(b *builder) *ir.Value {
			return b.op("NonZero", vs(b.in("x", ir.Float, "batch,10")))
		}, want: "int64[2,?]"},
		{name: "nonzero of ones", build: func(b *builder) *ir.Value {
			shp := b.op("Shape", vs(b.in("x", ir.Float, "batch,10")))
			ones := b.op("ConstantOfShape", vs(shp), ir.TensorAttr("value", ir.Int64Tensor([]int64{1}, []int64{1})))
			return b.op("NonZero", vs(ones))
		}, want: "int64[2,10*batch]"},
		{name: "nonzero of zeros", build: func(b *builder) *ir.Value {
			shp := b.op("Shape", vs(b.in("x", ir.Float, "batch,10")))
			return b.op("NonZero", vs(b.op("ConstantOfShape", vs(shp))))
		}, want: "int64[2,?]"},
	})
}

func TestNormalizationAndQuant(t *testing.T) {
	b := newBuilder(t, 17)
	x := b.in("x", ir.Float, "batch,sequence,64")
	ln := b.opN("LayerNormalization", "", vs(x, b.floats([]int64{64}), b.floats([]int64{64})), 3)
	drop := b.opN("Dropout", "", vs(x), 2)
	q := b.op("QuantizeLinear", vs(x, b.floats(nil), b.g.NewConst("zp", ir.NewTensor(ir.Int8, nil, []byte{0}))))
	dq := b.op("DequantizeLinear", vs(q, b.floats(nil)))
	dyn := b.opN("DynamicQuantizeLinear", "", vs(x), 3)
	sm := b.op("Softmax", vs(x), ir.IntAttr("axis", -1))
	b.infer()
	for _, tc := range []struct {
		v    *ir.Value
		want string
	}{
		{ln.Output(0), "float[batch,sequence,64]"},
		{ln.Output(1), "float[batch,sequence,1]"},
		{drop.Output(1), "bool[batch,sequence,64]"},
		{q, "int8[batch,sequence,64]"},
		{dq, "float[batch,sequence,64]"},
		{dyn.Output(0), "uint8[batch,sequence,64]"},
		{dyn.Output(1), "float[]"},
		{sm, "float[batch,sequence,64]"},
	} {
		if got := tc.v.Type.String(); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.v.Name, got, tc.want)
		}
	}
}

// TestConvAndAttention23: a patch Conv and the standard Attention keep the batch and
// sequence symbols, so blocks after them (and after a fused attention) stay recognisable.
func TestConvAndAttention23(t *testing.T) {
	b := newBuilder(t, 23)
	px := b.in("px", ir.Float, "batch,3,16,16")
	patch := b.op("Conv", vs(px, b.floats([]int64{32, 3, 4, 4}), b.floats([]int64{32})), ir.IntsAttr("strides", 4, 4))
	padded := b.op("Conv", vs(px, b.floats([]int64{8, 3, 3, 3})), ir.IntsAttr("pads", 1, 1, 1, 1), ir.IntsAttr("dilations", 1, 2))
	same := b.op("Conv", vs(px, b.floats([]int64{8, 3, 3, 3})), ir.StringAttr("auto_pad", "SAME_UPPER"), ir.IntsAttr("strides", 2, 2))
	seq := b.in("seq", ir.Float, "batch,32,sequence")
	pointwise := b.op("Conv", vs(seq, b.floats([]int64{64, 32, 1})))
	q4 := b.in("q4", ir.Float, "batch,4,sequence,8")
	kv4 := b.in("kv4", ir.Float, "batch,2,memory,16")
	att4 := b.op("Attention", vs(q4, kv4, kv4))
	q3 := b.in("q3", ir.Float, "batch,sequence,32")
	kv3 := b.in("kv3", ir.Float, "batch,memory,16")
	att3 := b.op("Attention", vs(q3, kv3, kv3), ir.IntAttr("q_num_heads", 4), ir.IntAttr("kv_num_heads", 2))
	b.infer()
	for _, tc := range []struct {
		v    *ir.Value
		want string
	}{
		{patch, "float[batch,32,4,4]"},
		{padded, "float[batch,8,16,14]"},
		{same, "float[batch,8,8,8]"},
		{pointwise, "float[batch,64,sequence]"},
		{att4, "float[batch,4,sequence,16]"},
		{att3, "float[batch,sequence,32]"},
	} {
		if got := tc.v.Type.String(); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.v.Name, got, tc.want)
		}
	}
}

func TestContribOps(t *testing.T) {
	b := newBuilder(t, 13)
	x := b.in("x", ir.Float, "batch,sequence,64")
	att := b.ms("Attention", vs(x, b.floats([]int64{64, 192}), b.floats([]int64{192}), b.in("mask", ir.Int32, "batch")), 2, ir.IntAttr("num_heads", 4))
	skip := b.ms("SkipLayerNormalization", vs(x, x, b.floats([]int64{64}), b.floats([]int64{64})), 4)
	ids := b.in("ids", ir.Int32, "batch,sequence")
	emb := b.ms("EmbedLayerNormalization", vs(ids, ids, b.floats([]int64{512, 64}), b.floats([]int64{128, 64}), b.floats([]int64{2, 64}), b.floats([]int64{64}), b.floats([]int64{64})), 2)
	bg := b.ms("BiasGelu", vs(x, b.floats([]int64{64})), 1)
	fg := b.ms("FastGelu", vs(x), 1)
	g := b.ms("Gelu", vs(x), 1)
	onnxGelu := b.op("Gelu", vs(x))
	b.infer()
	for _, tc := range []struct {
		v    *ir.Value
		want string
	}{
		{att.Output(0), "float[batch,sequence,64]"},
		{att.Output(1), "float[2,batch,4,sequence,16]"},
		{skip.Output(0), "float[batch,sequence,64]"},
		{skip.Output(1), "float[batch,sequence,1]"},
		{skip.Output(3), "float[batch,sequence,64]"},
		{emb.Output(0), "float[batch,sequence,64]"},
		{emb.Output(1), "int32[batch]"},
		{bg.Output(0), "float[batch,sequence,64]"},
		{fg.Output(0), "float[batch,sequence,64]"},
		{g.Output(0), "float[batch,sequence,64]"},
		{onnxGelu, "float[batch,sequence,64]"},
	} {
		if got := tc.v.Type.String(); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.v.Name, got, tc.want)
		}
	}
}

func TestDeclaredTypes(t *testing.T) {
	cases := []struct {
		name    string
		decl    *ir.Type
		want    string
		wantErr string
	}{
		// The inferred symbol replaces a declared one: equal sizes get one name.
		{"symbolic declared, symbol and number inferred", ir.TensorOf(ir.Float, ir.Sym("n"), ir.Sym("m")), "float[batch,8]", ""},
		{"declared more precise", ir.TensorOf(ir.Float, ir.D(2), ir.D(8)), "float[2,8]", ""},
		{"declared rank only", ir.TensorOf(ir.Float, ir.Dim{}, ir.Dim{}), "float[batch,8]", ""},
		{"declared dtype only", &ir.Type{Kind: ir.TensorType, DType: ir.Float}, "float[batch,8]", ""},
		{"rank conflict", ir.TensorOf(ir.Float, ir.Sym("batch")), "", "rank"},
		{"dim conflict", ir.TensorOf(ir.Float, ir.Sym("batch"), ir.D(9)), "", "dim 1"},
		{"dtype conflict", ir.TensorOf(ir.Int64, ir.Sym("batch"), ir.D(8)), "", "element type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBuilder(t, 13)
			x := b.in("x", ir.Float, "batch,8")
			y := b.op("Relu", vs(x))
			y.Type = tc.decl
			b.g.ValueInfo = append(b.g.ValueInfo, y)
			_, err := Infer(b.m)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "Relu") || !strings.Contains(err.Error(), y.Name) {
					t.Fatalf("error %v, want one naming the node, %q and %q", err, y.Name, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := y.Type.String(); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// Inferred symbols replace declared ones on intermediate values and graph outputs alike
// (the exporter's invented names would hide that sizes are equal); declared numbers stay.
func TestDeclaredSymbolsGiveWay(t *testing.T) {
	b := newBuilder(t, 13)
	x := b.in("x", ir.Float, "batch,8")
	h := b.op("Relu", vs(x))
	h.Type = ir.TensorOf(ir.Float, ir.Sym("unk__1"), ir.D(8))
	b.g.ValueInfo = append(b.g.ValueInfo, h)
	y := b.op("Neg", vs(h))
	y.Type = ir.TensorOf(ir.Float, ir.Sym("Negy_dim_0"), ir.Sym("Negy_dim_1"))
	b.g.Outputs = append(b.g.Outputs, y)
	z := b.op("Concat", vs(x, h), ir.IntAttr("axis", 0))
	z.Type = ir.TensorOf(ir.Float, ir.Sym("Concatz_dim_0"), ir.Dim{})
	b.g.Outputs = append(b.g.Outputs, z)
	b.infer()
	for _, c := range []struct {
		v    *ir.Value
		want string
	}{{h, "float[batch,8]"}, {y, "float[batch,8]"}, {z, "float[2*batch,8]"}} {
		if got := c.v.Type.String(); got != c.want {
			t.Errorf("%s: got %s, want %s", c.v.Name, got, c.want)
		}
	}
}

func TestControlFlow(t *testing.T) {
	b := newBuilder(t, 13)
	x := b.in("x", ir.Float, "batch,8")
	cond := b.in("c", ir.Bool, "")
	branch := func(name, shape string) *ir.Graph {
		sg := ir.NewGraph(name)
		y := sg.Add("Reshape", vs(x, b.ints(shp(shape)[0].Value, -1)), 1, name+"_y").Output(0)
		sg.Outputs = append(sg.Outputs, y)
		return sg
	}
	then, els := branch("then", "2"), branch("else", "4")
	ifn, err := b.g.AddNode(&ir.Node{OpType: "If", Attrs: []*ir.Attr{
		{Name: "then_branch", Type: ir.AttrGraph, Graph: then},
		{Name: "else_branch", Type: ir.AttrGraph, Graph: els},
	}}, vs(cond), vs(b.g.NewValue("if_out", nil)))
	if err != nil {
		t.Fatal(err)
	}
	then.Parent, then.Owner, els.Parent, els.Owner = b.g, ifn, b.g, ifn

	// Loop: the carried value doubles each iteration (its shape may change from one
	// iteration to the next, so only its dtype is known); a scan output collects the
	// outer x, whose shape is fixed.
	body := ir.NewGraph("body")
	body.Parent = b.g
	body.AddInput("i", nil)
	bc, _ := body.AddInput("cond", nil)
	acc, _ := body.AddInput("acc", nil)
	dbl := body.Add("Add", vs(acc, acc), 1, "dbl").Output(0)
	cOut := body.Add("Identity", vs(bc), 1, "cond_out").Output(0)
	each := body.Add("Identity", vs(x), 1, "each").Output(0)
	body.Outputs = vs(cOut, dbl, each)
	loop := b.loop3(body, x)
	b.infer()
	if got := ifn.Output(0).Type.String(); got != "float[?,?]" {
		t.Errorf("If: %s", got)
	}
	if got := then.Outputs[0].Type.String(); got != "float[2,4*batch]" {
		t.Errorf("then branch: %s", got)
	}
	if got := loop.Output(0).Type.String(); got != "float" {
		t.Errorf("Loop final: %s", got)
	}
	if got := loop.Output(1).Type.String(); got != "float[3,batch,8]" {
		t.Errorf("Loop scan output: %s (body %s)", got, dbl.Type)
	}
	if got := cOut.Type.String(); got != "bool[]" {
		t.Errorf("Loop body cond: %s", got)
	}
}

// loop3 adds a Loop of three iterations over body, x its one loop-carried value, with a
// final and a scan output.
func (b *builder) loop3(body *ir.Graph, x *ir.Value) *ir.Node {
	b.t.Helper()
	loop, err := b.g.AddNode(&ir.Node{OpType: "Loop", Attrs: []*ir.Attr{{Name: "body", Type: ir.AttrGraph, Graph: body}}},
		vs(b.scalar(3), nil, x), vs(b.g.NewValue("final", nil), b.g.NewValue("scan", nil)))
	if err != nil {
		b.t.Fatal(err)
	}
	body.Owner = loop
	return loop
}

// TestLoopCounterDeclaredOneElement: torch declares a Loop body's iteration number [1]
// rather than a scalar; the body is typed with the declared rank.
func TestLoopCounterDeclaredOneElement(t *testing.T) {
	b := newBuilder(t, 13)
	x := b.in("x", ir.Float, "batch,8")
	body := ir.NewGraph("body")
	body.Parent = b.g
	i, _ := body.AddInput("i", ir.TensorOf(ir.Int64, ir.D(1)))
	bc, _ := body.AddInput("cond", ir.TensorOf(ir.Bool))
	acc, _ := body.AddInput("acc", nil)
	row := body.Add("Gather", vs(x, i), 1, "row").Output(0)
	body.Outputs = vs(body.Add("Identity", vs(bc), 1, "cond_out").Output(0), acc, row)
	loop := b.loop3(body, x)
	b.infer()
	if got := i.Type.String(); got != "int64[1]" {
		t.Errorf("iteration number: %s", got)
	}
	if got := row.Type.String(); got != "float[1,8]" {
		t.Errorf("row: %s", got)
	}
	if got := loop.Output(1).Type.String(); got != "float[3,1,8]" {
		t.Errorf("Loop scan output: %s", got)
	}
}

func TestNoRuleAndStats(t *testing.T) {
	b := newBuilder(t, 13)
	x := b.in("x", ir.Float, "batch,8")
	y := b.op("Relu", vs(x))
	z := b.opN("MysteryOp", "com.example", vs(y), 1).Output(0)
	w := b.op("Relu", vs(z))
	r := b.infer()
	if len(r.NoRule) != 1 || r.NoRule[0] != "com.example.MysteryOp" {
		t.Errorf("NoRule = %v", r.NoRule)
	}
	if z.Type != nil || w.Type != nil {
		t.Errorf("unknown op outputs typed: %v %v", z.Type, w.Type)
	}
	if r.Values != 3 || r.Typed != 1 || r.Unknown != 2 || r.Static != 0 || len(r.Untyped) != 2 {
		t.Errorf("counts %+v", r)
	}
	if st := r.ByOp["Relu"]; st == nil || st.Nodes != 2 || st.Typed != 1 {
		t.Errorf("Relu stats %+v", st)
	}
}

// TestInferNode: a pass rewrites a node and re-types it; producers' contents are
// recomputed on demand.
func TestInferNode(t *testing.T) {
	b := newBuilder(t, 13)
	out, target := bertReshape(b, 13, true)
	b.infer()
	p, _ := out.Producer()
	// Rewrite: reshape to [batch, -1, 64] instead.
	tn, _ := target.Producer()
	tn.SetInput(2, b.ints(64))
	tn.SetInputs(tn.Inputs()[:3])
	out.Type = nil
	if err := InferNode(tn, 13); err == nil {
		t.Error("re-typing the concat with a shorter result kept the old [4] type without complaint")
	}
	target.Type = nil
	if err := InferNode(tn, 13); err != nil {
		t.Fatal(err)
	}
	if err := InferNode(p, 13); err != nil {
		t.Fatal(err)
	}
	if got := out.Type.String(); got != "float[batch,sequence,64]" {
		t.Errorf("after rewrite: %s", got)
	}
}
