// qcc/attention.cuh: the attention core, softmax(scale * Q K^T + bias + mask) V,
// for one layer's already-projected Q, K and V (the projections are GEMMs,
// not this kernel's) and sequences of up to Spec::kMaxSeq (512) tokens.
//
// Layout: q is [batch, seq, heads * head_size], rows kLd elements apart (kLd
// = hidden for a separate tensor, 3 * hidden for the packed output of a QKV
// GEMM, where k = q + hidden and v = q + 2 * hidden). k and v are either
// [batch, kv_seq, kv_heads * head_size] rows kKvLd apart (kLayoutBSH) or
// [batch, kv_heads, kv_seq, head_size] (kLayoutBNSH, DeBERTa's key and value);
// v's heads are kVHeadSize wide, which may differ from Q's and K's (DeepSeek's
// multi-head latent attention, LeViT), its rows kVLd apart;
// kv_seq is seq for self-attention (and for a packed QKV) and the memory's
// length for cross-attention, up to kMaxSeq; query head h reads key/value head
// h / (kHeads / kKvHeads) (grouped-query attention when kKvHeads < kHeads).
// out is [batch, seq, heads * kVHeadSize]; mask is [batch, kv_seq] int32 (a key whose
// mask is <= 0 is padding, as ONNX Runtime's mask_index); bias is [batch | 1,
// heads | 1, seq | 1, kv_seq], added to the scores (the sum of a
// model's additive terms: causal and padding masks, relative-position biases),
// broadcast over each axis whose kBias* flag is false; row_scale is [batch,
// seq] and multiplies each output row (DeBERTa zeroes the rows of padding
// queries).
//
// Scores: scale * q . k (written to scores with kWriteScores, for every key, as
// ONNX's qk_matmul_output mode 0 and ORT's output_qk: PatchTST's residual attention
// adds them to the next layer's), soft-capped to kSoftcap * tanh(score / kSoftcap)
// when kSoftcap > 0 (Gemma 2), then the bias and the mask added.
//
// Masking: a padding key gets kMaskFilter added to its score; with kCausal a
// key after the query is left out (as if its score were -inf), and with kWindow
// > 0 also a key kWindow or more before it (a sliding window: a query sees its
// kWindow latest keys, its own included). With kHasSink, sink[h] is one more
// logit of each row of head h, in the softmax's maximum and normaliser but with
// no value (attention sinks, GPT-OSS). A row with no
// admissible key comes out as kEmptyRow says: kEmptyRowZero, 0 when every score
// is <= the lowest float (ONNX Runtime's Attention-23); kEmptyRowNaN, the IEEE
// softmax (NaN for a row of -inf, as ONNX Runtime's com.microsoft operators and
// the unfused graph give; a row of lowest floats is uniform). A finite filter
// gives the softmax of the filtered scores, as adding it does.
//
// A block of 4 warps takes kRows query rows of one (batch, head). Keys and
// values stream through shared memory 32 at a time (one buffer, as wide as the
// wider of their heads); lane l scores key l of a
// tile against a query row, the scores of a row are kept in shared memory
// (kMaxSeq floats per row), a warp turns each of its rows into probabilities
// with shuffles, and lane l then accumulates output dims l, l + 32, ... All
// arithmetic is float.
//
// Shared memory is free of bank conflicts: key tiles are stored skewed (the
// row of key j rotated by j, or by j * head_size / 32 for heads narrower than
// 32) so that 32 lanes reading dim d of 32 different keys hit 32 banks; a
// head size that neither divides nor is a multiple of 32 gets rows padded to
// an odd stride instead. Query and probability reads are broadcasts.
//
// A Spec is a struct of compile-time constants that qcc generates per block:
//   kHeads, kHeadSize  int    heads and their width
//   kScale             float  the factor on Q K^T
//   kLd                int    elements between consecutive rows of q
//   kKvHeads           int    key/value heads (divides kHeads)
//   kKvLd              int    elements between consecutive rows of k (kLayoutBSH)
//   kVHeadSize         int    the width of v's heads, and so of the output's
//   kVLd               int    elements between consecutive rows of v (kLayoutBSH)
//   kKvLayout          int    kLayoutBSH or kLayoutBNSH
//   kCausal            bool   keys after the query are left out
//   kWindow            int    0, or the keys a query sees (its own included; with kCausal)
//   kSoftcap           float  0, or the soft cap on the scaled scores
//   kHasSink           bool   sink is a [heads] logit joined to every row's softmax
//   kWriteScores       bool   scores [batch, heads, seq, kv_seq] gets scale * q . k
//   kMaskKind          int    kMaskNone or kMaskKeyPadding
//   kMaskFilter        float  added to the score of a padding key
//   kHasBias           bool   bias is added to the scores
//   kBiasBatch         bool   bias has a batch axis (else it is 1: broadcast)
//   kBiasHeads         bool   bias has a heads axis (else broadcast)
//   kBiasRows          bool   bias has a query axis (else one row for all queries)
//   kHasRowScale       bool   each output row is multiplied by row_scale
//   kEmptyRow          int    kEmptyRowNaN or kEmptyRowZero (see Masking)
//   kMaxSeq            int    the longest sequence (a multiple of 32)
#pragma once

#include "common.cuh"
#include "softmax.cuh"

namespace qcc {

enum AttentionMaskKind : int {
  kMaskNone = 0,
  kMaskKeyPadding = 1,  // [batch, seq] int32, <= 0 marks a padding key
};

enum AttentionEmptyRow : int {
  kEmptyRowNaN = 0,   // the IEEE softmax: a row of -inf scores is NaN
  kEmptyRowZero = 1,  // a row whose every score is <= the lowest float is 0
};

enum AttentionLayout : int {
  kLayoutBSH = 0,   // [batch, seq, kv_heads * head_size], rows kKvLd apart
  kLayoutBNSH = 1,  // [batch, kv_heads, seq, head_size]
};

constexpr int kAttentionWarps = 4;
constexpr int kAttentionKeyTile = 32;
constexpr int kAttentionSharedBytes = 48 * 1024;

// AttentionSharedBytes is the static shared memory of a block of rows query
// rows for a head of d dims, a key tile of tile floats and max_seq keys.
constexpr int AttentionSharedBytes(int rows, int d, int tile, int max_seq) {
  return static_cast<int>(sizeof(float)) * (rows * d + tile + rows * max_seq);
}

template <typename Spec>
struct AttentionShape {
  static constexpr int kD = Spec::kHeadSize;
  static constexpr int kDV = Spec::kVHeadSize;
  static constexpr bool kSkewed = kD % kWarpSize == 0 || kWarpSize % kD == 0;
  // A tile of keys (skewed or padded, see KeyIndex) or of values (kDV a row).
  static constexpr int kKeyTileFloats = kSkewed ? kAttentionKeyTile * kD : kAttentionKeyTile * (kD + 1);
  static constexpr int kTileFloats =
      kKeyTileFloats > kAttentionKeyTile * kDV ? kKeyTileFloats : kAttentionKeyTile * kDV;
  // Query rows per block: 16, or fewer when the head is too wide for 48 KiB.
  static constexpr int kRows =
      AttentionSharedBytes(16, kD, kTileFloats, Spec::kMaxSeq) <= kAttentionSharedBytes  ? 16
      : AttentionSharedBytes(8, kD, kTileFloats, Spec::kMaxSeq) <= kAttentionSharedBytes ? 8
                                                                                          : 4;
  static_assert(AttentionSharedBytes(kRows, kD, kTileFloats, Spec::kMaxSeq) <= kAttentionSharedBytes,
                "attention head too wide for the kernel's shared memory");
  static_assert(Spec::kMaxSeq % kWarpSize == 0, "kMaxSeq must be a multiple of 32");
  static_assert(kRows % kAttentionWarps == 0, "rows per block must be a multiple of the warps");
  static_assert(Spec::kKvHeads > 0 && Spec::kHeads % Spec::kKvHeads == 0, "kKvHeads must divide kHeads");
  static_assert(Spec::kWindow >= 0 && (Spec::kWindow == 0 || Spec::kCausal), "a sliding window is causal");

  // KvRow is the offset of dim 0 of key key of head kvh in batch entry b, in k
  // (Width kD, rows Ld = kKvLd apart) or v (kDV, kVLd).
  template <int Width, int Ld>
  __device__ __forceinline__ static size_t KvRow(int b, int key, int kvh, int kv_seq) {
    if (Spec::kKvLayout == kLayoutBNSH) {
      return ((static_cast<size_t>(b) * Spec::kKvHeads + kvh) * kv_seq + key) * Width;
    }
    return (static_cast<size_t>(b) * kv_seq + key) * Ld + static_cast<size_t>(kvh) * Width;
  }
  __device__ __forceinline__ static size_t KRow(int b, int key, int kvh, int kv_seq) {
    return KvRow<kD, Spec::kKvLd>(b, key, kvh, kv_seq);
  }
  __device__ __forceinline__ static size_t VRow(int b, int key, int kvh, int kv_seq) {
    return KvRow<kDV, Spec::kVLd>(b, key, kvh, kv_seq);
  }

  // BiasRow is the offset of the bias row of query i of head h in batch entry b:
  // an axis the bias broadcasts over contributes nothing.
  __device__ __forceinline__ static size_t BiasRow(int b, int h, int i, int seq, int kv_seq) {
    const size_t bb = Spec::kBiasBatch ? static_cast<size_t>(b) : 0;
    const size_t hh = Spec::kBiasHeads ? static_cast<size_t>(h) : 0;
    const size_t ii = Spec::kBiasRows ? static_cast<size_t>(i) : 0;
    const size_t heads = Spec::kBiasHeads ? Spec::kHeads : 1;
    const size_t rows = Spec::kBiasRows ? static_cast<size_t>(seq) : 1;
    return ((bb * heads + hh) * rows + ii) * kv_seq;
  }

  // KeyIndex is where dim d of key j of a tile lives in shared memory.
  __device__ __forceinline__ static int KeyIndex(int j, int d) {
    if (kD % kWarpSize == 0) {
      return j * kD + (d + j) % kD;
    }
    if (kWarpSize % kD == 0) {
      return j * kD + (d + j * kD / kWarpSize) % kD;
    }
    return j * (kD + 1) + d;
  }
};

template <typename T, typename Spec>
__global__ void __launch_bounds__(kAttentionWarps* kWarpSize)
    AttentionKernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                    const int32_t* __restrict__ mask, const T* __restrict__ bias, const T* __restrict__ row_scale,
                    const T* __restrict__ sink, T* __restrict__ out, T* __restrict__ scores, int seq, int kv_seq) {
  using A = AttentionShape<Spec>;
  constexpr int D = Spec::kHeadSize;
  constexpr int DV = Spec::kVHeadSize;
  constexpr int R = A::kRows;
  constexpr int kRowsPerWarp = R / kAttentionWarps;
  constexpr int kDimsPerLane = (DV + kWarpSize - 1) / kWarpSize;
  constexpr int kKeysPerLane = Spec::kMaxSeq / kWarpSize;
  constexpr int kThreads = kAttentionWarps * kWarpSize;
  constexpr int kOutLd = Spec::kHeads * DV;
  __shared__ float qs[R][D];
  __shared__ float kv[A::kTileFloats];
  __shared__ float ps[R][Spec::kMaxSeq];

  const int b = blockIdx.z;
  const int h = blockIdx.y;
  const int q0 = blockIdx.x * R;
  const int tid = threadIdx.x;
  const int lane = tid % kWarpSize;
  const int warp = tid / kWarpSize;
  const size_t rows0 = static_cast<size_t>(b) * seq;  // first row of this batch entry
  const int head = h * D;
  const int kvh = h / (Spec::kHeads / Spec::kKvHeads);

  // Query rows, scaled.
  for (int e = tid; e < R * D; e += kThreads) {
    const int r = e / D;
    const int d = e % D;
    const int i = q0 + r;
    qs[r][d] = i < seq ? Convert<T>::in(q[(rows0 + i) * Spec::kLd + head + d]) * Spec::kScale : 0.0f;
  }

  // Scores, one tile of 32 keys at a time.
  for (int t0 = 0; t0 < kv_seq; t0 += kAttentionKeyTile) {
    __syncthreads();  // the previous tile is consumed
    for (int e = tid; e < kAttentionKeyTile * D; e += kThreads) {
      const int j = e / D;
      const int d = e % D;
      const int key = t0 + j;
      kv[A::KeyIndex(j, d)] = key < kv_seq ? Convert<T>::in(k[A::KRow(b, key, kvh, kv_seq) + d]) : 0.0f;
    }
    __syncthreads();
    const int key = t0 + lane;
    for (int r = warp; r < R; r += kAttentionWarps) {
      const int i = q0 + r;
      if (i >= seq) {
        break;
      }
      float s = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d) {
        s += qs[r][d] * kv[A::KeyIndex(lane, d)];
      }
      if (Spec::kWriteScores && key < kv_seq) {
        scores[((static_cast<size_t>(b) * Spec::kHeads + h) * seq + i) * kv_seq + key] = Convert<T>::out(s);
      }
      if constexpr (Spec::kSoftcap > 0.0f) {
        s = Spec::kSoftcap * tanhf(s / Spec::kSoftcap);
      }
      if (key < kv_seq) {
        if (Spec::kHasBias) {
          s += Convert<T>::in(bias[A::BiasRow(b, h, i, seq, kv_seq) + key]);
        }
        if (Spec::kMaskKind == kMaskKeyPadding && mask[static_cast<size_t>(b) * kv_seq + key] <= 0) {
          s += Spec::kMaskFilter;
        }
        if ((Spec::kCausal && key > i) || (Spec::kWindow > 0 && key <= i - Spec::kWindow)) {
          s = -INFINITY;
        }
        ps[r][key] = s;
      }
    }
  }
  __syncwarp();

  // Probabilities: each warp its own rows.
  for (int r = warp; r < R; r += kAttentionWarps) {
    if (q0 + r >= seq) {
      break;
    }
    float s[kKeysPerLane];
#pragma unroll
    for (int c = 0; c < kKeysPerLane; ++c) {
      const int j = lane + c * kWarpSize;
      s[c] = j < kv_seq ? ps[r][j] : 0.0f;
    }
    WarpSoftmax<kKeysPerLane, Spec::kEmptyRow == kEmptyRowZero>(s, kv_seq,
                                                                Spec::kHasSink ? Convert<T>::in(sink[h]) : -INFINITY);
#pragma unroll
    for (int c = 0; c < kKeysPerLane; ++c) {
      const int j = lane + c * kWarpSize;
      if (j < kv_seq) {
        ps[r][j] = s[c];
      }
    }
  }

  // Probabilities times values, one tile of 32 values at a time.
  float acc[kRowsPerWarp][kDimsPerLane];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
#pragma unroll
    for (int c = 0; c < kDimsPerLane; ++c) {
      acc[rr][c] = 0.0f;
    }
  }
  for (int t0 = 0; t0 < kv_seq; t0 += kAttentionKeyTile) {
    __syncthreads();  // the previous tile is consumed, the probabilities written
    for (int e = tid; e < kAttentionKeyTile * DV; e += kThreads) {
      const int j = e / DV;
      const int d = e % DV;
      const int key = t0 + j;
      kv[j * DV + d] = key < kv_seq ? Convert<T>::in(v[A::VRow(b, key, kvh, kv_seq) + d]) : 0.0f;
    }
    __syncthreads();
    const int n = min(kAttentionKeyTile, kv_seq - t0);
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp + rr * kAttentionWarps;
      if (q0 + r < seq) {
        for (int j = 0; j < n; ++j) {
          const float p = ps[r][t0 + j];
#pragma unroll
          for (int c = 0; c < kDimsPerLane; ++c) {
            const int d = lane + c * kWarpSize;
            if (d < DV) {
              acc[rr][c] += p * kv[j * DV + d];
            }
          }
        }
      }
    }
  }

#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int i = q0 + warp + rr * kAttentionWarps;
    if (i < seq) {
      const float rs = Spec::kHasRowScale ? Convert<T>::in(row_scale[rows0 + i]) : 1.0f;
#pragma unroll
      for (int c = 0; c < kDimsPerLane; ++c) {
        const int d = lane + c * kWarpSize;
        if (d < DV) {
          out[(rows0 + i) * kOutLd + h * DV + d] = Convert<T>::out(acc[rr][c] * rs);
        }
      }
    }
  }
}

// Attention launches AttentionKernel for batch sequences of seq queries over
// kv_seq keys (kv_seq = seq for self-attention, and for a packed QKV).
template <typename T, typename Spec>
cudaError_t Attention(const T* q, const T* k, const T* v, const int32_t* mask, const T* bias, const T* row_scale,
                      const T* sink, T* out, T* scores, int batch, int seq, int kv_seq, cudaStream_t stream) {
  if (batch < 0 || seq < 0 || seq > Spec::kMaxSeq || kv_seq < 0 || kv_seq > Spec::kMaxSeq || batch > 65535 ||
      (seq > 0 && kv_seq == 0) || q == nullptr || k == nullptr || v == nullptr ||
      out == nullptr || (Spec::kMaskKind == kMaskKeyPadding && mask == nullptr) ||
      (Spec::kHasBias && bias == nullptr) || (Spec::kHasRowScale && row_scale == nullptr) ||
      (Spec::kHasSink && sink == nullptr) || (Spec::kWriteScores && scores == nullptr) ||
      ((Spec::kCausal || Spec::kWindow > 0) && kv_seq != seq)) {
    return cudaErrorInvalidValue;
  }
  if (batch == 0 || seq == 0) {
    return cudaSuccess;
  }
  constexpr int R = AttentionShape<Spec>::kRows;
  const dim3 grid(static_cast<unsigned>((seq + R - 1) / R), static_cast<unsigned>(Spec::kHeads),
                  static_cast<unsigned>(batch));
  AttentionKernel<T, Spec><<<grid, kAttentionWarps * kWarpSize, 0, stream>>>(q, k, v, mask, bias, row_scale, sink,
                                                                             out, scores, seq, kv_seq);
  return LaunchError();
}

}  // namespace qcc
