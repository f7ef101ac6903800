package main

import (
	"bufio"
	"encoding/binary"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/qcc-dev/qcc/internal/modroot"
	"github.com/qcc-dev/qcc/ir"
)

// BenchmarkCompileBERTLarge times `qcc -passes=fold,fuse` (load, passes, save) on
// BERT-large's graph from ../shared/models/large with synthesised external weights
// (1.34 GB, as synth_weights.py lays them out), written once before timing.
// scripts/bench-compile.sh gives the same as a ratio to cp.
func BenchmarkCompileBERTLarge(b *testing.B) {
	root, err := modroot.Find()
	if err != nil {
		b.Fatal(err)
	}
	src := filepath.Join(root, "..", "shared", "models", "large", "bert-large.opset13.onnx")
	dir := b.TempDir()
	model := filepath.Join(dir, "bert-large.onnx")
	graph, err := os.ReadFile(src)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(model, graph, 0o644); err != nil {
		b.Fatal(err)
	}
	writeWeights(b, model)
	out := filepath.Join(dir, "out", "m.onnx")
	for b.Loop() {
		// Each run starts as scripts/bench-compile.sh's do: no output, no dirty pages
		// left by the previous one for the kernel to write back meanwhile.
		b.StopTimer()
		os.RemoveAll(filepath.Dir(out))
		os.MkdirAll(filepath.Dir(out), 0o755)
		syscall.Sync()
		b.StartTimer()
		if code := run([]string{"-passes=fold,fuse", model, "-o", out}, io.Discard, io.Discard); code != 0 {
			b.Fatalf("qcc exited %d", code)
		}
	}
}

// writeWeights writes random float32 bytes at every external range the model names.
func writeWeights(b *testing.B, model string) {
	m, err := ir.Load(model)
	if err != nil {
		b.Fatal(err)
	}
	files := map[string]*os.File{}
	r := rand.New(rand.NewPCG(1, 2))
	for _, v := range m.Graph.Initializers {
		e := v.Const.External()
		if e == nil {
			continue
		}
		f := files[e.Path]
		if f == nil {
			if f, err = os.Create(e.Path); err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			files[e.Path] = f
		}
		n := e.Length
		if n < 0 {
			n = v.Const.DType.ByteSize(v.Const.NumElements())
		}
		w := bufio.NewWriterSize(io.NewOffsetWriter(f, e.Offset), 1<<20)
		var buf [4]byte
		for i := int64(0); i < n; i += 4 {
			binary.LittleEndian.PutUint32(buf[:], math.Float32bits(float32(r.NormFloat64()*0.02)))
			w.Write(buf[:])
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}
