package transformer_test

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/internal/txtar"
	"github.com/qcc-dev/qcc/internal/update"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/patterns"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/shape"
)

// Cases under testdata/layernorm-*.txtar and testdata/skip-*.txtar hold
//
//	-- options --  optional: "raise=N" (Env.RaiseOpset for the onnx target)
//	-- input --    a model in ONNX text syntax
//	-- blocks --   golden: what Recognize finds (blocks with roles and params, refusals)
//	-- ort --      golden: Fuse's report and the model after Fuse for target ort
//	-- onnx --     golden: the same for target onnx
//
// layernorm-* cases run LayerNormFamily and RMSNormFamily, skip-* cases LayerNormFamily
// and SkipFamily. Every fused model must verify, fusing it again must change nothing,
// and, where ONNX Runtime is available, it must compute what the input computes.

func TestLayerNormCases(t *testing.T) {
	normRunCases(t, "layernorm-*.txtar", []*transformer.Family{transformer.LayerNormFamily, transformer.RMSNormFamily})
}

func normRunCases(t *testing.T, glob string, fams []*transformer.Family) {
	files, err := filepath.Glob(filepath.Join("testdata", glob))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases %s", glob)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txtar")
		t.Run(name, func(t *testing.T) { normRunCase(t, f, fams) })
	}
}

func normRunCase(t *testing.T, file string, fams []*transformer.Family) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	a := txtar.Parse(data)
	src, ok := a.Get("input")
	if !ok {
		t.Fatal("case has no input section")
	}
	raise, provider := int64(0), ""
	if opt, ok := a.Get("options"); ok {
		for _, f := range strings.Fields(string(opt)) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "raise":
				if _, err := fmt.Sscan(v, &raise); err != nil {
					t.Fatalf("options: %s: %v", f, err)
				}
			case "provider":
				provider = v
			default:
				t.Fatalf("options: unknown setting %q", f)
			}
		}
	}
	parse := func() *ir.Model {
		m, err := text.Parse(string(src))
		if err != nil {
			t.Fatalf("input: %v", err)
		}
		return m
	}

	got := map[string]string{}
	m := parse()
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	blocks, refusals := transformer.Recognize(m.Graph, fams)
	got["blocks"] = normFormatBlocks(blocks, refusals)
	reasons := refusalReasons(refusals)

	for _, target := range []transformer.Target{transformer.ORT, transformer.ONNX} {
		m := parse()
		env := &transformer.Env{Model: m, Target: target, RaiseOpset: raise, Provider: provider}
		rep, err := transformer.Fuse(m, fams, env)
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if err := m.Verify(); err != nil {
			t.Fatalf("%s: fused model does not verify: %v", target, err)
		}
		out := ortcheck.Text(t, m)
		got[string(target)] = normFormatReport(rep) + out
		reasons = append(reasons, rep.Left...) // what the golden holds of the report

		// Idempotence: fusing the result again changes nothing.
		m2, err := text.Parse(out)
		if err != nil {
			t.Fatalf("%s: output does not parse back: %v", target, err)
		}
		env2 := &transformer.Env{Model: m2, Target: target, RaiseOpset: raise, Provider: provider}
		if _, err := transformer.Fuse(m2, fams, env2); err != nil {
			t.Fatalf("%s: second fuse: %v", target, err)
		}
		if again := ortcheck.Text(t, m2); again != out {
			t.Errorf("%s: fuse is not idempotent:\n%s", target, cmp.Diff(out, again))
		}
		normCompareORT(t, string(target), parse(), m)
	}

	if *update.Golden {
		for _, k := range []string{"blocks", "ort", "onnx"} {
			a.Set(k, []byte(got[k]))
		}
		if err := os.WriteFile(file, txtar.Format(a), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, k := range []string{"blocks", "ort", "onnx"} {
		want, ok := a.Get(k)
		if !ok {
			t.Errorf("case has no %s section; run go test -update", k)
			continue
		}
		if d := cmp.Diff(string(want), got[k]); d != "" {
			t.Errorf("%s differs from golden (-want +got):\n%s", k, d)
		}
	}
	if !t.Failed() {
		goldenReasons(reasons)
	}
}

func normFormatBlocks(blocks []*transformer.Block, refusals []patterns.Refusal) string {
	var b strings.Builder
	for _, bl := range blocks {
		fmt.Fprintf(&b, "%s %s %s", bl.ID, bl.Kind, bl.Variant)
		if bl.Fused {
			b.WriteString(" fused")
		}
		fmt.Fprintf(&b, " root=%s nodes=%d\n", bl.Root.Name, len(bl.Nodes))
		var roles []string
		for r, v := range bl.Roles {
			roles = append(roles, r+"="+v.Name)
		}
		sort.Strings(roles)
		fmt.Fprintf(&b, "  roles: %s\n", strings.Join(roles, " "))
		var params []string
		for p, v := range bl.Params {
			params = append(params, fmt.Sprintf("%s=%g", p, v))
		}
		sort.Strings(params)
		fmt.Fprintf(&b, "  params: %s\n", strings.Join(params, " "))
	}
	for _, r := range refusals {
		fmt.Fprintf(&b, "refused: %s\n", r)
	}
	return b.String()
}

func normFormatReport(rep *transformer.Report) string { return formatOpsLeft(rep, "# ") }

// formatOpsLeft writes a fuse report's op counts (sorted) and the blocks left, a line
// each, every line starting with prefix.
func formatOpsLeft(rep *transformer.Report, prefix string) string {
	var b strings.Builder
	var ops []string
	for op, n := range rep.Ops {
		ops = append(ops, fmt.Sprintf("%s=%d", op, n))
	}
	sort.Strings(ops)
	fmt.Fprintf(&b, "%sops: %s\n", prefix, strings.Join(ops, " "))
	for _, l := range rep.Left {
		fmt.Fprintf(&b, "%sleft: %s\n", prefix, l)
	}
	return b.String()
}

// normCompareORT runs the input and the fused model on the same random inputs and
// requires the outputs to agree within 1e-4 (with ORT's optimisations off and on).
func normCompareORT(t *testing.T, what string, orig, fused *ir.Model) {
	t.Helper()
	orttest.RequireLib(t)
	inputs := normRandomInputs(t, orig)
	if inputs == nil {
		t.Fatalf("%s: cannot make inputs for the model (an input that is not float)", what)
	}
	want := ortcheck.RunModel(t, orig, inputs, ort.OptDisabled)
	for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptExtended} {
		got := ortcheck.RunModel(t, fused, inputs, level)
		ortcheck.CheckOutputs(t, fmt.Sprintf("%s (opt level %d)", what, level), want, got, 1e-4)
	}
}

// normRandomInputs makes seeded random inputs for a model's float inputs (symbolic dims
// are 2, "batch", or 3) and -1 for int64 ones. It returns nil for other input types.
func normRandomInputs(t *testing.T, m *ir.Model) map[string]*ndarray.Array {
	rng := rand.New(rand.NewSource(1))
	in := map[string]*ndarray.Array{}
	for _, v := range m.Graph.Inputs {
		if v.IsConst() {
			continue
		}
		if v.Type == nil || v.Type.Shape == nil {
			return nil
		}
		var shape []int64
		n := 1
		for _, d := range v.Type.Shape {
			s := int64(3)
			switch {
			case d.Known && d.Param == "":
				s = d.Value
			case d.Param == "batch":
				s = 2
			}
			shape = append(shape, s)
			n *= int(s)
		}
		vals := make([]float64, n)
		for i := range vals {
			vals[i] = rng.NormFloat64()*2 + 0.5
		}
		switch v.Type.DType {
		case ir.Float:
			f := make([]float32, n)
			for i, x := range vals {
				f[i] = float32(x)
			}
			in[v.Name] = ndarray.FromFloat32(shape, f)
		case ir.Float16:
			f := make([]float32, n)
			for i, x := range vals {
				f[i] = float32(x)
			}
			in[v.Name] = ndarray.FromFloat16(shape, f)
		case ir.Double:
			in[v.Name] = ndarray.FromFloat64(shape, vals)
		case ir.Int64:
			// Integer inputs of these graphs are axes: -1, the last one.
			ints := make([]int64, n)
			for i := range ints {
				ints[i] = -1
			}
			in[v.Name] = ndarray.FromInt64(shape, ints)
		default:
			return nil
		}
	}
	return in
}

func TestAffineNormCases(t *testing.T) {
	normRunCases(t, "affine-*.txtar", []*transformer.Family{transformer.LayerNormFamily, transformer.RMSNormFamily, transformer.AffineNormFamily})
}

// TestAffineNormUnknownChannels: an affine map over an axis of unknown size is refused
// (its constants cannot be checked against it).
func TestAffineNormUnknownChannels(t *testing.T) {
	m := geParse(t, `"" : 17`, `g (float[batch,seq,h] x) => (float[batch,seq,8] y) <
  float[8] g = {1.1, 0.9, 1, 1.2, 0.8, 1, 1.05, 0.95},
  float[8] b = {0.1, -0.1, 0, 0.2, -0.2, 0, 0.05, -0.05}
> {
  m = Mul (x, g)
  y = Add (m, b)
}`)
	if _, err := shape.Infer(m); err != nil {
		t.Fatal(err)
	}
	blocks, refs := transformer.Recognize(m.Graph, []*transformer.Family{transformer.AffineNormFamily})
	if len(refs) == 1 {
		expectExactReason(t, refusalReasons(refs), "the size of x's last axis is unknown")
	}
	if len(blocks) != 0 || len(refs) != 1 || refs[0].Reason != "the size of x's last axis is unknown" {
		t.Fatalf("blocks %v, refusals %v; want the unknown channel count refused", blocks, refs)
	}
}
