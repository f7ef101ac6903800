package passes_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
)

// countOps is a pass defined outside qcc: an analysis-free transformation that tags
// every MatMul node with its position, to show the shape of a pass value.
var countOps = &pass.Pass{
	Name: "tag-matmuls",
	Doc:  "tag-matmuls numbers the MatMul nodes in metadata_props.",
	Options: []pass.Option{
		{Name: "key", Default: "matmul.index", Doc: "metadata key to write"},
	},
	Run: func(ctx *pass.Context) error {
		i := 0
		for _, n := range ctx.Model.Graph.Nodes() {
			if n.OpType == "MatMul" {
				n.SetMeta(ctx.Opt("key"), fmt.Sprint(i))
				i++
			}
		}
		ctx.Count("tag-matmuls: tagged", i)
		if i > 0 {
			ctx.Changed()
		}
		return nil
	},
}

// Load a model, run the built-in fold pass and a custom pass in one pipeline, save.
func Example() {
	m, err := ir.Load(filepath.Join("..", "testdata", "models", "bert.opset13.onnx"))
	if err != nil {
		log.Fatal(err)
	}
	registry := append(append([]*pass.Pass{}, passes.All...), countOps)
	p, err := pass.Parse("fold,tag-matmuls<key=qcc.matmul>", registry)
	if err != nil {
		log.Fatal(err)
	}
	before := m.Graph.NumNodes()
	report, err := p.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true})
	if err != nil {
		log.Fatal(err)
	}
	out := filepath.Join(os.TempDir(), "bert.folded.onnx")
	if err := ir.Save(m, out, ir.SaveOptions{}); err != nil {
		log.Fatal(err)
	}
	defer os.Remove(out)
	last := report.Stats[len(report.Stats)-1]
	fmt.Println("fewer nodes:", m.Graph.NumNodes() < before)
	fmt.Println(last.Pass, "tagged", last.Counts["tag-matmuls: tagged"])
	// Output:
	// fewer nodes: true
	// tag-matmuls tagged 16
}
