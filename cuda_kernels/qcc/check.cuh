// qcc/check.cuh: the host side of the check.cu harness that qcc -emit=cuda
// writes. It loads the raw little-endian input and expected-output files qcc
// wrote (expected outputs computed by ONNX Runtime on CPU), uploads them,
// runs one kernel per case, compares, and times the kernel with CUDA events
// to report the bandwidth it achieved: bytes read and written per launch
// divided by the time per launch, also as a fraction of the device-to-device
// cudaMemcpy bandwidth measured at start-up (on 256 MB buffers). Each timed
// launch follows a write of a buffer larger than the L2 cache, so its inputs
// come from device memory: a working set that stays in L2 between launches
// (50 MB on H100 and H200) would read near or above the copy bandwidth
// without meaning it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace qcc {
namespace check {

// Host-side element conversions (float <-> half go through the bits, so
// this file needs no device code).
inline float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {
    exp = 113u;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t FloatToHalfBits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) {  // rounds past the largest half
    return static_cast<uint16_t>(sign | 0x7c00u);
  }
  if (abs < 0x38800000u) {  // subnormal half (or zero)
    if (abs < 0x33000000u) {
      return sign;
    }
    const uint32_t e = abs >> 23;
    const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t h = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u))) {
      ++h;
    }
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) {
    ++h;
  }
  return static_cast<uint16_t>(sign | h);
}

// bfloat16 is the top half of a float, rounded to nearest even.
inline uint16_t FloatToBFloat16Bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>((x >> 16) | 0x40u);  // a quiet NaN
  }
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float BFloat16BitsToFloat(uint16_t b) {
  const uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}

template <typename T>
struct Host {
  static T From(double v) { return static_cast<T>(v); }
  static double To(T v) { return static_cast<double>(v); }
};

template <>
struct Host<__half> {
  static __half From(double v) {
    __half_raw r;
    r.x = FloatToHalfBits(static_cast<float>(v));
    return __half(r);
  }
  static double To(__half v) { return HalfBitsToFloat(static_cast<__half_raw>(v).x); }
};

template <>
struct Host<__nv_bfloat16> {
  static __nv_bfloat16 From(double v) {
    __nv_bfloat16_raw r;
    r.x = FloatToBFloat16Bits(static_cast<float>(v));
    return __nv_bfloat16(r);
  }
  static double To(__nv_bfloat16 v) { return BFloat16BitsToFloat(static_cast<__nv_bfloat16_raw>(v).x); }
};

// Matches is the check of one element: |got - want| <= atol + rtol * |want|.
// A NaN matches only a NaN: a row whose every key is masked out is NaN in the
// model (its softmax is 0/0), and there a NaN is the right answer. An
// infinity matches the same infinity.
inline bool Matches(double got, double want, double atol, double rtol) {
  if (std::isnan(got) || std::isnan(want)) {
    return std::isnan(got) && std::isnan(want);
  }
  if (std::isinf(got) || std::isinf(want)) {
    return got == want;
  }
  return std::fabs(got - want) <= atol + rtol * std::fabs(want);
}

// Representable reports whether x keeps its meaning in T: a finite value must
// stay finite (a float model's -3.4e38 mask becomes -inf in half).
template <typename T>
bool Representable(double x) {
  return !std::isfinite(x) || std::isfinite(Host<T>::To(Host<T>::From(x)));
}

// Pack3 interleaves q, k and v ([rows, hidden] each) into the [rows, 3 *
// hidden] layout a QKV GEMM writes.
inline std::vector<float> Pack3(const std::vector<float>& q, const std::vector<float>& k,
                                const std::vector<float>& v, size_t hidden) {
  const size_t rows = q.size() / hidden;
  std::vector<float> out(3 * rows * hidden);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t j = 0; j < hidden; ++j) {
      out[(3 * r) * hidden + j] = q[r * hidden + j];
      out[(3 * r + 1) * hidden + j] = k[r * hidden + j];
      out[(3 * r + 2) * hidden + j] = v[r * hidden + j];
    }
  }
  return out;
}

// TensorCoreFlopsPerClock is an SM's dense FP16 tensor-core arithmetic per clock
// (FP32 accumulation) by compute capability: 4096 on sm_90 (H100/H200), 2048 on
// sm_80 (A100), 1024 on the other sm_8x and on sm_7x; 0 when unknown.
inline int TensorCoreFlopsPerClock(int major, int minor) {
  if (major == 9) {
    return 4096;
  }
  if (major == 8) {
    return minor == 0 ? 2048 : 1024;
  }
  return major == 7 ? 1024 : 0;
}

// TensorCorePeak is the nominal dense FP16 tensor-core peak in TFLOP/s at the SM
// clock the device reports.
inline double TensorCorePeak(int major, int minor, int sms, int sm_khz) {
  return static_cast<double>(TensorCoreFlopsPerClock(major, minor)) * sms * sm_khz * 1e3 / 1e12;
}

// Harness holds the run: the data folder, the device, the measured copy
// bandwidth and the tally.
class Harness {
 public:
  explicit Harness(std::string dir) : dir_(std::move(dir)) {}

  // Init picks device 0, prints it and measures the device-to-device copy
  // bandwidth. It returns false when there is no usable device.
  bool Init() {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
      std::printf("qcc check: no CUDA device (%s)\n", err != cudaSuccess ? cudaGetErrorString(err) : "none found");
      return false;
    }
    cudaDeviceProp prop;
    if (!Ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties")) {
      return false;
    }
    int clock_khz = 0;
    int bus_bits = 0;
    cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0);
    cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0);
    const double spec = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    copy_gbs_ = MeasureCopy();
    int l2 = 0;
    cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0);
    flush_bytes_ = std::max(size_t(256) << 20, 4 * static_cast<size_t>(l2));
    if (!Ok(cudaMalloc(&flush_, flush_bytes_), "cudaMalloc")) {
      return false;
    }
    std::printf("qcc check: device %s (sm_%d%d), %d SMs\n", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount);
    std::printf("qcc check: peak bandwidth %.1f GB/s measured (device-to-device cudaMemcpy, bytes read + written); "
                "%.1f GB/s from the memory clock and bus width\n",
                copy_gbs_, spec);
    std::printf("qcc check: each timed launch follows a %zu MB write that evicts the %d MB L2 cache\n",
                flush_bytes_ >> 20, l2 >> 20);
    int sm_khz = 0;
    cudaDeviceGetAttribute(&sm_khz, cudaDevAttrClockRate, 0);
    tc_tflops_ = TensorCorePeak(prop.major, prop.minor, prop.multiProcessorCount, sm_khz);
    std::printf("qcc check: tensor-core peak %.0f TFLOP/s nominal (dense FP16 with FP32 sums: %d SMs x %.2f GHz x "
                "%d FLOP/clock; of_tc for f16 and bf16 attention)\n",
                tc_tflops_, prop.multiProcessorCount, sm_khz * 1e-6, TensorCoreFlopsPerClock(prop.major, prop.minor));
    // max_rel is per element (over |want| floored at 1e-3); of_max is max_abs over the
    // largest |want|, the error relative to the output's scale.
    std::printf("%-18s %-44s %-4s %-10s %-10s %-10s %-6s %9s %9s %7s %8s %6s\n", "block", "kernel", "type", "max_abs",
                "max_rel", "of_max", "result", "time_us", "GB/s", "of_copy", "TFLOP/s", "of_tc");
    return copy_gbs_ > 0;
  }

  // Load reads name (count elements of T) from the data folder; a missing or
  // mis-sized file marks the current case failed and returns zeros.
  template <typename T>
  std::vector<T> Load(const char* name, size_t count) {
    std::vector<T> v(count);
    const std::string path = dir_ + "/" + name;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) {
      std::printf("qcc check: cannot open %s (did qcc write the check data? it needs ONNX Runtime)\n", path.c_str());
      load_failed_ = true;
      return v;
    }
    const size_t got = std::fread(v.data(), sizeof(T), count, f);
    const bool extra = std::fgetc(f) != EOF;
    std::fclose(f);
    if (got != count || extra) {
      std::printf("qcc check: %s: expected %zu bytes\n", path.c_str(), count * sizeof(T));
      load_failed_ = true;
    }
    return v;
  }

  // Loaded reports whether every Load since the last call succeeded, and
  // counts the case as failed when not.
  bool Loaded(const char* block) {
    const bool ok = !load_failed_;
    if (!ok) {
      std::printf("%-18s %s\n", block, "FAILED: check data missing");
      ++failed_;
    }
    load_failed_ = false;
    return ok;
  }

  bool Ok(cudaError_t err, const char* what) {
    if (err != cudaSuccess) {
      std::printf("qcc check: %s: %s\n", what, cudaGetErrorString(err));
      return false;
    }
    return true;
  }

  void Tally(bool pass) { pass ? ++passed_ : ++failed_; }
  void Skip() { ++skipped_; }
  double TensorCoreTFlops() const { return tc_tflops_; }
  double CopyGBs() const { return copy_gbs_; }

  // Flush writes the scratch buffer on stream 0, evicting the L2 cache.
  void Flush(int round) { cudaMemsetAsync(flush_, round & 0xff, flush_bytes_, 0); }

  ~Harness() { cudaFree(flush_); }

  // Summary prints the tally and returns the exit status.
  int Summary() const {
    std::printf("qcc check: %d passed, %d failed, %d skipped\n", passed_, failed_, skipped_);
    return failed_ == 0 ? 0 : 1;
  }

 private:
  double MeasureCopy() {
    const size_t bytes = size_t(256) << 20;
    void* a = nullptr;
    void* b = nullptr;
    if (!Ok(cudaMalloc(&a, bytes), "cudaMalloc") || !Ok(cudaMalloc(&b, bytes), "cudaMalloc")) {
      cudaFree(a);
      return 0;
    }
    cudaMemset(a, 1, bytes);
    cudaEvent_t start;
    cudaEvent_t stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);  // warm-up
    const int iters = 10;
    cudaEventRecord(start);
    for (int i = 0; i < iters; ++i) {
      cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice);
    }
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaFree(a);
    cudaFree(b);
    return ms > 0 ? 2.0 * bytes * iters / (ms * 1e-3) / 1e9 : 0;
  }

  std::string dir_;
  double copy_gbs_ = 0;
  double tc_tflops_ = 0;
  void* flush_ = nullptr;
  size_t flush_bytes_ = 0;
  bool load_failed_ = false;
  int passed_ = 0;
  int failed_ = 0;
  int skipped_ = 0;
};

// Case is one kernel run against one block's expected outputs. Uploads count
// as bytes read and outputs as bytes written; Finish runs the kernel, checks
// the outputs, times it and prints a line.
class Case {
 public:
  Case(Harness& h, const char* block, const char* kernel, const char* type)
      : h_(h), block_(block), kernel_(kernel), type_(type) {}
  Case(const Case&) = delete;
  Case& operator=(const Case&) = delete;
  ~Case() {
    for (void* p : buffers_) {
      cudaFree(p);
    }
  }

  // Upload copies host (converted to T) to the device. A finite value beyond
  // T's range (a float model's -3.4e38 mask in half) makes the case a skip: the
  // block cannot run in T on this data, and a model in T keeps such a block in
  // float (the precision pass does).
  template <typename T, typename S>
  T* Upload(const std::vector<S>& host) {
    std::vector<T> conv(host.size());
    for (size_t i = 0; i < host.size(); ++i) {
      const double x = Host<S>::To(host[i]);
      conv[i] = Host<T>::From(x);
      if (!Representable<T>(x)) {
        if (overflow_ == 0) {
          overflow_first_ = x;
        }
        ++overflow_;
      }
    }
    T* d = Alloc<T>(host.size());
    if (d != nullptr && !h_.Ok(cudaMemcpy(d, conv.data(), conv.size() * sizeof(T), cudaMemcpyHostToDevice), "upload")) {
      ok_ = false;
    }
    bytes_ += host.size() * sizeof(T);
    return d;
  }

  // Output allocates count elements of T, filled with 0xff bytes (NaN in
  // float and half). Finish runs the kernel a second time over zeros: an
  // element the kernel does not write keeps the fill, and no value equals
  // both fills (0xff alone would pass as an int8 -1).
  template <typename T>
  T* Output(size_t count) {
    T* d = Alloc<T>(count);
    if (d != nullptr) {
      cudaMemset(d, 0xff, count * sizeof(T));
      outputs_.push_back({d, count * sizeof(T)});
    }
    bytes_ += count * sizeof(T);
    return d;
  }

  void Launch(std::function<cudaError_t(cudaStream_t)> f) { launch_ = std::move(f); }

  // SetBytes sets the bytes one launch reads and writes (else: every upload
  // and output, once).
  void SetBytes(double bytes) { bytes_ = bytes; }

  // SetFlops sets the arithmetic of one launch (attention: 4 * batch * heads *
  // seq * seq * head_size for Q K^T and P V), reported as TFLOP/s. Its bytes
  // are the memory floor (q, k, v and the output once), so of_copy is the
  // fraction of the floor's time achieved.
  void SetFlops(double flops) { flops_ = flops; }

  // Expect compares a device output with the expected values, element by
  // element (Matches: a NaN is only equal to a NaN, as in the emulation
  // oracle, codegen/cuda's compareOutputs).
  template <typename T, typename W>
  void Expect(const char* name, const T* dev, const std::vector<W>& want, double atol, double rtol) {
    expects_.push_back([this, name, dev, &want, atol, rtol]() {
      std::vector<T> got(want.size());
      if (!h_.Ok(cudaMemcpy(got.data(), dev, got.size() * sizeof(T), cudaMemcpyDeviceToHost), "download")) {
        return false;
      }
      bool pass = true;
      for (size_t i = 0; i < want.size(); ++i) {
        const double w = Host<W>::To(want[i]);
        const double g = Host<T>::To(got[i]);
        const bool match = Matches(g, w, atol, rtol);
        const double d = match && !std::isfinite(w) ? 0.0 : std::fabs(g - w);
        if (!match) {
          if (pass) {
            std::printf("%-18s %s: %s[%zu] = %g, want %g\n", block_, kernel_, name, i, g, w);
          }
          pass = false;
        }
        if (d > max_abs_ || std::isnan(d)) {
          max_abs_ = d;
        }
        if (std::fabs(w) > max_want_) {
          max_want_ = std::fabs(w);
        }
        const double r = d / std::fmax(std::fabs(w), 1e-3);
        if (r > max_rel_ || std::isnan(r)) {
          max_rel_ = r;
        }
      }
      return pass;
    });
  }

  // Finish runs, checks, times and reports the case.
  void Finish() {
    if (overflow_ > 0) {
      std::printf("%-18s %-44s %-4s skipped: %zu input values beyond the type's range (the first %g)\n", block_,
                  kernel_, type_, overflow_, overflow_first_);
      h_.Skip();
      return;
    }
    bool pass = ok_ && launch_ != nullptr;
    for (int fill = 0; fill < 2 && pass; ++fill) {
      if (fill == 1) {
        for (const auto& o : outputs_) {
          pass = h_.Ok(cudaMemset(o.first, 0, o.second), "cudaMemset") && pass;
        }
      }
      if (!pass || !h_.Ok(launch_(0), kernel_) || !h_.Ok(cudaDeviceSynchronize(), kernel_)) {
        pass = false;
        break;
      }
      for (auto& e : expects_) {
        pass = e() && pass;
      }
    }
    float us = 0;
    if (ok_ && launch_ != nullptr) {
      us = TimeUs();
    }
    const double gbs = us > 0 ? bytes_ / (us * 1e-6) / 1e9 : 0;
    char tflops[16] = "-";
    char of_tc[16] = "-";
    if (flops_ > 0 && us > 0) {
      const double t = flops_ / (us * 1e-6) / 1e12;
      std::snprintf(tflops, sizeof tflops, "%.2f", t);
      if (std::strcmp(type_, "f32") != 0 && h_.TensorCoreTFlops() > 0) {
        std::snprintf(of_tc, sizeof of_tc, "%.1f%%", 100.0 * t / h_.TensorCoreTFlops());
      }
    }
    const double of_max = max_want_ > 0 ? max_abs_ / max_want_ : max_abs_;
    const double of_copy = h_.CopyGBs() > 0 ? 100.0 * gbs / h_.CopyGBs() : 0.0;
    std::printf("%-18s %-44s %-4s %-10.3g %-10.3g %-10.3g %-6s %9.2f %9.1f %6.1f%% %8s %6s\n", block_, kernel_, type_,
                max_abs_, max_rel_, of_max, pass ? "ok" : "FAILED", us, gbs, of_copy, tflops, of_tc);
    h_.Tally(pass);
  }

 private:
  template <typename T>
  T* Alloc(size_t count) {
    void* d = nullptr;
    if (!h_.Ok(cudaMalloc(&d, count * sizeof(T) + 16), "cudaMalloc")) {
      ok_ = false;
      return nullptr;
    }
    buffers_.push_back(d);
    return static_cast<T*>(d);
  }

  // TimeUs is the mean time of a launch: each of 20 launches (after two for
  // warm-up) is timed alone, between events recorded right after an L2
  // eviction (Harness::Flush), so none reads what the previous one cached.
  float TimeUs() {
    constexpr int kIters = 20;
    for (int i = 0; i < 2; ++i) {
      launch_(0);
    }
    std::vector<cudaEvent_t> ev(2 * kIters);
    for (auto& e : ev) {
      cudaEventCreate(&e);
    }
    for (int i = 0; i < kIters; ++i) {
      h_.Flush(i);
      cudaEventRecord(ev[2 * i]);
      launch_(0);
      cudaEventRecord(ev[2 * i + 1]);
    }
    cudaEventSynchronize(ev.back());
    float total = 0;
    for (int i = 0; i < kIters; ++i) {
      float ms = 0;
      cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]);
      total += ms;
    }
    for (auto& e : ev) {
      cudaEventDestroy(e);
    }
    return total * 1e3f / kIters;
  }

  Harness& h_;
  const char* block_;
  const char* kernel_;
  const char* type_;
  std::vector<void*> buffers_;
  std::vector<std::pair<void*, size_t>> outputs_;
  std::vector<std::function<bool()>> expects_;
  std::function<cudaError_t(cudaStream_t)> launch_;
  double bytes_ = 0;
  double flops_ = 0;
  double max_abs_ = 0;
  double max_rel_ = 0;
  double max_want_ = 0;
  size_t overflow_ = 0;
  double overflow_first_ = 0;
  bool ok_ = true;
};

}  // namespace check
}  // namespace qcc
