package transformer_test

import (
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// Decoder embeddings as torch exports them (before fold): the sum is read by the first
// layer's LayerNorm and by its residual (pre-norm), so no LayerNorm owns it.
const decPreNorm = `
  n = LayerNormalization <axis = -1, epsilon = 1e-5> (y, gamma, beta)
  r = Add (y, n)`

// decSeq is the sequence length as a scalar, from the input ids' shape.
const decSeq = `
  shp = Shape (input_ids)
  sl = Gather <axis = 0> (shp, i1)`

var (
	// GPT-2: wte(ids) + wpe(arange(S).unsqueeze(0)).
	decGPT2 = embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", "", decSeq+`
  pids = Range (i0, sl, i1)
  pu = Unsqueeze (pids, a0)
  w = Gather (word, input_ids)
  p = Gather (pos, pu)
  y = Add (w, p)`+decPreNorm)
	// GPT-2 exported without Range (opset < 11): arange(S) is the indices of S ones.
	decGPT2NonZero = embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", "", decSeq+decNonZeroArange("1")+`
  pu = Unsqueeze (pids, a0)
  w = Gather (word, input_ids)
  p = Gather (pos, pu)
  y = Add (w, p)`+decPreNorm)
	// BART: tok(ids) * sqrt(d) + pos(arange(S) + 2), positions first.
	decBART = embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", ",\n  int64 i2 = {2}", decSeq+`
  pids = Range (i0, sl, i1)
  po = Add (pids, i2)
  w = Gather (word, input_ids)
  ws = Mul (two, w)
  p = Gather (pos, po)
  y = Add (p, ws)`+decPreNorm)
	// Position ids given as an input; the lookups in either order.
	decPosInput = embGraph("int64[batch,seq] position_ids, int64[batch,seq] input_ids", "float[batch,seq,4] r", "", `
  p = Gather (pos, position_ids)
  w = Gather (word, input_ids)
  y = Add (p, w)`+decPreNorm)
	// Sinusoidal: a constant table sliced to S, unsqueezed, added to the scaled lookup.
	decSinusoidal = embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", ",\n  float[16,4] pe = {...}", decSeq+`
  slu = Unsqueeze (sl, a0)
  pes = Slice (pe, a0, slu, a0)
  peu = Unsqueeze (pes, a0)
  w = Gather (word, input_ids)
  ws = Mul (w, two)
  y = Add (ws, peu)`+decPreNorm)
	// A static sequence: fold evaluated the positions into a constant.
	decStatic = embGraph("int64[1,5] input_ids", "float[1,5,4] r", ",\n  float[1,5,4] p = {...}", `
  w = Gather (word, input_ids)
  y = Add (w, p)`+decPreNorm)
	// fairseq: positions from the cumulative sum over the padding mask.
	decFairseq = embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", "", embRoBERTaPositions+`
  w = Gather (word, input_ids)
  p = Gather (pos, pids)
  y = Add (w, p)`+decPreNorm)
	// Llama: the lookup alone (rotary positions are in the attention).
	decLlama = embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", "", `
  y = Gather (word, input_ids)`+decPreNorm)
)

// decNonZeroArange is pids = NonZero(ConstantOfShape([sl], fill)) as a [sl] vector.
func decNonZeroArange(fill string) string {
	return `
  slu = Unsqueeze (sl, a0)
  ones = ConstantOfShape <value = int64[1] {` + fill + `}> (slu)
  nz = NonZero (ones)
  nt = Transpose <perm = [1, 0]> (nz)
  pids = Squeeze (nt, a1)`
}

// TestDecoderEmbeddings: each form is recognised with its roles and params, fuse leaves
// it as it is with the reason for both targets (counted as recognised), and the model
// computes the same.
func TestDecoderEmbeddings(t *testing.T) {
	orttest.RequireLib(t)
	cases := []struct {
		name, src, variant string
		positions, offset  float64
		scale              float64
		roles, noRoles     []string
		// ortFused: for ORT, SkipFamily takes the sum of two [batch, seq, hidden] lookups
		// and the LayerNorm after it as a residual; the embedding+LayerNorm form then
		// fuses into EmbedLayerNormalization, whose embedding_sum output feeds the residual.
		ortFused bool
	}{
		{"gpt2", decGPT2, "embedding/token+positions", 1, 0, 1,
			[]string{"input_ids", "word_embedding", "position_ids", "position_embedding", "output"}, nil, false},
		{"gpt2-nonzero", decGPT2NonZero, "embedding/token+positions", 1, 0, 1,
			[]string{"input_ids", "word_embedding", "position_ids", "position_embedding", "output"}, nil, false},
		{"bart", decBART, "embedding/token+positions", 1, 2, 2,
			[]string{"input_ids", "word_embedding", "position_ids", "position_embedding", "output"}, nil, false},
		{"position-ids-input", decPosInput, "embedding/token+positions", 2, 0, 1,
			[]string{"input_ids", "word_embedding", "position_ids", "position_embedding", "output"}, nil, true},
		{"sinusoidal", decSinusoidal, "embedding/token+positions", 1, 0, 2,
			[]string{"input_ids", "word_embedding", "position_embedding", "output"}, []string{"position_ids"}, false},
		{"static", decStatic, "embedding/token+positions", 3, 0, 1,
			[]string{"input_ids", "word_embedding", "position_embedding", "output"}, []string{"position_ids"}, false},
		{"fairseq", decFairseq, "embedding/token+positions", 2, 0, 1,
			[]string{"input_ids", "word_embedding", "position_ids", "position_embedding", "output"}, nil, true},
		{"llama", decLlama, "embedding/token", 0, 0, 1,
			[]string{"input_ids", "word_embedding", "output"}, []string{"position_ids", "position_embedding"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, `"" : 17`, c.src)
			geFillRandom(m)
			b, refs := embOnly(t, m, transformer.Families)
			if b == nil {
				t.Fatalf("no embedding block; refusals %v", refs)
			}
			if b.Variant != c.variant || b.Params["positions"] != c.positions || b.Params["position_offset"] != c.offset ||
				b.Params["scale"] != c.scale || b.Params["hidden"] != 4 || b.Params["vocab"] != 6 || b.Fused {
				t.Errorf("recognised %s %v; want %s positions=%g offset=%g scale=%g", b.Variant, b.Params, c.variant, c.positions, c.offset, c.scale)
			}
			for _, r := range c.roles {
				if b.Roles[r] == nil {
					t.Errorf("role %s missing", r)
				}
			}
			for _, r := range c.noRoles {
				if b.Roles[r] != nil {
					t.Errorf("role %s set (%s)", r, b.Roles[r].Name)
				}
			}
			if b.Roles["input_ids"].Name != "input_ids" || b.Roles["word_embedding"].Name != "word" {
				t.Errorf("input_ids %s, word_embedding %s", b.Roles["input_ids"].Name, b.Roles["word_embedding"].Name)
			}
			for _, r := range refs {
				if strings.HasPrefix(r.Rule, "embedding/") {
					t.Errorf("refusal beside the block: %s", r)
				}
			}
			inputs := embInputs(m)
			want := ortcheck.RunModel(t, m, inputs, ort.OptDisabled)
			for _, target := range []transformer.Target{transformer.ORT, transformer.ONNX} {
				m := geParse(t, `"" : 17`, c.src)
				geFillRandom(m)
				rep := geFuse(t, m, transformer.Families, &transformer.Env{Model: m, Target: target})
				for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptExtended} {
					if d := ortcheck.MaxDiff(t, want, ortcheck.RunModel(t, m, inputs, level)); d > 1e-5 {
						t.Errorf("%s: output differs by %g (level %d)", target, d, level)
					}
				}
				if c.ortFused && target == transformer.ORT {
					ops := ortcheck.Ops(m.Graph)
					if ops["com.microsoft.EmbedLayerNormalization"] != 1 || ops["com.microsoft.SkipLayerNormalization"] != 0 || ops["Gather"] != 0 {
						t.Errorf("ops %v, want one EmbedLayerNormalization and nothing else of the embedding", ops)
					}
					continue
				}
				expectReason(t, rep.Left, "no LayerNorm after the sum")
				var emb *transformer.Block
				for _, b := range rep.Blocks {
					if b.Kind == transformer.Embedding {
						emb = b
					}
				}
				if emb == nil || emb.Variant != c.variant {
					t.Fatalf("%s: embedding block after fuse %+v", target, emb)
				}
				if p, _ := emb.Root.Producer(); p == nil {
					t.Fatalf("%s: the block's root has no producer", target)
				} else if k, _ := p.Meta("qcc.kind"); k != "Embedding" {
					t.Errorf("%s: root %s annotated %q, want Embedding", target, p, k)
				}
			}
		})
	}
}

// TestDecoderEmbeddingLayerNormNext: where a LayerNorm of the sum is its only reader,
// the embedding+LayerNorm form owns the sum, and ORT fuses it as before.
func TestDecoderEmbeddingLayerNormNext(t *testing.T) {
	src := strings.Replace(decGPT2, decPreNorm, `
  r = LayerNormalization <axis = -1, epsilon = 1e-5> (y, gamma, beta)`, 1)
	m := geParse(t, `"" : 17`, src)
	b, refs := embOnly(t, m, transformer.Families)
	if b == nil || b.Variant != "embedding/layernorm" {
		t.Fatalf("block %+v, want embedding/layernorm; refusals %v", b, refs)
	}
	// The token rules, asked directly about the sum, refuse it.
	found := false
	for _, r := range refsAt(t, m, "y") {
		found = found || r == "embedding/token+positions: the sum's only reader is a LayerNorm (LayerNormalization): the embedding+LayerNorm forms apply"
	}
	if !found {
		t.Errorf("no token+positions refusal at the sum; got %v", refsAt(t, m, "y"))
	}
	rep := geFuse(t, m, transformer.Families, &transformer.Env{Model: m, Target: transformer.ORT})
	if ops := ortcheck.Ops(m.Graph); ops["com.microsoft.EmbedLayerNormalization"] != 1 {
		t.Errorf("ops %v, left %v", ops, rep.Left)
	}
}

// refsAt runs the embedding rules at the value named at alone and returns their
// refusals as "rule: reason".
func refsAt(t *testing.T, m *ir.Model, at string) []string {
	t.Helper()
	var out []string
	for _, n := range m.Graph.Nodes() {
		for _, o := range n.Outputs() {
			if o == nil || o.Name != at {
				continue
			}
			for _, r := range transformer.EmbeddingFamily.Rules {
				mt := patterns.MatchValue(r.Pattern, o)
				if mt == nil {
					continue
				}
				why := patterns.Escapes(mt, r.Internal...)
				if why == "" && r.Check != nil {
					why = r.Check(mt)
				}
				if why != "" {
					out = append(out, r.Name+": "+why)
				}
			}
		}
	}
	return out
}

// TestDecoderEmbeddingRefusals: each refusal reason of the token forms.
func TestDecoderEmbeddingRefusals(t *testing.T) {
	cases := []struct{ name, src, reason string }{
		{"bias", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", "", `
  w = Gather (word, input_ids)
  y = Add (w, gamma)`+decPreNorm), "the added constant is the same at every position: a bias, not position embeddings"},
		{"summed-next", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", "", `
  w = Gather (word, input_ids)
  y = Add (w, gamma)`+decPreNorm), "the lookup is summed next (into y) with a term that is not position embeddings"},
		{"not-positions", embGraph("int64[batch,seq] input_ids, int64[batch,seq] token_type_ids", "float[batch,seq,4] r", "", `
  w = Gather (word, input_ids)
  tt = Gather (seg, token_type_ids)
  y = Add (w, tt)`+decPreNorm), "are not position ids (an arange, an input named like positions, or computed by Range or CumSum)"},
		{"nonzero-of-zeros", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", "", decSeq+decNonZeroArange("0")+`
  pu = Unsqueeze (pids, a0)
  w = Gather (word, input_ids)
  p = Gather (pos, pu)
  y = Add (w, p)`+decPreNorm), "position ids [1,?] do not provably run along the sequence of [batch,seq]"}, // no element is non-zero
		{"constant-positions-dynamic", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", ",\n  float[1,5,4] p = {...}", `
  w = Gather (word, input_ids)
  y = Add (w, p)`+decPreNorm), "a constant term of 5 positions, and the sequence length is seq"},
		{"slice-not-from-zero", embGraph("int64[1,3] input_ids", "float[1,3,4] r", ",\n  float[16,4] pe = {...},\n  int64[1] a4 = {4}", `
  pes = Slice (pe, a1, a4, a0)
  w = Gather (word, input_ids)
  y = Add (w, pes)`+decPreNorm), `position term "pes" slices its table other than from row 0`},
		{"not-rows", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", ",\n  float[16,4] pe = {...},\n  int64[1] a3 = {3}", `
  w = Gather (word, input_ids)
  pes = Slice (pe, a1, a3, a0)
  pe2 = Slice (pe, a0, a2, a0)
  pc = Concat <axis = 0> (pes, pe2)
  y = Add (w, pc)`+decPreNorm), `position term "pc" is [4,4], not provably [.., seq, 4]`},
		{"ids-rank", embGraph("int64[seq] input_ids", "float[seq,4] y", "", `
  y = Gather (word, input_ids)`), "input ids are int64[seq], not an integer [batch, sequence] tensor"},
		{"position-table-type", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", ",\n  float16[8,4] posh = {...}", decSeq+`
  pids = Range (i0, sl, i1)
  w = Gather (word, input_ids)
  p = Gather (posh, pids)
  y = Add (w, p)`+decPreNorm), "position table posh is float16[8 4], not float[positions, 4]"},
		{"position-ids-rank", embGraph("int64[batch,seq] input_ids, int64[batch,seq,1] position_ids", "float[?,?,?,4] r", "", `
  w = Gather (word, input_ids)
  p = Gather (pos, position_ids)
  y = Add (w, p)`+decPreNorm), "position ids are int64[batch,seq,1], not [batch or 1, sequence] or [sequence]"},
		{"position-ids-length", embGraph("int64[batch,seq] input_ids, int64[batch,other] position_ids", "float[batch,?,4] r", "", `
  w = Gather (word, input_ids)
  p = Gather (pos, position_ids)
  y = Add (w, p)`+decPreNorm), "position ids [batch,other] do not provably run along the sequence of [batch,seq]"},
		{"sum-shape", embGraph("int64[batch,seq] input_ids, int64[2,seq] position_ids", "float[2,seq,4] r", "", `
  w = Gather (word, input_ids)
  p = Gather (pos, position_ids)
  y = Add (w, p)`+decPreNorm), "the sum float[2,seq,4] is not provably the shape of the token lookup float[batch,seq,4]"},
		{"position-term-rank", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", "", `
  w = Gather (word, input_ids)
  pv = Identity (gamma)
  y = Add (w, pv)`+decPreNorm), `position term "pv" is float[4], not [.., sequence, hidden]`},
		{"position-term-op", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", ",\n  float[16,4] pe = {...}", decSeq+`
  slu = Unsqueeze (sl, a0)
  pes = Slice (pe, a0, slu, a0)
  ps = Sin (pes)
  w = Gather (word, input_ids)
  y = Add (w, ps)`+decPreNorm), `position term "ps" is neither a lookup nor rows of a constant table`},
		{"scale-not-scalar", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", "", `
  w = Gather (word, input_ids)
  y = Mul (w, gamma)`+decPreNorm), "token scale is float[4], not a float scalar"},
		{"table-1-row", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] r", ",\n  float[1,4] one = {...}", `
  y = Gather (one, input_ids)`+decPreNorm), "token table one is float[1 4], not float [vocab, hidden]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, `"" : 17`, c.src)
			geFillRandom(m)
			b, refs := embOnly(t, m, transformer.Families)
			if b != nil && b.Variant != "embedding/token" {
				t.Fatalf("recognised %s; want the refusal %q", b.Variant, c.reason)
			}
			expectReason(t, refusalReasons(refs), c.reason)
		})
	}
}
