package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qcc-dev/qcc/internal/corpus"
	"github.com/qcc-dev/qcc/internal/ortcheck"
	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ort/orttest"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes"
	"github.com/qcc-dev/qcc/report"
	"github.com/qcc-dev/qcc/target"
)

// chromium returns Debian's chromium, or skips t without it; QCC_REQUIRE_CHROMIUM=1
// (scripts/test.sh sets it: the full set-up installs chromium) turns the skip into a failure.
func chromium(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("QCC_REQUIRE_CHROMIUM") == "1" {
			t.Fatalf("chromium required (QCC_REQUIRE_CHROMIUM=1) but not found: %v", err)
		}
		t.Skipf("chromium not found, skipping (scripts/setup.sh installs it): %v", err)
	}
	return p
}

// renderDOM loads an HTML file in headless chromium and returns the DOM after its
// scripts ran. Each call needs its own profile folder so that calls can run in parallel.
func renderDOM(bin, page, profile string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	abs, err := filepath.Abs(page)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+profile, "--dump-dom", "file://"+abs)
	cmd.Env = append(os.Environ(), "DBUS_SESSION_BUS_ADDRESS=disabled:")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("chromium --dump-dom %s: %v\n%s", page, err, stderr.String())
	}
	return string(out), nil
}

func count(dom, s string) int { return strings.Count(dom, s) }

// textOf returns the text of the element with the given id (no nested elements).
func textOf(t *testing.T, dom, id string) string {
	t.Helper()
	m := regexp.MustCompile(`id="` + regexp.QuoteMeta(id) + `"[^>]*>([^<]*)<`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no element #%s in the rendered page", id)
	}
	return m[1]
}

// TestReportRendersCorpus: for every corpus model, compiled with -target=tensorrt (Q/DQ
// kept, attention left decomposed with reasons) and, for BERT, -target=ort-cpu, the
// -report page renders in headless chromium and its DOM after the scripts ran holds:
// the script's completion mark; one block row per block the blocks analysis finds in
// the output model, kind by kind, and one attention row per encoder layer; the summary's
// block counts equal to the rows; one strip cell per output node; one histogram SVG per
// calibrated activation, with bins and an amax mark; and the filter's count line.
func TestReportRendersCorpus(t *testing.T) {
	orttest.RequireLib(t)
	bin := chromium(t)
	dir := t.TempDir()
	type job struct {
		name, spec string
		cm         corpus.Model
	}
	var jobs []job
	for _, cm := range corpus.Models(t, "", "trained", "invalid") {
		for _, tg := range []string{"tensorrt", "ort-cpu"} {
			if tg == "ort-cpu" && !strings.HasPrefix(cm.Name, "bert.") {
				continue
			}
			e, err := target.Expand(tg, "", passes.All)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range e.Pipeline.Steps {
				if s.Pass.Name == "qdq" {
					s.Opts["data"] = "random:2"
				}
			}
			jobs = append(jobs, job{cm.Name + "/" + tg, e.Spec(), cm})
		}
	}
	// Compile and write the pages, render them all in chromium at once (it mostly waits
	// while it starts, so many at a time keep the test short), then check each DOM.
	type page struct {
		job
		path         string
		m            *ir.Model
		kinds        map[string]int
		total, acts  int
		dom          string
		renderFailed error
	}
	pages := make([]*page, len(jobs))
	for i, j := range jobs {
		m := ortcheck.Load(t, j.cm.Path)
		nodesIn := m.Graph.NumNodes()
		rep := ortcheck.Pipeline(t, m, j.spec, passes.All, &pass.Instrumentation{VerifyEach: true})
		run, err := report.Build(m, rep, nodesIn)
		if err != nil {
			t.Fatalf("%s: %v", j.name, err)
		}
		run.Input, run.Pipeline, run.From = j.cm.Path, j.spec, "test"
		p := &page{job: j, path: filepath.Join(dir, strings.ReplaceAll(j.name, "/", "_")+".html"), m: m, kinds: map[string]int{}}
		var b strings.Builder
		if err := run.WriteHTML(&b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p.path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		// What the page must show, counted independently on the output model: blocks
		// by the blocks analysis run through the pass manager, and the activations a
		// QuantizeLinear quantizes.
		blocksRep := ortcheck.Pipeline(t, m, "blocks", passes.All, nil)
		for k, n := range blocksRep.Stats[len(blocksRep.Stats)-1].Counts {
			p.kinds[strings.TrimPrefix(k, "blocks: ")] = n
			p.total += n
		}
		acts := map[string]bool{}
		for _, n := range m.Graph.Nodes() {
			if n.OpType == "QuantizeLinear" && n.Input(0).Const == nil {
				acts[n.Input(0).Name] = true
			}
		}
		p.acts = len(acts)
		pages[i] = p
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	profiles := t.TempDir()
	for i, p := range pages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			p.dom, p.renderFailed = renderDOM(bin, p.path, filepath.Join(profiles, strconv.Itoa(i)))
		}()
	}
	wg.Wait()
	var rows []string
	for _, p := range pages {
		t.Run(p.name, func(t *testing.T) {
			dom, total := p.dom, p.total
			if p.renderFailed != nil {
				t.Fatal(p.renderFailed)
			}
			if !strings.Contains(dom, `data-rendered="ok"`) {
				t.Fatalf("the page's script did not finish")
			}
			if got := count(dom, `<tr class="block `); got != total {
				t.Errorf("%d block rows, the blocks analysis finds %d blocks", got, total)
			}
			for k, n := range p.kinds {
				if got := len(regexp.MustCompile(`<tr class="block [a-z]+" data-kind="`+k+`"`).FindAllString(dom, -1)); got != n {
					t.Errorf("%d %s rows, want %d", got, k, n)
				}
			}
			// (DeBERTa's attention with Q/DQ on its matmuls is not recognised again after
			// qdq; the page shows what the analysis finds.)
			if !strings.HasPrefix(p.cm.Name, "deberta") && p.kinds["Attention"] != layers(t, p.cm) {
				t.Errorf("%d attention blocks, want one per layer (%d)", p.kinds["Attention"], layers(t, p.cm))
			}
			found, _ := strconv.Atoi(textOf(t, dom, "blocks-found"))
			fused, _ := strconv.Atoi(textOf(t, dom, "blocks-fused"))
			unfused, _ := strconv.Atoi(textOf(t, dom, "blocks-unfused"))
			if found != total || fused+unfused != total || count(dom, `<tr class="block unfused"`) != unfused {
				t.Errorf("summary says %d found, %d fused, %d unfused; %d blocks", found, fused, unfused, total)
			}
			if got, want := count(dom, `class="node-cell"`), countNodes(p.m); got != want {
				t.Errorf("%d strip cells, want one per node (%d)", got, want)
			}
			// A row per quantized activation; a histogram for each calibrated one (a
			// tensor that repeats a constant takes the constant's range).
			if got := count(dom, `<tr class="tensor" data-kind="activation"`); got != p.acts {
				t.Errorf("%d activation rows, want one per quantized activation (%d)", got, p.acts)
			}
			hists := count(dom, `class="hist-svg"`)
			if hists != count(dom, `<div class="hist"`) || hists == 0 || hists > p.acts {
				t.Errorf("%d histograms drawn for %d placeholders and %d quantized activations", hists, count(dom, `<div class="hist"`), p.acts)
			}
			if count(dom, `class="amax"`) != hists || count(dom, `class="bin"`) < hists {
				t.Errorf("histograms without bins or amax marks")
			}
			if want := fmt.Sprintf("%d of %d blocks shown", total, total); textOf(t, dom, "block-count") != want {
				t.Errorf("filter line %q, want %q", textOf(t, dom, "block-count"), want)
			}
			rows = append(rows, fmt.Sprintf("%-36s blocks %2d (fused %2d) histograms %2d of %2d activations, nodes %3d, page %6d B",
				p.name, total, fused, hists, p.acts, countNodes(p.m), size(p.path)))
		})
	}
	sort.Strings(rows)
	t.Logf("reports rendered:\n%s", strings.Join(rows, "\n"))
}

func size(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// TestReportLayerErrors: the per-layer error hook draws one bar per entry, and without
// data the page says there is none.
func TestReportLayerErrors(t *testing.T) {
	bin := chromium(t)
	m := ortcheck.Load(t, filepath.Join("..", "testdata", "models", "bert.opset13.onnx"))
	for _, errs := range [][]report.LayerError{nil, {{Layer: 0, Metric: "cosine distance", Value: 0.002}, {Layer: 1, Metric: "cosine distance", Value: 0.005}}} {
		run, err := report.Build(m, nil, m.Graph.NumNodes())
		if err != nil {
			t.Fatal(err)
		}
		run.LayerErrors = errs
		page := filepath.Join(t.TempDir(), "r.html")
		var b strings.Builder
		if err := run.WriteHTML(&b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(page, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		dom, err := renderDOM(bin, page, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if got := count(dom, `class="error-bar"`); got != len(errs) {
			t.Errorf("%d error bars for %d entries", got, len(errs))
		}
		if (len(errs) == 0) != strings.Contains(dom, `id="no-errors"`) {
			t.Errorf("the no-data line is wrong for %d entries", len(errs))
		}
		// Nothing in the page reaches for the network.
		if regexp.MustCompile(`(src|href)="(https?:)?//`).MatchString(b.String()) {
			t.Errorf("the page loads something from a network")
		}
	}
}
