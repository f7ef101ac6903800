// qcc/flash_attention.cuh: the attention core on tensor cores, for half and
// bfloat16 models: softmax(scale * Q K^T + bias + mask) V computed flash-style
// (online softmax over key tiles, no seq x seq buffer), on sm_80 and later.
//
// The Spec, layouts, mask predicate, bias broadcast, causal rule and the
// empty-row rule are those of qcc/attention.cuh (the FP32-arithmetic kernel,
// kept as the simple reference path); only the arithmetic differs, as follows.
//
// A block of 4 warps takes 64 query rows of one (batch, head), 16 per warp;
// its Q tile stays in shared memory. Keys and values stream through shared
// memory 64 at a time (zero past kv_seq). For each key tile, in key order:
//   1. S = Q K^T on tensor cores (nvcuda::wmma 16x16x16, T inputs, float
//      accumulation), then s = S * kScale in float, soft-capped (kSoftcap),
//      plus the bias (read as T), plus kMaskFilter for a padding key; a causal
//      key after the query or outside the window, or a key past kv_seq, is -inf.
//   2. Online softmax in float, row by row: m' = max(m, max_j s_j);
//      alpha = exp(m - m') (1 while m' is -inf); p_j = exp(s_j - m') (0 while
//      m' is -inf), rounded to T (the tensor cores' input); l = l * alpha +
//      sum of the rounded p_j; O = O * alpha. A sink starts m at sink[h] and l
//      at 1.
//   3. O += P V on tensor cores (P and V in T, float accumulation).
// At the end O / l, times row_scale, is rounded to T. A row with no admissible
// key: kEmptyRowZero, 0 when m <= the lowest float; kEmptyRowNaN, NaN when m
// is -inf (a row of lowest floats is uniform, as in the IEEE softmax).
//
// Constraints (the plan refuses the rest with a reason and keeps the FP32
// kernel): kHeadSize a multiple of 16 up to 128, v's heads as wide
// (kVHeadSize = kHeadSize, kVLd = kKvLd); kLd and kKvLd multiples of 8
// and q, k, v, out 16-byte aligned (the launcher checks), for 16-byte loads.
// With kCausal the tiles after a block's last query are not read.
#pragma once

#include <mma.h>

#include <cfloat>

#include "attention.cuh"
#include "common.cuh"

namespace qcc {

constexpr int kFlashWarps = 4;
constexpr int kFlashRows = 16 * kFlashWarps;  // query rows per block: 16 per warp
constexpr int kFlashKeys = 64;                 // keys per tile
constexpr int kFlashPad = 8;                   // elements added to each shared row (16 bytes)

// FlashShape is the shared-memory layout of a block: the Q tile, the K and V
// tiles (rows of kLdT elements), per warp a float scratch of 16 rows (the
// scores, then P V) and a T tile of 16 rows of probabilities.
template <typename T, typename Spec>
struct FlashShape {
  static constexpr int kD = Spec::kHeadSize;
  static constexpr int kLdT = kD + kFlashPad;
  static constexpr int kLdS = (kD > kFlashKeys ? kD : kFlashKeys) + 4;
  static constexpr int kLdP = kFlashKeys + kFlashPad;
  static constexpr size_t kQBytes = sizeof(T) * kFlashRows * kLdT;
  static constexpr size_t kKvBytes = sizeof(T) * kFlashKeys * kLdT;
  static constexpr size_t kScratchBytes = sizeof(float) * kFlashWarps * 16 * kLdS;
  static constexpr size_t kPBytes = sizeof(T) * kFlashWarps * 16 * kLdP;
  static constexpr size_t kSharedBytes = kQBytes + 2 * kKvBytes + kScratchBytes + kPBytes;
  static_assert(sizeof(T) == 2, "the tensor-core path is for half and bfloat16");
  static_assert(kD % 16 == 0 && kD >= 16 && kD <= 128, "head size must be a multiple of 16 up to 128");
  static_assert(Spec::kLd % 8 == 0 && Spec::kKvLd % 8 == 0, "rows of q, k and v must be 16-byte multiples");
  static_assert(Spec::kKvHeads > 0 && Spec::kHeads % Spec::kKvHeads == 0, "kKvHeads must divide kHeads");
  static_assert(Spec::kVHeadSize == kD && Spec::kVLd == Spec::kKvLd, "v's heads must be as wide as q's and k's");
  static_assert(!Spec::kWriteScores, "the tensor-core path does not write the scores");
};

// FlashCopy16 moves 8 elements (16 bytes) from global to shared memory, zeros
// when !valid.
template <typename T>
__device__ __forceinline__ void FlashCopy16(T* dst, const T* __restrict__ src, bool valid) {
  uint4 x = make_uint4(0u, 0u, 0u, 0u);
  if (valid) {
    x = *reinterpret_cast<const uint4*>(src);
  }
  *reinterpret_cast<uint4*>(dst) = x;
}

template <typename T, typename Spec>
__global__ void __launch_bounds__(kFlashWarps* kWarpSize)
    FlashAttentionKernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         const int32_t* __restrict__ mask, const T* __restrict__ bias,
                         const T* __restrict__ row_scale, const T* __restrict__ sink, T* __restrict__ out, int seq,
                         int kv_seq) {
  namespace wmma = nvcuda::wmma;
  using F = FlashShape<T, Spec>;
  using A = AttentionShape<Spec>;
  constexpr int D = Spec::kHeadSize;
  constexpr int kVec = 8;
  constexpr int kThreads = kFlashWarps * kWarpSize;
  constexpr int kHidden = Spec::kHeads * D;
  constexpr int kCols = D / 2;                 // output columns per lane: two lanes share a row
  constexpr int kKeysPerLane = kFlashKeys / 2;  // and split a tile's keys
  extern __shared__ __align__(128) unsigned char smem[];
  T* qs = reinterpret_cast<T*>(smem);
  T* ks = reinterpret_cast<T*>(smem + F::kQBytes);
  T* vs = reinterpret_cast<T*>(smem + F::kQBytes + F::kKvBytes);
  float* ss = reinterpret_cast<float*>(smem + F::kQBytes + 2 * F::kKvBytes);
  T* ps = reinterpret_cast<T*>(smem + F::kQBytes + 2 * F::kKvBytes + F::kScratchBytes);

  const int b = blockIdx.z;
  const int h = blockIdx.y;
  const int q0 = blockIdx.x * kFlashRows;
  const int tid = threadIdx.x;
  const int lane = tid % kWarpSize;
  const int warp = tid / kWarpSize;
  const size_t rows0 = static_cast<size_t>(b) * seq;
  const int head = h * D;
  const int kvh = h / (Spec::kHeads / Spec::kKvHeads);
  float* sw = ss + warp * 16 * F::kLdS;
  T* pw = ps + warp * 16 * F::kLdP;
  const int r = lane / 2;    // the lane's row among the warp's 16
  const int side = lane % 2;  // its half of a tile's keys and of the output columns
  const int i = q0 + warp * 16 + r;

  for (int e = tid; e < kFlashRows * (D / kVec); e += kThreads) {
    const int row = e / (D / kVec);
    const int c = e % (D / kVec) * kVec;
    FlashCopy16(qs + row * F::kLdT + c, q + (rows0 + q0 + row) * Spec::kLd + head + c, q0 + row < seq);
  }

  float o[kCols];
#pragma unroll
  for (int c = 0; c < kCols; ++c) {
    o[c] = 0.0f;
  }
  // A sink is a logit seen before every key: m starts at it and l at exp(0).
  float m = Spec::kHasSink ? Convert<T>::in(sink[h]) : -INFINITY;
  float l = Spec::kHasSink ? 1.0f : 0.0f;
  const int kv_end = Spec::kCausal ? min(kv_seq, q0 + kFlashRows) : kv_seq;
  for (int t0 = 0; t0 < kv_end; t0 += kFlashKeys) {
    __syncthreads();  // the previous tiles are consumed
    for (int e = tid; e < kFlashKeys * (D / kVec); e += kThreads) {
      const int j = e / (D / kVec);
      const int c = e % (D / kVec) * kVec;
      const int key = t0 + j;
      const size_t off = key < kv_seq ? A::KRow(b, key, kvh, kv_seq) + c : 0;
      FlashCopy16(ks + j * F::kLdT + c, k + off, key < kv_seq);
      FlashCopy16(vs + j * F::kLdT + c, v + off, key < kv_seq);
    }
    __syncthreads();

    // 1. Scores of the warp's 16 rows against the tile's keys.
#pragma unroll
    for (int n = 0; n < kFlashKeys / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, qs + warp * 16 * F::kLdT + kk * 16, F::kLdT);
        wmma::load_matrix_sync(fb, ks + n * 16 * F::kLdT + kk * 16, F::kLdT);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(sw + n * 16, acc, F::kLdS, wmma::mem_row_major);
    }
    __syncwarp();

    // 2. Online softmax: lanes 2r and 2r + 1 take row r, 32 keys each.
    float s[kKeysPerLane];
    float tile_max = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < kKeysPerLane; ++jj) {
      const int key = t0 + side * kKeysPerLane + jj;
      float x = -INFINITY;
      if (key < kv_seq && i < seq && !(Spec::kCausal && key > i) &&
          !(Spec::kWindow > 0 && key <= i - Spec::kWindow)) {
        x = sw[r * F::kLdS + side * kKeysPerLane + jj] * Spec::kScale;
        if constexpr (Spec::kSoftcap > 0.0f) {
          x = Spec::kSoftcap * tanhf(x / Spec::kSoftcap);
        }
        if (Spec::kHasBias) {
          x += Convert<T>::in(bias[A::BiasRow(b, h, i, seq, kv_seq) + key]);
        }
        if (Spec::kMaskKind == kMaskKeyPadding && mask[static_cast<size_t>(b) * kv_seq + key] <= 0) {
          x += Spec::kMaskFilter;
        }
      }
      s[jj] = x;
      tile_max = fmaxf(tile_max, x);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);
    const bool none = m_new == -INFINITY;  // no admissible key yet
    const float alpha = none ? 1.0f : expf(m - m_new);
    float sum = 0.0f;
#pragma unroll
    for (int jj = 0; jj < kKeysPerLane; ++jj) {
      const T p = Convert<T>::out(none ? 0.0f : expf(s[jj] - m_new));
      pw[r * F::kLdP + side * kKeysPerLane + jj] = p;
      sum += Convert<T>::in(p);
    }
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    l = l * alpha + sum;
    m = m_new;
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      o[c] *= alpha;
    }
    __syncwarp();

    // 3. P V into the scratch, added to the lane's columns of O.
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < kFlashKeys / 16; ++kk) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, pw + kk * 16, F::kLdP);
        wmma::load_matrix_sync(fb, vs + kk * 16 * F::kLdT + n * 16, F::kLdT);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(sw + n * 16, acc, F::kLdS, wmma::mem_row_major);
    }
    __syncwarp();
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      o[c] += sw[r * F::kLdS + side * kCols + c];
    }
  }

  if (i < seq) {
    float inv = 1.0f / l;
    if (Spec::kEmptyRow == kEmptyRowZero && m <= -FLT_MAX) {
      inv = 0.0f;
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        o[c] = 0.0f;
      }
    } else if (m == -INFINITY) {
      inv = NAN;
    }
    const float rs = Spec::kHasRowScale ? Convert<T>::in(row_scale[rows0 + i]) : 1.0f;
    T* dst = out + (rows0 + i) * kHidden + head + side * kCols;
#pragma unroll
    for (int c0 = 0; c0 < kCols; c0 += kVec) {
      float y[kVec];
#pragma unroll
      for (int c = 0; c < kVec; ++c) {
        y[c] = o[c0 + c] * inv * rs;
      }
      StoreVec<T, kVec>(dst + c0, y);
    }
  }
}

// FlashAttention launches FlashAttentionKernel for batch sequences of seq
// queries over kv_seq keys (kv_seq = seq for self-attention).
template <typename T, typename Spec>
cudaError_t FlashAttention(const T* q, const T* k, const T* v, const int32_t* mask, const T* bias,
                           const T* row_scale, const T* sink, T* out, T* /* scores: not written here */, int batch,
                           int seq, int kv_seq, cudaStream_t stream) {
  if (batch < 0 || seq < 0 || kv_seq < 0 || batch > 65535 || (seq > 0 && kv_seq == 0) || q == nullptr ||
      k == nullptr || v == nullptr || out == nullptr || (Spec::kMaskKind == kMaskKeyPadding && mask == nullptr) ||
      (Spec::kHasBias && bias == nullptr) || (Spec::kHasRowScale && row_scale == nullptr) ||
      (Spec::kHasSink && sink == nullptr) || ((Spec::kCausal || Spec::kWindow > 0) && kv_seq != seq)) {
    return cudaErrorInvalidValue;
  }
  if (!Aligned(q, 8) || !Aligned(k, 8) || !Aligned(v, 8) || !Aligned(out, 8)) {
    return cudaErrorMisalignedAddress;
  }
  if (batch == 0 || seq == 0) {
    return cudaSuccess;
  }
  constexpr size_t kBytes = FlashShape<T, Spec>::kSharedBytes;
  if (kBytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(FlashAttentionKernel<T, Spec>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(kBytes));
    if (err != cudaSuccess) {
      return err;
    }
  }
  const dim3 grid(static_cast<unsigned>((seq + kFlashRows - 1) / kFlashRows), static_cast<unsigned>(Spec::kHeads),
                  static_cast<unsigned>(batch));
  FlashAttentionKernel<T, Spec><<<grid, kFlashWarps * kWarpSize, kBytes, stream>>>(q, k, v, mask, bias, row_scale,
                                                                                    sink, out, seq, kv_seq);
  return LaunchError();
}

}  // namespace qcc
