// Package target is the table behind qcc's -target and -precision flags: one entry per
// runtime, each a list of pipeline steps tagged with the precisions they run at. Expand
// turns a (target, precision) pair into the pipeline that is right and fastest for that
// runtime, checked against a pass registry, so that a step whose pass or option this
// build lacks gives a clear error (or, for an optional step, is left out with a note)
// instead of a parse error about an option the user never wrote.
//
// Adding a step to a target (a precision-typing pass, say) is one Step in its list.
package target

import (
	"fmt"
	"strings"

	"github.com/qcc-dev/qcc/pass"
)

// Precision is what -precision selects: the numeric format of the compute.
type Precision string

const (
	INT8 Precision = "int8" // INT8 Q/DQ on the GEMMs, the rest float
	FP8  Precision = "fp8"  // FP8 (E4M3FN) Q/DQ on the GEMMs
	FP16 Precision = "fp16" // no Q/DQ; the graph typed FP16
	FP32 Precision = "fp32" // no Q/DQ, no typing: the fused FP32 model
)

// Precisions lists every precision, in the order -help shows them.
var Precisions = []Precision{INT8, FP8, FP16, FP32}

// Step is one pass of a target's pipeline.
type Step struct {
	// Spec is the pass with its options, as -passes takes it.
	Spec string
	// For lists the precisions the step runs at; nil means every precision.
	For []Precision
	// Optional steps are left out (with a note) when this build lacks their pass; a
	// step that is not optional makes the expansion fail then.
	Optional bool
	// Needs says in words what the step needs, for the error when this build lacks it.
	Needs string
}

// Target is one runtime qcc compiles for.
type Target struct {
	Name    string
	Runtime string // who runs the output
	// Default is the precision used when -precision is not given.
	Default Precision
	// Refuse gives, for each precision the runtime has no fast path for, the reason.
	Refuse map[Precision]string
	Steps  []Step
	// Why says briefly why these steps, for -list-targets and the README.
	Why string
}

// Steps shared by several targets.
var (
	fold = Step{Spec: "fold"}
	// FP16 typing, last, so that it types the fused graph (as ORT's optimizer converts
	// after fusing).
	fp16 = Step{Spec: "precision<type=fp16>", For: []Precision{FP16},
		Needs: "FP16 typing (the precision pass)"}
	fp8Needs = "FP8 Q/DQ placement (qdq<dtype=fp8>; opset 19 E4M3FN)"
	// TensorRT 11 runs what the model declares: its INT8 and FP8 are typed FP16 too.
	// The precision pass raises a Q/DQ model to opset 19 (qdq<dtype=fp8> already has),
	// where the Q/DQ pairs take their neighbours' precision (float16 scales), so the
	// GEMMs between them and everything else run in FP16 instead of FP32.
	fp16TRT = Step{Spec: "precision<type=fp16>", For: []Precision{FP16, FP8, INT8},
		Needs: "FP16 typing (the precision pass)"}
)

// Targets is the table, one entry per runtime.
var Targets = []*Target{
	{
		Name:    "ort-cpu",
		Runtime: "ONNX Runtime, CPU execution provider (x86)",
		Default: INT8,
		Refuse: map[Precision]string{
			FP8:  "ONNX Runtime's CPU provider runs FP8 Q/DQ only as fake quantization (dequantized to float), slower than FP32",
			FP16: "ONNX Runtime's CPU provider has no FP16 kernels for most transformer operators and casts back to float, slower than FP32",
		},
		Steps: []Step{
			fold,
			{Spec: "qdq<policy=linear;pairs=per-reader;disable=other$>", For: []Precision{INT8}},
			{Spec: "fuse<target=ort;provider=cpu;opset=23>"},
		},
		Why: "INT8 on the linear layers only, one Q/DQ pair per reader (ORT's x86 int8 rewrite needs a QuantizeLinear feeding one DequantizeLinear), " +
			"the pooler/classifier float (ORT does not fuse a Q/DQ Gemm without an output Q); " +
			"MatMulIntegerToFloat with the bias in the GEMM epilogue, Attention-23 over the integer projections (faster than QAttention), Add + LayerNormalization (faster than ORT's CPU SkipLayerNormalization)",
	},
	{
		Name:    "ort-cuda",
		Runtime: "ONNX Runtime, CUDA execution provider",
		Default: FP16,
		Refuse: map[Precision]string{
			INT8: "ONNX Runtime's CUDA provider has no INT8 kernels for Q/DQ GEMMs (it dequantizes and runs them in float, slower than FP16); use -target=tensorrt for INT8 on NVIDIA GPUs",
			FP8:  "ONNX Runtime's CUDA provider has no FP8 kernels for Q/DQ GEMMs; use -target=tensorrt",
		},
		Steps: []Step{
			fold,
			{Spec: "fuse<target=ort;provider=cuda>"},
			fp16,
		},
		Why: "ORT's fused CUDA kernels (Attention, SkipLayerNormalization, EmbedLayerNormalization, BiasGelu) in FP16; INT8 needs TensorRT",
	},
	{
		Name:    "tensorrt",
		Runtime: "TensorRT (explicit quantization, standard ONNX operators)",
		Default: INT8,
		Steps: []Step{
			fold,
			{Spec: "qdq<policy=full;residual=skip;pairs=shared>", For: []Precision{INT8}},
			{Spec: "qdq<policy=full;residual=skip;pairs=shared;dtype=fp8>", For: []Precision{FP8}, Needs: fp8Needs},
			{Spec: "fuse<target=onnx;opset=17>"},
			fp16TRT,
		},
		Why: "TensorRT's placement: every GEMM input, both inputs of the attention BMMs (INT8 fused MHA), the residual Add's skip input (the Add fuses into the GEMM epilogue), " +
			"one shared pair per tensor, GEMMs too small for tensor cores float; standard operators only (TensorRT parses no com.microsoft operator), " +
			"LayerNormalization-17 and the GELU and quantized attention left for TensorRT's own fusions (which need the BMMs' Q/DQ visible); " +
			"INT8 and FP8 typed FP16 around the quantized GEMMs (Q/DQ at opset 19, float16 scales): TensorRT 11 runs what the model declares",
	},
	{
		Name:    "onnx",
		Runtime: "any ONNX runtime (standard operators at the model's own opset)",
		Default: INT8,
		Steps: []Step{
			fold,
			{Spec: "qdq", For: []Precision{INT8}},
			{Spec: "qdq<dtype=fp8>", For: []Precision{FP8}, Needs: fp8Needs},
			{Spec: "fuse<target=onnx>"},
			fp16,
		},
		Why: "standard operators only and no opset raise (but FP8's to 19, the first opset with FP8 Q/DQ): the conservative INT8 placement (the linear layers' inputs) and whatever standard fused operators the model's opset has",
	},
}

// Lookup finds a target by name.
func Lookup(name string) *Target {
	for _, t := range Targets {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Names lists the target names, in table order.
func Names() []string {
	var ns []string
	for _, t := range Targets {
		ns = append(ns, t.Name)
	}
	return ns
}

// Expansion is a target's pipeline for one precision.
type Expansion struct {
	Target    *Target
	Precision Precision
	Pipeline  *pass.Pipeline
	// Notes say which optional steps this build left out, and why.
	Notes []string
}

// Spec is the pipeline as -passes would take it.
func (e *Expansion) Spec() string { return e.Pipeline.String() }

// Expand returns the pipeline of target name at precision prec ("" for the target's
// default), with each step parsed against registry.
func Expand(name string, prec Precision, registry []*pass.Pass) (*Expansion, error) {
	t := Lookup(name)
	if t == nil {
		return nil, fmt.Errorf("-target=%s: unknown target (want %s)", name, strings.Join(Names(), ", "))
	}
	if prec == "" {
		prec = t.Default
	}
	known := false
	for _, p := range Precisions {
		known = known || p == prec
	}
	if !known {
		return nil, fmt.Errorf("-precision=%s: unknown precision (want %s)", prec, joinPrecisions(Precisions))
	}
	e, err := t.expand(prec, registry)
	if err != nil {
		if ps := t.Available(registry); len(ps) > 0 {
			err = fmt.Errorf("%w (-target=%s takes -precision=%s here)", err, t.Name, strings.ReplaceAll(joinPrecisions(ps), ", ", "|"))
		}
		return nil, err
	}
	return e, nil
}

func (t *Target) expand(prec Precision, registry []*pass.Pass) (*Expansion, error) {
	if why, ok := t.Refuse[prec]; ok {
		return nil, fmt.Errorf("-target=%s -precision=%s: %s", t.Name, prec, why)
	}
	e := &Expansion{Target: t, Precision: prec, Pipeline: &pass.Pipeline{}}
	for _, s := range t.Steps {
		if !s.runsAt(prec) {
			continue
		}
		p, err := pass.Parse(s.Spec, registry)
		if err != nil {
			why := lacking(s.Spec, registry, err)
			if s.Optional {
				e.Notes = append(e.Notes, fmt.Sprintf("step %s left out: %s", s.Spec, why))
				continue
			}
			needs := s.Needs
			if needs == "" {
				needs = s.Spec
			}
			return nil, fmt.Errorf("-target=%s -precision=%s needs %s, which this build of qcc lacks: %s", t.Name, prec, needs, why)
		}
		e.Pipeline.Steps = append(e.Pipeline.Steps, p.Steps...)
	}
	return e, nil
}

// Available lists the precisions t expands at with registry.
func (t *Target) Available(registry []*pass.Pass) []Precision {
	var ps []Precision
	for _, p := range Precisions {
		if _, err := t.expand(p, registry); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// lacking says briefly what the registry lacks for spec (one pass with options): the pass,
// or an option it does not declare; else the parser's own error.
func lacking(spec string, registry []*pass.Pass, err error) string {
	name, opts, _ := strings.Cut(spec, "<")
	p := pass.Lookup(registry, name)
	if p == nil {
		return fmt.Sprintf("no pass named %s", name)
	}
	for _, kv := range strings.Split(strings.TrimSuffix(opts, ">"), ";") {
		k, _, _ := strings.Cut(kv, "=")
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		declared := false
		for _, o := range p.Options {
			declared = declared || o.Name == k
		}
		if !declared {
			return fmt.Sprintf("pass %s has no option %s", name, k)
		}
	}
	return err.Error()
}

func (s Step) runsAt(p Precision) bool {
	if s.For == nil {
		return true
	}
	for _, q := range s.For {
		if q == p {
			return true
		}
	}
	return false
}

func joinPrecisions(ps []Precision) string {
	var s []string
	for _, p := range ps {
		s = append(s, string(p))
	}
	return strings.Join(s, ", ")
}
