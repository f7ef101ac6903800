package tests

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/passes/qdq"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
)

// TestProbeQDQBranches: the merged decoder (the model in both branches of an If), in both
// pass orders, with budget= and report=: the budget counts the quantizers of both
// branches (as many as the model carries, none of them in the main graph) and decides
// each branch's group with its twin ({then,else}/layer<L>/<kind>); the report lists the
// groups and blocks of both branches with their graph named; the placement checker
// passes; and ORT stays within cosine 0.99 of the float model on either branch.
func TestProbeQDQBranches(t *testing.T) {
	orttest.RequireLib(t)
	for _, p := range loadProbes(t) {
		if p.Form != "gpt2-merged" || p.Opset != 17 {
			continue
		}
		p := p
		t.Run(p.name, func(t *testing.T) {
			in := p.sidecar(t, "inputs")
			feeds := map[bool]map[string]*ndarray.Array{}
			want := map[bool]map[string]*ndarray.Array{}
			for _, c := range []bool{true, false} {
				feeds[c] = map[string]*ndarray.Array{}
				for k, a := range in {
					feeds[c][k] = a
				}
				feeds[c]["use_cache_branch"] = ndarray.FromBool(nil, []bool{c})
				want[c] = ortcheck.Run(t, p.path, feeds[c], ort.OptDisabled)
			}
			out := filepath.Join(t.TempDir(), "report.json")
			q := "qdq<min-gemm=2;data=random:4;budget=1;report=" + out + ">"
			for _, spec := range []string{
				"fold," + q + ",fuse<target=onnx;opset=23>",
				"fold,fuse<target=onnx;opset=23>," + q,
			} {
				m := ortcheck.Load(t, p.path)
				pl, err := pass.Parse(spec, passes.All)
				if err != nil {
					t.Fatal(err)
				}
				rep, err := pl.Run(context.Background(), m, &pass.Instrumentation{VerifyEach: true, Verifiers: []func(*ir.Model) error{qdqcheck.Check}})
				if err != nil {
					t.Fatal(err)
				}
				var st pass.Stat
				for _, s := range rep.Stats {
					if s.Pass == "qdq" {
						st = s
					}
				}
				perGraph, total := groupedDQ(m)
				t.Logf("%s: counts %v; DequantizeLinear per graph %v", spec, st.Counts, perGraph)
				if perGraph["then"] == 0 || perGraph["else"] == 0 || perGraph[m.Graph.Name] != 0 {
					t.Errorf("%s: DequantizeLinear per graph %v, want both branches and not the main graph", spec, perGraph)
				}
				if got := st.Counts["qdq: budget quantizers total"]; got != total || st.Counts["qdq: budget quantizers kept"] != total {
					t.Errorf("%s: budget counts %d quantizers (%d kept), the model carries %d", spec, got, st.Counts["qdq: budget quantizers kept"], total)
				}
				notes := strings.Join(st.Notes, "\n")
				if !strings.Contains(notes, "decided with their twins in the other branches") {
					t.Errorf("%s: no note on the branch twins:\n%s", spec, notes)
				}
				checkBranchReport(t, spec, out)
				if err := qdqcheck.Check(m); err != nil {
					t.Errorf("%s: %v", spec, err)
				}
				for _, c := range []bool{true, false} {
					got := ortcheck.RunModel(t, m, feeds[c], ort.OptDisabled)
					for name, w := range want[c] {
						cos, err := ndarray.CosineSimilarity(w, got[name])
						if err != nil {
							t.Fatalf("%s: %s: %v", spec, name, err)
						}
						if cos < 0.99 {
							t.Errorf("%s: use_cache_branch=%v: %s has cosine %.5f to float, want ≥ 0.99", spec, c, name, cos)
						}
					}
				}
			}
		})
	}
}

// groupedDQ counts the DequantizeLinear nodes qdq made (those carrying a group), per
// graph and in all.
func groupedDQ(m *ir.Model) (map[string]int, int) {
	per, total := map[string]int{}, 0
	_ = m.Graph.Walk(func(g *ir.Graph) error {
		for _, n := range g.Nodes() {
			if _, ok := n.Meta(qdqcheck.GroupKey); ok && n.OpType == "DequantizeLinear" {
				per[g.Name]++
				total++
			}
		}
		return nil
	})
	return per, total
}

// checkBranchReport reads a report=FILE.json of the merged decoder: groups and blocks
// of both branches, each with its graph, every group measured.
func checkBranchReport(t *testing.T, spec, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep qdq.ErrorReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	groups, blocks := map[string]int{}, map[string]int{}
	for _, g := range rep.Groups {
		if !strings.HasPrefix(g.Group, g.Graph+"/") || g.Quantizers == 0 {
			t.Errorf("%s: report group %s: graph %q, %d quantizers", spec, g.Group, g.Graph, g.Quantizers)
		}
		groups[g.Graph]++
	}
	for _, bl := range rep.Blocks {
		if !strings.HasPrefix(bl.Block, bl.Graph+"/") {
			t.Errorf("%s: report block %s: graph %q", spec, bl.Block, bl.Graph)
		}
		blocks[bl.Graph]++
	}
	t.Logf("%s: report groups per graph %v, blocks per graph %v", spec, groups, blocks)
	for _, br := range []string{"then", "else"} {
		if groups[br] == 0 || groups[br] != groups["then"] || blocks[br] == 0 || blocks[br] != blocks["then"] {
			t.Errorf("%s: report groups per graph %v, blocks per graph %v: want both branches alike", spec, groups, blocks)
		}
	}
}
