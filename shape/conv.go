package shape

import (
	"github.com/qcc-dev/qcc/ir"
)

// Convolution and pooling over [N, C, spatial...] inputs. Each spatial dim follows the
// operator's formula (ONNX Conv, ConvTranspose, MaxPool, AveragePool): known sizes give
// numbers; a symbolic size d gives floor((d + pads - span) / stride) + 1 written with
// floorDiv (d itself where the padding compensates the window at stride 1,
// floor(height/16) for a ViT's patch grid), and is unknown where it cannot be written so.

// window is what the spatial formula needs for one node.
type window struct {
	kernel, strides, dilations []int64
	pads                       []int64 // begin..., end...
	autoPad                    string
	ceil                       bool
}

// readWindow reads the attributes of a conv or pool over n spatial dims; kernel comes
// from the attribute or, when absent, from the weight's trailing dims.
func readWindow(c *nctx, n int, kernelFromWeight ir.Shape) (window, error) {
	w := window{autoPad: c.n.AttrString("auto_pad", "NOTSET"), ceil: c.attrInt("ceil_mode", 0) != 0}
	if k, ok := c.n.AttrInts("kernel_shape"); ok {
		w.kernel = k
	} else if kw, ok := kernelFromWeight.Ints(); ok && kernelFromWeight != nil {
		w.kernel = kw
	}
	if w.kernel != nil && len(w.kernel) != n {
		return w, errf("kernel_shape %v for %d spatial dims", w.kernel, n)
	}
	w.strides = attrOr(c, "strides", n, 1)
	w.dilations = attrOr(c, "dilations", n, 1)
	w.pads = attrOr(c, "pads", 2*n, 0)
	if len(w.strides) != n || len(w.dilations) != n || len(w.pads) != 2*n {
		return w, errf("strides %v, dilations %v, pads %v for %d spatial dims", w.strides, w.dilations, w.pads, n)
	}
	for i := range n {
		if w.strides[i] <= 0 || w.dilations[i] <= 0 {
			return w, errf("strides %v and dilations %v must be positive", w.strides, w.dilations)
		}
	}
	return w, nil
}

// attrOr is an INTS attribute, or n copies of def when absent.
func attrOr(c *nctx, name string, n int, def int64) []int64 {
	if a, ok := c.n.AttrInts(name); ok {
		return a
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = def
	}
	return out
}

// spatial is output dim i of a conv or pool over input dim d.
func (w window) spatial(i int, d ir.Dim) ir.Dim {
	if w.kernel == nil {
		return unknownDim()
	}
	s := w.strides[i]
	span := w.dilations[i]*(w.kernel[i]-1) + 1 // the window's extent
	total := w.pads[i] + w.pads[i+len(w.strides)]
	switch w.autoPad {
	case "SAME_UPPER", "SAME_LOWER":
		if d.Known {
			return ir.D(ceilDiv(d.Value, s))
		}
		if s == 1 {
			return d
		}
		return unknownDim()
	case "VALID":
		total = 0
	}
	if d.Known {
		num := d.Value + total - span
		if num < 0 {
			return ir.D(0)
		}
		if w.ceil {
			out := ceilDiv(num, s) + 1
			if (out-1)*s >= d.Value+w.pads[i] {
				out-- // the last window would start in the end padding: ONNX drops it
			}
			return ir.D(out)
		}
		return ir.D(num/s + 1)
	}
	// floor((d + pads - span) / stride) + 1, symbolically where it can be written.
	num := addDims(d, ir.D(total-span))
	if w.ceil && s != 1 {
		// ceil(n/s) = floor((n+s-1)/s). Without padding and with windows at least a stride
		// wide, no window starts past the input, so none is dropped (ONNX's ceil rule).
		if total != 0 || span < s {
			return unknownDim()
		}
		num = addDims(num, ir.D(s-1))
	}
	return addDims(floorDiv(num, s), ir.D(1))
}

func ceilDiv(a, b int64) int64 {
	if a <= 0 {
		return 0
	}
	return (a + b - 1) / b
}

// conv: X [N, C, D...], W [M, C/group, k...] -> [N, M, out...].
func conv(c *nctx) error { return convLike(c, 0, 1, firstDType(c)) }

// convLike types a Conv-shaped op with input x and weight at the given indices.
func convLike(c *nctx, x, weight int, dt ir.DataType) error {
	in, ok := c.shape(x)
	if !ok {
		if r := c.rank(weight); r >= 3 {
			c.set(0, dt, unknownDims(r), true)
		} else {
			c.set(0, dt, nil, false)
		}
		return nil
	}
	if len(in) < 3 {
		return errf("input has rank %d, want [N, C, spatial...]", len(in))
	}
	n := len(in) - 2
	out := make(ir.Shape, len(in))
	out[0], out[1] = in[0], unknownDim()
	var kw ir.Shape
	if w, ok := c.shape(weight); ok {
		if len(w) != len(in) {
			return errf("weight has rank %d for an input of rank %d", len(w), len(in))
		}
		out[1] = w[0]
		kw = w[2:]
		group := c.attrInt("group", 1)
		if w[1].Known && in[1].Known && w[1].Value*group != in[1].Value {
			return errf("weight %s with group %d for %d input channels", w, group, in[1].Value)
		}
	}
	win, err := readWindow(c, n, kw)
	if err != nil {
		return err
	}
	for i := range n {
		out[2+i] = win.spatial(i, in[2+i])
	}
	c.set(0, dt, out, true)
	return nil
}

// convTranspose: X [N, C, D...], W [C, M/group, k...] -> [N, M, out...], with
// out = stride*(d-1) + output_padding + span - pads, or the output_shape attribute.
func convTranspose(c *nctx) error {
	dt := firstDType(c)
	in, ok := c.shape(0)
	if !ok || len(in) < 3 {
		if ok {
			return errf("input has rank %d, want [N, C, spatial...]", len(in))
		}
		c.set(0, dt, nil, false)
		return nil
	}
	n := len(in) - 2
	out := make(ir.Shape, len(in))
	out[0], out[1] = in[0], unknownDim()
	var kw ir.Shape
	if w, ok := c.shape(1); ok && len(w) == len(in) {
		out[1] = mulDims(w[1], ir.D(c.attrInt("group", 1)))
		kw = w[2:]
	}
	win, err := readWindow(c, n, kw)
	if err != nil {
		return err
	}
	if shape, ok := c.n.AttrInts("output_shape"); ok && len(shape) == n {
		for i := range n {
			out[2+i] = ir.D(shape[i])
		}
		c.set(0, dt, out, true)
		return nil
	}
	outPad := attrOr(c, "output_padding", n, 0)
	for i := range n {
		d := in[2+i]
		if !d.Known || win.kernel == nil || len(outPad) != n {
			out[2+i] = unknownDim()
			continue
		}
		s := win.strides[i]
		span := win.dilations[i]*(win.kernel[i]-1) + 1
		switch win.autoPad {
		case "SAME_UPPER", "SAME_LOWER":
			out[2+i] = ir.D(d.Value * s)
		default:
			out[2+i] = ir.D(s*(d.Value-1) + outPad[i] + span - win.pads[i] - win.pads[i+n])
		}
	}
	c.set(0, dt, out, true)
	return nil
}

// pool: X [N, C, D...] -> [N, C, out...]; MaxPool's optional second output (indices)
// has the same shape.
func pool(c *nctx) error {
	dt, in, err := spatialInput(c)
	if in == nil || err != nil {
		return err
	}
	n := len(in) - 2
	win, err := readWindow(c, n, nil)
	if err != nil {
		return err
	}
	out := cloneShape(in)
	for i := range n {
		out[2+i] = win.spatial(i, in[2+i])
	}
	c.set(0, dt, out, true)
	c.set(1, ir.Int64, out, true)
	return nil
}

// globalPool: X [N, C, D...] -> [N, C, 1...].
func globalPool(c *nctx) error {
	dt, in, err := spatialInput(c)
	if in == nil || err != nil {
		return err
	}
	out := cloneShape(in)
	for i := 2; i < len(out); i++ {
		out[i] = ir.D(1)
	}
	c.set(0, dt, out, true)
	return nil
}

// spatialInput reads a pooling input [N, C, spatial...]: nil (the output left untyped)
// when its shape is unknown, an error when its rank is below 3.
func spatialInput(c *nctx) (ir.DataType, ir.Shape, error) {
	dt := c.dtype(0)
	in, ok := c.shape(0)
	if !ok {
		c.set(0, dt, nil, false)
		return dt, nil, nil
	}
	if len(in) < 3 {
		return dt, nil, errf("input has rank %d, want [N, C, spatial...]", len(in))
	}
	return dt, in, nil
}
