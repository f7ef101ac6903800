// Command genllama writes a LLaMA-shaped decoder at any size, as torch.onnx.export writes
// transformers' LlamaForCausalLM (opset 17): RMSNorm in float32, rotate-half rotary from
// cos/sin tables gathered by position_ids, grouped-query attention with K and V repeated
// to the query heads, a causal plus padding mask, SwiGLU FFN, final norm and LM head.
// The weights are synthesised (deterministic, uniform) and streamed to an external data
// file one tensor at a time, so a 7B-sized model needs the memory of its largest tensor.
//
//	genllama -layers 32 -hidden 4096 -heads 32 -kv-heads 32 -intermediate 11008 \
//	    -vocab 32000 -dtype fp16 -o llama-7b.onnx
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/qcc-dev/qcc/ir"
)

func main() {
	var c Config
	flag.Int64Var(&c.Layers, "layers", 2, "decoder layers")
	flag.Int64Var(&c.Hidden, "hidden", 64, "hidden size")
	flag.Int64Var(&c.Heads, "heads", 4, "attention heads")
	flag.Int64Var(&c.KVHeads, "kv-heads", 2, "key/value heads (grouped-query attention when below -heads)")
	flag.Int64Var(&c.Intermediate, "intermediate", 160, "FFN intermediate size")
	flag.Int64Var(&c.Vocab, "vocab", 256, "vocabulary size")
	flag.Int64Var(&c.MaxPositions, "max-positions", 2048, "rows of the rotary tables")
	flag.Uint64Var(&c.Seed, "seed", 0, "weights seed")
	dtype := flag.String("dtype", "fp32", "weights and activations: fp32 or fp16")
	out := flag.String("o", "", "output model (the weights go to OUT.data)")
	flag.Parse()
	switch *dtype {
	case "fp32":
		c.DType = ir.Float
	case "fp16":
		c.DType = ir.Float16
	default:
		fail("-dtype=%s: want fp32 or fp16", *dtype)
	}
	if *out == "" || flag.NArg() > 0 {
		fail("usage: genllama [flags] -o OUT.onnx")
	}
	m, err := Build(c)
	if err != nil {
		fail("%v", err)
	}
	if err := ir.Save(m, *out, ir.SaveOptions{External: ir.ExternalAlways}); err != nil {
		fail("%v", err)
	}
	fmt.Fprintf(os.Stderr, "genllama: %s: %d parameters (%s)\n", *out, c.Params(), *dtype)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "genllama: "+format+"\n", args...)
	os.Exit(2)
}
