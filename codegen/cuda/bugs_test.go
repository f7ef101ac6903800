package cuda

import (
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	cudakernels "github.com/qcc-dev/qcc/cuda_kernels"
	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// The tests below pin the bindings that computed something other than the model: each
// checks the plan's specialisation, then runs the oracle (the kernel's emulation against
// ONNX Runtime on the model's subgraph) on the plan as it is and on the plan as it was
// before the fix (the same instance with the old constants), which must disagree.

// constOf returns a kernel constant's value.
func constOf(t *testing.T, in *instance, name string) string {
	t.Helper()
	for _, c := range in.Kernel.Consts {
		if c.Name == name {
			return c.Value
		}
	}
	t.Fatalf("%s has no constant %s", in.Kernel.Name, name)
	return ""
}

// withConsts is in bound to a copy of its kernel with some constants replaced.
func withConsts(in *instance, set map[string]string) *instance {
	k := *in.Kernel
	k.Consts = append([]constant{}, k.Consts...)
	for i, c := range k.Consts {
		if v, ok := set[c.Name]; ok {
			k.Consts[i].Value = v
		}
	}
	cp := *in
	cp.Kernel = &k
	return &cp
}

// disagreements is how many output elements of in's emulation differ from ONNX
// Runtime on the model's subgraph.
func disagreements(t *testing.T, m *ir.Model, in *instance) (int, string) {
	t.Helper()
	bad, first := 0, ""
	for _, e := range emulateInstance(t, m, in) {
		if e.bad > 0 && first == "" {
			first = e.first
		}
		bad += e.bad
	}
	return bad, first
}

// wantAgree fails the test when in's emulation disagrees with ONNX Runtime on the
// model's subgraph.
func wantAgree(t *testing.T, m *ir.Model, in *instance) {
	t.Helper()
	if bad, first := disagreements(t, m, in); bad > 0 {
		t.Errorf("%s: %d elements disagree with ONNX Runtime on the model's subgraph; first %s", in.ID, bad, first)
	}
}

// wantSkipped fails the test for each reason no skipped block of p gives.
func wantSkipped(t *testing.T, p *plan, reasons ...string) {
	t.Helper()
	all := strings.Join(p.Skipped, "\n")
	for _, why := range reasons {
		if !strings.Contains(all, why) {
			t.Errorf("no refusal %q; skipped:\n%s", why, all)
		}
	}
}

// attentionOf plans a model and returns its first attention instance.
func attentionOf(t *testing.T, path string) (*ir.Model, *instance) {
	t.Helper()
	m := load(t, path)
	p := planOf(t, m, filepath.Base(path))
	for _, in := range p.Instances {
		if in.Kernel.Launcher == "qcc::Attention" {
			return m, in
		}
	}
	t.Fatalf("%s: no attention instance (skipped: %v)", path, p.Skipped)
	return nil, nil
}

// fixedAndBroken checks that the oracle accepts in and rejects the old binding.
func fixedAndBroken(t *testing.T, m *ir.Model, in *instance, old map[string]string) {
	t.Helper()
	wantAgree(t, m, in)
	if bad, _ := disagreements(t, m, withConsts(in, old)); bad == 0 {
		t.Errorf("%s: the binding before the fix (%v) agrees with the model's subgraph: the check cannot see the bug", in.ID, old)
	} else {
		t.Logf("%s: before the fix (%v) %d elements disagree", in.ID, old, bad)
	}
}

// Bug 1: causal attention was emitted as bidirectional (unidirectional of
// com.microsoft.Attention and is_causal of Attention-23 were not read).
func TestBugCausal(t *testing.T) {
	orttest.RequireLib(t)
	for _, path := range []string{"testdata/probe-causal-ort.onnx.txt", "testdata/probe-causal23.onnx.txt"} {
		m, in := attentionOf(t, path)
		if constOf(t, in, "kCausal") != "true" || !strings.Contains(in.Kernel.Name, "_causal") {
			t.Errorf("%s: kernel %s is not causal", path, in.Kernel.Name)
		}
		fixedAndBroken(t, m, in, map[string]string{"kCausal": "false"})
	}
}

// Bug 2: grouped-query Attention-23 (2 key/value heads for 4 query heads) read K and V
// with the query's row length and head index: out of bounds.
func TestBugGroupedQuery(t *testing.T) {
	orttest.RequireLib(t)
	m, in := attentionOf(t, "testdata/probe-gqa.onnx.txt")
	if constOf(t, in, "kKvHeads") != "2" || constOf(t, in, "kKvLd") != "8" || constOf(t, in, "kLd") != "16" {
		t.Errorf("kernel %s: kKvHeads %s, kKvLd %s, kLd %s; want 2, 8, 16", in.Kernel.Name,
			constOf(t, in, "kKvHeads"), constOf(t, in, "kKvLd"), constOf(t, in, "kLd"))
	}
	fixedAndBroken(t, m, in, map[string]string{"kKvHeads": "4", "kKvLd": "16"})
}

// Bug 3: DeBERTa v1 passes K and V as [batch, heads, seq, head_size]; the kernel read
// them as [batch, seq, hidden].
func TestBugDebertaKVLayout(t *testing.T) {
	orttest.RequireLib(t)
	m, in := attentionOf(t, filepath.Join(corpus.Dir(t), "deberta.opset13.onnx"))
	if constOf(t, in, "kKvLayout") != "qcc::kLayoutBNSH" {
		t.Errorf("kernel %s reads K/V as %s", in.Kernel.Name, constOf(t, in, "kKvLayout"))
	}
	for _, p := range []string{"k", "v"} {
		if s := in.bound[p].Type.Shape; len(s) != 4 {
			t.Errorf("%s is bound to %s, not the [batch, heads, seq, head_size] value", p, in.bound[p].Type)
		}
	}
	fixedAndBroken(t, m, in, map[string]string{"kKvLayout": "qcc::kLayoutBSH", "kKvLd": "64"})
}

// Bug 4: DeBERTa's block output is the product of MultiHeadAttention's output with the
// row mask that zeroes padding queries; the kernel bound to it did not compute the
// product (padding rows came out as a mean of V).
func TestBugDebertaRowZeroing(t *testing.T) {
	orttest.RequireLib(t)
	for _, name := range []string{"deberta.opset13", "deberta-v2.opset17"} {
		m, in := attentionOf(t, filepath.Join(corpus.Dir(t), name+".onnx"))
		out, keep := in.bound["output"], in.bound["row_scale"]
		if p, _ := out.Producer(); p == nil || p.OpType != "Mul" || keep == nil || p.Input(0) != keep && p.Input(1) != keep {
			t.Fatalf("%s: output bound to %s and row_scale to %v, not the row-zeroing Mul and its mask", name, out.Name, keep)
		}
		fixedAndBroken(t, m, in, map[string]string{"kHasRowScale": "false"})
		// Without the row scale bound, the block's subgraph reads a value no parameter
		// binds: the check refuses to build a reference.
		cp := *in
		cp.bound = map[string]*ir.Value{}
		for p, v := range in.bound {
			if p != "row_scale" {
				cp.bound[p] = v
			}
		}
		cp.Tensors = nil
		for _, tt := range in.Tensors {
			if tt.Param != "row_scale" {
				cp.Tensors = append(cp.Tensors, tt)
			}
		}
		if _, err := cp.extract(m, false); err == nil || !strings.Contains(err.Error(), "which no kernel parameter binds") {
			t.Errorf("%s: extracting without the row scale: %v", name, err)
		}
	}
}

// TestRefusals: forms the kernel does not compute are refused, with the reason, instead
// of getting a kernel that computes something else. Three attention blocks of the
// model are forms the kernel computes, checked by the oracle: y4's soft-capped scores,
// y5's float attn_mask (computed from a float [batch, seq] mask and the shape of q,
// [batch, 1, seq, seq]) is an additive bias shared by the heads, and y7 is
// cross-attention over keys of their own length.
func TestRefusals(t *testing.T) {
	orttest.RequireLib(t)
	m := load(t, "testdata/probe-refused.onnx.txt")
	p := planOf(t, m, "probe-refused")
	computed := map[string]bool{}
	for _, in := range p.Instances {
		if in.Kernel.Launcher != "qcc::Attention" {
			continue
		}
		out := in.bound["output"].Name
		switch out {
		case "y4":
			if got := constOf(t, in, "kSoftcap"); got != "30.0f" {
				t.Errorf("%s: kSoftcap %s, want 30.0f", in.ID, got)
			}
		case "y5":
			if got := [3]string{constOf(t, in, "kBiasBatch"), constOf(t, in, "kBiasHeads"), constOf(t, in, "kBiasRows")}; got != [3]string{"true", "false", "true"} {
				t.Errorf("%s: bias axes (batch, heads, rows) %v, want true, false, true", in.ID, got)
			}
		case "y7":
			if in.Dims[2].Value == in.Dims[1].Value {
				t.Errorf("%s: the check data has %d keys for %d queries: it cannot tell them apart", in.ID, in.Dims[2].Value, in.Dims[1].Value)
			}
		default:
			t.Errorf("%s got kernel %s", in.ID, in.Kernel.Name)
			continue
		}
		computed[out] = true
		wantAgree(t, m, in)
	}
	if !computed["y4"] || !computed["y5"] || !computed["y7"] {
		t.Errorf("kernels for %v, want y4, y5 and y7", computed)
	}
	wantSkipped(t, p,
		"past state (past, past_sequence_length)",
		"mask_index int32[batch] is not an int32 [batch, seq] key padding mask",
		"past_key/past_value",
		"attn_mask bool[batch,1,seq,seq] is not float: a boolean attn_mask has no kernel",
		"output present_k is used",
		"qk_matmul_output in mode 3 (the scores after the mask, the soft cap or the softmax)",
		"causal attention of query float[batch,seq,12] over keys float[batch,kvseq,12] of another length has no kernel",
		"Attention's query float[batch,2,seq,6] is not [batch, seq, hidden] (4-D and packed inputs have no kernel)",
	)
}

// TestQuantizeTies: the check data of a QuantizeLinear with power-of-two scales holds
// exact .5 ties, where rounding half away from zero differs from ONNX's half to even,
// and the emulation (rint, as the kernel) matches ONNX Runtime exactly (the float
// tolerance is 0 steps).
func TestQuantizeTies(t *testing.T) {
	orttest.RequireLib(t)
	m := load(t, "testdata/probe-edges.onnx.txt")
	p := planOf(t, m, "probe-edges")
	n := 0
	for _, in := range p.Instances {
		if in.Kernel.Launcher != "qcc::QuantizeLinear" {
			continue
		}
		n++
		if in.Tol[0] != [2]float64{0, 0} {
			t.Errorf("%s: float tolerance %v, want exact", in.ID, in.Tol[0])
		}
		ref, err := in.reference(m)
		if err != nil {
			t.Fatal(err)
		}
		x, scale, zp, y := ref.Inputs["x"].Float64s(), ref.Inputs["scale"].Float64s(), ref.Inputs["zero_point"].Float64s(), ref.Outputs["y"].Float64s()
		ties, differ := 0, 0
		for i := range x {
			c := 0
			if len(scale) > 1 {
				c = i % len(scale) // the last axis
			}
			q := x[i] / scale[c]
			if q == math.Trunc(q)+0.5 || q == math.Trunc(q)-0.5 {
				ties++
				away := math.Max(-128, math.Min(127, math.Round(q)+zp[c]))
				if away != y[i] {
					differ++
				}
			}
		}
		if ties == 0 || differ == 0 {
			t.Errorf("%s: %d exact ties, %d where half away from zero differs from ONNX Runtime", in.ID, ties, differ)
		}
		wantAgree(t, m, in)
	}
	if n != 2 {
		t.Errorf("%d QuantizeLinear instances, want 2", n)
	}
}

// TestEmbeddingIDs: ONNX Runtime refuses an id outside its table; the kernel cannot, and
// its specification poisons the token's row with NaN instead of reading a clamped row.
// The check data's ids span the whole table, and the sequence may be the table length.
func TestEmbeddingIDs(t *testing.T) {
	orttest.RequireLib(t)
	m := load(t, "../../testdata/models/bert.opset13.onnx")
	p, err := analyse(m, "bert", sizer{batch: 2, seq: 100000})
	if err != nil {
		t.Fatal(err)
	}
	var in *instance
	for _, x := range p.Instances {
		if x.Kernel.Launcher == "qcc::EmbedLayerNorm" {
			in = x
		}
	}
	if in == nil {
		t.Fatal("no embedding instance")
	}
	if seq, table := in.Dims[1].Value, constOf(t, in, "kMaxPositions"); cInt(seq) != table {
		t.Errorf("sequence %d, want the position table's %s", seq, table)
	}
	wantAgree(t, m, in)
	// One id past the vocabulary.
	vocab := constOf(t, in, "kVocab")
	cp := *in
	cp.Tensors = append([]*tensor{}, in.Tensors...)
	for i, tt := range cp.Tensors {
		if tt.Param == "input_ids" {
			c := *tt
			gen := tt.gen
			c.gen = func(n int64) []float64 {
				v := gen(n)
				v[3], _ = strconv.ParseFloat(vocab, 64)
				return v
			}
			cp.Tensors[i] = &c
		}
	}
	if _, err := cp.reference(m); err == nil {
		t.Error("ONNX Runtime accepted an input id past the vocabulary")
	}
	ref, err := in.reference(m)
	if err != nil {
		t.Fatal(err)
	}
	a := map[string][]float64{}
	for p, arr := range ref.Inputs {
		a[p] = arr.Float64s()
	}
	a["input_ids"][3], _ = strconv.ParseFloat(vocab, 64)
	out := emulate(t, in, a)["output"]
	h := len(out) / len(a["input_ids"])
	for i, v := range out {
		if math.IsNaN(v) != (i/h == 3) {
			t.Fatalf("output[%d] = %g: only token 3's row should be NaN", i, v)
		}
	}
}

// TestMaskPredicate: com.microsoft.Attention keeps keys whose mask_index is > 0, so a
// -1 pads like a 0 (the check data holds one); the kernel's predicate is mask <= 0.
func TestMaskPredicate(t *testing.T) {
	orttest.RequireLib(t)
	m, in := attentionOf(t, "../../testdata/models/bert.opset13.onnx")
	outputs := map[float64][]float64{}
	for _, sub := range []float64{-1, 0, 1} {
		cp := *in
		cp.Tensors = append([]*tensor{}, in.Tensors...)
		found := false
		for i, tt := range cp.Tensors {
			if tt.Param == "mask" {
				c := *tt
				gen := tt.gen
				c.gen = func(n int64) []float64 {
					v := gen(n)
					for j := range v {
						if v[j] == -1 {
							v[j], found = sub, true
						}
					}
					return v
				}
				cp.Tensors[i] = &c
			}
		}
		ref, err := cp.reference(m)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			t.Fatal("the check data's mask holds no -1")
		}
		outputs[sub] = ref.Outputs["output"].Float64s()
		if bad, first := disagreements(t, m, &cp); bad > 0 {
			t.Errorf("mask -1 -> %g: %d elements disagree; first %s", sub, bad, first)
		}
	}
	same := func(a, b []float64) bool {
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	if !same(outputs[-1], outputs[0]) || same(outputs[-1], outputs[1]) {
		t.Error("ONNX Runtime does not treat a -1 in mask_index as padding")
	}
}

// TestRotaryReason: a fused rotary embedding (RotaryEmbedding-23, ONNX Runtime's) has
// no kernel, and the emitter says so for each one.
func TestRotaryReason(t *testing.T) {
	m := load(t, "testdata/probe-rotary.onnx.txt")
	p := planOf(t, m, "probe-rotary")
	wantSkipped(t, p,
		"rotary.0 (RotaryEmbedding): node rope23: rotary embedding has no kernel",
		"rotary.1 (com.microsoft.RotaryEmbedding): node rope_ms: rotary embedding has no kernel",
	)
}

// afterOperator is a model whose attention operators' outputs go through one more
// node each: an Attention-23 (a1) and a MultiHeadAttention (a2) followed by a Relu,
// and a MultiHeadAttention (a3) whose output is multiplied by another value than a
// row mask's product with it (its Relu times a [batch, seq, 1] mask).
const afterOperator = `<ir_version: 10, opset_import: ["" : 23, "com.microsoft" : 1]>
after (float[batch,seq,12] q, float[batch,seq,12] k, float[batch,seq,12] v, float[batch,seq,1] keep) => (float[batch,seq,12] y1, float[batch,seq,12] y2, float[batch,seq,12] y3) {
  [onnx] a1 = Attention <q_num_heads = 2, kv_num_heads = 2> (q, k, v)
  [onnx_after] y1 = Relu (a1)
  [mha] a2 = com.microsoft.MultiHeadAttention <num_heads = 2> (q, k, v)
  [mha_after] y2 = Relu (a2)
  [mha3] a3 = com.microsoft.MultiHeadAttention <num_heads = 2> (q, k, v)
  [mha3_relu] r3 = Relu (a3)
  [mha3_mul] y3 = Mul (r3, keep)
}`

// TestRefusalsAfterOperator: a block whose output is computed after its fused
// attention operator's is refused, as the kernel computes only the operator (for
// MultiHeadAttention, the operator times a row mask, DeBERTa's padded-row zeroing).
// The recognisers end the fused forms' blocks at the operator (or at DeBERTa's
// row-zeroing Mul), so each block here is the recognised one extended by the nodes
// after its operator, as a recogniser that took them in would give it.
func TestRefusalsAfterOperator(t *testing.T) {
	m, err := text.Parse(afterOperator)
	if err != nil {
		t.Fatal(err)
	}
	bs, _ := transformer.Recognize(m.Graph, transformer.Families)
	for _, c := range []struct{ root, why string }{
		{"y1", "the block's output y1 is computed after the operator's: the kernel computes only the operator"},
		{"y2", "the block's output y2 is not MultiHeadAttention's output or its product with a row mask"},
		{"y3", "the block's output y3 is not MultiHeadAttention's output or its product with a row mask"},
	} {
		root := m.Graph.Value(c.root)
		var bl *transformer.Block
		for _, b := range bs {
			if b.Kind != transformer.Attention || attnOp(b) == nil {
				continue
			}
			// The block of the operator root is computed from.
			for v := root; v != nil && bl == nil; {
				p, _ := v.Producer()
				if p == nil {
					break
				}
				if p == attnOp(b) {
					bl = b
				}
				v = p.Input(0)
			}
		}
		if bl == nil {
			t.Fatalf("%s: no attention block under it (blocks %v)", c.root, bs)
		}
		// The operator's block as it is gets a kernel; extended to root, it is refused.
		for _, extend := range []bool{false, true} {
			cp := *bl
			if extend {
				cp.Root = root
				cp.Nodes = append([]*ir.Node{}, bl.Nodes...)
				for v := root; v != bl.Root; {
					p, _ := v.Producer()
					cp.Nodes = append(cp.Nodes, p)
					v = p.Input(0)
				}
			}
			b := newBuilder("after", sizer{defaultBatch, defaultSeq})
			b.block(&cp)
			all := strings.Join(b.p.Skipped, "\n")
			switch {
			case !extend && (len(b.p.Skipped) > 0 || len(b.p.Instances) != 1):
				t.Errorf("%s: the operator's own block: %d instances, skipped %q", c.root, len(b.p.Instances), all)
			case extend && (len(b.p.Instances) > 0 || !strings.Contains(all, c.why)):
				t.Errorf("%s: %d instances, skipped %q; want the refusal %q", c.root, len(b.p.Instances), all, c.why)
			}
		}
	}
}

// channelLayouts is per-channel QuantizeLinear, and DequantizeLinear of its output, on
// the axis cases QuantizeKernel tells apart: the last axis (kInner 1), a middle axis and
// axis 0, with channels of a multiple of the vector width or not, so that vectors of
// float (4) and half (8) lie in one channel, in consecutive channels, or across a
// channel boundary inside a channel of several elements.
const channelLayouts = `<ir_version: 10, opset_import: ["" : 17]>
layouts (float[2,3,8] last8, float[2,3,6] last6, float[2,4,2] mid4x2, float[2,2,3] mid2x3, float[2,3,8] mid3x8, float[4,6] first4x6, float[3,8] first3x8, float[8,1] first8x1) => (float[2,3,8] d_last8, float[2,3,6] d_last6, float[2,4,2] d_mid4x2, float[2,2,3] d_mid2x3, float[2,3,8] d_mid3x8, float[4,6] d_first4x6, float[3,8] d_first3x8, float[8,1] d_first8x1) <
  float[8] s8 = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.1, 0.3, 0.7},
  int8[8] z8 = {0, 1, -1, 2, -2, 3, -3, 4},
  float[6] s6 = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.1},
  int8[6] z6 = {0, 1, -1, 2, -2, 3},
  float[4] s4 = {0.5, 0.25, 0.125, 0.0625},
  int8[4] z4 = {0, 1, -1, 2},
  float[3] s3 = {0.5, 0.25, 0.125},
  int8[3] z3 = {0, 1, -1},
  float[2] s2 = {0.5, 0.125},
  int8[2] z2 = {1, -1}
> {
  q_last8 = QuantizeLinear <axis = 2> (last8, s8, z8)
  d_last8 = DequantizeLinear <axis = 2> (q_last8, s8, z8)
  q_last6 = QuantizeLinear <axis = -1> (last6, s6, z6)
  d_last6 = DequantizeLinear <axis = -1> (q_last6, s6, z6)
  q_mid4x2 = QuantizeLinear <axis = 1> (mid4x2, s4, z4)
  d_mid4x2 = DequantizeLinear <axis = 1> (q_mid4x2, s4, z4)
  q_mid2x3 = QuantizeLinear <axis = 1> (mid2x3, s2, z2)
  d_mid2x3 = DequantizeLinear <axis = 1> (q_mid2x3, s2, z2)
  q_mid3x8 = QuantizeLinear <axis = 1> (mid3x8, s3, z3)
  d_mid3x8 = DequantizeLinear <axis = 1> (q_mid3x8, s3, z3)
  q_first4x6 = QuantizeLinear <axis = 0> (first4x6, s4, z4)
  d_first4x6 = DequantizeLinear <axis = 0> (q_first4x6, s4, z4)
  q_first3x8 = QuantizeLinear <axis = 0> (first3x8, s3, z3)
  d_first3x8 = DequantizeLinear <axis = 0> (q_first3x8, s3, z3)
  q_first8x1 = QuantizeLinear <axis = 0> (first8x1, s8, z8)
  d_first8x1 = DequantizeLinear <axis = 0> (q_first8x1, s8, z8)
}`

// TestQuantizeChannelVectors: per-channel QuantizeKernel finds a vector's channel once
// (ch0, from the vector's first element) and steps through the vector from it; its
// emulation (qdqSpec.run) follows that indexing, for the vector widths of the float and
// the half launch, and agrees exactly with ONNX Runtime's QuantizeLinear and
// DequantizeLinear on every axis case, including vectors that span channels. Taking
// ch0 for the whole vector (the mapping the kernel must not fall into) disagrees
// wherever a vector spans channels: the check data can see it. The kernel's lines the
// emulation transcribes are pinned, so a change to them fails here until the
// emulation follows.
func TestQuantizeChannelVectors(t *testing.T) {
	orttest.RequireLib(t)
	src, err := fs.ReadFile(cudakernels.Headers, "qcc/quantize.cuh")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"return Spec::kPerChannel ? static_cast<int>((i / Spec::kInner) % Spec::kChannels) : 0;",
		"return Spec::kPerChannel ? VecWidth<T>(Spec::kChannels * Spec::kInner) : VecWidth<T>(16);",
		"const long long i0 = whole ? c * V : chunks * V + (c - chunks);",
		"const int ch0 = Spec::kPerChannel ? QuantChannel<Spec>(i0) : 0;",
		"const int ch = Spec::kInner % V == 0 ? ch0 : (Spec::kInner == 1 ? ch0 + j : QuantChannel<Spec>(i0 + j));",
	} {
		if !strings.Contains(string(src), line) {
			t.Errorf("qcc/quantize.cuh no longer has the line the emulation transcribes (update qdqSpec in eval_test.go): %s", line)
		}
	}
	m, err := text.Parse(channelLayouts)
	if err != nil {
		t.Fatal(err)
	}
	p := planOf(t, m, "layouts")
	if len(p.Skipped) > 0 {
		t.Errorf("skipped %v", p.Skipped)
	}
	branches := map[string]bool{}
	n := 0
	for _, in := range p.Instances {
		if in.Kernel.Launcher != "qcc::QuantizeLinear" && in.Kernel.Launcher != "qcc::DequantizeLinear" {
			continue
		}
		n++
		c := func(name string) float64 {
			f, err := strconv.ParseFloat(constOf(t, in, name), 64)
			if err != nil {
				b, _ := strconv.ParseBool(constOf(t, in, name))
				f = map[bool]float64{true: 1}[b]
			}
			return f
		}
		q := qdqSpecOf(in, c)
		if !q.perChannel {
			t.Errorf("%s: kernel %s is per tensor", in.ID, in.Kernel.Name)
			continue
		}
		a, outs := referenceValues(t, m, in)
		want := outs["y"]
		perVector := func(i0, _, _ int) int { return q.quantChannel(i0) }
		for _, tBytes := range []int{4, 2} {
			v := q.vec(tBytes)
			spans := false
			for i0 := 0; i0 < len(want); i0 += v {
				spans = spans || q.quantChannel(i0) != q.quantChannel(i0+v-1)
			}
			branch := "ch0 + j"
			switch {
			case q.inner%v == 0:
				branch = "ch0"
			case q.inner != 1:
				branch = "QuantChannel(i0 + j)"
			}
			branches[fmt.Sprintf("%d/%s", tBytes, branch)] = true
			where := fmt.Sprintf("%s (%s, %d channels of %d) with %d-byte T, vectors of %d (%s)", in.ID, in.Kernel.Name, q.channels, q.inner, tBytes, v, branch)
			if bad, first := differing(q.run(a, tBytes, q.channel), want); bad > 0 {
				t.Errorf("%s: %d of %d elements disagree with ONNX Runtime; first %s", where, bad, len(want), first)
			}
			bad, _ := differing(q.run(a, tBytes, perVector), want)
			switch {
			case spans && bad == 0:
				t.Errorf("%s: vectors span channels, yet one channel per vector agrees with ONNX Runtime: the check cannot see it", where)
			case !spans && bad > 0:
				t.Errorf("%s: no vector spans channels, yet one channel per vector disagrees in %d elements", where, bad)
			case spans:
				t.Logf("%s: one channel per vector: %d of %d elements disagree", where, bad, len(want))
			}
		}
	}
	if n != 16 {
		t.Errorf("%d Q/DQ instances, want 16", n)
	}
	for _, tBytes := range []int{4, 2} {
		for _, b := range []string{"ch0", "ch0 + j", "QuantChannel(i0 + j)"} {
			if !branches[fmt.Sprintf("%d/%s", tBytes, b)] {
				t.Errorf("no layout takes the kernel's %s with %d-byte T", b, tBytes)
			}
		}
	}
}

// differing counts the elements of got that are not exactly want's.
func differing(got, want []float64) (int, string) {
	bad, first := 0, ""
	for i := range want {
		if got[i] != want[i] {
			if bad == 0 {
				first = fmt.Sprintf("[%d]: emulated %g, ONNX Runtime %g", i, got[i], want[i])
			}
			bad++
		}
	}
	return bad, first
}

// Bug 5: a com.microsoft attention operator without a scale attribute (a model fused
// by ONNX Runtime's optimizer) computes with 1/sqrt(head_size); the kernel took the
// block's scale parameter, which is 0 there, and scaled every score to 0.
func TestBugDefaultScale(t *testing.T) {
	orttest.RequireLib(t)
	m, in := attentionOf(t, "testdata/mha-default-scale.onnx.txt")
	if got := constOf(t, in, "kScale"); got == "0.0f" {
		t.Errorf("kScale %s", got)
	}
	fixedAndBroken(t, m, in, map[string]string{"kScale": "0.0f"})
}
