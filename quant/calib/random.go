package calib

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
	"github.com/qcc-dev/qcc/shape"
)

// Defaults of the random source.
const (
	DefaultRandomBatches = 16
	// DefaultSeq replaces every symbolic or unknown dimension after the first. 32 stays
	// within the position tables of the corpus models (128) and matches trained/calib.npz.
	DefaultSeq = 32
	// DefaultIntHigh bounds (exclusive) integer inputs with no embedding table found.
	DefaultIntHigh = 2
)

type genKind int

const (
	genFloat     genKind = iota // N(0, 1)
	genInt                      // uniform in [0, high)
	genMask                     // ones, then a few zeros at the end of each row
	genTokenType                // zeros, then ones from a random split point
	genPosition                 // 0, 1, 2, ... along the last axis (mod high)
	genBool                     // fair coin
)

type inputGen struct {
	name  string
	dt    ndarray.DType
	shape []int64
	kind  genKind
	high  int64
}

// randomSource draws batches deterministically: batch i depends only on the seed and i.
type randomSource struct {
	gens []inputGen
	n    int
	seed uint64
}

// NewRandomSource returns n batches of random inputs for m, drawn from each input's type
// and shape with the given seed:
//
//   - dim 0, when symbolic or unknown, is batch (DefaultBatch when batch <= 0); every
//     later symbolic or unknown dimension is DefaultSeq, or fewer when the model looks
//     positions up in a smaller table (positionCap), or the sizes shape inference finds
//     the model consistent with when it is not with those (runnableSizes); a dim named
//     as a sum of symbols is the sum of their sizes;
//   - inputs whose name contains "mask" are all ones except a random number (up to a
//     quarter of the row, none in the first row) of trailing zeros along the last axis;
//   - integer inputs whose name contains "token_type" or "segment" are 0 up to a random
//     split point and 1 after it; "position" inputs count 0, 1, 2, ... along the last axis;
//   - other integer inputs are uniform in [0, rows), where rows is the first dimension of
//     the constant 2-D table of a Gather that consumes the input as indices (directly or
//     through Cast, Identity, Reshape, Unsqueeze, Squeeze, Flatten or Expand; the least
//     such when several), or in [0, DefaultIntHigh) when there is none. Token types and
//     positions are bounded by such a table too;
//   - floats are N(0, 1); other bools are fair coins.
func NewRandomSource(m *ir.Model, batch, n int, seed uint64) (Source, error) {
	if n <= 0 {
		return nil, fmt.Errorf("calib: random data needs at least one batch, got %d", n)
	}
	if batch <= 0 {
		batch = DefaultBatch
	}
	src := &randomSource{n: n, seed: seed}
	seq := int64(DefaultSeq)
	if c, ok := positionCap(m.Graph); ok && c < seq {
		seq = c
	}
	// A symbol is one size wherever it appears: the batch where some input has it first.
	batchSym := map[string]bool{}
	for _, in := range modelInputs(m) {
		if t := in.Type; t != nil && t.HasShape && len(t.Shape) > 0 && !t.Shape[0].Known && t.Shape[0].Param != "" {
			batchSym[t.Shape[0].Param] = true
		}
	}
	sizes := runnableSizes(m, batchSym, int64(batch), seq)
	for _, in := range modelInputs(m) {
		t := in.Type
		if t == nil || t.Kind != ir.TensorType || !t.HasShape {
			return nil, fmt.Errorf("calib: random data: input %q has no tensor type with a known rank", in.Name)
		}
		g := inputGen{name: in.Name, dt: ndarray.DType(t.DType)}
		if !g.dt.Supported() {
			return nil, fmt.Errorf("calib: random data: input %q has unsupported type %v", in.Name, t.DType)
		}
		for i, d := range t.Shape {
			g.shape = append(g.shape, drawnDim(d, i, batchSym, int64(batch), sizes, seq))
		}
		lower := strings.ToLower(in.Name)
		rows, hasTable := embeddingRows(in)
		g.high = DefaultIntHigh
		if hasTable {
			g.high = rows
		}
		switch {
		case strings.Contains(lower, "mask"):
			g.kind = genMask
		case g.dt.IsFloat():
			g.kind = genFloat
		case g.dt == ndarray.Bool:
			g.kind = genBool
		case strings.Contains(lower, "token_type") || strings.Contains(lower, "segment"):
			g.kind = genTokenType
		case strings.Contains(lower, "position"):
			g.kind = genPosition
		default:
			g.kind = genInt
		}
		if g.kind != genFloat && g.kind != genBool && g.kind != genMask && g.high <= 0 {
			return nil, fmt.Errorf("calib: random data: input %q indexes an empty table", in.Name)
		}
		src.gens = append(src.gens, g)
	}
	return src, nil
}

func parseRandom(spec string, m *ir.Model, batch int) (Source, error) {
	n, seed := DefaultRandomBatches, uint64(0)
	parts := strings.Split(spec, ":")
	bad := func() error {
		return fmt.Errorf("calib: calibration data %q: want random, random:N or random:N:SEED", spec)
	}
	if len(parts) > 3 {
		return nil, bad()
	}
	if len(parts) >= 2 {
		v, err := strconv.Atoi(parts[1])
		if err != nil || v <= 0 {
			return nil, bad()
		}
		n = v
	}
	if len(parts) == 3 {
		v, err := strconv.ParseUint(parts[2], 10, 64)
		if err != nil {
			return nil, bad()
		}
		seed = v
	}
	return NewRandomSource(m, batch, n, seed)
}

// drawnDim is the size random data gives dim j of an input: its number; the batch for
// dim 0 or the batch's symbol; else, for each symbol it is a polynomial of, the symbol's
// size in sizes, or size, so that a cache model's mask over "past_sequence_length +
// sequence_length" spans both.
func drawnDim(d ir.Dim, j int, batchSym map[string]bool, batch int64, sizes map[string]int64, size int64) int64 {
	switch {
	case d.Known:
		return d.Value
	case j == 0 || batchSym[d.Param]:
		return batch
	}
	env := map[string]int64{}
	for _, a := range shape.Atoms(d) {
		v, ok := sizes[a]
		switch {
		case batchSym[a]:
			v = batch
		case !ok:
			v = size
		}
		env[a] = v
	}
	if v, ok := shape.EvalDim(d, env); ok && v > 0 {
		return v
	}
	return size
}

// sizeCandidates are the sizes tried for the symbolic dims after seq, in order: small
// image and sequence sizes, then the usual vision resolutions.
var sizeCandidates = []int64{16, 8, 64, 128, 224, 256, 384, 512}

// runnableSizes picks the sizes of the non-batch symbols of the inputs: seq for all when
// shape inference finds the model consistent with it, else the first candidate size it
// does, else one symbol at twice the others (a cache model's mask over a
// "total_sequence" that is past + sequence). A vision model exported for any image size
// may run at one size only (position embeddings of a fixed grid added to the patches),
// which a fixed default would miss. Inference cannot see every mismatch: when nothing is
// found consistent, seq stays for all. nil: every symbol takes seq.
func runnableSizes(m *ir.Model, batchSym map[string]bool, batch, seq int64) map[string]int64 {
	inputs := modelInputs(m)
	saved := make([]*ir.Type, len(inputs))
	var syms []string
	seen := map[string]bool{}
	for i, in := range inputs {
		saved[i] = in.Type
		if t := in.Type; t != nil && t.HasShape {
			for j, d := range t.Shape {
				if d.Known || j == 0 || batchSym[d.Param] {
					continue
				}
				for _, a := range shape.Atoms(d) {
					if !seen[a] && !batchSym[a] {
						seen[a] = true
						syms = append(syms, a)
					}
				}
			}
		}
	}
	if len(syms) == 0 {
		return nil
	}
	// Every value's type as it was, for after each trial, in the bodies too (inference
	// types a branch's values and outputs).
	types := map[*ir.Value]*ir.Type{}
	_ = m.Graph.Walk(func(g *ir.Graph) error {
		for _, n := range g.Nodes() {
			for _, o := range n.Outputs() {
				if o != nil {
					types[o] = o.Type
				}
			}
		}
		if g.Parent != nil {
			for _, in := range g.Inputs {
				types[in] = in.Type
			}
		}
		return nil
	})
	restore := func() {
		for v, t := range types {
			v.Type = t
		}
		for i, in := range inputs {
			in.Type = saved[i]
		}
	}
	fits := func(sizes map[string]int64, size int64) bool {
		for i, in := range inputs {
			t := saved[i]
			if t == nil || !t.HasShape {
				continue
			}
			st := t.Clone()
			for j, d := range st.Shape {
				st.Shape[j] = ir.D(drawnDim(d, j, batchSym, batch, sizes, size))
			}
			in.Type = st
		}
		_, err := shape.Infer(m)
		restore() // a trial's types would read as declared in the next
		return err == nil
	}
	sizes := append([]int64{seq}, sizeCandidates...)
	for _, c := range sizes {
		if fits(nil, c) {
			return uniform(syms, c)
		}
	}
	if len(syms) > 1 {
		for _, c := range sizes {
			for _, s := range syms {
				if fits(map[string]int64{s: 2 * c}, c) {
					sz := uniform(syms, c)
					sz[s] = 2 * c
					return sz
				}
			}
		}
	}
	return nil
}

func uniform(syms []string, size int64) map[string]int64 {
	out := map[string]int64{}
	for _, s := range syms {
		out[s] = size
	}
	return out
}

func (s *randomSource) Len() int { return s.n }

func (s *randomSource) Batch(i int) (map[string]*ndarray.Array, error) {
	if i < 0 || i >= s.n {
		return nil, fmt.Errorf("calib: batch %d out of range [0, %d)", i, s.n)
	}
	rng := rand.New(rand.NewPCG(s.seed, uint64(i)))
	out := make(map[string]*ndarray.Array, len(s.gens))
	for _, g := range s.gens {
		a, err := g.draw(rng)
		if err != nil {
			return nil, err
		}
		out[g.name] = a
	}
	return out, nil
}

func (g *inputGen) draw(rng *rand.Rand) (*ndarray.Array, error) {
	total, err := ndarray.NumElements(g.shape)
	if err != nil {
		return nil, fmt.Errorf("calib: random data: input %q: %w", g.name, err)
	}
	last := 1
	if len(g.shape) > 0 {
		last = int(g.shape[len(g.shape)-1])
	}
	vals := make([]float64, total)
	switch g.kind {
	case genFloat:
		for i := range vals {
			vals[i] = rng.NormFloat64()
		}
	case genBool:
		for i := range vals {
			vals[i] = float64(rng.IntN(2))
		}
	case genInt:
		for i := range vals {
			vals[i] = float64(rng.Int64N(g.high))
		}
	case genMask, genTokenType, genPosition:
		for r := 0; last > 0 && r*last < total; r++ {
			row := vals[r*last : (r+1)*last]
			switch g.kind {
			case genMask:
				pad := 0
				if r > 0 {
					pad = rng.IntN(last/4 + 1)
				}
				for j := range row {
					if j < last-pad {
						row[j] = 1
					}
				}
			case genTokenType:
				split := last
				if last > 1 {
					split = 1 + rng.IntN(last-1)
				}
				one := float64(min(1, g.high-1))
				for j := split; j < last; j++ {
					row[j] = one
				}
			case genPosition:
				for j := range row {
					row[j] = float64(int64(j) % g.high)
				}
			}
		}
	}
	return fromFloat64s(g.dt, g.shape, vals)
}

// fromFloat64s builds an array of any numeric type from values that it can hold.
func fromFloat64s(dt ndarray.DType, shape []int64, vals []float64) (*ndarray.Array, error) {
	switch dt {
	case ndarray.Float32:
		f := make([]float32, len(vals))
		for i, v := range vals {
			f[i] = float32(v)
		}
		return ndarray.FromFloat32(shape, f), nil
	case ndarray.Float64:
		return ndarray.FromFloat64(shape, vals), nil
	case ndarray.Float16:
		f := make([]float32, len(vals))
		for i, v := range vals {
			f[i] = float32(v)
		}
		return ndarray.FromFloat16(shape, f), nil
	case ndarray.BFloat16:
		a := ndarray.New(dt, shape)
		for i, v := range vals {
			// round to nearest even on the dropped half
			b := math.Float32bits(float32(v))
			b += 0x7fff + (b>>16)&1
			binary.LittleEndian.PutUint16(a.Data[2*i:], uint16(b>>16))
		}
		return a, nil
	}
	if !dt.IsInteger() && dt != ndarray.Bool {
		return nil, fmt.Errorf("calib: random data for %v inputs is not supported", dt)
	}
	a := ndarray.New(dt, shape)
	size := dt.Size()
	for i, v := range vals {
		u := uint64(int64(v))
		switch size {
		case 1:
			a.Data[i] = byte(u)
		case 2:
			binary.LittleEndian.PutUint16(a.Data[2*i:], uint16(u))
		case 4:
			binary.LittleEndian.PutUint32(a.Data[4*i:], uint32(u))
		case 8:
			binary.LittleEndian.PutUint64(a.Data[8*i:], u)
		}
	}
	return a, nil
}

// embeddingRows finds the Gathers that use v (or a reshaped or cast copy of it) as
// indices into a constant 2-D table, and returns the least table height.
func embeddingRows(v *ir.Value) (int64, bool) {
	var best int64
	found := false
	seen := map[*ir.Value]bool{}
	var walk func(x *ir.Value, depth int)
	walk = func(x *ir.Value, depth int) {
		if x == nil || seen[x] || depth > 8 {
			return
		}
		seen[x] = true
		for _, u := range x.Uses() {
			n := u.Node
			if n.Domain != "" && n.Domain != "ai.onnx" {
				continue
			}
			switch n.OpType {
			case "Gather":
				if u.Index != 1 || n.AttrInt("axis", 0) != 0 {
					continue
				}
				if t := constTensor(n.Input(0)); t != nil && len(t.Dims) == 2 {
					if !found || t.Dims[0] < best {
						best, found = t.Dims[0], true
					}
				}
			case "Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Expand":
				if u.Index == 0 {
					walk(n.Output(0), depth+1)
				}
			}
		}
	}
	walk(v, 0)
	return best, found
}

// constTensor returns the constant behind v: an initializer or a Constant node's value,
// possibly through Identity nodes.
func constTensor(v *ir.Value) *ir.Tensor {
	for range 8 {
		if v == nil {
			return nil
		}
		if v.Const != nil {
			return v.Const
		}
		p, _ := v.Producer()
		if p == nil {
			return nil
		}
		switch p.OpType {
		case "Constant":
			if a := p.Attr("value"); a != nil && a.Tensor != nil {
				return a.Tensor
			}
			return nil
		case "Identity":
			v = p.Input(0)
		default:
			return nil
		}
	}
	return nil
}

// positionCap is the longest sequence the model's computed position lookups allow: for
// each Gather from a constant 2-D table whose indices the model computes (a Range of the
// sequence length, plus a constant offset as in BART's learned positions), the table's
// rows less the offset, in the graph and its bodies. ok is false when there is no such
// lookup.
func positionCap(g *ir.Graph) (int64, bool) {
	var best int64
	found := false
	// The lookups of If/Loop bodies count too (a merged decoder's branches).
	var nodes []*ir.Node
	g.Walk(func(sg *ir.Graph) error { nodes = append(nodes, sg.Nodes()...); return nil })
	for _, n := range nodes {
		if n.OpType == "Slice" && n.Domain == "" {
			// A constant table sliced to the sequence length (sinusoidal positions).
			if c, ok := sliceCap(n); ok && (!found || c < best) {
				best, found = c, true
			}
			continue
		}
		table, ids := n.Input(0), n.Input(1)
		switch {
		case n.OpType == "EmbedLayerNormalization" && n.Domain == "com.microsoft":
			// A fused embedding: its position table, at 0..S-1 without position ids.
			table, ids = n.Input(3), n.Input(8)
			if t := constTensor(table); ids == nil && t != nil && len(t.Dims) == 2 {
				if c := t.Dims[0]; c > 0 && (!found || c < best) {
					best, found = c, true
				}
				continue
			}
		case n.OpType != "Gather" || n.Domain != "" || n.AttrInt("axis", 0) != 0:
			continue
		}
		t := constTensor(table)
		if t == nil || len(t.Dims) != 2 {
			continue
		}
		off, syms, ok := rangeOffset(ids, 0)
		if !ok {
			continue
		}
		// Indices run to off + (syms+1)·S - 1 when the range starts at syms sizes (a
		// cache's length) and is S long, every size being the same default.
		if c := (t.Dims[0] - off) / (syms + 1); c > 0 && (!found || c < best) {
			best, found = c, true
		}
	}
	return best, found
}

// rangeOffset follows indices back through layout ops and constant additions to a Range
// and returns the constant part of its start and how many run-time sizes it adds (a Range
// starting at a cache's length counts one).
func rangeOffset(v *ir.Value, depth int) (off, syms int64, ok bool) {
	if v == nil || depth > 8 {
		return 0, 0, false
	}
	n, _ := v.Producer()
	if n == nil {
		return 0, 0, false
	}
	switch n.OpType {
	case "Range":
		if t := constTensor(n.Input(0)); t != nil {
			if x, err := t.Int64s(); err == nil && len(x) == 1 {
				return x[0], 0, true
			}
			return 0, 0, false
		}
		return 0, 1, true
	case "Add":
		for i := 0; i < 2; i++ {
			if t := constTensor(n.Input(1 - i)); t != nil && t.NumElements() == 1 {
				if x, err := t.Int64s(); err == nil {
					if off, syms, ok := rangeOffset(n.Input(i), depth+1); ok {
						return off + x[0], syms, true
					}
				}
			}
		}
	case "Sub":
		if t := constTensor(n.Input(1)); t != nil && t.NumElements() == 1 {
			if x, err := t.Int64s(); err == nil {
				if off, syms, ok := rangeOffset(n.Input(0), depth+1); ok {
					return off - x[0], syms, true
				}
			}
		}
	case "CumSum":
		// Positions counted along a padding mask (OPT): 1, 2, ... S where it is all ones.
		if isMaskInput(n.Input(0), 0) && n.AttrInt("exclusive", 0) == 0 && n.AttrInt("reverse", 0) == 0 {
			return 1, 0, true
		}
	case "Mul":
		// Zeroed at padding by the mask itself: no larger than before.
		for i := 0; i < 2; i++ {
			if isMaskInput(n.Input(1-i), 0) {
				return rangeOffset(n.Input(i), depth+1)
			}
		}
	case "NonZero":
		// arange(S) before Range (opset < 11): the indices of S ones.
		if p, _ := n.Input(0).Producer(); p != nil && p.OpType == "ConstantOfShape" {
			return 0, 0, true
		}
	case "Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Slice", "Transpose":
		return rangeOffset(n.Input(0), depth+1)
	}
	return 0, 0, false
}

// isMaskInput reports whether v is a graph input named as a mask (drawn as ones and
// zeros), possibly cast.
func isMaskInput(v *ir.Value, depth int) bool {
	if v == nil || depth > 4 {
		return false
	}
	if v.IsGraphInput() {
		return strings.Contains(strings.ToLower(v.Name), "mask")
	}
	if n, _ := v.Producer(); n != nil && (n.OpType == "Cast" || n.OpType == "Identity") {
		return isMaskInput(n.Input(0), depth+1)
	}
	return false
}

// sliceCap is the length of a constant table's axis that a Slice with computed ends cuts
// (opset 10+: starts, ends, axes as inputs), less its constant start.
func sliceCap(n *ir.Node) (int64, bool) {
	t := constTensor(n.Input(0))
	if t == nil || len(t.Dims) < 2 || len(n.Inputs()) < 3 || constTensor(n.Input(2)) != nil {
		return 0, false
	}
	st := constTensor(n.Input(1))
	if st == nil || st.NumElements() != 1 {
		return 0, false
	}
	start, err := st.Int64s()
	if err != nil {
		return 0, false
	}
	axis := int64(0)
	if len(n.Inputs()) > 3 && n.Input(3) != nil {
		at := constTensor(n.Input(3))
		if at == nil || at.NumElements() != 1 {
			return 0, false
		}
		a, err := at.Int64s()
		if err != nil {
			return 0, false
		}
		axis = a[0]
	}
	if axis < 0 {
		axis += int64(len(t.Dims))
	}
	if axis < 0 || axis >= int64(len(t.Dims)) || start[0] < 0 {
		return 0, false
	}
	return t.Dims[axis] - start[0], t.Dims[axis] > 1 && t.Dims[axis] > start[0]
}
