package transformer_test

import (
	"fmt"
	"math"
	"math/rand"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/internal/txtar"
	"github.com/qcc-dev/qcc/internal/update"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/prune"
	"github.com/qcc-dev/qcc/shape"
)

// dbOpts describes a small DeBERTa attention block: batch 2, seq 5, hidden 8, 2 heads of
// 4, relative span 3 (6 relative positions).
type dbOpts struct {
	v2        bool   // separate projections, heads flattened to [b·h, s, d] (else v1: packed in_proj, 4-D heads)
	mask      string // "where" (XSoftmax, default), "add" (additive float mask), "none"
	noZero    bool   // no second masked_fill after the softmax
	terms     string // "both" (default: qk + (c2p + p2c)), "chain" ((qk + c2p) + p2c), "c2p", "p2c", "none"
	scaleMul  bool   // multiply by 1/√(3d) instead of dividing by √(3d)
	fill      string // XSoftmax fill value (default finfo.min)
	axis      string // Softmax axis attribute ("" for none; default "3")
	probsOut  bool   // the probabilities are also a graph output
	headMask  bool   // the boolean mask is per head [2,2,5,5]
	scaleIn   bool   // v1: Q is divided by a graph input
	badSlice  bool   // v1: the key and value thirds are swapped
	mixed     bool   // v1: V comes from its own projection
	dynSplit  bool   // the head split's shape is a graph input
	otherZero bool   // the second masked_fill uses another mask input (m2)
	fillIn    bool   // the fill value is a graph input
	opset     int
}

// dbInit writes an initializer with deterministic pseudo-random values.
func dbInit(b *strings.Builder, r *rand.Rand, name string, dims []int, scale float64) {
	n := 1
	ds := make([]string, len(dims))
	for i, d := range dims {
		n *= d
		ds[i] = fmt.Sprint(d)
	}
	vals := make([]string, n)
	for i := range vals {
		vals[i] = fmt.Sprintf("%.3g", scale*(2*r.Float64()-1))
	}
	fmt.Fprintf(b, "  float[%s] %s = {%s},\n", strings.Join(ds, ","), name, strings.Join(vals, ", "))
}

// dbGraph writes the block in ONNX text.
func dbGraph(o dbOpts) string {
	if o.mask == "" {
		o.mask = "where"
	}
	if o.terms == "" {
		o.terms = "both"
	}
	if o.fill == "" {
		o.fill = "-3.4028235e+38"
	}
	if o.axis == "" {
		o.axis = "3"
	}
	if o.opset == 0 {
		o.opset = 13
	}
	r := rand.New(rand.NewSource(7))
	var b strings.Builder
	fmt.Fprintf(&b, "<ir_version: 8, opset_import: [\"\" : %d]>\n", o.opset)
	idx := "int64[2,2,5,5]"
	if o.v2 {
		idx = "int64[4,5,5]"
	}
	ins := []string{"float[2,5,8] x"}
	switch {
	case o.mask == "add":
		ins = append(ins, "float[2,1,5,5] m")
	case o.mask == "where" && o.headMask:
		ins = append(ins, "bool[2,2,5,5] m")
	case o.mask == "where":
		ins = append(ins, "bool[2,1,5,5] m")
	}
	ins = append(ins, idx+" cpos", idx+" ppos")
	if o.scaleIn {
		ins = append(ins, "float s")
	}
	if o.otherZero {
		ins = append(ins, "bool[2,1,5,5] m2")
	}
	if o.fillIn {
		ins = append(ins, "float fill")
	}
	if o.dynSplit {
		ins = append(ins, "int64[4] split")
	}
	outs := []string{"float[2,5,8] y"}
	if o.probsOut {
		outs = append(outs, "float[2,2,5,5] pr")
	}
	fmt.Fprintf(&b, "deberta (%s) => (%s) <\n", strings.Join(ins, ", "), strings.Join(outs, ", "))
	if o.v2 {
		for _, p := range []string{"q", "k", "v"} {
			dbInit(&b, r, "W"+p, []int{8, 8}, 0.5)
			dbInit(&b, r, "b"+p, []int{8}, 0.1)
		}
		dbInit(&b, r, "pk", []int{4, 6, 4}, 0.5)
		dbInit(&b, r, "pq", []int{4, 6, 4}, 0.5)
		b.WriteString("  int64[3] h3 = {-1, 5, 4},\n  int64[4] s4 = {-1, 2, 5, 5},\n  int64[3] p3 = {-1, 5, 5},\n  int64[4] c4 = {-1, 2, 5, 4},\n")
	} else {
		dbInit(&b, r, "W", []int{8, 24}, 0.5)
		dbInit(&b, r, "qb", []int{1, 2, 1, 4}, 0.1)
		dbInit(&b, r, "vb", []int{1, 2, 1, 4}, 0.1)
		if o.mixed {
			dbInit(&b, r, "Wv", []int{8, 8}, 0.5)
		}
		dbInit(&b, r, "pk", []int{1, 2, 6, 4}, 0.5)
		dbInit(&b, r, "pq", []int{1, 2, 6, 4}, 0.5)
		b.WriteString("  int64[1] s0 = {0},\n  int64[1] s4 = {4},\n  int64[1] s8 = {8},\n  int64[1] s12 = {12},\n  int64[1] axl = {-1},\n")
	}
	if !o.dynSplit {
		b.WriteString("  int64[4] split = {0, 0, 2, -1},\n")
	}
	fmt.Fprintf(&b, "  float sc = {3.4641016},\n  float isc = {0.28867513},\n  float zero = {0},\n  float fmin = {%s},\n  int64[3] merge = {0, 0, -1}\n> {\n", o.fill)
	node := func(format string, args ...any) { fmt.Fprintf(&b, "  "+format+"\n", args...) }
	scale := func(out, in string) {
		switch {
		case o.scaleIn:
			node("%s = Div (%s, s)", out, in)
		case o.scaleMul:
			node("%s = Mul (%s, isc)", out, in)
		default:
			node("%s = Div (%s, sc)", out, in)
		}
	}
	swap := "perm = [0, 1, 3, 2]"
	if o.v2 {
		swap = "perm = [0, 2, 1]"
	}
	if o.v2 {
		for _, p := range []string{"q", "k", "v"} {
			node("%sp = MatMul (x, W%s)", p, p)
			node("%sa = Add (b%s, %sp)", p, p, p)
			node("%sr = Reshape (%sa, split)", p, p)
			node("%ssplit = Transpose <perm = [0, 2, 1, 3]> (%sr)", p, p)
			node("%sh = Reshape (%ssplit, h3)", p, p)
		}
		node("kt = Transpose <%s> (kh)", swap)
		scale("kts", "kt")
		node("qk = MatMul (qh, kts)")
		node("pkt = Transpose <%s> (pk)", swap)
		node("c2pm = MatMul (qh, pkt)")
		node("c2pg = GatherElements <axis = -1> (c2pm, cpos)")
		scale("c2pd", "c2pg")
		node("c2p = Add (c2pd, zero)")
		node("pqt = Transpose <%s> (pq)", swap)
		node("p2cm = MatMul (kh, pqt)")
		node("p2cg = GatherElements <axis = -1> (p2cm, ppos)")
		node("p2ct = Transpose <%s> (p2cg)", swap)
		scale("p2c", "p2ct")
	} else {
		node("qkv = MatMul (x, W)")
		node("r = Reshape (qkv, split)")
		node("t = Transpose <perm = [0, 2, 1, 3]> (r)")
		node("qs = Slice (t, s0, s4, axl)")
		if o.badSlice {
			node("ks = Slice (t, s8, s12, axl)")
			node("vs = Slice (t, s4, s8, axl)")
		} else {
			node("ks = Slice (t, s4, s8, axl)")
			node("vs = Slice (t, s8, s12, axl)")
		}
		node("qh = Add (qs, qb)")
		if o.mixed {
			node("vp = MatMul (x, Wv)")
			node("vr = Reshape (vp, split)")
			node("vh = Transpose <perm = [0, 2, 1, 3]> (vr)")
		} else {
			node("vh = Add (vs, vb)")
		}
		scale("qo", "qh")
		node("kt = Transpose <%s> (ks)", swap)
		node("qk = MatMul (qo, kt)")
		node("pkt = Transpose <%s> (pk)", swap)
		node("c2pm = MatMul (qo, pkt)")
		node("c2pg = GatherElements <axis = -1> (c2pm, cpos)")
		node("c2p = Add (c2pg, zero)")
		node("pqt = Transpose <%s> (pq)", swap)
		node("p2cm = MatMul (ks, pqt)")
		node("p2cg = GatherElements <axis = -1> (p2cm, ppos)")
		node("p2c = Transpose <%s> (p2cg)", swap)
	}
	switch o.terms {
	case "both":
		node("rel = Add (c2p, p2c)")
		node("sc3 = Add (qk, rel)")
	case "chain":
		node("a1 = Add (qk, c2p)")
		node("sc3 = Add (a1, p2c)")
	case "c2p":
		node("sc3 = Add (qk, c2p)")
	case "p2c":
		node("sc3 = Add (p2c, qk)")
	case "none":
		node("sc3 = Identity (qk)")
	}
	sc4 := "sc3"
	if o.v2 {
		node("sc4 = Reshape (sc3, s4)")
		sc4 = "sc4"
	}
	masked := sc4
	switch o.mask {
	case "where":
		if o.fillIn {
			node("w1 = Where (m, fill, %s)", sc4)
		} else {
			node("w1 = Where (m, fmin, %s)", sc4)
		}
		masked = "w1"
	case "add":
		node("w1 = Add (%s, m)", sc4)
		masked = "w1"
	}
	if o.axis == "none" {
		node("sm = Softmax (%s)", masked)
	} else {
		node("sm = Softmax <axis = %s> (%s)", o.axis, masked)
	}
	pr := "sm"
	if o.mask == "where" && !o.noZero {
		if o.otherZero {
			node("pr = Where (m2, zero, sm)")
		} else {
			node("pr = Where (m, zero, sm)")
		}
		pr = "pr"
	} else if o.probsOut {
		node("pr = Identity (sm)")
	}
	if o.v2 {
		node("pr3 = Reshape (%s, p3)", pr)
		node("pv = MatMul (pr3, vh)")
		node("c = Reshape (pv, c4)")
	} else {
		node("c = MatMul (%s, vh)", pr)
	}
	node("mt = Transpose <perm = [0, 2, 1, 3]> (c)")
	node("y = Reshape (mt, merge)")
	b.WriteString("}\n")
	return b.String()
}

// dbInputs makes random inputs for dbGraph's model: the last row's last two positions are
// padding (their rows and columns masked), so XSoftmax zeroes two query rows.
func dbInputs(m *ir.Model) map[string]*ndarray.Array {
	r := rand.New(rand.NewSource(11))
	keep := func(b, i int) bool { return !(b == 1 && i >= 3) }
	in := map[string]*ndarray.Array{}
	for _, v := range m.Graph.Inputs {
		dims, _ := v.Type.Shape.Ints()
		n := 1
		for _, d := range dims {
			n *= int(d)
		}
		switch v.Name {
		case "x":
			f := make([]float32, n)
			for i := range f {
				f[i] = float32(r.NormFloat64())
			}
			in[v.Name] = ndarray.FromFloat32(dims, f)
		case "m":
			h := int(dims[1])
			bm := make([]bool, n)
			fm := make([]float32, n)
			for b := 0; b < 2; b++ {
				for k := 0; k < h; k++ {
					for i := 0; i < 5; i++ {
						for j := 0; j < 5; j++ {
							at := ((b*h+k)*5+i)*5 + j
							bm[at] = !(keep(b, i) && keep(b, j))
							if bm[at] {
								fm[at] = -3.4028235e38
							}
						}
					}
				}
			}
			if v.Type.DType == ir.Bool {
				in[v.Name] = ndarray.FromBool(dims, bm)
			} else {
				in[v.Name] = ndarray.FromFloat32(dims, fm)
			}
		case "cpos", "ppos":
			x := make([]int64, n)
			for i := range x {
				x[i] = int64(r.Intn(6))
			}
			in[v.Name] = ndarray.FromInt64(dims, x)
		case "s":
			in[v.Name] = ndarray.FromFloat32(nil, []float32{3.4641016})
		case "split":
			in[v.Name] = ndarray.FromInt64(dims, []int64{0, 0, 2, -1})
		}
	}
	return in
}

func dbParse(t *testing.T, src string) *ir.Model {
	t.Helper()
	m := ortcheck.Parse(t, src)
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	return m
}

// dbDescribe prints blocks (ID, variant, layer, roles, params) for golden files.
func dbDescribe(blocks []*transformer.Block) string {
	var b strings.Builder
	for _, bl := range blocks {
		fmt.Fprintf(&b, "%s %s layer=%d fused=%v\n", bl.ID, bl.Variant, bl.Layer, bl.Fused)
		var roles, params []string
		for k, v := range bl.Roles {
			if v != nil {
				roles = append(roles, k+"="+v.Name)
			}
		}
		for k, v := range bl.Params {
			params = append(params, fmt.Sprintf("%s=%.6g", k, v))
		}
		sort.Strings(roles)
		sort.Strings(params)
		fmt.Fprintf(&b, "  roles: %s\n  params: %s\n", strings.Join(roles, " "), strings.Join(params, " "))
	}
	return b.String()
}

// TestDebertaVariants: each named variant is recognised with its roles and params, fuses
// into one MultiHeadAttention (recognised afterwards as attention/deberta-mha, and left
// alone by a second fuse), and ONNX Runtime computes the same outputs before and after
// (optimizations off and extended). The v1 and v2 cases are golden files
// (testdata/deberta-*.txtar, rewritten by -update).
func TestDebertaVariants(t *testing.T) {
	cases := []struct {
		name    string
		o       dbOpts
		variant string
		golden  bool
	}{
		{"v1", dbOpts{}, "attention/deberta-v1", true},
		{"v2", dbOpts{v2: true}, "attention/deberta-v2", true},
		{"v1-opset11", dbOpts{opset: 11}, "attention/deberta-v1", false},
		{"v1-opset17-axis-last", dbOpts{opset: 17, axis: "-1"}, "attention/deberta-v1", false},
		{"v1-chain", dbOpts{terms: "chain"}, "attention/deberta-v1", false},
		{"v1-c2p-only", dbOpts{terms: "c2p"}, "attention/deberta-v1", false},
		{"v1-p2c-only", dbOpts{terms: "p2c"}, "attention/deberta-v1", false},
		{"v1-scale-mul", dbOpts{scaleMul: true}, "attention/deberta-v1", false},
		{"v1-add-mask", dbOpts{mask: "add"}, "attention/deberta-v1", false},
		{"v1-no-mask", dbOpts{mask: "none"}, "attention/deberta-v1", false},
		{"v1-no-zeroing", dbOpts{noZero: true}, "attention/deberta-v1", false},
		{"v2-chain-add-mask", dbOpts{v2: true, terms: "chain", mask: "add"}, "attention/deberta-v2", false},
		{"v2-c2p-only", dbOpts{v2: true, terms: "c2p", scaleMul: true}, "attention/deberta-v2", false},
	}
	orttest.RequireLib(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := dbGraph(c.o)
			m := dbParse(t, src)
			orig := dbParse(t, src)
			blocks, refs := transformer.Recognize(m.Graph, debertaOnly)
			if len(blocks) != 1 || blocks[0].Variant != c.variant || blocks[0].Fused {
				t.Fatalf("blocks %s, refusals %v; want one %s", dbDescribe(blocks), refs, c.variant)
			}
			b := blocks[0]
			described := dbDescribe(blocks)
			for p, want := range map[string]float64{"num_heads": 2, "head_size": 4, "hidden": 8, "scale": 1 / math.Sqrt(12)} {
				if got, ok := b.Params[p]; !ok || math.Abs(got-want) > 1e-6 {
					t.Errorf("param %s = %v, want %v", p, got, want)
				}
			}
			roles := []string{"input", "output", "context", "scores", "attention_scores", "probs", "q_weight", "k_weight", "v_weight", "q_matmul", "k_matmul", "v_matmul", "q_heads", "k_heads", "v_heads"}
			if c.o.terms != "p2c" {
				roles = append(roles, "c2p", "pos_key", "c2p_pos")
			}
			if c.o.terms != "c2p" {
				roles = append(roles, "p2c", "pos_query", "p2c_pos")
			}
			if c.o.mask != "none" {
				roles = append(roles, "mask")
			}
			for _, r := range roles {
				if b.Roles[r] == nil {
					t.Errorf("role %s missing", r)
				}
			}
			if b.Roles["input"] != m.Graph.Value("x") || b.Roles["output"] != m.Graph.Value("y") {
				t.Errorf("input/output roles %v/%v, want x/y", b.Roles["input"], b.Roles["output"])
			}

			rep, err := transformer.Fuse(m, debertaOnly, &transformer.Env{Model: m, Target: transformer.ORT})
			if err != nil {
				t.Fatal(err)
			}
			prune.RemoveDead(m.Graph)
			if err := m.Verify(); err != nil {
				t.Fatalf("fused graph does not verify: %v\n%s", err, ortcheck.Text(t, m))
			}
			ops := ortcheck.Ops(m.Graph)
			if ops["com.microsoft.MultiHeadAttention"] != 1 || ops["Softmax"] != 0 || len(rep.Left) != 0 {
				t.Fatalf("after fuse: ops %v, left %v\n%s", ops, rep.Left, ortcheck.Text(t, m))
			}
			if len(rep.Blocks) != 1 || rep.Blocks[0].Variant != "attention/deberta-mha" || !rep.Blocks[0].Fused {
				t.Fatalf("fused blocks: %s", dbDescribe(rep.Blocks))
			}
			fb := rep.Blocks[0]
			if fb.Params["num_heads"] != 2 || math.Abs(fb.Params["scale"]-1/math.Sqrt(12)) > 1e-6 || fb.Roles["input"] != m.Graph.Value("x") {
				t.Errorf("fused block: %s", dbDescribe(rep.Blocks))
			}
			fused := ortcheck.Text(t, m)
			if _, err := transformer.Fuse(m, debertaOnly, &transformer.Env{Model: m, Target: transformer.ORT}); err != nil {
				t.Fatal(err)
			}
			prune.RemoveDead(m.Graph)
			if again := ortcheck.Text(t, m); again != fused {
				t.Errorf("second fuse changed the graph:\n%s", again)
			}

			in := dbInputs(orig)
			want := ortcheck.RunModel(t, orig, in, ort.OptDisabled)
			for _, lvl := range []ort.OptLevel{ort.OptDisabled, ort.OptExtended} {
				if d := ortcheck.MaxDiff(t, want, ortcheck.RunModel(t, m, in, lvl)); d > 1e-5 {
					t.Errorf("opt level %d: outputs differ by %g", lvl, d)
				}
			}
			if c.golden {
				dbGolden(t, "testdata/deberta-"+c.name+".txtar", map[string]string{
					"input":  src,
					"blocks": described,
					"want":   fused,
					"report": dbDescribe(rep.Blocks),
				})
			}
		})
	}
}

// dbGolden compares sections with a txtar golden file (or rewrites it with -update).
func dbGolden(t *testing.T, file string, got map[string]string) {
	t.Helper()
	order := []string{"input", "blocks", "want", "report"}
	if *update.Golden {
		a := &txtar.Archive{Comment: []byte("Generated by TestDebertaVariants (dbGraph): the block as exported, what Recognize\nfinds, the graph after transformer.Fuse(target=ort) and the blocks recognised then.\n")}
		if old, err := os.ReadFile(file); err == nil {
			a.Comment = txtar.Parse(old).Comment
		}
		for _, k := range order {
			a.Set(k, []byte(got[k]))
		}
		if err := os.WriteFile(file, txtar.Format(a), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	a := txtar.Parse(data)
	for _, k := range order {
		want, _ := a.Get(k)
		if strings.TrimSpace(string(want)) != strings.TrimSpace(got[k]) {
			t.Errorf("%s: section %s differs from the golden file (run with -update); got:\n%s", file, k, got[k])
		}
	}
}

// TestDebertaRefusals: each check refuses with a specific reason, and the block is then
// neither recognised nor rewritten.
func TestDebertaRefusals(t *testing.T) {
	cases := []struct {
		name string
		o    dbOpts
		want string
	}{
		{"small-fill", dbOpts{fill: "-5"}, "masked scores are filled with -5, not a large negative number (<= -1e4)"},
		{"fill-input", dbOpts{fillIn: true}, "the masked-score fill value is not a constant"},
		{"two-masks", dbOpts{otherZero: true}, `XSoftmax's two masked_fills use different masks ("m" and "m2")`},
		{"softmax-axis", dbOpts{axis: "2"}, "Softmax over axis 2, not the last"},
		{"softmax-no-axis", dbOpts{axis: "none"}, "Softmax has no axis attribute (its default differs between opsets)"},
		{"probs-output", dbOpts{probsOut: true}, `intermediate value "pr" (probs) is a graph output`},
		{"probs-output-v2", dbOpts{v2: true, mask: "none", probsOut: true}, `intermediate value "sm" (softmax) is also used outside the block by`},
		{"per-head-mask", dbOpts{headMask: true}, `mask "m" is typed bool[2,2,5,5], not [batch, 1, seq|1, seq]: the rows XSoftmax zeroes cannot be restored after the fused op`},
		{"bad-slice", dbOpts{badSlice: true}, "the key slice of the packed in_proj heads is not [4, 8) on the last axis"},
		{"mixed-projections", dbOpts{mixed: true}, "query, key and value come from different projection layouts (separate and packed)"},
		{"unknown-heads", dbOpts{v2: true, dynSplit: true}, "head count or size unknown (query heads"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := dbParse(t, dbGraph(c.o))
			blocks, refs := transformer.Recognize(m.Graph, debertaOnly)
			if len(blocks) != 0 {
				t.Fatalf("recognised %s", dbDescribe(blocks))
			}
			expectReason(t, refusalReasons(refs), c.want)
		})
	}
}

// TestDebertaNotPlainAttention: without a relative term the block is plain (DistilBERT-like)
// attention, left to the BERT-like family.
func TestDebertaNotPlainAttention(t *testing.T) {
	for _, o := range []dbOpts{{terms: "none"}, {terms: "none", v2: true, mask: "add"}} {
		m := dbParse(t, dbGraph(o))
		if blocks, _ := transformer.Recognize(m.Graph, debertaOnly); len(blocks) != 0 {
			t.Errorf("%+v: recognised %s", o, dbDescribe(blocks))
		}
	}
}

// TestDebertaLeft: blocks that are recognised but that fuse leaves decomposed (annotated,
// unchanged) with the reason: target=onnx, a scale computed at run time (an unfolded
// export), a bfloat16 block (float16 ones fuse: tests.TestCorpusHalf).
func TestDebertaLeft(t *testing.T) {
	cases := []struct {
		name   string
		src    string
		target transformer.Target
		want   string
	}{
		{"onnx-target", dbGraph(dbOpts{v2: true}), transformer.ONNX,
			"attention.0 (attention/deberta-v2, layer 0): disentangled attention has no standard ONNX operator below opset 23"},
		{"scale-input", dbGraph(dbOpts{scaleIn: true}), transformer.ORT,
			`attention.0 (attention/deberta-v1, layer 0): the scale of Q·Kᵀ ("s") is not a scalar constant (computed at run time: run fold first)`},
		{"bfloat16", strings.ReplaceAll(dbGraph(dbOpts{}), "float", "bfloat16"), transformer.ORT,
			"attention.0 (attention/deberta-v1, layer 0): attention computes in bfloat16: the target's fused operators take float and float16 (and bfloat16 for the ONNX-23 ones)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := dbParse(t, c.src)
			before := ortcheck.Ops(m.Graph)
			rep, err := transformer.Fuse(m, debertaOnly, &transformer.Env{Model: m, Target: c.target, RaiseOpset: 23})
			if err != nil {
				t.Fatal(err)
			}
			if after := ortcheck.Ops(m.Graph); fmt.Sprint(before) != fmt.Sprint(after) {
				t.Errorf("ops changed: %v -> %v", before, after)
			}
			if len(rep.Left) != 1 {
				t.Errorf("left %q; want one block left", rep.Left)
			}
			expectReason(t, rep.Left, c.want)
			p, _ := m.Graph.Value("y").Producer()
			if v, _ := p.Meta("qcc.variant"); !strings.HasPrefix(v, "attention/deberta-v") {
				t.Errorf("root not annotated: %q", v)
			}
		})
	}
}

var debertaOnly = []*transformer.Family{transformer.DebertaAttentionFamily}

// dbFoldFuse loads a corpus model, folds it and fuses DeBERTa attention for target.
func dbFoldFuse(t *testing.T, path string, target transformer.Target) (*ir.Model, *transformer.Report, map[string]int) {
	t.Helper()
	m := ortcheck.Fold(t, path, passes.All)
	before := ortcheck.Ops(m.Graph)
	rep, err := transformer.Fuse(m, debertaOnly, &transformer.Env{Model: m, Target: target})
	if err != nil {
		t.Fatal(err)
	}
	prune.RemoveDead(m.Graph)
	if err := m.Verify(); err != nil {
		t.Fatalf("fused model does not verify: %v", err)
	}
	return m, rep, before
}

// TestDebertaCorpusORT folds and fuses every corpus model with the DeBERTa family only,
// and checks with ONNX Runtime (optimizations off and extended) that the outputs match the
// original's within 1e-4, on the reference inputs and on a [3, 11] batch whose last row is
// padded. The invalid opset-11 DeBERTa exports (repaired by fold) are compared with their
// opset-13 siblings.
func TestDebertaCorpusORT(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	var rows []string
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		cm := cm
		t.Run(cm.Name, func(t *testing.T) {
			m, rep, before := dbFoldFuse(t, cm.Path, transformer.ORT)
			isDeberta := strings.HasPrefix(cm.Name, "deberta")
			nb := 0
			for _, b := range rep.Blocks {
				if b.Kind == transformer.Attention {
					nb++
					if !b.Fused || b.Variant != "attention/deberta-mha" {
						t.Errorf("%s: after fuse %s is %s, fused=%v", cm.Name, b.ID, b.Variant, b.Fused)
					}
				}
			}
			mha := rep.Ops["com.microsoft.MultiHeadAttention"]
			if isDeberta && (nb != 2 || mha != 2) {
				t.Errorf("%d blocks, %d MultiHeadAttention; want 2 and 2 (left: %v, refusals: %v)", nb, mha, rep.Left, rep.Refusals)
			}
			if ops := ortcheck.Ops(m.Graph); isDeberta && (ops["Not"] != before["Not"]+1 || ops["ReduceMax"] != before["ReduceMax"]+1 || ops["Softmax"] != 0) {
				t.Errorf("the layers should share one mask bias and one row-keep factor, and no Softmax remain: %v", ops)
			}
			if !isDeberta && (nb != 0 || mha != 0) {
				t.Errorf("non-DeBERTa model: %d blocks, %d MultiHeadAttention; want none", nb, mha)
			}
			// Fusing again changes nothing.
			nodes := m.Graph.NumNodes()
			rep2, err := transformer.Fuse(m, debertaOnly, &transformer.Env{Model: m, Target: transformer.ORT})
			if err != nil {
				t.Fatal(err)
			}
			prune.RemoveDead(m.Graph)
			if m.Graph.NumNodes() != nodes || rep2.Ops["com.microsoft.MultiHeadAttention"] != mha {
				t.Errorf("second fuse changed the graph: %d -> %d nodes", nodes, m.Graph.NumNodes())
			}
			if !isDeberta {
				rows = append(rows, fmt.Sprintf("%-20s blocks 0", cm.Name))
				return
			}
			out := ortcheck.Save(t, m, dir, cm.Name+".onnx")
			inputs := ortcheck.Inputs(t, cm)
			ref := ortcheck.Reference(cm)
			other := ortcheck.OtherShape(inputs, 3, 11)
			var ds []string
			for _, lv := range []ort.OptLevel{ort.OptDisabled, ort.OptExtended} {
				for i, in := range []map[string]*ndarray.Array{inputs, other} {
					d := ortcheck.Compare(t, ref, out, in, lv)
					if d > 1e-4 {
						t.Errorf("opt level %d, input %d: outputs differ by %g (> 1e-4)", lv, i, d)
					}
					ds = append(ds, fmt.Sprintf("%.1e", d))
				}
			}
			n0 := 0
			for _, c := range before {
				n0 += c
			}
			// target=onnx: both blocks left decomposed, with the reason.
			_, orep, _ := dbFoldFuse(t, cm.Path, transformer.ONNX)
			if len(orep.Left) != 2 || !strings.Contains(orep.Left[0], "disentangled attention has no standard ONNX operator") {
				t.Errorf("target=onnx: left %q", orep.Left)
			}
			rows = append(rows, fmt.Sprintf("%-20s blocks %d  MultiHeadAttention %d  nodes %d -> %d  left %d (onnx: %d)  max|diff| (off, off[3,11], ext, ext[3,11]) %s",
				cm.Name, nb, mha, n0, nodes, len(rep.Left), len(orep.Left), strings.Join(ds, " ")))
		})
	}
	sort.Strings(rows)
	t.Logf("DeBERTa attention over the corpus (target=ort):\n%s", strings.Join(rows, "\n"))
}

// TestDebertaCorpusUnfolded: the exports as they are (not folded) are recognised too; fuse
// leaves them decomposed because the scale is still computed at run time.
func TestDebertaCorpusUnfolded(t *testing.T) {
	for _, cm := range corpus.Models(t, "") {
		if !strings.HasPrefix(cm.Name, "deberta") {
			continue
		}
		m, err := ir.Load(cm.Path)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := transformer.Fuse(m, debertaOnly, &transformer.Env{Model: m, Target: transformer.ORT})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Blocks) != 2 || len(rep.Left) != 2 || !strings.Contains(rep.Left[0], "is not a scalar constant (computed at run time: run fold first)") {
			t.Errorf("%s: %d blocks, left %q, refusals %v", cm.Name, len(rep.Blocks), rep.Left, rep.Refusals)
		}
	}
}

// dbBigGraph is dbGraph's block at a given size, with the weights as graph inputs.
func dbBigGraph(v2 bool, B, S, N, D, P int) string {
	H := N * D
	var b strings.Builder
	b.WriteString("<ir_version: 8, opset_import: [\"\" : 13]>\n")
	if v2 {
		fmt.Fprintf(&b, "g (float[%d,%d,%d] x, bool[%d,1,%d,%d] m, int64[%d,%d,%d] cpos, int64[%d,%d,%d] ppos, float[%d,%d] Wq, float[%d,%d] Wk, float[%d,%d] Wv, float[%d] bq, float[%d] bk, float[%d] bv, float[%d,%d,%d] pk, float[%d,%d,%d] pq) => (float[%d,%d,%d] y) <\n",
			B, S, H, B, S, S, B*N, S, S, B*N, S, S, H, H, H, H, H, H, H, H, H, B*N, P, D, B*N, P, D, B, S, H)
		fmt.Fprintf(&b, "  int64[3] h3 = {-1, %d, %d},\n  int64[4] s4 = {-1, %d, %d, %d},\n  int64[3] p3 = {-1, %d, %d},\n  int64[4] c4 = {-1, %d, %d, %d},\n", S, D, N, S, S, S, S, N, S, D)
	} else {
		fmt.Fprintf(&b, "g (float[%d,%d,%d] x, bool[%d,1,%d,%d] m, int64[%d,%d,%d,%d] cpos, int64[%d,%d,%d,%d] ppos, float[%d,%d] W, float[1,%d,1,%d] qb, float[1,%d,1,%d] vb, float[1,%d,%d,%d] pk, float[1,%d,%d,%d] pq) => (float[%d,%d,%d] y) <\n",
			B, S, H, B, S, S, B, N, S, S, B, N, S, S, H, 3*H, N, D, N, D, N, P, D, N, P, D, B, S, H)
		fmt.Fprintf(&b, "  int64[1] s0 = {0},\n  int64[1] s4 = {%d},\n  int64[1] s8 = {%d},\n  int64[1] s12 = {%d},\n  int64[1] axl = {-1},\n", D, 2*D, 3*D)
	}
	fmt.Fprintf(&b, "  int64[4] split = {0, 0, %d, -1},\n  float sc = {%g},\n  float zero = {0},\n  float fmin = {-3.4028235e+38},\n  int64[3] merge = {0, 0, -1}\n> {\n", N, 1.0)
	src := dbGraph(dbOpts{v2: v2})
	body := src[strings.Index(src, "> {\n")+4:]
	b.WriteString(body)
	return b.String()
}

// BenchmarkDebertaAttention times one attention block at DeBERTa-base size (hidden 768, 12
// heads, batch 4, seq 128, 256 relative positions, weights as inputs) in ONNX Runtime's CPU
// provider, one thread, decomposed and fused.
func BenchmarkDebertaAttention(b *testing.B) {
	orttest.RequireLib(b)
	const B, S, N, D, P = 4, 128, 12, 64, 256
	for _, v2 := range []bool{false, true} {
		src := dbBigGraph(v2, B, S, N, D, P)
		orig, err := text.Parse(src)
		if err != nil {
			b.Fatal(err)
		}
		fused, _ := text.Parse(src)
		if _, err := transformer.Fuse(fused, debertaOnly, &transformer.Env{Model: fused, Target: transformer.ORT}); err != nil {
			b.Fatal(err)
		}
		prune.RemoveDead(fused.Graph)
		r := rand.New(rand.NewSource(1))
		in := map[string]*ndarray.Array{}
		for _, v := range orig.Graph.Inputs {
			dims, _ := v.Type.Shape.Ints()
			n := 1
			for _, d := range dims {
				n *= int(d)
			}
			switch v.Type.DType {
			case ir.Bool:
				in[v.Name] = ndarray.FromBool(dims, make([]bool, n))
			case ir.Int64:
				x := make([]int64, n)
				for i := range x {
					x[i] = int64(r.Intn(P))
				}
				in[v.Name] = ndarray.FromInt64(dims, x)
			default:
				x := make([]float32, n)
				for i := range x {
					x[i] = float32(r.NormFloat64() * 0.05)
				}
				in[v.Name] = ndarray.FromFloat32(dims, x)
			}
		}
		for _, c := range []struct {
			name string
			m    *ir.Model
		}{{"decomposed", orig}, {"fused", fused}} {
			name := fmt.Sprintf("v2=%v/%s", v2, c.name)
			b.Run(name, func(b *testing.B) {
				bs, err := ir.Marshal(c.m)
				if err != nil {
					b.Fatal(err)
				}
				s, err := ort.NewSessionFromBytes(bs, ort.Options{OptLevel: ort.OptAll, IntraOpThreads: 1})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				for i := 0; i < b.N; i++ {
					if _, err := s.Run(in); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
