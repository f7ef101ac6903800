// qcc/layernorm.cuh: LayerNorm, RMSNorm and their skip (residual) forms over
// the last axis.
//
// A row is read once into registers with vector loads, its mean and variance
// are taken in two passes over the registers (no cancellation), and it is
// written once. RMSNorm is the same routine without the centring: the mean is
// taken as 0, so the second pass sums x^2. A warp owns a row (4 rows per block) up to 1024 floats; wider
// rows get a block each (see ThreadsPerRow).
//
// Short grids: when warp rows would give the device fewer than kShortGridBlocks
// blocks per SM (a few hundred rows: one sequence of BERT-base is 128 blocks for
// 132 SMs), the launchers give each row a block of up to 256 threads instead
// (ShortGridThreads), one vector per thread and a block reduction, so that more
// loads are in flight; the arithmetic is the same row routine.
//
// A Spec is a struct of compile-time constants that qcc generates per block:
//   kHidden   int    row length
//   kEpsilon  float  added to the variance
//   kHasBeta  bool   beta is added (else beta may be null)
//   kCentred  bool   true: LayerNorm, (x - mean) / sqrt(var + eps); false:
//                    RMSNorm, x / sqrt(mean(x^2) + eps)
// and for skip+LayerNorm also
//   kHasBias  bool   bias (kHidden) is added to input + skip
//   kHasSum   bool   input + skip + bias is also written to sum
#pragma once

#include "common.cuh"

namespace qcc {

// SumChunks returns the sum of f(v) over the elements v of the row held in x
// (chunks past the end of the row are skipped), in the thread's own order.
template <typename R, typename F>
__device__ __forceinline__ float SumChunks(const float (&x)[R::kIters][R::kVec], int t, F f) {
  float acc = 0.0f;
#pragma unroll
  for (int i = 0; i < R::kIters; ++i) {
    if (R::Valid(i, t)) {
#pragma unroll
      for (int j = 0; j < R::kVec; ++j) {
        acc += f(x[i][j]);
      }
    }
  }
  return acc;
}

// RowMoments returns the mean and 1 / sqrt(variance + eps) of the row held in
// x (chunks past the end of the row are ignored); uncentred, the mean is 0 and
// rstd is 1 / sqrt(mean(x^2) + eps).
template <typename R, int Threads, bool Centred>
__device__ __forceinline__ void RowMoments(const float (&x)[R::kIters][R::kVec], int t, int n, float eps,
                                           float* scratch, float& mean, float& rstd) {
  mean = 0.0f;
  if (Centred) {
    const float sum = SumChunks<R>(x, t, [](float v) { return v; });
    mean = RowSum<Threads>(sum, scratch) / static_cast<float>(n);
  }
  const float m = mean;
  const float squares = SumChunks<R>(x, t, [m](float v) {
    const float d = v - m;
    return d * d;
  });
  rstd = rsqrtf(RowSum<Threads>(squares, scratch) / static_cast<float>(n) + eps);
}

// WriteNormalized writes (x - mean) * rstd * gamma + beta for the thread's
// chunks of the row at out.
template <typename T, typename R>
__device__ __forceinline__ void WriteNormalized(const float (&x)[R::kIters][R::kVec], int t, float mean, float rstd,
                                                const T* __restrict__ gamma, const T* __restrict__ beta,
                                                bool has_beta, T* __restrict__ out) {
#pragma unroll
  for (int i = 0; i < R::kIters; ++i) {
    if (R::Valid(i, t)) {
      const int off = R::Offset(i, t);
      float g[R::kVec];
      float b[R::kVec];
      float y[R::kVec];
      LoadVec<T, R::kVec>(gamma + off, g);
      if (has_beta) {
        LoadVec<T, R::kVec>(beta + off, b);
      } else {
#pragma unroll
        for (int j = 0; j < R::kVec; ++j) {
          b[j] = 0.0f;
        }
      }
#pragma unroll
      for (int j = 0; j < R::kVec; ++j) {
        y[j] = (x[i][j] - mean) * rstd * g[j] + b[j];
      }
      StoreVec<T, R::kVec>(out + off, y);
    }
  }
}

// LayerNormRow normalises the row held in x (centred or not) and writes it to
// out.
template <typename T, int N, int Threads, bool Centred>
__device__ __forceinline__ void LayerNormRow(float (&x)[Row<T, N, Threads>::kIters][Row<T, N, Threads>::kVec], int t,
                                             float eps, const T* __restrict__ gamma, const T* __restrict__ beta,
                                             bool has_beta, float* scratch, T* __restrict__ out) {
  using R = Row<T, N, Threads>;
  float mean;
  float rstd;
  RowMoments<R, Threads, Centred>(x, t, N, eps, scratch, mean, rstd);
  WriteNormalized<T, R>(x, t, mean, rstd, gamma, beta, has_beta, out);
}

// AddVec adds the N elements at p (aligned to N elements) to x.
template <typename T, int N>
__device__ __forceinline__ void AddVec(const T* __restrict__ p, float (&x)[N]) {
  float v[N];
  LoadVec<T, N>(p, v);
#pragma unroll
  for (int j = 0; j < N; ++j) {
    x[j] += v[j];
  }
}

// NormalizeRows is the body of the row kernels (LayerNorm and RMSNorm, their
// skip forms, embedding+LayerNorm): it finds the calling thread's row of Spec::kHidden
// elements, gathers the thread's chunks of it with load(off, x), where
// load = source(row) and x is a float[kVec] to fill from offset off of the
// row, and writes the normalised row to output.
template <typename T, typename Spec, int Threads, typename Source>
__device__ __forceinline__ void NormalizeRows(int rows, const T* __restrict__ gamma, const T* __restrict__ beta,
                                              T* __restrict__ output, Source source) {
  constexpr int N = Spec::kHidden;
  using R = Row<T, N, Threads>;
  using L = Rows<Threads>;
  __shared__ float scratch[Threads / kWarpSize];
  const int row = L::Index();
  if (row >= rows) {
    return;
  }
  const int t = L::Thread();
  const auto load = source(row);
  float x[R::kIters][R::kVec];
#pragma unroll
  for (int i = 0; i < R::kIters; ++i) {
    if (R::Valid(i, t)) {
      load(R::Offset(i, t), x[i]);
    }
  }
  LayerNormRow<T, N, Threads, Spec::kCentred>(x, t, Spec::kEpsilon, gamma, beta, Spec::kHasBeta, scratch,
                              output + static_cast<size_t>(row) * N);
}

template <typename T, typename Spec, int Threads>
__global__ void __launch_bounds__(Rows<Threads>::kBlock)
    LayerNormKernel(const T* __restrict__ input, const T* __restrict__ gamma, const T* __restrict__ beta,
                    T* __restrict__ output, int rows) {
  NormalizeRows<T, Spec, Threads>(rows, gamma, beta, output, [=](int row) {
    const T* __restrict__ in = input + static_cast<size_t>(row) * Spec::kHidden;
    return [=](int off, auto& x) { LoadVec<T>(in + off, x); };
  });
}

template <typename T, typename Spec, int Threads>
__global__ void __launch_bounds__(Rows<Threads>::kBlock)
    SkipLayerNormKernel(const T* __restrict__ input, const T* __restrict__ skip, const T* __restrict__ bias,
                        const T* __restrict__ gamma, const T* __restrict__ beta, T* __restrict__ output,
                        T* __restrict__ sum, int rows) {
  NormalizeRows<T, Spec, Threads>(rows, gamma, beta, output, [=](int row) {
    const size_t base = static_cast<size_t>(row) * Spec::kHidden;
    return [=](int off, auto& x) {
      LoadVec<T>(input + base + off, x);
      AddVec<T>(skip + base + off, x);
      if (Spec::kHasBias) {
        AddVec<T>(bias + off, x);
      }
      if (Spec::kHasSum) {
        StoreVec<T>(sum + base + off, x);
      }
    };
  });
}

// kShortGridBlocks: a grid of warp rows with fewer blocks than this per SM
// takes a block per row instead.
constexpr int kShortGridBlocks = 4;

// ShortGridThreads is the block that takes one row of n elements of T on a short
// grid: a vector per thread, at most 256 threads, never fewer than ThreadsPerRow.
template <typename T>
__host__ __device__ constexpr int ShortGridThreads(int n) {
  const int chunks = n / RowVecWidth<T>(n);
  const int threads = (chunks + kWarpSize - 1) / kWarpSize * kWarpSize;
  const int capped = threads > 256 ? 256 : threads;
  return capped > ThreadsPerRow<T>(n) ? capped : ThreadsPerRow<T>(n);
}

// ShortGrid reports whether a grid of blocks leaves the current device with
// fewer than kShortGridBlocks per SM (false when the device cannot be asked).
inline bool ShortGrid(unsigned blocks) {
  int dev = 0;
  int sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) !=
                                                 cudaSuccess) {
    return false;
  }
  return blocks < static_cast<unsigned>(kShortGridBlocks * sms);
}

// LayerNormRows launches LayerNormKernel with Threads threads per row (the
// launcher's choice; selftest.cu forces each).
template <typename T, typename Spec, int Threads>
cudaError_t LayerNormRows(const T* input, const T* gamma, const T* beta, T* output, int rows, cudaStream_t stream) {
  constexpr int V = Row<T, Spec::kHidden, Threads>::kVec;
  if (rows < 0 || input == nullptr || gamma == nullptr || output == nullptr || (Spec::kHasBeta && beta == nullptr) ||
      !Aligned(input, V) || !Aligned(gamma, V) || !Aligned(beta, V) || !Aligned(output, V)) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) {
    return cudaSuccess;
  }
  LayerNormKernel<T, Spec, Threads><<<Rows<Threads>::Grid(rows), Rows<Threads>::kBlock, 0, stream>>>(
      input, gamma, beta, output, rows);
  return LaunchError();
}

// LayerNorm launches LayerNormKernel over rows rows of Spec::kHidden elements
// (an RMSNorm when Spec::kCentred is false): warp rows, or on a short grid a
// block per row.
template <typename T, typename Spec>
cudaError_t LayerNorm(const T* input, const T* gamma, const T* beta, T* output, int rows, cudaStream_t stream) {
  constexpr int kBase = ThreadsPerRow<T>(Spec::kHidden);
  constexpr int kShort = ShortGridThreads<T>(Spec::kHidden);
  if (kShort != kBase && rows > 0 && ShortGrid(Rows<kBase>::Grid(rows).x)) {
    return LayerNormRows<T, Spec, kShort>(input, gamma, beta, output, rows, stream);
  }
  return LayerNormRows<T, Spec, kBase>(input, gamma, beta, output, rows, stream);
}

// SkipLayerNormRows launches SkipLayerNormKernel with Threads threads per row.
template <typename T, typename Spec, int Threads>
cudaError_t SkipLayerNormRows(const T* input, const T* skip, const T* bias, const T* gamma, const T* beta, T* output,
                              T* sum, int rows, cudaStream_t stream) {
  constexpr int V = Row<T, Spec::kHidden, Threads>::kVec;
  if (rows < 0 || input == nullptr || skip == nullptr || gamma == nullptr || output == nullptr ||
      (Spec::kHasBias && bias == nullptr) || (Spec::kHasBeta && beta == nullptr) || (Spec::kHasSum && sum == nullptr) ||
      !Aligned(input, V) || !Aligned(skip, V) || !Aligned(bias, V) || !Aligned(gamma, V) || !Aligned(beta, V) ||
      !Aligned(output, V) || !Aligned(sum, V)) {
    return cudaErrorInvalidValue;
  }
  if (rows == 0) {
    return cudaSuccess;
  }
  SkipLayerNormKernel<T, Spec, Threads><<<Rows<Threads>::Grid(rows), Rows<Threads>::kBlock, 0, stream>>>(
      input, skip, bias, gamma, beta, output, sum, rows);
  return LaunchError();
}

// SkipLayerNorm launches SkipLayerNormKernel: output = LayerNorm(input + skip
// + bias) (RMSNorm when Spec::kCentred is false), and sum = input + skip + bias
// when Spec::kHasSum; warp rows, or on a short grid a block per row.
template <typename T, typename Spec>
cudaError_t SkipLayerNorm(const T* input, const T* skip, const T* bias, const T* gamma, const T* beta, T* output,
                          T* sum, int rows, cudaStream_t stream) {
  constexpr int kBase = ThreadsPerRow<T>(Spec::kHidden);
  constexpr int kShort = ShortGridThreads<T>(Spec::kHidden);
  if (kShort != kBase && rows > 0 && ShortGrid(Rows<kBase>::Grid(rows).x)) {
    return SkipLayerNormRows<T, Spec, kShort>(input, skip, bias, gamma, beta, output, sum, rows, stream);
  }
  return SkipLayerNormRows<T, Spec, kBase>(input, skip, bias, gamma, beta, output, sum, rows, stream);
}

}  // namespace qcc
