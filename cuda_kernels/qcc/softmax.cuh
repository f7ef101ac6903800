// qcc/softmax.cuh: softmax of a row held by one warp.
#pragma once

#include "common.cuh"

namespace qcc {

// WarpSoftmax turns the n scores of a row into probabilities, in place. The
// row is spread over the warp: lane l holds s[k] = score[l + 32 * k] for
// k < K; entries at or past n are ignored and come back 0. The maximum is
// subtracted before exponentiating, so large scores do not overflow; a row
// of -inf scores comes back all 0.
template <int K>
__device__ __forceinline__ void WarpSoftmax(float (&s)[K], int n) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  float m = -INFINITY;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    if (lane + k * kWarpSize < n) {
      m = fmaxf(m, s[k]);
    }
  }
  m = WarpMax(m);
  if (m == -INFINITY) {
    m = 0.0f;
  }
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const float e = lane + k * kWarpSize < n ? expf(s[k] - m) : 0.0f;
    s[k] = e;
    sum += e;
  }
  sum = WarpSum(sum);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    s[k] *= inv;
  }
}

}  // namespace qcc
