package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
)

// WriteJSON writes the run as one JSON object (-stats=json).
func (r *Run) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	e.SetEscapeHTML(false)
	return e.Encode(r)
}

// WriteHTML writes the run as one self-contained HTML page: inline CSS, SVG drawn by
// inline JavaScript from the run's JSON, nothing fetched from a network. The tables are
// rendered on the server side so that the page reads without JavaScript too; the
// histograms, the precision strip and the error chart need it.
func (r *Run) WriteHTML(w io.Writer) error {
	var buf bytes.Buffer
	if err := page.Execute(&buf, r); err != nil {
		return err
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// Classes' colours, shared by the legend (server side) and the strip (JavaScript).
var classColors = map[string]string{
	"int8": "#2e7d32", "fp8": "#00897b", "int4": "#558b2f", "fp16": "#1565c0", "bf16": "#6a1b9a",
	"fp32": "#ef6c00", "fp64": "#c62828", "q/dq": "#9e9e9e", "index": "#d7ccc8", "?": "#ffffff",
}

func color(c string) string {
	if s, ok := classColors[c]; ok {
		return s
	}
	return "#000000"
}

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"color":  color,
	"bytes":  bytesString,
	"pct":    func(a, b int) string { return fmt.Sprintf("%.0f%%", 100*float64(a)/float64(max(b, 1))) },
	"colors": func() map[string]string { return classColors },
	"sorted": func(m map[string]int) []string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		sortByCount(ks, m)
		return ks
	},
	"fmtf": func(f float64) string { return fmt.Sprintf("%.4g", f) },
}).Parse(pageTemplate))

func sortByCount(ks []string, m map[string]int) {
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && (m[ks[j]] > m[ks[j-1]] || m[ks[j]] == m[ks[j-1]] && ks[j] < ks[j-1]); j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
}

const pageTemplate = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>qcc report: {{.Input}}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em 2em; color: #1b1b1b; background: #fafafa; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
h3 { font-size: 1em; margin: 1em 0 .3em; }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { text-align: left; padding: 3px 10px 3px 0; vertical-align: top; border-bottom: 1px solid #eee; }
th { font-weight: 600; color: #555; }
td.num, th.num { text-align: right; }
.sub { color: #666; }
.yes { color: #2e7d32; font-weight: 600; }
.no { color: #c62828; font-weight: 600; }
.chip { display: inline-block; width: .9em; height: .9em; border-radius: 2px; vertical-align: -1px; margin-right: .3em; border: 1px solid #0002; }
.legend span { margin-right: 1.2em; white-space: nowrap; }
#strip { width: 100%; height: 28px; display: block; margin: .4em 0; }
svg.hist-svg { width: 200px; height: 42px; display: block; }
#tensors { width: 100%; table-layout: fixed; }
#tensors td { overflow-wrap: anywhere; }
#tensors col.name { width: 34%; } #tensors col.hist { width: 212px; }
tr.unfused td { background: #fff5f5; }
.controls { margin: .3em 0 .6em; }
details pre { background: #f0f0f0; padding: .6em; overflow-x: auto; }
#error-chart { width: 100%; height: 220px; }
</style>
</head>
<body>
<h1>qcc report</h1>
<p class="sub mono">{{.Input}}{{if .Output}} &rarr; {{.Output}}{{end}}</p>

<h2 id="summary-head">Summary</h2>
<table id="summary">
<tr><th>pipeline</th><td class="mono" id="summary-pipeline">{{if .Pipeline}}{{.Pipeline}}{{else}}(none){{end}}</td></tr>
<tr><th>from</th><td class="mono">{{.From}}</td></tr>
<tr><th>nodes</th><td><span id="nodes-in">{{.Summary.NodesIn}}</span> &rarr; <span id="nodes-out">{{.Summary.NodesOut}}</span></td></tr>
<tr><th>blocks</th><td><span id="blocks-found">{{.Summary.Blocks}}</span> found, <span id="blocks-fused">{{.Summary.Fused}}</span> fused, <span id="blocks-unfused">{{.Summary.Unfused}}</span> left decomposed; <span id="refused">{{.Summary.Refused}}</span> candidates refused</td></tr>
<tr><th>quantized</th><td><span id="qdq-pairs">{{.Summary.QDQ}}</span> activation Q/DQ pairs on <span id="q-activations">{{.Summary.Activations}}</span> tensors, <span id="q-weights">{{.Summary.Weights}}</span> weights</td></tr>
<tr><th>precision</th><td class="legend">{{range $c := sorted .Summary.Regions}}<span><i class="chip" style="background:{{color $c}}"></i>{{$c}} {{index $.Summary.Regions $c}}</span>{{end}}</td></tr>
{{if ge .Summary.OutputBytes 0}}<tr><th>output size</th><td>{{bytes .Summary.OutputBytes}}</td></tr>{{end}}
</table>

<h2>Precision of each node</h2>
<p class="sub">Every node of the output in graph order, coloured by what it computes in: int8/fp8 for an integer operator or one that reads a dequantized tensor, else its output's element type; q/dq are the quantizers, index the shape arithmetic and masks.</p>
<svg id="strip" role="img" aria-label="precision of each node"></svg>
<p class="legend">{{range $c, $col := colors}}<span><i class="chip" style="background:{{$col}}"></i>{{$c}}</span>{{end}}</p>

<h2>Blocks per layer</h2>
<div class="controls"><label><input type="checkbox" id="only-unfused"> only blocks left decomposed</label> <span id="block-count" class="sub"></span></div>
{{range .Layers}}
<section class="layer" data-layer="{{.Index}}">
<h3>{{.Name}}</h3>
<table class="blocks">
<tr><th>block</th><th>kind</th><th>variant</th><th>fused</th><th>precision</th><th class="num">nodes</th><th>why not fused</th></tr>
{{range .Blocks}}<tr class="block {{if .Fused}}fused{{else}}unfused{{end}}" data-kind="{{.Kind}}"><td class="mono">{{.ID}}</td><td>{{.Kind}}</td><td class="mono">{{.Variant}}</td><td>{{if .Fused}}<span class="yes">yes</span>{{else}}<span class="no">no</span>{{end}}</td><td>{{.Precision}}</td><td class="num">{{.Nodes}}</td><td>{{.Why}}</td></tr>
{{end}}</table>
</section>
{{else}}<p id="no-blocks">No transformer blocks recognised.</p>
{{end}}
{{if .Refusals}}<details id="refusals"><summary>{{len .Refusals}} candidates refused, and Softmaxes that are not attention</summary><ul>{{range .Refusals}}<li class="mono refusal">{{.}}</li>{{end}}</ul></details>{{end}}

<h2>Quantized tensors</h2>
{{if .Tensors}}
<p class="sub">amax is the range the scale represents (scale &times; the type's largest value); the histogram is the calibration data's |x| (log counts), with amax marked in red where it clips.</p>
<table id="tensors">
<colgroup><col class="name"><col><col><col><col><col><col class="hist"></colgroup>
<tr><th>tensor</th><th>kind</th><th>type</th><th>group</th><th class="num">amax</th><th class="num">scale</th><th>calibration histogram of |x|</th></tr>
{{range $i, $t := .Tensors}}<tr class="tensor" data-kind="{{$t.Kind}}"><td class="mono">{{$t.Name}}</td><td>{{$t.Kind}}{{if $t.Channels}}<br><span class="sub">{{$t.Channels}} channels</span>{{end}}</td><td>{{$t.DType}}</td><td class="mono">{{$t.Group}}</td><td class="num">{{if $t.Scale}}{{fmtf $t.Amax}}{{else}}&mdash;{{end}}</td><td class="num">{{if $t.Scale}}{{fmtf $t.Scale}}{{else}}&mdash;{{end}}</td><td>{{if $t.Hist}}<div class="hist" data-index="{{$i}}"></div><span class="sub">min {{fmtf $t.Hist.Min}}, max {{fmtf $t.Hist.Max}}, {{$t.Hist.Count}} samples</span>{{else}}<span class="sub">{{if eq $t.Kind "weight"}}constant{{else}}range not calibrated in this run{{end}}</span>{{end}}</td></tr>
{{end}}</table>
{{else}}<p id="no-tensors">Nothing is quantized.</p>{{end}}

<h2>Error per layer</h2>
{{if .LayerErrors}}<svg id="error-chart" role="img" aria-label="error per layer"></svg>
{{else}}<p id="no-errors" class="sub">No per-layer error data in this run (qdq&lt;report=FILE.json&gt; measures it).</p>{{end}}

<h2>Per pass</h2>
<details><summary>{{len .Passes}} passes run</summary>
{{range .Passes}}<pre>{{.Pass}}  nodes {{.NodesIn}} -&gt; {{.NodesOut}}{{range $k, $v := .Counts}}
  {{$k}}: {{$v}}{{end}}{{range .Notes}}
  note: {{.}}{{end}}</pre>
{{end}}</details>

<script type="application/json" id="qcc-data">{{.}}</script>
<script>
(function () {
  "use strict";
  var run = JSON.parse(document.getElementById("qcc-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var colors = {{colors}};
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  // The precision strip: one rect per node.
  var strip = document.getElementById("strip");
  var n = run.classes.length;
  strip.setAttribute("viewBox", "0 0 " + Math.max(n, 1) + " 10");
  strip.setAttribute("preserveAspectRatio", "none");
  run.classes.forEach(function (c, i) {
    var r = el("rect", {x: i, y: 0, width: 1, height: 10, fill: colors[c] || "#000", "class": "node-cell", "data-class": c}, strip);
    el("title", {}, r).textContent = "node " + i + ": " + c;
  });
  // Histograms of |x| with the chosen amax.
  document.querySelectorAll("div.hist").forEach(function (div) {
    var t = run.tensors[+div.dataset.index], h = t.hist;
    var W = 220, H = 46, max = 0;
    h.bins.forEach(function (b) { max = Math.max(max, Math.log1p(b)); });
    var top = Math.max(h.width * h.bins.length, t.amax, 1e-30);
    var svg = el("svg", {"class": "hist-svg", viewBox: "0 0 " + W + " " + H}, null);
    var bw = W * h.width / top;
    h.bins.forEach(function (b, i) {
      var bh = max > 0 ? (H - 4) * Math.log1p(b) / max : 0;
      el("rect", {x: i * bw, y: H - bh, width: Math.max(bw - 0.5, 0.5), height: bh, fill: "#1565c0", "class": "bin"}, svg);
    });
    var ax = W * t.amax / top;
    el("line", {x1: ax, x2: ax, y1: 0, y2: H, stroke: "#c62828", "stroke-width": 1.5, "class": "amax"}, svg);
    el("title", {}, svg).textContent = t.name + ": amax " + t.amax.toPrecision(4) + ", |x| up to " + h.absmax.toPrecision(4);
    div.appendChild(svg);
  });
  // Error per layer, when a pass measured it.
  var chart = document.getElementById("error-chart");
  if (chart && run.layer_errors) {
    var errs = run.layer_errors, W = 800, H = 220, m = 0;
    errs.forEach(function (e) { m = Math.max(m, e.value); });
    chart.setAttribute("viewBox", "0 0 " + W + " " + H);
    var bw = (W - 40) / errs.length;
    errs.forEach(function (e, i) {
      var bh = m > 0 ? (H - 40) * e.value / m : 0;
      var r = el("rect", {x: 30 + i * bw, y: H - 20 - bh, width: bw * 0.8, height: bh, fill: "#ef6c00", "class": "error-bar"}, chart);
      el("title", {}, r).textContent = "layer " + e.layer + ": " + e.metric + " " + e.value;
      el("text", {x: 30 + i * bw + bw * 0.4, y: H - 5, "text-anchor": "middle", "font-size": 11}, chart).textContent = e.layer;
    });
  }
  // Filter: only blocks left decomposed.
  var rows = document.querySelectorAll("tr.block"), box = document.getElementById("only-unfused");
  var count = document.getElementById("block-count");
  function filter() {
    var shown = 0;
    rows.forEach(function (r) {
      var hide = box.checked && r.classList.contains("fused");
      r.style.display = hide ? "none" : "";
      if (!hide) shown++;
    });
    count.textContent = shown + " of " + rows.length + " blocks shown";
  }
  if (box) { box.addEventListener("change", filter); filter(); }
  document.documentElement.dataset.rendered = "ok";
})();
</script>
</body>
</html>
`
