package tests

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/quant/eval"
)

// TestPrecisionAccuracy measures the trained classifier typed by the precision pass
// (ranges calibrated on calib.npz) on all of eval.npz in ONNX Runtime, every float16 or
// bfloat16 node's outputs rounded explicitly (ortcheck.Emulate):
//
//   - fold,precision<type=fp16> (and with fuse<target=onnx> before or after it) is within
//     0.05 point of float32;
//   - INT8 Q/DQ then float16 (fold,qdq,precision<type=fp16>, in both orders with fuse;
//     the Q/DQ typed float16 at opset 19) is within 0.5 point for the best calibration,
//     and so is FP8 Q/DQ; TensorRT's INT8 pipeline (policy=full) is measured with them
//     (fold,qdq<dtype=fp8>,precision<type=fp16>);
//   - bfloat16 is measured and logged.
func TestPrecisionAccuracy(t *testing.T) {
	orttest.RequireLib(t)
	model, calibData, _, data := trainedClassifier(t)
	// Level basic: at extended, ORT's LayerNormFusion (on some models at basic already) fuses a Cast from float16/bfloat16
	// into a decomposed float32 LayerNorm and then refuses the node it made.
	opts := ort.Options{OptLevel: ort.OptBasic}
	fp32, err := eval.Accuracy(model, data, opts)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	n := 0
	// accuracy compiles spec on a fresh copy, and returns the accuracy of the result as
	// typed (emulated) and as ORT's CPU provider runs it (NaN for bfloat16, which it cannot).
	accuracy := func(spec string, dt ir.DataType) (emulated, plain float64) {
		t.Helper()
		m, err := ir.Load(model)
		if err != nil {
			t.Fatal(err)
		}
		p, err := pass.Parse(spec, passes.All)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true}); err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		e, err := ortcheck.Emulate(m, dt)
		if err != nil {
			t.Fatal(err)
		}
		n++
		typed := filepath.Join(dir, fmt.Sprintf("t%d.onnx", n))
		emu := filepath.Join(dir, fmt.Sprintf("e%d.onnx", n))
		if err := ir.Save(m, typed, ir.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := ir.Save(e, emu, ir.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		if emulated, err = eval.Accuracy(emu, data, opts); err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		plain = math.NaN()
		if dt == ir.Float16 {
			if plain, err = eval.Accuracy(typed, data, opts); err != nil {
				t.Fatalf("%s: %v", spec, err)
			}
		}
		return emulated, plain
	}
	var rows []string
	row := func(spec string, acc, plain float64) {
		rows = append(rows, fmt.Sprintf("%-72s %.4f (%+.2f points; ORT CPU as typed %.4f)", spec, acc, 100*(acc-fp32), plain))
	}
	prec := "precision<type=fp16;data=" + calibData + ">"
	for _, spec := range []string{"fold," + prec, "fold,fuse<target=onnx>," + prec, "fold," + prec + ",fuse<target=onnx>"} {
		acc, plain := accuracy(spec, ir.Float16)
		row(spec, acc, plain)
		if math.Abs(acc-fp32) > 0.0005+1e-9 {
			t.Errorf("%s: accuracy %.4f, more than 0.05 point from float32 %.4f", spec, acc, fp32)
		}
	}
	// INT8 (and FP8 below) Q/DQ then FP16: precision raises the model to opset 19, where
	// the Q/DQ pairs are typed float16. Level disabled: fuse<target=onnx> at the model's
	// opset 13 leaves its LayerNorms decomposed (no LayerNormalization before 17), and at
	// opset 19 ORT's LayerNormFusion, at level basic already, fuses the float16 Casts
	// around their float32 statistics into a node it then refuses.
	opts = ort.Options{OptLevel: ort.OptDisabled}
	best, bestSpec := 0.0, ""
	for _, method := range []string{"max", "percentile:99.99", "entropy"} {
		q := "qdq<calib=" + method + ";data=" + calibData + ">"
		trt := "fold,qdq<policy=full;residual=skip;pairs=shared;calib=" + method + ";data=" + calibData + ">,fuse<target=onnx;opset=17>," + prec // -target=tensorrt
		for _, spec := range []string{"fold," + q + ",fuse<target=onnx>," + prec, "fold,fuse<target=onnx>," + q + "," + prec, trt} {
			acc, plain := accuracy(spec, ir.Float16)
			row(spec, acc, plain)
			if acc > best {
				best, bestSpec = acc, spec
			}
		}
	}
	if best < fp32-0.005 {
		t.Errorf("best INT8+FP16 accuracy %.4f (%s): more than 0.5 point below float32 %.4f", best, bestSpec, fp32)
	}
	// FP8 (E4M3FN) Q/DQ: opset 19 (qdq raises it), at level disabled as INT8.
	best, bestSpec = 0, ""
	for _, method := range []string{"max", "percentile:99.99"} {
		q := "qdq<dtype=fp8;calib=" + method + ";data=" + calibData + ">"
		for _, spec := range []string{"fold," + q + ",fuse<target=onnx>," + prec, "fold,fuse<target=onnx>," + q + "," + prec} {
			acc, plain := accuracy(spec, ir.Float16)
			row(spec, acc, plain)
			if acc > best {
				best, bestSpec = acc, spec
			}
		}
	}
	if best < fp32-0.005 {
		t.Errorf("best FP8+FP16 accuracy %.4f (%s): more than 0.5 point below float32 %.4f", best, bestSpec, fp32)
	}
	for _, spec := range []string{"fold,precision<type=bf16;data=" + calibData + ">", "fold,qdq<data=" + calibData + ">,precision<type=bf16;data=" + calibData + ">"} {
		acc, plain := accuracy(spec, ir.BFloat16)
		row(spec, acc, plain)
	}
	t.Logf("trained classifier, %d eval examples, float32 %.4f:\n%s", data.Len(), fp32, strings.Join(rows, "\n"))
}
