package cuda

import (
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
	"github.com/qcc-dev/qcc/ndarray"
)

// emulate runs an instance's kernel specialisation in Go on the kernel's inputs (by
// parameter, as check.cu uploads them) and returns its outputs by parameter. It is
// written from the kernels' specification in cuda_kernels/qcc: the Spec constants of
// the instance's kernel, the layouts and strides the launcher reads, the mask
// predicate and filter, clamps and fills. Arithmetic is float64 with the values the
// kernel keeps in float rounded to float32. It is a test oracle: it shares nothing
// with ONNX Runtime, which computes the expected outputs from the model's subgraph.
//
// An instance of a half or bfloat16 model runs in that type (check.cu runs it so):
// every input of the kernel's element type is rounded to it first, as the upload
// does, and every such output at the end, as the kernel's store does.
func emulate(t *testing.T, in *instance, a map[string][]float64) map[string][]float64 {
	t.Helper()
	return emulateRows(t, in, a, false)
}

// emulateRows is emulate with the row kernels' (LayerNorm, skip+LayerNorm) layout
// chosen: warp rows (block rows for wide ones), or with short the short grid's
// block per row, which the launchers take on a GPU with many SMs for the row count.
func emulateRows(t *testing.T, in *instance, a map[string][]float64, short bool) map[string][]float64 {
	t.Helper()
	rnd := elemRound(in.Elem)
	if rnd == nil {
		return emulateKernel(t, in, a, f32, short)
	}
	typed := map[string]bool{}
	for _, p := range in.Kernel.Params {
		typed[p.Name] = p.Elem == "T"
	}
	r := map[string][]float64{}
	for p, x := range a {
		if typed[p] {
			x = roundAll(x, rnd)
		}
		r[p] = x
	}
	out := emulateKernel(t, in, r, rnd, short)
	for p, x := range out {
		if typed[p] {
			out[p] = roundAll(x, rnd)
		}
	}
	return out
}

// elemRound rounds a float to an element type: nil for float, else to half or
// bfloat16 (nearest, ties to even), through float.
func elemRound(elem int) func(float64) float64 {
	switch elem {
	case elemHalf:
		return func(x float64) float64 { return float64(ndarray.HalfToFloat32(ndarray.Float32ToHalf(float32(x)))) }
	case elemBF16:
		return func(x float64) float64 {
			return float64(math.Float32frombits(uint32(ir.Float32ToBFloat16(float32(x))) << 16))
		}
	}
	return nil
}

func roundAll(x []float64, rnd func(float64) float64) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = rnd(v)
	}
	return out
}

// emulateKernel is emulate for the kernel's own arithmetic; rnd rounds to its
// element type (the tensor-core attention rounds its probabilities to it).
func emulateKernel(t *testing.T, in *instance, a map[string][]float64, rnd func(float64) float64, short bool) map[string][]float64 {
	t.Helper()
	k := in.Kernel
	c := func(name string) float64 {
		for _, x := range k.Consts {
			if x.Name == name {
				v := x.Value
				switch v {
				case "true":
					return 1
				case "false":
					return 0
				case "qcc::kGeluErf", "qcc::kMaskNone", "qcc::kLayoutBSH", "qcc::kEmptyRowNaN":
					return 0
				case "qcc::kGeluTanh", "qcc::kMaskKeyPadding", "qcc::kLayoutBNSH", "qcc::kEmptyRowZero":
					return 1
				case "qcc::kGeluSigmoid":
					return 2
				case "-INFINITY":
					return math.Inf(-1)
				}
				f, err := strconv.ParseFloat(strings.TrimSuffix(v, "f"), 64)
				if err != nil {
					t.Fatalf("%s: constant %s = %s", k.Name, name, x.Value)
				}
				return f
			}
		}
		t.Fatalf("%s has no constant %s", k.Name, name)
		return 0
	}
	switch k.Launcher {
	case "qcc::LayerNorm", "qcc::SkipLayerNorm":
		h := int(c("kHidden"))
		x := append([]float64{}, a["input"]...)
		if k.Launcher == "qcc::SkipLayerNorm" {
			for i := range x {
				x[i] = f32(x[i] + a["skip"][i])
				if c("kHasBias") == 1 {
					x[i] = f32(x[i] + a["bias"][i%h])
				}
			}
		}
		var beta []float64
		if c("kHasBeta") == 1 {
			beta = a["beta"]
		}
		threads := threadsPerRow(h, in.Elem)
		if short {
			threads = shortGridThreads(h, in.Elem)
		}
		out := layerNormRows(x, h, f32(c("kEpsilon")), a["gamma"], beta, c("kCentred") == 1, threads, rowVecWidth(h, in.Elem))
		if k.Launcher == "qcc::SkipLayerNorm" && c("kHasSum") == 1 {
			return map[string][]float64{"output": out, "sum": x}
		}
		return map[string][]float64{"output": out}
	case "qcc::BiasGelu":
		n := int(c("kColumns"))
		approx, alpha := int(c("kApprox")), f32(c("kAlpha"))
		out := make([]float64, len(a["input"]))
		for i, x := range a["input"] {
			if c("kHasBias") == 1 {
				x = f32(x + a["bias"][i%n])
			}
			switch approx {
			case 0:
				out[i] = 0.5 * x * (1 + math.Erf(x/math.Sqrt2))
			case 1:
				out[i] = 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
			default:
				out[i] = x / (1 + math.Exp(-alpha*x))
			}
		}
		return map[string][]float64{"output": out}
	case "qcc::Attention":
		out, scores := emulateAttention(in, c, a)
		if c("kWriteScores") == 1 {
			return map[string][]float64{"output": out, "scores": scores}
		}
		return map[string][]float64{"output": out}
	case "qcc::FlashAttention":
		return map[string][]float64{"output": emulateFlash(in, c, a, rnd)}
	case "qcc::EmbedLayerNorm":
		h := int(c("kHidden"))
		s := int(in.Dims[1].Value)
		vocab, maxPos, typeVocab := int(c("kVocab")), int(c("kMaxPositions")), int(c("kTypeVocab"))
		if c("kPositionIds") == 0 && s > maxPos {
			return nil // the launcher refuses a sequence longer than the position table
		}
		ids := a["input_ids"]
		x := make([]float64, len(ids)*h)
		for tkn, id := range ids {
			w, p, sg := int(id), tkn%s, 0
			if c("kPositionIds") == 1 {
				p = int(a["position_ids"][tkn])
			}
			if typeVocab > 0 {
				sg = int(a["segment_ids"][tkn])
			}
			bad := w < 0 || w >= vocab || p < 0 || p >= maxPos || typeVocab > 0 && (sg < 0 || sg >= typeVocab)
			for e := 0; e < h; e++ {
				if bad {
					x[tkn*h+e] = math.NaN() // an id outside its table poisons its row
					continue
				}
				v := f32(a["word_embedding"][w*h+e] + a["position_embedding"][p*h+e])
				if typeVocab > 0 {
					v = f32(v + a["segment_embedding"][sg*h+e])
				}
				x[tkn*h+e] = v
			}
		}
		var beta []float64
		if c("kHasBeta") == 1 {
			beta = a["beta"]
		}
		return map[string][]float64{"output": layerNorm(x, h, f32(c("kEpsilon")), a["gamma"], beta, c("kCentred") == 1)}
	case "qcc::QuantizeLinear", "qcc::DequantizeLinear":
		q := qdqSpecOf(in, c)
		return map[string][]float64{"y": q.run(a, elemBytes(in.Elem), q.channel)}
	}
	t.Fatalf("no emulation of %s", k.Launcher)
	return nil
}

func f32(x float64) float64 { return float64(float32(x)) }

// emulateAttention follows qcc/attention.cuh: the launch check.cu makes (a packed
// kernel gets one [rows, 3 * hidden] buffer with k and v at offsets hidden and
// 2 * hidden), the row strides kLd, kKvLd and kVLd or the [batch, kv_heads, kv_seq,
// d] layout over kv_seq keys, value heads kVHeadSize wide (the output's heads too),
// the key/value head shared by kHeads / kKvHeads query heads, causal keys (and
// those kWindow or more before the query) excluded, the scaled score soft-capped
// (kSoftcap), kMaskFilter added to keys whose mask is <= 0, the bias (broadcast over
// the axes whose kBiasBatch, kBiasHeads, kBiasRows is false), a softmax whose
// row with no admissible key is 0 (kEmptyRowZero: every score <= the lowest float)
// or what IEEE arithmetic gives (kEmptyRowNaN: NaN for a row of -inf), a head's
// sink logit in the softmax's maximum and normaliser, and the row scale; and the
// scores scale * q . k of every key, as kWriteScores writes them.
func emulateAttention(in *instance, c func(string) float64, a map[string][]float64) (out, scores []float64) {
	x := attnData(in, c, a)
	if x == nil {
		return nil, nil
	}
	heads, d, dv, kvHeads := x.heads, x.d, x.dv, x.kvHeads
	hid := heads * dv // the output's width
	b, s, kvS := x.batch, x.seq, x.kvSeq
	out = make([]float64, b*s*hid)
	scores = make([]float64, b*heads*s*kvS)
	p := make([]float64, kvS)
	for bi := 0; bi < b; bi++ {
		for h := 0; h < heads; h++ {
			kvh := h / (heads / kvHeads)
			for i := 0; i < s; i++ {
				m := math.Inf(-1)
				for j := 0; j < kvS; j++ {
					dot := 0.0
					for e := 0; e < d; e++ {
						dot += f32(x.q(bi, i, h, e)*x.scale) * x.k(bi, j, kvh, e)
					}
					scores[((bi*heads+h)*s+i)*kvS+j] = f32(dot)
					if x.excluded(i, j) {
						p[j] = math.Inf(-1)
						continue
					}
					sc := x.addTerms(x.capped(f32(dot)), bi, h, i, j)
					p[j] = sc
					m = math.Max(m, sc)
				}
				sink := x.sink(h)
				m = math.Max(m, sink)
				if x.emptyZero && m <= -math.MaxFloat32 {
					for e := 0; e < dv; e++ {
						out[(bi*s+i)*hid+h*dv+e] = 0
					}
					continue
				}
				sum := 0.0
				if !math.IsInf(sink, -1) {
					sum = math.Exp(sink - m)
				}
				for j := range p {
					p[j] = math.Exp(p[j] - m)
					sum += p[j]
				}
				inv := 0.0
				if sum > 0 {
					inv = 1 / sum
				}
				for e := 0; e < dv; e++ {
					o := 0.0
					for j := 0; j < kvS; j++ {
						if p[j] != 0 {
							o += p[j] * inv * x.v(bi, j, kvh, e)
						}
					}
					out[(bi*s+i)*hid+h*dv+e] = o * x.rowScale(bi, i)
				}
			}
		}
	}
	return out, scores
}

// The tensor-core kernel's tiles: 64 query rows to a block, 64 keys to a tile,
// each tile's keys split between two lanes of 32.
const (
	flashRows = 64
	flashKeys = 64
)

// emulateFlash follows qcc/flash_attention.cuh: per query row, the key tiles in
// order (with kCausal only those up to the block's last query); per tile the
// scores S = Q K^T of the element-type inputs summed in float, times kScale, plus
// the bias and the mask filter in float (-inf for a causal key after the query);
// the online softmax in float with the running max m and sum l; the probabilities
// exp(s - m) rounded to the element type (rnd) before they are summed into l (each
// half tile summed on its own, then the two added) and multiplied by V; O rescaled
// by exp(m_old - m) and the tile's P V added; at the end O / l times the row
// scale. A row whose m is <= the lowest float is 0 (kEmptyRowZero), one whose m is
// -inf NaN (kEmptyRowNaN).
func emulateFlash(in *instance, c func(string) float64, a map[string][]float64, rnd func(float64) float64) []float64 {
	x := attnData(in, c, a)
	if x == nil || x.dv != x.d {
		return nil // the kernel's static_assert: value heads as wide as the others
	}
	heads, d, hid, kvHeads := x.heads, x.d, x.heads*x.d, x.kvHeads
	b, s, kvS := x.batch, x.seq, x.kvSeq
	out := make([]float64, b*s*hid)
	sc := make([]float64, flashKeys)
	p := make([]float64, flashKeys)
	o := make([]float64, d)
	for bi := 0; bi < b; bi++ {
		for h := 0; h < heads; h++ {
			kvh := h / (heads / kvHeads)
			for i := 0; i < s; i++ {
				end := kvS
				if x.causal {
					end = min(kvS, i/flashRows*flashRows+flashRows)
				}
				m, l := x.sink(h), 0.0 // a sink is a logit seen before every key
				if !math.IsInf(m, -1) {
					l = 1
				}
				clear(o)
				for t0 := 0; t0 < end; t0 += flashKeys {
					tileMax := math.Inf(-1)
					for j := range sc {
						key := t0 + j
						sc[j] = math.Inf(-1)
						if key >= kvS || x.excluded(i, key) {
							continue
						}
						dot := 0.0 // products of two half (or bfloat16) values are exact in float
						for e := 0; e < d; e++ {
							dot += x.q(bi, i, h, e) * x.k(bi, key, kvh, e)
						}
						sc[j] = x.addTerms(x.capped(f32(f32(dot)*x.scale)), bi, h, i, key)
						tileMax = math.Max(tileMax, sc[j])
					}
					mNew := math.Max(m, tileMax)
					none := math.IsInf(mNew, -1)
					alpha := 1.0
					if !none {
						alpha = f32(math.Exp(m - mNew))
					}
					var halves [2]float64
					for j := range p {
						p[j] = 0
						if !none {
							p[j] = rnd(math.Exp(sc[j] - mNew))
						}
						halves[j/(flashKeys/2)] = f32(halves[j/(flashKeys/2)] + p[j])
					}
					l = f32(f32(l*alpha) + f32(halves[0]+halves[1]))
					m = mNew
					for e := 0; e < d; e++ {
						pv := 0.0
						for j := range p {
							if key := t0 + j; key < kvS && p[j] != 0 {
								pv += p[j] * x.v(bi, key, kvh, e)
							}
						}
						o[e] = f32(f32(o[e]*alpha) + f32(pv))
					}
				}
				inv := f32(1 / l)
				switch {
				case x.emptyZero && m <= -math.MaxFloat32:
					inv = 0
					clear(o)
				case math.IsInf(m, -1):
					inv = math.NaN()
				}
				rs := x.rowScale(bi, i)
				for e := 0; e < d; e++ {
					out[(bi*s+i)*hid+h*d+e] = f32(f32(o[e]*inv) * rs)
				}
			}
		}
	}
	return out
}

// attnInputs are an attention kernel's inputs as its Spec reads them.
type attnInputs struct {
	heads, d, dv, kvHeads int // dv: the value heads' width
	batch, seq, kvSeq     int
	causal, emptyZero     bool
	scale                 float64
	q, k, v               func(bi, i, h, e int) float64 // q by query head, k and v by key/value head
	addTerms              func(s float64, bi, h, i, j int) float64
	rowScale              func(bi, i int) float64
	sink                  func(h int) float64 // -inf without sinks
	window                int                 // 0, or the keys a causal query sees
	softcap               float64             // 0, or the cap on the scaled scores
}

// excluded reports whether key j is left out of query i's row: after it (causal), or
// kWindow or more before it.
func (x *attnInputs) excluded(i, j int) bool {
	return x.causal && j > i || x.window > 0 && j <= i-x.window
}

// capped is the soft cap on a scaled score, in float as the kernels compute it.
func (x *attnInputs) capped(s float64) float64 {
	if x.softcap <= 0 {
		return s
	}
	return f32(x.softcap * f32(math.Tanh(f32(s/x.softcap))))
}

// attnData reads an attention instance's inputs: the launch check.cu makes (a
// packed kernel gets one [rows, 3 * hidden] buffer with k and v at offsets hidden
// and 2 * hidden), the row strides kLd and kKvLd or the [batch, kv_heads, kv_seq,
// d] layout, the bias broadcast over the axes whose kBias* flag is false, the mask
// predicate and filter; nil when a read would fall outside a buffer (a launch
// that faults).
func attnData(in *instance, c func(string) float64, a map[string][]float64) *attnInputs {
	heads, d, dv := int(c("kHeads")), int(c("kHeadSize")), int(c("kVHeadSize"))
	kvHeads, ld, kvLd, vLd := int(c("kKvHeads")), int(c("kLd")), int(c("kKvLd")), int(c("kVLd"))
	bnsh, causal := c("kKvLayout") == 1, c("kCausal") == 1
	scale, filter := f32(c("kScale")), f32(c("kMaskFilter"))
	maskOn, biasOn, rowOn := c("kMaskKind") == 1, c("kHasBias") == 1, c("kHasRowScale") == 1
	b, s, kvS := int(in.Dims[0].Value), int(in.Dims[1].Value), int(in.Dims[2].Value)
	hid := heads * d
	// The bias row of (batch entry, head, query): an axis the bias lacks (kBias* false)
	// is broadcast.
	biasRow := func(bi, h, i int) int {
		bh, rows := 1, 1
		if c("kBiasBatch") == 0 {
			bi = 0
		}
		if c("kBiasHeads") == 1 {
			bh = heads
		} else {
			h = 0
		}
		if c("kBiasRows") == 1 {
			rows = s
		} else {
			i = 0
		}
		return ((bi*bh+h)*rows + i) * kvS
	}
	q, kk, v := a["q"], a["k"], a["v"]
	qOff, kOff, vOff := 0, 0, 0
	if in.Packed {
		// check.cu's Pack3: one buffer, k and v at column offsets.
		packed := make([]float64, 3*b*s*hid)
		for r := 0; r < b*s; r++ {
			for j := 0; j < hid; j++ {
				packed[3*r*hid+j] = q[r*hid+j]
				packed[(3*r+1)*hid+j] = kk[r*hid+j]
				packed[(3*r+2)*hid+j] = v[r*hid+j]
			}
		}
		q, kk, v, kOff, vOff = packed, packed, packed, hid, 2*hid
	}
	// Dim e of key (value) j of head kvh: heads w wide, rows rowLd apart.
	kvIndex := func(bi, j, kvh, e, w, rowLd int) int {
		if bnsh {
			return ((bi*kvHeads+kvh)*kvS+j)*w + e
		}
		return (bi*kvS+j)*rowLd + kvh*w + e
	}
	// A read past the end of a buffer is a launch that faults (or reads garbage):
	// no output.
	if kOff+kvIndex(b-1, kvS-1, kvHeads-1, d-1, d, kvLd)+1 > len(kk) || vOff+kvIndex(b-1, kvS-1, kvHeads-1, dv-1, dv, vLd)+1 > len(v) ||
		(b*s-1)*ld+hid > len(q) {
		return nil
	}
	if biasOn && biasRow(b-1, heads-1, s-1)+kvS > len(a["bias"]) {
		return nil
	}
	sinkOn := c("kHasSink") == 1
	if sinkOn && len(a["sink"]) < heads {
		return nil
	}
	x := &attnInputs{window: int(c("kWindow")), softcap: f32(c("kSoftcap")), heads: heads, d: d, dv: dv, kvHeads: kvHeads, batch: b, seq: s, kvSeq: kvS, causal: causal,
		emptyZero: c("kEmptyRow") == 1, scale: scale}
	x.q = func(bi, i, h, e int) float64 { return q[qOff+(bi*s+i)*ld+h*d+e] }
	x.k = func(bi, j, kvh, e int) float64 { return kk[kOff+kvIndex(bi, j, kvh, e, d, kvLd)] }
	x.v = func(bi, j, kvh, e int) float64 { return v[vOff+kvIndex(bi, j, kvh, e, dv, vLd)] }
	x.addTerms = func(sc float64, bi, h, i, j int) float64 {
		if biasOn {
			sc = f32(sc + a["bias"][biasRow(bi, h, i)+j])
		}
		if maskOn && a["mask"][bi*kvS+j] <= 0 {
			sc = f32(sc + filter)
		}
		return sc
	}
	x.sink = func(h int) float64 {
		if sinkOn {
			return a["sink"][h]
		}
		return math.Inf(-1)
	}
	x.rowScale = func(bi, i int) float64 {
		if rowOn {
			return a["row_scale"][bi*s+i]
		}
		return 1
	}
	return x
}

// The row layout of qcc/common.cuh and qcc/layernorm.cuh, for elements of elem.

// rowVecWidth is RowVecWidth: the widest vector of at most 16 bytes that divides n
// and leaves each of a warp's lanes a vector.
func rowVecWidth(n, elem int) int {
	w := 16 / variants[elem].size
	for w > 1 && n%w != 0 {
		w /= 2
	}
	for w > 1 && n/w < 32 {
		w /= 2
	}
	return w
}

// threadsPerRow is ThreadsPerRow: a warp up to 8 vectors a lane, else a block with
// at most 4 vectors a thread.
func threadsPerRow(n, elem int) int {
	chunks := n / rowVecWidth(n, elem)
	if chunks <= 32*8 {
		return 32
	}
	return min(((chunks+3)/4+31)/32*32, 1024)
}

// shortGridThreads is ShortGridThreads: on a short grid, a vector a thread, at
// most 256 threads, never fewer than threadsPerRow.
func shortGridThreads(n, elem int) int {
	chunks := n / rowVecWidth(n, elem)
	return max(min((chunks+31)/32*32, 256), threadsPerRow(n, elem))
}

// rowSum is RowSum over threads threads in float: each thread's own sum of f over
// its vectors (vector t, t + threads, ... of vec elements), a warp's by the xor
// butterfly of WarpSum, and for a block the warps' sums through the same butterfly.
func rowSum(row []float64, threads, vec int, f func(float64) float64) float64 {
	part := make([]float64, threads)
	chunks := len(row) / vec
	for t := range part {
		for ch := t; ch < chunks; ch += threads {
			for j := 0; j < vec; j++ {
				part[t] = f32(part[t] + f(row[ch*vec+j]))
			}
		}
	}
	warpSum := func(v []float64) float64 {
		lanes := append([]float64{}, v...)
		for off := 16; off > 0; off /= 2 {
			next := make([]float64, 32)
			for l := range next {
				next[l] = f32(lanes[l] + lanes[l^off])
			}
			lanes = next
		}
		return lanes[0]
	}
	warps := make([]float64, 32)
	for w := 0; w < threads/32; w++ {
		warps[w] = warpSum(part[32*w : 32*w+32])
	}
	if threads == 32 {
		return warps[0]
	}
	return warpSum(warps)
}

// layerNormRows is the row routine of qcc/layernorm.cuh in float with threads
// threads to a row: the mean of the row (0 uncentred), then the mean of the
// squared deviations, each a rowSum divided by the length; rstd = 1 / sqrt(var +
// eps); y = (x - mean) * rstd * gamma + beta.
func layerNormRows(x []float64, h int, eps float64, gamma, beta []float64, centred bool, threads, vec int) []float64 {
	out := make([]float64, len(x))
	for r := 0; r < len(x)/h; r++ {
		row := x[r*h : (r+1)*h]
		mean := 0.0
		if centred {
			mean = f32(rowSum(row, threads, vec, func(v float64) float64 { return v }) / float64(h))
		}
		sq := rowSum(row, threads, vec, func(v float64) float64 { d := f32(v - mean); return f32(d * d) })
		rstd := f32(1 / math.Sqrt(f32(f32(sq/float64(h))+eps)))
		for i, v := range row {
			y := f32(f32(f32(v-mean)*rstd) * gamma[i])
			if beta != nil {
				y = f32(y + beta[i])
			}
			out[r*h+i] = y
		}
	}
	return out
}

// layerNorm normalises rows of h: centred, (x - mean) / sqrt(var + eps); else (RMSNorm)
// x / sqrt(mean(x^2) + eps).
func layerNorm(x []float64, h int, eps float64, gamma, beta []float64, centred bool) []float64 {
	out := make([]float64, len(x))
	for r := 0; r < len(x)/h; r++ {
		row := x[r*h : (r+1)*h]
		mean, vr := 0.0, 0.0
		if centred {
			for _, v := range row {
				mean += v
			}
			mean /= float64(h)
		}
		for _, v := range row {
			vr += (v - mean) * (v - mean)
		}
		rstd := 1 / math.Sqrt(vr/float64(h)+eps)
		for i, v := range row {
			y := (v - mean) * rstd * gamma[i]
			if beta != nil {
				y += beta[i]
			}
			out[r*h+i] = y
		}
	}
	return out
}

func decode(dt ir.DataType, b []byte) []float64 {
	switch dt {
	case ir.Int32:
		out := make([]float64, len(b)/4)
		for i := range out {
			out[i] = float64(int32(binary.LittleEndian.Uint32(b[4*i:])))
		}
		return out
	case ir.Int8:
		out := make([]float64, len(b))
		for i := range out {
			out[i] = float64(int8(b[i]))
		}
		return out
	}
	out := make([]float64, len(b)/4)
	for i := range out {
		out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return out
}

func abs(x float64) float64 { return math.Abs(x) }

// qdqSpec is a QuantizeKernel specialisation (qcc/quantize.cuh): its Spec and whether
// it quantizes (else it dequantizes).
type qdqSpec struct {
	perChannel, hasZP, quant bool
	channels, inner          int
}

func qdqSpecOf(in *instance, c func(string) float64) qdqSpec {
	return qdqSpec{perChannel: c("kPerChannel") == 1, hasZP: c("kHasZeroPoint") == 1, quant: in.Kernel.Launcher == "qcc::QuantizeLinear",
		channels: int(c("kChannels")), inner: int(c("kInner"))}
}

// elemBytes is sizeof(T) of an element type.
func elemBytes(e int) int {
	if e == elemFloat {
		return 4
	}
	return 2
}

// vecWidth is VecWidth<T>(n) (qcc/common.cuh): the largest power of two of T's
// elements within 16 bytes that divides n.
func vecWidth(tBytes, n int) int {
	w := 16 / tBytes
	for w > 1 && n%w != 0 {
		w /= 2
	}
	return w
}

// vec is QuantVec<T, Spec>.
func (q qdqSpec) vec(tBytes int) int {
	if q.perChannel {
		return vecWidth(tBytes, q.channels*q.inner)
	}
	return vecWidth(tBytes, 16)
}

// quantChannel is QuantChannel<Spec>(i).
func (q qdqSpec) quantChannel(i int) int {
	if !q.perChannel {
		return 0
	}
	return (i / q.inner) % q.channels
}

// channel is the channel of element j of the vector of v elements at i0, as
// QuantizeKernel finds it: ch0 = QuantChannel(i0) once per vector, then ch0 for every
// element when v divides kInner, ch0 + j when kInner is 1, else QuantChannel(i0 + j).
func (q qdqSpec) channel(i0, j, v int) int {
	ch0 := q.quantChannel(i0)
	switch {
	case q.inner%v == 0:
		return ch0
	case q.inner == 1:
		return ch0 + j
	}
	return q.quantChannel(i0 + j)
}

// run is QuantizeKernel's loop (every thread's chunks together, in order): the n / V
// whole vectors of V = QuantVec elements at multiples of V, then the elements past the
// last whole vector one by one (a vector of one), each element with the scale and zero
// point of the channel channel(i0, j, V) gives it. T is tBytes wide (4 float, 2 half):
// it sets V. The arithmetic is the kernel's, in float: quantize rint(x / scale) + zero
// point saturated to [-128, 127], dequantize (x - zero point) * scale.
func (q qdqSpec) run(a map[string][]float64, tBytes int, channel func(i0, j, v int) int) []float64 {
	x, scale, zp := a["x"], a["scale"], a["zero_point"]
	n, v := len(x), q.vec(tBytes)
	chunks := n / v
	out := make([]float64, n)
	for c := 0; c < chunks+(n-chunks*v); c++ {
		whole := c < chunks
		i0, count := chunks*v+(c-chunks), 1
		if whole {
			i0, count = c*v, v
		}
		for j := 0; j < count; j++ {
			s, z := scale[0], 0.0
			if q.hasZP {
				z = zp[0]
			}
			if q.perChannel {
				ch := channel(i0, j, v)
				s = scale[ch]
				if q.hasZP {
					z = zp[ch]
				}
			}
			if q.quant {
				out[i0+j] = math.Max(-128, math.Min(127, math.RoundToEven(f32(x[i0+j]/s))+z))
			} else {
				out[i0+j] = f32((x[i0+j] - z) * s)
			}
		}
	}
	return out
}
