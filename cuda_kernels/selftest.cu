// selftest.cu: checks qcc's CUDA building blocks against host references,
// without ONNX Runtime: warp reductions, vector loads, LayerNorm (warp and
// block rows, ragged widths), skip+LayerNorm, the GELU variants, the attention
// core (masked, biased, every shared-memory layout), embeddings and INT8
// quantization, in float and half.
//
//   nvcc -std=c++17 -arch=sm_80 -I cuda_kernels -o selftest cuda_kernels/selftest.cu && ./selftest
//
// Prints one line per case and "selftest: N passed, N failed"; exits 1 on a
// failure. Go tests compile it (cuda_kernels/kernels_test.go); it runs on a
// GPU only (scripts/cuda-gpu-check.sh).
#include <cmath>
#include <cstdio>
#include <vector>

#include "qcc/attention.cuh"
#include "qcc/check.cuh"
#include "qcc/embedding.cuh"
#include "qcc/flash_attention.cuh"
#include "qcc/gelu.cuh"
#include "qcc/layernorm.cuh"
#include "qcc/quantize.cuh"

namespace {

int g_passed = 0;
int g_failed = 0;

#define CUDA_OK(call)                                                                          \
  do {                                                                                         \
    const cudaError_t err_ = (call);                                                           \
    if (err_ != cudaSuccess) {                                                                 \
      std::printf("selftest: %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
      return false;                                                                            \
    }                                                                                          \
  } while (0)

// Deterministic values in [-2, 2).
std::vector<float> Random(size_t n, unsigned seed) {
  std::vector<float> v(n);
  unsigned s = seed * 2654435761u + 1u;
  for (size_t i = 0; i < n; ++i) {
    s = s * 1664525u + 1013904223u;
    v[i] = static_cast<float>(s >> 8) / static_cast<float>(1u << 24) * 4.0f - 2.0f;
  }
  return v;
}

template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { cudaMalloc(&p, count * sizeof(T) + 16); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() { cudaFree(p); }
  void Put(const std::vector<float>& v) {
    std::vector<T> h(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      h[i] = qcc::check::Host<T>::From(v[i]);
    }
    cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  template <typename S>
  void PutRaw(const std::vector<S>& v) {
    cudaMemcpy(p, v.data(), v.size() * sizeof(S), cudaMemcpyHostToDevice);
  }
  std::vector<float> Get() const {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) {
      v[i] = static_cast<float>(qcc::check::Host<T>::To(h[i]));
    }
    return v;
  }
};

// Rounds through T, as the device sees a host value.
template <typename T>
std::vector<float> Through(std::vector<float> v) {
  for (float& x : v) {
    x = static_cast<float>(qcc::check::Host<T>::To(qcc::check::Host<T>::From(x)));
  }
  return v;
}

bool Report(const char* name, const std::vector<float>& got, const std::vector<float>& want, double atol, double rtol) {
  double worst = 0;
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    const bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);  // a poisoned row
    if (!both_nan && !(d <= atol + rtol * std::fabs(want[i]))) {
      if (bad == 0) {
        std::printf("selftest: %s: [%zu] = %g, want %g\n", name, i, got[i], want[i]);
      }
      ++bad;
    }
    if (!both_nan && (d > worst || std::isnan(d))) {
      worst = d;
    }
  }
  std::printf("%-40s max_abs %-10.3g %s\n", name, worst, bad == 0 ? "ok" : "FAILED");
  bad == 0 ? ++g_passed : ++g_failed;
  return bad == 0;
}

template <typename T>
double Atol() {
  return sizeof(T) == 4 ? 1e-4 : 2e-2;
}

// ---- reductions ----

__global__ void WarpReduceKernel(const float* in, float* sums, float* maxes) {
  const float v = in[blockIdx.x * 32 + threadIdx.x];
  const float s = qcc::WarpSum(v);
  const float m = qcc::WarpMax(v);
  if (threadIdx.x == 5) {  // every lane holds the result
    sums[blockIdx.x] = s;
    maxes[blockIdx.x] = m;
  }
}

bool TestWarpReduce() {
  const int warps = 8;
  const std::vector<float> in = Random(warps * 32, 1);
  Dev<float> d_in(in.size()), d_sum(warps), d_max(warps);
  d_in.Put(in);
  WarpReduceKernel<<<warps, 32>>>(d_in.p, d_sum.p, d_max.p);
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> want_sum(warps), want_max(warps);
  for (int w = 0; w < warps; ++w) {
    double s = 0;
    float m = -INFINITY;
    for (int l = 0; l < 32; ++l) {
      s += in[w * 32 + l];
      m = std::fmax(m, in[w * 32 + l]);
    }
    want_sum[w] = static_cast<float>(s);
    want_max[w] = m;
  }
  return Report("warp sum", d_sum.Get(), want_sum, 1e-5, 1e-5) & Report("warp max", d_max.Get(), want_max, 0, 0);
}

// ---- vectors ----

template <typename T, int N>
__global__ void CopyVecKernel(const T* in, T* out) {
  float x[N];
  qcc::LoadVec<T, N>(in + threadIdx.x * N, x);
  for (int i = 0; i < N; ++i) {
    x[i] *= 2.0f;
  }
  qcc::StoreVec<T, N>(out + threadIdx.x * N, x);
}

template <typename T, int N>
bool TestVec(const char* name) {
  const std::vector<float> in = Through<T>(Random(64 * N, 2));
  Dev<T> d_in(in.size()), d_out(in.size());
  d_in.Put(in);
  CopyVecKernel<T, N><<<1, 64>>>(d_in.p, d_out.p);
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<float> want(in);
  for (float& x : want) {
    x *= 2.0f;
  }
  return Report(name, d_out.Get(), want, 0, 0);
}

// ---- LayerNorm ----

void HostLayerNorm(const float* x, const float* g, const float* b, int n, float eps, float* y, bool centred = true) {
  double mean = 0;
  for (int i = 0; centred && i < n; ++i) {
    mean += x[i];
  }
  mean /= n;
  double var = 0;
  for (int i = 0; i < n; ++i) {
    var += (x[i] - mean) * (x[i] - mean);
  }
  var /= n;
  const double rstd = 1.0 / std::sqrt(var + eps);
  for (int i = 0; i < n; ++i) {
    y[i] = static_cast<float>((x[i] - mean) * rstd * g[i] + (b ? b[i] : 0.0f));
  }
}

template <int H, bool Beta, bool Centred>
struct LNSpec {
  static constexpr int kHidden = H;
  static constexpr float kEpsilon = 1e-5f;
  static constexpr bool kHasBeta = Beta;
  static constexpr bool kCentred = Centred;
  static constexpr bool kHasBias = true;
  static constexpr bool kHasSum = true;
};

template <typename T, int H, bool Beta, bool Centred = true>
bool TestLayerNorm(const char* name, int rows) {
  using S = LNSpec<H, Beta, Centred>;
  const std::vector<float> x = Through<T>(Random(size_t(rows) * H, 3)), skip = Through<T>(Random(size_t(rows) * H, 4));
  const std::vector<float> g = Through<T>(Random(H, 5)), b = Through<T>(Random(H, 6)), bias = Through<T>(Random(H, 7));
  Dev<T> dx(x.size()), dskip(x.size()), dg(H), db(H), dbias(H), dy(x.size()), dsum(x.size());
  dx.Put(x);
  dskip.Put(skip);
  dg.Put(g);
  db.Put(b);
  dbias.Put(bias);
  std::vector<float> want(x.size()), sum(x.size()), want_skip(x.size());
  for (int r = 0; r < rows; ++r) {
    HostLayerNorm(&x[size_t(r) * H], g.data(), Beta ? b.data() : nullptr, H, S::kEpsilon, &want[size_t(r) * H],
                  Centred);
    for (int i = 0; i < H; ++i) {
      const size_t k = size_t(r) * H + i;
      sum[k] = static_cast<float>(qcc::check::Host<T>::To(qcc::check::Host<T>::From(x[k] + skip[k] + bias[i])));
    }
    HostLayerNorm(&sum[size_t(r) * H], g.data(), Beta ? b.data() : nullptr, H, S::kEpsilon,
                  &want_skip[size_t(r) * H], Centred);
  }
  CUDA_OK((qcc::LayerNorm<T, S>(dx.p, dg.p, db.p, dy.p, rows, 0)));
  CUDA_OK(cudaDeviceSynchronize());
  bool ok = Report(name, dy.Get(), want, Atol<T>(), Atol<T>());
  CUDA_OK((qcc::SkipLayerNorm<T, S>(dx.p, dskip.p, dbias.p, dg.p, db.p, dy.p, dsum.p, rows, 0)));
  CUDA_OK(cudaDeviceSynchronize());
  const std::string skip_name = std::string(name) + " skip";
  ok = Report(skip_name.c_str(), dy.Get(), want_skip, Atol<T>(), Atol<T>()) & ok;
  const std::string sum_name = std::string(name) + " skip sum";
  ok = Report(sum_name.c_str(), dsum.Get(), sum, 1e-6, 1e-3) & ok;
  // Both row layouts whatever the launchers chose for this device and row count:
  // warp (or block) rows, and the short grid's block per row.
  constexpr int kBase = qcc::ThreadsPerRow<T>(H);
  constexpr int kShort = qcc::ShortGridThreads<T>(H);
  CUDA_OK((qcc::LayerNormRows<T, S, kBase>(dx.p, dg.p, db.p, dy.p, rows, 0)));
  CUDA_OK(cudaDeviceSynchronize());
  ok = Report((std::string(name) + " rows").c_str(), dy.Get(), want, Atol<T>(), Atol<T>()) & ok;
  CUDA_OK((qcc::LayerNormRows<T, S, kShort>(dx.p, dg.p, db.p, dy.p, rows, 0)));
  CUDA_OK(cudaDeviceSynchronize());
  ok = Report((std::string(name) + " short grid").c_str(), dy.Get(), want, Atol<T>(), Atol<T>()) & ok;
  CUDA_OK((qcc::SkipLayerNormRows<T, S, kShort>(dx.p, dskip.p, dbias.p, dg.p, db.p, dy.p, dsum.p, rows, 0)));
  CUDA_OK(cudaDeviceSynchronize());
  ok = Report((skip_name + " short grid").c_str(), dy.Get(), want_skip, Atol<T>(), Atol<T>()) & ok;
  return Report((sum_name + " short grid").c_str(), dsum.Get(), sum, 1e-6, 1e-3) & ok;
}

// ---- GELU ----

template <int N, int Approx, bool Bias>
struct GeluSpec {
  static constexpr int kColumns = N;
  static constexpr int kApprox = Approx;
  static constexpr float kAlpha = 1.702f;
  static constexpr bool kHasBias = Bias;
};

double HostGelu(double x, int approx) {
  if (approx == qcc::kGeluErf) {
    return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
  }
  if (approx == qcc::kGeluTanh) {
    return 0.5 * x * (1 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  }
  return x / (1 + std::exp(-1.702 * x));
}

template <typename T, int N, int Approx, bool Bias>
bool TestGelu(const char* name, int rows) {
  const std::vector<float> x = Through<T>(Random(size_t(rows) * N, 8)), bias = Through<T>(Random(N, 9));
  Dev<T> dx(x.size()), dbias(N), dy(x.size());
  dx.Put(x);
  dbias.Put(bias);
  std::vector<float> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    want[i] = static_cast<float>(HostGelu(x[i] + (Bias ? bias[i % N] : 0.0f), Approx));
  }
  CUDA_OK((qcc::BiasGelu<T, GeluSpec<N, Approx, Bias>>(dx.p, dbias.p, dy.p, rows, 0)));
  CUDA_OK(cudaDeviceSynchronize());
  return Report(name, dy.Get(), want, Atol<T>(), Atol<T>());
}

// ---- attention ----

template <int Heads, int KvHeads, int D, int Ld, int KvLd, int Layout, bool Causal, int Mask, bool Bias, bool RowScale,
          bool BiasShared, int DV, int VLd, int Window, int Softcap, bool Sink, bool Scores>
struct AttnSpec {
  static constexpr int kHeads = Heads;
  static constexpr int kHeadSize = D;
  static constexpr int kVHeadSize = DV;
  static constexpr int kVLd = VLd;
  static constexpr float kScale = 0.125f;
  static constexpr int kLd = Ld;
  static constexpr int kKvHeads = KvHeads;
  static constexpr int kKvLd = KvLd;
  static constexpr int kKvLayout = Layout;
  static constexpr bool kCausal = Causal;
  static constexpr int kWindow = Window;
  static constexpr float kSoftcap = static_cast<float>(Softcap);
  static constexpr bool kHasSink = Sink;
  static constexpr bool kWriteScores = Scores;
  static constexpr int kMaskKind = Mask;
  static constexpr float kMaskFilter = -10000.0f;
  static constexpr bool kHasBias = Bias;
  static constexpr bool kBiasBatch = !BiasShared;
  static constexpr bool kBiasHeads = !BiasShared;
  static constexpr bool kBiasRows = true;
  static constexpr bool kHasRowScale = RowScale;
  static constexpr int kEmptyRow = qcc::kEmptyRowZero;
  static constexpr int kMaxSeq = 512;
};

// TestAttention checks the attention core: packed q/k/v (one [rows, 3 * hidden]
// buffer) or separate tensors, k and v [batch, kv_seq, kv_heads * d] or [batch,
// kv_heads, kv_seq, d], grouped-query heads, causal, the key padding mask (<= 0
// pads; with three or more sequences the last is all padding), a bias ([batch,
// heads, seq, kv_seq], or with BiasShared one [seq, kv_seq] for every batch
// entry and head)
// and a row scale; kv_seq > 0 is a key sequence of its own (cross-attention);
// VD > 0 makes v's heads VD wide instead of D (and the output's); Window > 0 a
// causal query sees its Window latest keys; Softcap > 0 caps the scaled scores;
// Sink joins a logit per head to every row's softmax; Scores writes scale * q . k.
template <typename T, int Heads, int KvHeads, int D, bool Packed, int Layout, bool Causal, int Mask, bool Bias,
          bool RowScale, bool BiasShared = false, bool Flash = false, int VD = 0, int Window = 0, int Softcap = 0,
          bool Sink = false, bool Scores = false>
bool TestAttention(const char* name, int batch, int seq, int kv_seq = 0) {
  const int kvs = kv_seq > 0 ? kv_seq : seq;
  constexpr int DV = VD > 0 ? VD : D;
  constexpr int H = Heads * D;
  constexpr int HV = Heads * DV;  // the output's width
  constexpr int KvH = KvHeads * D;
  constexpr int VH = KvHeads * DV;
  constexpr int Ld = Packed ? 3 * H : H;
  constexpr int KvLd = Packed ? 3 * H : KvH;
  constexpr int VLd = Packed ? 3 * H : VH;
  static_assert(!Packed || (KvHeads == Heads && Layout == qcc::kLayoutBSH && DV == D), "packed q/k/v share one layout");
  using S = AttnSpec<Heads, KvHeads, D, Ld, KvLd, Layout, Causal, Mask, Bias, RowScale, BiasShared, DV, VLd, Window,
                     Softcap, Sink, Scores>;
  const size_t rows = size_t(batch) * seq;
  const size_t qn = rows * Ld;
  const size_t kn = Packed ? 0 : size_t(batch) * kvs * KvH;
  const size_t vn = Packed ? 0 : size_t(batch) * kvs * VH;
  const std::vector<float> buf = Through<T>(Random(qn + kn + vn, 10));
  const std::vector<float> bias = Through<T>(Random(size_t(batch) * Heads * seq * kvs, 11));
  const std::vector<float> rs = Through<T>(Random(rows, 12));
  const std::vector<float> sinks = Through<T>(Random(Heads, 13));
  std::vector<int32_t> mask(size_t(batch) * kvs, 1);
  for (int b = 0; b < batch; ++b) {
    for (int s = 0; s < kvs; ++s) {
      const bool all = batch >= 3 && b == batch - 1;
      if (all || (s >= kvs - b * kvs / 4 && s > 0)) {
        mask[size_t(b) * kvs + s] = s % 3 == 1 ? -1 : 0;
      }
    }
  }
  const size_t koff = Packed ? H : qn, voff = Packed ? 2 * H : qn + kn;
  // Dim d of key (value) j of head kvh: heads w wide, rows ld apart.
  auto kv = [&](int b, int j, int kvh, int d, int w, int ld) -> size_t {
    if (Layout == qcc::kLayoutBNSH) {
      return ((size_t(b) * KvHeads + kvh) * kvs + j) * w + d;
    }
    return (size_t(b) * kvs + j) * ld + kvh * w + d;
  };
  Dev<T> dbuf(buf.size()), dbias(bias.size()), drs(rs.size()), dsink(sinks.size()), dout(rows * HV);
  Dev<T> dscores(Scores ? size_t(batch) * Heads * seq * kvs : 1);
  std::vector<float> want_scores(Scores ? size_t(batch) * Heads * seq * kvs : 0);
  Dev<int32_t> dmask(mask.size());
  dbuf.Put(buf);
  dbias.Put(bias);
  drs.Put(rs);
  dsink.Put(sinks);
  dmask.PutRaw(mask);
  std::vector<float> want(rows * HV);
  std::vector<double> p(kvs);
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < Heads; ++h) {
      const int kvh = h / (Heads / KvHeads);
      for (int i = 0; i < seq; ++i) {
        double m = -INFINITY;
        for (int j = 0; j < kvs; ++j) {
          double s = 0;
          for (int d = 0; d < D; ++d) {
            s += buf[(size_t(b) * seq + i) * Ld + h * D + d] * buf[koff + kv(b, j, kvh, d, D, KvLd)];
          }
          s *= S::kScale;
          if (Scores) {
            want_scores[((size_t(b) * Heads + h) * seq + i) * kvs + j] = static_cast<float>(s);
          }
          if ((Causal && j > i) || (Window > 0 && j <= i - Window)) {
            p[j] = -INFINITY;
            continue;
          }
          if constexpr (Softcap > 0) {
            s = Softcap * std::tanh(s / Softcap);
          }
          if (Bias) {
            s += BiasShared ? bias[size_t(i) * kvs + j] : bias[((size_t(b) * Heads + h) * seq + i) * kvs + j];
          }
          if (Mask == qcc::kMaskKeyPadding && mask[size_t(b) * kvs + j] <= 0) {
            // In float, as the model adds it: next to the filter a score keeps about 1e-3
            // of its value, which decides the weights of a row with every key padded.
            s = static_cast<float>(static_cast<float>(s) + S::kMaskFilter);
          }
          p[j] = s;
          m = std::fmax(m, s);
        }
        double sum = 0;
        if (Sink) {
          m = std::fmax(m, sinks[h]);
          sum = std::exp(sinks[h] - m);
        }
        for (int j = 0; j < kvs; ++j) {
          p[j] = std::exp(p[j] - m);
          sum += p[j];
        }
        const double scale = RowScale ? rs[size_t(b) * seq + i] : 1.0;
        for (int d = 0; d < DV; ++d) {
          double o = 0;
          for (int j = 0; j < kvs; ++j) {
            o += p[j] / sum * buf[voff + kv(b, j, kvh, d, DV, VLd)];
          }
          want[(size_t(b) * seq + i) * HV + h * DV + d] = static_cast<float>(o * scale);
        }
      }
    }
  }
  if constexpr (Flash) {
    CUDA_OK((qcc::FlashAttention<T, S>(dbuf.p, dbuf.p + koff, dbuf.p + voff, dmask.p, dbias.p, drs.p, dsink.p, dout.p,
                                       nullptr, batch, seq, kvs, 0)));
  } else {
    CUDA_OK((qcc::Attention<T, S>(dbuf.p, dbuf.p + koff, dbuf.p + voff, dmask.p, dbias.p, drs.p, dsink.p, dout.p,
                                  dscores.p, batch, seq, kvs, 0)));
  }
  CUDA_OK(cudaDeviceSynchronize());
  const bool scores_ok = !Scores || Report(name, dscores.Get(), want_scores, Atol<T>(), Atol<T>());
  return Report(name, dout.Get(), want, Atol<T>(), Atol<T>()) && scores_ok;
}

// ---- embeddings ----

struct EmbSpec {
  static constexpr int kHidden = 96;
  static constexpr float kEpsilon = 1e-12f;
  static constexpr bool kHasBeta = true;
  static constexpr bool kCentred = true;
  static constexpr int kVocab = 50;
  static constexpr int kMaxPositions = 40;
  static constexpr int kTypeVocab = 2;
  static constexpr bool kPositionIds = false;
};

template <typename T>
bool TestEmbedding(const char* name) {
  constexpr int H = EmbSpec::kHidden;
  const int batch = 3, seq = 33;
  const std::vector<float> word = Through<T>(Random(EmbSpec::kVocab * H, 12)),
                           pos = Through<T>(Random(EmbSpec::kMaxPositions * H, 13)),
                           seg = Through<T>(Random(EmbSpec::kTypeVocab * H, 14)), g = Through<T>(Random(H, 15)),
                           b = Through<T>(Random(H, 16));
  std::vector<int32_t> ids(size_t(batch) * seq), types(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<int32_t>((i * 7 + 3) % EmbSpec::kVocab);
    types[i] = static_cast<int32_t>(i % seq >= seq / 2);
  }
  // Ids outside their tables (ONNX Runtime refuses them): the token's row is NaN.
  ids[5] = EmbSpec::kVocab;
  ids[9] = -1;
  types[20] = EmbSpec::kTypeVocab;
  Dev<T> dword(word.size()), dpos(pos.size()), dseg(seg.size()), dg(H), db(H), dout(ids.size() * H);
  Dev<int32_t> dids(ids.size()), dtypes(types.size());
  dword.Put(word);
  dpos.Put(pos);
  dseg.Put(seg);
  dg.Put(g);
  db.Put(b);
  dids.PutRaw(ids);
  dtypes.PutRaw(types);
  std::vector<float> want(ids.size() * H), row(H);
  for (size_t t = 0; t < ids.size(); ++t) {
    if (ids[t] < 0 || ids[t] >= EmbSpec::kVocab || types[t] >= EmbSpec::kTypeVocab) {
      for (int i = 0; i < H; ++i) {
        want[t * H + i] = NAN;
      }
      continue;
    }
    for (int i = 0; i < H; ++i) {
      row[i] = word[ids[t] * H + i] + pos[(t % seq) * H + i] + seg[types[t] * H + i];
    }
    HostLayerNorm(row.data(), g.data(), b.data(), H, EmbSpec::kEpsilon, &want[t * H]);
  }
  // A sequence longer than the position table, and a misaligned table, are refused.
  if (qcc::EmbedLayerNorm<T, EmbSpec>(dids.p, dtypes.p, nullptr, dword.p, dpos.p, dseg.p, dg.p, db.p, dout.p, 1,
                                      EmbSpec::kMaxPositions + 1, 0) != cudaErrorInvalidValue ||
      qcc::EmbedLayerNorm<T, EmbSpec>(dids.p, dtypes.p, nullptr, dword.p + 1, dpos.p, dseg.p, dg.p, db.p, dout.p,
                                      batch, seq, 0) != cudaErrorInvalidValue) {
    std::printf("selftest: %s: the launcher accepted a bad sequence length or alignment\n", name);
    ++g_failed;
    return false;
  }
  CUDA_OK((qcc::EmbedLayerNorm<T, EmbSpec>(dids.p, dtypes.p, nullptr, dword.p, dpos.p, dseg.p, dg.p, db.p, dout.p,
                                            batch, seq, 0)));
  CUDA_OK(cudaDeviceSynchronize());
  return Report(name, dout.Get(), want, Atol<T>(), Atol<T>());
}

// ---- quantization ----

template <bool PerChannel, int C, int Inner>
struct QSpec {
  static constexpr bool kPerChannel = PerChannel;
  static constexpr int kChannels = C;
  static constexpr int kInner = Inner;
  static constexpr bool kHasZeroPoint = true;
};

template <typename T, bool PerChannel, int C, int Inner>
bool TestQuantize(const char* name, long long n) {
  using S = QSpec<PerChannel, C, Inner>;
  const std::vector<float> x = Through<T>(Random(n, 17));
  std::vector<float> scale(C);
  std::vector<int8_t> zp(C);
  for (int c = 0; c < C; ++c) {
    scale[c] = 0.01f + 0.001f * c;
    zp[c] = static_cast<int8_t>(c % 7 - 3);
  }
  Dev<T> dx(n), dy(n);
  Dev<int8_t> dq(n), dzp(C);
  Dev<float> dscale(C);
  dx.Put(x);
  dscale.PutRaw(scale);
  dzp.PutRaw(zp);
  std::vector<float> want_q(n), want_dq(n);
  for (long long i = 0; i < n; ++i) {
    const int c = PerChannel ? static_cast<int>((i / Inner) % C) : 0;
    float q = std::nearbyint(x[i] / scale[c]) + zp[c];
    q = std::fmin(std::fmax(q, -128.0f), 127.0f);
    want_q[i] = q;
    want_dq[i] = (q - zp[c]) * scale[c];
  }
  CUDA_OK((qcc::QuantizeLinear<T, S>(dx.p, dscale.p, dzp.p, dq.p, n, 0)));
  CUDA_OK((qcc::DequantizeLinear<T, S>(dq.p, dscale.p, dzp.p, dy.p, n, 0)));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<int8_t> q8(n);
  cudaMemcpy(q8.data(), dq.p, n, cudaMemcpyDeviceToHost);
  std::vector<float> q(n);
  for (long long i = 0; i < n; ++i) {
    q[i] = q8[i];
  }
  const std::string dq_name = std::string(name) + " dequantize";
  return Report(name, q, want_q, 0, 0) & Report(dq_name.c_str(), dy.Get(), want_dq, 1e-6, sizeof(T) == 4 ? 1e-6 : 1e-3);
}

}  // namespace

int main() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("selftest: no CUDA device\n");
    return 1;
  }
  TestWarpReduce();
  TestVec<float, 4>("vector float4");
  TestVec<__half, 8>("vector half x8");
  TestVec<__half, 2>("vector half2");
  TestLayerNorm<float, 64, true>("layernorm f32 h64", 37);
  TestLayerNorm<float, 768, true>("layernorm f32 h768", 100);
  TestLayerNorm<float, 768, true>("layernorm f32 h768 (long grid)", 4096);
  TestLayerNorm<float, 1000, false>("layernorm f32 h1000 (ragged)", 9);
  TestLayerNorm<float, 4096, true>("layernorm f32 h4096 (block rows)", 5);
  TestLayerNorm<float, 67, true>("layernorm f32 h67 (scalar)", 11);
  TestLayerNorm<__half, 64, true>("layernorm f16 h64", 37);
  TestLayerNorm<__half, 1024, true>("layernorm f16 h1024", 64);
  TestLayerNorm<__half, 8192, true>("layernorm f16 h8192 (block rows)", 3);
  TestLayerNorm<float, 32, false, false>("rmsnorm f32 h32", 19);
  TestLayerNorm<float, 4096, false, false>("rmsnorm f32 h4096 (block rows)", 5);
  TestLayerNorm<__half, 1000, false, false>("rmsnorm f16 h1000 (ragged)", 9);
  TestGelu<float, 256, qcc::kGeluErf, true>("bias gelu f32 erf", 33);
  TestGelu<float, 3072, qcc::kGeluTanh, true>("fast gelu f32 tanh", 17);
  TestGelu<float, 30, qcc::kGeluSigmoid, false>("quick gelu f32 (no bias, odd)", 7);
  TestGelu<__half, 4096, qcc::kGeluErf, true>("bias gelu f16 erf", 9);
  constexpr int kBSH = qcc::kLayoutBSH;
  constexpr int kBNSH = qcc::kLayoutBNSH;
  constexpr int kPad = qcc::kMaskKeyPadding;
  TestAttention<float, 4, 4, 16, false, kBSH, false, kPad, false, false>("attention f32 d16 masked", 3, 37);
  TestAttention<float, 2, 2, 64, true, kBSH, false, kPad, false, false>("attention f32 d64 packed", 3, 130);
  TestAttention<float, 2, 2, 80, false, kBSH, false, qcc::kMaskNone, true, false>("attention f32 d80 biased", 2, 65);
  TestAttention<float, 4, 4, 8, false, kBSH, false, qcc::kMaskNone, true, false, true>(
      "attention f32 d8 shared bias", 3, 45);
  TestAttention<float, 4, 4, 8, false, kBSH, false, kPad, true, false>(
      "attention f32 d8 cross (45 queries, 70 keys)", 3, 45, 70);
  TestAttention<__half, 2, 2, 16, false, kBNSH, false, qcc::kMaskNone, true, false, true>(
      "attention f16 d16 cross bnsh (70 queries, 33 keys)", 2, 70, 33);
  TestAttention<float, 1, 1, 128, false, kBSH, false, kPad, true, false>("attention f32 d128 s512", 1, 512);
  TestAttention<float, 2, 2, 5, true, kBSH, true, kPad, false, false>("attention f32 d5 packed causal", 3, 70);
  TestAttention<float, 4, 2, 4, false, kBSH, false, kPad, false, false>("attention f32 d4 grouped-query", 3, 50);
  TestAttention<float, 4, 1, 16, false, kBSH, true, qcc::kMaskNone, false, false>("attention f32 d16 mqa causal", 2,
                                                                                  90);
  TestAttention<float, 4, 4, 16, false, kBNSH, false, qcc::kMaskNone, true, true>("attention f32 d16 bnsh rowscale", 2,
                                                                                  77);
  TestAttention<__half, 4, 4, 32, true, kBSH, false, kPad, true, false>("attention f16 d32", 2, 100);
  TestAttention<__half, 2, 2, 64, false, kBSH, false, kPad, false, false>("attention f16 d64", 3, 256);
  TestAttention<__half, 4, 4, 16, false, kBNSH, true, kPad, true, true>("attention f16 d16 bnsh causal", 3, 64);
  // Value heads of another width than query and key heads (multi-head latent
  // attention: 192 and 128; LeViT: 16 and 32), narrower, wider, not a multiple of 32.
  TestAttention<float, 2, 2, 48, false, kBSH, true, kPad, false, false, false, false, 32>(
      "attention f32 qk48 v32 causal", 3, 70);
  TestAttention<float, 4, 4, 16, false, kBSH, false, qcc::kMaskNone, true, false, false, false, 32>(
      "attention f32 qk16 v32 biased", 2, 49);
  TestAttention<float, 4, 2, 12, false, kBNSH, false, kPad, false, true, false, false, 40>(
      "attention f32 qk12 v40 bnsh grouped-query rowscale", 3, 45);
  TestAttention<__half, 2, 2, 192, false, kBSH, true, qcc::kMaskNone, false, false, false, false, 128>(
      "attention f16 qk192 v128 causal", 1, 130);
  // Gemma 2's soft cap and local layers, GPT-OSS's sinks and sliding window.
  TestAttention<float, 4, 2, 16, false, kBSH, true, qcc::kMaskNone, true, false, false, false, 0, 0, 2>(
      "attention f32 softcap causal grouped-query biased", 2, 70);
  TestAttention<float, 4, 2, 16, false, kBSH, true, qcc::kMaskNone, false, false, false, false, 0, 7, 0, true>(
      "attention f32 window 7 sinks", 2, 70);
  TestAttention<__half, 4, 1, 32, false, kBSH, true, qcc::kMaskNone, false, false, false, false, 0, 40, 1, true>(
      "attention f16 window 40 softcap sinks mqa", 2, 130);
  // The scores written out (PatchTST's residual attention), causal ones included.
  TestAttention<float, 4, 4, 16, false, kBSH, true, kPad, true, false, false, false, 0, 0, 0, false, true>(
      "attention f32 scores causal masked biased", 3, 45);
  // The tensor-core path: tiles of 64 queries and 64 keys, so sequences that are
  // not multiples of 64, a single token, head sizes 32 to 128, every layout.
  using bf16 = __nv_bfloat16;
  TestAttention<__half, 4, 4, 32, true, kBSH, false, kPad, false, false, false, true>("flash f16 d32 packed masked", 3,
                                                                                      100);
  TestAttention<__half, 2, 2, 64, false, kBSH, true, kPad, true, false, false, true>("flash f16 d64 causal biased", 3,
                                                                                     130);
  TestAttention<__half, 2, 2, 80, false, kBSH, false, qcc::kMaskNone, true, false, true, true>(
      "flash f16 d80 shared bias", 2, 65);
  TestAttention<__half, 2, 2, 128, false, kBSH, false, kPad, false, false, false, true>("flash f16 d128 s512", 1, 512);
  TestAttention<__half, 4, 2, 64, false, kBSH, false, kPad, false, false, false, true>("flash f16 d64 grouped-query",
                                                                                       3, 1);
  TestAttention<__half, 2, 2, 32, false, kBNSH, false, qcc::kMaskNone, true, true, false, true>(
      "flash f16 d32 cross bnsh rowscale (70 queries, 33 keys)", 2, 70, 33);
  TestAttention<bf16, 2, 2, 64, false, kBSH, true, kPad, false, false, false, true>("flash bf16 d64 causal", 3, 77);
  TestAttention<__half, 4, 2, 64, false, kBSH, true, qcc::kMaskNone, true, false, false, true, 0, 0, 2>(
      "flash f16 d64 softcap causal grouped-query biased", 2, 130);
  TestAttention<__half, 4, 2, 64, false, kBSH, true, qcc::kMaskNone, false, false, false, true, 0, 70, 0, true>(
      "flash f16 d64 window 70 sinks", 2, 200);
  TestEmbedding<float>("embed layernorm f32");
  TestEmbedding<__half>("embed layernorm f16");
  TestQuantize<float, false, 1, 1>("quantize f32 per tensor", 1001);
  TestQuantize<float, true, 48, 1>("quantize f32 per channel (last axis)", 48 * 20);
  TestQuantize<float, true, 6, 10>("quantize f32 per channel (axis 1)", 3 * 6 * 10);
  TestQuantize<float, true, 3, 16>("quantize f32 per channel (axis 0)", 3 * 16 * 7);
  TestQuantize<__half, true, 64, 1>("quantize f16 per channel", 64 * 9);
  std::printf("selftest: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
