package qdq

import (
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	"github.com/qcc-dev/qcc/quant/calib"
	"github.com/qcc-dev/qcc/quant/eval"
)

// attention is one attention layer: groups layer0/qkv (x) and layer0/attn_out (a) under
// policy=linear, plus layer0/attn_matmul under policy=attention.
const attention = `<ir_version: 8, opset_import: ["" : 13]>
attention (float[batch,seq,4] x) => (float[batch,seq,4] y) <
  float[4,4] wq = {-0.0538, 0.411, -0.353, 0.697, -0.162, 0.39, -0.423, -0.459, 0.563, -0.00306, -0.151, 0.41, 0.834, -0.343, 0.367, 0.0348},
  float[4] bq = {-0.262, 0.365, 0.54, 0.142},
  float[4,4] wk = {0.416, 0.899, -0.529, 0.455, -0.0566, 0.376, 0.669, -0.633, -0.517, -0.159, -0.795, -0.271, -0.15, -0.676, 0.438, 0.473},
  float[4] bk = {0.778, 0.0795, 0.785, 0.397},
  float[4,4] wv = {-0.197, -0.278, -0.538, -0.132, -0.33, -0.515, 0.662, -0.488, -0.827, -0.495, -0.865, 0.658, 0.619, -0.325, 0.829, 0.548},
  float[4] bv = {0.24, -0.687, -0.8, -0.674},
  float[4,4] wo = {-0.142, -0.698, 0.632, 0.192, -0.485, 0.891, -0.242, -0.534, -0.012, 0.606, -0.645, -0.203, -0.293, 0.792, 0.898, -0.0631},
  float[4] bo = {0.593, 0.732, 0.207, -0.742},
  int64[4] split = {0, 0, 2, 2},
  int64[3] merge = {0, 0, 4},
  float sqrtd = {1.4142135}
> {
  ["/L/q/MatMul"] qm = MatMul (x, wq)
  ["/L/q/Add"] qa = Add (bq, qm)
  ["/L/k/MatMul"] km = MatMul (x, wk)
  ["/L/k/Add"] ka = Add (bk, km)
  ["/L/v/MatMul"] vm = MatMul (x, wv)
  ["/L/v/Add"] va = Add (bv, vm)
  ["/L/Reshape_q"] qr = Reshape (qa, split)
  ["/L/Transpose_q"] qt = Transpose <perm = [0, 2, 1, 3]> (qr)
  ["/L/Reshape_k"] kr = Reshape (ka, split)
  ["/L/Transpose_k"] kt = Transpose <perm = [0, 2, 3, 1]> (kr)
  ["/L/Reshape_v"] vr = Reshape (va, split)
  ["/L/Transpose_v"] vt = Transpose <perm = [0, 2, 1, 3]> (vr)
  ["/L/MatMul"] s = MatMul (qt, kt)
  ["/L/Div"] sd = Div (s, sqrtd)
  ["/L/Softmax"] p = Softmax <axis = -1> (sd)
  ["/L/MatMul_1"] c = MatMul (p, vt)
  ["/L/Transpose_c"] ct = Transpose <perm = [0, 2, 1, 3]> (c)
  ["/L/Reshape_c"] a = Reshape (ct, merge)
  ["/L/o/MatMul"] om = MatMul (a, wo)
  ["/L/o/Add"] y = Add (bo, om)
}
`

func TestBudgetOptionErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"qdq<budget=2>":       "fraction in [0, 1]",
		"qdq<budget=-0.1>":    "fraction in [0, 1]",
		"qdq<budget=x>":       "fraction in [0, 1]",
		"qdq<eval-batch=-1>":  "non-negative",
		"qdq<pairs=per-node>": "want shared or per-reader",
		"qdq<holdout=1>":      "fraction in [0, 1)",
		"qdq<holdout=-0.5>":   "fraction in [0, 1)",
	} {
		_, err := pass.Parse(spec, []*pass.Pass{Pass})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", spec, err, want)
		}
	}
	_, err := runPipeline(t, parse(t, attention), "qdq<ranges=const:1;eval=e.npz>")
	if err == nil || !strings.Contains(err.Error(), "give one of them too") {
		t.Errorf("eval without budget: %v", err)
	}
	_, err = runPipeline(t, parse(t, attention), "qdq<ranges=const:1;report-eval=e.npz>")
	if err == nil || !strings.Contains(err.Error(), "give budget too") {
		t.Errorf("report-eval without budget: %v", err)
	}
}

// TestPairsPerReader: pairs=per-reader gives each reader of an activation its own
// uniquely named pair with the same scale, which the checker accepts.
func TestPairsPerReader(t *testing.T) {
	m := parse(t, attention)
	if _, err := runPipeline(t, m, "qdq<min-gemm=2;ranges=const:12.7;pairs=per-reader>"); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	qs := 0
	for _, n := range m.Graph.Nodes() {
		if names[n.Name] {
			t.Errorf("node name %s twice", n.Name)
		}
		names[n.Name] = true
		if n.OpType != "QuantizeLinear" {
			continue
		}
		qs++
		if n.Input(0).Name != "x" && n.Input(0).Name != "a" {
			t.Errorf("Q on %s", n.Input(0).Name)
		}
		if v, _ := n.Input(1).Const.Float32s(); v[0] != float32(0.1) {
			t.Errorf("%s scale %v", n.Name, v)
		}
		if uses := n.Output(0).Uses(); len(uses) != 1 {
			t.Errorf("%s feeds %d nodes, want 1", n.Name, len(uses))
		}
	}
	if qs != 4 { // x for Q, K and V; a for the output projection
		t.Errorf("%d QuantizeLinear, want 4", qs)
	}
}

// budgetCache writes ranges for the attention model: a good one for x, and for a one
// 100 times too small, which clips the output projection's input and makes
// layer0/attn_out by far the most harmful group.
func budgetCache(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "ranges.json")
	if err := calib.WriteJSON(path, map[string]float32{"x": 4, "a": 0.02}, calib.Meta{Method: "test"}); err != nil {
		t.Fatal(err)
	}
	return path
}

func lastStat(rep *pass.Report) pass.Stat { return rep.Stats[len(rep.Stats)-1] }

// TestBudgetCosine: without eval the budget is a drop in cosine similarity on the
// calibration data. The clipped group goes, the other stays; the search is deterministic,
// reports what it did, and a second run over its output measures nothing and changes
// nothing.
func TestBudgetCosine(t *testing.T) {
	orttest.RequireLib(t)
	cache := budgetCache(t)
	spec := "qdq<min-gemm=2;data=random:4;cache=" + cache + ";budget=0.01>"
	m := parse(t, attention)
	rep, err := runPipeline(t, m, spec)
	if err != nil {
		t.Fatal(err)
	}
	st := lastStat(rep)
	notes := strings.Join(st.Notes, "\n")
	t.Logf("notes:\n%s", notes)
	if st.Counts["qdq: budget groups turned off"] != 1 || st.Counts["qdq: budget groups measured"] != 2 ||
		st.Counts["qdq: budget quantizers total"] != 6 || st.Counts["qdq: budget quantizers kept"] != 4 {
		t.Errorf("counts %v", st.Counts)
	}
	for _, want := range []string{"result: 1 of 2 groups off (layer0/attn_out); 4 of 6 quantizers kept",
		"budget: layer0/attn_out (2 quantizers): cos", "turned off layer0/attn_out"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q", want)
		}
	}
	var out *ir.Node
	for _, n := range m.Graph.Nodes() {
		if n.Name == "/L/o/MatMul" {
			out = n
		}
	}
	if why, _ := out.Meta(qdqcheck.SkipKey); !strings.HasPrefix(why, "group layer0/attn_out disabled by budget=0.01 (cos ") {
		t.Errorf("skip mark %q", why)
	}
	got := printModel(t, m)

	// Deterministic.
	m2 := parse(t, attention)
	if _, err := runPipeline(t, m2, spec); err != nil {
		t.Fatal(err)
	}
	if again := printModel(t, m2); again != got {
		t.Errorf("a second search gave another model")
	}
	// A run over the output measures nothing and keeps the group off.
	rep, err = runPipeline(t, m2, spec)
	if err != nil {
		t.Fatal(err)
	}
	if again := printModel(t, m2); again != got {
		t.Errorf("a run over the output changed it")
	}
	if st := lastStat(rep); st.Counts["qdq: budget evaluations"] != 0 || !strings.Contains(strings.Join(st.Notes, "\n"), "nothing measured again; the 1 nodes a budget left float stay float") {
		t.Errorf("rerun: %v %v", st.Counts, st.Notes)
	}

	// A budget the all-on model meets turns nothing off.
	m3 := parse(t, attention)
	rep, err = runPipeline(t, m3, "qdq<min-gemm=2;data=random:4;cache="+cache+";budget=1>")
	if err != nil {
		t.Fatal(err)
	}
	if st := lastStat(rep); st.Counts["qdq: budget groups turned off"] != 0 || st.Counts["qdq: budget quantizers kept"] != 6 || st.Counts["qdq: budget evaluations"] != 1 {
		t.Errorf("budget=1: %v", st.Counts)
	}
}

// TestBudgetAccuracy: with eval=FILE.npz the budget is a drop in accuracy (argmax of the
// first output against labels). The labels are the float model's own predictions, so
// float scores 1; budget=0 tolerates no lost prediction.
func TestBudgetAccuracy(t *testing.T) {
	orttest.RequireLib(t)
	r := rand.New(rand.NewPCG(1, 2))
	const rows = 64
	x := randn(r, rows, 3, 4)
	floatModel := save(t, parse(t, attention), "float.onnx")
	y := runORT(t, floatModel, map[string]*ndarray.Array{"x": x})["y"].Float32s()
	labels := make([]int64, rows)
	for i := range labels {
		row := y[i*12 : (i+1)*12]
		for j := range row {
			if row[j] > row[labels[i]] {
				labels[i] = int64(j)
			}
		}
	}
	evalPath := filepath.Join(t.TempDir(), "eval.npz")
	if err := npz.Write(evalPath, map[string]*ndarray.Array{"x": x, eval.LabelsKey: ndarray.FromInt64([]int64{rows}, labels)}); err != nil {
		t.Fatal(err)
	}
	m := parse(t, attention)
	rep, err := runPipeline(t, m, "qdq<min-gemm=2;data=random:4;cache="+budgetCache(t)+";budget=0;eval="+evalPath+";eval-batch=16>")
	if err != nil {
		t.Fatal(err)
	}
	st := lastStat(rep)
	notes := strings.Join(st.Notes, "\n")
	t.Logf("notes:\n%s", notes)
	for _, want := range []string{"tuning on the tuning part of " + evalPath + ": 32 rows in 2 batches (accuracy, float 1.0000)",
		"on the tuning data accuracy 1.0000 (cos ", "loss 0.0000 <= 0;",
		"reported on the held-out part of " + evalPath + " (holdout=0.5 of its batches), 32 rows the search did not use: float accuracy 1.0000; every group on accuracy 0.0000",
		"result (1 groups off) accuracy 1.0000"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q", want)
		}
	}
	if st.Counts["qdq: budget groups turned off"] == 0 || st.Counts["qdq: budget rows tuned on"] != 32 || st.Counts["qdq: budget rows reported on"] != 32 {
		t.Errorf("counts %v", st.Counts)
	}

	// The figures come from the data they say: with the labels of the batches held out
	// (the 2nd and 4th of 16 rows) made wrong, the tuning data still scores float 1 and
	// the held-out part float 0, and the search, which never sees those labels, decides
	// as before.
	wrong := append([]int64(nil), labels...)
	for i := range wrong {
		if (i/16)%2 == 1 {
			wrong[i] = (wrong[i] + 1) % 12
		}
	}
	skewed := filepath.Join(t.TempDir(), "skewed.npz")
	if err := npz.Write(skewed, map[string]*ndarray.Array{"x": x, eval.LabelsKey: ndarray.FromInt64([]int64{rows}, wrong)}); err != nil {
		t.Fatal(err)
	}
	m2 := parse(t, attention)
	rep, err = runPipeline(t, m2, "qdq<min-gemm=2;data=random:4;cache="+budgetCache(t)+";budget=0;eval="+skewed+";eval-batch=16>")
	if err != nil {
		t.Fatal(err)
	}
	notes2 := strings.Join(lastStat(rep).Notes, "\n")
	for _, want := range []string{"32 rows in 2 batches (accuracy, float 1.0000)", "32 rows the search did not use: float accuracy 0.0000", "result: 1 of 2 groups off (layer0/attn_out)"} {
		if !strings.Contains(notes2, want) {
			t.Errorf("skewed held-out labels: notes lack %q:\n%s", want, notes2)
		}
	}
	if printModel(t, m2) != printModel(t, m) {
		t.Errorf("the held-out labels changed the search's result")
	}

	// report-eval: tune on all of eval, report on the other file; holdout=0: nothing held
	// out, and the notes say the figures are the tuning data's.
	rep, err = runPipeline(t, parse(t, attention), "qdq<min-gemm=2;data=random:4;cache="+budgetCache(t)+";budget=0;eval="+evalPath+";eval-batch=16;report-eval="+skewed+">")
	if err != nil {
		t.Fatal(err)
	}
	notes3 := strings.Join(lastStat(rep).Notes, "\n")
	for _, want := range []string{"tuning on " + evalPath + ": 64 rows in 4 batches", "reported on report-eval=" + skewed + ", 64 rows the search did not use: float accuracy 0.5000"} {
		if !strings.Contains(notes3, want) {
			t.Errorf("report-eval: notes lack %q:\n%s", want, notes3)
		}
	}
	rep, err = runPipeline(t, parse(t, attention), "qdq<min-gemm=2;data=random:4;cache="+budgetCache(t)+";budget=0;eval="+evalPath+";eval-batch=16;holdout=0>")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Join(lastStat(rep).Notes, "\n"); !strings.Contains(n, "nothing held out (holdout=0): every figure is on the data the search tuned on") || !strings.Contains(n, "64 rows in 4 batches") {
		t.Errorf("holdout=0: notes:\n%s", n)
	}

	// eval data without labels is refused.
	if err := npz.Write(evalPath, map[string]*ndarray.Array{"x": x}); err != nil {
		t.Fatal(err)
	}
	_, err = runPipeline(t, parse(t, attention), "qdq<min-gemm=2;ranges=const:4;budget=0;eval="+evalPath+">")
	if err == nil || !strings.Contains(err.Error(), `no "labels" array`) {
		t.Errorf("no labels: %v", err)
	}
	// So is report-eval data without labels when the budget is on accuracy.
	_, err = runPipeline(t, parse(t, attention), "qdq<min-gemm=2;ranges=const:4;budget=0;eval="+skewed+";report-eval="+evalPath+">")
	if err == nil || !strings.Contains(err.Error(), "report-eval") || !strings.Contains(err.Error(), `no "labels" array`) {
		t.Errorf("report-eval without labels: %v", err)
	}
}

func printModel(t *testing.T, m *ir.Model) string {
	t.Helper()
	var b strings.Builder
	if err := text.Print(&b, m, text.Options{}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
