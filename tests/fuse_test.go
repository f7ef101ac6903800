package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
)

// layers reads the encoder depth from a corpus model's JSON sidecar.
func layers(t *testing.T, cm corpus.Model) int {
	t.Helper()
	data, err := os.ReadFile(strings.TrimSuffix(cm.Path, ".onnx") + ".json")
	if err != nil {
		t.Fatal(err)
	}
	var side struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(data, &side); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"num_hidden_layers", "n_layers"} {
		if v, ok := side.Config[k].(float64); ok {
			return int(v)
		}
	}
	t.Fatalf("no layer count in %s.json", cm.Name)
	return 0
}

// opCounts counts nodes by domain-qualified op type, and blocks by annotated kind.
func opCounts(m *ir.Model) (ops, kinds map[string]int) {
	ops, kinds = map[string]int{}, map[string]int{}
	for _, n := range m.Graph.Nodes() {
		key := n.OpType
		if n.Domain != "" {
			key = n.Domain + "." + n.OpType
		}
		ops[key]++
		if k, ok := n.Meta("qcc.kind"); ok {
			kinds[k]++
		}
	}
	return ops, kinds
}

func sum(m map[string]int, keys ...string) int {
	n := 0
	for _, k := range keys {
		n += m[k]
	}
	return n
}

// referenceFor returns the model ORT can run as the reference: the invalid opset-11
// DeBERTa exports are checked against their opset-13 siblings (same weights).
func referenceFor(cm corpus.Model) string { return ortcheck.Reference(cm) }

// TestFuseORTCorpus: with fold,fuse<target=ort> (and with provider=cpu), every corpus model
// has one Attention and one GELU per layer, at least two LayerNorms per layer, its embedding
// fused or annotated, and ONNX Runtime's outputs within 1e-4 of the original's, with ORT's
// own optimizer off and on; with provider=cpu no SkipLayerNormalization, every residual a Sum.
func TestFuseORTCorpus(t *testing.T) {
	for _, pl := range []string{"fold,fuse<target=ort>", "fold,fuse<target=ort;provider=cpu>"} {
		t.Run(pl, func(t *testing.T) { fuseORTCorpus(t, pl) })
	}
}

func fuseORTCorpus(t *testing.T, pipeline string) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	cpu := strings.Contains(pipeline, "provider=cpu")
	var rows []string
	fused := map[string]string{} // what each model fused, to compare its raised copy with
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		for _, to := range corpusRaises(cm, pipeline) {
			cm, to := cm, to
			name := cm.Name
			if to > 0 {
				name = fmt.Sprintf("%sto%d", cm.Name, to)
			}
			t.Run(name, func(t *testing.T) {
				path := cm.Path
				if to > 0 {
					path = raiseModel(t, cm.Path, to, filepath.Join(t.TempDir(), name+".onnx"))
				}
				_, out, outPath := compile(t, path, pipeline, dir)
				ops, kinds := opCounts(out)
				L := layers(t, cm)
				att := sum(ops, "com.microsoft.Attention", "com.microsoft.MultiHeadAttention")
				gelu := sum(ops, "com.microsoft.Gelu", "com.microsoft.BiasGelu", "com.microsoft.FastGelu", "com.microsoft.QuickGelu")
				norms := sum(ops, "LayerNormalization", "com.microsoft.SkipLayerNormalization", "com.microsoft.SimplifiedLayerNormalization")
				emb := ops["com.microsoft.EmbedLayerNormalization"]
				if att != L {
					t.Errorf("%d attention operators, want %d (one per layer)", att, L)
				}
				if gelu != L {
					t.Errorf("%d GELU operators, want %d", gelu, L)
				}
				if norms < 2*L {
					t.Errorf("%d LayerNorm operators, want >= %d", norms, 2*L)
				}
				if emb == 0 && kinds["Embedding"] == 0 {
					t.Errorf("embedding neither fused nor annotated")
				}
				if cpu && (ops["com.microsoft.SkipLayerNormalization"] != 0 || ops["Sum"] < 2*L) {
					t.Errorf("provider=cpu: %d SkipLayerNormalization, %d Sum residuals (want 0 and >= %d)",
						ops["com.microsoft.SkipLayerNormalization"], ops["Sum"], 2*L)
				}
				inputs := ortcheck.Inputs(t, cm)
				ref := ortcheck.Reference(cm)
				want := ortcheck.Run(t, ref, inputs, ort.OptDisabled)
				worst := 0.0
				for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptExtended} {
					if d := ortcheck.MaxDiff(t, want, ortcheck.Run(t, outPath, inputs, level)); d > 1e-4 {
						t.Errorf("ORT level %v: outputs differ by %g (> 1e-4)", level, d)
					} else if d > worst {
						worst = d
					}
				}
				if !strings.Contains(cm.Name, "static") {
					other := ortcheck.OtherShape(inputs, 3, 11)
					if d := ortcheck.Compare(t, ref, outPath, other, ort.OptDisabled); d > 1e-4 {
						t.Errorf("on a [3,11] input, outputs differ by %g (> 1e-4)", d)
					}
				}
				counts := fmt.Sprintf("attention %d gelu %d norms %d (skip %d) embed %d/%d", att, gelu, norms, ops["com.microsoft.SkipLayerNormalization"], emb, kinds["Embedding"])
				if to == 0 {
					fused[cm.Name] = counts
				} else if base, ok := fused[cm.Name]; ok && counts != base {
					t.Errorf("raised to opset %d: %s; at its own opset: %s", to, counts, base)
				}
				rows = append(rows, fmt.Sprintf("%-26s L=%d %s  %4d nodes  max|diff| %.1e",
					name, L, counts, out.Graph.NumNodes(), worst))
			})
		}
	}
	sort.Strings(rows)
	t.Logf("%s:\n%s", pipeline, strings.Join(rows, "\n"))
}

// corpusRaises are the opsets fuseORTCorpus runs cm at: its own (0), and, through
// fold,fuse<target=ort>, raised to 18 (torch 2's exporters' default); the raised copy
// must fuse the same blocks. The opset-11 exports stay as they are: raised as exported,
// before shape inference, their softmaxes' ranks are unknown, and a Softmax-11 upgrades
// only when it is known to normalise the last axis alone.
func corpusRaises(cm corpus.Model, pipeline string) []int64 {
	if pipeline != "fold,fuse<target=ort>" || cm.Sub == "invalid" || strings.Contains(cm.Name, ".opset11") {
		return []int64{0}
	}
	return []int64{0, 18}
}

// TestFuseONNXCorpus: with target=onnx the models stay standard ONNX (checker) with
// equal outputs, and blocks left decomposed are annotated.
func TestFuseONNXCorpus(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	var outputs, rows []string
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		cm := cm
		t.Run(cm.Name, func(t *testing.T) {
			for _, pl := range []string{"fold,fuse<target=onnx>", "fold,fuse<target=onnx;opset=23>"} {
				sub := filepath.Join(dir, fmt.Sprint(len(rows)))
				os.MkdirAll(sub, 0o755)
				_, out, outPath := compile(t, cm.Path, pl, sub)
				ops, kinds := opCounts(out)
				for op := range ops {
					if strings.Contains(op, ".") {
						t.Errorf("%s emitted non-standard operator %s", pl, op)
					}
				}
				if kinds["Attention"] != layers(t, cm) {
					t.Errorf("%s: %d attention blocks annotated, want %d", pl, kinds["Attention"], layers(t, cm))
				}
				// Raising to 23 works from every corpus opset (11 included: the
				// attribute-to-input changes at 12 and 13 are upgraded), and then every
				// attention but DeBERTa's (no standard operator) is one Attention-23.
				// (The import is raised only as far as an emitted operator needs.)
				if strings.Contains(pl, "opset=23") && !strings.HasPrefix(cm.Name, "deberta") {
					if got := out.Opset(""); got != 23 {
						t.Errorf("%s: opset %d, want 23", pl, got)
					}
					if want := layers(t, cm); ops["Attention"] != want {
						t.Errorf("%s: %d Attention-23, want %d", pl, ops["Attention"], want)
					}
					if ops["LayerNormalization"] < 2*layers(t, cm) {
						t.Errorf("%s: %d LayerNormalization, want at least %d", pl, ops["LayerNormalization"], 2*layers(t, cm))
					}
				}
				if out.Opset("") <= 17 {
					outputs = append(outputs, outPath) // the checker knows opsets up to 17
				}
				d := ortcheck.Compare(t, ortcheck.Reference(cm), outPath, ortcheck.Inputs(t, cm), ort.OptDisabled)
				if d > 1e-4 {
					t.Errorf("%s: outputs differ by %g (> 1e-4)", pl, d)
				}
				rows = append(rows, fmt.Sprintf("%-26s %-32s LayerNormalization %d, Attention %d, annotated %v, max|diff| %.1e", cm.Name, pl, ops["LayerNormalization"], ops["Attention"], kinds, d))
			}
		})
	}
	sort.Strings(rows)
	t.Logf("fuse, target=onnx:\n%s", strings.Join(rows, "\n"))
	checkONNX(t, outputs)
}
