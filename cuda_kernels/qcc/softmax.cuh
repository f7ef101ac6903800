// qcc/softmax.cuh: softmax of a row held by one warp.
#pragma once

#include "common.cuh"

namespace qcc {

// kLowestFloat is -FLT_MAX: exporters' "masked" fill.
constexpr float kLowestFloat = -3.40282347e+38f;

// WarpSoftmax turns the n scores of a row into probabilities, in place. The
// row is spread over the warp: lane l holds s[k] = score[l + 32 * k] for
// k < K; entries at or past n are ignored and come back 0. The maximum is
// subtracted before exponentiating, so large scores do not overflow. A row
// with no admissible key comes back as the operator defines it: with
// ZeroEmpty, a row whose every score is <= the lowest float is all 0 (ONNX
// Attention-23 in ONNX Runtime); without, as IEEE arithmetic gives it (a row
// of -inf scores is NaN, as in ONNX Runtime's contrib operators and the
// unfused model; a row of lowest floats is uniform). A finite sink is one more
// logit of the row that gets no output (an attention sink, GPT-OSS): it joins the
// maximum and the normaliser.
template <int K, bool ZeroEmpty>
__device__ __forceinline__ void WarpSoftmax(float (&s)[K], int n, float sink = -INFINITY) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  float m = -INFINITY;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (lane + k * kWarpSize < n) {
      m = fmaxf(m, s[k]);
    }
  }
  m = fmaxf(WarpMax(m), sink);
  if (ZeroEmpty && m <= kLowestFloat) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      s[k] = 0.0f;
    }
    return;
  }
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const float e = lane + k * kWarpSize < n ? expf(s[k] - m) : 0.0f;
    s[k] = e;
    sum += e;
  }
  sum = WarpSum(sum);
  if (sink != -INFINITY) {
    sum += expf(sink - m);
  }
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    s[k] *= inv;
  }
}

}  // namespace qcc
