package ir

import "math"

// FLOAT8E4M3FN (ONNX's float8e4m3fn, the "E4M3" of the OCP 8-bit floating point
// specification): 1 sign bit, 4 exponent bits with bias 7, 3 mantissa bits. There is no
// infinity; S.1111.111 (0x7f, 0xff) is NaN, so the largest finite value is S.1111.110 =
// 1.75·2^8 = 448. Exponent 0 holds the subnormals m/8·2^-6, down to 2^-9.
const (
	Float8E4M3FNMax = 448
	float8E4M3NaN   = 0x7f
	float8E4M3Max   = 0x7e // 448
)

// Float32ToFloat8E4M3FN rounds f to the nearest float8e4m3fn value, ties to even, as
// QuantizeLinear-19 does after dividing by the scale. With saturate (QuantizeLinear's
// default), values beyond ±448, infinities included, become ±448; without it they
// become NaN (the format has no infinity). NaN stays NaN; the sign of zero is kept.
func Float32ToFloat8E4M3FN(f float32, saturate bool) uint8 {
	sign := uint8(0)
	if math.Signbit(float64(f)) {
		sign = 0x80
	}
	a := math.Abs(float64(f))
	overflow := func() uint8 {
		if saturate {
			return sign | float8E4M3Max
		}
		return sign | float8E4M3NaN
	}
	switch {
	case math.IsNaN(a):
		return sign | float8E4M3NaN
	case math.IsInf(a, 0):
		return overflow()
	case a < 1.0/64: // below the smallest normal 2^-6: a multiple of 2^-9
		// q in [0, 8]; 8 is the smallest normal, whose code is 8 too (exponent 1).
		return sign | uint8(math.RoundToEven(a*512))
	}
	fr, exp := math.Frexp(a) // a = fr·2^exp, fr in [0.5, 1)
	e := exp - 1             // a = (2fr)·2^e, 2fr in [1, 2)
	m := math.RoundToEven((2*fr - 1) * 8)
	if m == 8 {
		m, e = 0, e+1
	}
	if e > 8 || e == 8 && m == 7 { // beyond 448 (S.1111.111 is NaN)
		return overflow()
	}
	return sign | uint8(e+7)<<3 | uint8(m)
}

// Float8E4M3FNToFloat32 decodes a float8e4m3fn value.
func Float8E4M3FNToFloat32(b uint8) float32 {
	e, m := int(b>>3)&0xf, float64(b&7)
	var v float64
	switch {
	case b&0x7f == float8E4M3NaN:
		v = math.NaN()
	case e == 0:
		v = m / 8 * (1.0 / 64)
	default:
		v = math.Ldexp(1+m/8, e-7)
	}
	if b&0x80 != 0 {
		v = -v
	}
	return float32(v)
}
