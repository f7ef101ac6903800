package target_test

import (
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/target"
)

// TestExpand: the headline pipelines, as the README names them, come out of the table.
func TestExpand(t *testing.T) {
	for _, tc := range []struct {
		target string
		prec   target.Precision
		want   string
	}{
		{"ort-cpu", "", "fold,qdq<policy=linear;pairs=per-reader;disable=other$>,fuse<target=ort;provider=cpu;opset=23>"},
		{"ort-cpu", target.FP32, "fold,fuse<target=ort;provider=cpu;opset=23>"},
		{"tensorrt", target.INT8, "fold,qdq<policy=full;residual=skip;pairs=shared>,fuse<target=onnx;opset=17>,precision<type=fp16>"},
		{"tensorrt", target.FP16, "fold,fuse<target=onnx;opset=17>,precision<type=fp16>"},
		{"tensorrt", target.FP8, "fold,qdq<policy=full;residual=skip;pairs=shared;dtype=fp8>,fuse<target=onnx;opset=17>,precision<type=fp16>"},
		{"onnx", "", "fold,qdq,fuse<target=onnx>"},
		{"onnx", target.FP8, "fold,qdq<dtype=fp8>,fuse<target=onnx>"},
		{"onnx", target.FP16, "fold,fuse<target=onnx>,precision<type=fp16>"},
		{"ort-cuda", "", "fold,fuse<target=ort;provider=cuda>,precision<type=fp16>"},
		{"ort-cuda", target.FP32, "fold,fuse<target=ort;provider=cuda>"},
	} {
		e, err := target.Expand(tc.target, tc.prec, passes.All)
		if err != nil {
			t.Errorf("%s %s: %v", tc.target, tc.prec, err)
			continue
		}
		want, err := pass.Parse(tc.want, passes.All)
		if err != nil {
			t.Fatal(err)
		}
		if e.Spec() != want.String() {
			t.Errorf("%s %s: %s, want %s", tc.target, tc.prec, e.Spec(), want)
		}
		// The spec is itself a valid -passes value that means the same.
		again, err := pass.Parse(e.Spec(), passes.All)
		if err != nil || again.String() != e.Spec() {
			t.Errorf("%s %s: spec %s does not parse back (%v)", tc.target, tc.prec, e.Spec(), err)
		}
	}
}

// TestRefusals: a precision a runtime has no fast path for, or that needs what this
// build lacks, is an error naming the reason and the precisions that do work.
func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		target string
		prec   target.Precision
		want   []string
	}{
		{"ort-cpu", target.FP8, []string{"fake quantization"}},
		{"ort-cuda", target.INT8, []string{"no INT8 kernels", "tensorrt"}},
		{"ort-cpu", target.FP16, []string{"no FP16 kernels"}},
		{"ort-cpu", "int4", []string{"unknown precision", "int8, fp8, fp16, fp32"}},
		{"tpu", "", []string{"unknown target", "ort-cpu, ort-cuda, tensorrt, onnx"}},
	} {
		_, err := target.Expand(tc.target, tc.prec, passes.All)
		if err == nil {
			t.Errorf("%s %s: expanded, want an error", tc.target, tc.prec)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s %s: error %q does not say %q", tc.target, tc.prec, err, w)
			}
		}
	}
}

// TestLaterPass: a pass a registry lacks is named in the refusal of the precisions that
// need it, and they expand through the table alone once it has one.
func TestLaterPass(t *testing.T) {
	var without []*pass.Pass // this build's passes but the precision pass
	for _, p := range passes.All {
		if p.Name != "precision" {
			without = append(without, p)
		}
	}
	for _, tc := range []struct {
		target string
		prec   target.Precision
		want   []string
	}{
		{"onnx", target.FP16, []string{"precision pass", "no pass named precision"}},
		{"ort-cuda", "", []string{"-precision=fp16", "no pass named precision", "takes -precision=fp32"}},
	} {
		_, err := target.Expand(tc.target, tc.prec, without)
		if err == nil {
			t.Errorf("without precision: %s %s expanded, want an error", tc.target, tc.prec)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("without precision: %s %s: error %q does not say %q", tc.target, tc.prec, err, w)
			}
		}
	}
	precision := &pass.Pass{Name: "precision", Doc: "stand-in", Options: []pass.Option{{Name: "type", Default: "fp16"}},
		Run: func(*pass.Context) error { return nil }}
	reg := append(append([]*pass.Pass{}, without...), precision)
	for _, tc := range []struct {
		target string
		prec   target.Precision
		want   string
	}{
		{"tensorrt", target.FP16, "fold,fuse<opset=17;target=onnx>,precision<type=fp16>"},
		{"ort-cuda", "", "fold,fuse<provider=cuda;target=ort>,precision<type=fp16>"},
		{"onnx", target.FP16, "fold,fuse<target=onnx>,precision<type=fp16>"},
	} {
		e, err := target.Expand(tc.target, tc.prec, reg)
		if err != nil {
			t.Errorf("%s %s: %v", tc.target, tc.prec, err)
			continue
		}
		if e.Spec() != tc.want || len(e.Notes) != 0 {
			t.Errorf("%s %s: %s (notes %q), want %s", tc.target, tc.prec, e.Spec(), e.Notes, tc.want)
		}
	}
}

// TestTable: every target names a runtime, its default precision expands or is refused
// with a reason, refusals are for known precisions, and no two steps of one target run
// the same pass at the same precision twice by accident (qdq once per precision).
func TestTable(t *testing.T) {
	seen := map[string]bool{}
	for _, tg := range target.Targets {
		if seen[tg.Name] || tg.Runtime == "" || tg.Why == "" {
			t.Errorf("target %q: duplicate, or no runtime or why", tg.Name)
		}
		seen[tg.Name] = true
		for p := range tg.Refuse {
			if p == tg.Default {
				t.Errorf("%s refuses its own default precision %s", tg.Name, p)
			}
		}
		for _, p := range target.Precisions {
			n := map[string]int{}
			for _, s := range tg.Steps {
				if s.For == nil || contains(s.For, p) {
					name, _, _ := strings.Cut(s.Spec, "<")
					n[name]++
				}
			}
			for name, c := range n {
				if c > 1 {
					t.Errorf("%s at %s runs %s %d times", tg.Name, p, name, c)
				}
			}
		}
	}
}

func contains(ps []target.Precision, p target.Precision) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}
