package calib

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var sampleRanges = map[string]float32{
	"onnx::MatMul_333":                     1,
	"/bert/embeddings/LayerNorm/Add_1_out": 4.5911,
	"input: with colon":                    127, // scale exactly 1
	"tiny":                                 1e-6,
	"huge":                                 3e4,
}

func TestParseMethod(t *testing.T) {
	for in, want := range map[string]Method{
		"max":              {Kind: Max},
		" Entropy ":        {Kind: Entropy},
		"MSE":              {Kind: MSE},
		"percentile:99.99": {Kind: Percentile, P: 99.99},
		"percentile:100":   {Kind: Percentile, P: 100},
	} {
		got, err := ParseMethod(in)
		if err != nil || got != want {
			t.Errorf("ParseMethod(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, err := ParseMethod(got.String()); err != nil || back != got {
			t.Errorf("ParseMethod(%q.String()) = %v, %v", in, back, err)
		}
	}
	for in, want := range map[string]string{
		"":                 "unknown calibration method",
		"minmax":           "unknown calibration method \"minmax\" (want max, percentile:P",
		"percentile":       "needs the percentile, e.g. percentile:99.99",
		"percentile:":      "needs the percentile",
		"percentile:abc":   "\"abc\" is not a number",
		"percentile:0":     "must be in (0, 100]",
		"percentile:100.5": "must be in (0, 100]",
		"max:3":            "takes no argument",
	} {
		if _, err := ParseMethod(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseMethod(%q) error %v, want it to contain %q", in, err, want)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "calib.json")
	meta := Meta{Model: "bert", Method: "percentile:99.99", Batches: 8, Data: "calib.npz"}
	if err := WriteJSON(p, sampleRanges, meta); err != nil {
		t.Fatal(err)
	}
	got, gotMeta, err := ReadJSON(p)
	if err != nil {
		t.Fatal(err)
	}
	if gotMeta != meta {
		t.Errorf("meta %+v, want %+v", gotMeta, meta)
	}
	if len(got) != len(sampleRanges) {
		t.Errorf("read %d ranges, wrote %d", len(got), len(sampleRanges))
	}
	for k, v := range sampleRanges {
		if got[k] != v {
			t.Errorf("%q: read %v, wrote %v (JSON must round-trip float32 exactly)", k, got[k], v)
		}
	}
	// Deterministic bytes with sorted keys, and the scale beside each amax.
	first, _ := os.ReadFile(p)
	if err := WriteJSON(p, sampleRanges, meta); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(p)
	if !bytes.Equal(first, second) {
		t.Error("two writes of the same ranges differ")
	}
	s := string(first)
	if !strings.Contains(s, `"format": "qcc-calib-1"`) || !strings.Contains(s, `"amax": 127,`) ||
		!strings.Contains(s, `"scale": 1`) || strings.Index(s, `"/bert`) > strings.Index(s, `"huge"`) {
		t.Errorf("unexpected JSON:\n%s", s)
	}
	// Bad input is refused.
	if err := WriteJSON(p, map[string]float32{"z": 0}, meta); err == nil {
		t.Error("zero range written")
	}
	if err := WriteJSON(p, map[string]float32{"n": float32(math.NaN())}, meta); err == nil {
		t.Error("NaN range written")
	}
	os.WriteFile(p, []byte(`{"format": "other", "tensors": {}}`), 0o644)
	if _, _, err := ReadJSON(p); err == nil || !strings.Contains(err.Error(), "format") {
		t.Errorf("wrong format: %v", err)
	}
}

func TestTRTRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "calib.cache")
	if err := WriteTRT(p, sampleRanges, ""); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	// Expected lines computed with Python: struct.pack(">f", float32(amax)/127).hex().
	want := []string{
		"TRT-8601-EntropyCalibration2",
		"/bert/embeddings/LayerNorm/Add_1_out: 3d141270",
		"huge: 436c3871",
		"input: with colon: 3f800000",
		"onnx::MatMul_333: 3c010204",
		"tiny: 3207464a",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("cache:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	got, header, err := ReadTRT(p)
	if err != nil {
		t.Fatal(err)
	}
	if header != DefaultTRTHeader || len(got) != len(sampleRanges) {
		t.Errorf("header %q, %d ranges", header, len(got))
	}
	for k, v := range sampleRanges {
		if d := math.Abs(float64(got[k])-float64(v)) / float64(v); d > 2e-7 {
			t.Errorf("%q: read %v, wrote %v (relative error %.2g)", k, got[k], v, d)
		}
	}
	// A header of the caller's choosing, and a cache as TensorRT writes it.
	if err := WriteTRT(p, map[string]float32{"a": 1}, "TRT-100300-MinMaxCalibration"); err != nil {
		t.Fatal(err)
	}
	if _, h, err := ReadTRT(p); err != nil || h != "TRT-100300-MinMaxCalibration" {
		t.Errorf("custom header: %q %v", h, err)
	}
	os.WriteFile(p, []byte("TRT-8601-EntropyCalibration2\nimages: 3c010a14\n168: 3dc6cf6e\n"), 0o644)
	got, _, err = ReadTRT(p)
	// Big-endian float32 bits (checked with Python's struct.unpack(">f")): 0x3c010a14 is
	// 0.00787594 (amax 1.000244), 0x3dc6cf6e is 0.0970753 (amax 12.32857).
	if err != nil || math.Abs(float64(got["images"])-1.000244) > 1e-5 || math.Abs(float64(got["168"])-12.32857) > 1e-4 {
		t.Errorf("TensorRT-written cache: %v %v", got, err)
	}
	for _, bad := range []string{"", "not a cache\n", "TRT-8601-EntropyCalibration2\nx 3c010a14\n", "TRT-8601-EntropyCalibration2\nx: zz\n", "TRT-8601-EntropyCalibration2\nx: 00000000\n"} {
		os.WriteFile(p, []byte(bad), 0o644)
		if _, _, err := ReadTRT(p); err == nil {
			t.Errorf("ReadTRT accepted %q", bad)
		}
	}
	if err := WriteTRT(p, map[string]float32{"a\nb": 1}, ""); err == nil {
		t.Error("a name with a newline was written")
	}
	if err := WriteTRT(p, map[string]float32{"a": 1}, "bad header"); err == nil {
		t.Error("a header not starting TRT- was written")
	}
}
