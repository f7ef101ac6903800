package cuda

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/ort"
)

const msDomain = "com.microsoft"

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
	case ir.Float16:
		return ndarray.Float16
	case ir.BFloat16:
		return ndarray.BFloat16
	}
	return ndarray.Float32
}

// writeCheckData runs every instance's reference on ONNX Runtime (CPU) and
// writes inputs, expected outputs and manifest.json into dir, replacing what an
// earlier run left there.
func writeCheckData(m *ir.Model, p *plan, dir string) error {
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
		mb, err := runReference(m, in, dir)
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

func runReference(m *ir.Model, in *instance, dir string) (manifestBlock, error) {
	mb := manifestBlock{Block: in.ID, Layer: in.Layer, Variant: in.Variant, Kernel: in.Kernel.Name, Dims: map[string]int64{}}
	for _, d := range in.Dims {
		mb.Dims[d.Name] = d.Value
	}
	ref, err := in.reference(m)
	if err != nil {
		return mb, err
	}
	mb.Op = "the model's subgraph: " + strings.Join(ref.Ops, ", ")
	for _, t := range in.Tensors {
		a, role := ref.Inputs[t.Param], "input"
		if t.Out {
			a, role = ref.Outputs[t.Param], "expected"
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
