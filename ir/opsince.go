package ir

// introduced lists, per default-domain opset, the operators it added (ONNX's operator
// changelog). A node whose operator the model's opset does not have yet is invalid: a
// lowering must spell what it emits at the model's opset, or raise it.
var introduced = map[int64][]string{
	7: {"Acos", "Asin", "Atan", "Cos", "Multinomial", "Sin", "Tan"},
	8: {"Expand", "Scan"},
	9: {"Acosh", "Asinh", "Atanh", "Compress", "ConstantOfShape", "Cosh", "Erf", "EyeLike", "IsNaN",
		"MaxUnpool", "MeanVarianceNormalization", "NonZero", "OneHot", "Scatter", "Shrink", "Sign",
		"Sinh", "TfIdfVectorizer", "Where"},
	10: {"ConvInteger", "DequantizeLinear", "IsInf", "MatMulInteger", "Mod", "NonMaxSuppression",
		"QLinearConv", "QLinearMatMul", "QuantizeLinear", "Resize", "ReverseSequence", "RoiAlign",
		"StringNormalizer", "ThresholdedRelu"},
	11: {"BitShift", "ConcatFromSequence", "CumSum", "Det", "DynamicQuantizeLinear", "GatherElements",
		"GatherND", "Range", "Round", "ScatterElements", "ScatterND", "SequenceAt", "SequenceConstruct",
		"SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SplitToSequence", "Unique"},
	12: {"Celu", "Einsum", "GreaterOrEqual", "LessOrEqual", "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"},
	14: {"HardSwish", "Trilu"},
	15: {"Bernoulli", "CastLike", "Optional", "OptionalGetElement", "OptionalHasElement"},
	16: {"GridSample"},
	// LayerNormalization came with 17, but ONNX Runtime has registered its own in the
	// default domain since opset 1, and models for it use it at any opset: not listed.
	17: {"BlackmanWindow", "DFT", "HammingWindow", "HannWindow", "MelWeightMatrix", "STFT", "SequenceMap"},
	18: {"BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "CenterCropPad", "Col2Im",
		"GroupNormalization", "Mish"},
	19: {"DeformConv"},
	20: {"AffineGrid", "Gelu", "ImageDecoder", "RegexFullMatch", "StringConcat", "StringSplit"},
	23: {"Attention", "RMSNormalization", "RotaryEmbedding"},
}

var introducedAt = func() map[string]int64 {
	at := map[string]int64{}
	for v, ops := range introduced {
		for _, op := range ops {
			at[op] = v
		}
	}
	return at
}()

// OpIntroduced is the default-domain opset that added op: 1 for the first operators and
// for those it does not list.
func OpIntroduced(op string) int64 {
	if v, ok := introducedAt[op]; ok {
		return v
	}
	return 1
}
