package transformer_test

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/shape"
)

// TestEmbeddingCorpus: every corpus model has one embedding block; it fuses into
// EmbedLayerNormalization except where the model has no position embedding (DeBERTa), and
// the outputs stay within 1e-4 of the original's.
func TestEmbeddingCorpus(t *testing.T) {
	fams := []*transformer.Family{transformer.LayerNormFamily, transformer.SkipFamily, transformer.EmbeddingFamily}
	envs := []transformer.Env{{Target: transformer.ORT}, {Target: transformer.ONNX}}
	geCorpus(t, fams, envs, func(name string, env *transformer.Env, rep *transformer.Report, m *ir.Model) string {
		var emb []*transformer.Block
		for _, b := range rep.Blocks {
			if b.Kind == transformer.Embedding {
				emb = append(emb, b)
			}
		}
		ops := ortcheck.Ops(m.Graph)
		fused := ops["com.microsoft.EmbedLayerNormalization"]
		wantFused := 1
		if strings.HasPrefix(name, "deberta") || env.Target == transformer.ONNX {
			wantFused = 0
		}
		if len(emb) != 1 || fused != wantFused {
			t.Errorf("%s: %d embedding blocks, %d EmbedLayerNormalization; want 1 and %d\nleft %v\nrefusals %v", name, len(emb), fused, wantFused, rep.Left, rep.Refusals)
		}
		for _, r := range rep.Refusals {
			if strings.HasPrefix(r.Rule, "embedding/") {
				t.Logf("%s %s refusal: %s", name, env.Target, r)
			}
		}
		desc := ""
		if len(emb) == 1 {
			b := emb[0]
			var roles []string
			for _, r := range []string{"segment_ids", "position_ids", "segment_embedding", "mask"} {
				if b.Roles[r] != nil {
					roles = append(roles, r)
				}
			}
			desc = fmt.Sprintf("%-26s positions=%g %-32s", b.Variant, b.Params["positions"], strings.Join(roles, ","))
		}
		left := geLeft(rep, transformer.Embedding)
		if len(left) > 60 {
			left = left[:60] + "..."
		}
		return fmt.Sprintf("EmbedLayerNorm %d %s %s", fused, desc, left)
	})
}

// ---- unit tests ----

// embTables are the tables of the test graphs (abbreviated: geFillRandom fills them).
const embTables = `
  float[6,4] word = {...},
  float[8,4] pos = {...},
  float[2,4] seg = {...},
  int64[1,8] pos_buf = {0, 1, 2, 3, 4, 5, 6, 7},
  int64[1,8] tt_buf = {0, 0, 0, 0, 0, 0, 0, 0},
  float[4] gamma = {1.1, 0.9, 1.2, 0.8},
  float[4] beta = {0.1, -0.1, 0.2, -0.2},
  int64 i0 = {0},
  int64 i1 = {1},
  int64[1] a0 = {0},
  int64[1] a1 = {1},
  int64[1] a2 = {2},
  int32 c1 = {1},
  float two = {2},
  float eps = {1e-12}`

// embDecomposedLN is torch's LayerNorm of x into y.
const embDecomposedLN = `
  mean = ReduceMean <axes = [-1]> (x)
  d = Sub (x, mean)
  sq = Pow (d, two)
  var = ReduceMean <axes = [-1]> (sq)
  ve = Add (var, eps)
  sd = Sqrt (ve)
  nrm = Div (d, sd)
  sc = Mul (nrm, gamma)
  y = Add (sc, beta)`

// embBERTPositions are BERT's position ids: the buffer sliced to the sequence length.
const embBERTPositions = `
  shp = Shape (input_ids)
  sl = Gather <axis = 0> (shp, i1)
  slu = Unsqueeze (sl, a0)
  pids = Slice (pos_buf, a0, slu, a1, a1)`

// embRoBERTaPositions are RoBERTa's: cumsum of the non-padding mask plus padding_idx
// (1), and its token types: the zero buffer expanded to the input's shape.
const embRoBERTaPositions = `
  ne = Equal (input_ids, i1)
  nn = Not (ne)
  ci = Cast <to = 6> (nn)
  cs = CumSum (ci, c1)
  mm = Mul (cs, ci)
  c64 = Cast <to = 7> (mm)
  pids = Add (c64, i1)
  shp = Shape (input_ids)
  sl = Gather <axis = 0> (shp, i1)
  slu = Unsqueeze (sl, a0)
  tbs = Slice (tt_buf, a0, slu, a1, a1)
  tids = Expand (tbs, shp)`

func embGraph(inputs, outputs, extraInits, body string) string {
	return fmt.Sprintf("g (%s) => (%s) <%s%s\n> {%s\n}", inputs, outputs, embTables, extraInits, body)
}

var (
	embBERT = embGraph("int64[batch,seq] input_ids, int64[batch,seq] token_type_ids", "float[batch,seq,4] y", "",
		embBERTPositions+`
  w = Gather (word, input_ids)
  tt = Gather (seg, token_type_ids)
  wt = Add (w, tt)
  p = Gather (pos, pids)
  x = Add (wt, p)`+embDecomposedLN)
	embRoBERTa = embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] y", "",
		embRoBERTaPositions+`
  w = Gather (word, input_ids)
  tt = Gather (seg, tids)
  wt = Add (w, tt)
  p = Gather (pos, pids)
  x = Add (wt, p)`+embDecomposedLN)
	embDistilBERT = embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] y", "", `
  w = Gather (word, input_ids)
  shp = Shape (w)
  sl = Gather <axis = 0> (shp, i1)
  slu = Unsqueeze (sl, a0)
  pids = Slice (pos_buf, a0, slu, a1, a1)
  p = Gather (pos, pids)
  x = Add (w, p)
  y = LayerNormalization <axis = -1, epsilon = 1e-12> (x, gamma, beta)`)
	// A static BERT: fold evaluated the position lookup into a constant.
	embStatic = embGraph("int64[1,5] input_ids, int64[1,5] token_type_ids", "float[1,5,4] y", ",\n  float[1,5,4] p = {...}", `
  w = Gather (word, input_ids)
  tt = Gather (seg, token_type_ids)
  wt = Add (tt, w)
  x = Add (p, wt)`+embDecomposedLN)
	// Positions from Range(0, S, 1): a [S] id vector broadcast over the batch.
	embRange = embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] y", "", `
  shp = Shape (input_ids)
  sl = Gather <axis = 0> (shp, i1)
  pids = Range (i0, sl, i1)
  w = Gather (word, input_ids)
  p = Gather (pos, pids)
  x = Add (p, w)
  y = LayerNormalization <axis = -1, epsilon = 1e-12> (x, gamma, beta)`)
	// BART: learned positions arange(S) + 2.
	embBART = embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] y", ",\n  int64 i2 = {2}", `
  shp = Shape (input_ids)
  sl = Gather <axis = 0> (shp, i1)
  pids = Range (i0, sl, i1)
  po = Add (pids, i2)
  w = Gather (word, input_ids)
  p = Gather (pos, po)
  x = Add (w, p)
  y = LayerNormalization <axis = -1, epsilon = 1e-12> (x, gamma, beta)`)
	embDeBERTa = embGraph("int64[batch,seq] input_ids, int64[batch,seq] attention_mask", "float[batch,seq,4] z", "", `
  x = Gather (word, input_ids)`+embDecomposedLN+`
  mu = Unsqueeze (attention_mask, a2)
  mc = Cast <to = 1> (mu)
  z = Mul (y, mc)`)
)

// geFillRandom gives every all-zero float initializer of 8 or more elements (the
// abbreviated tables of the test graphs) deterministic pseudo-random values.
func geFillRandom(m *ir.Model) {
	seed := uint32(1)
	for _, v := range m.Graph.Initializers {
		t := v.Const
		if t.DType != ir.Float || t.NumElements() < 8 {
			continue
		}
		vals, _ := t.Float32s()
		zero := true
		for _, x := range vals {
			zero = zero && x == 0
		}
		if !zero {
			continue
		}
		for i := range vals {
			seed = seed*1664525 + 1013904223
			vals[i] = float32(seed>>8)/float32(1<<24) - 0.5
		}
		*t = *ir.FloatTensor(t.Dims, vals)
		t.Name = v.Name
	}
}

// embInputs are ids for a [batch, seq] model: input ids < 6 (with the padding id 1), token
// types 0/1, a mask with the last position of the last row off.
func embInputs(m *ir.Model) map[string]*ndarray.Array {
	out := map[string]*ndarray.Array{}
	for _, in := range m.Graph.Inputs {
		batch, seq := int64(2), int64(5)
		if d := in.Type.Shape[0]; d.Known {
			batch = d.Value
		}
		if d := in.Type.Shape[1]; d.Known {
			seq = d.Value
		}
		v := make([]int64, batch*seq)
		for i := range v {
			switch {
			case strings.Contains(in.Name, "type"):
				v[i] = int64(i % 2)
			case strings.Contains(in.Name, "mask"):
				v[i] = 1
				if i == len(v)-1 {
					v[i] = 0
				}
			default:
				v[i] = int64((i*7 + 3) % 6)
			}
		}
		out[in.Name] = ndarray.FromInt64([]int64{batch, seq}, v)
	}
	return out
}

// embOnly recognises the single embedding block of m with fams.
func embOnly(t *testing.T, m *ir.Model, fams []*transformer.Family) (*transformer.Block, []patterns.Refusal) {
	t.Helper()
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	blocks, refs := transformer.Recognize(m.Graph, fams)
	var emb []*transformer.Block
	for _, b := range blocks {
		if b.Kind == transformer.Embedding {
			emb = append(emb, b)
		}
	}
	if len(emb) != 1 {
		return nil, refs
	}
	return emb[0], refs
}

// TestEmbeddingVariants: each form is recognised with its roles and params (alone, on the
// decomposed LayerNorm, and after LayerNormFamily and SkipFamily have run), fuses for ORT
// into EmbedLayerNormalization (once), and ORT computes the same values.
func TestEmbeddingVariants(t *testing.T) {
	orttest.RequireLib(t)
	all := []*transformer.Family{transformer.LayerNormFamily, transformer.SkipFamily, transformer.EmbeddingFamily}
	alone := []*transformer.Family{transformer.EmbeddingFamily}
	cases := []struct {
		name, opsets, src string
		fams              []*transformer.Family
		variant           string
		positions         float64
		roles             []string // roles that must be set
		noRoles           []string // roles that must be absent
		fusedIn           int      // inputs of the fused op
	}{
		{"bert-decomposed", `"" : 13`, embBERT, alone, "embedding/decomposed", 1,
			[]string{"input_ids", "segment_ids", "position_ids", "word_embedding", "position_embedding", "segment_embedding", "gamma", "beta"}, nil, 7},
		{"bert-layernorm", `"" : 13`, embBERT, all, "embedding/layernorm", 1,
			[]string{"input_ids", "segment_ids", "position_ids", "gamma", "beta"}, nil, 7},
		{"roberta-skip", `"" : 13`, embRoBERTa, all, "embedding/skip-layernorm", 2,
			[]string{"input_ids", "position_ids", "position_embedding"}, []string{"segment_ids"}, 9},
		{"roberta-decomposed", `"" : 13`, embRoBERTa, alone, "embedding/decomposed", 2,
			[]string{"input_ids", "position_ids"}, []string{"segment_ids"}, 9},
		{"distilbert", `"" : 17`, embDistilBERT, all, "embedding/layernorm", 1,
			[]string{"input_ids", "position_ids"}, []string{"segment_ids", "segment_embedding"}, 7},
		{"range-positions", `"" : 17`, embRange, all, "embedding/layernorm", 1,
			[]string{"input_ids", "position_ids"}, []string{"segment_ids"}, 7},
		{"bart-offset", `"" : 17`, embBART, all, "embedding/layernorm", 1,
			[]string{"input_ids", "position_ids", "position_embedding"}, []string{"segment_ids"}, 7},
		// XLM's position_table[:S][None] and pos_emb(arange(S))[None]: no position ids.
		{"sliced-positions", `"" : 13`, strings.Replace(embBERT, "  p = Gather (pos, pids)", "  p0 = Slice (pos, a0, slu, a0)\n  p = Unsqueeze (p0, a0)", 1), alone, "embedding/decomposed", 1,
			[]string{"input_ids", "segment_ids", "position_embedding"}, []string{"position_ids"}, 7},
		{"unsqueezed-lookup", `"" : 13`, strings.Replace(embBERT, "  p = Gather (pos, pids)", "  pr = Range (i0, sl, i1)\n  p0 = Gather (pos, pr)\n  p = Unsqueeze (p0, a0)", 1), alone, "embedding/decomposed", 1,
			[]string{"input_ids", "segment_ids", "position_ids", "position_embedding"}, nil, 7},
		{"static", `"" : 13`, embStatic, alone, "embedding/decomposed", 3,
			[]string{"input_ids", "segment_ids"}, []string{"position_ids", "position_embedding"}, 7},
	}
	for _, c := range cases {
		c := c
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, c.opsets, c.src)
			geFillRandom(m)
			inputs := embInputs(m)
			want := ortcheck.RunModel(t, m, inputs, ort.OptDisabled)
			if c.fams[0] == transformer.EmbeddingFamily { // recognition on the decomposed graph
				b, refs := embOnly(t, m, c.fams)
				if b == nil {
					t.Fatalf("no embedding block; refusals %v", refs)
				}
				embCheckBlock(t, b, c.variant, c.positions, c.roles, c.noRoles)
			}
			rep := geFuse(t, m, c.fams, &transformer.Env{Model: m, Target: transformer.ORT})
			ops := ortcheck.Ops(m.Graph)
			if ops["com.microsoft.EmbedLayerNormalization"] != 1 || ops["Gather"] != 0 {
				t.Fatalf("after fuse: %v (left %v, refusals %v)", ops, rep.Left, rep.Refusals)
			}
			var fused, block *transformer.Block
			for _, b := range rep.Blocks {
				if b.Kind == transformer.Embedding {
					fused = b
				}
			}
			if fused == nil || !fused.Fused || fused.Params["positions"] != map[bool]float64{true: 2, false: 1}[c.positions == 2] {
				t.Fatalf("fused block %+v", fused)
			}
			for _, n := range m.Graph.Nodes() {
				if n.OpType == "EmbedLayerNormalization" && len(n.Inputs()) != c.fusedIn {
					t.Errorf("EmbedLayerNormalization has %d inputs, want %d", len(n.Inputs()), c.fusedIn)
				}
			}
			if c.fams[0] != transformer.EmbeddingFamily {
				// The variant the pipeline saw: recognise the block on a fresh copy.
				m2 := geParse(t, c.opsets, c.src)
				if _, err := shape.Infer(m2); err != nil {
					t.Fatal(err)
				}
				for _, f := range c.fams[:len(c.fams)-1] {
					if _, err := transformer.Fuse(m2, []*transformer.Family{f}, &transformer.Env{Model: m2, Target: transformer.ORT}); err != nil {
						t.Fatal(err)
					}
				}
				block, _ = embOnly(t, m2, []*transformer.Family{transformer.EmbeddingFamily})
				if block == nil {
					t.Fatal("no embedding block after the LayerNorm families")
				}
				embCheckBlock(t, block, c.variant, c.positions, c.roles, c.noRoles)
			}
			for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptExtended} {
				if d := ortcheck.MaxDiff(t, want, ortcheck.RunModel(t, m, inputs, level)); d > 1e-5 {
					t.Errorf("fused output differs by %g (level %d)", d, level)
				}
			}
		})
	}
}

func embCheckBlock(t *testing.T, b *transformer.Block, variant string, positions float64, roles, noRoles []string) {
	t.Helper()
	if b.Variant != variant || b.Params["positions"] != positions || b.Fused {
		t.Errorf("recognised %s positions=%g fused=%v; want %s positions=%g", b.Variant, b.Params["positions"], b.Fused, variant, positions)
	}
	for _, r := range roles {
		if b.Roles[r] == nil {
			t.Errorf("role %s missing", r)
		}
	}
	for _, r := range noRoles {
		if b.Roles[r] != nil {
			t.Errorf("role %s set (%s)", r, b.Roles[r].Name)
		}
	}
	if b.Params["hidden"] != 4 || math.Abs(b.Params["epsilon"]-1e-12) > 1e-18 {
		t.Errorf("params %v", b.Params)
	}
}

// TestEmbeddingLeft: DeBERTa's embedding (no position table, a mask multiply after the
// LayerNorm) and any embedding for the ONNX target are recognised and left with the
// reason; the LayerNorm inside is still fused by LayerNormFamily.
func TestEmbeddingLeft(t *testing.T) {
	all := []*transformer.Family{transformer.LayerNormFamily, transformer.SkipFamily, transformer.EmbeddingFamily}
	cases := []struct {
		name, opsets, src string
		target            transformer.Target
		variant, reason   string
		layerNorms        int // LayerNormalization ops after fuse
	}{
		{"deberta", `"" : 13`, embDeBERTa, transformer.ORT, "embedding/layernorm+mask", "no position embedding", 1},
		{"onnx-target", `"" : 17`, embBERT, transformer.ONNX, "embedding/layernorm", "no standard EmbedLayerNormalization operator", 1},
		{"onnx-target-opset13", `"" : 13`, embBERT, transformer.ONNX, "embedding/decomposed", "no standard EmbedLayerNormalization operator", 0},
	}
	for _, c := range cases {
		c := c
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, c.opsets, c.src)
			rep := geFuse(t, m, all, &transformer.Env{Model: m, Target: c.target})
			var emb *transformer.Block
			for _, b := range rep.Blocks {
				if b.Kind == transformer.Embedding {
					emb = b
				}
			}
			if emb == nil || emb.Variant != c.variant {
				t.Fatalf("embedding block %+v, want %s; refusals %v", emb, c.variant, rep.Refusals)
			}
			var emb0 []string
			for _, l := range rep.Left {
				if strings.HasPrefix(l, "embedding.0") {
					emb0 = append(emb0, l)
				}
			}
			expectReason(t, emb0, c.reason)
			ops := ortcheck.Ops(m.Graph)
			if ops["com.microsoft.EmbedLayerNormalization"] != 0 || ops["LayerNormalization"] != c.layerNorms {
				t.Errorf("ops %v", ops)
			}
			// The normalisation node carries the embedding annotation.
			p, _ := emb.Root.Producer()
			if k, _ := p.Meta("qcc.kind"); k != "Embedding" {
				t.Errorf("root %s annotated %q, want Embedding", p, k)
			}
		})
	}
}

// TestEmbeddingRefusals: each refusal reason.
func TestEmbeddingRefusals(t *testing.T) {
	bertWith := func(old, new string) string { return strings.Replace(embBERT, old, new, 1) }
	cases := []struct{ name, src, reason string }{
		{"eps", bertWith("float eps = {1e-12}", "float eps = {0.5}"), "eps 0.5 out of range (0, 0.001]"},
		{"axis", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] y", "", `
  w = Gather (word, input_ids)
  y = LayerNormalization <axis = 1> (w, gamma, beta)`), "normalised from axis 1, not the last"},
		{"gamma-not-constant", strings.Replace(bertWith("int64[batch,seq] token_type_ids", "int64[batch,seq] token_type_ids, float[4] g2"),
			"sc = Mul (nrm, gamma)", "sc = Mul (nrm, g2)", 1), "gamma is not a constant"},
		{"ambiguous", embGraph("int64[batch,seq] a_ids, int64[batch,seq] b_ids", "float[batch,seq,4] y", ",\n  float[6,4] word2 = {...}", `
  w = Gather (word, a_ids)
  w2 = Gather (word2, b_ids)
  x = Add (w, w2)`+embDecomposedLN), "two lookups by input ids with tables of 6 rows: cannot tell the word embedding from the segment embedding"},
		{"per-position-dynamic", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] y", ",\n  float[1,5,4] p = {...}", `
  w = Gather (word, input_ids)
  x = Add (w, p)`+embDecomposedLN), "a constant term of 5 positions, and the sequence length is seq"},
		{"batch-constant", embGraph("int64[batch,seq] input_ids", "float[batch,seq,4] y", ",\n  float[2,1,4] p = {...}", `
  w = Gather (word, input_ids)
  x = Add (w, p)`+embDecomposedLN), "constant term of shape [2 1 4] varies along the batch"},
		{"offset-outside", strings.Replace(embBART, "int64 i2 = {2}", "int64 i2 = {9}", 1),
			"position ids 0..S-1 + 9 outside the table of 8 rows"},
		{"table-3d", embGraph("int64[batch,seq] input_ids", "float[batch,seq,1,4] y", ",\n  float[6,1,4] w3 = {...}", `
  w = Gather (w3, input_ids)
  y = LayerNormalization (w, gamma, beta)`), "table w3 has shape [6 1 4], not [rows, hidden]"},
	}
	for _, c := range cases {
		c := c
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, `"" : 17`, c.src)
			geFillRandom(m)
			b, refs := embOnly(t, m, []*transformer.Family{transformer.EmbeddingFamily})
			if b != nil {
				t.Fatalf("recognised %s; want the refusal %q", b.Variant, c.reason)
			}
			expectExactReason(t, refusalReasons(refs), c.reason)
		})
	}
}

// TestEmbeddingPositionOffset: positions 0..S-1 + k are recognised with the offset, and
// EmbedLayerNormalization gets the table from row k (no position_ids input).
func TestEmbeddingPositionOffset(t *testing.T) {
	m := geParse(t, `"" : 17`, embBART)
	geFillRandom(m)
	b, refs := embOnly(t, m, []*transformer.Family{transformer.EmbeddingFamily})
	if b == nil || b.Params["position_offset"] != 2 || b.Params["positions"] != 1 {
		t.Fatalf("block %+v; refusals %v", b, refs)
	}
	geFuse(t, m, []*transformer.Family{transformer.EmbeddingFamily}, &transformer.Env{Model: m, Target: transformer.ORT})
	for _, n := range m.Graph.Nodes() {
		if n.OpType != "EmbedLayerNormalization" {
			continue
		}
		want, _ := patterns.ConstOf(b.Roles["position_embedding"]).Float32s()
		got, _ := patterns.ConstOf(n.Input(3)).Float32s()
		if len(got) != len(want)-2*4 || got[0] != want[2*4] || got[len(got)-1] != want[len(want)-1] {
			t.Errorf("position table of %d values, want rows 2.. of the original's %d", len(got), len(want))
		}
		return
	}
	t.Errorf("no EmbedLayerNormalization: %v", ortcheck.Ops(m.Graph))
}

// TestEmbeddingFusedForm: EmbedLayerNormalization is recognised as a fused block with
// the original ids behind its Casts, and fusing leaves it alone.
func TestEmbeddingFusedForm(t *testing.T) {
	m := geParse(t, `"" : 13, "com.microsoft" : 1`, embGraph("int64[batch,seq] input_ids, int64[batch,seq] token_type_ids", "float[batch,seq,4] y", "", `
  ids = Cast <to = 6> (input_ids)
  tts = Cast <to = 6> (token_type_ids)
  y, mi = com.microsoft.EmbedLayerNormalization <epsilon = 1e-12> (ids, tts, word, pos, seg, gamma, beta)`))
	b, refs := embOnly(t, m, []*transformer.Family{transformer.EmbeddingFamily})
	if b == nil || b.Variant != "embedding/fused" || !b.Fused {
		t.Fatalf("block %+v, refusals %v", b, refs)
	}
	if b.Roles["input_ids"].Name != "input_ids" || b.Roles["segment_ids"].Name != "token_type_ids" || b.Roles["position_embedding"].Name != "pos" {
		t.Errorf("roles %v", b.Roles)
	}
	if b.Params["positions"] != 1 || b.Params["hidden"] != 4 || math.Abs(b.Params["epsilon"]-1e-12) > 1e-18 {
		t.Errorf("params %v", b.Params)
	}
	before := fmt.Sprint(ortcheck.Ops(m.Graph))
	geFuse(t, m, []*transformer.Family{transformer.EmbeddingFamily}, &transformer.Env{Model: m, Target: transformer.ORT})
	if after := fmt.Sprint(ortcheck.Ops(m.Graph)); after != before {
		t.Errorf("fuse changed a fused model: %s -> %s", before, after)
	}
}
