package shape

import "github.com/qcc-dev/qcc/ir"

// The fused attention and rotary operators fuse emits: ONNX Attention-23,
// RotaryEmbedding-23 and RMSNormalization-23, and ONNX Runtime's GroupQueryAttention and
// RotaryEmbedding (ContribOperators.md).

// attention23: Q [B, Hq, S, D] and K, V [B, Hkv, L, D|Dv] give Y [B, Hq, S, Dv]; the 3-D
// forms Q [B, S, Hq*D], K, V [B, L, Hkv*D|Hkv*Dv] (heads from q_num_heads and
// kv_num_heads) give Y [B, S, Hq*Dv]. present_key and present_value are
// [B, Hkv, past + L, D|Dv], qk_matmul_output [B, Hq, S, past + L].
func attention23(c *nctx) error {
	dt := c.dtype(0)
	q, okQ := c.shape(0)
	if !okQ {
		for i := range c.nout() {
			c.set(i, dt, nil, false)
		}
		return nil
	}
	if len(q) != 3 && len(q) != 4 {
		return errf("Q has rank %d, want 3 or 4", len(q))
	}
	qh, kvh := c.attrInt("q_num_heads", 0), c.attrInt("kv_num_heads", 0)
	// heads, sequence and head size of Q, K and V in the 4-D layout.
	split := func(s ir.Shape, ok bool, heads int64) (h, seq, d ir.Dim) {
		switch {
		case !ok:
			return unknownDim(), unknownDim(), unknownDim()
		case len(s) == 4:
			return s[1], s[2], s[3]
		case len(s) == 3 && heads > 0:
			return ir.D(heads), s[1], divDims(s[2], ir.D(heads))
		case len(s) == 3:
			return unknownDim(), s[1], unknownDim()
		}
		return unknownDim(), unknownDim(), unknownDim()
	}
	k, okK := c.shape(1)
	v, okV := c.shape(2)
	qHeads, qSeq, _ := split(q, true, qh)
	kvHeads, kvSeq, kd := split(k, okK, kvh)
	_, _, vd := split(v, okV, kvh)
	if len(q) == 4 {
		c.set(0, dt, ir.Shape{q[0], qHeads, qSeq, vd}, true)
	} else {
		c.set(0, dt, ir.Shape{q[0], qSeq, mulDims(qHeads, vd)}, true)
	}
	total := kvSeq
	if past, ok := c.shape(4); ok && len(past) == 4 {
		total = addDims(past[2], kvSeq)
	}
	c.set(1, dt, ir.Shape{q[0], kvHeads, total, kd}, true)
	c.set(2, dt, ir.Shape{q[0], kvHeads, total, vd}, true)
	c.set(3, dt, ir.Shape{q[0], qHeads, qSeq, total}, true)
	return nil
}

// groupQueryAttention: query [B, S, Hq*D] (or packed [B, S, (Hq + 2*Hkv)*D] without key
// and value) gives output [B, S, Hq*D]; present_key and present_value are
// [B, Hkv, ?, D] (the cache buffer's length, which the op may share with past).
func groupQueryAttention(c *nctx) error {
	dt := c.dtype(0)
	q, ok := c.shape(0)
	if !ok || len(q) != 3 {
		if ok {
			return errf("query has rank %d, want 3", len(q))
		}
		c.set(0, dt, nil, false)
		return nil
	}
	nh, kvh := c.attrInt("num_heads", 0), c.attrInt("kv_num_heads", 0)
	head := unknownDim()
	switch k, okK := c.shape(1); {
	case okK && len(k) == 3 && kvh > 0:
		head = divDims(k[2], ir.D(kvh))
	case !c.has(1) && nh > 0 && kvh > 0:
		head = divDims(q[2], ir.D(nh+2*kvh))
	}
	hidden := unknownDim()
	if nh > 0 {
		hidden = mulDims(ir.D(nh), head)
	}
	c.set(0, dt, ir.Shape{q[0], q[1], hidden}, true)
	c.set(1, dt, ir.Shape{q[0], dimOrUnknown(kvh), unknownDim(), head}, true)
	c.set(2, dt, ir.Shape{q[0], dimOrUnknown(kvh), unknownDim(), head}, true)
	return nil
}
