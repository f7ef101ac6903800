package transformer

// Role names. A block's Roles map holds values under these names; fuse, qdq and codegen
// read them by name, so each kind declares the set it fills (KindRoles).
const (
	RoleInput  = "input"  // the value the block reads (after any bias it folds in)
	RoleOutput = "output" // the block's result

	// Normalisations.
	RoleGamma      = "gamma"       // per-channel scale
	RoleBeta       = "beta"        // per-channel shift
	RoleBias       = "bias"        // a sublayer's bias folded into the block
	RoleSkip       = "skip"        // the residual stream a skip block adds to input
	RoleSum        = "sum"         // input + skip (+ bias), when something else reads it
	RoleLayerScale = "layer_scale" // a per-channel Mul on the sublayer output before the residual

	// Feed-forward sublayers.
	RoleUpWeight   = "up_weight"   // x·W_up (the packed gate/up weight when packed)
	RoleUpBias     = "up_bias"     //
	RoleGateWeight = "gate_weight" // act(x·W_gate) in a gated FFN
	RoleGateBias   = "gate_bias"   //
	RoleDownWeight = "down_weight" // the projection back to the model width
	RoleDownBias   = "down_bias"   //
	RoleHidden     = "hidden"      // act(up), or act(gate)·up: what the down projection multiplies, or normalises first
	RoleHiddenNorm = "hidden_norm" // the hidden normalised before the down projection (Sub-LN)

	// Attention recognised from its math (GeneralAttentionFamily).
	RoleQuery         = "query"          // Q as the fused operator reads it, [B,S,N·D]
	RoleKey           = "key"            // K, [B,T,N·D] (or the K/V heads before a repeat)
	RoleValue         = "value"          // V, [B,T,N·Dv]
	RoleScores        = "scores"         // Q·Kᵀ (decomposed form)
	RoleProbs         = "probs"          // the softmax output (decomposed form)
	RoleContext       = "context"        // probs·V (decomposed form)
	RoleAttentionBias = "attention_bias" // Σ score terms (fused form)
)

// GeneralAttentionRoles are the roles of GeneralAttentionFamily's blocks, decomposed or
// fused; the projection roles (q_matmul, q_weight, q_bias and the same for k, v, with the
// input they read) are filled when a MatMul or Gemm on a constant weight computes Q, K, V.
var GeneralAttentionRoles = RoleSet{
	Required: []string{RoleQuery, RoleKey, RoleValue, RoleOutput},
	Optional: []string{RoleScores, RoleProbs, RoleContext, RoleAttentionBias, RoleInput,
		"q_matmul", "q_weight", "q_bias", "k_matmul", "k_weight", "k_bias", "v_matmul", "v_weight", "v_bias"},
}

// RoleSet is what a block kind promises: every block of the kind fills each Required role,
// and fills no role outside Required and Optional.
type RoleSet struct {
	Required []string
	Optional []string
}

// Declares reports whether r is one of the set's roles.
func (s RoleSet) Declares(r string) bool {
	for _, l := range [][]string{s.Required, s.Optional} {
		for _, x := range l {
			if x == r {
				return true
			}
		}
	}
	return false
}

// KindRoles declares the roles of the block kinds.
var KindRoles = map[Kind]RoleSet{
	LayerNorm:     {Required: []string{RoleInput, RoleOutput}, Optional: []string{RoleGamma, RoleBeta}},
	RMSNorm:       {Required: []string{RoleInput, RoleOutput}, Optional: []string{RoleGamma}},
	AffineNorm:    {Required: []string{RoleInput, RoleOutput, RoleGamma, RoleBeta}},
	SkipLayerNorm: {Required: []string{RoleInput, RoleSkip, RoleGamma, RoleOutput}, Optional: []string{RoleBeta, RoleBias, RoleSum, RoleLayerScale}},
	SkipRMSNorm:   {Required: []string{RoleInput, RoleSkip, RoleGamma, RoleOutput}, Optional: []string{RoleBias, RoleSum, RoleLayerScale}},
	Gelu:          {Required: []string{RoleInput, RoleOutput}, Optional: []string{RoleBias}},
	FFN: {
		Required: []string{RoleInput, RoleOutput, RoleUpWeight, RoleDownWeight, RoleHidden},
		Optional: []string{RoleUpBias, RoleGateWeight, RoleGateBias, RoleDownBias, RoleHiddenNorm},
	},
}
