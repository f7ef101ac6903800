package ndarray

import (
	"math"
	"strings"
	"testing"
)

func TestDTypeTable(t *testing.T) {
	tests := []struct {
		dt    DType
		code  int32
		name  string
		onnx  string
		size  int
		descr string
	}{
		{Float32, 1, "float32", "FLOAT", 4, "<f4"},
		{Uint8, 2, "uint8", "UINT8", 1, "|u1"},
		{Int8, 3, "int8", "INT8", 1, "|i1"},
		{Uint16, 4, "uint16", "UINT16", 2, "<u2"},
		{Int16, 5, "int16", "INT16", 2, "<i2"},
		{Int32, 6, "int32", "INT32", 4, "<i4"},
		{Int64, 7, "int64", "INT64", 8, "<i8"},
		{String, 8, "string", "STRING", 0, ""},
		{Bool, 9, "bool", "BOOL", 1, "|b1"},
		{Float16, 10, "float16", "FLOAT16", 2, "<f2"},
		{Float64, 11, "float64", "DOUBLE", 8, "<f8"},
		{Uint32, 12, "uint32", "UINT32", 4, "<u4"},
		{Uint64, 13, "uint64", "UINT64", 8, "<u8"},
		{BFloat16, 16, "bfloat16", "BFLOAT16", 2, ""},
	}
	for _, tc := range tests {
		if int32(tc.dt) != tc.code || tc.dt.String() != tc.name || tc.dt.ONNXName() != tc.onnx ||
			tc.dt.Size() != tc.size || tc.dt.NumpyDescr() != tc.descr {
			t.Errorf("%d: got code %d name %q onnx %q size %d descr %q", tc.code, int32(tc.dt),
				tc.dt.String(), tc.dt.ONNXName(), tc.dt.Size(), tc.dt.NumpyDescr())
		}
		for _, s := range []string{tc.name, tc.onnx, strings.ToUpper(tc.name)} {
			if got, err := ParseDType(s); err != nil || got != tc.dt {
				t.Errorf("ParseDType(%q) = %v, %v", s, got, err)
			}
		}
		if tc.descr != "" {
			if got, ok := FromNumpyDescr(tc.descr); !ok || got != tc.dt {
				t.Errorf("FromNumpyDescr(%q) = %v, %v", tc.descr, got, ok)
			}
		}
	}
	if DType(99).Supported() || DType(99).String() != "dtype(99)" || String.Supported() {
		t.Error("unknown or string dtype reported as supported")
	}
	if _, err := ParseDType("complex64"); err == nil {
		t.Error("ParseDType(complex64) should fail")
	}
	if _, ok := FromNumpyDescr(">f4"); ok {
		t.Error("big-endian descr accepted")
	}
}

func TestNewAndValidate(t *testing.T) {
	a := New(Float16, []int64{2, 3})
	if a.Len() != 6 || len(a.Data) != 12 || a.Validate() != nil {
		t.Fatalf("New: %v len %d bytes %d", a, a.Len(), len(a.Data))
	}
	if s := New(Int64, nil); s.Len() != 1 || len(s.Data) != 8 {
		t.Errorf("scalar: len %d bytes %d", s.Len(), len(s.Data))
	}
	if e := New(Float32, []int64{0, 5}); e.Len() != 0 || len(e.Data) != 0 {
		t.Errorf("empty: len %d", e.Len())
	}
	bad := []*Array{
		nil,
		{DType: Float32, Shape: []int64{2}, Data: make([]byte, 7)},
		{DType: String, Shape: []int64{1}, Data: nil},
		{DType: Int8, Shape: []int64{-1}, Data: nil},
		{DType: Int8, Shape: []int64{math.MaxInt64, 2}, Data: nil},
	}
	for i, b := range bad {
		if b.Validate() == nil {
			t.Errorf("bad[%d] validated", i)
		}
	}
	mustPanic(t, "New(String)", func() { New(String, []int64{1}) })
	mustPanic(t, "FromFloat32 len", func() { FromFloat32([]int64{2}, []float32{1}) })
	mustPanic(t, "Int64s on float", func() { FromFloat32([]int64{1}, []float32{1}).Int64s() })
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	f()
}

func TestConstructorsRoundTrip(t *testing.T) {
	f := FromFloat32([]int64{3}, []float32{1.5, -2, float32(math.Inf(1))})
	if got := f.Float32s(); got[0] != 1.5 || got[1] != -2 || !math.IsInf(float64(got[2]), 1) {
		t.Errorf("Float32s = %v", got)
	}
	i := FromInt64([]int64{2, 1}, []int64{math.MinInt64, 7})
	if got := i.Int64s(); got[0] != math.MinInt64 || got[1] != 7 {
		t.Errorf("Int64s = %v", got)
	}
	if got := FromInt32([]int64{2}, []int32{-3, 4}).Int64s(); got[0] != -3 || got[1] != 4 {
		t.Errorf("int32 Int64s = %v", got)
	}
	if got := FromFloat64([]int64{1}, []float64{0.1}).Float64s(); got[0] != 0.1 {
		t.Errorf("Float64s = %v", got)
	}
	b := FromBool([]int64{2}, []bool{true, false})
	if got := b.Bools(); !got[0] || got[1] {
		t.Errorf("Bools = %v", got)
	}
	if got := b.Int64s(); got[0] != 1 || got[1] != 0 {
		t.Errorf("bool Int64s = %v", got)
	}
	h := FromFloat16([]int64{3}, []float32{1, 0.333333, 65504})
	if got := h.Float32s(); got[0] != 1 || math.Abs(float64(got[1])-0.333333) > 2e-4 || got[2] != 65504 {
		t.Errorf("float16 Float32s = %v", got)
	}
	// Sign extension of narrow signed types.
	raw := &Array{DType: Int8, Shape: []int64{2}, Data: []byte{0xff, 0x7f}}
	if got := raw.Int64s(); got[0] != -1 || got[1] != 127 {
		t.Errorf("int8 Int64s = %v", got)
	}
	raw16 := &Array{DType: Int16, Shape: []int64{1}, Data: []byte{0x00, 0x80}}
	if got := raw16.Float64s(); got[0] != -32768 {
		t.Errorf("int16 Float64s = %v", got)
	}
	bf := &Array{DType: BFloat16, Shape: []int64{1}, Data: []byte{0x80, 0x3f}} // 1.0
	if got := bf.Float32s(); got[0] != 1 {
		t.Errorf("bfloat16 Float32s = %v", got)
	}
	c := f.Clone()
	c.Data[0] ^= 1
	c.Shape[0] = 9
	if f.Data[0] == c.Data[0] || f.Shape[0] != 3 {
		t.Error("Clone shares memory")
	}
}

func TestHalfConversion(t *testing.T) {
	// Every half value must survive decode+encode unchanged (NaNs stay NaN).
	for h := 0; h < 1<<16; h++ {
		f := HalfToFloat32(uint16(h))
		back := Float32ToHalf(f)
		if math.IsNaN(float64(f)) {
			if back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("NaN %#04x re-encoded as %#04x", h, back)
			}
			continue
		}
		if back != uint16(h) {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, back)
		}
	}
	tests := []struct {
		f    float32
		want uint16
	}{
		{65520, 0x7c00},           // rounds up past max half to Inf
		{65519, 0x7bff},           // rounds down to max half
		{1 + 1.0/2048, 0x3c00},    // tie to even (down)
		{1 + 3.0/2048, 0x3c02},    // tie to even (up)
		{5.960464477539063e-8, 1}, // smallest subnormal
		{2.98023223876953e-8, 0},  // half the smallest subnormal: tie to even zero
		{float32(math.Inf(-1)), 0xfc00},
		{-0.0, 0x0000},
	}
	for _, tc := range tests {
		if got := Float32ToHalf(tc.f); got != tc.want {
			t.Errorf("Float32ToHalf(%v) = %#04x, want %#04x", tc.f, got, tc.want)
		}
	}
}

func TestMaxAbsDiff(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	s := []int64{2}
	tests := []struct {
		name string
		a, b *Array
		want float64
		err  string
	}{
		{"equal", FromFloat32(s, []float32{1, 2}), FromFloat32(s, []float32{1, 2}), 0, ""},
		{"float", FromFloat32(s, []float32{1, 2}), FromFloat32(s, []float32{1.5, 1}), 1, ""},
		{"nan both", FromFloat32(s, []float32{nan, 1}), FromFloat32(s, []float32{nan, 1}), 0, ""},
		{"nan one", FromFloat32(s, []float32{nan, 1}), FromFloat32(s, []float32{0, 1}), math.Inf(1), ""},
		{"inf equal", FromFloat32(s, []float32{inf, 1}), FromFloat32(s, []float32{inf, 1}), 0, ""},
		{"inf vs num", FromFloat32(s, []float32{inf, 1}), FromFloat32(s, []float32{1, 1}), math.Inf(1), ""},
		{"double", FromFloat64(s, []float64{1e-9, 0}), FromFloat64(s, []float64{0, 0}), 1e-9, ""},
		{"int64 exact", FromInt64(s, []int64{1 << 60, 0}), FromInt64(s, []int64{1<<60 + 1, 0}), 1, ""},
		{"int64 extremes", FromInt64(s, []int64{math.MaxInt64, 0}), FromInt64(s, []int64{math.MinInt64, 0}), math.Pow(2, 64), ""},
		{"int32", FromInt32(s, []int32{-5, 0}), FromInt32(s, []int32{5, 0}), 10, ""},
		{"bool", FromBool(s, []bool{true, false}), FromBool(s, []bool{false, false}), 1, ""},
		{"empty", New(Float32, []int64{0}), New(Float32, []int64{0}), 0, ""},
		{"dtype", FromFloat32(s, []float32{1, 2}), FromFloat64(s, []float64{1, 2}), 0, "dtype mismatch"},
		{"shape", FromFloat32(s, []float32{1, 2}), FromFloat32([]int64{1, 2}, []float32{1, 2}), 0, "shape mismatch"},
		{"invalid", FromFloat32(s, []float32{1, 2}), &Array{DType: Float32, Shape: s}, 0, "needs 8 bytes"},
	}
	for _, tc := range tests {
		got, err := MaxAbsDiff(tc.a, tc.b)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}

func TestCosineSimilarity(t *testing.T) {
	s := []int64{3}
	tests := []struct {
		a, b []float32
		want float64
	}{
		{[]float32{1, 2, 3}, []float32{2, 4, 6}, 1},
		{[]float32{1, 0, 0}, []float32{0, 1, 0}, 0},
		{[]float32{1, 2, 3}, []float32{-1, -2, -3}, -1},
		{[]float32{0, 0, 0}, []float32{0, 0, 0}, 1},
		{[]float32{0, 0, 0}, []float32{1, 0, 0}, 0},
	}
	for _, tc := range tests {
		got, err := CosineSimilarity(FromFloat32(s, tc.a), FromFloat32(s, tc.b))
		if err != nil || math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("cos(%v, %v) = %v, %v; want %v", tc.a, tc.b, got, err, tc.want)
		}
	}
	if got, _ := CosineSimilarity(FromFloat32(s, []float32{float32(math.NaN()), 0, 0}), FromFloat32(s, []float32{1, 0, 0})); !math.IsNaN(got) {
		t.Errorf("NaN input gave %v", got)
	}
	if _, err := CosineSimilarity(FromFloat32(s, []float32{1, 2, 3}), FromInt64(s, []int64{1, 2, 3})); err == nil {
		t.Error("dtype mismatch accepted")
	}
}
