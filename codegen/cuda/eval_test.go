package cuda

import (
	"encoding/binary"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/qcc-dev/qcc/ir"
)

// evaluate computes an instance's outputs in Go, in float64, from its inputs: the
// formula the kernel implements, written independently of ONNX Runtime. It returns the
// outputs by parameter.
func evaluate(t *testing.T, in *instance, a map[string][]float64) map[string][]float64 {
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
				case "qcc::kGeluErf", "qcc::kMaskNone":
					return 0
				case "qcc::kGeluTanh", "qcc::kMaskKeyPadding":
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
	f32 := func(x float64) float64 { return float64(float32(x)) }
	switch k.Launcher {
	case "qcc::LayerNorm", "qcc::SkipLayerNorm":
		h := int(c("kHidden"))
		x := append([]float64{}, a["input"]...)
		if k.Launcher == "qcc::SkipLayerNorm" {
			for i := range x {
				x[i] += a["skip"][i]
				if a["bias"] != nil {
					x[i] += a["bias"][i%h]
				}
				x[i] = f32(x[i])
			}
		}
		out := layerNorm(x, h, f32(c("kEpsilon")), a["gamma"], a["beta"])
		if k.Launcher == "qcc::SkipLayerNorm" && c("kHasSum") == 1 {
			return map[string][]float64{"output": out, "sum": x}
		}
		return map[string][]float64{"output": out}
	case "qcc::BiasGelu":
		n := int(c("kColumns"))
		approx, alpha := int(c("kApprox")), f32(c("kAlpha"))
		out := make([]float64, len(a["input"]))
		for i, x := range a["input"] {
			if a["bias"] != nil {
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
		heads, d := int(c("kHeads")), int(c("kHeadSize"))
		scale, filter := f32(c("kScale")), f32(c("kMaskFilter"))
		b, s := int(in.Dims[0].Value), int(in.Dims[1].Value)
		hid := heads * d
		q, kk, v, mask, bias := a["q"], a["k"], a["v"], a["mask"], a["bias"]
		out := make([]float64, b*s*hid)
		p := make([]float64, s)
		for bi := 0; bi < b; bi++ {
			for h := 0; h < heads; h++ {
				for i := 0; i < s; i++ {
					m := math.Inf(-1)
					for j := 0; j < s; j++ {
						dot := 0.0
						for e := 0; e < d; e++ {
							dot += q[(bi*s+i)*hid+h*d+e] * kk[(bi*s+j)*hid+h*d+e]
						}
						dot *= scale
						if bias != nil {
							dot += bias[((bi*heads+h)*s+i)*s+j]
						}
						if mask != nil && mask[bi*s+j] == 0 {
							dot += filter
						}
						p[j] = dot
						m = math.Max(m, dot)
					}
					sum := 0.0
					for j := range p {
						p[j] = math.Exp(p[j] - m)
						sum += p[j]
					}
					for e := 0; e < d; e++ {
						o := 0.0
						for j := 0; j < s; j++ {
							o += p[j] / sum * v[(bi*s+j)*hid+h*d+e]
						}
						out[(bi*s+i)*hid+h*d+e] = o
					}
				}
			}
		}
		return map[string][]float64{"output": out}
	case "qcc::EmbedLayerNorm":
		h := int(c("kHidden"))
		s := int(in.Dims[1].Value)
		ids := a["input_ids"]
		x := make([]float64, len(ids)*h)
		for tkn, id := range ids {
			pos := tkn % s
			if a["position_ids"] != nil {
				pos = int(a["position_ids"][tkn])
			}
			for e := 0; e < h; e++ {
				v := a["word_embedding"][int(id)*h+e] + a["position_embedding"][pos*h+e]
				if a["segment_ids"] != nil {
					v += a["segment_embedding"][int(a["segment_ids"][tkn])*h+e]
				}
				x[tkn*h+e] = f32(v)
			}
		}
		return map[string][]float64{"output": layerNorm(x, h, f32(c("kEpsilon")), a["gamma"], a["beta"])}
	case "qcc::QuantizeLinear", "qcc::DequantizeLinear":
		ch, inner := int(c("kChannels")), int(c("kInner"))
		out := make([]float64, len(a["x"]))
		for i, x := range a["x"] {
			cc := (i / inner) % ch
			scale, zp := a["scale"][cc], 0.0
			if a["zero_point"] != nil {
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
	t.Fatalf("no Go evaluation for %s", k.Launcher)
	return nil
}

func layerNorm(x []float64, h int, eps float64, gamma, beta []float64) []float64 {
	out := make([]float64, len(x))
	for r := 0; r < len(x)/h; r++ {
		row := x[r*h : (r+1)*h]
		mean, vr := 0.0, 0.0
		for _, v := range row {
			mean += v
		}
		mean /= float64(h)
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
