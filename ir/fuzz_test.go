package ir_test

import (
	"os"
	"path/filepath"
	"testing"

	_ "github.com/qcc-dev/qcc/internal/update"
	"github.com/qcc-dev/qcc/ir"
)

// FuzzLoad feeds the loader arbitrary bytes: it must return a model or an error, never
// panic, and whatever it accepts must verify or fail verification cleanly, and save.
// Seeds: the corpus models (when present), their truncations, and a tiny model.
//
//	go test ./ir -run=^$ -fuzz=FuzzLoad -fuzztime=5m
func FuzzLoad(f *testing.F) {
	f.Add(tinyModel(f))
	files, _ := filepath.Glob(filepath.Join("..", "..", "shared", "models", "*.opset1[13].onnx"))
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil || len(data) > 1<<20 {
			continue
		}
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
