// Command evalacc prints the task accuracy of models in ONNX Runtime (CPU) on a labelled
// evaluation set, for the accuracy scripts: argmax of each model's first output against
// the .npz file's "labels" array, one model per line ("path<TAB>accuracy<TAB>seconds").
// With -ref, each line also has the share of rows whose argmax is the reference model's
// and the smallest cosine similarity of the float outputs to the reference's
// ("<TAB>agreement<TAB>agree/rows<TAB>cosine").
//
//	evalacc -data eval.npz -opt all a.onnx b.onnx
//	evalacc -data heldout.npz -ref fp32.onnx a.onnx b.onnx
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/quant/eval"
)

func main() {
	data := flag.String("data", "", "evaluation data: an .npz file with the model inputs and a labels array")
	batch := flag.Int("batch", 0, "evaluation batch size (0: about 16k input elements per batch)")
	threads := flag.Int("threads", 0, "intra-op threads (0: ORT's choice)")
	opt := flag.String("opt", "all", "ORT optimization level: disabled, basic, extended, all")
	ref := flag.String("ref", "", "reference model: also print each model's agreement with its predictions")
	flag.Parse()
	levels := map[string]ort.OptLevel{"disabled": ort.OptDisabled, "basic": ort.OptBasic, "extended": ort.OptExtended, "all": ort.OptAll}
	level, ok := levels[*opt]
	if !ok || *data == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: evalacc -data eval.npz [-batch N] [-threads N] [-opt all] [-ref model.onnx] model.onnx ...")
		os.Exit(2)
	}
	first, err := ir.Load(flag.Arg(0))
	if err != nil {
		fail("%v", err)
	}
	d, err := eval.Load(*data, first, *batch, true)
	if err != nil {
		fail("%v", err)
	}
	opts := ort.Options{OptLevel: level, IntraOpThreads: *threads}
	if *ref != "" {
		compare(*ref, d, opts)
		return
	}
	for _, path := range flag.Args() {
		start := time.Now()
		acc, err := eval.Accuracy(path, d, opts)
		if err != nil {
			fail("%s: %v", path, err)
		}
		fmt.Printf("%s\t%.4f\t%.2f\n", path, acc, time.Since(start).Seconds())
	}
}

// compare scores every model against the reference's outputs.
func compare(ref string, d *eval.Data, opts ort.Options) {
	b, err := os.ReadFile(ref)
	if err != nil {
		fail("%v", err)
	}
	e, err := eval.NewEvaluator(b, d, opts)
	if err != nil {
		fail("%s: %v", ref, err)
	}
	for _, path := range flag.Args() {
		start := time.Now()
		m, err := os.ReadFile(path)
		if err != nil {
			fail("%v", err)
		}
		r, err := e.Run(m)
		if err != nil {
			fail("%s: %v", path, err)
		}
		fmt.Printf("%s\t%.4f\t%.2f\t%.5f\t%d/%d\t%.6f\n", path, r.Accuracy(), time.Since(start).Seconds(), r.Agreement(), r.Agree, r.Rows, r.Cosine)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "evalacc: "+format+"\n", args...)
	os.Exit(1)
}
