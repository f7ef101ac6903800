// Package fuse is the pass that rewrites recognised transformer blocks into fused
// operators: ONNX Runtime's com.microsoft operators (target=ort) or standard ONNX
// operators only (target=onnx, for TensorRT).
package fuse

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/cleanup"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	"github.com/qcc-dev/qcc/passes/shapes"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// Pass is the fuse pass.
var Pass = &pass.Pass{
	Name: "fuse",
	Doc: `rewrite attention, GELU, LayerNorm, skip+LayerNorm and embedding blocks into fused operators
target=ort emits com.microsoft Attention, SkipLayerNormalization, EmbedLayerNormalization,
BiasGelu/FastGelu/Gelu and LayerNormalization; with provider=cpu the residual stays Add
(as Sum) + LayerNormalization, and a QDQ-quantized model's attention and linear layers become
QAttention and MatMulIntegerToFloat (same numbers, biases in the integer GEMM's epilogue, x86's
uint8 x int8 kernels), the attention as Attention-23 over MatMulIntegerToFloat projections
instead of QAttention when opset=23 allows raising the import (ORT's CPU kernel for it is
faster); target=onnx emits standard operators only and
leaves a block decomposed (but annotated) when its operator needs a newer opset than the
model imports, unless opset=N allows raising the import to N. Every block is annotated in
node metadata (qcc.block, qcc.kind, qcc.layer, qcc.variant).`,
	Requires: []*pass.Pass{shapes.Pass},
	Options: []pass.Option{
		{Name: "target", Default: "ort", Doc: "ort (com.microsoft operators) or onnx (standard operators only)", Check: func(s string) error {
			if s != "ort" && s != "onnx" {
				return fmt.Errorf("want ort or onnx")
			}
			return nil
		}},
		{Name: "provider", Default: "any", Doc: "target=ort: the ONNX Runtime execution provider, any, cpu or cuda; cpu keeps Add + LayerNormalization (ORT's CPU SkipLayerNormalization is slower) and turns Q/DQ matmuls into integer kernels", Check: func(s string) error {
			if s != "any" && s != "cpu" && s != "cuda" {
				return fmt.Errorf("want any, cpu or cuda")
			}
			return nil
		}},
		{Name: "opset", Default: "0", Doc: "highest default-domain opset fuse may raise the model to (0: never raise): target=onnx for the standard fused operators; target=ort with provider=cpu for Attention-23 on quantized attention (faster than QAttention on ORT's CPU provider)", Check: func(s string) error {
			if v, err := strconv.Atoi(s); err != nil || v < 0 {
				return fmt.Errorf("want a non-negative opset version")
			}
			return nil
		}},
	},
	Run: run,
}

func run(ctx *pass.Context) error {
	m := ctx.Model
	opset, _ := strconv.ParseInt(ctx.Opt("opset"), 10, 64)
	// Typed: the shapes analysis this pass requires is current for the model it gets.
	env := &transformer.Env{Model: m, Target: transformer.Target(ctx.Opt("target")), RaiseOpset: opset, Typed: true}
	if p := ctx.Opt("provider"); p != "any" {
		env.Provider = p
	}
	before := m.Graph.NumNodes()
	rep, err := transformer.Fuse(m, transformer.Families, env)
	if err != nil {
		return err
	}
	cleanup.RemoveDead(m.Graph)
	ctx.Record(rep)
	if rep.Ops["com.microsoft.QAttention"]+rep.Ops["com.microsoft.MatMulIntegerToFloat"] > 0 {
		m.SetMeta(qdqcheck.LoweredKey, "ort-cpu") // TensorRT's Q/DQ rules stop here
	}
	if m.Graph.NumNodes() != before || len(rep.Left) > 0 {
		ctx.Changed() // annotations at least
	}
	ops := make([]string, 0, len(rep.Ops))
	for op := range rep.Ops {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		ctx.Count("fuse: "+op, rep.Ops[op])
	}
	ctx.Note("%s", FullyFused(rep.Blocks))
	for _, l := range rep.Left {
		ctx.Note("not rewritten: %s", l)
	}
	for _, sm := range rep.Softmax {
		ctx.Note("not attention: %s", sm)
	}
	for _, r := range rep.Refusals {
		ctx.Note("refused: %s", r)
	}
	return nil
}

// FullyFused says whether every recognised block that an operator of the target can
// compute was rewritten into one, and lists the counts: attention, norms (LayerNorm and
// RMSNorm, plain or with the residual), GELU activations, FFN blocks and embeddings, fused
// and recognised. It generalises ONNX Runtime's encoder test (an embedding, one GELU per
// attention, two LayerNorms per attention) to decoders and other FFN activations: a
// block left with a reason (no operator for it on this target) is named with how many.
func FullyFused(blocks []*transformer.Block) string {
	fused, seen := map[transformer.Kind]int{}, map[transformer.Kind]int{}
	for _, b := range blocks {
		seen[b.Kind]++
		if b.Fused {
			fused[b.Kind]++
		}
	}
	var why []string
	for _, k := range fullyFusedKinds {
		if n := seen[k] - fused[k]; n > 0 {
			why = append(why, fmt.Sprintf("%d %s left", n, k))
		}
	}
	if seen[transformer.Attention] == 0 {
		why = append(why, "no attention")
	}
	norms := func(c map[transformer.Kind]int) int {
		return c[transformer.LayerNorm] + c[transformer.SkipLayerNorm] + c[transformer.RMSNorm] + c[transformer.SkipRMSNorm]
	}
	counts := func(c map[transformer.Kind]int) string {
		return fmt.Sprintf("embedding %d, attention %d, gelu %d, ffn %d, norms %d (skip %d)",
			c[transformer.Embedding], c[transformer.Attention], c[transformer.Gelu], c[transformer.FFN],
			norms(c), c[transformer.SkipLayerNorm]+c[transformer.SkipRMSNorm])
	}
	verdict := "yes"
	if len(why) > 0 {
		verdict = "no: " + strings.Join(why, "; ")
	}
	return fmt.Sprintf("fully fused: %s; fused %s; recognised %s", verdict, counts(fused), counts(seen))
}

// fullyFusedKinds are the kinds every target has an operator for; a recognised block of
// these kinds left decomposed means the model is not fully fused. (Residual+norm and
// embedding operators exist for ONNX Runtime only; FFN and affine norms are annotations.)
var fullyFusedKinds = []transformer.Kind{
	transformer.Attention, transformer.LayerNorm, transformer.RMSNorm, transformer.Gelu,
}
