package cuda

import (
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

// emulate runs an instance's kernel specialisation in Go on the kernel's inputs (by
// parameter, as check.cu uploads them) and returns its outputs by parameter. It is
// written from the kernels' specification in cuda_kernels/qcc: the Spec constants of
// the instance's kernel, the layouts and strides the launcher reads, the mask
// predicate and filter, clamps and fills. Arithmetic is float64 with the values the
// kernel keeps in float rounded to float32. It is a test oracle: it shares nothing
// with ONNX Runtime, which computes the expected outputs from the model's subgraph.
func emulate(t *testing.T, in *instance, a map[string][]float64) map[string][]float64 {
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
		out := layerNorm(x, h, f32(c("kEpsilon")), a["gamma"], beta, c("kCentred") == 1)
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
		return map[string][]float64{"output": emulateAttention(in, c, a)}
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
		ch, inner := int(c("kChannels")), int(c("kInner"))
		out := make([]float64, len(a["x"]))
		for i, x := range a["x"] {
			cc := 0
			if c("kPerChannel") == 1 {
				cc = (i / inner) % ch
			}
			scale, zp := a["scale"][cc], 0.0
			if c("kHasZeroPoint") == 1 {
				zp = a["zero_point"][cc]
			}
			if k.Launcher == "qcc::QuantizeLinear" {
				out[i] = math.Max(-128, math.Min(127, math.RoundToEven(f32(x/scale))+zp))
			} else {
				out[i] = f32((x - zp) * scale)
			}
		}
		return map[string][]float64{"y": out}
	}
	t.Fatalf("no emulation of %s", k.Launcher)
	return nil
}

func f32(x float64) float64 { return float64(float32(x)) }

// emulateAttention follows qcc/attention.cuh: the launch check.cu makes (a packed
// kernel gets one [rows, 3 * hidden] buffer with k and v at offsets hidden and
// 2 * hidden), the row strides kLd and kKvLd or the [batch, kv_heads, kv_seq, d]
// layout over kv_seq keys, the key/value head shared by kHeads / kKvHeads query heads, causal keys
// excluded, kMaskFilter added to keys whose mask is <= 0, the bias (broadcast over
// the axes whose kBiasBatch, kBiasHeads, kBiasRows is false), a softmax whose
// row with no admissible key is 0 (kEmptyRowZero: every score <= the lowest float)
// or what IEEE arithmetic gives (kEmptyRowNaN: NaN for a row of -inf), and the row
// scale.
func emulateAttention(in *instance, c func(string) float64, a map[string][]float64) []float64 {
	heads, d := int(c("kHeads")), int(c("kHeadSize"))
	kvHeads, ld, kvLd := int(c("kKvHeads")), int(c("kLd")), int(c("kKvLd"))
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
	kvIndex := func(bi, j, kvh, e int) int {
		if bnsh {
			return ((bi*kvHeads+kvh)*kvS+j)*d + e
		}
		return (bi*kvS+j)*kvLd + kvh*d + e
	}
	// A read past the end of a buffer is a launch that faults (or reads garbage):
	// no output.
	if need := kvIndex(b-1, kvS-1, kvHeads-1, d-1) + 1; vOff+need > len(v) || kOff+need > len(kk) || (b*s-1)*ld+hid > len(q) {
		return nil
	}
	if biasOn && biasRow(b-1, heads-1, s-1)+kvS > len(a["bias"]) {
		return nil
	}
	out := make([]float64, b*s*hid)
	p := make([]float64, kvS)
	for bi := 0; bi < b; bi++ {
		for h := 0; h < heads; h++ {
			kvh := h / (heads / kvHeads)
			for i := 0; i < s; i++ {
				m := math.Inf(-1)
				for j := 0; j < kvS; j++ {
					if causal && j > i {
						p[j] = math.Inf(-1)
						continue
					}
					dot := 0.0
					for e := 0; e < d; e++ {
						dot += f32(q[qOff+(bi*s+i)*ld+h*d+e]*scale) * kk[kOff+kvIndex(bi, j, kvh, e)]
					}
					sc := f32(dot)
					if biasOn {
						sc = f32(sc + a["bias"][biasRow(bi, h, i)+j])
					}
					if maskOn && a["mask"][bi*kvS+j] <= 0 {
						sc = f32(sc + filter)
					}
					p[j] = sc
					m = math.Max(m, sc)
				}
				if c("kEmptyRow") == 1 && m <= -math.MaxFloat32 {
					for e := 0; e < d; e++ {
						out[(bi*s+i)*hid+h*d+e] = 0
					}
					continue
				}
				sum := 0.0
				for j := range p {
					p[j] = math.Exp(p[j] - m)
					sum += p[j]
				}
				inv := 0.0
				if sum > 0 {
					inv = 1 / sum
				}
				rs := 1.0
				if rowOn {
					rs = a["row_scale"][bi*s+i]
				}
				for e := 0; e < d; e++ {
					o := 0.0
					for j := 0; j < kvS; j++ {
						if p[j] != 0 {
							o += p[j] * inv * v[vOff+kvIndex(bi, j, kvh, e)]
						}
					}
					out[(bi*s+i)*hid+h*d+e] = o * rs
				}
			}
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
