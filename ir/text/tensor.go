package text

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unsafe"
	"weak"

	"github.com/qcc-dev/qcc/ir"
)

// elemKind says how one element of a data type is written.
type elemKind int

const (
	kNone     elemKind = iota
	kFloat32           // float, and each half of complex64
	kFloat64           // double, and each half of complex128
	kHalf              // float16, written as a decimal float
	kBF16              // bfloat16, written as a decimal float
	kSigned            // signed integers, sub-byte ones unpacked
	kUnsigned          // unsigned integers, bool, and the bit patterns of float8/float4 types
	kString
)

// layout returns how elements of dt are written: the kind, the bits of one written value,
// and how many written values make one element (2 for complex types).
func layout(dt ir.DataType) (elemKind, int, int) {
	switch dt {
	case ir.Float:
		return kFloat32, 32, 1
	case ir.Complex64:
		return kFloat32, 32, 2
	case ir.Double:
		return kFloat64, 64, 1
	case ir.Complex128:
		return kFloat64, 64, 2
	case ir.Float16:
		return kHalf, 16, 1
	case ir.BFloat16:
		return kBF16, 16, 1
	case ir.Int8, ir.Int16, ir.Int32, ir.Int64, ir.Int4, ir.Int2:
		return kSigned, dt.Bits(), 1
	case ir.Uint8, ir.Uint16, ir.Uint32, ir.Uint64, ir.Uint4, ir.Uint2, ir.Bool,
		ir.Float8E4M3FN, ir.Float8E4M3FNUZ, ir.Float8E5M2, ir.Float8E5M2FNUZ, ir.Float8E8M0, ir.Float4E2M1:
		return kUnsigned, dt.Bits(), 1
	case ir.String:
		return kString, 0, 1
	}
	return kNone, 0, 1
}

// getBits reads written value i (bits wide, little-endian, sub-byte values low bits first).
func getBits(b []byte, bits, i int) uint64 {
	switch bits {
	case 8:
		return uint64(b[i])
	case 16:
		return uint64(binary.LittleEndian.Uint16(b[2*i:]))
	case 32:
		return uint64(binary.LittleEndian.Uint32(b[4*i:]))
	case 64:
		return binary.LittleEndian.Uint64(b[8*i:])
	}
	bit := i * bits
	return uint64(b[bit/8]>>(bit%8)) & (1<<bits - 1)
}

func putBits(b []byte, bits, i int, v uint64) {
	switch bits {
	case 8:
		b[i] = byte(v)
	case 16:
		binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
	case 32:
		binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
	case 64:
		binary.LittleEndian.PutUint64(b[8*i:], v)
	default:
		bit := i * bits
		b[bit/8] |= byte(v&(1<<bits-1)) << (bit % 8)
	}
}

// ---- number formatting ----

// floatLook makes a number read as a float literal (it gets a '.' unless it already has
// an exponent or is inf/nan).
func floatLook(s string) string {
	if strings.ContainsAny(s, ".eEn") { // n: inf, nan
		return s
	}
	return s + ".0"
}

func fmtF32(bits uint32) string {
	f := math.Float32frombits(bits)
	switch {
	case f != f:
		if bits>>31 != 0 {
			return "-nan"
		}
		return "nan"
	case math.IsInf(float64(f), 1):
		return "inf"
	case math.IsInf(float64(f), -1):
		return "-inf"
	}
	return strconv.FormatFloat(float64(f), 'g', -1, 32)
}

func fmtF64(bits uint64) string {
	f := math.Float64frombits(bits)
	switch {
	case f != f:
		if bits>>63 != 0 {
			return "-nan"
		}
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func halfToF64(h uint64) float64 { return float64(ir.HalfToFloat32(uint16(h))) }
func bf16ToF64(h uint64) float64 { return float64(math.Float32frombits(uint32(h) << 16)) }

// fmtSmall writes a float16/bfloat16 value as the shortest decimal that reads back to the
// same bits, always in float-literal form (an integer literal would be a bit pattern).
func fmtSmall(bits uint64, kind elemKind) string {
	dec, eb, mb := halfToF64, uint(5), uint(10)
	if kind == kBF16 {
		dec, eb, mb = bf16ToF64, 8, 7
	}
	v := dec(bits)
	switch {
	case v != v:
		if bits>>15 != 0 {
			return "-nan"
		}
		return "nan"
	case math.IsInf(v, 1):
		return "inf"
	case math.IsInf(v, -1):
		return "-inf"
	}
	for prec := 1; prec < 17; prec++ {
		f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', prec, 64), 64)
		if encodeFloat(f, eb, mb) == bits {
			return floatLook(strconv.FormatFloat(f, 'g', -1, 64))
		}
	}
	return floatLook(strconv.FormatFloat(v, 'g', -1, 64))
}

// encodeFloat rounds f to nearest-even in an IEEE-style binary format with eb exponent
// bits and mb mantissa bits (float16: 5,10; bfloat16: 8,7), with subnormals and infinities.
func encodeFloat(f float64, eb, mb uint) uint64 {
	var out uint64
	if math.Signbit(f) {
		out = 1 << (eb + mb)
	}
	expAll := uint64(1)<<eb - 1
	switch {
	case f != f:
		return out | expAll<<mb | 1<<(mb-1)
	case math.IsInf(f, 0):
		return out | expAll<<mb
	case f == 0:
		return out
	}
	a := math.Abs(f)
	bias := 1<<(eb-1) - 1
	fr, e := math.Frexp(a) // a = fr * 2^e, fr in [0.5, 1)
	_ = fr
	e-- // a = m * 2^e with m in [1, 2)
	if e < 1-bias {
		// Subnormal: count units of the smallest subnormal, 2^(1-bias-mb).
		q := math.RoundToEven(math.Ldexp(a, int(mb)+bias-1))
		return out | uint64(q) // q == 1<<mb rounds up into the smallest normal, encoded alike
	}
	q := math.RoundToEven(math.Ldexp(a, int(mb)-e)) // in [2^mb, 2^(mb+1)]
	if q >= float64(uint64(1)<<(mb+1)) {
		q /= 2
		e++
	}
	if e > bias {
		return out | expAll<<mb
	}
	return out | uint64(e+bias)<<mb | (uint64(q) - 1<<mb)
}

// formatElems returns the written values of a tensor's data.
func formatElems(dt ir.DataType, b []byte, n int) ([]string, error) {
	kind, bits, per := layout(dt)
	if kind == kNone || kind == kString {
		return nil, fmt.Errorf("cannot write %s data", dt)
	}
	if int64(len(b)) != dt.ByteSize(int64(n)) {
		return nil, fmt.Errorf("%d bytes of data for %d %s elements", len(b), n, dt)
	}
	out := make([]string, n*per)
	for i := range out {
		v := getBits(b, bits, i)
		switch kind {
		case kFloat32:
			out[i] = fmtF32(uint32(v))
		case kFloat64:
			out[i] = fmtF64(v)
		case kHalf, kBF16:
			out[i] = fmtSmall(v, kind)
		case kSigned:
			out[i] = strconv.FormatInt(int64(v<<(64-bits))>>(64-bits), 10)
		case kUnsigned:
			out[i] = strconv.FormatUint(v, 10)
		}
	}
	return out, nil
}

// ---- number parsing ----

var errRange = errors.New("out of range")

// parseFloatLit reads a float literal (number, inf, infinity or nan, optionally negative).
// special reports nan; the sign of a nan is returned in neg.
func parseFloatLit(s string, bitSize int) (f float64, isNaN, neg bool, err error) {
	l := strings.ToLower(s)
	neg = strings.HasPrefix(l, "-")
	switch strings.TrimPrefix(l, "-") {
	case "nan":
		return 0, true, neg, nil
	case "inf", "infinity":
		if neg {
			return math.Inf(-1), false, neg, nil
		}
		return math.Inf(1), false, neg, nil
	}
	if body := strings.TrimPrefix(l, "-"); body == "" || !isDigit(body[0]) {
		return 0, false, neg, fmt.Errorf("not a number")
	}
	f, err = strconv.ParseFloat(s, bitSize)
	if err != nil {
		return 0, false, neg, errRange
	}
	return f, false, neg, nil
}

func isIntLit(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// parseElem converts one literal into the bits of a written value.
func parseElem(kind elemKind, bits int, dt ir.DataType, s string) (uint64, error) {
	switch kind {
	case kFloat32:
		f, isNaN, neg, err := parseFloatLit(s, 32)
		if err != nil {
			return 0, err
		}
		if isNaN {
			if neg {
				return 0xffc00000, nil
			}
			return 0x7fc00000, nil
		}
		return uint64(math.Float32bits(float32(f))), nil
	case kFloat64:
		f, isNaN, neg, err := parseFloatLit(s, 64)
		if err != nil {
			return 0, err
		}
		if isNaN {
			if neg {
				return 0xfff8000000000000, nil
			}
			return 0x7ff8000000000000, nil
		}
		return math.Float64bits(f), nil
	case kHalf, kBF16:
		if isIntLit(s) { // the bit pattern, as ONNX's printer writes it
			v, err := strconv.ParseUint(s, 10, 16)
			if err != nil {
				return 0, errRange
			}
			return v, nil
		}
		f, isNaN, neg, err := parseFloatLit(s, 64)
		if err != nil {
			return 0, err
		}
		if isNaN {
			f = math.NaN()
			if neg {
				f = math.Copysign(f, -1)
			}
		}
		if kind == kHalf {
			return encodeFloat(f, 5, 10), nil
		}
		return encodeFloat(f, 8, 7), nil
	case kSigned:
		if !isIntLit(s) {
			return 0, fmt.Errorf("not an integer")
		}
		v, err := strconv.ParseInt(s, 10, bits)
		if err != nil {
			return 0, errRange
		}
		return uint64(v) & (1<<bits - 1), nil // 1<<64 - 1 is all ones
	case kUnsigned:
		if !isIntLit(s) || strings.HasPrefix(s, "-") {
			if strings.HasPrefix(s, "-") && isIntLit(s) {
				return 0, errRange
			}
			return 0, fmt.Errorf("not an integer")
		}
		v, err := strconv.ParseUint(s, 10, bits)
		if err != nil {
			return 0, errRange
		}
		return v, nil
	}
	return 0, fmt.Errorf("cannot read %s data", dt)
}

// ---- abbreviated tensors ----

// summary describes data too long to print: a digest of the bytes and the value range.
func summary(t *ir.Tensor) string {
	if s, ok := knownSummary(t); ok {
		return s
	}
	if t.DType == ir.String {
		strs := t.Strings()
		h := sha256.New()
		var n [8]byte
		for _, s := range strs {
			binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
			h.Write(n[:])
			h.Write(s)
		}
		return "sha256=" + hex.EncodeToString(h.Sum(nil)[:8])
	}
	b, err := t.Bytes()
	if err != nil {
		if e := t.External(); e != nil {
			s := "external=" + quote(e.Location) + " offset=" + strconv.FormatInt(e.Offset, 10)
			if e.Length >= 0 {
				s += " length=" + strconv.FormatInt(e.Length, 10)
			}
			return s
		}
		return "unreadable"
	}
	sum := sha256.Sum256(b)
	s := "sha256=" + hex.EncodeToString(sum[:8])
	if lo, hi, ok := valueRange(t.DType, b, t.NumElements()); ok {
		s += " min=" + lo + " max=" + hi
	}
	return s
}

// valueRange formats the smallest and largest value (NaNs ignored) of real numeric data.
func valueRange(dt ir.DataType, b []byte, n int64) (string, string, bool) {
	kind, bits, per := layout(dt)
	if per != 1 || int64(len(b)) != dt.ByteSize(n) || dt.IsFloat() && kind == kUnsigned {
		return "", "", false
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	var ulo, uhi uint64 = math.MaxUint64, 0
	for i := 0; i < int(n); i++ {
		v := getBits(b, bits, i)
		var f float64
		switch kind {
		case kFloat32:
			f = float64(math.Float32frombits(uint32(v)))
		case kFloat64:
			f = math.Float64frombits(v)
		case kHalf:
			f = halfToF64(v)
		case kBF16:
			f = bf16ToF64(v)
		case kSigned:
			f = float64(int64(v<<(64-bits)) >> (64 - bits))
		case kUnsigned:
			ulo, uhi = min(ulo, v), max(uhi, v)
			continue
		default:
			return "", "", false
		}
		if f == f {
			lo, hi = min(lo, f), max(hi, f)
		}
	}
	switch kind {
	case kUnsigned:
		return strconv.FormatUint(ulo, 10), strconv.FormatUint(uhi, 10), n > 0
	case kSigned:
		return strconv.FormatFloat(lo, 'f', -1, 64), strconv.FormatFloat(hi, 'f', -1, 64), n > 0
	}
	if lo > hi {
		return "", "", false
	}
	return fmtRange(lo), fmtRange(hi), true
}

func fmtRange(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	return strconv.FormatFloat(f, 'g', 4, 64)
}

// An abbreviated tensor is read back with zero-filled data. The printer must then write
// the original summary again, so the summary is remembered per tensor (weakly: the entry
// lapses with the tensor) together with the data it was given; once the data is replaced
// the tensor gets a fresh summary. All abbreviated tensors of one parse share one zero
// buffer (tensor data is immutable), so reading back a large model costs little memory.
type abbrevEntry struct {
	tensor  weak.Pointer[ir.Tensor]
	data    unsafe.Pointer // the zero data handed out
	n       int
	summary string
}

var abbrevs sync.Map // uintptr(*ir.Tensor) -> *abbrevEntry

// zeros hands out shared zero-filled data.
type zeros struct {
	bytes []byte
	strs  [][]byte
}

func (z *zeros) abbreviated(dt ir.DataType, dims []int64, summary string) *ir.Tensor {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	var t *ir.Tensor
	var data unsafe.Pointer
	var size int
	if dt == ir.String {
		if int64(len(z.strs)) < n {
			z.strs = make([][]byte, n)
		}
		strs := z.strs[:n:n]
		t = ir.NewStringTensor(dims, strs)
		data, size = unsafe.Pointer(unsafe.SliceData(strs)), int(n)
	} else {
		size64 := dt.ByteSize(n)
		if int64(len(z.bytes)) < size64 {
			z.bytes = make([]byte, max(size64, 64))
		}
		buf := z.bytes[:size64:size64]
		t = ir.NewTensor(dt, dims, buf)
		data, size = unsafe.Pointer(unsafe.SliceData(buf)), int(size64)
	}
	key := uintptr(unsafe.Pointer(t))
	e := &abbrevEntry{tensor: weak.Make(t), data: data, n: size, summary: summary}
	abbrevs.Store(key, e)
	runtime.AddCleanup(t, func(k uintptr) { abbrevs.CompareAndDelete(k, e) }, key)
	return t
}

// knownSummary returns the summary a tensor was read back with, if its data is still the
// zero data it was given.
func knownSummary(t *ir.Tensor) (string, bool) {
	v, ok := abbrevs.Load(uintptr(unsafe.Pointer(t)))
	if !ok {
		return "", false
	}
	e := v.(*abbrevEntry)
	if e.tensor.Value() != t {
		return "", false
	}
	if t.DType == ir.String {
		s := t.Strings()
		if unsafe.Pointer(unsafe.SliceData(s)) != e.data || len(s) != e.n {
			return "", false
		}
		return e.summary, true
	}
	b, err := t.Bytes()
	if err != nil || unsafe.Pointer(unsafe.SliceData(b)) != e.data || len(b) != e.n {
		return "", false
	}
	return e.summary, true
}
