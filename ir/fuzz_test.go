package ir_test

import (
	"os"
	"path/filepath"
	"testing"

	_ "github.com/qcc-dev/qcc/internal/update"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
)

// fuzzSeeds are small models that exercise what the loader handles: subgraphs with
// outer-scope references, tensor attributes, omitted optional inputs, value_info, metadata.
var fuzzSeeds = []string{
	`<ir_version: 8, opset_import: ["" : 13]>
g (bool c, float[2] x) => (float[2] y) <float[2] w = {1, 2}> {
  y = If (c) <then_branch = t () => (float[2] a) { a = Add (x, w) }, else_branch = e () => (float[2] b) { b = Neg (x) }>
}`,
	`<ir_version: 8, opset_import: ["" : 13]>
g (float[batch,4] x) => (float[batch,4] y, float[batch,4] m) {
  k = Constant <value = float[4] {0.5, 1, 2, 4}> ()
  s = Mul (x, k)
  y, m = Dropout (s, "", "")
}`,
	`<ir_version: 8, opset_import: ["" : 11]>
g (int64[2,3] x) => (int64[2,3] y) <int64 lo = {0}, int64 hi = {5}> {
  y = Clip (x, lo, hi)
}`,
}

// FuzzLoad feeds the loader arbitrary bytes: it must return a model or an error, never
// panic, and whatever it accepts must verify or fail verification cleanly, and save.
// Seeds: the corpus models (when present), their truncations, and a tiny model.
//
//	go test ./ir -run=^$ -fuzz=FuzzLoad -fuzztime=5m
func FuzzLoad(f *testing.F) {
	f.Add(tinyModel(f))
	for _, src := range fuzzSeeds {
		m, err := text.Parse(src)
		if err != nil {
			f.Fatal(err)
		}
		b, err := ir.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// One real export; more would only slow every mutation down (they are ~600 KB each).
	if data, err := os.ReadFile(filepath.Join("..", "..", "shared", "models", "distilbert.opset17.onnx")); err == nil {
		f.Add(data)
		f.Add(data[:len(data)/3])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ir.LoadBytes(data, t.TempDir())
		if err != nil {
			return
		}
		if m.Verify() != nil {
			return
		}
		out, err := ir.Marshal(m)
		if err != nil {
			return // e.g. external data that is not there
		}
		if _, err := ir.LoadBytes(out, t.TempDir()); err != nil {
			t.Fatalf("a model that loaded and verified does not load after saving: %v", err)
		}
	})
}

func tinyModel(f *testing.F) []byte {
	g := ir.NewGraph("g")
	x, _ := g.AddInput("x", ir.TensorOf(ir.Float, ir.Sym("n"), ir.D(4)))
	w, _ := g.AddInitializer("w", ir.FloatTensor([]int64{4}, []float32{1, 2, 3, 4}))
	n := g.Add("Add", []*ir.Value{x, w}, 1, "y")
	g.Outputs = append(g.Outputs, n.Output(0))
	b, err := ir.Marshal(&ir.Model{IRVersion: 8, Opsets: []ir.OpsetID{{Version: 13}}, Graph: g})
	if err != nil {
		f.Fatal(err)
	}
	return b
}
