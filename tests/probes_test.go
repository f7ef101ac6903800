package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/internal/modroot"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/npz"
	"github.com/qcc-dev/qcc/opsets"
	"github.com/qcc-dev/qcc/ort"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/passes/blocks"
	"github.com/qcc-dev/qcc/patterns/transformer"
)

// The probe corpus (testdata/probes, made by make_probes.py): small transformer modules
// written from their equations, one per export form, each with the architecture facts of
// its module tree in manifest.json and torch's outputs for one reference input.

// probe is one manifest entry: a file and the architecture it was exported from.
type probe struct {
	File   string `json:"file"`
	Form   string `json:"form"`
	Opset  int    `json:"opset"`
	Inputs []struct {
		Name  string `json:"name"`
		DType string `json:"dtype"`
		Shape []any  `json:"shape"` // dim names (dynamic) and sizes
	} `json:"inputs"`
	Outputs []struct {
		Name string `json:"name"`
	} `json:"outputs"`
	Layers         int  `json:"layers"`
	Attention      int  `json:"attention_blocks"` // self + cross
	NotAttention   int  `json:"not_attention"`    // softmax blocks that are not attention (near misses)
	Heads          int  `json:"heads"`
	KVHeads        int  `json:"kv_heads"`
	Causal         bool `json:"causal"`
	Norms          int  `json:"norms"`
	FFNActivations int  `json:"ffn_activations"`
	Rotaries       int  `json:"rotaries"` // rotary embeddings applied (Q and K of each layer)
	// SinkAttention counts the attention blocks with sinks (GPT-OSS), which only target
	// ort fuses (GroupQueryAttention's head_sink): Attention-23 has no sink.
	SinkAttention   int `json:"sink_attention"`
	path, name, dir string
	order           int // position among the manifest's probes at its opset
}

// probeGaps lists the forms the recognisers do not handle yet, with why. A listed probe
// logs its counts and fails once it reaches its architecture's counts under every
// pipeline (take it off the list); every other probe must reach them. Numerics and
// idempotence are checked for every probe, listed or not.
var probeGaps = map[string]string{}

// probeKVRepeated are the grouped-query forms whose K and V are repeated to every query
// head before a per-head op the attention reads them after, so the fused attention reads
// every head (kv_num_heads = num_heads): exact, without GQA's smaller K/V.
var probeKVRepeated = map[string]string{
	"falcon40b": "Falcon-40B broadcasts K and V to the query heads before the rotary; reading them before the repeat would need the rotary moved before it",
}

// Block kinds by what the manifest counts. A kind the recognisers add is counted once it
// is listed here.
var (
	attentionKinds = kindSet("Attention")
	normKinds      = kindSet("LayerNorm", "RMSNorm", "SkipLayerNorm", "SkipRMSNorm")
)

func kindSet(kinds ...string) map[transformer.Kind]bool {
	s := map[transformer.Kind]bool{}
	for _, k := range kinds {
		s[transformer.Kind(k)] = true
	}
	return s
}

// Real exports are often at opsets the probes are not written at (torch 2's exporters
// write 18, optimum 14 to 18), where reductions read their axes from an input and Split
// says how many parts. TestProbeFuse also raises the opset-17 probes, every node
// upgraded (opsets.Require): each to 18, and every third (by manifest order) also to
// 21 and 23, where no node of theirs changes again but the import does (21: the last
// change, GroupNormalization's; 23: the fused standard operators' own opset, so
// target=onnx raises nothing). The raised model must reproduce torch's outputs and fuse
// as the probe does.
var probeRaises = []int64{18, 21, 23}

// raiseGaps lists raised probes ONNX Runtime cannot run, by subtest name, with why.
var raiseGaps = map[string]string{}

// raises are the opsets TestProbeFuse raises p to (see probeRaises).
func (p *probe) raises() []int64 {
	switch {
	case p.Opset != 17:
		return nil
	case p.order%3 != 0:
		return probeRaises[:1]
	}
	return probeRaises
}

// raisedName names p raised to opset to, as its subtest and raiseGaps do.
func (p *probe) raisedName(to int64) string { return fmt.Sprintf("%sto%d", p.name, to) }

// raise writes p raised to opset to into dir and returns the path.
func (p *probe) raise(t *testing.T, to int64, dir string) string {
	t.Helper()
	return raiseModel(t, p.path, to, filepath.Join(dir, fmt.Sprintf("%s.opset%d.onnx", p.Form, to)))
}

// raiseModel writes the model at path raised to opset to (every node upgraded, as
// opsets.Require does) as out and returns out. A raise does not reach the bodies of
// model-local functions (Require refuses), so those are inlined first, as fold does:
// what a raised model tests is the blocks inside.
func raiseModel(t *testing.T, path string, to int64, out string) string {
	t.Helper()
	m := ortcheck.Load(t, path)
	if _, err := m.InlineFunctions(); err != nil {
		t.Fatal(err)
	}
	if why := opsets.Require(m, to, to, fmt.Sprintf("the raised %s", filepath.Base(path)), nil); why != "" {
		t.Fatal(why)
	}
	if got := m.Opset(""); got != to {
		t.Fatalf("raised to opset %d, the model imports %d", to, got)
	}
	return ortcheck.Save(t, m, filepath.Dir(out), filepath.Base(out))
}

// probePipelines are the pipelines every probe goes through, and the fuse stage run again
// for idempotence.
var probePipelines = []struct{ spec, again string }{
	{"fold,fuse<target=ort>", "fuse<target=ort>"},
	{"fold,fuse<target=onnx;opset=23>", "fuse<target=onnx;opset=23>"},
}

const probeTol = 1e-4

// loadProbes reads the manifest; an absent or empty manifest fails t (the probes are part
// of the repository).
func loadProbes(t *testing.T) []*probe {
	t.Helper()
	root, err := modroot.Find()
	if err != nil {
		t.Fatalf("module root: %v", err)
	}
	dir := filepath.Join(root, "testdata", "probes")
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatalf("probe manifest: %v", err)
	}
	var man struct {
		Probes []*probe `json:"probes"`
	}
	if err := json.Unmarshal(data, &man); err != nil {
		t.Fatalf("probe manifest: %v", err)
	}
	if len(man.Probes) == 0 {
		t.Fatal("probe manifest lists no probes")
	}
	at := map[int]int{}
	for _, p := range man.Probes {
		p.order = at[p.Opset]
		at[p.Opset]++
		p.dir = dir
		p.path = filepath.Join(dir, p.File)
		p.name = strings.TrimSuffix(p.File, ".onnx")
	}
	return man.Probes
}

func (p *probe) sidecar(t *testing.T, kind string) map[string]*ndarray.Array {
	t.Helper()
	a, err := npz.Read(filepath.Join(p.dir, p.name+"."+kind+".npz"))
	if err != nil {
		t.Fatalf("%s: %v", p.File, err)
	}
	return a
}

// TestProbeFiles: every probe the manifest lists is there with its reference inputs and
// outputs, matches the manifest's inputs and outputs, and every form comes at two opsets;
// every .onnx in the folder is listed, and probeGaps names only forms that exist.
func TestProbeFiles(t *testing.T) {
	probes := loadProbes(t)
	listed := map[string]bool{}
	opsets := map[string][]int{}
	for _, p := range probes {
		listed[p.File] = true
		opsets[p.Form] = append(opsets[p.Form], p.Opset)
		if want := fmt.Sprintf("%s.opset%d.onnx", p.Form, p.Opset); p.File != want {
			t.Errorf("%s: manifest says form %s opset %d (file %s)", p.File, p.Form, p.Opset, want)
		}
		for _, ext := range []string{".onnx", ".inputs.npz", ".outputs.npz"} {
			if _, err := os.Stat(filepath.Join(p.dir, p.name+ext)); err != nil {
				t.Errorf("probe %s: %v", p.Form, err)
			}
		}
		if t.Failed() {
			continue
		}
		m := ortcheck.Load(t, p.path)
		if got := m.Opset(""); got != int64(p.Opset) {
			t.Errorf("%s: imports opset %d, manifest says %d", p.File, got, p.Opset)
		}
		var modelIn, wantIn, modelOut, wantOut []string
		for _, v := range m.Graph.Inputs {
			modelIn = append(modelIn, v.Name)
		}
		for _, v := range m.Graph.Outputs {
			modelOut = append(modelOut, v.Name)
		}
		ins := p.sidecar(t, "inputs")
		for _, in := range p.Inputs {
			wantIn = append(wantIn, in.Name)
			a := ins[in.Name]
			if a == nil {
				t.Errorf("%s: reference input %s missing", p.File, in.Name)
				continue
			}
			if a.DType.String() != in.DType || len(a.Shape) != len(in.Shape) {
				t.Errorf("%s: reference input %s is %v, manifest says %s%v", p.File, in.Name, a, in.DType, in.Shape)
			}
		}
		outs := p.sidecar(t, "outputs")
		for _, o := range p.Outputs {
			wantOut = append(wantOut, o.Name)
			if outs[o.Name] == nil {
				t.Errorf("%s: reference output %s missing", p.File, o.Name)
			}
		}
		if fmt.Sprint(modelIn) != fmt.Sprint(wantIn) || fmt.Sprint(modelOut) != fmt.Sprint(wantOut) {
			t.Errorf("%s: model %v -> %v, manifest %v -> %v", p.File, modelIn, modelOut, wantIn, wantOut)
		}
	}
	for form, os := range opsets {
		if len(os) < 2 {
			t.Errorf("form %s comes at opsets %v, want two", form, os)
		}
	}
	if len(opsets) < 14 {
		t.Errorf("%d probe forms, want at least 14", len(opsets))
	}
	files, _ := filepath.Glob(filepath.Join(probes[0].dir, "*.onnx"))
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s is not in the manifest", filepath.Base(f))
		}
	}
	for form := range probeGaps {
		if opsets[form] == nil {
			t.Errorf("probeGaps names %s, which no probe has", form)
		}
	}
	raised := map[string]bool{}
	for _, p := range probes {
		for _, to := range p.raises() {
			raised[p.raisedName(to)] = true
		}
	}
	for name := range raiseGaps {
		if !raised[name] {
			t.Errorf("raiseGaps names %s, which is no raised probe", name)
		}
	}
}

// TestProbeReference: ONNX Runtime on each probe reproduces torch's outputs (the export is
// faithful, so the probe tests the form it claims).
func TestProbeReference(t *testing.T) {
	orttest.RequireLib(t)
	for _, p := range loadProbes(t) {
		p := p
		t.Run(p.name, func(t *testing.T) {
			got := ortcheck.Run(t, p.path, p.sidecar(t, "inputs"), ort.OptDisabled)
			ortcheck.CheckOutputs(t, "ORT vs torch", p.sidecar(t, "outputs"), got, probeTol)
		})
	}
}

// probeCounts is what fuse made of a probe: fused blocks by what the manifest counts.
type probeCounts struct{ attention, norms, activations, rotaries int }

func (c probeCounts) String() string {
	return fmt.Sprintf("attention %d, norms %d, activations %d, rotaries %d", c.attention, c.norms, c.activations, c.rotaries)
}

func (p *probe) want() probeCounts {
	return probeCounts{p.Attention, p.Norms, p.FFNActivations, p.Rotaries}
}

// wantFor is what a pipeline fuses: target=onnx leaves the blocks with sinks.
func (p *probe) wantFor(spec string) probeCounts {
	w := p.want()
	if strings.Contains(spec, "target=onnx") {
		w.attention -= p.SinkAttention
	}
	return w
}

// sinkRefusals counts the blocks of m that target=onnx refuses for their sinks.
func sinkRefusals(t *testing.T, m *ir.Model) int {
	t.Helper()
	fams := []*transformer.Family{transformer.GeneralAttentionFamily}
	rep, err := transformer.Fuse(m, fams, &transformer.Env{Model: m, Target: transformer.ONNX, RaiseOpset: 23})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, why := range rep.Why {
		if strings.Contains(why, "(attention sinks): Attention-23 has no sink input") {
			n++
		}
	}
	return n
}

// recognised runs the blocks analysis on m through the pass manager.
func recognised(t *testing.T, m *ir.Model) *blocks.Result {
	t.Helper()
	var res *blocks.Result
	capture := &pass.Pass{
		Name: "probe-blocks", Doc: "keeps the blocks analysis' result", Analysis: true,
		Requires: []*pass.Pass{blocks.Pass},
		Run: func(ctx *pass.Context) error {
			res = ctx.ResultOf(blocks.Pass).(*blocks.Result)
			return nil
		},
	}
	ortcheck.Pipeline(t, m, capture.Name, append(append([]*pass.Pass{}, passes.All...), capture), nil)
	return res
}

// recognisedAll is recognised's blocks and those of the bodies of If, Loop and Scan
// nodes (a merged decoder's branches).
func recognisedAll(t *testing.T, m *ir.Model) []*transformer.Block {
	t.Helper()
	var bs []*transformer.Block
	for _, r := range recognised(t, m).All() {
		bs = append(bs, r.Blocks...)
	}
	return bs
}

// fusedCounts counts the fused blocks; a norm recognised by two kinds (a skip block and
// its LayerNorm) counts once, and a fused embedding counts the LayerNorm it holds.
func fusedCounts(bs []*transformer.Block) probeCounts {
	var c probeCounts
	norms := map[*ir.Value]bool{}
	for _, b := range bs {
		switch {
		case b.Kind == transformer.FFN:
			// An FFN block is an annotation (its activation is fused by the GELU family,
			// or left for ORT: ReLU, SiLU): it counts once recognised.
			c.activations++
		case !b.Fused:
		case attentionKinds[b.Kind]:
			c.attention++
		case b.Kind == transformer.Rotary:
			c.rotaries++
		case normKinds[b.Kind], b.Kind == transformer.Embedding && b.Role("gamma") != nil:
			norms[b.Root] = true
		}
	}
	c.norms = len(norms)
	return c
}

// TestProbeFuse: every probe through fold,fuse<target=ort> and
// fold,fuse<target=onnx;opset=23>: ONNX Runtime's outputs equal the original's (optimizer
// off and on), fuse run again changes nothing, target=onnx emits standard operators only,
// and the fused attention, norm and activation counts equal the architecture's, except
// for the forms in probeGaps, which must not reach them yet. The opset-17 probes go
// through it raised too (probeRaises), after ONNX Runtime on the raised model is checked
// against torch's outputs.
func TestProbeFuse(t *testing.T) {
	orttest.RequireLib(t)
	dir := t.TempDir()
	var rows []string
	for _, p := range loadProbes(t) {
		for _, to := range append([]int64{0}, p.raises()...) {
			p, to := p, to
			name := p.name
			if to > 0 {
				name = p.raisedName(to)
			}
			t.Run(name, func(t *testing.T) {
				inputs := p.sidecar(t, "inputs")
				path := p.path
				if to > 0 {
					if why, ok := raiseGaps[name]; ok {
						t.Skipf("ONNX Runtime cannot run it: %s", why)
					}
					path = p.raise(t, to, t.TempDir())
				}
				want := ortcheck.Run(t, path, inputs, ort.OptDisabled)
				if to > 0 {
					ortcheck.CheckOutputs(t, "ORT on the raised model vs torch", p.sidecar(t, "outputs"), want, probeTol)
				}
				gap, inGaps := probeGaps[p.Form]
				matched := 0
				for i, pl := range probePipelines {
					sub := filepath.Join(dir, fmt.Sprint(i))
					os.MkdirAll(sub, 0o755)
					_, out, outPath := compile(t, path, pl.spec, sub)
					for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptAll} {
						got := ortcheck.Run(t, outPath, inputs, level)
						ortcheck.CheckOutputs(t, fmt.Sprintf("%s, ORT level %d", pl.spec, level), want, got, probeTol)
					}
					before := ortcheck.Text(t, out)
					ortcheck.Pipeline(t, out, pl.again, passes.All, &pass.Instrumentation{VerifyEach: true})
					if after := ortcheck.Text(t, out); after != before {
						t.Errorf("%s: %s again changes the model (not idempotent):\n%s", pl.spec, pl.again, firstDiff(before, after, 3))
					}
					if strings.Contains(pl.spec, "target=onnx") {
						for op := range ortcheck.Ops(out.Graph) {
							if strings.Contains(op, ".") {
								t.Errorf("%s emitted non-standard operator %s", pl.spec, op)
							}
						}
						// Grouped- and multi-query attention read K/V before their repeat, unless
						// the model repeats them before a per-head op (probeKVRepeated). The
						// group size is checked, not the counts: layers may have heads of their own.
						group := int64(p.Heads / p.KVHeads)
						if _, ok := probeKVRepeated[p.Form]; ok {
							group = 1
						}
						for _, n := range out.Graph.Nodes() {
							if n.OpType != "Attention" || n.Domain != "" {
								continue
							}
							q, kv := n.AttrInt("q_num_heads", 0), n.AttrInt("kv_num_heads", 0)
							if kv <= 0 || q != group*kv {
								t.Errorf("%s: %s has q_num_heads %d, kv_num_heads %d, want %d query heads a K/V head (the architecture has %d of %d)", pl.spec, n.Name, q, kv, group, p.KVHeads, p.Heads)
							}
						}
					}
					got := fusedCounts(recognisedAll(t, out))
					switch {
					case got == p.wantFor(pl.spec):
						matched++
					case !inGaps:
						t.Errorf("%s: fused %v, the architecture has %v", pl.spec, got, p.wantFor(pl.spec))
					}
					if p.SinkAttention > 0 && strings.Contains(pl.spec, "target=onnx") {
						if n := sinkRefusals(t, ortcheck.Load(t, outPath)); n != p.SinkAttention {
							t.Errorf("%s: %d blocks refused for their sinks, the architecture has %d", pl.spec, n, p.SinkAttention)
						}
					}
					if p.NotAttention > 0 && got.attention > p.Attention {
						t.Errorf("%s: %d attention blocks fused in a model with %d (and %d near misses)", pl.spec, got.attention, p.Attention, p.NotAttention)
					}
					rows = append(rows, fmt.Sprintf("%-36s %-32s fused %v of %v", name, pl.spec, got, p.wantFor(pl.spec)))
				}
				if inGaps {
					if matched == len(probePipelines) {
						t.Errorf("%s is listed in probeGaps (%s) but now fuses as its architecture says: take it off the list", p.Form, gap)
					} else {
						t.Logf("gap: %s", gap)
					}
				}
			})
		}
	}
	sort.Strings(rows)
	t.Logf("probes:\n%s", strings.Join(rows, "\n"))
}

// TestProbeNearMiss: a softmax over the query axis, or talking heads' scores mixed
// across heads, is not attention: the near-miss probes recognise no more attention
// blocks than their real ones, before or after fuse.
func TestProbeNearMiss(t *testing.T) {
	n := 0
	for _, p := range loadProbes(t) {
		if p.NotAttention == 0 {
			continue
		}
		n++
		t.Run(p.name, func(t *testing.T) {
			m := ortcheck.Fold(t, p.path, passes.All)
			check := func(when string, bs []*transformer.Block) {
				var found []string
				for _, b := range bs {
					if attentionKinds[b.Kind] {
						found = append(found, fmt.Sprintf("%s (%s)", b.ID, b.Variant))
					}
				}
				if len(found) > p.Attention {
					t.Errorf("%s: %d attention blocks recognised, the architecture has %d: %s", when, len(found), p.Attention, strings.Join(found, ", "))
				}
			}
			check("after fold", recognised(t, m).Blocks)
			for _, pl := range probePipelines {
				out := ortcheck.Load(t, p.path)
				ortcheck.Pipeline(t, out, pl.spec, passes.All, nil)
				check("after "+pl.spec, recognised(t, out).Blocks)
			}
		})
	}
	if n == 0 {
		t.Fatal("the manifest has no near-miss probe")
	}
}

// firstDiff shows the first differing line of two texts with context lines around it.
func firstDiff(a, b string, context int) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	i := 0
	for i < len(al) && i < len(bl) && al[i] == bl[i] {
		i++
	}
	clip := func(ls []string) string {
		lo, hi := max(i-context, 0), min(i+context+1, len(ls))
		return strings.Join(ls[lo:hi], "\n")
	}
	return fmt.Sprintf("line %d, before:\n%s\nafter:\n%s", i+1, clip(al), clip(bl))
}
