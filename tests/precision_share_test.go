package tests

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/quant/calib"
)

// TestPrecisionSharesCalibration: precision after qdq on the same data reads the
// statistics qdq's calibration run collected (one ORT collection for the whole compile,
// counted), those statistics are exactly a fresh collection's on the float model qdq
// calibrated, and the typed model is the same as when precision calibrates the quantized
// model itself (a separate compile, two collections); so with fuse between them
// (TensorRT's pipeline), whose LayerNormalization outputs are values the float model
// lacks.
func TestPrecisionSharesCalibration(t *testing.T) {
	orttest.RequireLib(t)
	const data = "random:3:5"
	path := filepath.Join(corpus.Dir(t), "bert.opset13.onnx")

	// A pass between qdq and precision that keeps what qdq shared.
	// (By the names of the time: precision renames a graph output it casts.)
	var shared *calib.Shared
	byName := map[string]*calib.Histogram{}
	probe := &pass.Pass{Name: "probe", Doc: "test: keep the shared statistics", Run: func(ctx *pass.Context) error {
		shared, _ = ctx.Shared(calib.SharedKey{Data: data}).(*calib.Shared)
		if shared != nil {
			for v, h := range shared.ByValue {
				byName[v.Name] = h
			}
		}
		return nil
	}}
	registry := append(append([]*pass.Pass(nil), passes.All...), probe)
	q, prec := "qdq<data="+data+">", "precision<type=fp16;data="+data+">"

	together := ortcheck.Load(t, path)
	c0, _ := calib.Counts()
	ortcheck.Pipeline(t, together, "fold,"+q+",probe,"+prec, registry, &pass.Instrumentation{VerifyEach: true})
	c1, _ := calib.Counts()
	if c1-c0 != 1 {
		t.Errorf("fold,qdq,precision on one data set: %d ORT collections, want 1", c1-c0)
	}
	if shared == nil || len(shared.ByValue) == 0 {
		t.Fatal("qdq shared no statistics with the precision step after it")
	}

	// The shared statistics are a fresh collection's on the float model.
	float := ortcheck.Fold(t, path, passes.All)
	ortcheck.Pipeline(t, float, "shapes", passes.All, nil)
	names := calib.FloatActivations(float)
	fresh, err := calib.CollectModel(float, names, data, 0, calib.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		a, b := fresh.Tensors[n], byName[n]
		if b == nil {
			t.Errorf("%s: not shared", n)
			continue
		}
		if a.Count != b.Count || a.Min != b.Min || a.Max != b.Max || a.AbsMax != b.AbsMax || fmt.Sprint(a.Bins) != fmt.Sprint(b.Bins) {
			t.Errorf("%s: shared statistics differ from a fresh collection on the float model", n)
		}
	}

	// The same model as precision calibrating the quantized model itself.
	apart := ortcheck.Load(t, path)
	ortcheck.Pipeline(t, apart, "fold,"+q, passes.All, nil)
	c2, _ := calib.Counts()
	ortcheck.Pipeline(t, apart, prec, passes.All, nil)
	c3, _ := calib.Counts()
	if c3-c2 != 1 {
		t.Errorf("precision alone: %d ORT collections, want 1", c3-c2)
	}
	if ortcheck.Text(t, together) != ortcheck.Text(t, apart) {
		t.Errorf("precision with qdq's statistics types the model differently from its own calibration")
	}

	// TensorRT's pipeline: fuse between them makes the LayerNormalization outputs anew;
	// they are found through the graph output's name and the QuantizeLinear reading them.
	trtQ := "fold,qdq<policy=full;residual=skip;pairs=shared;data=" + data + ">,fuse<target=onnx;opset=17>"
	trt := ortcheck.Load(t, path)
	c4, _ := calib.Counts()
	rep := ortcheck.Pipeline(t, trt, trtQ+","+prec, passes.All, nil)
	c5, _ := calib.Counts()
	reused, own := 0, 0
	for _, st := range rep.Stats {
		if st.Pass == "precision" {
			reused, own = st.Counts["precision: ranges from qdq's calibration"], st.Counts["precision: tensors calibrated"]
		}
	}
	if c5-c4 != 1 || reused == 0 || own != 0 {
		t.Errorf("tensorrt pipeline: %d ORT collections, %d ranges reused, %d calibrated by precision; want 1, all, none", c5-c4, reused, own)
	}
	trtApart := ortcheck.Load(t, path)
	ortcheck.Pipeline(t, trtApart, trtQ, passes.All, nil)
	ortcheck.Pipeline(t, trtApart, prec, passes.All, nil)
	if ortcheck.Text(t, trt) != ortcheck.Text(t, trtApart) {
		t.Errorf("tensorrt pipeline: precision with qdq's statistics types the model differently from its own calibration")
	}
}

// TestPrecisionSharesCalibrationCorpus: over the corpus, TensorRT's INT8 pipeline
// calibrates once (qdq's run serves precision), and the typed model is the one precision
// makes calibrating the quantized, fused model itself.
func TestPrecisionSharesCalibrationCorpus(t *testing.T) {
	orttest.RequireLib(t)
	const data = "random:2"
	trtQ := "fold,qdq<policy=full;residual=skip;pairs=shared;data=" + data + ">,fuse<target=onnx;opset=17>"
	prec := "precision<type=fp16;data=" + data + ">"
	same := 0
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		t.Run(cm.Name, func(t *testing.T) {
			shared := ortcheck.Load(t, cm.Path)
			c0, _ := calib.Counts()
			ortcheck.Pipeline(t, shared, trtQ+","+prec, passes.All, nil)
			c1, _ := calib.Counts()
			if c1-c0 != 1 {
				t.Errorf("%d ORT collections, want 1", c1-c0)
			}
			apart := ortcheck.Load(t, cm.Path)
			ortcheck.Pipeline(t, apart, trtQ, passes.All, nil)
			ortcheck.Pipeline(t, apart, prec, passes.All, nil)
			if ortcheck.Text(t, shared) != ortcheck.Text(t, apart) {
				t.Errorf("precision with qdq's statistics types the model differently from its own calibration")
			} else {
				same++
			}
		})
	}
	t.Logf("%d models typed the same with one calibration run as with two", same)
}
