package shape

import (
	"github.com/qcc-dev/qcc/ir"
)

// Control flow: the rules type the bodies first (after giving their inputs types), then
// derive the node's outputs from the bodies' outputs.

func attrGraph(n *ir.Node, name string) *ir.Graph {
	if a := n.Attr(name); a != nil {
		return a.Graph
	}
	return nil
}

// typeInput gives a body input a type, keeping a more precise declared one.
func (c *nctx) typeInput(v *ir.Value, t *ir.Type) error {
	m, err := merge(v.Type, t)
	if err != nil {
		return errf("body input %q: %v", v.Name, err)
	}
	v.Type = m
	return nil
}

// typeCounter types a Loop body's iteration number or condition: a scalar, or the
// one-element [1] the body declares (torch declares the iteration number so, and ONNX
// Runtime feeds the rank the body declares).
func (c *nctx) typeCounter(v *ir.Value, dt ir.DataType) error {
	if t := v.Type; isTensor(t) && t.HasShape && len(t.Shape) == 1 && t.Shape[0].Known && t.Shape[0].Value == 1 {
		return c.typeInput(v, ir.TensorOf(dt, ir.D(1)))
	}
	return c.typeInput(v, ir.TensorOf(dt))
}

// joinTypes is the type of a value that is either a or b: dims that differ become
// unknown, ranks that differ make the rank unknown.
func joinTypes(a, b *ir.Type) (*ir.Type, error) {
	switch {
	case a == nil && b == nil:
		return nil, nil
	case a == nil || b == nil:
		t := a
		if t == nil {
			t = b
		}
		if !isTensor(t) {
			return nil, nil
		}
		return &ir.Type{Kind: t.Kind, DType: t.DType}, nil
	case !isTensor(a) || !isTensor(b):
		if a.Equal(b) {
			return a.Clone(), nil
		}
		return nil, nil
	}
	t := &ir.Type{Kind: a.Kind, DType: a.DType}
	if a.DType == ir.Undefined {
		t.DType = b.DType
	} else if b.DType != ir.Undefined && a.DType != b.DType {
		return nil, errf("branches give %s and %s", a.DType, b.DType)
	}
	if a.HasShape && b.HasShape && len(a.Shape) == len(b.Shape) {
		t.HasShape, t.Shape = true, make(ir.Shape, len(a.Shape))
		for i, d := range a.Shape {
			if sameDim(d, b.Shape[i]) {
				t.Shape[i] = d
			}
		}
	}
	return t, nil
}

func outputType(g *ir.Graph, i int) *ir.Type {
	if i < len(g.Outputs) && g.Outputs[i] != nil {
		return g.Outputs[i].Type
	}
	return nil
}

func ifRule(c *nctx) error {
	then, els := attrGraph(c.n, "then_branch"), attrGraph(c.n, "else_branch")
	if then == nil || els == nil {
		return errf("missing then_branch or else_branch")
	}
	c.e.subgraph(then)
	c.e.subgraph(els)
	if len(then.Outputs) != c.nout() || len(els.Outputs) != c.nout() {
		return errf("branches have %d and %d outputs for %d node outputs", len(then.Outputs), len(els.Outputs), c.nout())
	}
	// A condition known at compile time selects its branch's types exactly.
	if v, ok := c.ints(0); ok && len(v) == 1 {
		g := els
		if v[0] != 0 {
			g = then
		}
		for i := range c.nout() {
			c.setType(i, outputType(g, i))
		}
		return nil
	}
	for i := range c.nout() {
		t, err := joinTypes(outputType(then, i), outputType(els, i))
		if err != nil {
			return errf("output %d: %v", i, err)
		}
		c.setType(i, t)
	}
	return nil
}

// loopRule: inputs (M, cond, v_initial...), body (iter, cond, v...) -> (cond, v..., scan...),
// outputs (v_final..., scan_outputs...).
func loopRule(c *nctx) error {
	body := attrGraph(c.n, "body")
	if body == nil {
		return errf("missing body")
	}
	nCarried := c.nin() - 2
	if nCarried < 0 || len(body.Inputs) != 2+nCarried {
		return errf("body has %d inputs for %d loop-carried values", len(body.Inputs), max(nCarried, 0))
	}
	if err := c.typeCounter(body.Inputs[0], ir.Int64); err != nil {
		return err
	}
	if err := c.typeCounter(body.Inputs[1], ir.Bool); err != nil {
		return err
	}
	for i := range nCarried {
		// Loop-carried values may change shape from one iteration to the next.
		if t := c.typ(2 + i); isTensor(t) {
			if err := c.typeInput(body.Inputs[2+i], &ir.Type{Kind: t.Kind, DType: t.DType}); err != nil {
				return err
			}
		}
	}
	c.e.subgraph(body)
	if len(body.Outputs) < 1+nCarried {
		return errf("body has %d outputs for %d loop-carried values", len(body.Outputs), nCarried)
	}
	for i := range nCarried {
		t, err := joinTypes(c.typ(2+i), outputType(body, 1+i))
		if err != nil {
			return errf("loop-carried value %d: %v", i, err)
		}
		c.setType(i, t)
	}
	trip := unknownDim()
	if m, ok := c.ints(0); ok && len(m) == 1 && !c.has(1) {
		trip = ir.D(m[0])
	}
	for k := nCarried; k < c.nout(); k++ {
		t := outputType(body, 1+k)
		if !isTensor(t) {
			continue
		}
		if !t.HasShape {
			c.set(k, t.DType, nil, false)
			continue
		}
		c.set(k, t.DType, append(ir.Shape{trip}, t.Shape...), true)
	}
	return nil
}

// scanRule (opset 9 and later): inputs (state..., scan_inputs...), body (state...,
// slices...) -> (state..., scan_output_elements...).
func scanRule(c *nctx) error {
	if c.opset < 9 {
		return nil // Scan-8 has a batch axis and sequence lengths; not typed
	}
	body := attrGraph(c.n, "body")
	if body == nil {
		return errf("missing body")
	}
	m := int(c.attrInt("num_scan_inputs", 0))
	nState := c.nin() - m
	if m <= 0 || nState < 0 || len(body.Inputs) != c.nin() {
		return errf("body has %d inputs for %d node inputs with %d scan inputs", len(body.Inputs), c.nin(), m)
	}
	inAxes, _ := c.n.AttrInts("scan_input_axes")
	seqLen := unknownDim()
	for i := range c.nin() {
		t := c.typ(i)
		if !isTensor(t) {
			continue
		}
		bt := &ir.Type{Kind: t.Kind, DType: t.DType}
		if s, ok := c.shape(i); ok {
			if i < nState {
				bt.Shape, bt.HasShape = s, true
			} else {
				var axis int64
				if k := i - nState; k < len(inAxes) {
					axis = inAxes[k]
				}
				ax, err := normAxis(axis, len(s))
				if err != nil {
					return errf("scan input %d: %v", i-nState, err)
				}
				if i == nState {
					seqLen = s[ax]
				}
				bt.Shape, bt.HasShape = append(cloneShape(s[:ax]), s[ax+1:]...), true
			}
		}
		if err := c.typeInput(body.Inputs[i], bt); err != nil {
			return err
		}
	}
	c.e.subgraph(body)
	for i := range nState {
		t, err := joinTypes(c.typ(i), outputType(body, i))
		if err != nil {
			return errf("state %d: %v", i, err)
		}
		c.setType(i, t)
	}
	outAxes, _ := c.n.AttrInts("scan_output_axes")
	for k := nState; k < c.nout(); k++ {
		t := outputType(body, k)
		if !isTensor(t) {
			continue
		}
		if !t.HasShape {
			c.set(k, t.DType, nil, false)
			continue
		}
		var axis int64
		if j := k - nState; j < len(outAxes) {
			axis = outAxes[j]
		}
		ax, err := normAxis(axis, len(t.Shape)+1)
		if err != nil {
			return errf("scan output %d: %v", k-nState, err)
		}
		s := append(cloneShape(t.Shape[:ax]), seqLen)
		c.set(k, t.DType, append(s, t.Shape[ax:]...), true)
	}
	return nil
}
