package ort

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"unsafe"

	"github.com/qcc-dev/qcc/ndarray"
	onnxruntime "github.com/yalue/onnxruntime_go"
)

// OptLevel is ORT's graph optimization level. The zero value disables
// optimizations, which is what a reference run wants: the output is the
// graph's own arithmetic, not ORT's fused rewrite of it.
type OptLevel int

const (
	OptDisabled OptLevel = iota
	OptBasic
	OptExtended
	OptAll
)

func (l OptLevel) ort() (onnxruntime.GraphOptimizationLevel, error) {
	switch l {
	case OptDisabled:
		return onnxruntime.GraphOptimizationLevelDisableAll, nil
	case OptBasic:
		return onnxruntime.GraphOptimizationLevelEnableBasic, nil
	case OptExtended:
		return onnxruntime.GraphOptimizationLevelEnableExtended, nil
	case OptAll:
		return onnxruntime.GraphOptimizationLevelEnableAll, nil
	}
	return 0, fmt.Errorf("ort: unknown OptLevel %d", int(l))
}

// Options configure a Session. The zero value is a valid default.
type Options struct {
	OptLevel OptLevel
	// IntraOpThreads is ORT's intra-op thread count; 0 lets ORT choose.
	IntraOpThreads int
	// ExtraOutputs names intermediate tensors to return from Run besides the
	// graph outputs (for calibration). They are added to the graph as
	// outputs, so the model is loaded from memory. Limitation: the binding
	// then discovers the outputs' types with a temporary session that looks
	// for external data relative to the working directory, so a model with
	// external data needs that directory to be the model's.
	ExtraOutputs []string
	// ProfilePrefix, when set, turns on ORT's per-node profiler; the JSON
	// trace is written when the session closes, named PREFIX_DATE.json.
	ProfilePrefix string
	// OptimizedModelPath, when set, makes ORT save the model as its
	// optimizer left it (to see which fusions it made).
	OptimizedModelPath string
}

// IOInfo describes a session input or output.
type IOInfo struct {
	Name  string
	DType ndarray.DType
	// Dims has -1 for symbolic or unknown dimensions. It is empty for
	// scalars and also for outputs whose rank the model does not declare.
	Dims []int64
}

// fetch is one tensor asked of ORT for one public output.
type fetch struct {
	// For an output that the Go binding cannot hand back as it is (2-byte
	// float types, which it mis-sizes, and rank 0 or unknown rank, which it
	// rejects), the model gets extra nodes: flat is a 1-D copy (cast to
	// float32 for 2-byte floats) and shape its shape; Run reassembles it.
	name, flat, shape string
	dtype             ndarray.DType
}

// Session is an ORT inference session. Run may be called concurrently;
// Close waits for running calls.
type Session struct {
	mu      sync.RWMutex
	s       *onnxruntime.DynamicAdvancedSession
	inputs  []IOInfo
	outputs []IOInfo
	fetches []fetch
	// declared holds the model when its inputs and outputs were read from its bytes:
	// Outputs then asks ORT once, which knows the shapes it inferred as well.
	declared    []byte
	outputsOnce sync.Once
	// path and opts are the session's, for the temporary session Outputs asks (at ORT's
	// default level, 1.30 crashes optimising some valid models the caller loads unoptimised).
	path string
	opts Options
}

// NewSession loads the model file at modelPath.
func NewSession(modelPath string, opts Options) (*Session, error) {
	s, err := newSession(modelPath, nil, opts)
	if err != nil {
		return nil, fmt.Errorf("ort: %s: %w", modelPath, err)
	}
	return s, nil
}

// NewSessionFromBytes loads a serialized model. External data, if any, is
// looked up relative to the working directory.
func NewSessionFromBytes(model []byte, opts Options) (*Session, error) {
	if len(model) == 0 {
		return nil, errors.New("ort: empty model")
	}
	s, err := newSession("", model, opts)
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	return s, nil
}

func newSession(path string, model []byte, opts Options) (*Session, error) {
	if !onnxruntime.IsInitialized() {
		return nil, errors.New("not initialized: call ort.Init first")
	}
	so, err := sessionOptions(path, opts)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()

	// Rewrites need the bytes; otherwise ORT reads the file itself.
	load := func() error {
		if model == nil {
			model, err = os.ReadFile(path)
		}
		return err
	}
	if len(opts.ExtraOutputs) > 0 {
		if err := load(); err != nil {
			return nil, err
		}
		var add graphAdditions
		for _, name := range opts.ExtraOutputs {
			add.output(name)
		}
		if model, err = appendToGraph(model, add); err != nil {
			return nil, err
		}
	}
	ins, outs, declared, err := ioInfo(path, model, opts)
	if err != nil {
		return nil, err
	}
	sess := &Session{inputs: ins, outputs: outs, path: path, opts: opts}
	if declared {
		sess.declared = model
	}

	var add graphAdditions
	for _, o := range sess.outputs {
		f := fetch{name: o.Name, dtype: o.DType}
		wide := o.DType == ndarray.Float16 || o.DType == ndarray.BFloat16
		if wide || len(o.Dims) == 0 {
			if err := load(); err != nil {
				return nil, err
			}
			base := uniqueName(model, "qcc_ort_fetch/"+o.Name)
			src := o.Name
			if wide {
				src = base + "/f32"
				add.node("Cast", src, []string{o.Name}, []string{src}, map[string]int64{"to": int64(ndarray.Float32)})
			}
			f.flat, f.shape = base+"/flat", base+"/shape"
			add.int64Constant(base+"/minus1", []int64{-1})
			add.node("Reshape", f.flat, []string{src, base + "/minus1"}, []string{f.flat}, nil)
			add.node("Shape", f.shape, []string{o.Name}, []string{f.shape}, nil)
			add.output(f.flat)
			add.output(f.shape)
		}
		sess.fetches = append(sess.fetches, f)
	}
	if len(add) > 0 {
		if model, err = appendToGraph(model, add); err != nil {
			return nil, err
		}
	}

	inNames := make([]string, len(sess.inputs))
	for i, in := range sess.inputs {
		inNames[i] = in.Name
	}
	var outNames []string
	for _, f := range sess.fetches {
		if f.flat != "" {
			outNames = append(outNames, f.flat, f.shape)
		} else {
			outNames = append(outNames, f.name)
		}
	}
	if model != nil {
		sess.s, err = onnxruntime.NewDynamicAdvancedSessionWithONNXData(model, inNames, outNames, so)
	} else {
		sess.s, err = onnxruntime.NewDynamicAdvancedSession(path, inNames, outNames, so)
	}
	if err != nil {
		return nil, err
	}
	return sess, nil
}

func sessionOptions(path string, opts Options) (*onnxruntime.SessionOptions, error) {
	lvl, err := opts.OptLevel.ort()
	if err != nil {
		return nil, err
	}
	so, err := onnxruntime.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	err = so.SetGraphOptimizationLevel(lvl)
	if err == nil && opts.IntraOpThreads > 0 {
		err = so.SetIntraOpNumThreads(opts.IntraOpThreads)
	}
	if err == nil && opts.ProfilePrefix != "" {
		err = so.EnableProfiling(opts.ProfilePrefix)
	}
	if err == nil && opts.OptimizedModelPath != "" {
		err = so.SetOptimizedModelFilePath(opts.OptimizedModelPath)
	}
	if err == nil && path != "" {
		// When a rewritten model is loaded from memory, its external data
		// must still be found next to the original file.
		err = so.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", filepath.Dir(path))
	}
	if err != nil {
		so.Destroy()
		return nil, err
	}
	return so, nil
}

// ioInfo returns the model's inputs and outputs: as the bytes declare them when they
// declare them all (declaredIO), else as ORT reports them through a temporary session
// (the binding needs the names before it creates the real one).
// (declared reports the first). Declared outputs may lack sizes that ORT infers, which
// only Outputs shows; nothing else depends on them.
func ioInfo(path string, model []byte, opts Options) (ins, outs []IOInfo, declared bool, err error) {
	var oi, oo []onnxruntime.InputOutputInfo
	if model != nil {
		if ins, outs, ok := declaredIO(model); ok {
			return ins, outs, true, nil
		}
		oi, oo, err = infoOfBytes(path, model, opts)
	} else {
		// The temporary session must not profile or save the model itself.
		opts.ProfilePrefix, opts.OptimizedModelPath = "", ""
		var so *onnxruntime.SessionOptions
		if so, err = sessionOptions(path, opts); err != nil {
			return nil, nil, false, err
		}
		defer so.Destroy()
		oi, oo, err = onnxruntime.GetInputOutputInfoWithOptions(path, so)
	}
	if err != nil {
		return nil, nil, false, err
	}
	return convertInfo(oi), convertInfo(oo), false, nil
}

// infoOfBytes asks ORT for the inputs and outputs of a model in memory through a
// temporary session with the caller's options: the binding's own in-memory variant
// takes none, so ORT would optimise at its default level, and at extended and above ORT
// 1.30's CPU provider fuses FP8 (float8e4m3fn) Q/DQ around float32 GEMMs into integer
// operators it then rejects (microsoft/onnxruntime#22269), failing a session the
// caller asked for at a lower level. The bytes go to a temporary file; when ORT cannot
// load that (external data next to the original), the default options are tried; at
// OptAll, the default, they are used directly.
func infoOfBytes(path string, model []byte, opts Options) (oi, oo []onnxruntime.InputOutputInfo, err error) {
	if opts.OptLevel == OptAll {
		return onnxruntime.GetInputOutputInfoWithONNXData(model)
	}
	f, err := os.CreateTemp("", "qcc-ort-*.onnx")
	if err != nil {
		return onnxruntime.GetInputOutputInfoWithONNXData(model)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(model)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return onnxruntime.GetInputOutputInfoWithONNXData(model)
	}
	opts.ProfilePrefix, opts.OptimizedModelPath = "", ""
	so, err := sessionOptions(path, opts)
	if err != nil {
		return nil, nil, err
	}
	defer so.Destroy()
	if oi, oo, err = onnxruntime.GetInputOutputInfoWithOptions(f.Name(), so); err == nil {
		return oi, oo, nil
	}
	return onnxruntime.GetInputOutputInfoWithONNXData(model)
}

func convertInfo(in []onnxruntime.InputOutputInfo) []IOInfo {
	out := make([]IOInfo, len(in))
	for i, x := range in {
		out[i] = IOInfo{Name: x.Name, DType: ndarray.DType(x.DataType), Dims: append([]int64{}, x.Dimensions...)}
		for j, d := range out[i].Dims {
			if d < 0 {
				out[i].Dims[j] = -1
			}
		}
	}
	return out
}

// uniqueName returns base, or base with a suffix, such that it occurs
// nowhere in the model's bytes (and so names no existing tensor).
func uniqueName(model []byte, base string) string {
	name := base
	for i := 1; bytes.Contains(model, []byte(name)); i++ {
		name = fmt.Sprintf("%s~%d", base, i)
	}
	return name
}

// Inputs returns the model's inputs (initializers excluded).
func (s *Session) Inputs() []IOInfo { return cloneInfo(s.inputs) }

// Outputs returns the model's outputs, ExtraOutputs included, with the sizes ORT
// knows (declared or inferred).
func (s *Session) Outputs() []IOInfo {
	s.outputsOnce.Do(func() {
		if s.declared == nil {
			return
		}
		_, oo, err := infoOfBytes(s.path, s.declared, s.opts)
		s.declared = nil
		if err != nil || len(oo) != len(s.outputs) {
			return // the session loaded this model: keep what it declares
		}
		s.outputs = convertInfo(oo)
	})
	return cloneInfo(s.outputs)
}

func cloneInfo(in []IOInfo) []IOInfo {
	out := make([]IOInfo, len(in))
	for i, x := range in {
		out[i] = IOInfo{x.Name, x.DType, append([]int64{}, x.Dims...)}
	}
	return out
}

// Close releases the session. It is safe to call more than once.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.s == nil {
		return nil
	}
	err := s.s.Destroy()
	s.s = nil
	return err
}

// Run feeds every model input and returns every output, keyed by name.
// Supported element types: float32, float64, float16, bfloat16, int8..int64,
// uint8..uint64 and bool.
func (s *Session) Run(inputs map[string]*ndarray.Array) (map[string]*ndarray.Array, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.s == nil {
		return nil, errors.New("ort: Run on a closed session")
	}
	if err := s.checkInputs(inputs); err != nil {
		return nil, err
	}
	if len(s.inputs) == 0 {
		// onnxruntime_go indexes the first input unconditionally.
		return nil, errors.New("ort: cannot run a model without inputs")
	}
	ins := make([]onnxruntime.Value, len(s.inputs))
	defer destroyAll(ins)
	for i, info := range s.inputs {
		v, err := toValue(inputs[info.Name])
		if err != nil {
			return nil, fmt.Errorf("ort: input %q: %w", info.Name, err)
		}
		ins[i] = v
	}
	// nil entries: ORT allocates outputs of whatever shape they come out.
	outs := make([]onnxruntime.Value, 0, 2*len(s.fetches))
	for _, f := range s.fetches {
		outs = append(outs, nil)
		if f.flat != "" {
			outs = append(outs, nil)
		}
	}
	err := s.s.Run(ins, outs)
	defer destroyAll(outs)
	if err != nil {
		return nil, fmt.Errorf("ort: %w", err)
	}
	res := make(map[string]*ndarray.Array, len(s.fetches))
	k := 0
	for _, f := range s.fetches {
		a, err := fromValue(outs[k])
		k++
		if err == nil && f.flat != "" {
			var shape *ndarray.Array
			if shape, err = fromValue(outs[k]); err == nil {
				a, err = reassemble(a, shape, f.dtype)
			}
			k++
		}
		if err != nil {
			return nil, fmt.Errorf("ort: output %q: %w", f.name, err)
		}
		res[f.name] = a
	}
	return res, nil
}

func (s *Session) checkInputs(inputs map[string]*ndarray.Array) error {
	var missing []string
	for _, info := range s.inputs {
		a, ok := inputs[info.Name]
		if !ok {
			missing = append(missing, info.Name)
			continue
		}
		if err := a.Validate(); err != nil {
			return fmt.Errorf("ort: input %q: %w", info.Name, err)
		}
		if a.DType != info.DType {
			return fmt.Errorf("ort: input %q is %v, the model wants %v", info.Name, a.DType, info.DType)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("ort: missing inputs %s", strings.Join(missing, ", "))
	}
	if len(inputs) != len(s.inputs) {
		known := map[string]bool{}
		for _, info := range s.inputs {
			known[info.Name] = true
		}
		var extra []string
		for name := range inputs {
			if !known[name] {
				extra = append(extra, name)
			}
		}
		sort.Strings(extra)
		return fmt.Errorf("ort: the model has no inputs named %s", strings.Join(extra, ", "))
	}
	return nil
}

func destroyAll(vs []onnxruntime.Value) {
	for _, v := range vs {
		// After a failed conversion the binding leaves a typed nil pointer
		// in the slice, which a plain nil check misses.
		if v == nil {
			continue
		}
		if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
			continue
		}
		v.Destroy()
	}
}

// toValue wraps a's bytes (no copy) as an ORT tensor.
func toValue(a *ndarray.Array) (onnxruntime.Value, error) {
	if len(a.Shape) == 0 {
		return scalarValue(a)
	}
	data := a.Data
	if len(data) == 0 {
		data = []byte{0} // the binding refuses empty buffers; ORT reads none of it
	}
	return onnxruntime.NewCustomDataTensor(onnxruntime.Shape(a.Shape), data, onnxruntime.TensorElementDataType(a.DType))
}

// scalarValue builds a rank-0 tensor, which NewCustomDataTensor cannot.
func scalarValue(a *ndarray.Array) (onnxruntime.Value, error) {
	switch a.DType {
	case ndarray.Float32:
		return newScalar[float32](a)
	case ndarray.Float64:
		return newScalar[float64](a)
	case ndarray.Int8:
		return newScalar[int8](a)
	case ndarray.Uint8:
		return newScalar[uint8](a)
	case ndarray.Int16:
		return newScalar[int16](a)
	case ndarray.Uint16:
		return newScalar[uint16](a)
	case ndarray.Int32:
		return newScalar[int32](a)
	case ndarray.Uint32:
		return newScalar[uint32](a)
	case ndarray.Int64:
		return newScalar[int64](a)
	case ndarray.Uint64:
		return newScalar[uint64](a)
	case ndarray.Bool:
		return newScalar[bool](a)
	}
	return nil, fmt.Errorf("rank-0 %v inputs are not supported by the Go binding", a.DType)
}

func newScalar[T onnxruntime.TensorData](a *ndarray.Array) (onnxruntime.Value, error) {
	var v T // copied, since a.Data need not be aligned for T
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&v)), unsafe.Sizeof(v)), a.Data)
	return onnxruntime.NewScalar(v)
}

// fromValue takes over the Go-side buffer of an output (the binding has
// already copied it out of ORT's memory) as the Array's bytes.
func fromValue(v onnxruntime.Value) (*ndarray.Array, error) {
	switch t := v.(type) {
	case *onnxruntime.Tensor[float32]:
		return tensorArray(t, ndarray.Float32), nil
	case *onnxruntime.Tensor[float64]:
		return tensorArray(t, ndarray.Float64), nil
	case *onnxruntime.Tensor[int8]:
		return tensorArray(t, ndarray.Int8), nil
	case *onnxruntime.Tensor[uint8]:
		return tensorArray(t, ndarray.Uint8), nil
	case *onnxruntime.Tensor[int16]:
		return tensorArray(t, ndarray.Int16), nil
	case *onnxruntime.Tensor[uint16]:
		return tensorArray(t, ndarray.Uint16), nil
	case *onnxruntime.Tensor[int32]:
		return tensorArray(t, ndarray.Int32), nil
	case *onnxruntime.Tensor[uint32]:
		return tensorArray(t, ndarray.Uint32), nil
	case *onnxruntime.Tensor[int64]:
		return tensorArray(t, ndarray.Int64), nil
	case *onnxruntime.Tensor[uint64]:
		return tensorArray(t, ndarray.Uint64), nil
	case *onnxruntime.Tensor[bool]:
		return tensorArray(t, ndarray.Bool), nil
	case *onnxruntime.CustomDataTensor:
		return &ndarray.Array{DType: ndarray.DType(t.DataType()), Shape: append([]int64{}, t.GetShape()...),
			Data: append([]byte(nil), t.GetData()...)}, nil
	case nil:
		return nil, errors.New("ORT returned no value")
	}
	return nil, fmt.Errorf("unsupported output kind %v", v.GetONNXType())
}

func tensorArray[T onnxruntime.TensorData](t *onnxruntime.Tensor[T], dt ndarray.DType) *ndarray.Array {
	d := t.GetData()
	var b []byte
	if len(d) > 0 {
		b = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(d))), len(d)*int(unsafe.Sizeof(d[0])))
	} else {
		b = []byte{}
	}
	return &ndarray.Array{DType: dt, Shape: append([]int64{}, t.GetShape()...), Data: b}
}

// reassemble restores an output fetched as a flat (and, for 2-byte floats,
// float32) tensor plus its shape.
func reassemble(flat, shape *ndarray.Array, dt ndarray.DType) (*ndarray.Array, error) {
	dims := shape.Int64s()
	n, err := ndarray.NumElements(dims)
	if err != nil || n != flat.Len() {
		return nil, fmt.Errorf("internal error: %d elements for shape %v", flat.Len(), dims)
	}
	switch dt {
	case ndarray.Float16:
		return ndarray.FromFloat16(dims, flat.Float32s()), nil
	case ndarray.BFloat16:
		// The values came from bfloat16, so the low half of each float32
		// is zero and dropping it is exact.
		f := flat.Float32s()
		out := ndarray.New(ndarray.BFloat16, dims)
		for i, x := range f {
			bits := math.Float32bits(x)
			out.Data[2*i] = byte(bits >> 16)
			out.Data[2*i+1] = byte(bits >> 24)
		}
		return out, nil
	}
	flat.Shape = dims
	return flat, nil
}
