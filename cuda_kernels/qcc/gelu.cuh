// qcc/gelu.cuh: GELU and its approximations, with the preceding bias add
// fused (BiasGelu, FastGelu with bias, QuickGelu after a bias Add).
//
// A Spec is a struct of compile-time constants that qcc generates per block:
//   kColumns  int    length of the last axis (the bias length)
//   kApprox   int    kGeluErf, kGeluTanh or kGeluSigmoid
//   kAlpha    float  the sigmoid form's factor: x * sigmoid(kAlpha * x)
//   kHasBias  bool   bias (kColumns) is added first (else bias may be null)
#pragma once

#include "common.cuh"

namespace qcc {

enum GeluApprox : int {
  kGeluErf = 0,      // x * Phi(x), with erf: Gelu, BiasGelu
  kGeluTanh = 1,     // the tanh approximation: FastGelu, Gelu-20 approximate=tanh
  kGeluSigmoid = 2,  // x * sigmoid(alpha * x): QuickGelu
};

// Gelu applies one GELU variant to x (in float, whatever the storage type).
template <int Approx>
__device__ __forceinline__ float Gelu(float x, float alpha) {
  if (Approx == kGeluErf) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
  }
  if (Approx == kGeluTanh) {
    const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(inner));
  }
  return x / (1.0f + expf(-alpha * x));
}

template <typename T, typename Spec>
__global__ void __launch_bounds__(256)
    GeluKernel(const T* __restrict__ input, const T* __restrict__ bias, T* __restrict__ output, long long chunks) {
  constexpr int V = VecWidth<T>(Spec::kColumns);
  constexpr int kRowChunks = Spec::kColumns / V;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long c = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks; c += stride) {
    const long long off = c * V;
    float x[V];
    LoadVec<T, V>(input + off, x);
    if (Spec::kHasBias) {
      float b[V];
      LoadVec<T, V>(bias + static_cast<int>(c % kRowChunks) * V, b);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        x[j] += b[j];
      }
    }
#pragma unroll
    for (int j = 0; j < V; ++j) {
      x[j] = Gelu<Spec::kApprox>(x[j], Spec::kAlpha);
    }
    StoreVec<T, V>(output + off, x);
  }
}

// BiasGelu launches GeluKernel over rows rows of Spec::kColumns elements.
template <typename T, typename Spec>
cudaError_t BiasGelu(const T* input, const T* bias, T* output, int rows, cudaStream_t stream) {
  constexpr int V = VecWidth<T>(Spec::kColumns);
  if (rows < 0 || input == nullptr || output == nullptr || (Spec::kHasBias && bias == nullptr) || !Aligned(input, V) ||
      !Aligned(bias, V) || !Aligned(output, V)) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) {
    return cudaSuccess;
  }
  constexpr int kThreads = 256;
  const long long chunks = static_cast<long long>(rows) * (Spec::kColumns / VecWidth<T>(Spec::kColumns));
  long long blocks = (chunks + kThreads - 1) / kThreads;
  if (blocks > (1 << 20)) {
    blocks = 1 << 20;  // the grid-stride loop covers the rest
  }
  GeluKernel<T, Spec><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(input, bias, output, chunks);
  return LaunchError();
}

}  // namespace qcc
