// qcc/embedding.cuh: embedding gather + LayerNorm (EmbedLayerNormalization).
//
// For each token: word[input_id] + position[position] (+ segment[segment_id]),
// normalised like layernorm.cuh's rows. The position is the token's index in
// its sequence, or position_ids[batch, seq] when Spec::kPositionIds. ONNX
// Runtime refuses an id outside its table; a kernel cannot, so such a token's
// output row is NaN (it reads no table out of bounds), and the launcher
// refuses a sequence longer than the position table when positions are the
// token indices.
//
// A Spec is a struct of compile-time constants that qcc generates per block:
//   kHidden, kEpsilon, kHasBeta    as for LayerNorm
//   kCentred                       as for LayerNorm (true: a LayerNorm)
//   kVocab, kMaxPositions          rows of the word and position tables
//   kTypeVocab                     rows of the segment table, 0 when absent
//   kPositionIds                   bool: position ids are an input
#pragma once

#include "layernorm.cuh"

namespace qcc {

__device__ __forceinline__ bool InTable(int id, int rows) { return id >= 0 && id < rows; }

template <typename T, typename Spec>
__global__ void __launch_bounds__(Rows<ThreadsPerRow<T>(Spec::kHidden)>::kBlock)
    EmbedLayerNormKernel(const int32_t* __restrict__ input_ids, const int32_t* __restrict__ segment_ids,
                         const int32_t* __restrict__ position_ids, const T* __restrict__ word,
                         const T* __restrict__ position, const T* __restrict__ segment, const T* __restrict__ gamma,
                         const T* __restrict__ beta, T* __restrict__ output, int rows, int seq) {
  NormalizeRows<T, Spec, ThreadsPerRow<T>(Spec::kHidden)>(rows, gamma, beta, output, [=](int row) {
    constexpr int N = Spec::kHidden;
    const int wid = input_ids[row];
    const int pid = Spec::kPositionIds ? position_ids[row] : row % seq;
    const int sid = Spec::kTypeVocab > 0 ? segment_ids[row] : 0;
    const bool bad = !InTable(wid, Spec::kVocab) || !InTable(pid, Spec::kMaxPositions) ||
                     (Spec::kTypeVocab > 0 && !InTable(sid, Spec::kTypeVocab));
    const int w = bad ? 0 : wid;
    const int p = bad ? 0 : pid;
    const int s = bad ? 0 : sid;
    return [=](int off, auto& x) {
      if (bad) {
        for (auto& e : x) {
          e = __int_as_float(0x7fc00000);  // NaN
        }
        return;
      }
      LoadVec<T>(word + static_cast<size_t>(w) * N + off, x);
      AddVec<T>(position + static_cast<size_t>(p) * N + off, x);
      if (Spec::kTypeVocab > 0) {
        AddVec<T>(segment + static_cast<size_t>(s) * N + off, x);
      }
    };
  });
}

// EmbedLayerNorm launches EmbedLayerNormKernel for batch sequences of seq
// tokens.
template <typename T, typename Spec>
cudaError_t EmbedLayerNorm(const int32_t* input_ids, const int32_t* segment_ids, const int32_t* position_ids,
                           const T* word, const T* position, const T* segment, const T* gamma, const T* beta,
                           T* output, int batch, int seq, cudaStream_t stream) {
  using L = Rows<ThreadsPerRow<T>(Spec::kHidden)>;
  constexpr int V = Row<T, Spec::kHidden, L::kThreads>::kVec;
  if (batch < 0 || seq < 0 || input_ids == nullptr || word == nullptr || position == nullptr || gamma == nullptr ||
      output == nullptr || (Spec::kHasBeta && beta == nullptr) ||
      (Spec::kTypeVocab > 0 && (segment_ids == nullptr || segment == nullptr)) ||
      (Spec::kPositionIds && position_ids == nullptr) || (!Spec::kPositionIds && seq > Spec::kMaxPositions) ||
      !Aligned(word, V) || !Aligned(position, V) || !Aligned(segment, V) || !Aligned(gamma, V) || !Aligned(beta, V) ||
      !Aligned(output, V)) {
    return cudaErrorInvalidValue;
  }
  const long long rows = static_cast<long long>(batch) * seq;
  if (rows == 0) {
    return cudaSuccess;
  }
  if (rows > 0x7fffffffLL) {
    return cudaErrorInvalidValue;
  }
  EmbedLayerNormKernel<T, Spec><<<L::Grid(static_cast<int>(rows)), L::kBlock, 0, stream>>>(
      input_ids, segment_ids, position_ids, word, position, segment, gamma, beta, output, static_cast<int>(rows),
      seq);
  return LaunchError();
}

}  // namespace qcc
