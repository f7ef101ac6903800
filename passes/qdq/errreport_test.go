package qdq

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
)

// TestErrorReportHandComputed: qdq<report=FILE.json> on the FFN, with fixed ranges, gives
// the figures computed here by hand: the quantized FFN simulated in Go (int8 Q/DQ of x and
// of the GELU output at scale 4/127, the weights per column at max|w|/127, rounding half
// to even), the SQNR and relative error of the GELU's and the FFN's outputs, and the
// cosine similarity of the output with every group on; turning the one group off gives
// the float model back (cosine 1).
func TestErrorReportHandComputed(t *testing.T) {
	orttest.RequireLib(t)
	const rows, seq = 6, 3
	r := rand.New(rand.NewPCG(3, 4))
	x := make([]float32, rows*seq*4)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data.npz")
	if err := npz.Write(data, map[string]*ndarray.Array{"x": ndarray.FromFloat32([]int64{rows, seq, 4}, x)}); err != nil {
		t.Fatal(err)
	}
	m := parse(t, ffn)
	rep, got, b := runReport(t, m, "min-gemm=2;ranges=const:4;data="+data+";batch=2")
	notes := strings.Join(lastStat(rep).Notes, "\n")
	t.Logf("%s\nnotes:\n%s", b, notes)

	// By hand: the float FFN and its quantized form on every row.
	w1, b1 := initFloats(t, m, "w1"), initFloats(t, m, "b1")
	w2, b2 := initFloats(t, m, "w2"), initFloats(t, m, "b2")
	act := float32(4.0 / 127)
	quant := func(v, s float32, lo float64) float64 { // QuantizeLinear then DequantizeLinear
		q := math.Max(lo, math.Min(127, math.RoundToEven(float64(v/s))))
		return float64(float32(q) * s)
	}
	weight := func(w []float32) []float64 { // per column (axis 1 of a [4,4] weight)
		out := make([]float64, len(w))
		for c := 0; c < 4; c++ {
			amax := 0.0
			for k := 0; k < 4; k++ {
				amax = math.Max(amax, math.Abs(float64(w[k*4+c])))
			}
			s := float32(amax / 127)
			for k := 0; k < 4; k++ {
				out[k*4+c] = quant(w[k*4+c], s, -127)
			}
		}
		return out
	}
	f64 := func(w []float32) []float64 {
		out := make([]float64, len(w))
		for i, v := range w {
			out[i] = float64(v)
		}
		return out
	}
	affine := func(in, w []float64, bias []float32) []float64 {
		out := make([]float64, 4)
		for c := range out {
			out[c] = float64(bias[c])
			for k := 0; k < 4; k++ {
				out[c] += in[k] * w[k*4+c]
			}
		}
		return out
	}
	gelu := func(h []float64) []float64 {
		out := make([]float64, len(h))
		for i, v := range h {
			out[i] = v * (1 + math.Erf(v/float64(float32(1.4142135)))) * 0.5
		}
		return out
	}
	w1q, w2q := weight(w1), weight(w2)
	var sig, errSum, dot, nf, nq float64
	for i := 0; i < rows*seq; i++ {
		xf := f64(x[i*4 : i*4+4])
		xq := make([]float64, 4)
		for k := range xq {
			xq[k] = quant(x[i*4+k], act, -128)
		}
		gf, gq := gelu(affine(xf, f64(w1), b1)), gelu(affine(xq, w1q, b1))
		for k := range gf {
			sig += gf[k] * gf[k]
			errSum += (gq[k] - gf[k]) * (gq[k] - gf[k])
			gq[k] = quant(float32(gq[k]), act, -128)
		}
		yf, yq := affine(gf, f64(w2), b2), affine(gq, w2q, b2)
		for k := range yf {
			dot += yf[k] * yq[k]
			nf += yf[k] * yf[k]
			nq += yq[k] * yq[k]
		}
	}
	sqnr, rel, cos := 10*math.Log10(sig/errSum), math.Sqrt(errSum/sig), dot/math.Sqrt(nf*nq)
	t.Logf("by hand: gelu SQNR %.4f dB, relative error %.6f; output cosine %.8f", sqnr, rel, cos)

	if len(got.Blocks) != 1 || got.Blocks[0].Block != "gelu.0" || got.Blocks[0].Output != "gl" || got.Blocks[0].SQNR == nil {
		t.Fatalf("blocks %+v", got.Blocks)
	}
	if g := *got.Blocks[0].SQNR; math.Abs(g-sqnr) > 0.01 {
		t.Errorf("gelu.0 SQNR %.4f dB, by hand %.4f", g, sqnr)
	}
	if g := got.Blocks[0].RelError; math.Abs(g-rel) > 1e-3*rel {
		t.Errorf("gelu.0 relative error %.6f, by hand %.6f", g, rel)
	}
	if got.Measure != "cosine" || got.Rows != rows || math.Abs((1-got.AllOn)-(1-cos)) > 1e-3*(1-cos) {
		t.Errorf("every group on: %s %.8f over %d rows, by hand cosine %.8f over %d", got.Measure, got.AllOn, got.Rows, cos, rows)
	}
	if len(got.Groups) != 1 || got.Groups[0].Group != "layer-1/ffn" || got.Groups[0].Quantizers != 4 ||
		math.Abs(got.Groups[0].Without-1) > 1e-9 || math.Abs(got.Groups[0].Gain-(1-got.AllOn)) > 1e-9 {
		t.Errorf("groups %+v", got.Groups)
	}
	for _, want := range []string{"report: layer-1/ffn", "report: gelu.0", "give budget=D"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q", want)
		}
	}
}

func initFloats(t *testing.T, m *ir.Model, name string) []float32 {
	t.Helper()
	f, err := parse(t, ffn).Graph.Lookup(name).Const.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestErrorReportBudget: with budget=D the report names the groups the search turned
// off as a disable= expression, which, given back to qdq, places the same quantizers; the
// groups are ranked by what turning them off buys.
func TestErrorReportBudget(t *testing.T) {
	orttest.RequireLib(t)
	cache := budgetCache(t)
	m := parse(t, attention)
	_, got, b := runReport(t, m, "min-gemm=2;data=random:4;cache="+cache+";budget=0.01")
	if got.Disable != "^(layer0/attn_out)$" || len(got.Groups) != 2 || got.Groups[0].Group != "layer0/attn_out" || !(got.Groups[0].Gain > got.Groups[1].Gain) {
		t.Fatalf("report:\n%s", b)
	}
	m2 := parse(t, attention)
	if _, err := runPipeline(t, m2, "qdq<min-gemm=2;data=random:4;cache="+cache+";disable="+got.Disable+">"); err != nil {
		t.Fatal(err)
	}
	if a, b := countOp(m, "DequantizeLinear"), countOp(m2, "DequantizeLinear"); a != b || a == 0 {
		t.Errorf("budget placed %d DequantizeLinear, disable=%s %d", a, got.Disable, b)
	}
	// A model quantized already has no float model to measure against.
	out2 := filepath.Join(t.TempDir(), "again.json")
	rep, err := runPipeline(t, m2, "qdq<min-gemm=2;data=random:4;cache="+cache+";report="+out2+">")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(out2); err == nil || !strings.Contains(strings.Join(lastStat(rep).Notes, "\n"), "no float model to measure against") {
		t.Errorf("report over a quantized model: %v %v", err, lastStat(rep).Notes)
	}
}

// runReport runs qdq<opts;report=FILE> on m and returns the pipeline's report and the
// error report it wrote, decoded and as written.
func runReport(t *testing.T, m *ir.Model, opts string) (*pass.Report, ErrorReport, []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "report.json")
	rep, err := runPipeline(t, m, "qdq<"+opts+";report="+out+">")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var got ErrorReport
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	return rep, got, b
}

func countOp(m *ir.Model, op string) int {
	n := 0
	for _, x := range m.Graph.Nodes() {
		if x.OpType == op {
			n++
		}
	}
	return n
}
