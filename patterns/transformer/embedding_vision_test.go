package transformer_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// visGraph is a ViT embedding as torch exports it (before fold): 8x8 images in 4x4
// patches of hidden size 4, the patches flattened by a Reshape whose target comes from
// Shape, each token expanded to the batch through torch's Equal/Where rewrite of -1.
// body continues from the patches "pt" and the expanded tokens "ce" and "de" into y.
func visGraph(inits, body string) string {
	return fmt.Sprintf(`g (float[batch,3,8,8] pixel_values) => (float[?,?,?] y) <
  float[4,3,4,4] pw = {...},
  float[4] pb = {0.1, -0.2, 0.3, 0},
  float[1,1,4] cls = {0.5, -0.5, 0.25, 1},
  float[1,1,4] dist = {-1, 0.5, 0, 0.75},
  float[1,5,4] pos5 = {...},
  float[1,6,4] pos6 = {...},
  float[1,4,4] pos4 = {...},
  int64[3] ones3 = {1, 1, 1},
  int64[3] m1 = {-1, -1, -1},
  int64[1] am1 = {-1},
  int64[1] a0 = {0},
  int64[1] a2 = {2},
  int64 i0 = {0}%s
> {
  c = Conv <kernel_shape = [4, 4], strides = [4, 4]> (pixel_values, pw, pb)
  cs = Shape (c)
  csl = Slice (cs, a0, a2, a0)
  tgt = Concat <axis = 0> (csl, am1)
  f = Reshape (c, tgt)
  pt = Transpose <perm = [0, 2, 1]> (f)
  xs = Shape (pixel_values)
  b0 = Gather <axis = 0> (xs, i0)
  bu = Unsqueeze (b0, a0)
  et = Concat <axis = 0> (bu, am1, am1)
  eq = Equal (et, m1)
  wh = Where (eq, ones3, et)
  ce = Expand (cls, wh)
  de = Expand (dist, wh)%s
}`, inits, body)
}

var (
	visViT       = visGraph("", "\n  tok = Concat <axis = 1> (ce, pt)\n  y = Add (tok, pos5)")
	visDeiT      = visGraph("", "\n  tok = Concat <axis = 1> (ce, de, pt)\n  y = Add (pos6, tok)")
	visPosFirst  = visGraph("", "\n  pp = Add (pt, pos4)\n  y = Concat <axis = 1> (ce, pp)")
	visNoPos     = visGraph("", "\n  y = Concat <axis = 1> (ce, pt)")
	visPatchPos  = visGraph("", "\n  y = Add (pt, pos4)")
	visPatchOnly = visGraph("", "\n  y = Identity (pt)")
)

func visInputs() map[string]*ndarray.Array {
	v := make([]float32, 2*3*8*8)
	for i := range v {
		v[i] = float32((i*37)%23)/11 - 1
	}
	return map[string]*ndarray.Array{"pixel_values": ndarray.FromFloat32([]int64{2, 3, 8, 8}, v)}
}

// TestVisionEmbeddings: each form is recognised with its roles and params, the shape
// engine proves the batch of every part, and fuse leaves the block as it is (with the
// reason, recognised and annotated) for both targets.
func TestVisionEmbeddings(t *testing.T) {
	orttest.RequireLib(t)
	cases := []struct {
		name, src, variant string
		tokens             float64
		roles, noRoles     []string
	}{
		{"vit", visViT, "embedding/vision", 5, []string{"class_token", "position_embedding"}, []string{"distillation_token"}},
		{"deit", visDeiT, "embedding/vision", 6, []string{"class_token", "distillation_token", "position_embedding"}, nil},
		{"positions-first", visPosFirst, "embedding/vision-pos-first", 5, []string{"class_token", "position_embedding"}, []string{"distillation_token"}},
		{"no-positions", visNoPos, "embedding/vision-tokens", 5, []string{"class_token"}, []string{"position_embedding"}},
		{"patches-positions", visPatchPos, "embedding/vision-patches", 4, []string{"position_embedding"}, []string{"class_token"}},
		{"patches", visPatchOnly, "embedding/patches", 4, nil, []string{"class_token", "position_embedding"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, `"" : 17`, c.src)
			geFillRandom(m)
			b, refs := embOnly(t, m, transformer.Families)
			if b == nil {
				t.Fatalf("no embedding block; refusals %v", refs)
			}
			if b.Variant != c.variant || b.Params["tokens"] != c.tokens || b.Params["hidden"] != 4 || b.Params["patches"] != 4 ||
				b.Params["patch_size"] != 4 || b.Params["patch_stride"] != 4 || b.Fused {
				t.Errorf("recognised %s %v; want %s with %g tokens", b.Variant, b.Params, c.variant, c.tokens)
			}
			for _, r := range append([]string{"pixel_values", "patch_weight", "patch_bias", "output"}, c.roles...) {
				if b.Roles[r] == nil {
					t.Errorf("role %s missing", r)
				}
			}
			for _, r := range c.noRoles {
				if b.Roles[r] != nil {
					t.Errorf("role %s set (%s)", r, b.Roles[r].Name)
				}
			}
			for _, r := range refs {
				if strings.HasPrefix(r.Rule, "embedding/") {
					t.Errorf("refusal beside the block: %s", r)
				}
			}
			want := ortcheck.RunModel(t, m, visInputs(), ort.OptDisabled)
			for _, target := range []transformer.Target{transformer.ORT, transformer.ONNX} {
				m := geParse(t, `"" : 17`, c.src)
				geFillRandom(m)
				rep := geFuse(t, m, transformer.Families, &transformer.Env{Model: m, Target: target})
				if got := geLeft(rep, transformer.Embedding); got != "1 left: no operator of the target computes a patch embedding; left as is" {
					t.Errorf("%s: left %q", target, got)
				}
				expectReason(t, rep.Left, "no operator of the target computes a patch embedding; left as is")
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
				if d := ortcheck.MaxDiff(t, want, ortcheck.RunModel(t, m, visInputs(), ort.OptDisabled)); d > 1e-5 {
					t.Errorf("%s: output differs by %g", target, d)
				}
			}
		})
	}
}

// TestVisionEmbeddingRefusals: each refusal reason.
func TestVisionEmbeddingRefusals(t *testing.T) {
	with := func(src, old, new string) string {
		if !strings.Contains(src, old) {
			t.Fatalf("%q not in the graph", old)
		}
		return strings.Replace(src, old, new, 1)
	}
	cases := []struct{ name, src, reason string }{
		{"perm", with(visViT, "perm = [0, 2, 1]", "perm = [2, 0, 1]"), "the patches are transposed by [2 0 1], not [0, 2, 1]"},
		{"grouped", with(with(with(visPatchOnly, "float[4,3,4,4] pw", "float[3,1,4,4] pw"), "<kernel_shape = [4, 4], strides = [4, 4]>", "<group = 3, kernel_shape = [4, 4], strides = [4, 4]>"), "(pixel_values, pw, pb)", "(pixel_values, pw)"),
			"a grouped convolution (group 3), not a patch projection"},
		{"bias", with(visPatchOnly, "float[4] pb = {0.1, -0.2, 0.3, 0}", "float[1] pb = {0.1}"), "patch bias is [1], not [4]"},
		{"flatten-batch", with(visPatchOnly, "tgt = Concat <axis = 0> (csl, am1)", "tgt = Concat <axis = 0> (am1, a2, a2)"),
			"the convolution's [batch,4,2,2] is reshaped to [4*batch,2,2], not [batch, 4, patches] with the input's batch"},
		{"token-width", with(visNoPos, "float[1,1,4] cls = {0.5, -0.5, 0.25, 1}", "float[1,2,4] cls = {0.5, -0.5, 0.25, 1, 0, 0, 0, 0}"),
			"the class token is float[1 2 4], not one row of the hidden size 4"},
		{"token-batch", with(visViT, "ce = Expand (cls, wh)", "ce = Expand (cls, ones3)"),
			"the class token is expanded to [1,1,4], not provably [batch, 1, 4] with the input's batch"},
		{"pos-rows", with(visPosFirst, "pp = Add (pt, pos4)", "pp = Add (pt, cls)"),
			"position table of 1 rows added to [batch,4,4]"},
		{"pos-batch", with(visViT, "float[1,5,4] pos5", "float[2,5,4] pos5"), "position table is float[2 5 4], not [1, tokens, 4]"},
		{"pixels-not-float", with(visViT, "float[batch,3,8,8] pixel_values", "int32[batch,3,8,8] pixel_values"),
			"pixel input is int32[batch,3,8,8], not float [batch, channels, spatial...]"},
		{"weight-not-float", with(visViT, "float[4,3,4,4] pw = {...}", "int8[4,3,4,4] pw = {...}"),
			"patch weight is int8[4 3 4 4] for an input of rank 4"},
		{"read-outside", with(visViT, "y = Add (tok, pos5)", "y = Add (tok, pos5)\n  pr = ReduceSum (pt)"),
			`intermediate value "pt" is also used outside the block by ReduceSum`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := geParse(t, `"" : 17`, c.src)
			geFillRandom(m)
			b, refs := embOnly(t, m, []*transformer.Family{transformer.VisionEmbeddingFamily})
			if b != nil && b.Root.Name == "y" {
				t.Fatalf("recognised %s at y; want the refusal %q", b.Variant, c.reason)
			}
			expectReason(t, refusalReasons(refs), c.reason)
		})
	}
}
