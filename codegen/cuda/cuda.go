// Package cuda is qcc's CUDA emitter: from a model's transformer blocks (the blocks
// analysis) and its INT8 Q/DQ nodes, in the main graph and in every If, Loop and Scan
// body (a merged decoder's branches), it writes kernels specialised to the model's
// shapes and constants, with a plain C launch API and a test harness.
//
// Emit writes into a folder:
//
//	kernels.h     the launch API: one function per kernel and element type (_f32, _f16)
//	kernels.cu    the Spec structs (compile-time constants) and the launch functions
//	check.cu      a harness that runs every block instance on the check data and prints
//	              errors and achieved bandwidth
//	qcc/*.cuh     the hand-written building blocks (cuda_kernels/qcc), copied
//	check/        the check data: the kernels' inputs, the outputs ONNX Runtime computed
//	              on CPU running the model's own subgraph for each block (its nodes and
//	              constants, on random inputs of the values' real types; see
//	              subgraph.go), and manifest.json (only when ORT is available)
//
// Kernels are shared: blocks with the same specialisation (kind, sizes, epsilon, ...) use
// one function, and the header lists the blocks of each with the model values they bind.
// The emitted text comes from text/template with a fixed layout, so it is deterministic
// and golden files pin it.
package cuda

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	cudakernels "github.com/qcc-dev/qcc/cuda_kernels"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/blocks"
)

// Options configure Emit.
type Options struct {
	// Source names the model in the generated files' headers (the input file's base name).
	Source string
	// CheckData writes check/ with the expected outputs from ONNX Runtime. Without the
	// library Emit writes everything else and says so on Log.
	CheckData bool
	// Batch and Seq size the check data where the model's dims are symbolic (defaults 2
	// and 128; sequences are capped at 512 for attention and at the position table for
	// embeddings).
	Batch, Seq int64
	// Log receives notes (skipped blocks, missing ONNX Runtime). Nil discards them.
	Log io.Writer
}

// Result says what Emit wrote.
type Result struct {
	Kernels   []string // launch function names without the type suffix
	Instances []string // block ids with a kernel
	Skipped   []string // blocks and nodes without one, with the reason
	Notes     []string // blocks with a kernel: which path each got and why
	CheckData bool     // check/ was written
	Files     []string // paths written, relative to the folder, sorted
}

//go:embed templates/*.tmpl
var templateFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"join": strings.Join,
}).ParseFS(templateFS, "templates/*.tmpl"))

// analyse runs the blocks analysis on m and plans the kernels and block instances Emit
// generates, without writing anything.
func analyse(m *ir.Model, source string, sz sizer) (*plan, error) {
	var res *blocks.Result
	capture := &pass.Pass{
		Name:     "cuda-plan",
		Doc:      "cuda-plan reads the blocks analysis for the CUDA emitter.",
		Requires: []*pass.Pass{blocks.Pass},
		Analysis: true,
		Run: func(ctx *pass.Context) error {
			res = ctx.ResultOf(blocks.Pass).(*blocks.Result)
			return nil
		},
	}
	if _, err := (&pass.Pipeline{Steps: []pass.Step{{Pass: capture}}}).Run(context.Background(), m, nil); err != nil {
		return nil, err
	}
	b := newBuilder(source, sz)
	// The main graph and then every body: a merged decoder holds its whole model in
	// the branches of an If, each planned like a main graph (the kernels are shared).
	for _, r := range res.All() {
		b.prefix = r.IDPrefix()
		for _, bl := range r.Blocks {
			b.block(bl)
		}
		b.nodes(r.Graph)
	}
	return b.p, nil
}

// nodes plans g's Q/DQ nodes and records its fused rotaries.
func (b *builder) nodes(g *ir.Graph) {
	for _, n := range g.Nodes() {
		std := n.Domain == "" || n.Domain == "ai.onnx"
		switch {
		case (n.OpType == "QuantizeLinear" || n.OpType == "DequantizeLinear") && (std || n.Domain == msDomain):
			b.qdq(n)
		case n.OpType == "RotaryEmbedding" && (std || n.Domain == msDomain):
			b.rotary(n)
		}
	}
}

// Emit writes the CUDA code for m into dir (created if needed).
func Emit(m *ir.Model, dir string, o Options) (*Result, error) {
	if o.Batch <= 0 {
		o.Batch = defaultBatch
	}
	if o.Seq <= 0 {
		o.Seq = defaultSeq
	}
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	p, err := analyse(m, o.Source, sizer{batch: o.Batch, seq: o.Seq})
	if err != nil {
		return nil, err
	}
	files, err := Render(p)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	res := &Result{Skipped: p.Skipped, Notes: p.Notes}
	for _, k := range p.Kernels {
		res.Kernels = append(res.Kernels, k.Name)
	}
	for _, in := range p.Instances {
		res.Instances = append(res.Instances, in.ID)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		full := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return nil, err
		}
		if err := ir.WriteFileAtomic(full, files[name]); err != nil {
			return nil, err
		}
		res.Files = append(res.Files, name)
	}
	for _, s := range p.Skipped {
		fmt.Fprintf(log, "qcc: cuda: no kernel for %s\n", s)
	}
	if o.CheckData && len(p.Instances) > 0 {
		if _, err := ort.Available(); err != nil {
			fmt.Fprintf(log, "qcc: cuda: check data not written (check.cu needs it): %v\n", err)
		} else {
			if err := writeCheckData(m, p, filepath.Join(dir, "check")); err != nil {
				return nil, err
			}
			res.CheckData = true
			res.Files = append(res.Files, "check/manifest.json")
		}
	}
	return res, nil
}

// Render returns the generated files by relative path: kernels.h, kernels.cu, check.cu and
// the qcc/ headers.
func Render(p *plan) (map[string][]byte, error) {
	v := newView(p)
	out := map[string][]byte{}
	for _, name := range []string{"kernels.h", "kernels.cu", "check.cu"} {
		var buf bytes.Buffer
		if err := templates.ExecuteTemplate(&buf, name+".tmpl", v); err != nil {
			return nil, fmt.Errorf("cuda: rendering %s: %w", name, err)
		}
		out[name] = buf.Bytes()
	}
	err := fs.WalkDir(cudakernels.Headers, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(name, ".cuh") {
			return err
		}
		b, err := fs.ReadFile(cudakernels.Headers, name)
		if err != nil {
			return err
		}
		out[path.Clean(name)] = b
		return nil
	})
	return out, err
}
