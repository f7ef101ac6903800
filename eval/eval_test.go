package eval

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
)

func f32(dims []int64, v ...float32) *ir.Tensor { return ir.FloatTensor(dims, v) }
func i64(dims []int64, v ...int64) *ir.Tensor   { return ir.Int64Tensor(dims, v) }
func i32(dims []int64, v ...int64) *ir.Tensor   { return intTensor(ir.Int32, dims, v) }
func u8(dims []int64, v ...int64) *ir.Tensor    { return intTensor(ir.Uint8, dims, v) }
func f64(dims []int64, v ...float64) *ir.Tensor { return newF64(dims, v).tensor() }
func bools(dims []int64, v ...bool) *ir.Tensor  { return boolTensor(dims, v) }
func half(dims []int64, v ...float32) *ir.Tensor {
	h := make([]uint16, len(v))
	for i, x := range v {
		h[i] = ndarray.Float32ToHalf(x)
	}
	return f16(dims, h...)
}
func bf16(dims []int64, v ...float64) *ir.Tensor {
	t, _ := ir.FloatsTensor(ir.BFloat16, dims, v)
	return t
}
func f16(dims []int64, v ...uint16) *ir.Tensor {
	b := make([]byte, 2*len(v))
	for i, h := range v {
		b[2*i], b[2*i+1] = byte(h), byte(h>>8)
	}
	return ir.NewTensor(ir.Float16, dims, b)
}

func nd(op string, attrs ...*ir.Attr) *ir.Node { return &ir.Node{OpType: op, Attrs: attrs} }

func d(v ...int64) []int64 { return v }

var scalar = []int64{}

type evalCase struct {
	name  string
	n     *ir.Node
	opset int64
	in    []*ir.Tensor
	want  *ir.Tensor // nil: expect an error
}

func sameTensor(t *testing.T, name string, got, want *ir.Tensor) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: nil output", name)
	}
	if got.DType != want.DType || !slices.Equal(got.Dims, want.Dims) {
		t.Fatalf("%s: got %s%v, want %s%v", name, got.DType, got.Dims, want.DType, want.Dims)
	}
	gb, err := got.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	wb, _ := want.Bytes()
	if !bytes.Equal(gb, wb) {
		gv, _ := got.Float64s()
		wv, _ := want.Float64s()
		t.Fatalf("%s: got %v, want %v", name, gv, wv)
	}
}

func runCases(t *testing.T, cases []evalCase) {
	t.Helper()
	for _, c := range cases {
		opset := c.opset
		if opset == 0 {
			opset = 13
		}
		out, err := Eval(c.n, c.in, opset)
		if c.want == nil {
			if err == nil {
				t.Errorf("%s: want an error, got %v", c.name, out[0].Dims)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		t.Run(c.name, func(t *testing.T) { sameTensor(t, c.name, out[0], c.want) })
	}
}

func TestShapeOps(t *testing.T) {
	x := f32(d(2, 3, 4), make([]float32, 24)...)
	m := f32(d(2, 3), 1, 2, 3, 4, 5, 6)
	runCases(t, []evalCase{
		{"Shape", nd("Shape"), 13, []*ir.Tensor{x}, i64(d(3), 2, 3, 4)},
		{"Shape start", nd("Shape", ir.IntAttr("start", 1)), 15, []*ir.Tensor{x}, i64(d(2), 3, 4)},
		{"Shape end -1", nd("Shape", ir.IntAttr("end", -1)), 15, []*ir.Tensor{x}, i64(d(2), 2, 3)},
		{"Shape clamped", nd("Shape", ir.IntAttr("start", -10), ir.IntAttr("end", 10)), 15, []*ir.Tensor{x}, i64(d(3), 2, 3, 4)},
		{"Shape start ignored before 15", nd("Shape", ir.IntAttr("start", 1)), 14, []*ir.Tensor{x}, i64(d(3), 2, 3, 4)},
		{"Size", nd("Size"), 13, []*ir.Tensor{m}, i64(scalar, 6)},
		{"Gather scalar -1", nd("Gather"), 13, []*ir.Tensor{i64(d(3), 10, 20, 30), i64(scalar, -1)}, i64(scalar, 30)},
		{"Gather axis 1", nd("Gather", ir.IntAttr("axis", 1)), 13, []*ir.Tensor{m, i64(d(2), 2, 0)}, f32(d(2, 2), 3, 1, 6, 4)},
		{"Gather axis -1 int32 idx", nd("Gather", ir.IntAttr("axis", -1)), 13, []*ir.Tensor{m, i32(d(1), -3)}, f32(d(2, 1), 1, 4)},
		{"Gather axis 0 2-D idx", nd("Gather"), 13, []*ir.Tensor{m, i64(d(2, 1), 1, 0)}, f32(d(2, 1, 3), 4, 5, 6, 1, 2, 3)},
		{"Gather out of range", nd("Gather"), 13, []*ir.Tensor{i64(d(3), 1, 2, 3), i64(scalar, 3)}, nil},
		{"Unsqueeze attr", nd("Unsqueeze", ir.IntsAttr("axes", 0)), 11, []*ir.Tensor{i64(d(3), 1, 2, 3)}, i64(d(1, 3), 1, 2, 3)},
		{"Unsqueeze input -1", nd("Unsqueeze"), 13, []*ir.Tensor{i64(d(3), 1, 2, 3), i64(d(1), -1)}, i64(d(3, 1), 1, 2, 3)},
		{"Unsqueeze two", nd("Unsqueeze"), 13, []*ir.Tensor{i64(d(3), 1, 2, 3), i64(d(2), 2, 0)}, i64(d(1, 3, 1), 1, 2, 3)},
		{"Unsqueeze scalar", nd("Unsqueeze", ir.IntsAttr("axes", 0)), 11, []*ir.Tensor{i64(scalar, 7)}, i64(d(1), 7)},
		{"Unsqueeze no axes at 13", nd("Unsqueeze"), 13, []*ir.Tensor{i64(d(1), 1)}, nil},
		{"Squeeze all", nd("Squeeze"), 13, []*ir.Tensor{i64(d(1, 3, 1), 1, 2, 3)}, i64(d(3), 1, 2, 3)},
		{"Squeeze -1", nd("Squeeze"), 13, []*ir.Tensor{i64(d(1, 3, 1), 1, 2, 3), i64(d(1), -1)}, i64(d(1, 3), 1, 2, 3)},
		{"Squeeze attr", nd("Squeeze", ir.IntsAttr("axes", 0)), 11, []*ir.Tensor{i64(d(1), 5)}, i64(scalar, 5)},
		{"Squeeze non-1", nd("Squeeze"), 13, []*ir.Tensor{i64(d(1, 3), 1, 2, 3), i64(d(1), 1)}, nil},
		{"Concat 0", nd("Concat", ir.IntAttr("axis", 0)), 13, []*ir.Tensor{i64(d(2), 1, 2), i64(d(1), 3), i64(d(0))}, i64(d(3), 1, 2, 3)},
		{"Concat -1", nd("Concat", ir.IntAttr("axis", -1)), 13, []*ir.Tensor{f32(d(2, 1), 1, 4), f32(d(2, 2), 2, 3, 5, 6)}, f32(d(2, 3), 1, 2, 3, 4, 5, 6)},
		{"Concat mixed", nd("Concat", ir.IntAttr("axis", 0)), 13, []*ir.Tensor{i64(d(1), 1), i32(d(1), 2)}, nil},
		{"Reshape 0,-1", nd("Reshape"), 13, []*ir.Tensor{m, i64(d(2), 0, -1)}, f32(d(2, 3), 1, 2, 3, 4, 5, 6)},
		{"Reshape -1", nd("Reshape"), 13, []*ir.Tensor{m, i64(d(1), -1)}, f32(d(6), 1, 2, 3, 4, 5, 6)},
		{"Reshape 3,1,2", nd("Reshape"), 13, []*ir.Tensor{m, i64(d(3), 3, 1, 2)}, f32(d(3, 1, 2), 1, 2, 3, 4, 5, 6)},
		{"Reshape allowzero", nd("Reshape", ir.IntAttr("allowzero", 1)), 14, []*ir.Tensor{f32(d(0, 3)), i64(d(2), 3, 0)}, f32(d(3, 0))},
		{"Reshape two -1", nd("Reshape"), 13, []*ir.Tensor{m, i64(d(2), -1, -1)}, nil},
		{"Reshape bad", nd("Reshape"), 13, []*ir.Tensor{m, i64(d(1), 4)}, nil},
		{"Expand", nd("Expand"), 13, []*ir.Tensor{i64(d(3, 1), 1, 2, 3), i64(d(3), 2, 1, 2)},
			i64(d(2, 3, 2), 1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3)},
		{"Expand smaller shape", nd("Expand"), 13, []*ir.Tensor{i64(d(2, 2), 1, 2, 3, 4), i64(d(1), 1)}, i64(d(2, 2), 1, 2, 3, 4)},
		{"Expand bad", nd("Expand"), 13, []*ir.Tensor{i64(d(2), 1, 2), i64(d(1), 3)}, nil},
		{"Tile", nd("Tile"), 13, []*ir.Tensor{i64(d(2), 1, 2), i64(d(1), 3)}, i64(d(6), 1, 2, 1, 2, 1, 2)},
		{"Tile 2-D", nd("Tile"), 13, []*ir.Tensor{i64(d(1, 2), 1, 2), i64(d(2), 2, 1)}, i64(d(2, 2), 1, 2, 1, 2)},
		{"Transpose default", nd("Transpose"), 13, []*ir.Tensor{m}, f32(d(3, 2), 1, 4, 2, 5, 3, 6)},
		{"Transpose perm", nd("Transpose", ir.IntsAttr("perm", 1, 0, 2)), 13, []*ir.Tensor{i64(d(2, 1, 2), 1, 2, 3, 4)}, i64(d(1, 2, 2), 1, 2, 3, 4)},
		{"Transpose 3-D", nd("Transpose", ir.IntsAttr("perm", 2, 0, 1)), 13, []*ir.Tensor{i64(d(1, 2, 3), 1, 2, 3, 4, 5, 6)}, i64(d(3, 1, 2), 1, 4, 2, 5, 3, 6)},
		{"Identity", nd("Identity"), 13, []*ir.Tensor{m}, m},
		{"Where", nd("Where"), 13, []*ir.Tensor{bools(d(2, 1), true, false), i64(d(1, 3), 1, 2, 3), i64(scalar, 0)}, i64(d(2, 3), 1, 2, 3, 0, 0, 0)},
		{"Where non-bool", nd("Where"), 13, []*ir.Tensor{i64(d(1), 1), i64(d(1), 1), i64(d(1), 2)}, nil},
	})
}

func TestSlice(t *testing.T) {
	x := i64(d(10), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
	m := i64(d(2, 4), 1, 2, 3, 4, 5, 6, 7, 8)
	one := func(v int64) *ir.Tensor { return i64(d(1), v) }
	runCases(t, []evalCase{
		{"negative start, huge end", nd("Slice"), 13, []*ir.Tensor{x, one(-3), one(math.MaxInt64)}, i64(d(3), 7, 8, 9)},
		{"reverse", nd("Slice"), 13, []*ir.Tensor{i64(d(4), 1, 2, 3, 4), one(-1), one(math.MinInt64), one(0), one(-1)}, i64(d(4), 4, 3, 2, 1)},
		{"step 3 clamped end", nd("Slice"), 13, []*ir.Tensor{x, one(1), one(1000), one(0), one(3)}, i64(d(3), 1, 4, 7)},
		{"step -2", nd("Slice"), 13, []*ir.Tensor{x, one(8), one(1), nil, one(-2)}, i64(d(4), 8, 6, 4, 2)},
		{"empty", nd("Slice"), 13, []*ir.Tensor{x, one(5), one(2)}, i64(d(0))},
		{"axis -1", nd("Slice"), 13, []*ir.Tensor{m, one(1), one(3), one(-1)}, i64(d(2, 2), 2, 3, 6, 7)},
		{"two axes", nd("Slice"), 13, []*ir.Tensor{m, i64(d(2), 1, 0), i64(d(2), 2, 4), i64(d(2), 0, 1), i64(d(2), 1, 2)}, i64(d(1, 2), 5, 7)},
		{"int32 params", nd("Slice"), 13, []*ir.Tensor{x, i32(d(1), 2), i32(d(1), 4)}, i64(d(2), 2, 3)},
		{"attrs opset 9", nd("Slice", ir.IntsAttr("starts", 0), ir.IntsAttr("ends", -1), ir.IntsAttr("axes", 1)), 9, []*ir.Tensor{m}, i64(d(2, 3), 1, 2, 3, 5, 6, 7)},
		{"step 0", nd("Slice"), 13, []*ir.Tensor{x, one(0), one(3), one(0), one(0)}, nil},
	})
	if got := SliceIndices(5, -100, 100, 1); len(got) != 5 {
		t.Errorf("SliceIndices clamp: %v", got)
	}
	if got := SliceIndices(5, 100, -100, -1); len(got) != 5 || got[0] != 4 || got[4] != 0 {
		t.Errorf("SliceIndices reverse clamp: %v", got)
	}
}

func TestCast(t *testing.T) {
	to := func(dt ir.DataType) *ir.Node { return nd("Cast", ir.IntAttr("to", int64(dt))) }
	nan := float32(math.NaN())
	runCases(t, []evalCase{
		{"f32->i64 truncates", to(ir.Int64), 13, []*ir.Tensor{f32(d(3), 1.7, -1.7, 0)}, i64(d(3), 1, -1, 0)},
		{"i64->f32 rounds", to(ir.Float), 13, []*ir.Tensor{i64(d(2), 16777217, -3)}, f32(d(2), 16777216, -3)},
		{"f32->bool", to(ir.Bool), 13, []*ir.Tensor{f32(d(3), 0, -0.5, 2)}, bools(d(3), false, true, true)},
		{"bool->f32", to(ir.Float), 13, []*ir.Tensor{bools(d(2), true, false)}, f32(d(2), 1, 0)},
		{"i64->uint8 wraps", to(ir.Uint8), 13, []*ir.Tensor{i64(d(2), 300, -1)}, u8(d(2), 44, 255)},
		{"i32->i64", to(ir.Int64), 13, []*ir.Tensor{i32(d(1), -1)}, i64(d(1), -1)},
		{"f64->f32", to(ir.Float), 13, []*ir.Tensor{f64(d(1), 0.1)}, f32(d(1), float32(0.1))},
		{"f32->f64", to(ir.Double), 13, []*ir.Tensor{f32(d(1), 0.1)}, f64(d(1), float64(float32(0.1)))},
		{"f32->f16", to(ir.Float16), 13, []*ir.Tensor{f32(d(6), 1, -2, 65520, 1e-8, 0.1, 5.9604645e-08)},
			f16(d(6), 0x3c00, 0xc000, 0x7c00, 0, 0x2e66, 0x0001)},
		{"f16->f32", to(ir.Float), 13, []*ir.Tensor{f16(d(3), 0x3c00, 0x0001, 0xfc00)}, f32(d(3), 1, 5.9604645e-08, float32(math.Inf(-1)))},
		{"f16->i64", to(ir.Int64), 13, []*ir.Tensor{f16(d(1), 0xc100)}, i64(d(1), -2)},
		{"f32->bf16 ties to even", to(ir.BFloat16), 13, []*ir.Tensor{f32(d(4), 1+1.0/256, 1+3.0/256, 3.4028235e38, -0.1)},
			bf16(d(4), 1, 1+1.0/64, math.Inf(1), -0.10009765625)},
		{"bf16->f32", to(ir.Float), 13, []*ir.Tensor{bf16(d(2), 1.5, -0.10009765625)}, f32(d(2), 1.5, -0.10009765625)},
		{"i64->bf16", to(ir.BFloat16), 13, []*ir.Tensor{i64(d(1), 257)}, bf16(d(1), 256)},
		{"NaN->int refused", to(ir.Int64), 13, []*ir.Tensor{f32(d(1), nan)}, nil},
		{"big->int32 refused", to(ir.Int32), 13, []*ir.Tensor{f32(d(1), 3e9)}, nil},
		{"-3.4e38->int64 refused", to(ir.Int64), 13, []*ir.Tensor{f32(d(1), -3.4028235e38)}, nil},
		{"same type", to(ir.Int64), 13, []*ir.Tensor{i64(d(1), 5)}, i64(d(1), 5)},
		{"string refused", to(ir.String), 13, []*ir.Tensor{i64(d(1), 5)}, nil},
	})
}

func TestConstantsAndRange(t *testing.T) {
	runCases(t, []evalCase{
		{"Constant value", nd("Constant", ir.TensorAttr("value", i64(d(2), 4, 5))), 13, nil, i64(d(2), 4, 5)},
		{"Constant value_float", nd("Constant", ir.FloatAttr("value_float", 1.5)), 13, nil, f32(scalar, 1.5)},
		{"Constant value_floats", nd("Constant", ir.FloatsAttr("value_floats", 1, 2)), 13, nil, f32(d(2), 1, 2)},
		{"Constant value_int", nd("Constant", ir.IntAttr("value_int", 3)), 13, nil, i64(scalar, 3)},
		{"Constant value_ints", nd("Constant", ir.IntsAttr("value_ints", 3, 4)), 13, nil, i64(d(2), 3, 4)},
		{"Constant string", nd("Constant", ir.StringAttr("value_string", "x")), 13, nil, nil},
		{"ConstantOfShape default", nd("ConstantOfShape"), 13, []*ir.Tensor{i64(d(2), 1, 2)}, f32(d(1, 2), 0, 0)},
		{"ConstantOfShape int", nd("ConstantOfShape", ir.TensorAttr("value", i64(d(1), 5))), 13, []*ir.Tensor{i64(d(1), 3)}, i64(d(3), 5, 5, 5)},
		{"ConstantOfShape scalar", nd("ConstantOfShape", ir.TensorAttr("value", i64(d(1), 7))), 13, []*ir.Tensor{i64(d(0))}, i64(scalar, 7)},
		{"Range int", nd("Range"), 13, []*ir.Tensor{i64(scalar, 0), i64(scalar, 10), i64(scalar, 3)}, i64(d(4), 0, 3, 6, 9)},
		{"Range down", nd("Range"), 13, []*ir.Tensor{i64(scalar, 10), i64(scalar, 0), i64(scalar, -3)}, i64(d(4), 10, 7, 4, 1)},
		{"Range empty", nd("Range"), 13, []*ir.Tensor{i64(scalar, 5), i64(scalar, 0), i64(scalar, 1)}, i64(d(0))},
		{"Range float", nd("Range"), 13, []*ir.Tensor{f32(scalar, 0), f32(scalar, 1), f32(scalar, 0.25)}, f32(d(4), 0, 0.25, 0.5, 0.75)},
		{"Range delta 0", nd("Range"), 13, []*ir.Tensor{i64(scalar, 0), i64(scalar, 1), i64(scalar, 0)}, nil},
	})
}

func TestCompareLogic(t *testing.T) {
	a := i64(d(3), 1, 2, 3)
	two := i64(scalar, 2)
	nan := float32(math.NaN())
	runCases(t, []evalCase{
		{"Equal", nd("Equal"), 13, []*ir.Tensor{a, two}, bools(d(3), false, true, false)},
		{"Less", nd("Less"), 13, []*ir.Tensor{a, two}, bools(d(3), true, false, false)},
		{"Greater", nd("Greater"), 13, []*ir.Tensor{a, two}, bools(d(3), false, false, true)},
		{"LessOrEqual", nd("LessOrEqual"), 13, []*ir.Tensor{a, two}, bools(d(3), true, true, false)},
		{"GreaterOrEqual", nd("GreaterOrEqual"), 13, []*ir.Tensor{a, two}, bools(d(3), false, true, true)},
		{"Less float NaN", nd("Less"), 13, []*ir.Tensor{f32(d(2), 1, nan), f32(d(1), 2)}, bools(d(2), true, false)},
		{"Equal float NaN", nd("Equal"), 13, []*ir.Tensor{f32(d(1), nan), f32(d(1), nan)}, bools(d(1), false)},
		{"Equal bool", nd("Equal"), 13, []*ir.Tensor{bools(d(2), true, false), bools(d(1), true)}, bools(d(2), true, false)},
		{"Equal broadcast 2-D", nd("Equal"), 13, []*ir.Tensor{i64(d(2, 1), 1, 2), i64(d(1, 2), 2, 1)}, bools(d(2, 2), false, true, true, false)},
		{"Equal mixed", nd("Equal"), 13, []*ir.Tensor{a, i32(d(1), 1)}, nil},
		{"Not", nd("Not"), 13, []*ir.Tensor{bools(d(2), true, false)}, bools(d(2), false, true)},
		{"And", nd("And"), 13, []*ir.Tensor{bools(d(2), true, true), bools(d(2), true, false)}, bools(d(2), true, false)},
		{"Or", nd("Or"), 13, []*ir.Tensor{bools(d(2), false, false), bools(d(2), true, false)}, bools(d(2), true, false)},
		{"And on ints", nd("And"), 13, []*ir.Tensor{a, a}, nil},
	})
}

func TestArithmetic(t *testing.T) {
	x := f32(d(2, 1), 1, 2)
	y := f32(d(3), 10, 20, 30)
	nan := float32(math.NaN())
	// float32 results computed with float32 operations.
	a, b := float32(0.1), float32(0.2)
	runCases(t, []evalCase{
		{"Add broadcast", nd("Add"), 13, []*ir.Tensor{x, y}, f32(d(2, 3), 11, 21, 31, 12, 22, 32)},
		{"Add float32 rounding", nd("Add"), 13, []*ir.Tensor{f32(d(1), a), f32(d(1), b)}, f32(d(1), a+b)},
		{"Sub", nd("Sub"), 13, []*ir.Tensor{f32(scalar, 1), x}, f32(d(2, 1), 0, -1)},
		{"Mul", nd("Mul"), 13, []*ir.Tensor{i64(d(2), 3, -4), i64(scalar, 5)}, i64(d(2), 15, -20)},
		{"Mul int32 wraps", nd("Mul"), 13, []*ir.Tensor{i32(d(1), 1<<30), i32(d(1), 4)}, i32(d(1), 0)},
		{"Div float", nd("Div"), 13, []*ir.Tensor{f32(d(1), 1), f32(d(1), 3)}, f32(d(1), float32(1)/float32(3))},
		{"Div int truncates", nd("Div"), 13, []*ir.Tensor{i64(d(2), 7, -7), i64(scalar, 2)}, i64(d(2), 3, -3)},
		{"Div int by 0", nd("Div"), 13, []*ir.Tensor{i64(d(1), 7), i64(scalar, 0)}, nil},
		{"Add bool refused", nd("Add"), 13, []*ir.Tensor{bools(d(1), true), bools(d(1), true)}, nil},
		// float16: widened to float32, computed, rounded once (ORT's CPU kernels alike).
		{"Add float16", nd("Add"), 13, []*ir.Tensor{f16(d(1), 0x3c00), f16(d(1), 0x3c00)}, f16(d(1), 0x4000)},
		{"Add float16 rounds to even", nd("Add"), 13, []*ir.Tensor{f16(d(1), 0x6800), f16(d(1), 0x3c00)}, f16(d(1), 0x6800)},
		{"Pow float16 sqrt", nd("Pow"), 13, []*ir.Tensor{f16(d(1), 0x4800), f16(scalar, 0x3800)}, f16(d(1), 0x41a8)},
		{"Div float16", nd("Div"), 13, []*ir.Tensor{f16(d(1), 0x3c00), f16(d(1), 0x4200)}, f16(d(1), 0x3555)},
		{"Add float16 float32 refused", nd("Add"), 13, []*ir.Tensor{half(d(1), 1), f32(d(1), 1)}, nil},
		{"Pow float16 float32 exponent", nd("Pow"), 13, []*ir.Tensor{half(d(1), 3), f32(scalar, 2)}, half(d(1), 9)},
		{"Add bad broadcast", nd("Add"), 13, []*ir.Tensor{f32(d(2), 1, 2), y}, nil},
		{"Mod int", nd("Mod"), 13, []*ir.Tensor{i64(d(4), -7, 7, -7, 7), i64(d(4), 3, 3, -3, -3)}, i64(d(4), 2, 1, -1, -2)},
		{"Mod fmod", nd("Mod", ir.IntAttr("fmod", 1)), 13, []*ir.Tensor{i64(d(2), -7, 7), i64(scalar, 3)}, i64(d(2), -1, 1)},
		{"Mod float", nd("Mod", ir.IntAttr("fmod", 1)), 13, []*ir.Tensor{f32(d(2), -7.5, 7.5), f32(scalar, 2)}, f32(d(2), -1.5, 1.5)},
		{"Mod float needs fmod", nd("Mod"), 13, []*ir.Tensor{f32(d(1), 1), f32(d(1), 2)}, nil},
		{"Pow square", nd("Pow"), 13, []*ir.Tensor{f32(d(2), 3, 0.1), f32(scalar, 2)}, f32(d(2), 9, float32(0.1)*float32(0.1))},
		{"Pow int exponent", nd("Pow"), 13, []*ir.Tensor{f32(d(1), 2), i64(scalar, 3)}, f32(d(1), 8)},
		{"Pow int", nd("Pow"), 13, []*ir.Tensor{i64(d(1), 2), i64(scalar, 10)}, i64(d(1), 1024)},
		{"Pow sqrt", nd("Pow"), 13, []*ir.Tensor{f32(d(1), 4), f32(scalar, 0.5)}, f32(d(1), 2)},
		{"Min", nd("Min"), 13, []*ir.Tensor{i64(d(3), 1, 5, 3), i64(scalar, 2), i64(d(1), 4)}, i64(d(3), 1, 2, 2)},
		{"Max broadcast", nd("Max"), 13, []*ir.Tensor{x, y}, f32(d(2, 3), 10, 20, 30, 10, 20, 30)},
		{"Max NaN refused", nd("Max"), 13, []*ir.Tensor{f32(d(1), nan), f32(d(1), 1)}, nil},
		{"Clip float", nd("Clip"), 13, []*ir.Tensor{f32(d(3), -5, 0.5, 5), f32(scalar, -1), f32(scalar, 1)}, f32(d(3), -1, 0.5, 1)},
		{"Clip max only", nd("Clip"), 13, []*ir.Tensor{f32(d(2), -5, 5), nil, f32(scalar, 1)}, f32(d(2), -5, 1)},
		{"Clip int", nd("Clip"), 12, []*ir.Tensor{i64(d(3), -300, 7, 300), i64(scalar, -255), i64(scalar, 255)}, i64(d(3), -255, 7, 255)},
		{"Clip attrs", nd("Clip", ir.FloatAttr("min", 0), ir.FloatAttr("max", 6)), 6, []*ir.Tensor{f32(d(3), -1, 3, 7)}, f32(d(3), 0, 3, 6)},
		{"Clip min>max", nd("Clip"), 13, []*ir.Tensor{f32(d(1), 0), f32(scalar, 2), f32(scalar, 1)}, f32(d(1), 1)},
	})
}

func TestUnary(t *testing.T) {
	v := f32(d(4), -1.5, -0.5, 0.5, 2)
	r := func(f func(float64) float64, xs ...float32) []float32 {
		out := make([]float32, len(xs))
		for i, x := range xs {
			out[i] = float32(f(float64(x)))
		}
		return out
	}
	runCases(t, []evalCase{
		{"Neg", nd("Neg"), 13, []*ir.Tensor{i64(d(2), 1, -2)}, i64(d(2), -1, 2)},
		{"Abs", nd("Abs"), 13, []*ir.Tensor{v}, f32(d(4), 1.5, 0.5, 0.5, 2)},
		{"Abs int", nd("Abs"), 13, []*ir.Tensor{i64(d(2), -3, 3)}, i64(d(2), 3, 3)},
		{"Sign", nd("Sign"), 13, []*ir.Tensor{f32(d(3), -2, 0, 3)}, f32(d(3), -1, 0, 1)},
		{"Sign int", nd("Sign"), 13, []*ir.Tensor{i64(d(3), -2, 0, 3)}, i64(d(3), -1, 0, 1)},
		{"Ceil", nd("Ceil"), 13, []*ir.Tensor{v}, f32(d(4), -1, float32(math.Copysign(0, -1)), 1, 2)},
		{"Floor", nd("Floor"), 13, []*ir.Tensor{v}, f32(d(4), -2, -1, 0, 2)},
		{"Round half to even", nd("Round"), 13, []*ir.Tensor{f32(d(5), -2.5, -1.5, 0.5, 1.5, 2.4)}, f32(d(5), -2, -2, 0, 2, 2)},
		{"Reciprocal", nd("Reciprocal"), 13, []*ir.Tensor{f32(d(3), 4, -0.5, 3)}, f32(d(3), 0.25, -2, float32(1.0/3))},
		{"Sqrt", nd("Sqrt"), 13, []*ir.Tensor{f32(d(2), 4, 48)}, f32(d(2), 2, float32(math.Sqrt(48)))},
		{"Log", nd("Log"), 13, []*ir.Tensor{f32(d(2), 1, 2)}, f32(d(2), r(math.Log, 1, 2)...)},
		{"Exp", nd("Exp"), 13, []*ir.Tensor{f32(d(2), 0, 1)}, f32(d(2), r(math.Exp, 0, 1)...)},
		{"Erf", nd("Erf"), 13, []*ir.Tensor{f32(d(2), 0, 0.5)}, f32(d(2), r(math.Erf, 0, 0.5)...)},
		{"Tanh", nd("Tanh"), 13, []*ir.Tensor{f32(d(2), 0, 0.5)}, f32(d(2), r(math.Tanh, 0, 0.5)...)},
		{"Sigmoid", nd("Sigmoid"), 13, []*ir.Tensor{f32(d(1), 0)}, f32(d(1), 0.5)},
		{"Sqrt double", nd("Sqrt"), 13, []*ir.Tensor{f64(d(1), 2)}, f64(d(1), math.Sqrt2)},
		{"Sqrt int refused", nd("Sqrt"), 13, []*ir.Tensor{i64(d(1), 4)}, nil},
	})
}

func TestReduceScanMatMul(t *testing.T) {
	m := f32(d(2, 3), 1, 2, 3, 4, 5, 6)
	runCases(t, []evalCase{
		{"CumSum", nd("CumSum"), 13, []*ir.Tensor{i64(d(3), 1, 2, 3), i64(scalar, 0)}, i64(d(3), 1, 3, 6)},
		{"CumSum exclusive", nd("CumSum", ir.IntAttr("exclusive", 1)), 13, []*ir.Tensor{i64(d(3), 1, 2, 3), i32(scalar, 0)}, i64(d(3), 0, 1, 3)},
		{"CumSum reverse", nd("CumSum", ir.IntAttr("reverse", 1)), 13, []*ir.Tensor{i64(d(3), 1, 2, 3), i64(scalar, -1)}, i64(d(3), 6, 5, 3)},
		{"CumSum both", nd("CumSum", ir.IntAttr("reverse", 1), ir.IntAttr("exclusive", 1)), 13, []*ir.Tensor{i64(d(3), 1, 2, 3), i64(scalar, 0)}, i64(d(3), 5, 3, 0)},
		{"CumSum axis 1", nd("CumSum"), 13, []*ir.Tensor{m, i64(scalar, 1)}, f32(d(2, 3), 1, 3, 6, 4, 9, 15)},
		{"ReduceMean keepdims", nd("ReduceMean", ir.IntsAttr("axes", -1)), 13, []*ir.Tensor{m}, f32(d(2, 1), 2, 5)},
		{"ReduceMean all", nd("ReduceMean", ir.IntAttr("keepdims", 0)), 13, []*ir.Tensor{m}, f32(scalar, 3.5)},
		{"ReduceSum input axes", nd("ReduceSum", ir.IntAttr("keepdims", 0)), 13, []*ir.Tensor{m, i64(d(1), 0)}, f32(d(3), 5, 7, 9)},
		{"ReduceSum attr axes", nd("ReduceSum", ir.IntsAttr("axes", 0)), 11, []*ir.Tensor{m}, f32(d(1, 3), 5, 7, 9)},
		{"ReduceSum noop", nd("ReduceSum", ir.IntAttr("noop_with_empty_axes", 1)), 13, []*ir.Tensor{m}, m},
		{"ReduceProd", nd("ReduceProd", ir.IntsAttr("axes", 1), ir.IntAttr("keepdims", 0)), 13, []*ir.Tensor{i64(d(2, 2), 2, 3, 4, 5)}, i64(d(2), 6, 20)},
		{"ReduceMax", nd("ReduceMax", ir.IntAttr("keepdims", 0)), 13, []*ir.Tensor{m, i64(d(1), 1)}, f32(scalar, 6)}, // axes input ignored before 18
		{"ReduceMin input axes at 18", nd("ReduceMin", ir.IntAttr("keepdims", 0)), 18, []*ir.Tensor{m, i64(d(1), 1)}, f32(d(2), 1, 4)},
		{"ReduceMean int", nd("ReduceMean", ir.IntAttr("keepdims", 0)), 13, []*ir.Tensor{i64(d(2), 1, 2)}, i64(scalar, 1)},
		{"MatMul", nd("MatMul"), 13, []*ir.Tensor{m, f32(d(3, 2), 1, 0, 0, 1, 1, 1)}, f32(d(2, 2), 4, 5, 10, 11)},
		{"MatMul batch x vector", nd("MatMul"), 13, []*ir.Tensor{f32(d(2, 1, 2), 1, 2, 3, 4), f32(d(2), 1, 1)}, f32(d(2, 1), 3, 7)},
		{"MatMul vectors", nd("MatMul"), 13, []*ir.Tensor{i64(d(3), 1, 2, 3), i64(d(3), 4, 5, 6)}, i64(scalar, 32)},
		{"MatMul broadcast batch", nd("MatMul"), 13, []*ir.Tensor{i64(d(2, 1, 1), 1, 2), i64(d(1, 2), 3, 4)}, i64(d(2, 1, 2), 3, 4, 6, 8)},
		{"MatMul mismatch", nd("MatMul"), 13, []*ir.Tensor{m, m}, nil},
		{"Gemm", nd("Gemm"), 13, []*ir.Tensor{m, f32(d(3, 2), 1, 0, 0, 1, 1, 0)}, f32(d(2, 2), 4, 2, 10, 5)},
		{"Gemm transB alpha beta", nd("Gemm", ir.IntAttr("transB", 1), ir.FloatAttr("alpha", 2), ir.FloatAttr("beta", 0.5)), 13,
			[]*ir.Tensor{m, f32(d(2, 3), 1, 0, 1, 0, 1, 0), f32(d(2), 1, 2)}, f32(d(2, 2), 8.5, 5, 20.5, 11)},
		{"Gemm transA", nd("Gemm", ir.IntAttr("transA", 1)), 13, []*ir.Tensor{f32(d(3, 2), 1, 4, 2, 5, 3, 6), f32(d(3, 1), 1, 1, 1)}, f32(d(2, 1), 6, 15)},
		{"Gemm vector", nd("Gemm"), 13, []*ir.Tensor{f32(d(3), 1, 2, 3), m}, nil},
	})
}

// Float16 and bfloat16 MatMul and reductions sum in float32 and round once (2048+1+1 is
// 2050, where float16 sums would stay at 2048), as ONNX Runtime's CPU provider does for
// float16; fold's ORT tests check the bits against it.
func TestHalfReduceMatMul(t *testing.T) {
	big := half(d(3), 2048, 1, 1)
	x := half(d(2, 3), 1, 2, 3, 4, 5, 6.5)
	keep0 := ir.IntAttr("keepdims", 0)
	runCases(t, []evalCase{
		{"MatMul sums in float32", nd("MatMul"), 13, []*ir.Tensor{big, half(d(3), 1, 1, 1)}, half(scalar, 2050)},
		{"MatMul odd shapes", nd("MatMul"), 13, []*ir.Tensor{x, half(d(3, 1), 1, 0.5, 0.25)}, half(d(2, 1), 2.75, 8.125)},
		{"MatMul broadcast batch", nd("MatMul"), 13, []*ir.Tensor{half(d(2, 1, 1, 2), 1, 2, 3, 4), half(d(3, 2, 1), 1, 1, 1, 0, 0, 1)},
			half(d(2, 3, 1, 1), 3, 1, 2, 7, 3, 4)},
		{"MatMul rounds once", nd("MatMul"), 13, []*ir.Tensor{half(d(1, 2), 2048, 1), half(d(2, 1), 1, 1)}, half(d(1, 1), 2048)}, // 2049 ties to even
		{"MatMul mixed types", nd("MatMul"), 13, []*ir.Tensor{big, f32(d(3), 1, 1, 1)}, nil},
		{"ReduceSum sums in float32", nd("ReduceSum", keep0), 13, []*ir.Tensor{big, i64(d(1), 0)}, half(scalar, 2050)},
		{"ReduceSum keepdims", nd("ReduceSum"), 13, []*ir.Tensor{x, i64(d(1), -1)}, half(d(2, 1), 6, 15.5)},
		{"ReduceSum all", nd("ReduceSum", keep0), 13, []*ir.Tensor{x}, half(scalar, 21.5)},
		{"ReduceMean attr axes", nd("ReduceMean", ir.IntsAttr("axes", 0)), 13, []*ir.Tensor{x}, half(d(1, 3), 2.5, 3.5, 4.75)},
		{"ReduceMean input axes at 18", nd("ReduceMean", keep0), 18, []*ir.Tensor{x, i64(d(1), 1)}, half(d(2), 2, 15.5/3)},
		{"ReduceMean sums in float32", nd("ReduceMean", keep0), 18, []*ir.Tensor{half(d(4), 2048, 1, 1, 1), i64(d(1), 0)}, half(scalar, 512.75)},
		{"ReduceMax", nd("ReduceMax", keep0), 18, []*ir.Tensor{x, i64(d(1), 0)}, half(d(3), 4, 5, 6.5)},
		{"ReduceMin keepdims", nd("ReduceMin", ir.IntsAttr("axes", 1)), 13, []*ir.Tensor{x}, half(d(2, 1), 1, 4)},
		{"ReduceProd", nd("ReduceProd", keep0), 18, []*ir.Tensor{x, i64(d(1), 1)}, half(d(2), 6, 130)},
		{"ReduceMax NaN refused", nd("ReduceMax"), 18, []*ir.Tensor{half(d(2), float32(math.NaN()), 1)}, nil},
		// bfloat16 alike: 256+1+1 is 258, where bfloat16 sums stay at 256.
		{"MatMul bfloat16", nd("MatMul"), 13, []*ir.Tensor{bf16(d(3), 256, 1, 1), bf16(d(3), 1, 1, 1)}, bf16(scalar, 258)},
		{"ReduceSum bfloat16", nd("ReduceSum", keep0), 18, []*ir.Tensor{bf16(d(2, 3), 256, 1, 1, 1, 2, 3)}, bf16(scalar, 264)},
		{"ReduceMean bfloat16", nd("ReduceMean", keep0), 18, []*ir.Tensor{bf16(d(2, 3), 256, 1, 1, 1, 2, 3), i64(d(1), 1)}, bf16(d(2), 86, 2)},
		{"Add bfloat16", nd("Add"), 13, []*ir.Tensor{bf16(d(1), 256), bf16(d(1), 1)}, bf16(d(1), 256)}, // 257 ties to even
		{"Add bfloat16 float16 refused", nd("Add"), 13, []*ir.Tensor{bf16(d(1), 1), half(d(1), 1)}, nil},
	})
}

func TestSupportedAndLimits(t *testing.T) {
	for _, op := range []string{"Shape", "Gather", "Slice", "Cast", "ReduceMean", "MatMul", "Sigmoid"} {
		if !Supported(op) {
			t.Errorf("%s not supported", op)
		}
	}
	for _, op := range []string{"Softmax", "RandomNormal", "If", "LayerNormalization"} {
		if Supported(op) {
			t.Errorf("%s supported", op)
		}
	}
	_, err := EvalLimit(nd("ConstantOfShape"), []*ir.Tensor{i64(d(2), 1000, 1000)}, 13, 100)
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("want ErrTooLarge, got %v", err)
	}
	if _, err := Eval(&ir.Node{OpType: "Add", Domain: "com.microsoft"}, []*ir.Tensor{i64(d(1), 1), i64(d(1), 1)}, 13); err == nil {
		t.Error("contrib domain accepted")
	}
	// A node with two declared outputs gets two slots back.
	g := ir.NewGraph("g")
	x, _ := g.AddInitializer("x", i64(d(1), 1))
	n := g.Add("Identity", []*ir.Value{x}, 1, "y")
	out, err := Eval(n, []*ir.Tensor{x.Const}, 13)
	if err != nil || len(out) != 1 {
		t.Fatalf("Eval in graph: %v %v", out, err)
	}
}

func TestFloat32ToHalf(t *testing.T) {
	for _, f := range []float32{0, 1, -1, 0.1, 65504, 6.1035156e-05, 6.0975552e-05, 1e-7, 2049, 2051, 0.33325195} {
		h := ndarray.Float32ToHalf(f)
		back := ir.HalfToFloat32(h)
		// The nearest half: no other half is closer.
		for _, n := range []uint16{h - 1, h + 1} {
			o := ir.HalfToFloat32(n)
			if math.Abs(float64(o-f)) < math.Abs(float64(back-f)) {
				t.Errorf("%v -> %v (0x%04x), but 0x%04x = %v is closer", f, back, h, n, o)
			}
		}
	}
	if h := ndarray.Float32ToHalf(2049); h != 0x6800 { // tie to even: 2048
		t.Errorf("2049 -> 0x%04x", h)
	}
	if h := ndarray.Float32ToHalf(2051); h != 0x6802 { // tie to even: 2052
		t.Errorf("2051 -> 0x%04x", h)
	}
}

// TestTileHugeAxisBehindZero: a zero-sized axis must not let a huge repeat allocate its
// index list.
func TestTileHugeAxisBehindZero(t *testing.T) {
	g := ir.NewGraph("g")
	n := g.Add("Tile", nil, 1, "y")
	x := ir.NewTensor(ir.Float, []int64{0, 2}, []byte{})
	reps := ir.Int64Tensor([]int64{2}, []int64{1, 1 << 40})
	if _, err := EvalLimit(n, []*ir.Tensor{x, reps}, 13, 1<<20); err == nil {
		t.Fatal("Tile of [0,2] by [1, 2^40] was evaluated; want a size error")
	}
}

// Trilu keeps a triangle of the last two axes from diagonal k and zeroes the rest.
func TestTrilu(t *testing.T) {
	x := f32(d(1, 3, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9)
	runCases(t, []evalCase{
		{"upper", nd("Trilu"), 14, []*ir.Tensor{x}, f32(d(1, 3, 3), 1, 2, 3, 0, 5, 6, 0, 0, 9)},
		{"upper k=1", nd("Trilu"), 14, []*ir.Tensor{x, i64(scalar, 1)}, f32(d(1, 3, 3), 0, 2, 3, 0, 0, 6, 0, 0, 0)},
		{"lower", nd("Trilu", ir.IntAttr("upper", 0)), 14, []*ir.Tensor{x}, f32(d(1, 3, 3), 1, 0, 0, 4, 5, 0, 7, 8, 9)},
		{"lower k=-1", nd("Trilu", ir.IntAttr("upper", 0)), 14, []*ir.Tensor{x, i64(scalar, -1)}, f32(d(1, 3, 3), 0, 0, 0, 4, 0, 0, 7, 8, 0)},
		{"rank 1", nd("Trilu"), 14, []*ir.Tensor{f32(d(3), 1, 2, 3)}, nil},
	})
}

// TestSplit: the sizes from the input (opset 13), the attribute (before 13) or equal
// parts (the last one smaller at opset 18), on a negative axis; sizes that do not add up
// are refused.
func TestSplit(t *testing.T) {
	m := f32(d(2, 3), 1, 2, 3, 4, 5, 6)
	cases := []struct {
		name  string
		outs  int
		attrs []*ir.Attr
		in    []*ir.Tensor
		opset int64
		want  []*ir.Tensor // nil: an error
	}{
		{"input sizes", 2, []*ir.Attr{ir.IntAttr("axis", -1)}, []*ir.Tensor{m, i64(d(2), 1, 2)}, 13,
			[]*ir.Tensor{f32(d(2, 1), 1, 4), f32(d(2, 2), 2, 3, 5, 6)}},
		{"attribute sizes", 2, []*ir.Attr{ir.IntsAttr("split", 2, 1), ir.IntAttr("axis", 1)}, []*ir.Tensor{m}, 11,
			[]*ir.Tensor{f32(d(2, 2), 1, 2, 4, 5), f32(d(2, 1), 3, 6)}},
		{"equal parts", 2, nil, []*ir.Tensor{m}, 13, []*ir.Tensor{f32(d(1, 3), 1, 2, 3), f32(d(1, 3), 4, 5, 6)}},
		{"uneven parts at 18", 2, []*ir.Attr{ir.IntAttr("axis", 1), ir.IntAttr("num_outputs", 2)}, []*ir.Tensor{m}, 18,
			[]*ir.Tensor{f32(d(2, 2), 1, 2, 4, 5), f32(d(2, 1), 3, 6)}},
		{"uneven parts at 13", 2, []*ir.Attr{ir.IntAttr("axis", 1)}, []*ir.Tensor{m}, 13, nil},
		{"sizes off", 2, []*ir.Attr{ir.IntAttr("axis", 1)}, []*ir.Tensor{m, i64(d(2), 1, 1)}, 13, nil},
	}
	for _, c := range cases {
		g := ir.NewGraph("g")
		n := g.Add("Split", nil, c.outs, "y", c.attrs...)
		got, err := Eval(n, c.in, c.opset)
		if c.want == nil {
			if err == nil {
				t.Errorf("%s: evaluated; want an error", c.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		for i, w := range c.want {
			a, _ := got[i].Float32s()
			b, _ := w.Float32s()
			if !slices.Equal(got[i].Dims, w.Dims) || !slices.Equal(a, b) {
				t.Errorf("%s: output %d is %v %v, want %v %v", c.name, i, got[i].Dims, a, w.Dims, b)
			}
		}
	}
}
