// Package report gathers what one qcc run did into a Run — the summary -stats prints
// first, the blocks per layer with why each stayed unfused, the quantized tensors with
// their ranges and calibration histograms, the precision each node computes in — and
// renders it as JSON (-stats=json) or as one self-contained HTML page (-report).
package report

import (
	"fmt"
	"io"
	"maps"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/pass"
	"github.com/qcc-dev/qcc/passes/qdq"
	"github.com/qcc-dev/qcc/passes/qdqcheck"
	"github.com/qcc-dev/qcc/patterns/transformer"
	"github.com/qcc-dev/qcc/quant/calib"
	"github.com/qcc-dev/qcc/shape"
)

// Run is the record of one compilation.
type Run struct {
	Input    string  `json:"input"`
	Output   string  `json:"output,omitempty"`
	Pipeline string  `json:"pipeline"`
	From     string  `json:"from"` // "-target=ort-cpu -precision=int8", "-passes", ...
	Summary  Summary `json:"summary"`
	Layers   []Layer `json:"layers"`
	// Refusals are candidates a rule declined, and Softmaxes that are not attention.
	Refusals []string `json:"refusals,omitempty"`
	Tensors  []Tensor `json:"tensors,omitempty"`
	// Classes is the precision class of every node, in graph order (the strip).
	Classes []string `json:"classes"`
	// LayerErrors is the per-layer error data: empty until a pass measures it (see
	// LayerError); the page draws a chart when it is not.
	LayerErrors []LayerError `json:"layer_errors,omitempty"`
	Passes      []PassStat   `json:"passes"`
}

// Summary is the short table -stats prints before the per-pass detail.
type Summary struct {
	NodesIn  int `json:"nodes_in"`
	NodesOut int `json:"nodes_out"`
	// Blocks recognised in the output, how many are fused operators, how many are left
	// decomposed, and the candidates rules refused.
	Blocks  int `json:"blocks"`
	Fused   int `json:"fused"`
	Unfused int `json:"unfused"`
	Refused int `json:"refused"`
	// QDQ counts activation Q/DQ pairs (QuantizeLinear nodes), Activations the tensors
	// they quantize (pairs=per-reader gives a tensor one pair per reader), Weights the
	// quantized weight tensors (int8/fp8 initializers).
	QDQ         int `json:"qdq_pairs"`
	Activations int `json:"quantized_activations"`
	Weights     int `json:"quantized_weights"`
	// Regions counts nodes per precision class (int8, fp8, fp32, fp16, bf16, q/dq, index).
	Regions map[string]int `json:"precision_nodes"`
	// GEMMs counts the MatMul and Gemm nodes by their output's type (fp32, fp16, bf16),
	// quantized ones included: TensorRT 11 runs a GEMM its ONNX types float32 in FP32,
	// between Q/DQ too. fp32 is always present.
	GEMMs map[string]int `json:"gemm_output_types"`
	// OutputBytes is the size of the written model (with its external data), -1 when
	// nothing was written.
	OutputBytes int64 `json:"output_bytes"`
}

// Layer is the blocks of one encoder layer (-1: before the first attention).
type Layer struct {
	Index  int     `json:"index"`
	Blocks []Block `json:"blocks"`
}

// Name is how the page heads the layer.
func (l Layer) Name() string {
	if l.Index < 0 {
		return "before the first layer (embeddings) or unknown"
	}
	return fmt.Sprintf("layer %d", l.Index)
}

// Block is one recognised block of the output model.
type Block struct {
	ID      string `json:"id"`
	Kind    string `json:"kind"`
	Variant string `json:"variant"`
	Fused   bool   `json:"fused"`
	// Why says why a block is not a fused operator ("" when it is).
	Why string `json:"why,omitempty"`
	// Precision lists the precision classes its nodes compute in.
	Precision string `json:"precision"`
	Nodes     int    `json:"nodes"`
}

// Tensor is one quantized tensor.
type Tensor struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`  // activation or weight
	DType string `json:"dtype"` // int8, uint8, float8e4m3fn, ...
	Group string `json:"group,omitempty"`
	// Amax is the range the scale represents (scale x the type's largest value); for a
	// per-channel weight the largest channel's, with Channels channels.
	Amax     float64 `json:"amax"`
	Scale    float64 `json:"scale"`
	Channels int     `json:"channels,omitempty"`
	Hist     *Hist   `json:"hist,omitempty"`
}

// Hist is a calibration histogram of |x|, reduced to a few bins for the page.
type Hist struct {
	Width  float64 `json:"width"` // bin width in |x|
	Bins   []int64 `json:"bins"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	AbsMax float64 `json:"absmax"`
	Count  int64   `json:"count"`
}

// LayerError is one per-layer error measurement: qdq<report=FILE.json> gives, per
// layer, the largest relative error of its blocks' outputs with every quantizer group
// on (layerErrors); the page charts whatever it is given.
type LayerError struct {
	Layer  int     `json:"layer"`
	Metric string  `json:"metric"`
	Value  float64 `json:"value"`
}

// PassStat is one pass's -stats record.
type PassStat struct {
	Pass     string         `json:"pass"`
	Changed  bool           `json:"changed"`
	NodesIn  int            `json:"nodes_in"`
	NodesOut int            `json:"nodes_out"`
	Seconds  float64        `json:"seconds,omitempty"`
	Counts   map[string]int `json:"counts,omitempty"`
	Notes    []string       `json:"notes,omitempty"`
}

// layerErrors is the largest relative error of the block outputs of each layer, in
// layer order (-1, the embeddings, first).
func layerErrors(rep *qdq.ErrorReport) []LayerError {
	worst := map[int]float64{}
	for _, b := range rep.Blocks {
		if v, ok := worst[b.Layer]; !ok || b.RelError > v {
			worst[b.Layer] = b.RelError
		}
	}
	var out []LayerError
	for l, v := range worst {
		out = append(out, LayerError{Layer: l, Metric: "relative error of the block outputs (largest in the layer)", Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Layer < out[j].Layer })
	return out
}

// histBins is how many bins the page shows per tensor.
const histBins = 48

// Build records a run: m is the output model, rep what the pipeline reported (nil when
// no passes ran), nodesIn the input's node count.
func Build(m *ir.Model, rep *pass.Report, nodesIn int) (*Run, error) {
	r := &Run{Summary: Summary{NodesIn: nodesIn, OutputBytes: -1, Regions: map[string]int{}, GEMMs: map[string]int{"fp32": 0}}}
	var fuses []*transformer.Report
	hists := map[string]*calib.Histogram{}
	scales := qdq.Scales{ByName: map[string]string{}, ByValue: map[float32][]string{}}
	if rep != nil {
		for _, s := range rep.Stats {
			r.Passes = append(r.Passes, PassStat{Pass: s.Pass, Changed: s.Changed, NodesIn: s.NodesIn, NodesOut: s.NodesOut,
				Seconds: s.Seconds, Counts: s.Counts, Notes: s.Notes})
			for _, d := range s.Data {
				switch d := d.(type) {
				case *transformer.Report:
					fuses = append(fuses, d)
				case *calib.Stats:
					for name, h := range d.Tensors {
						hists[name] = h
					}
				case *qdq.ErrorReport:
					r.LayerErrors = layerErrors(d)
				case qdq.Scales:
					maps.Copy(scales.ByName, d.ByName)
					for v, ts := range d.ByValue {
						scales.ByValue[v] = append(scales.ByValue[v], ts...)
					}
				}
			}
		}
	}
	// Types for the precision classes, and blocks as the output holds them.
	if _, err := shape.Infer(m); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	blocks, refusals := transformer.Recognize(m.Graph, transformer.Families)
	why := map[string]string{}
	for _, f := range fuses {
		for id, w := range f.Why {
			why[id] = w
		}
	}
	if len(fuses) > 0 {
		last := fuses[len(fuses)-1]
		for _, rf := range last.Refusals {
			r.Refusals = append(r.Refusals, "refused: "+rf.String())
		}
		for _, s := range last.Softmax {
			r.Refusals = append(r.Refusals, "not attention: "+s)
		}
	} else {
		for _, rf := range refusals {
			r.Refusals = append(r.Refusals, "refused: "+rf.String())
		}
	}
	r.Summary.Refused = len(r.Refusals)

	class := map[*ir.Node]string{}
	for _, n := range m.Graph.Nodes() {
		c := Class(n)
		class[n] = c
		r.Classes = append(r.Classes, c)
		r.Summary.Regions[c]++
		if (n.OpType == "MatMul" || n.OpType == "Gemm") && (n.Domain == "" || n.Domain == "ai.onnx") {
			r.Summary.GEMMs[short(elemType(n.Output(0)))]++
		}
	}
	r.Summary.NodesOut = m.Graph.NumNodes()

	byLayer := map[int]*Layer{}
	for _, b := range blocks {
		l := byLayer[b.Layer]
		if l == nil {
			l = &Layer{Index: b.Layer}
			byLayer[b.Layer] = l
		}
		blk := Block{ID: b.ID, Kind: string(b.Kind), Variant: b.Variant, Fused: b.Fused, Nodes: len(b.Nodes)}
		if !b.Fused {
			blk.Why = why[b.ID]
			switch {
			case blk.Why != "":
			case len(fuses) == 0:
				blk.Why = "no fuse pass in the pipeline"
			default:
				blk.Why = "left decomposed (an annotation: the target has no operator for it)"
			}
		}
		seen := map[string]bool{}
		var cs []string
		for _, n := range b.Nodes {
			if c := class[n]; c != "" && c != "q/dq" && c != "index" && !seen[c] {
				seen[c] = true
				cs = append(cs, c)
			}
		}
		sort.Strings(cs)
		blk.Precision = strings.Join(cs, ", ")
		l.Blocks = append(l.Blocks, blk)
		r.Summary.Blocks++
		if b.Fused {
			r.Summary.Fused++
		} else {
			r.Summary.Unfused++
		}
	}
	for _, l := range byLayer {
		r.Layers = append(r.Layers, *l)
	}
	sort.Slice(r.Layers, func(i, j int) bool { return r.Layers[i].Index < r.Layers[j].Index })

	r.Tensors = quantized(m, hists, scales)
	// Activations first (what calibration decided), then weights, each in graph order.
	sort.SliceStable(r.Tensors, func(i, j int) bool { return r.Tensors[i].Kind == "activation" && r.Tensors[j].Kind != "activation" })
	for _, t := range r.Tensors {
		if t.Kind == "weight" {
			r.Summary.Weights++
		} else {
			r.Summary.Activations++
		}
	}
	for _, n := range m.Graph.Nodes() {
		if n.OpType == "QuantizeLinear" && n.Input(0) != nil && n.Input(0).Const == nil {
			r.Summary.QDQ++
		}
	}
	return r, nil
}

// integerOps compute on quantized inputs themselves.
var integerOps = map[string]bool{
	"MatMulIntegerToFloat": true, "QAttention": true, "MatMulInteger": true, "QLinearMatMul": true,
	"ConvInteger": true, "QLinearConv": true, "DynamicQuantizeMatMul": true, "QGemm": true,
}

// Class is the precision class a node computes in: q/dq for the quantizers, int8 (or
// fp8, ...) for an integer operator or an operator reading a dequantized tensor, else
// its first output's element type (fp32, fp16, bf16), or index for integer and bool
// outputs (shape arithmetic, masks).
func Class(n *ir.Node) string {
	switch n.OpType {
	case "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear":
		return "q/dq"
	}
	if integerOps[n.OpType] {
		return "int8"
	}
	for _, in := range n.Inputs() {
		if in == nil {
			continue
		}
		if p, _ := in.Producer(); p != nil && p.OpType == "DequantizeLinear" {
			return short(elemType(p.Input(0)))
		}
	}
	if len(n.Outputs()) == 0 {
		return "?"
	}
	dt := elemType(n.Output(0))
	switch {
	case dt == ir.Undefined:
		return "?"
	case dt.IsFloat():
		return short(dt)
	default:
		return "index"
	}
}

func elemType(v *ir.Value) ir.DataType {
	if v == nil {
		return ir.Undefined
	}
	if v.Const != nil {
		return v.Const.DType
	}
	if v.Type == nil {
		return ir.Undefined
	}
	return v.Type.DType
}

func short(dt ir.DataType) string {
	switch dt {
	case ir.Float:
		return "fp32"
	case ir.Float16:
		return "fp16"
	case ir.BFloat16:
		return "bf16"
	case ir.Double:
		return "fp64"
	case ir.Int8, ir.Uint8:
		return "int8"
	case ir.Float8E4M3FN, ir.Float8E4M3FNUZ, ir.Float8E5M2, ir.Float8E5M2FNUZ:
		return "fp8"
	case ir.Int4, ir.Uint4:
		return "int4"
	case ir.Undefined:
		return "?"
	}
	return dt.String()
}

// amax is the largest |x| a scale and zero point represent: scale x the distance from
// the zero point to the far end of the type's range (127 for symmetric int8, 127 for
// uint8 with zero point 128, 448 for FP8 E4M3FN).
func amax(scale float64, dt ir.DataType, zp *ir.Value) float64 {
	z := 0.0
	if zp != nil && zp.Const != nil {
		if f, err := zp.Const.Float64s(); err == nil && len(f) > 0 {
			z = f[0]
		}
	}
	lo, hi := -128.0, 127.0
	switch dt {
	case ir.Uint8:
		lo, hi = 0, 255
	case ir.Float8E4M3FN, ir.Float8E4M3FNUZ:
		return scale * 448
	case ir.Float8E5M2, ir.Float8E5M2FNUZ:
		return scale * 57344
	case ir.Int4:
		lo, hi = -8, 7
	case ir.Uint4:
		lo, hi = 0, 15
	}
	if dt == ir.Int8 && z == 0 {
		return scale * 127 // symmetric: -128 is not used
	}
	return scale * max(hi-z, z-lo)
}

// integerWeightScale is, for the integer operators, the input holding the scale of
// their weight input (MatMulIntegerToFloat's B at 1 has b_scale at 3).
var integerWeightScale = map[string]map[int]int{
	"MatMulIntegerToFloat":  {1: 3},
	"DynamicQuantizeMatMul": {1: 2},
}

// quantized lists the activations a QuantizeLinear quantizes and the quantized weight
// initializers (read by a DequantizeLinear or an integer operator), in graph order.
func quantized(m *ir.Model, hists map[string]*calib.Histogram, scales qdq.Scales) []Tensor {
	var out []Tensor
	seen := map[string]bool{}
	for _, n := range m.Graph.Nodes() {
		switch {
		case n.OpType == "QuantizeLinear" && n.Input(0) != nil && n.Input(0).Const == nil:
			x := n.Input(0)
			if seen[x.Name] {
				continue // pairs=per-reader: one row per tensor
			}
			seen[x.Name] = true
			dt := ir.Uint8
			if zp := n.Input(2); zp != nil {
				dt = elemType(zp)
			}
			t := Tensor{Name: x.Name, Kind: "activation", DType: dt.String()}
			t.Scale, t.Channels = scale(n.Input(1))
			t.Amax = amax(t.Scale, dt, n.Input(2))
			t.Group, _ = n.Meta(qdqcheck.GroupKey)
			calibrated := x.Name // the name when qdq calibrated it:
			if s := n.Input(1); s != nil && scales.ByName[s.Name] != "" {
				calibrated = scales.ByName[s.Name]
			} else if v, _ := scale(s); len(scales.ByValue[float32(v)]) == 1 {
				calibrated = scales.ByValue[float32(v)][0]
			}
			if h := hists[calibrated]; h != nil {
				t.Hist = reduce(h)
			}
			out = append(out, t)
		case n.OpType == "DequantizeLinear" && n.Input(0) != nil && n.Input(0).Const != nil:
			w := n.Input(0)
			if seen[w.Name] {
				continue
			}
			seen[w.Name] = true
			t := Tensor{Name: w.Name, Kind: "weight", DType: w.Const.DType.String()}
			t.Scale, t.Channels = scale(n.Input(1))
			t.Amax = amax(t.Scale, w.Const.DType, n.Input(2))
			t.Group, _ = n.Meta(qdqcheck.GroupKey)
			out = append(out, t)
		case integerOps[n.OpType]:
			for i, in := range n.Inputs() {
				if in == nil || in.Const == nil || seen[in.Name] {
					continue
				}
				// A weight is a matrix; a per-channel zero point is a vector.
				if dt := in.Const.DType; (dt == ir.Int8 || dt == ir.Uint8) && len(in.Const.Dims) >= 2 {
					seen[in.Name] = true
					t := Tensor{Name: in.Name, Kind: "weight", DType: dt.String()}
					if si, ok := integerWeightScale[n.OpType][i]; ok {
						t.Scale, t.Channels = scale(n.Input(si))
						t.Amax = amax(t.Scale, dt, n.Input(si+2))
					}
					out = append(out, t)
				}
			}
		}
	}
	return out
}

// scale reads a constant scale: the largest value, and the channel count when it has more
// than one.
func scale(v *ir.Value) (float64, int) {
	if v == nil || v.Const == nil {
		return 0, 0
	}
	f, err := v.Const.Float64s()
	if err != nil || len(f) == 0 {
		return 0, 0
	}
	mx := f[0]
	for _, x := range f {
		mx = max(mx, x)
	}
	if len(f) == 1 {
		return mx, 0
	}
	return mx, len(f)
}

// reduce merges a calibration histogram's used bins into histBins bins.
func reduce(h *calib.Histogram) *Hist {
	out := &Hist{Min: h.Min, Max: h.Max, AbsMax: h.AbsMax, Count: h.Count}
	used := len(h.Bins)
	for used > 0 && h.Bins[used-1] == 0 {
		used--
	}
	if used == 0 || h.Width == 0 {
		out.Bins = []int64{h.Count}
		out.Width = h.AbsMax
		return out
	}
	per := (used + histBins - 1) / histBins
	out.Width = h.Width * float64(per)
	for i := 0; i < used; i += per {
		var c int64
		for j := i; j < i+per && j < used; j++ {
			c += h.Bins[j]
		}
		out.Bins = append(out.Bins, c)
	}
	return out
}

// WriteSummary prints the summary table -stats shows first.
func (r *Run) WriteSummary(w io.Writer) {
	s := r.Summary
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "summary\t\n")
	fmt.Fprintf(tw, "  pipeline\t%s  (from %s)\n", orNone(r.Pipeline), r.From)
	fmt.Fprintf(tw, "  nodes\t%d -> %d\n", s.NodesIn, s.NodesOut)
	fmt.Fprintf(tw, "  blocks\t%d found, %d fused, %d left decomposed; %d candidates refused\n", s.Blocks, s.Fused, s.Unfused, s.Refused)
	fmt.Fprintf(tw, "  quantized\t%d activation Q/DQ pairs on %d tensors, %d weights\n", s.QDQ, s.Activations, s.Weights)
	fmt.Fprintf(tw, "  precision\t%s\n", regions(s.Regions))
	if len(s.GEMMs) > 0 {
		fmt.Fprintf(tw, "  MatMul/Gemm\t%s by output type\n", strings.TrimSuffix(regions(s.GEMMs), " nodes"))
	}
	if s.OutputBytes >= 0 {
		fmt.Fprintf(tw, "  output\t%s, %s\n", r.Output, bytesString(s.OutputBytes))
	}
	tw.Flush()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// regions lists the nodes per precision class, most first.
func regions(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ") + " nodes"
}

func bytesString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
