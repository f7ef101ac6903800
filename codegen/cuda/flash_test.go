package cuda

import (
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/codegen/cuda/nvcc"
	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// The tensor-core attention (qcc/flash_attention.cuh) is planned for half and
// bfloat16 models, the precision pass's output. Its emulation (emulateFlash:
// element-type inputs and probabilities, float online softmax over tiles of 64
// keys) must agree with ONNX Runtime running the model's own half subgraph within
// the half tolerance (1e-2).

// fp16Pipeline and bf16Pipeline make a half and a bfloat16 model from a float one.
const (
	fp16Pipeline = "fold,fuse<target=ort>,precision<type=fp16>"
	bf16Pipeline = "fold,fuse<target=ort>,precision<type=bf16>"
)

// flashModel is an Attention-23 model in half: heads query heads of d over kv
// key/value heads, causal or not, with a [batch|1, 1, seq, kv_seq] additive mask
// (attn_mask) or none, keys of their own length (kvSeq "kv_seq") or the queries'.
func flashModel(heads, kv, d int, causal, bias bool, kvSeq string) string {
	mask, in := "", ""
	if bias {
		mask = ", m"
		in = fmt.Sprintf(", float16[batch,1,seq,%s] m", kvSeq)
	}
	return fmt.Sprintf(`<ir_version: 10, opset_import: ["" : 23]>
flash (float16[batch,seq,%d] q, float16[batch,%s,%d] k, float16[batch,%s,%d] v%s) => (float16[batch,seq,%d] y) {
  [attention] y = Attention <q_num_heads = %d, kv_num_heads = %d, is_causal = %d> (q, k, v%s)
}
`, heads*d, kvSeq, kv*d, kvSeq, kv*d, in, heads*d, heads, kv, map[bool]int{true: 1}[causal], mask)
}

// checkFlashInstances runs the oracle on every instance of p (all of a half or
// bfloat16 model) and returns the largest errors of its attention instances (and how many
// had the tensor-core kernel). An
// attention block whose heads fit the tensor-core tiles (a multiple of 16 up to
// 128) must have that kernel, any other the FP32-arithmetic one.
func checkFlashInstances(t *testing.T, m *ir.Model, p *plan) (maxAbs, maxRel float64, n int) {
	t.Helper()
	for _, in := range p.Instances {
		if in.Elem == elemFloat {
			t.Errorf("%s: element type float, want half or bfloat16", in.ID)
		}
		flash := in.Kernel.Launcher == "qcc::FlashAttention"
		if flash || in.Kernel.Launcher == "qcc::Attention" {
			d, _ := strconv.Atoi(constOf(t, in, "kHeadSize"))
			if fits := d%16 == 0 && d <= 128; fits != flash {
				t.Errorf("%s: kernel %s for heads of %d (notes: %v)", in.ID, in.Kernel.Name, d, p.Notes)
			}
		}
		for param, e := range emulateInstance(t, m, in) {
			if e.bad > 0 {
				t.Errorf("%s (%s): %d of %d elements of %s disagree; first %s", in.ID, in.Kernel.Name, e.bad, e.n, param, e.first)
			}
			if flash || in.Kernel.Launcher == "qcc::Attention" {
				maxAbs, maxRel = math.Max(maxAbs, e.maxAbs), math.Max(maxRel, e.maxRel)
			}
			if flash {
				n++
			}
		}
	}
	return maxAbs, maxRel, n
}

// TestFlashEdges plans half Attention-23 models of every supported head size and
// checks the tensor-core kernel's emulation against ONNX Runtime: sequences that
// are not a multiple of the 64-key tile, a single token, causal, an additive mask
// with fully masked rows (-inf in half), grouped-query heads and cross-attention.
func TestFlashEdges(t *testing.T) {
	orttest.RequireLib(t)
	cases := []struct {
		name           string
		heads, kv, d   int
		causal, bias   bool
		kvSeq          string
		batch, seq     int64
		wantTensorCore bool
	}{
		{"d32 causal seq100", 4, 4, 32, true, false, "seq", 2, 100, true},
		{"d64 mask seq130", 2, 2, 64, false, true, "seq", 3, 130, true},
		{"d80 grouped-query seq1", 4, 2, 80, false, false, "seq", 3, 1, true},
		{"d128 cross", 2, 2, 128, false, true, "kv_seq", 2, 70, true},
		{"d64 causal mask seq64", 2, 1, 64, true, true, "seq", 2, 64, true},
		{"d16 seq200", 2, 2, 16, false, false, "seq", 1, 200, true},
		// Refused (not a multiple of 16; wider than 128): the FP32-arithmetic kernel
		// on half values, with the reason in the notes.
		{"d24 refused", 2, 2, 24, false, true, "seq", 2, 50, false},
		{"d256 refused", 1, 1, 256, true, false, "seq", 1, 33, false},
		// bfloat16: ONNX Runtime's CPU provider has no bfloat16 Attention-23, so the
		// reference is the same subgraph widened to float, rounded to bfloat16.
		{"bf16 d64 causal mask seq100", 2, 2, 64, true, true, "seq", 2, 100, true},
		{"bf16 d128 grouped-query seq70", 4, 2, 128, false, false, "seq", 2, 70, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := flashModel(tc.heads, tc.kv, tc.d, tc.causal, tc.bias, tc.kvSeq)
			elem := elemHalf
			if strings.HasPrefix(tc.name, "bf16") {
				src, elem = strings.ReplaceAll(src, "float16", "bfloat16"), elemBF16
			}
			m, err := text.Parse(src)
			if err != nil {
				t.Fatal(err)
			}
			p, err := analyse(m, "flash", sizer{tc.batch, tc.seq})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Instances) != 1 {
				t.Fatalf("%d instances (skipped: %v)", len(p.Instances), p.Skipped)
			}
			in := p.Instances[0]
			if tc.wantTensorCore != (in.Kernel.Launcher == "qcc::FlashAttention") {
				t.Fatalf("kernel %s (notes: %v)", in.Kernel.Name, p.Notes)
			}
			if len(p.Notes) != 1 || !strings.Contains(p.Notes[0], map[bool]string{true: "tensor-core attention", false: "not " + cInt(int64(tc.d))}[tc.wantTensorCore]) {
				t.Errorf("notes %v do not say why", p.Notes)
			}
			if got := in.Kernel.elems(); tc.wantTensorCore && (len(got) != 1 || got[0] != elem) {
				t.Errorf("tensor-core kernel with element types %v, want %s only", got, elemNames[elem])
			}
			a, r, _ := checkFlashInstances(t, m, p)
			t.Logf("%s: max abs/rel error %.1e/%.1e", in.Kernel.Name, a, r)
			// The oracle sees a kernel that ignores the causal rule, or gives the
			// fully masked rows (-inf in half) NaN instead of Attention-23's 0.
			if tc.causal && !tc.bias { // the check data's bias masks the causal keys itself
				fixedAndBroken(t, m, in, map[string]string{"kCausal": "false"})
			}
			if tc.bias {
				fixedAndBroken(t, m, in, map[string]string{"kEmptyRow": "qcc::kEmptyRowNaN"})
			}
		})
	}
}

// TestFlashEmulation is the oracle on half models made by the precision pass from
// the corpus and the probes (causal, additive bias, cross-attention): every
// instance's emulation agrees with ONNX Runtime on the model's half subgraph, and
// every attention block whose heads fit the tensor-core tiles gets that kernel.
func TestFlashEmulation(t *testing.T) {
	orttest.RequireLib(t)
	type model struct {
		name, path, pipeline string
		elem                 int
	}
	var models []model
	for _, cm := range corpus.Models(t, "") {
		models = append(models, model{cm.Name, cm.Path, fp16Pipeline, elemHalf})
	}
	// bfloat16: the attention on tensor cores, the other blocks' float kernels on
	// bfloat16 values (no bfloat16 launch functions), against ONNX Runtime's
	// bfloat16 subgraphs (widened to float where its CPU provider has no kernel).
	for _, name := range []string{"bert.opset13", "distilbert.opset13"} {
		models = append(models, model{name + "/bf16", filepath.Join(corpus.Dir(t), name+".onnx"), bf16Pipeline, elemBF16})
	}
	// (bart's calibration in the precision pass stops in ONNX Runtime: its random
	// token ids are out of the decoder's embedding table.)
	for _, form := range []string{"gpt2-causal", "llama", "t5", "cross-attn", "causal-range", "mqa"} {
		models = append(models, model{form, filepath.Join(probeDir, form+".opset17.onnx"), fp16Pipeline, elemHalf})
	}
	flashSeen := 0
	for _, mm := range models {
		t.Run(mm.name, func(t *testing.T) {
			m := loadWith(t, mm.path, mm.pipeline)
			p := planOf(t, m, filepath.Base(mm.path))
			var half []*instance
			for _, in := range p.Instances {
				if in.Elem == mm.elem {
					half = append(half, in)
				}
			}
			if len(half) == 0 {
				t.Fatalf("no %s instances (skipped: %v)", elemNames[mm.elem], p.Skipped)
			}
			for _, note := range p.Notes {
				t.Logf("  %s", note)
			}
			hp := *p
			hp.Instances = half
			a, r, n := checkFlashInstances(t, m, &hp)
			flashSeen += n
			t.Logf("%d %s instances; tensor-core attention %d; attention max abs/rel error %.1e/%.1e", len(half), elemNames[mm.elem], n, a, r)
		})
	}
	if flashSeen == 0 {
		t.Error("no model got the tensor-core attention")
	}
}

// TestCompileFlash emits a half model's kernels (the corpus BERT through the
// precision pass: tensor-core attention on the packed QKV with a padding mask)
// and a bfloat16 Attention-23 model's (causal, grouped-query, additive mask), and
// compiles them and the check harness with nvcc.
func TestCompileFlash(t *testing.T) {
	nvcc.Require(t)
	orttest.RequireLib(t)
	bf16, err := text.Parse(strings.ReplaceAll(flashModel(4, 2, 64, true, true, "seq"), "float16", "bfloat16"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		m    *ir.Model
	}{
		{"bert-fp16", loadWith(t, filepath.Join(corpus.Dir(t), "bert.opset13.onnx"), fp16Pipeline)},
		{"attention23-bf16", bf16},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			res, err := Emit(c.m, dir, Options{Source: c.name})
			if err != nil {
				t.Fatal(err)
			}
			flash := false
			for _, k := range res.Kernels {
				flash = flash || strings.HasPrefix(k, "qcc_flash_attention")
			}
			if !flash {
				t.Fatalf("no tensor-core attention among %v (notes: %v)", res.Kernels, res.Notes)
			}
			compileEmitted(t, dir, c.name, true)
		})
	}
}

// TestFlashTerms: the tensor-core kernel's soft cap (Attention-23 in half), and
// GroupQueryAttention's sinks and sliding window with a soft cap (in half, lengths
// proved constant), agree with ONNX Runtime, and each term, left out, is seen.
func TestFlashTerms(t *testing.T) {
	orttest.RequireLib(t)
	cases := []struct {
		name, src string
		without   []map[string]string
	}{
		{"attention-23 softcap", `<ir_version: 10, opset_import: ["" : 23]>
flash (float16[batch,seq,128] q, float16[batch,seq,128] k, float16[batch,seq,128] v) => (float16[batch,seq,128] y) {
  [attention] y = Attention <q_num_heads = 2, kv_num_heads = 2, is_causal = 1, softcap = 2.0> (q, k, v)
}
`, []map[string]string{{"kSoftcap": "0.0f"}}},
		{"group-query window sinks softcap", `<ir_version: 10, opset_import: ["" : 17, "com.microsoft" : 1]>
flash (float16[2,100,256] q, float16[2,100,128] k, float16[2,100,128] v) => (float16[2,100,256] y) <
  int32[2] seqlens_k = {99, 99},
  int32 total = {100},
  float16[4] sink = {0.5, -1.0, 2.0, 0.0}
> {
  [attention] y = com.microsoft.GroupQueryAttention <num_heads = 4, kv_num_heads = 2, local_window_size = 30, softcap = 3.0> (q, k, v, "", "", seqlens_k, total, "", "", "", "", sink)
}
`, []map[string]string{{"kWindow": "0"}, {"kHasSink": "false"}, {"kSoftcap": "0.0f"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := text.Parse(tc.src)
			if err != nil {
				t.Fatal(err)
			}
			p, err := analyse(m, "flash", sizer{2, 100})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Instances) != 1 || p.Instances[0].Kernel.Launcher != "qcc::FlashAttention" {
				t.Fatalf("want one tensor-core kernel; instances %d (skipped: %v, notes %v)", len(p.Instances), p.Skipped, p.Notes)
			}
			in := p.Instances[0]
			a, r, _ := checkFlashInstances(t, m, p)
			t.Logf("%s: max abs/rel error %.1e/%.1e", in.Kernel.Name, a, r)
			for _, w := range tc.without {
				fixedAndBroken(t, m, in, w)
			}
		})
	}
}
