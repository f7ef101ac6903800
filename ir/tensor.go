package ir

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"io"
	"math"
	"os"
	"slices"
	"sync"

	"github.com/qcc-dev/qcc/ndarray"
)

// Tensor is a constant: an initializer, a Constant node's value or a tensor attribute.
//
// Data is materialised lazily: a tensor loaded from a file keeps its original encoding
// (typed fields, raw bytes or an external-data reference) until someone asks for the
// bytes, so large weights that no pass reads are never copied, and an untouched tensor
// is written back exactly as it was read.
type Tensor struct {
	Name  string
	DType DataType
	Dims  []int64

	mu      sync.Mutex
	raw     []byte                 // little-endian bytes, once materialised
	decode  func() ([]byte, error) // produces raw on first use
	lazy    func() ([]byte, error) // computes the bytes again: raw may be dropped once saved
	strs    [][]byte               // STRING tensors
	orig    any                    // *onnxpb.TensorProto when loaded and unmodified
	ext     *External              // where the bytes live when stored externally
	sec     *section               // where raw lies in the mapped model file, while it aliases it
	modTick bool                   // data was replaced after load
	sum     uint64                 // digest of the bytes, for Equal
	derived *derivation            // how a lazy tensor's bytes are made, for Equal
	stream  func(io.Writer) error  // writes the bytes in pieces without holding them
	extHead []byte                 // the first bytes of ext, once read (see head)
	hasSum  bool
}

// External says where an externally stored tensor's bytes live.
type External struct {
	Location string // relative to the model's folder, as written in the file
	Path     string // resolved path
	Offset   int64
	Length   int64 // -1: to the end of the file
}

// NewTensor returns a tensor holding raw little-endian bytes.
func NewTensor(dt DataType, dims []int64, raw []byte) *Tensor {
	return &Tensor{DType: dt, Dims: append([]int64{}, dims...), raw: raw}
}

// NewLazyTensor returns a tensor whose bytes compute computes when first asked for. A save
// writes such tensors one at a time and drops their bytes once written, so a pass that
// rewrites many weights (packing, transposing, converting) holds one tensor's worth of
// new memory at a time. compute is called again if the bytes are wanted after a save; it
// must return the same bytes each time.
func NewLazyTensor(dt DataType, dims []int64, compute func() ([]byte, error)) *Tensor {
	return &Tensor{DType: dt, Dims: append([]int64{}, dims...), decode: compute, lazy: compute}
}

// release drops bytes that can be computed again.
func (t *Tensor) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lazy != nil && t.raw != nil {
		t.raw, t.decode = nil, t.lazy
	}
}

// NewStringTensor returns a STRING tensor.
func NewStringTensor(dims []int64, s [][]byte) *Tensor {
	return &Tensor{DType: String, Dims: append([]int64{}, dims...), strs: s}
}

// FloatTensor returns a float32 tensor.
func FloatTensor(dims []int64, v []float32) *Tensor {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return NewTensor(Float, dims, b)
}

// Int64Tensor returns an int64 tensor.
func Int64Tensor(dims []int64, v []int64) *Tensor {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return NewTensor(Int64, dims, b)
}

// NumElements is the product of the dimensions.
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// External returns the external-data reference of a tensor loaded from one, or nil.
func (t *Tensor) External() *External {
	if t.modTick {
		return nil
	}
	return t.ext
}

// Materialised reports whether the bytes are in memory (tests use it to check laziness).
func (t *Tensor) Materialised() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.raw != nil || t.decode == nil
}

// Bytes returns the little-endian data, decoding or reading it on first use.
// The caller must not modify the slice; use SetBytes to replace the data.
func (t *Tensor) Bytes() ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.raw == nil && t.decode != nil {
		b, err := t.decode()
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if want := t.DType.ByteSize(t.NumElements()); t.DType != String && int64(len(b)) != want {
			return nil, fmt.Errorf("tensor %q: %d bytes of data for %s%v, want %d", t.Name, len(b), t.DType, t.Dims, want)
		}
		t.raw = b
		t.decode = nil
	}
	if t.sec != nil {
		t.sec.m.escape()
	}
	if t.raw == nil && t.DType != String {
		if n := t.DType.ByteSize(t.NumElements()); n > 0 {
			return nil, fmt.Errorf("tensor %q: no data", t.Name)
		}
		t.raw = []byte{}
	}
	return t.raw, nil
}

// ReadBytes returns the data like Bytes but keeps nothing it had to read or compute: a
// lazy tensor computing from other tensors reads them this way, so that it, not its
// sources, is what holds memory, and only while it is being written.
func (t *Tensor) ReadBytes() ([]byte, error) {
	t.mu.Lock()
	raw, decode := t.raw, t.decode
	t.mu.Unlock()
	if raw != nil || decode == nil {
		return t.Bytes()
	}
	return t.Clone().Bytes()
}

// Equal reports whether two tensors have the same type, dimensions and bytes, reading as
// little as it can: tensors sharing their data are equal unread, derived tensors (see
// NewDerivedTensor) compare their parts, and a digest is computed (and kept) only when
// the first bytes agree. Neither tensor keeps bytes it read.
func (t *Tensor) Equal(u *Tensor) (bool, error) {
	if t == u {
		return true, nil
	}
	if t.DType != u.DType || !slices.Equal(t.Dims, u.Dims) || t.DType == String {
		return t.DType == String && u.DType == String && slices.Equal(t.Dims, u.Dims) &&
			slices.EqualFunc(t.strs, u.strs, bytes.Equal), nil
	}
	if t.sameData(u) {
		return true, nil
	}
	if dt, du := t.derivedFrom(), u.derivedFrom(); dt != nil && du != nil && dt.op == du.op && len(dt.parts) == len(du.parts) {
		for i, p := range dt.parts {
			q := du.parts[i]
			if p == nil || q == nil {
				if p != q {
					return false, nil
				}
				continue
			}
			if same, err := p.Equal(q); err != nil || !same {
				return false, err
			}
		}
		return true, nil
	}
	if ht, hu := t.head(), u.head(); ht != nil && hu != nil && !bytes.Equal(ht, hu) {
		return false, nil
	}
	a, err := t.digest()
	if err != nil {
		return false, err
	}
	b, err := u.digest()
	if err != nil || a != b {
		return false, err
	}
	x, err := t.ReadBytes()
	if err != nil {
		return false, err
	}
	y, err := u.ReadBytes()
	return err == nil && bytes.Equal(x, y), err
}

// derivation records how a derived tensor's bytes are made from other tensors'.
type derivation struct {
	op    string
	parts []*Tensor
}

// NewDerivedTensor is NewLazyTensor for bytes that op computes from parts, one to one:
// two tensors derived by the same op are equal exactly when their parts are (nil parts
// alike), which Equal then checks without computing either.
func NewDerivedTensor(dt DataType, dims []int64, op string, parts []*Tensor, compute func() ([]byte, error)) *Tensor {
	t := NewLazyTensor(dt, dims, compute)
	t.derived = &derivation{op: op, parts: parts}
	return t
}

// NewStreamedTensor is NewDerivedTensor whose bytes a save can also write in pieces:
// stream writes exactly the bytes compute returns, holding only a small buffer, so that
// rewriting large weights (packing Q, K and V) never holds a whole tensor.
func NewStreamedTensor(dt DataType, dims []int64, op string, parts []*Tensor, compute func() ([]byte, error), stream func(io.Writer) error) *Tensor {
	t := NewDerivedTensor(dt, dims, op, parts, compute)
	t.stream = stream
	return t
}

// streamer is the tensor's stream function while its bytes are not in memory.
func (t *Tensor) streamer() func(io.Writer) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.raw != nil {
		return nil
	}
	return t.stream
}

// writeStreamed writes a streamed tensor's n bytes to w; false when t has no stream to
// write from (its bytes are in memory, or it has none).
func (t *Tensor) writeStreamed(w io.Writer, n int64) (bool, error) {
	s := t.streamer()
	if s == nil {
		return false, nil
	}
	cw := &countingWriter{w: w}
	if err := s(cw); err != nil {
		return true, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if cw.n != n {
		return true, fmt.Errorf("tensor %q: streamed %d bytes, want %d", t.Name, cw.n, n)
	}
	return true, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n += int64(k)
	return k, err
}

func (t *Tensor) derivedFrom() *derivation {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.derived
}

// sameData reports whether t and u hold their bytes in the same place.
func (t *Tensor) sameData(u *Tensor) bool {
	t.mu.Lock()
	tr, ts, te, tm := t.raw, t.sec, t.ext, t.modTick
	t.mu.Unlock()
	u.mu.Lock()
	ur, us, ue, um := u.raw, u.sec, u.ext, u.modTick
	u.mu.Unlock()
	switch {
	case ts != nil && us != nil:
		return *ts == *us
	case te != nil && ue != nil && !tm && !um && tr == nil && ur == nil:
		return te.Path == ue.Path && te.Offset == ue.Offset && te.Length == ue.Length
	case len(tr) > 0 && len(tr) == len(ur):
		return &tr[0] == &ur[0]
	}
	return false
}

// head returns the first bytes of a tensor when they are at hand without computing the
// tensor: in memory, in the mapped file, or a short read of its external file.
func (t *Tensor) head() []byte {
	const n = 64
	t.mu.Lock()
	raw, ext, lazy, cached := t.raw, t.ext, t.decode != nil, t.extHead
	t.mu.Unlock()
	if raw != nil || !lazy {
		return raw[:min(n, len(raw))]
	}
	if ext == nil || t.modTick {
		return nil
	}
	if cached != nil {
		return cached
	}
	f, err := os.Open(ext.Path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b := make([]byte, min(n, t.DType.ByteSize(t.NumElements())))
	if _, err := f.ReadAt(b, ext.Offset); err != nil {
		return nil
	}
	// Kept: comparing each new packed weight with every earlier one (attnSharedConst)
	// would otherwise open the file each time.
	t.mu.Lock()
	t.extHead = b
	t.mu.Unlock()
	return b
}

var digestSeed = maphash.MakeSeed()

func (t *Tensor) digest() (uint64, error) {
	t.mu.Lock()
	sum, ok := t.sum, t.hasSum
	t.mu.Unlock()
	if ok {
		return sum, nil
	}
	b, err := t.ReadBytes()
	if err != nil {
		return 0, err
	}
	sum = maphash.Bytes(digestSeed, b)
	t.mu.Lock()
	t.sum, t.hasSum = sum, true
	t.mu.Unlock()
	return sum, nil
}

// Strings returns the elements of a STRING tensor.
func (t *Tensor) Strings() [][]byte { return t.strs }

// SetBytes replaces the data; the tensor is then saved from these bytes.
func (t *Tensor) SetBytes(b []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.raw, t.decode, t.orig, t.modTick, t.sec, t.lazy, t.hasSum, t.derived = b, nil, nil, true, nil, nil, false, nil
}

// Float32s decodes a FLOAT tensor.
func (t *Tensor) Float32s() ([]float32, error) {
	if t.DType != Float {
		return nil, fmt.Errorf("tensor %q is %s, not float", t.Name, t.DType)
	}
	b, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out, nil
}

// Int64s decodes an integer or bool tensor, widening to int64.
func (t *Tensor) Int64s() ([]int64, error) {
	b, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	n := int(t.NumElements())
	out := make([]int64, n)
	for i := range out {
		switch t.DType {
		case Int64:
			out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		case Uint64:
			out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		case Int32:
			out[i] = int64(int32(binary.LittleEndian.Uint32(b[4*i:])))
		case Uint32:
			out[i] = int64(binary.LittleEndian.Uint32(b[4*i:]))
		case Int16:
			out[i] = int64(int16(binary.LittleEndian.Uint16(b[2*i:])))
		case Uint16:
			out[i] = int64(binary.LittleEndian.Uint16(b[2*i:]))
		case Int8:
			out[i] = int64(int8(b[i]))
		case Uint8, Bool:
			out[i] = int64(b[i])
		default:
			return nil, fmt.Errorf("tensor %q is %s, not an integer type", t.Name, t.DType)
		}
	}
	return out, nil
}

// Float64s decodes any real numeric tensor (float, double, float16, bfloat16, ints) as float64.
func (t *Tensor) Float64s() ([]float64, error) {
	if t.DType.IsInt() || t.DType == Bool {
		iv, err := t.Int64s()
		if err != nil {
			return nil, err
		}
		out := make([]float64, len(iv))
		for i, v := range iv {
			out[i] = float64(v)
		}
		return out, nil
	}
	b, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	n := int(t.NumElements())
	out := make([]float64, n)
	for i := range out {
		switch t.DType {
		case Float:
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		case Double:
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		case Float16:
			out[i] = float64(HalfToFloat32(binary.LittleEndian.Uint16(b[2*i:])))
		case BFloat16:
			out[i] = float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16))
		case Float8E4M3FN:
			out[i] = float64(Float8E4M3FNToFloat32(b[i]))
		default:
			return nil, fmt.Errorf("tensor %q: cannot read %s as numbers", t.Name, t.DType)
		}
	}
	return out, nil
}

// Clone returns a copy that shares the (immutable) data.
func (t *Tensor) Clone() *Tensor {
	t.mu.Lock()
	defer t.mu.Unlock()
	return &Tensor{Name: t.Name, DType: t.DType, Dims: append([]int64{}, t.Dims...), raw: t.raw,
		decode: t.decode, lazy: t.lazy, strs: t.strs, orig: t.orig, ext: t.ext, sec: t.sec, modTick: t.modTick,
		sum: t.sum, hasSum: t.hasSum, derived: t.derived}
}

// HalfToFloat32 converts an IEEE 754 binary16 value (ndarray's decoder, named here for
// code that holds tensors).
func HalfToFloat32(h uint16) float32 { return ndarray.HalfToFloat32(h) }
