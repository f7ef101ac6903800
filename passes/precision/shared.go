package precision

import (
	"math"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/quant/calib"
)

// sharedRange is v's range from the float model's statistics an earlier pass shared: its
// own histogram (calib.Shared.Lookup), or for a DequantizeLinear output (which the float model lacks) the range
// the quantization grid gives: of the constant it dequantizes (a weight), or of the
// float range its QuantizeLinear reads, rounded, saturated and dequantized as ORT does.
func sharedRange(sh *calib.Shared, v *ir.Value) (valueRange, bool) {
	if v == nil {
		return valueRange{}, false
	}
	if h := sh.Lookup(v); h != nil {
		return valueRange{abs: h.AbsMax, max: h.Max, known: h.Count > 0}, true
	}
	dq := producer(v)
	if !isStdOp(dq, "DequantizeLinear") || dq.Attr("block_size") != nil {
		return valueRange{}, false
	}
	x, s, zp := dq.Input(0), constTensor(dq.Input(1)), constTensor(dq.Input(2))
	if s == nil || x == nil {
		return valueRange{}, false
	}
	if t := constTensor(x); t != nil {
		return constDQRange(t, s, zp, dq.AttrInt("axis", 1))
	}
	q := producer(x)
	if !isStdOp(q, "QuantizeLinear") || s.NumElements() != 1 || !sameScalar(q.Input(1), dq.Input(1)) || !sameScalar(q.Input(2), dq.Input(2)) {
		return valueRange{}, false
	}
	h := sh.ByQuantizer[q]
	if h == nil {
		h = sh.Lookup(q.Input(0))
	}
	if h == nil {
		return valueRange{}, false
	}
	if h.Count == 0 {
		return valueRange{}, true // nothing seen: unknown, as a calibration would say
	}
	sv, err := s.Float64s()
	if err != nil || q.Attr("output_dtype") != nil {
		return valueRange{}, false
	}
	// The quantized type: the zero point's, else uint8 (QuantizeLinear's default).
	dt := ir.Uint8
	if zp != nil {
		dt = zp.DType
	}
	z := 0.0
	if zp != nil {
		zv, err := zp.Float64s()
		if err != nil || len(zv) != 1 {
			return valueRange{}, false
		}
		z = zv[0]
	}
	lo, ok1 := roundTrip(float32(h.Min), float32(sv[0]), z, dt)
	hi, ok2 := roundTrip(float32(h.Max), float32(sv[0]), z, dt)
	if !ok1 || !ok2 {
		return valueRange{}, false
	}
	return valueRange{abs: math.Max(math.Abs(lo), math.Abs(hi)), max: hi, known: true}, true
}

func isStdOp(n *ir.Node, op string) bool {
	return n != nil && (n.Domain == "" || n.Domain == "ai.onnx") && n.OpType == op
}

// roundTrip is DequantizeLinear(QuantizeLinear(x)) for a per-tensor scale and zero
// point: x/s rounded half to even and saturated to dt's range (float8e4m3fn: rounded to
// it, saturating), then (q - zp)·s in float32. Both are monotone in x, so the extremes of
// the float range give the extremes of the dequantized one.
func roundTrip(x, s float32, zp float64, dt ir.DataType) (float64, bool) {
	v := x / s
	var q float64
	switch dt {
	case ir.Int8, ir.Uint8:
		lo, hi := -128.0, 127.0
		if dt == ir.Uint8 {
			lo, hi = 0, 255
		}
		q = math.Min(hi, math.Max(lo, math.RoundToEven(float64(v))+zp))
	case ir.Float8E4M3FN:
		if zp != 0 {
			return 0, false
		}
		q = float64(ir.Float8E4M3FNToFloat32(ir.Float32ToFloat8E4M3FN(v, true)))
	default:
		return 0, false
	}
	return float64(float32(q-zp) * s), true
}

// constDQRange is the range of DequantizeLinear over a constant: per element (q - zp)·s
// with the scale and zero point of its channel (axis), in float32.
func constDQRange(t, s, zp *ir.Tensor, axis int64) (valueRange, bool) {
	qv, err1 := t.Float64s()
	sv, err2 := s.Float64s()
	if err1 != nil || err2 != nil || len(qv) == 0 {
		return valueRange{}, false
	}
	zv := make([]float64, len(sv))
	if zp != nil {
		z, err := zp.Float64s()
		if err != nil || len(z) != len(sv) {
			return valueRange{}, false
		}
		zv = z
	}
	stride, channels := int64(1), int64(1)
	if len(sv) > 1 {
		if axis < 0 {
			axis += int64(len(t.Dims))
		}
		if axis < 0 || axis >= int64(len(t.Dims)) || t.Dims[axis] != int64(len(sv)) {
			return valueRange{}, false
		}
		for _, d := range t.Dims[axis+1:] {
			stride *= d
		}
		channels = t.Dims[axis]
	}
	r := valueRange{max: math.Inf(-1), known: true}
	for i, q := range qv {
		c := (int64(i) / stride) % channels
		d := float64(float32(q-zv[c]) * float32(sv[c]))
		r.abs, r.max = math.Max(r.abs, math.Abs(d)), math.Max(r.max, d)
	}
	return r, true
}

// sameScalar reports whether a and b are one value, or constant scalars of one type and
// value (a QuantizeLinear and its DequantizeLinear with their own copies of the scale).
func sameScalar(a, b *ir.Value) bool {
	if a == b {
		return true
	}
	ta, tb := constTensor(a), constTensor(b)
	if ta == nil || tb == nil || ta.DType != tb.DType || ta.NumElements() != 1 || tb.NumElements() != 1 {
		return false
	}
	x, err1 := ta.Float64s()
	y, err2 := tb.Float64s()
	return err1 == nil && err2 == nil && x[0] == y[0]
}
