package calib

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
)

// JSONFormat identifies qcc's calibration cache files.
const JSONFormat = "qcc-calib-1"

// Meta describes how a set of ranges was obtained.
type Meta struct {
	Model   string `json:"model,omitempty"`   // model name, e.g. "bert-cls-trained.opset13"
	Method  string `json:"method,omitempty"`  // Method.String()
	Batches int    `json:"batches,omitempty"` // calibration batches
	Data    string `json:"data,omitempty"`    // the data source, as given
}

type jsonCache struct {
	Format string `json:"format"`
	Meta
	Tensors map[string]jsonRange `json:"tensors"`
}

type jsonRange struct {
	Amax  float32 `json:"amax"`
	Scale float32 `json:"scale"` // amax/127, for readers that want the int8 scale
}

// Int8Scale is the symmetric int8 scale of a range: amax/127.
func Int8Scale(amax float32) float32 { return float32(float64(amax) / 127) }

func checkRanges(ranges map[string]float32) error {
	for _, name := range sortedKeys(ranges) {
		a := ranges[name]
		if !(a > 0) || math.IsInf(float64(a), 0) {
			return fmt.Errorf("calib: tensor %q has range %v; ranges must be positive and finite", name, a)
		}
	}
	return nil
}

func sortedKeys(m map[string]float32) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// WriteJSON writes ranges (amax per tensor) as qcc's JSON calibration cache:
//
//	{"format": "qcc-calib-1", "model": ..., "method": ..., "batches": ...,
//	 "tensors": {"name": {"amax": 1.5, "scale": 0.011811024}, ...}}
//
// with sorted keys, so the same ranges always give the same bytes.
func WriteJSON(path string, ranges map[string]float32, meta Meta) error {
	if err := checkRanges(ranges); err != nil {
		return err
	}
	c := jsonCache{Format: JSONFormat, Meta: meta, Tensors: make(map[string]jsonRange, len(ranges))}
	for name, a := range ranges {
		c.Tensors[name] = jsonRange{Amax: a, Scale: Int8Scale(a)}
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("calib: %w", err)
	}
	return ir.WriteFileAtomic(path, append(b, '\n'))
}

// ReadJSON reads a cache written by WriteJSON.
func ReadJSON(path string) (map[string]float32, Meta, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, Meta{}, fmt.Errorf("calib: %w", err)
	}
	var c jsonCache
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, Meta{}, fmt.Errorf("calib: %s: %w", path, err)
	}
	if c.Format != JSONFormat {
		return nil, Meta{}, fmt.Errorf("calib: %s: format %q, want %q", path, c.Format, JSONFormat)
	}
	ranges := make(map[string]float32, len(c.Tensors))
	for name, r := range c.Tensors {
		ranges[name] = r.Amax
	}
	if err := checkRanges(ranges); err != nil {
		return nil, Meta{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return ranges, c.Meta, nil
}

// DefaultTRTHeader is the first line WriteTRT writes when given none: TensorRT 8.6.1's
// entropy calibrator 2, the calibrator that reads such caches most often.
const DefaultTRTHeader = "TRT-8601-EntropyCalibration2"

// WriteTRT writes ranges in TensorRT's calibration-cache text format: the header line
// (e.g. "TRT-8601-EntropyCalibration2"; DefaultTRTHeader when empty), then one line
// "tensor_name: 3c010a14" per tensor, sorted by name, where the hex digits are the bits
// of the float32 scale amax/127, most significant first.
func WriteTRT(path string, ranges map[string]float32, header string) error {
	if header == "" {
		header = DefaultTRTHeader
	}
	if !strings.HasPrefix(header, "TRT-") || strings.ContainsAny(header, "\r\n") {
		return fmt.Errorf("calib: TensorRT cache header %q must be one line starting TRT-", header)
	}
	if err := checkRanges(ranges); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString(header + "\n")
	for _, name := range sortedKeys(ranges) {
		if name == "" || strings.ContainsAny(name, "\r\n") {
			return fmt.Errorf("calib: tensor name %q cannot be written to a TensorRT cache", name)
		}
		fmt.Fprintf(&b, "%s: %08x\n", name, math.Float32bits(Int8Scale(ranges[name])))
	}
	return ir.WriteFileAtomic(path, []byte(b.String()))
}

// ReadTRT reads a TensorRT calibration cache, returning amax (scale*127) per tensor and
// the header line. A range read back from WriteTRT matches the one written to within
// float32 rounding of the division and multiplication by 127 (relative 2e-7).
func ReadTRT(path string) (map[string]float32, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("calib: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	var header string
	ranges := map[string]float32{}
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimRight(sc.Text(), "\r")
		if line == 1 {
			if !strings.HasPrefix(text, "TRT-") {
				return nil, "", fmt.Errorf("calib: %s:1: not a TensorRT calibration cache (the first line should be like %s)", path, DefaultTRTHeader)
			}
			header = text
			continue
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		i := strings.LastIndex(text, ": ")
		if i <= 0 {
			return nil, "", fmt.Errorf("calib: %s:%d: want \"tensor_name: <8 hex digits>\"", path, line)
		}
		name, hex := text[:i], strings.TrimSpace(text[i+2:])
		bits, err := strconv.ParseUint(hex, 16, 32)
		if err != nil {
			return nil, "", fmt.Errorf("calib: %s:%d: %q is not a float32 in hex", path, line, hex)
		}
		scale := math.Float32frombits(uint32(bits))
		if !(scale > 0) || math.IsInf(float64(scale), 0) {
			return nil, "", fmt.Errorf("calib: %s:%d: tensor %q has scale %v", path, line, name, scale)
		}
		if _, dup := ranges[name]; dup {
			return nil, "", fmt.Errorf("calib: %s:%d: tensor %q listed twice", path, line, name)
		}
		ranges[name] = float32(float64(scale) * 127)
	}
	if err := sc.Err(); err != nil {
		return nil, "", fmt.Errorf("calib: %s: %w", path, err)
	}
	if line == 0 {
		return nil, "", fmt.Errorf("calib: %s is empty", path)
	}
	return ranges, header, nil
}
