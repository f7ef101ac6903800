package transformer_test

import (
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/internal/txtar"
	"github.com/qcc-dev/qcc/internal/update"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/prune"
	"github.com/qcc-dev/qcc/shape"
)

// attnFams is what the attention tests fuse with: attention only.
var attnFams = []*transformer.Family{transformer.AttentionFamily}

// attnWithOthers is attention after the families that run before it in fuse's order.
var attnWithOthers = []*transformer.Family{transformer.LayerNormFamily, transformer.GeluFamily,
	transformer.SkipFamily, transformer.AttentionFamily}

// attnDump writes the attention blocks of g (roles and params sorted) and the refusals,
// and returns the refusals' reasons.
func attnDump(t *testing.T, m *ir.Model) (string, []string) {
	t.Helper()
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	blocks, refs := transformer.Recognize(m.Graph, attnFams)
	var b strings.Builder
	b.WriteString(dbDescribe(blocks))
	for _, r := range refs {
		fmt.Fprintf(&b, "refused: %s\n", r)
	}
	return b.String(), refusalReasons(refs)
}

// attnFuse runs transformer.Fuse with the attention family, then removes the shape
// arithmetic the rewrite left dead (as the fuse pass does), and verifies the result.
func attnFuse(t *testing.T, m *ir.Model, env *transformer.Env) *transformer.Report {
	t.Helper()
	env.Model = m
	rep, err := transformer.Fuse(m, attnFams, env)
	if err != nil {
		t.Fatal(err)
	}
	prune.RemoveDead(m.Graph)
	if err := m.Verify(); err != nil {
		t.Fatalf("fused model does not verify: %v", err)
	}
	return rep
}

func attnReport(rep *transformer.Report) string {
	var b strings.Builder
	b.WriteString(formatOpsLeft(rep, ""))
	for _, sm := range rep.Softmax {
		fmt.Fprintf(&b, "not attention: %s\n", sm)
	}
	for _, r := range rep.Refusals {
		fmt.Fprintf(&b, "refused: %s\n", r)
	}
	return b.String()
}

// TestAttentionCases runs testdata/attention-*.txtar. A case holds
//
//	-- env --      optional: "target=onnx opset=23" (default target=ort), "fold" (run fold first),
//	               "provider=cpu"
//	-- input --    a model in ONNX text syntax
//	-- blocks --   golden: what Recognize finds (blocks with roles and params, refusals)
//	-- want --     golden: the model after transformer.Fuse with the attention family
//	-- report --   golden: the fuse report (fused op counts, blocks left and why)
//
// Every case must also verify after fusion, fuse idempotently, and, where ONNX Runtime is
// available, compute the same outputs as the input within 1e-4 (ORT optimizations off and
// extended) on random inputs of two sizes.
func TestAttentionCases(t *testing.T) {
	files, _ := filepath.Glob("testdata/attention-*.txtar")
	if len(files) == 0 {
		t.Fatal("no testdata/attention-*.txtar cases")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txtar")
		if strings.HasPrefix(name, "attention-deberta") {
			continue // the DeBERTa family's cases
		}
		t.Run(name, func(t *testing.T) { attnRunCase(t, f) })
	}
}

func attnRunCase(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	a := txtar.Parse(data)
	src, ok := a.Get("input")
	if !ok {
		t.Fatal("no input section")
	}
	env := &transformer.Env{Target: transformer.ORT}
	fold := false
	if e, ok := a.Get("env"); ok {
		for _, f := range strings.Fields(string(e)) {
			switch {
			case f == "target=onnx":
				env.Target = transformer.ONNX
			case f == "fold":
				fold = true
			case strings.HasPrefix(f, "provider="):
				env.Provider = strings.TrimPrefix(f, "provider=")
			case strings.HasPrefix(f, "opset="):
				fmt.Sscan(strings.TrimPrefix(f, "opset="), &env.RaiseOpset)
			default:
				t.Fatalf("unknown env setting %q", f)
			}
		}
	}
	parse := func(s string) *ir.Model { return ortcheck.Parse(t, s) }
	orig := parse(string(src))
	m := parse(string(src))
	if fold {
		ortcheck.Pipeline(t, m, "fold", passes.All, nil)
	}
	blocks, refused := attnDump(t, m)
	rep := attnFuse(t, m, env)
	got := ortcheck.Text(t, m)
	report := attnReport(rep)

	if *update.Golden {
		a.Set("blocks", []byte(blocks))
		a.Set("want", []byte(got))
		a.Set("report", []byte(report))
		if err := os.WriteFile(file, txtar.Format(a), 0o644); err != nil {
			t.Fatal(err)
		}
	} else {
		for _, c := range []struct{ sec, got string }{{"blocks", blocks}, {"want", got}, {"report", report}} {
			want, ok := a.Get(c.sec)
			if !ok {
				t.Fatalf("no %s section; run go test -update", c.sec)
			}
			if d := cmp.Diff(string(want), c.got); d != "" {
				t.Errorf("%s differs from golden (-want +got):\n%s", c.sec, d)
			}
		}
		if !t.Failed() {
			goldenReasons(append(refused, reportReasons(rep)...))
		}
	}

	// Fusing again changes nothing, and every block recognised before is recognised after,
	// fused unless it was left.
	m2 := parse(got)
	attnFuse(t, m2, &transformer.Env{Target: env.Target, RaiseOpset: env.RaiseOpset, Provider: env.Provider})
	if again := ortcheck.Text(t, m2); again != got {
		t.Errorf("fuse is not idempotent:\n%s", cmp.Diff(got, again))
	}
	after, _ := attnDump(t, parse(got))
	if nb, na := strings.Count(blocks, " layer="), strings.Count(after, " layer="); nb != na {
		t.Errorf("%d blocks recognised before fusion, %d after", nb, na)
	}
	if n, want := strings.Count(after, "fused=true"), strings.Count(blocks, " layer=")-len(rep.Left); n != want {
		t.Errorf("%d fused blocks recognised after fusion, want %d", n, want)
	}

	orttest.RequireLib(t) // the numeric check: skipped with a message, or failed when ORT is required
	for _, sizes := range []map[string]int64{{"batch": 2, "seq": 5}, {"batch": 3, "seq": 4}} {
		in := attnRandomInputs(t, orig, sizes)
		for _, lvl := range []ort.OptLevel{ort.OptDisabled, ort.OptExtended} {
			// Against the input at the same level: ORT's own QDQ fusions change the numbers
			// of the quantized cases, which fuse leaves alone.
			want := ortcheck.RunModel(t, orig, in, lvl)
			if d := ortcheck.MaxDiff(t, want, ortcheck.RunModel(t, m, in, lvl)); d > 1e-4 {
				t.Errorf("sizes %v, ORT level %d: fused outputs differ by %g", sizes, lvl, d)
			}
		}
	}
}

// attnRandomInputs makes inputs for m's graph inputs: floats N(0,1), 0/1 masks (named
// *mask*) with the last position of the last row masked, additive masks 0/-10000 likewise.
// Symbolic dims take their size from sizes.
func attnRandomInputs(t *testing.T, m *ir.Model, sizes map[string]int64) map[string]*ndarray.Array {
	r := rand.New(rand.NewSource(int64(sizes["batch"]*100 + sizes["seq"])))
	in := map[string]*ndarray.Array{}
	for _, v := range m.Graph.Inputs {
		if v.IsConst() {
			continue
		}
		var dims []int64
		n := 1
		for _, d := range v.Type.Shape {
			x := d.Value
			if !d.Known {
				x = sizes[d.Param]
			}
			dims = append(dims, x)
			n *= int(x)
		}
		isMask := strings.Contains(v.Name, "mask")
		last := len(dims) - 1
		masked := func(i int) bool { // the last key of the last batch row
			return isMask && i%int(dims[last]) == int(dims[last])-1 && i >= n-n/int(dims[0])
		}
		switch v.Type.DType {
		case ir.Float:
			f := make([]float32, n)
			for i := range f {
				switch {
				case masked(i):
					f[i] = -10000
				case isMask:
					f[i] = 0
				default:
					f[i] = float32(r.NormFloat64())
				}
			}
			in[v.Name] = ndarray.FromFloat32(dims, f)
		case ir.Int64, ir.Int32, ir.Bool:
			iv := make([]int64, n)
			for i := range iv {
				if !masked(i) {
					iv[i] = 1
				}
			}
			switch v.Type.DType {
			case ir.Int64:
				in[v.Name] = ndarray.FromInt64(dims, iv)
			case ir.Int32:
				i32 := make([]int32, n)
				for i, x := range iv {
					i32[i] = int32(x)
				}
				in[v.Name] = ndarray.FromInt32(dims, i32)
			default:
				bs := make([]bool, n)
				for i, x := range iv {
					bs[i] = x != 0
				}
				in[v.Name] = ndarray.FromBool(dims, bs)
			}
		default:
			t.Fatalf("input %s: type %s not supported by the test", v.Name, v.Type.DType)
		}
	}
	return in
}

// TestAttentionCorpus folds every corpus model, fuses attention (alone), and checks the
// count of fused Attention ops against the layer count, and ONNX Runtime's outputs against
// the original's (optimizations off and extended; the reference input and a [3,11] one).
func TestAttentionCorpus(t *testing.T) {
	orttest.RequireLib(t)
	models := corpus.Models(t, "", "trained", "invalid")
	dir := t.TempDir()
	var (
		mu   sync.Mutex
		rows []string
	)
	t.Cleanup(func() {
		sort.Strings(rows)
		t.Logf("attention fusion over the corpus:\n%s", strings.Join(rows, "\n"))
	})
	for _, cm := range models {
		cm := cm
		t.Run(cm.Name, func(t *testing.T) {
			t.Parallel()
			m := ortcheck.Fold(t, cm.Path, passes.All)
			// The attention family alone, and after the families that fuse first (their
			// fused LayerNorms and skips sit around the attention block).
			all := ortcheck.Fold(t, cm.Path, passes.All)
			rep := attnFuse(t, m, &transformer.Env{Target: transformer.ORT})
			allRep, err := transformer.Fuse(all, attnWithOthers, &transformer.Env{Model: all, Target: transformer.ORT})
			if err != nil {
				t.Fatal(err)
			}
			prune.RemoveDead(all.Graph)
			if err := all.Verify(); err != nil {
				t.Fatalf("fused with the other families, the model does not verify: %v", err)
			}
			fused := rep.Ops["com.microsoft.Attention"]
			if a := allRep.Ops["com.microsoft.Attention"]; a != fused {
				t.Errorf("%d Attention ops with the other families, %d alone", a, fused)
			}
			out := ortcheck.Save(t, m, dir, cm.Name+".onnx")
			outAll := ortcheck.Save(t, all, dir, cm.Name+".all.onnx")
			deberta := strings.HasPrefix(cm.Name, "deberta")
			if !deberta && fused != 2 {
				t.Errorf("%d Attention ops, want 2 (one per layer); left: %v; refusals: %v", fused, rep.Left, rep.Refusals)
			}
			if deberta && fused != 0 {
				t.Errorf("DeBERTa's disentangled attention fused into %d plain Attention ops", fused)
			}
			if strings.HasPrefix(cm.Name, "albert") {
				// One shared layer run twice: both Attentions read one packed weight.
				weights := map[*ir.Value]bool{}
				for _, n := range m.Graph.Nodes() {
					if n.OpType == "Attention" {
						weights[n.Input(1)] = true
					}
				}
				if len(weights) != 1 {
					t.Errorf("ALBERT's shared layer got %d packed Q/K/V weights, want 1", len(weights))
				}
			}
			inputs := ortcheck.Inputs(t, cm)
			ref := ortcheck.Reference(cm)
			files := []string{out, outAll}
			if strings.HasSuffix(cm.Name, "opset17") && !deberta {
				// target=onnx with opset=23: the standard Attention (nothing at opset 17
				// changed meaning by 23, so the import may be raised).
				onnx := ortcheck.Fold(t, cm.Path, passes.All)
				orep := attnFuse(t, onnx, &transformer.Env{Target: transformer.ONNX, RaiseOpset: 23})
				if orep.Ops["Attention"] != 2 {
					t.Errorf("target=onnx opset=23: %d Attention-23 ops, want 2; left %v", orep.Ops["Attention"], orep.Left)
				}
				files = append(files, ortcheck.Save(t, onnx, dir, cm.Name+".onnx23.onnx"))
			}
			sets := []map[string]*ndarray.Array{inputs}
			if !strings.Contains(cm.Name, "static") {
				sets = append(sets, ortcheck.OtherShape(inputs, 3, 11))
			}
			worst := 0.0
			for _, in := range sets {
				want := ortcheck.Run(t, ref, in, ort.OptDisabled)
				for _, lvl := range []ort.OptLevel{ort.OptDisabled, ort.OptExtended} {
					for _, f := range files {
						d := ortcheck.MaxDiff(t, want, ortcheck.Run(t, f, in, lvl))
						worst = math.Max(worst, d)
						if d > 1e-4 {
							t.Errorf("%s, input %v, ORT level %d: outputs differ by %g (> 1e-4)", filepath.Base(f), ortcheck.FirstShape(in), lvl, d)
						}
					}
				}
			}
			why := ""
			if len(rep.Left) > 0 {
				why = " left: " + strings.Join(rep.Left, "; ")
			}
			for _, r := range rep.Refusals {
				why += " refused: " + r.String()
			}
			var ops []string
			for op, n := range allRep.Ops {
				ops = append(ops, fmt.Sprintf("%s %d", strings.TrimPrefix(op, "com.microsoft."), n))
			}
			sort.Strings(ops)
			mu.Lock()
			defer mu.Unlock()
			rows = append(rows, fmt.Sprintf("%-26s Attention %d  max|diff| %.1e  (with the others: %s)%s", cm.Name, fused, worst, strings.Join(ops, ", "), why))
		})
	}
}

// TestAttentionReasons edits the BERT case to hit every reason the family gives: the
// checks' refusals (the candidate is no block) and fuse's (the block stays decomposed).
func TestAttentionReasons(t *testing.T) {
	data, err := os.ReadFile("testdata/attention-bert-add-mask.txtar")
	if err != nil {
		t.Fatal(err)
	}
	base, _ := txtar.Parse(data).Get("input")
	type edit struct{ old, new string }
	cases := []struct {
		name   string
		edits  []edit
		target transformer.Target
		want   string // a refusal (Recognize) or a reason a block was left (Fuse)
	}{
		{"escape", []edit{{"=> (float[batch,seq,4] y)", "=> (float[batch,seq,4] y, float[batch,2,seq,seq] r)"},
			{"  [\"/L/Add\"]", "  r = Relu (sd)\n  [\"/L/Add\"]"}},
			"", `intermediate value "sd" is also used outside the block by`},
		{"input rank", []edit{{"float[batch,seq,4] x", "float[] x"}}, "", "input has shape [], not [B,S,H]"},
		{"split keeps batch", []edit{{"int64[4] split = {0, 0, 2, 2}", "int64[4] split = {1, -1, 2, 2}"}}, "",
			"does not keep the input's batch and sequence [batch,seq,4]"},
		{"bias shape", []edit{{"float[4] bk =", "float[1,4] bk ="}}, "", "k bias has shape [1,4], not [4]"},
		{"scale", []edit{{"float sqrtd = {1.4142135}", "float sqrtd = {0}"}}, "", "scale +Inf is not a finite non-zero number"},
		{"softmax axis", []edit{{"Softmax <axis = -1>", "Softmax <axis = 1>"}}, "", "softmax over axis 1, not the last"},
		{"bias not constant", []edit{{"bert (float[batch,seq,4] x,", "bert (float[4] bk2, float[batch,seq,4] x,"},
			{"Add (bk, km)", "Add (bk2, km)"}}, "", "Q/K/V biases are not constant (quantized?)"},
		{"mask on two inputs", []edit{{"int64[batch,seq] attention_mask)", "int64[batch,seq] attention_mask, float[batch,1,1,seq] m3)"},
			{"Sub (fone, mf)", "Sub (m3, mf)"}}, "", "mask of an unknown form: mask depends on two inputs"},
		{"mask op", []edit{{"Sub (fone, mf)", "Sin (mf)"}}, "", "mask of an unknown form: mask uses Sin"},
		{"mask constant", []edit{{"float fone = {1}", "float[4] fone = {1, 1, 1, 2}"}}, "", "mask of an unknown form: mask constant fone is not uniform"},
		{"mask rank", []edit{{"Cast <to = 1> (m2)", "Cast <to = 1> (attention_mask)"}}, "",
			"mask of an unknown form: a rank-2 mask is added to the rank-4 scores"},
		{"mask operand rank", []edit{{"Cast <to = 1> (m2)", "Cast <to = 1> (attention_mask)"}, {"float fone = {1}", "float[1,1,1,1] fone = {1}"}}, "",
			"mask of an unknown form: Sub broadcasts a rank-2 mask into rank 4"},
		{"mask leaf", []edit{{"int64[batch,seq] attention_mask", "int64[batch,1,1,seq] attention_mask"},
			{"Unsqueeze (attention_mask, one)", "Identity (attention_mask)"}, {"Unsqueeze (m1, two)", "Identity (m1)"}}, "",
			"mask of an unknown form: mask input attention_mask has shape [batch,1,1,seq], not [B,S]"},
		{"mask broadcast", []edit{{"Unsqueeze (m1, two)", "Unsqueeze (m1, three)"}, {"int64[1] two = {2},", "int64[1] two = {2},\n  int64[1] three = {3},"}}, "",
			"mask of an unknown form: mask [batch,seq] is broadcast as [batch,1,seq,1], not [B,1,1,S]"},
		{"where fill", []edit{{"Add (sd, ext)", "Where (mb, fill, sd)"}, {"  [\"/Mul\"]", "  mb = Cast <to = 9> (inv)\n  [\"/Mul\"]"},
			{"float fone = {1}", "float fone = {1},\n  float fill = {-100}"}}, "", "mask of an unknown form: mask fill -100 is not a large negative value"},
		{"where condition", []edit{{"Add (sd, ext)", "Where (mb, fill, sd)"}, {"  [\"/Mul\"]", "  mb = Cast <to = 9> (mf)\n  [\"/Mul\"]"},
			{"float fone = {1}", "float fone = {1},\n  float fill = {-10000}"}}, "", "mask of an unknown form: mask condition does not select the masked positions"},
		{"target", nil, "tensorrt", `no attention operator for target "tensorrt"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := string(base)
			for _, e := range c.edits {
				if !strings.Contains(src, e.old) {
					t.Fatalf("edit %q does not apply", e.old)
				}
				src = strings.Replace(src, e.old, e.new, 1)
			}
			m := ortcheck.Parse(t, src)
			target := transformer.ORT
			if c.target != "" {
				target = c.target
			}
			_, refused := attnDump(t, m)
			rep := attnFuse(t, m, &transformer.Env{Target: target})
			expectReason(t, append(refused, reportReasons(rep)...), c.want)
		})
	}
}
