package tests

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/passes/shapes"
)

// TestPrecisionCorpus: every corpus model through fold,fuse<target=onnx>,precision<type=fp16>
// (and fold,precision,fuse, and fold,fuse,qdq,precision) runs in ONNX Runtime, and with every float16
// node's outputs rounded explicitly (ortcheck.Emulate: ORT's CPU provider skips the
// roundings between nodes it lacks float16 kernels for) its outputs have cosine
// similarity >= 0.9999 to the float32 model's on the reference inputs and on another shape,
// keeps its float32 inputs and outputs, has no Cast pair that cancels, no value cast twice
// to one type, is left unchanged by a second run, and passes python3-onnx's checker (up to
// opset 17: after qdq, precision raises the model to 19, where the Q/DQ pairs are typed
// float16 too, and the INT8 GEMMs with them).
func TestPrecisionCorpus(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	var files []string
	for _, spec := range []string{
		"fold,fuse<target=onnx>,precision<type=fp16>",
		"fold,precision<type=fp16>,fuse<target=onnx>",
		"fold,fuse<target=onnx>,qdq,precision<type=fp16>",
	} {
		for _, cm := range corpus.Models(t, "") {
			t.Run(spec+"/"+cm.Name, func(t *testing.T) {
				_, out, path := ortcheck.Compile(t, cm.Path, spec, passes.All, t.TempDir())
				checkTyped(t, out)
				ref := ortcheck.Inputs(t, cm)
				sets := []map[string]*ndarray.Array{ref}
				if !strings.Contains(cm.Name, "static") {
					sets = append(sets, ortcheck.OtherShape(ref, 3, 11))
				}
				emu, err := ortcheck.Emulate(out, ir.Float16)
				if err != nil {
					t.Fatal(err)
				}
				for _, in := range sets {
					want := ortcheck.Run(t, cm.Path, in, ort.OptDisabled)
					ortcheck.Run(t, path, in, ort.OptDisabled) // ORT accepts the typed model itself (its LayerNormFusion, at level basic already, fuses a Cast from float16 into a float32 LayerNorm and then refuses its own node: deberta.opset17 after qdq)
					got := ortcheck.RunModel(t, emu, in, ort.OptDisabled)
					for name, w := range want {
						cos, err := ndarray.CosineSimilarity(w, got[name])
						if err != nil || !(cos >= 0.9999) {
							t.Errorf("%s %v: output %s: cosine %.6f to float32 (%v)", spec, ortcheck.FirstShape(in), name, cos, err)
						} else {
							t.Logf("%v: output %s: cosine %.7f", ortcheck.FirstShape(in), name, cos)
						}
					}
				}
				if !strings.HasSuffix(spec, ">") || !strings.Contains(spec[strings.LastIndex(spec, ","):], "precision") {
					return
				}
				// Idempotent: a second precision run changes nothing.
				again := ortcheck.Load(t, path)
				before := ortcheck.Text(t, again)
				ortcheck.Pipeline(t, again, "precision<type=fp16>", passes.All, &pass.Instrumentation{VerifyEach: true})
				if after := ortcheck.Text(t, again); after != before {
					t.Errorf("a second precision run changed the model")
				}
				// python3-onnx's checker knows opsets up to 17; precision raises a Q/DQ
				// model to 19.
				if strings.HasPrefix(spec, "fold,fuse") && out.Opset("") <= 17 {
					p := filepath.Join(dir, fmt.Sprintf("%d.onnx", len(files)))
					if err := ir.Save(out, p, ir.SaveOptions{}); err != nil {
						t.Fatal(err)
					}
					files = append(files, p)
				}
			})
		}
	}
	if len(files) > 0 {
		if err := ortcheck.CheckONNX(t, files); err != nil {
			t.Skip(err)
		}
	}
}

// checkTyped checks a precision output: float32 graph inputs and outputs (keep-io), no
// Cast pair that cancels (a narrow value widened and narrowed again), one Cast per value
// and type, and at least one float16 value.
func checkTyped(t *testing.T, m *ir.Model) {
	t.Helper()
	if _, err := shapes.Infer(m); err != nil {
		t.Fatalf("shape inference on the output: %v", err)
	}
	g := m.Graph
	for _, v := range append(append([]*ir.Value(nil), g.Inputs...), g.Outputs...) {
		if v.Type != nil && v.Type.DType.IsFloat() && v.Type.DType != ir.Float {
			t.Errorf("graph input/output %s is %s; keep-io keeps float32", v.Name, v.Type.DType)
		}
	}
	type key struct {
		v  *ir.Value
		to int64
	}
	seen := map[key]bool{}
	narrow := 0
	for _, n := range g.Nodes() {
		for _, o := range n.Outputs() {
			if o != nil && o.Type != nil && o.Type.DType == ir.Float16 {
				narrow++
			}
		}
		if n.OpType != "Cast" {
			continue
		}
		k := key{n.Input(0), n.AttrInt("to", 0)}
		if seen[k] {
			t.Errorf("%s is cast to type %d twice", k.v.Name, k.to)
		}
		seen[k] = true
		p, _ := n.Input(0).Producer()
		if p != nil && p.OpType == "Cast" && p.Input(0).Type != nil && int64(p.Input(0).Type.DType) == n.AttrInt("to", 0) &&
			p.Input(0).Type.DType.IsFloat() && n.Input(0).Type.DType == ir.Float {
			t.Errorf("Cast pair %s -> %s -> %s cancels", p.Input(0).Name, n.Input(0).Name, n.Output(0).Name)
		}
	}
	if narrow == 0 {
		t.Errorf("no float16 value in the output")
	}
}
