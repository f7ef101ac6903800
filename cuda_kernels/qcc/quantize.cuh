// qcc/quantize.cuh: INT8 QuantizeLinear and DequantizeLinear, per tensor or
// per channel, with ONNX's arithmetic:
//   quantize:   y = saturate(round_half_even(x / scale) + zero_point)
//   dequantize: y = (x - zero_point) * scale
// scale is float and zero_point int8 (both in device memory); the float side
// is T.
//
// A Spec is a struct of compile-time constants that qcc generates per node:
//   kPerChannel    bool  scale and zero_point have kChannels entries
//   kChannels      int   size of the quantization axis (1 per tensor)
//   kInner         int   elements after the axis (the stride of a channel)
//   kHasZeroPoint  bool  zero_point is given (else it is 0)
#pragma once

#include "common.cuh"

namespace qcc {

template <int N>
__device__ __forceinline__ void LoadInt8(const int8_t* __restrict__ p, float (&out)[N]) {
  using Raw = typename RawVec<N>::type;
  const Raw raw = *reinterpret_cast<const Raw*>(p);
  const int8_t* e = reinterpret_cast<const int8_t*>(&raw);
#pragma unroll
  for (int i = 0; i < N; ++i) {
    out[i] = static_cast<float>(e[i]);
  }
}

template <int N>
__device__ __forceinline__ void StoreInt8(int8_t* __restrict__ p, const float (&in)[N]) {
  using Raw = typename RawVec<N>::type;
  Raw raw;
  int8_t* e = reinterpret_cast<int8_t*>(&raw);
#pragma unroll
  for (int i = 0; i < N; ++i) {
    e[i] = static_cast<int8_t>(in[i]);
  }
  *reinterpret_cast<Raw*>(p) = raw;
}

// QuantizeValue is one element of QuantizeLinear: x / scale rounded half to
// even, plus the zero point, saturated to [-128, 127].
__device__ __forceinline__ float QuantizeValue(float x, float scale, float zero_point) {
  const float q = rintf(x / scale) + zero_point;
  return fminf(fmaxf(q, -128.0f), 127.0f);
}

template <typename Spec>
__device__ __forceinline__ int QuantChannel(long long i) {
  return Spec::kPerChannel ? static_cast<int>((i / Spec::kInner) % Spec::kChannels) : 0;
}

// QuantVec is the vector width: one load of T, and it must keep a vector
// inside whole repetitions of the channel pattern.
template <typename T, typename Spec>
__host__ __device__ constexpr int QuantVec() {
  return Spec::kPerChannel ? VecWidth<T>(Spec::kChannels * Spec::kInner) : VecWidth<T>(16);
}

template <typename T, typename Spec, bool Quantize>
__global__ void __launch_bounds__(256)
    QuantizeKernel(const void* __restrict__ in, const float* __restrict__ scale,
                   const int8_t* __restrict__ zero_point, void* __restrict__ out, long long n) {
  constexpr int V = QuantVec<T, Spec>();
  const long long chunks = n / V;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  float s0 = scale[0];
  float z0 = Spec::kHasZeroPoint ? static_cast<float>(zero_point[0]) : 0.0f;
  for (long long c = first; c < chunks + (n - chunks * V); c += stride) {
    // Chunks first, then the elements past the last whole chunk one by one.
    const bool whole = c < chunks;
    const long long i0 = whole ? c * V : chunks * V + (c - chunks);
    float x[V];
    if (whole) {
      if (Quantize) {
        LoadVec<T, V>(static_cast<const T*>(in) + i0, x);
      } else {
        LoadInt8<V>(static_cast<const int8_t*>(in) + i0, x);
      }
    } else {
      x[0] = Quantize ? Convert<T>::in(static_cast<const T*>(in)[i0])
                      : static_cast<float>(static_cast<const int8_t*>(in)[i0]);
    }
    const int count = whole ? V : 1;
    // The channel is found once per vector: a vector starts at a multiple of V,
    // which divides kChannels * kInner, so it lies in one channel when V
    // divides kInner, and in V consecutive channels when kInner is 1.
    const int ch0 = Spec::kPerChannel ? QuantChannel<Spec>(i0) : 0;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      if (j < count) {
        if (Spec::kPerChannel) {
          const int ch = Spec::kInner % V == 0 ? ch0 : (Spec::kInner == 1 ? ch0 + j : QuantChannel<Spec>(i0 + j));
          s0 = scale[ch];
          z0 = Spec::kHasZeroPoint ? static_cast<float>(zero_point[ch]) : 0.0f;
        }
        x[j] = Quantize ? QuantizeValue(x[j], s0, z0) : (x[j] - z0) * s0;
      }
    }
    if (whole) {
      if (Quantize) {
        StoreInt8<V>(static_cast<int8_t*>(out) + i0, x);
      } else {
        StoreVec<T, V>(static_cast<T*>(out) + i0, x);
      }
    } else if (Quantize) {
      static_cast<int8_t*>(out)[i0] = static_cast<int8_t>(x[0]);
    } else {
      static_cast<T*>(out)[i0] = Convert<T>::out(x[0]);
    }
  }
}

template <typename T, typename Spec, bool Quantize>
cudaError_t LaunchQuantize(const void* in, const float* scale, const int8_t* zero_point, void* out, long long n,
                           cudaStream_t stream) {
  constexpr int kV = QuantVec<T, Spec>();
  const bool aligned = Quantize
                           ? Aligned(static_cast<const T*>(in), kV) && Aligned(static_cast<const int8_t*>(out), kV)
                           : Aligned(static_cast<const int8_t*>(in), kV) && Aligned(static_cast<const T*>(out), kV);
  if (n < 0 || in == nullptr || scale == nullptr || out == nullptr || (Spec::kHasZeroPoint && zero_point == nullptr) ||
      (Spec::kPerChannel && n % (static_cast<long long>(Spec::kChannels) * Spec::kInner) != 0) || !aligned) {
    return cudaErrorInvalidValue;
  }
  if (n == 0) {
    return cudaSuccess;
  }
  constexpr int kThreads = 256;
  constexpr int V = QuantVec<T, Spec>();
  const long long work = n / V + n % V;
  long long blocks = (work + kThreads - 1) / kThreads;
  if (blocks > (1 << 20)) {
    blocks = 1 << 20;
  }
  QuantizeKernel<T, Spec, Quantize><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(in, scale, zero_point,
                                                                                            out, n);
  return LaunchError();
}

// QuantizeLinear: x (n elements of T) to y (int8).
template <typename T, typename Spec>
cudaError_t QuantizeLinear(const T* x, const float* scale, const int8_t* zero_point, int8_t* y, long long n,
                           cudaStream_t stream) {
  return LaunchQuantize<T, Spec, true>(x, scale, zero_point, y, n, stream);
}

// DequantizeLinear: x (n int8 elements) to y (T).
template <typename T, typename Spec>
cudaError_t DequantizeLinear(const int8_t* x, const float* scale, const int8_t* zero_point, T* y, long long n,
                             cudaStream_t stream) {
  return LaunchQuantize<T, Spec, false>(x, scale, zero_point, y, n, stream);
}

}  // namespace qcc
