// qcc/common.cuh: the pieces every qcc kernel is built from. Element types,
// vector loads and stores, warp-shuffle and block reductions, and the layout
// of a row split among the threads that own it.
//
// Part of qcc's hand-written CUDA building blocks (cuda_kernels/). qcc
// -emit=cuda copies these headers next to the kernels.cu it generates, which
// instantiates the templates with the model's sizes and constants.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace qcc {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// ---- element types -------------------------------------------------------

// Convert moves one element between its storage type and float, the type all
// arithmetic is done in.
template <typename T>
struct Convert;

template <>
struct Convert<float> {
  __device__ __forceinline__ static float in(float x) { return x; }
  __device__ __forceinline__ static float out(float x) { return x; }
};

template <>
struct Convert<__half> {
  __device__ __forceinline__ static float in(__half x) { return __half2float(x); }
  __device__ __forceinline__ static __half out(float x) { return __float2half_rn(x); }
};

template <>
struct Convert<__nv_bfloat16> {
  __device__ __forceinline__ static float in(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ __forceinline__ static __nv_bfloat16 out(float x) { return __float2bfloat16_rn(x); }
};

// ---- vector loads and stores ----------------------------------------------

// RawVec names the unsigned type of a vector of Bytes bytes: one load or
// store instruction moves it.
template <int Bytes>
struct RawVec;
template <>
struct RawVec<16> {
  using type = uint4;
};
template <>
struct RawVec<8> {
  using type = uint2;
};
template <>
struct RawVec<4> {
  using type = unsigned int;
};
template <>
struct RawVec<2> {
  using type = unsigned short;
};
template <>
struct RawVec<1> {
  using type = unsigned char;
};

// VecWidth is the number of elements of T that qcc moves per load: the largest
// power of two whose bytes fit in 16 and that divides n.
template <typename T>
__host__ __device__ constexpr int VecWidth(int n) {
  int w = 16 / static_cast<int>(sizeof(T));
  while (w > 1 && n % w != 0) {
    w /= 2;
  }
  return w;
}

// RowVecWidth is VecWidth, narrowed until a row of n elements gives each of a
// warp's lanes at least one vector (a 64-wide row: float2, not float4).
template <typename T>
__host__ __device__ constexpr int RowVecWidth(int n) {
  int w = VecWidth<T>(n);
  while (w > 1 && n / w < kWarpSize) {
    w /= 2;
  }
  return w;
}

template <int N>
__device__ __forceinline__ void UnpackTo(const float* e, float (&out)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    out[i] = e[i];
  }
}

template <int N>
__device__ __forceinline__ void UnpackTo(const __half* e, float (&out)[N]) {
  if (N % 2 == 0) {
    const __half2* e2 = reinterpret_cast<const __half2*>(e);
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {
      const float2 f = __half22float2(e2[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      out[i] = __half2float(e[i]);
    }
  }
}

template <int N>
__device__ __forceinline__ void PackFrom(const float (&in)[N], float* e) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    e[i] = in[i];
  }
}

template <int N>
__device__ __forceinline__ void PackFrom(const float (&in)[N], __half* e) {
  if (N % 2 == 0) {
    __half2* e2 = reinterpret_cast<__half2*>(e);
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {
      e2[i] = __floats2half2_rn(in[2 * i], in[2 * i + 1]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) {
      e[i] = __float2half_rn(in[i]);
    }
  }
}

template <int N>
__device__ __forceinline__ void UnpackTo(const __nv_bfloat16* e, float (&out)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    out[i] = __bfloat162float(e[i]);
  }
}

template <int N>
__device__ __forceinline__ void PackFrom(const float (&in)[N], __nv_bfloat16* e) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    e[i] = __float2bfloat16_rn(in[i]);
  }
}

// LoadVec reads N elements at p (aligned to N elements) with one vector load
// and widens them to float.
template <typename T, int N>
__device__ __forceinline__ void LoadVec(const T* __restrict__ p, float (&out)[N]) {
  using Raw = typename RawVec<sizeof(T) * N>::type;
  const Raw raw = *reinterpret_cast<const Raw*>(p);
  UnpackTo<N>(reinterpret_cast<const T*>(&raw), out);
}

// StoreVec narrows N floats to T and writes them at p with one vector store.
template <typename T, int N>
__device__ __forceinline__ void StoreVec(T* __restrict__ p, const float (&in)[N]) {
  using Raw = typename RawVec<sizeof(T) * N>::type;
  Raw raw;
  PackFrom<N>(in, reinterpret_cast<T*>(&raw));
  *reinterpret_cast<Raw*>(p) = raw;
}

// ---- reductions -----------------------------------------------------------

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(kFullMask, v, offset);
  }
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  }
  return v;
}

// RowSum adds v over the Threads threads that share a row and returns the sum
// to every one of them. Threads == 32 is a warp (shuffles only); a larger
// Threads is the whole block, one row per block, and goes through scratch
// (Threads / 32 floats of shared memory, one per warp: no bank conflicts).
template <int Threads>
__device__ __forceinline__ float RowSum(float v, float* scratch) {
  static_assert(Threads % kWarpSize == 0 && Threads <= 1024, "threads per row: a multiple of 32, at most 1024");
  v = WarpSum(v);
  if (Threads == kWarpSize) {
    return v;
  }
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  if (lane == 0) {
    scratch[warp] = v;
  }
  __syncthreads();
  v = lane < Threads / kWarpSize ? scratch[lane] : 0.0f;
  v = WarpSum(v);
  __syncthreads();  // scratch may be reused by the next reduction
  return v;
}

// ---- rows -----------------------------------------------------------------

// ThreadsPerRow picks how many threads normalise one row of n elements of T:
// a warp while each lane holds at most 8 vectors (n <= 1024 in float), else a
// block with at most 4 vectors per thread.
template <typename T>
__host__ __device__ constexpr int ThreadsPerRow(int n) {
  const int chunks = n / RowVecWidth<T>(n);
  if (chunks <= kWarpSize * 8) {
    return kWarpSize;
  }
  int threads = (chunks + 3) / 4;
  threads = (threads + kWarpSize - 1) / kWarpSize * kWarpSize;
  return threads > 1024 ? 1024 : threads;
}

// Row describes a row of N elements of T owned by Threads threads: it is cut
// into Chunks vectors of Vec elements, and thread t owns vectors t,
// t + Threads, t + 2 * Threads, ... (Iters of them, the last one possibly
// past the end when Chunks is not a multiple of Threads).
template <typename T, int N, int Threads>
struct Row {
  static constexpr int kVec = RowVecWidth<T>(N);
  static constexpr int kChunks = N / kVec;
  static constexpr int kIters = (kChunks + Threads - 1) / Threads;
  static constexpr bool kExact = kChunks % Threads == 0;

  __device__ __forceinline__ static bool Valid(int i, int t) { return kExact || t + i * Threads < kChunks; }
  __device__ __forceinline__ static int Offset(int i, int t) { return (t + i * Threads) * kVec; }
};

// Rows is the launch shape of a row kernel: RowsPerBlock rows of Threads
// threads each.
template <int Threads>
struct Rows {
  static constexpr int kThreads = Threads;
  static constexpr int kRowsPerBlock = Threads == kWarpSize ? 4 : 1;
  static constexpr int kBlock = Threads * kRowsPerBlock;

  __host__ static dim3 Grid(int rows) {
    return dim3(static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock));
  }
  __device__ __forceinline__ static int Index() {
    return static_cast<int>(blockIdx.x) * kRowsPerBlock + static_cast<int>(threadIdx.x) / Threads;
  }
  __device__ __forceinline__ static int Thread() { return static_cast<int>(threadIdx.x) % Threads; }
};

// Aligned reports whether p may be read with vectors of elems elements of T:
// the launchers refuse a pointer that is not (a misaligned vector load faults).
template <typename T>
__host__ __forceinline__ bool Aligned(const T* p, int elems) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * static_cast<size_t>(elems)) == 0;
}

// LaunchError reports a launch's configuration error (the kernel itself runs
// asynchronously on its stream).
inline cudaError_t LaunchError() { return cudaGetLastError(); }

}  // namespace qcc
