package ir

import (
	"math"
	"testing"
)

// Every code decodes to a value that encodes back to the same code (NaN to NaN), and
// the decoded values are the spec's: 448 the largest, 2^-9 the smallest subnormal.
func TestFloat8E4M3FNRoundTrip(t *testing.T) {
	for c := 0; c < 256; c++ {
		b := uint8(c)
		f := Float8E4M3FNToFloat32(b)
		if b&0x7f == 0x7f {
			if !math.IsNaN(float64(f)) {
				t.Errorf("code %#02x decodes to %g, want NaN", b, f)
			}
			if got := Float32ToFloat8E4M3FN(f, true); got&0x7f != 0x7f {
				t.Errorf("NaN encodes to %#02x", got)
			}
			continue
		}
		if got := Float32ToFloat8E4M3FN(f, true); got != b {
			t.Errorf("code %#02x = %g encodes back to %#02x", b, f, got)
		}
	}
	for _, c := range []struct {
		b uint8
		f float32
	}{{0x7e, 448}, {0xfe, -448}, {0x01, 1.0 / 512}, {0x08, 1.0 / 64}, {0x07, 7.0 / 512}, {0x38, 1}, {0x80, float32(math.Copysign(0, -1))}} {
		if got := Float8E4M3FNToFloat32(c.b); got != c.f || math.Signbit(float64(got)) != math.Signbit(float64(c.f)) {
			t.Errorf("code %#02x decodes to %g, want %g", c.b, got, c.f)
		}
	}
}

// Rounding: to nearest, ties to the even code, across the subnormal/normal border, and
// saturation (or NaN) beyond 448.
func TestFloat32ToFloat8E4M3FN(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, c := range []struct {
		f    float32
		sat  bool
		want uint8
	}{
		{1.0625, true, 0x38},      // tie between 1 (even) and 1.125
		{1.1875, true, 0x3a},      // tie between 1.125 and 1.25 (even)
		{1.07, true, 0x39},        // nearer 1.125
		{1.5 / 512, true, 0x02},   // tie between subnormals 1 and 2 (even)
		{2.5 / 512, true, 0x02},   // tie between 2 (even) and 3
		{0.5 / 512, true, 0x00},   // tie between 0 (even) and the smallest subnormal
		{0.51 / 512, true, 0x01},  // just above it
		{7.5 / 512, true, 0x08},   // tie between the largest subnormal and 2^-6 (even)
		{416, true, 0x7d},         // 416 is a code
		{432, true, 0x7e},         // tie between 416 and 448 (even)
		{460, true, 0x7e},         // beyond 448, saturated
		{460, false, 0x7e},        // rounds to 448 (nearer than 480)
		{470, false, 0x7f},        // rounds beyond 448: NaN without saturation
		{-1e9, true, 0xfe},        // saturated to -448
		{inf, true, 0x7e},         // infinity saturates
		{-inf, false, 0xff},       // or is NaN
		{1e-30, true, 0x00},       // underflow to zero
		{-1e-30, true, 0x80},      // keeps the sign
		{-3.0, true, 0xc4},        // -1.5·2^1
		{0.017578125, true, 0x09}, // 1.125·2^-6, the smallest normal above 2^-6
		{240, true, 0x77},         // 1.875·2^7
		{float32(math.NaN()), true, 0x7f},
	} {
		if got := Float32ToFloat8E4M3FN(c.f, c.sat); got != c.want {
			t.Errorf("Float32ToFloat8E4M3FN(%g, %v) = %#02x, want %#02x", c.f, c.sat, got, c.want)
		}
	}
}
