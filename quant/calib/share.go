package calib

import (
	"sort"

	"github.com/qcc-dev/qcc/ir"
)

// Shared are statistics one pass collected for a later one of the same pipeline run
// (pass.Context.Share): qdq, calibrating the float model, collects every float32
// activation too when a precision step on the same data follows, and precision reads
// them instead of running the data through ONNX Runtime again. They are kept by value,
// not by name, so that a name a later pass gives another tensor is never taken for the
// one measured. More ways find a tensor a later pass made anew but that computes the
// same (a fused LayerNormalization's output for the decomposed norm's): a graph output
// by its name, which every pass keeps; a value a QuantizeLinear qdq inserted quantizes,
// by that QuantizeLinear; the output of a norm operator by the value it normalises, as
// the norm blocks of the measured model did (ByNormInput, which qdq fills).
type Shared struct {
	Data        string
	Batch       int
	Batches     int
	ByValue     map[*ir.Value]*Histogram
	ByOutput    map[string]*Histogram
	ByQuantizer map[*ir.Node]*Histogram
	ByNormInput map[*ir.Value]*Histogram
}

// NormOps are the operators whose output ByNormInput finds: LayerNorm and RMSNorm,
// standard or ONNX Runtime's.
var NormOps = map[string]bool{"LayerNormalization": true, "SimplifiedLayerNormalization": true, "RMSNormalization": true}

// Lookup returns the statistics of v: its own, else as the graph output of its name,
// else those of what a QuantizeLinear reading it was inserted to quantize.
func (sh *Shared) Lookup(v *ir.Value) *Histogram {
	if v == nil {
		return nil
	}
	if h := sh.ByValue[v]; h != nil {
		return h
	}
	if v.IsGraphOutput() {
		if h := sh.ByOutput[v.Name]; h != nil {
			return h
		}
	}
	for _, u := range v.Uses() {
		if h := sh.ByQuantizer[u.Node]; h != nil && u.Index == 0 {
			return h
		}
	}
	if n, i := v.Producer(); n != nil && i == 0 && NormOps[n.OpType] && (n.Domain == "" || n.Domain == "ai.onnx" || n.Domain == "com.microsoft") {
		return sh.ByNormInput[n.Input(0)]
	}
	return nil
}

// NoteQuantizers records, for every QuantizeLinear of m's main graph that reads a value
// measured, what it quantizes: qdq calls it once its pairs are in.
func (sh *Shared) NoteQuantizers(m *ir.Model) {
	for _, n := range m.Graph.Nodes() {
		if n.OpType != "QuantizeLinear" || (n.Domain != "" && n.Domain != "ai.onnx") {
			continue
		}
		if h := sh.ByValue[n.Input(0)]; h != nil {
			sh.ByQuantizer[n] = h
		}
	}
}

// SharedKey is the pass.Context.Share key of the Shared statistics collected on data
// (a LoadData spec) with batch size batch (as the passes' batch option).
type SharedKey struct {
	Data  string
	Batch int
}

// NewShared keeps the statistics of stats by value in m's main graph.
func NewShared(m *ir.Model, stats *Stats, data string, batch int) *Shared {
	sh := &Shared{Data: data, Batch: batch, Batches: stats.Batches, ByValue: make(map[*ir.Value]*Histogram, len(stats.Tensors)),
		ByOutput: map[string]*Histogram{}, ByQuantizer: map[*ir.Node]*Histogram{}, ByNormInput: map[*ir.Value]*Histogram{}}
	for name, h := range stats.Tensors {
		if v := m.Graph.Value(name); v != nil {
			sh.ByValue[v] = h
			if v.IsGraphOutput() {
				sh.ByOutput[name] = h
			}
		}
	}
	return sh
}

// FloatActivations lists the float32 activations of m's main graph: the float32 graph
// inputs that are fed and the float32 outputs of its nodes (Constants' aside), sorted.
func FloatActivations(m *ir.Model) []string {
	isFloat := func(v *ir.Value) bool {
		return v != nil && v.Type != nil && v.Type.Kind == ir.TensorType && v.Type.DType == ir.Float && !v.IsConst()
	}
	var out []string
	for _, v := range modelInputs(m) {
		if isFloat(v) {
			out = append(out, v.Name)
		}
	}
	for _, n := range m.Graph.Nodes() {
		if n.OpType == "Constant" && (n.Domain == "" || n.Domain == "ai.onnx") {
			continue
		}
		for _, o := range n.Outputs() {
			if isFloat(o) {
				out = append(out, o.Name)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Subset returns statistics of the named tensors only (sharing the histograms).
func (s *Stats) Subset(names []string) *Stats {
	out := &Stats{Model: s.Model, Batches: s.Batches, Passes: s.Passes, Bins: s.Bins, Tensors: make(map[string]*Histogram, len(names))}
	for _, n := range names {
		if h, ok := s.Tensors[n]; ok {
			out.Tensors[n] = h
		}
	}
	return out
}
