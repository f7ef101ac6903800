package transformer_test

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/txtar"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ir/text"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/shape"
)

// roleFamilies are the families whose kinds' roles TestKindRoles checks, in fuse order.
var roleFamilies = []*transformer.Family{
	transformer.LayerNormFamily, transformer.RMSNormFamily, transformer.GeluFamily,
	transformer.SkipFamily, transformer.SkipRMSNormFamily, transformer.AffineNormFamily,
	transformer.FFNFamily,
}

// TestKindRoles: over every test graph of the norm, skip, affine, GELU and FFN families,
// recognised as written and after fuse (ORT, ORT's CPU provider, ONNX with the opset
// raised to 23), every block fills each role its kind requires (transformer.KindRoles;
// a gated FFN its gate weight too) and none its kind does not declare; and each rule
// of these families recognises at least one block, so every variant is checked.
func TestKindRoles(t *testing.T) {
	seen := map[string]int{}
	check := func(where string, m *ir.Model) {
		t.Helper()
		if _, err := shape.Infer(m); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		blocks, _ := transformer.Recognize(m.Graph, roleFamilies)
		for _, b := range blocks {
			base, _, _ := strings.Cut(b.Variant, "+")
			seen[base]++
			set, ok := transformer.KindRoles[b.Kind]
			if !ok {
				t.Errorf("%s: kind %s declares no roles", where, b.Kind)
				continue
			}
			required := set.Required
			if b.Kind == transformer.FFN && b.Params["gated"] == 1 {
				required = append(append([]string(nil), required...), transformer.RoleGateWeight)
			}
			for _, r := range required {
				if b.Role(r) == nil {
					t.Errorf("%s: %s (%s) does not fill role %s", where, b.ID, b.Variant, r)
				}
			}
			for r, v := range b.Roles {
				if !set.Declares(r) {
					t.Errorf("%s: %s (%s) fills role %s, which %s does not declare", where, b.ID, b.Variant, r, b.Kind)
				}
				if v == nil {
					t.Errorf("%s: %s (%s) has role %s set to nil", where, b.ID, b.Variant, r)
				}
			}
		}
	}
	// through checks src as written and after fuse for each target.
	through := func(where string, parse func() *ir.Model) {
		t.Helper()
		check(where, parse())
		for _, env := range []transformer.Env{{Target: transformer.ORT}, {Target: transformer.ORT, Provider: "cpu"}, {Target: transformer.ONNX, RaiseOpset: 23}} {
			m := parse()
			env.Model = m
			if _, err := transformer.Fuse(m, roleFamilies, &env); err != nil {
				t.Fatalf("%s: fuse %s: %v", where, env.Target, err)
			}
			check(where+" fused "+string(env.Target)+env.Provider, m)
		}
	}

	files, _ := filepath.Glob(filepath.Join("testdata", "*.txtar"))
	n := 0
	for _, f := range files {
		base := filepath.Base(f)
		if !strings.HasPrefix(base, "layernorm-") && !strings.HasPrefix(base, "skip") &&
			!strings.HasPrefix(base, "affine-") && !strings.HasPrefix(base, "qlinear-") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src, ok := txtar.Parse(data).Get("input")
		if !ok {
			t.Fatalf("%s: no input", base)
		}
		through(base, func() *ir.Model {
			m, err := text.Parse(string(src))
			if err != nil {
				t.Fatalf("%s: %v", base, err)
			}
			return m
		})
		n++
	}
	if n == 0 {
		t.Fatal("no norm test graphs")
	}
	for _, c := range geluCases() {
		c := c
		through("gelu "+c.name, func() *ir.Model { return geParse(t, `"" : 13`, c.src) })
	}
	for _, c := range ffnCases() {
		c := c
		through("ffn "+c.name(), func() *ir.Model { return geParse(t, `"" : 13`, ffnSource(c.structure, c.act, c.form, true)) })
	}

	var missing []string
	for _, f := range roleFamilies {
		for _, r := range f.Rules {
			if seen[r.Name] == 0 {
				missing = append(missing, r.Name)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("rules no test graph exercises (their roles are unchecked): %s", strings.Join(missing, ", "))
	}
}
