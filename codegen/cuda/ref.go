package cuda

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
)

// refBuilder adds the reference node(s) of an instance to g, given the graph
// inputs by parameter name, and returns the outputs by parameter name. The
// reference is the fused operator ONNX Runtime implements on CPU, run as a
// one-node model with the block's constants.
type refBuilder func(g *ir.Graph, in map[string]*ir.Value) map[string]*ir.Value

const msDomain = "com.microsoft"

// node adds one node; trailing nil inputs are dropped, inner nil inputs and
// nil outputs are omitted optional ones. Outputs are named by outNames ("" for
// an omitted output).
func node(g *ir.Graph, domain, op string, inputs []*ir.Value, outNames []string, attrs ...*ir.Attr) map[string]*ir.Value {
	for len(inputs) > 0 && inputs[len(inputs)-1] == nil {
		inputs = inputs[:len(inputs)-1]
	}
	outs := make([]*ir.Value, len(outNames))
	res := map[string]*ir.Value{}
	for i, name := range outNames {
		if name != "" {
			outs[i] = &ir.Value{Name: name}
			res[name] = outs[i]
		}
	}
	if _, err := g.AddNode(&ir.Node{Name: op, OpType: op, Domain: domain, Attrs: attrs}, inputs, outs); err != nil {
		panic(err) // names are fixed and distinct
	}
	return res
}

func refLayerNorm(eps float64) refBuilder {
	return func(g *ir.Graph, in map[string]*ir.Value) map[string]*ir.Value {
		return node(g, "", "LayerNormalization", []*ir.Value{in["input"], in["gamma"], in["beta"]}, []string{"output"},
			ir.IntAttr("axis", -1), ir.FloatAttr("epsilon", float32(eps)))
	}
}

func refSkipLayerNorm(eps float64, bias, beta, sum bool) refBuilder {
	return func(g *ir.Graph, in map[string]*ir.Value) map[string]*ir.Value {
		outs := []string{"output"}
		if sum {
			outs = []string{"output", "", "", "sum"}
		}
		return node(g, msDomain, "SkipLayerNormalization", []*ir.Value{in["input"], in["skip"], in["gamma"], in["beta"], in["bias"]}, outs,
			ir.FloatAttr("epsilon", float32(eps)))
	}
}

func refGelu(approx int, alpha float64, bias bool) refBuilder {
	return func(g *ir.Graph, in map[string]*ir.Value) map[string]*ir.Value {
		x := []*ir.Value{in["input"], in["bias"]}
		switch {
		case approx == 0 && bias:
			return node(g, msDomain, "BiasGelu", x, []string{"output"})
		case approx == 0:
			return node(g, msDomain, "Gelu", x[:1], []string{"output"})
		case approx == 1:
			return node(g, msDomain, "FastGelu", x, []string{"output"})
		}
		src := in["input"]
		if bias {
			src = node(g, "", "Add", x, []string{"biased"})["biased"]
		}
		return node(g, msDomain, "QuickGelu", []*ir.Value{src}, []string{"output"}, ir.FloatAttr("alpha", float32(alpha)))
	}
}

func refAttention(heads int64, scale, filter float64, mask, bias bool) refBuilder {
	return func(g *ir.Graph, in map[string]*ir.Value) map[string]*ir.Value {
		attrs := []*ir.Attr{ir.IntAttr("num_heads", heads), ir.FloatAttr("scale", float32(scale))}
		if mask {
			attrs = append(attrs, ir.FloatAttr("mask_filter_value", float32(math.Max(filter, -math.MaxFloat32))))
		}
		return node(g, msDomain, "MultiHeadAttention", []*ir.Value{in["q"], in["k"], in["v"], nil, in["mask"], in["bias"]}, []string{"output"}, attrs...)
	}
}

func refEmbedding(eps float64, segment, positionIDs, beta bool) refBuilder {
	return func(g *ir.Graph, in map[string]*ir.Value) map[string]*ir.Value {
		return node(g, msDomain, "EmbedLayerNormalization", []*ir.Value{in["input_ids"], in["segment_ids"], in["word_embedding"],
			in["position_embedding"], in["segment_embedding"], in["gamma"], in["beta"], nil, in["position_ids"]},
			[]string{"output", "mask_index"}, ir.FloatAttr("epsilon", float32(eps)))
	}
}

func refQDQ(op string, axis int64, perChannel bool) refBuilder {
	return func(g *ir.Graph, in map[string]*ir.Value) map[string]*ir.Value {
		var attrs []*ir.Attr
		if perChannel {
			attrs = append(attrs, ir.IntAttr("axis", axis))
		}
		return node(g, "", op, []*ir.Value{in["x"], in["scale"], in["zero_point"]}, []string{"y"}, attrs...)
	}
}

// ---- check data ----

// manifest describes the check data: which ONNX Runtime computed the
// expected outputs, and every file with its tensor.
type manifest struct {
	Model     string          `json:"model"`
	Generator string          `json:"generator"`
	Reference manifestRef     `json:"reference"`
	Instances []manifestBlock `json:"instances"`
}

type manifestRef struct {
	Runtime  string `json:"runtime"`
	Version  string `json:"version"`
	Provider string `json:"provider"`
	OptLevel string `json:"graph_optimization"`
}

type manifestBlock struct {
	Block   string           `json:"block"`
	Layer   int              `json:"layer"`
	Variant string           `json:"variant"`
	Kernel  string           `json:"kernel"`
	Op      string           `json:"reference_op"`
	Dims    map[string]int64 `json:"dims"`
	Tensors []manifestTensor `json:"tensors"`
}

type manifestTensor struct {
	Param  string  `json:"param"`
	File   string  `json:"file"`
	DType  string  `json:"dtype"`
	Shape  []int64 `json:"shape"`
	Role   string  `json:"role"`   // "input" or "expected"
	Source string  `json:"source"` // "model", "random" or "onnxruntime"
	Bytes  int64   `json:"bytes"`
	SHA256 string  `json:"sha256"`
}

func ndType(dt ir.DataType) ndarray.DType {
	switch dt {
	case ir.Int32:
		return ndarray.Int32
	case ir.Int8:
		return ndarray.Int8
	}
	return ndarray.Float32
}

// data makes an input tensor's array.
func (t *tensor) data() (*ndarray.Array, error) {
	n := t.Count()
	var vals []float64
	if t.from != nil {
		v, err := t.from.Float64s()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.File, err)
		}
		if int64(len(v)) != n {
			return nil, fmt.Errorf("%s: the model constant has %d elements, want %d", t.File, len(v), n)
		}
		vals = v
	} else {
		vals = t.gen(n)
	}
	a := &ndarray.Array{DType: ndType(t.DType), Shape: append([]int64{}, t.Shape...)}
	switch t.DType {
	case ir.Int32:
		v := make([]int32, n)
		for i, x := range vals {
			v[i] = int32(x)
		}
		return ndarray.FromInt32(t.Shape, v), nil
	case ir.Int8:
		a.Data = make([]byte, n)
		for i, x := range vals {
			if t.from == nil {
				x -= 128 // ints(256) are [0, 256)
			}
			a.Data[i] = byte(int8(x))
		}
		return a, nil
	}
	v := make([]float32, n)
	for i, x := range vals {
		v[i] = float32(x)
	}
	return ndarray.FromFloat32(t.Shape, v), nil
}

// writeCheckData runs every instance's reference on ONNX Runtime (CPU) and
// writes inputs, expected outputs and manifest.json into dir, replacing what an
// earlier run left there.
func writeCheckData(p *plan, dir string) error {
	// The folder is ours: data of an earlier run would not match these kernels.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	man := manifest{Model: p.Source, Generator: "qcc -emit=cuda",
		Reference: manifestRef{Runtime: "onnxruntime", Version: ort.Version(), Provider: "CPUExecutionProvider", OptLevel: "disabled"}}
	for _, in := range p.Instances {
		mb, err := runReference(in, dir)
		if err != nil {
			return fmt.Errorf("check data for %s: %w", in.ID, err)
		}
		man.Instances = append(man.Instances, mb)
	}
	js, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return err
	}
	return ir.WriteFileAtomic(filepath.Join(dir, "manifest.json"), append(js, '\n'))
}

func referenceModel(in *instance) ([]byte, map[string]*ndarray.Array, error) {
	g := ir.NewGraph("qcc_reference_" + in.ID)
	vals := map[string]*ir.Value{}
	feeds := map[string]*ndarray.Array{}
	for _, t := range in.Tensors {
		if t.Out {
			continue
		}
		dims := make([]ir.Dim, len(t.Shape))
		for i, d := range t.Shape {
			dims[i] = ir.D(d)
		}
		v, err := g.AddInput(t.Param, ir.TensorOf(t.DType, dims...))
		if err != nil {
			return nil, nil, err
		}
		vals[t.Param] = v
		a, err := t.data()
		if err != nil {
			return nil, nil, err
		}
		feeds[t.Param] = a
	}
	outs := in.ref(g, vals)
	for _, t := range in.Tensors {
		if !t.Out {
			continue
		}
		v := outs[t.Param]
		if v == nil {
			return nil, nil, fmt.Errorf("reference has no output %s", t.Param)
		}
		dims := make([]ir.Dim, len(t.Shape))
		for i, d := range t.Shape {
			dims[i] = ir.D(d)
		}
		v.Type = ir.TensorOf(t.DType, dims...)
		g.Outputs = append(g.Outputs, v)
	}
	m := &ir.Model{IRVersion: 8, Opsets: []ir.OpsetID{{Domain: "", Version: 17}, {Domain: msDomain, Version: 1}},
		ProducerName: "qcc", Graph: g}
	if err := m.Verify(); err != nil {
		return nil, nil, err
	}
	b, err := ir.Marshal(m)
	return b, feeds, err
}

func runReference(in *instance, dir string) (manifestBlock, error) {
	mb := manifestBlock{Block: in.ID, Layer: in.Layer, Variant: in.Variant, Kernel: in.Kernel.Name, Op: in.Kernel.Ref, Dims: map[string]int64{}}
	for _, d := range in.Dims {
		mb.Dims[d.Name] = d.Value
	}
	model, feeds, err := referenceModel(in)
	if err != nil {
		return mb, err
	}
	s, err := ort.NewSessionFromBytes(model, ort.Options{OptLevel: ort.OptDisabled, IntraOpThreads: 1})
	if err != nil {
		return mb, err
	}
	defer s.Close()
	got, err := s.Run(feeds)
	if err != nil {
		return mb, err
	}
	for _, t := range in.Tensors {
		a := feeds[t.Param]
		role := "input"
		if t.Out {
			role = "expected"
			a = got[t.Param]
			if a == nil {
				return mb, fmt.Errorf("onnxruntime returned no %s", t.Param)
			}
			if a.DType != ndType(t.DType) || !ndarray.SameShape(a.Shape, t.Shape) {
				return mb, fmt.Errorf("onnxruntime returned %s %v for %s, want %s %v", a.DType, a.Shape, t.Param, ndType(t.DType), t.Shape)
			}
		}
		if err := ir.WriteFileAtomic(filepath.Join(dir, t.File), a.Data); err != nil {
			return mb, err
		}
		sum := sha256.Sum256(a.Data)
		mb.Tensors = append(mb.Tensors, manifestTensor{Param: t.Param, File: t.File, DType: ndType(t.DType).String(),
			Shape: append([]int64{}, t.Shape...), Role: role, Source: t.Source, Bytes: int64(len(a.Data)), SHA256: hex.EncodeToString(sum[:])})
	}
	return mb, nil
}
