// Backend parity: every op of the CUDA backend against the CPU backend (the numerical
// specification), op x dtype x the shapes that matter, in the manner of llama.cpp's
// test-backend-ops.
//
// Inputs are random and identical on both backends; every output is poisoned (NaN, or a
// sentinel index) on both before each run, so an element the GPU fails to write shows up as an
// error. Floating outputs are compared with ||gpu - cpu|| / ||cpu|| against a threshold per
// weight dtype (F32 1e-5, F16 1e-3, BF16 1e-2: the F16 / BF16 thresholds cover the prefill GEMM,
// which rounds activations to the weight dtype for the tensor cores); indices, casts and cache
// writes must match exactly. A summary table of every comparison prints at the end.
//
// Without a CUDA device every test skips with "no CUDA device: <reason>" (ctest label "gpu").
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device_info.h"
#include "kernels/cuda/launchers.h"
#include "tests/kernels/sparse_variants.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

using testing::RandomFloats;
using testing::RelativeError;

constexpr DType kWeightTypes[] = {DType::kF32, DType::kF16, DType::kBF16};

double Threshold(DType weights) {
  switch (weights) {
    case DType::kF16:
      return 1e-3;
    case DType::kBF16:
      return 1e-2;
    default:
      return 1e-5;
  }
}

// Test harness failures (a failed allocation or copy) end the test through an exception, which
// GoogleTest reports with its message.
void OrDie(const absl::Status& s) {
  if (!s.ok()) throw std::runtime_error(std::string(s.message()));
}

// ---- The summary printed after the suite ----

struct Comparison {
  std::string op, dtype, shape;
  double error, threshold;
};

std::vector<Comparison>& Comparisons() {
  static auto* all = new std::vector<Comparison>();
  return *all;
}

std::string& SkipReason() {
  static auto* reason = new std::string();
  return *reason;
}

class SummaryPrinter : public ::testing::Environment {
 public:
  void TearDown() override {
    if (!SkipReason().empty()) {
      std::printf("[parity] SKIPPED: %s\n", SkipReason().c_str());
      return;
    }
    int failed = 0;
    std::printf("[parity] %-15s %-5s %-44s %-10s %-9s\n", "op", "dtype", "shape", "error",
                "threshold");
    for (const Comparison& c : Comparisons()) {
      const bool ok = c.error <= c.threshold;  // false for NaN
      failed += ok ? 0 : 1;
      std::printf("[parity] %-15s %-5s %-44s %-10.2e %-9.1e %s\n", c.op.c_str(), c.dtype.c_str(),
                  c.shape.c_str(), c.error, c.threshold, ok ? "ok" : "FAIL");
    }
    std::printf("[parity] %zu comparisons, %d over threshold\n", Comparisons().size(), failed);
  }
};

::testing::Environment* const kSummary = ::testing::AddGlobalTestEnvironment(new SummaryPrinter);

// ---- Host data ----

TensorView ViewOf(void* data, DType dtype, const std::vector<int64_t>& dims, Device device) {
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.device = device;
  for (int64_t d : dims) v.shape[v.rank++] = d;
  return v;
}

// `values` stored as `dtype` (F32, F16, BF16 or, for I32, the values as integers).
std::vector<uint8_t> Store(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> bytes(values.size() * DTypeSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    switch (dtype) {
      case DType::kF32:
        std::memcpy(&bytes[i * 4], &values[i], 4);
        break;
      case DType::kF16: {
        const uint16_t h = FloatToF16(values[i]);
        std::memcpy(&bytes[i * 2], &h, 2);
        break;
      }
      case DType::kBF16: {
        const uint16_t h = FloatToBf16(values[i]);
        std::memcpy(&bytes[i * 2], &h, 2);
        break;
      }
      case DType::kI32: {
        const int32_t x = static_cast<int32_t>(values[i]);
        std::memcpy(&bytes[i * 4], &x, 4);
        break;
      }
      case DType::kU8:
        bytes[i] = static_cast<uint8_t>(values[i]);
        break;
    }
  }
  return bytes;
}

std::vector<uint8_t> StoreInts(const std::vector<int32_t>& values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

std::vector<float> Widen(const std::vector<uint8_t>& bytes, DType dtype) {
  const size_t n = bytes.size() / DTypeSize(dtype);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    switch (dtype) {
      case DType::kF32:
        std::memcpy(&out[i], &bytes[i * 4], 4);
        break;
      case DType::kF16:
        std::memcpy(&h, &bytes[i * 2], 2);
        out[i] = F16ToFloat(h);
        break;
      case DType::kBF16:
        std::memcpy(&h, &bytes[i * 2], 2);
        out[i] = Bf16ToFloat(h);
        break;
      case DType::kI32: {
        int32_t x;
        std::memcpy(&x, &bytes[i * 4], 4);
        out[i] = static_cast<float>(x);
        break;
      }
      case DType::kU8:
        out[i] = bytes[i];
        break;
    }
  }
  return out;
}

std::vector<int32_t> RandomInts(size_t n, int32_t lo, int32_t hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi);
  std::vector<int32_t> v(n);
  for (int32_t& x : v) x = dist(gen);
  return v;
}

// ---- A tensor on both backends ----

// The same tensor in host memory (for the CPU backend) and in device memory (for the CUDA
// backend).
class Twin {
 public:
  Twin(CudaBackend* gpu, DType dtype, std::vector<int64_t> dims)
      : gpu_(gpu), dtype_(dtype), dims_(std::move(dims)) {
    int64_t n = 1;
    for (int64_t d : dims_) n *= d;
    host_.resize(static_cast<size_t>(n) * DTypeSize(dtype_));
    auto p = gpu_->Allocate(host_.size());
    OrDie(p.status());
    device_ = *p;
  }
  ~Twin() { gpu_->Free(device_); }
  Twin(const Twin&) = delete;
  Twin& operator=(const Twin&) = delete;

  TensorView cpu() { return ViewOf(host_.data(), dtype_, dims_, Device::kCpu); }
  TensorView gpu() { return ViewOf(device_, dtype_, dims_, Device::kCuda); }
  const std::vector<int64_t>& dims() const { return dims_; }
  size_t bytes() const { return host_.size(); }

  // Same contents on both sides.
  void Set(const std::vector<uint8_t>& bytes) {
    if (bytes.size() != host_.size()) throw std::runtime_error("Twin::Set: size mismatch");
    host_ = bytes;
    OrDie(gpu_->CopyToDevice(device_, host_.data(), host_.size()));
  }
  void SetFloats(const std::vector<float>& values) { Set(Store(values, dtype_)); }
  void SetInts(const std::vector<int32_t>& values) { Set(StoreInts(values)); }

  // NaN in every float element (a sentinel in integer ones), on both sides.
  void Poison() {
    if (dtype_ == DType::kI32) {
      const int32_t sentinel = std::numeric_limits<int32_t>::min() + 7;
      for (size_t i = 0; i < host_.size(); i += 4) std::memcpy(&host_[i], &sentinel, 4);
    } else {
      Set(Store(std::vector<float>(host_.size() / DTypeSize(dtype_), NAN), dtype_));
      return;
    }
    OrDie(gpu_->CopyToDevice(device_, host_.data(), host_.size()));
  }

  std::vector<uint8_t> CpuBytes() const { return host_; }
  std::vector<uint8_t> GpuBytes() {
    std::vector<uint8_t> out(host_.size());
    OrDie(gpu_->Synchronize());
    OrDie(gpu_->CopyToHost(out.data(), device_, out.size()));
    return out;
  }
  std::vector<float> CpuFloats() const { return Widen(host_, dtype_); }
  std::vector<float> GpuFloats() { return Widen(GpuBytes(), dtype_); }

 private:
  CudaBackend* gpu_;
  DType dtype_;
  std::vector<int64_t> dims_;
  std::vector<uint8_t> host_;
  void* device_ = nullptr;
};

class ParityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<int> count = cuda::VisibleDeviceCount();
    if (!count.ok()) {
      SkipReason() = std::string(count.status().message());
      return;
    }
    if (*count == 0) {
      SkipReason() = "cudaGetDeviceCount reports 0 devices";
      return;
    }
    auto gpu = CudaBackend::Create(0);
    if (!gpu.ok()) {
      create_error_ = new std::string(gpu.status().ToString());
      return;
    }
    gpu_ = gpu->release();
    std::printf("[parity] CUDA backend on %s\n", gpu_->Description().c_str());
  }
  static void TearDownTestSuite() {
    delete gpu_;
    gpu_ = nullptr;
  }

  void SetUp() override {
    if (!SkipReason().empty()) GTEST_SKIP() << "no CUDA device: " << SkipReason();
    ASSERT_EQ(create_error_, nullptr) << "a CUDA device is present but the backend failed: "
                                      << *create_error_;
    auto cpu = MakeBackend(BackendKind::kCpu);
    ASSERT_TRUE(cpu.ok()) << cpu.status();
    cpu_ = std::move(cpu).value();
  }

  std::unique_ptr<Twin> Make(DType dtype, std::vector<int64_t> dims) {
    return std::make_unique<Twin>(gpu_, dtype, std::move(dims));
  }
  std::unique_ptr<Twin> Floats(const std::vector<float>& values, DType dtype,
                               std::vector<int64_t> dims) {
    auto t = Make(dtype, std::move(dims));
    t->SetFloats(values);
    return t;
  }
  std::unique_ptr<Twin> Ints(const std::vector<int32_t>& values) {
    auto t = Make(DType::kI32, {static_cast<int64_t>(values.size())});
    t->SetInts(values);
    return t;
  }

  // Relative error of the GPU's float output against the CPU's, recorded in the summary.
  void ExpectClose(Twin& out, absl::string_view op, DType dtype, const std::string& shape,
                   double threshold) {
    const std::vector<float> want = out.CpuFloats(), got = out.GpuFloats();
    const double error = RelativeError(got.data(), want.data(), want.size());
    Comparisons().push_back({std::string(op), std::string(DTypeName(dtype)), shape, error,
                             threshold});
    EXPECT_LE(error, threshold) << op << " " << DTypeName(dtype) << " " << shape
                                << " (NaN: an output element was not written)";
  }

  // Bit-exact equality (indices, casts, cache scatters).
  void ExpectExact(Twin& out, absl::string_view op, DType dtype, const std::string& shape) {
    const std::vector<uint8_t> want = out.CpuBytes(), got = out.GpuBytes();
    size_t mismatches = 0, first = want.size();
    for (size_t i = 0; i < want.size(); ++i) {
      if (want[i] != got[i]) {
        ++mismatches;
        first = std::min(first, i);
      }
    }
    Comparisons().push_back({std::string(op), std::string(DTypeName(dtype)), shape,
                             mismatches == 0 ? 0.0 : 1.0, 0.0});
    EXPECT_EQ(mismatches, 0u) << op << " " << DTypeName(dtype) << " " << shape
                              << ": bytes differ, first at byte " << first;
  }

  static CudaBackend* gpu_;
  static std::string* create_error_;
  std::unique_ptr<Backend> cpu_;
};

CudaBackend* ParityTest::gpu_ = nullptr;
std::string* ParityTest::create_error_ = nullptr;

// ---- Ops ----

TEST_F(ParityTest, Embedding) {
  struct Case {
    int64_t n, rows, dim, vocab_start;
  };
  for (const Case c : {Case{1, 32000, 512, 0}, Case{7, 1000, 64, 500}, Case{33, 32016, 128, 0},
                       Case{16, 16008, 256, 16008}}) {
    for (DType dtype : kWeightTypes) {
      const std::string shape =
          absl::StrCat("n=", c.n, " table=[", c.rows, ",", c.dim, "] start=", c.vocab_start);
      SCOPED_TRACE(shape);
      // Ids from the whole vocabulary: some fall outside this shard and must give zeros.
      auto ids = Ints(RandomInts(c.n, 0, static_cast<int32_t>(c.vocab_start + c.rows + 100), 1));
      auto table = Floats(RandomFloats(c.rows * c.dim, 2), dtype, {c.rows, c.dim});
      auto out = Make(DType::kF32, {c.n, c.dim});
      out->Poison();
      ASSERT_OK(cpu_->Embedding({ids->cpu(), table->cpu(), out->cpu(), c.vocab_start}));
      ASSERT_OK(gpu_->Embedding({ids->gpu(), table->gpu(), out->gpu(), c.vocab_start}));
      ExpectClose(*out, "Embedding", dtype, shape, Threshold(dtype));
    }
  }
}

TEST_F(ParityTest, RmsNorm) {
  struct Case {
    int64_t n, dim;
    bool in_place;
  };
  for (const Case c : {Case{1, 4096, false}, Case{7, 4096, true}, Case{33, 5120},
                       Case{3, 64, false}, Case{2, 8191, true}}) {
    for (DType dtype : kWeightTypes) {
      const std::string shape =
          absl::StrCat("[", c.n, ",", c.dim, "]", c.in_place ? " in place" : "");
      SCOPED_TRACE(shape);
      auto in = Floats(RandomFloats(c.n * c.dim, 3), DType::kF32, {c.n, c.dim});
      auto weight = Floats(RandomFloats(c.dim, 4), dtype, {c.dim});
      std::unique_ptr<Twin> separate;
      Twin* out = in.get();
      if (!c.in_place) {
        separate = Make(DType::kF32, {c.n, c.dim});
        separate->Poison();
        out = separate.get();
      }
      ASSERT_OK(cpu_->RmsNorm({in->cpu(), weight->cpu(), out->cpu(), 1e-5f}));
      ASSERT_OK(gpu_->RmsNorm({in->gpu(), weight->gpu(), out->gpu(), 1e-5f}));
      ExpectClose(*out, "RmsNorm", dtype, shape, Threshold(dtype));
    }
  }
}

TEST_F(ParityTest, Gemm) {
  struct Case {
    int64_t m, n, k;
    bool accumulate;
  };
  // m <= 8: the GEMV (decode); k = 4095 and 67: its unvectorised path; larger m: cuBLAS.
  for (const Case c : {Case{1, 4096, 4096, false}, Case{1, 11008, 4096},
                       Case{7, 4096, 11008, false}, Case{8, 1024, 4095},
                       Case{9, 37, 67, false}, Case{33, 4096, 4096},
                       Case{128, 11008, 4096, true}, Case{257, 512, 1024},
                       Case{1, 32000, 4096, false}}) {
    for (DType dtype : kWeightTypes) {
      const std::string shape = absl::StrCat("m=", c.m, " n=", c.n, " k=", c.k,
                                             c.accumulate ? " accumulate" : "");
      SCOPED_TRACE(shape);
      auto x = Floats(RandomFloats(c.m * c.k, 5), DType::kF32, {c.m, c.k});
      auto w = Floats(RandomFloats(c.n * c.k, 6, 0.02f), dtype, {c.n, c.k});
      auto y = Make(DType::kF32, {c.m, c.n});
      if (c.accumulate) {
        y->SetFloats(RandomFloats(c.m * c.n, 7));
      } else {
        y->Poison();
      }
      ASSERT_OK(cpu_->Gemm({x->cpu(), w->cpu(), y->cpu(), c.accumulate}));
      ASSERT_OK(gpu_->Gemm({x->gpu(), w->gpu(), y->gpu(), c.accumulate}));
      ExpectClose(*y, "Gemm", dtype, shape, Threshold(dtype));
    }
  }
}

// Activations with outliers at and beyond F16's limit (65504), as real models' residual streams
// have: every path stays finite and close to the CPU's F32 math (the F16 prefill GEMM scales
// such rows by a power of two before rounding them to F16).
TEST_F(ParityTest, GemmWithOutliersNearTheF16Limit) {
  struct Case {
    int64_t m, n, k;
    bool accumulate;
  };
  for (const Case c : {Case{4, 512, 1024, false}, Case{33, 1024, 512, false},
                       Case{130, 768, 1024, true}}) {
    for (DType dtype : kWeightTypes) {
      const std::string shape = absl::StrCat("m=", c.m, " n=", c.n, " k=", c.k,
                                             c.accumulate ? " accumulate" : "", " outliers");
      SCOPED_TRACE(absl::StrCat(shape, " ", DTypeName(dtype)));
      std::vector<float> xs = RandomFloats(c.m * c.k, 130);
      std::mt19937 gen(131);
      std::uniform_int_distribution<int64_t> pick(0, c.m * c.k - 1);
      const float big[] = {60000.0f, -65504.0f, 70000.0f, -150000.0f, 1.0e6f};
      for (int i = 0; i < 3 * static_cast<int>(c.m); ++i) xs[pick(gen)] = big[i % 5];
      auto x = Floats(xs, DType::kF32, {c.m, c.k});
      auto w = Floats(RandomFloats(c.n * c.k, 132, 0.02f), dtype, {c.n, c.k});
      auto y = Make(DType::kF32, {c.m, c.n});
      if (c.accumulate) {
        y->SetFloats(RandomFloats(c.m * c.n, 133, 100.0f));
      } else {
        y->Poison();
      }
      ASSERT_OK(cpu_->Gemm({x->cpu(), w->cpu(), y->cpu(), c.accumulate}));
      ASSERT_OK(gpu_->Gemm({x->gpu(), w->gpu(), y->gpu(), c.accumulate}));
      const std::vector<float> got = y->GpuFloats();
      EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](float v) { return std::isfinite(v); }))
          << "an output became inf or NaN";
      ExpectClose(*y, "Gemm outliers", dtype, shape, Threshold(dtype));
    }
  }
}

TEST_F(ParityTest, Rope) {
  struct Case {
    int64_t n, heads, head_dim;
    float scaling;
    int32_t max_position;
  };
  for (const Case c : {Case{1, 32, 128, 1.0f, 4095}, Case{7, 8, 64, 1.0f, 4095},
                       Case{33, 32, 128, 1.25f, 8191}, Case{5, 4, 96, 0.9f, 100000}}) {
    const std::string shape = absl::StrCat("[", c.n, ",", c.heads, ",", c.head_dim,
                                           "] scaling=", c.scaling, " pos<=", c.max_position);
    SCOPED_TRACE(shape);
    std::vector<float> inv_freq(c.head_dim / 2);
    for (int64_t i = 0; i < c.head_dim / 2; ++i) {
      inv_freq[i] = 1.0f / std::pow(10000.0f, 2.0f * i / c.head_dim);
    }
    auto x = Floats(RandomFloats(c.n * c.heads * c.head_dim, 8), DType::kF32,
                    {c.n, c.heads, c.head_dim});
    std::vector<int32_t> pos = RandomInts(c.n, 0, c.max_position, 9);
    pos[0] = c.max_position;
    auto positions = Ints(pos);
    auto freq = Floats(inv_freq, DType::kF32, {c.head_dim / 2});
    ASSERT_OK(cpu_->Rope({x->cpu(), positions->cpu(), freq->cpu(), c.scaling}));
    ASSERT_OK(gpu_->Rope({x->gpu(), positions->gpu(), freq->gpu(), c.scaling}));
    ExpectClose(*x, "Rope", DType::kF32, shape, Threshold(DType::kF32));
  }
}

TEST_F(ParityTest, KvWrite) {
  struct Case {
    int64_t n, kv_heads, head_dim, n_slots, max_seq;
  };
  // Every shape with F32, F16 and BF16 caches: both backends round half-precision elements to
  // nearest even, so the bytes agree for those too.
  std::vector<std::pair<Case, DType>> runs;
  for (const Case c : {Case{1, 8, 128, 4, 4096}, Case{7, 1, 64, 2, 33}, Case{33, 4, 128, 3, 64}}) {
    for (const DType cache_type : kWeightTypes) runs.emplace_back(c, cache_type);
  }
  for (const auto& [c, cache_type] : runs) {
    const std::string shape = absl::StrCat("n=", c.n, " cache=[", c.n_slots, ",", c.max_seq, ",",
                                           c.kv_heads, ",", c.head_dim, "]");
    SCOPED_TRACE(absl::StrCat(shape, " ", DTypeName(cache_type)));
    // Distinct (slot, position) pairs.
    std::vector<int32_t> cells(c.n_slots * c.max_seq);
    std::iota(cells.begin(), cells.end(), 0);
    std::shuffle(cells.begin(), cells.end(), std::mt19937(10));
    std::vector<int32_t> slot(c.n), pos(c.n);
    for (int64_t i = 0; i < c.n; ++i) {
      slot[i] = cells[i] / c.max_seq;
      pos[i] = cells[i] % c.max_seq;
    }
    const std::vector<int64_t> cache_dims = {c.n_slots, c.max_seq, c.kv_heads, c.head_dim};
    const int64_t cache_size = c.n_slots * c.max_seq * c.kv_heads * c.head_dim;
    auto k = Floats(RandomFloats(c.n * c.kv_heads * c.head_dim, 11), DType::kF32,
                    {c.n, c.kv_heads, c.head_dim});
    auto v = Floats(RandomFloats(c.n * c.kv_heads * c.head_dim, 12), DType::kF32,
                    {c.n, c.kv_heads, c.head_dim});
    auto k_cache = Floats(RandomFloats(cache_size, 13), cache_type, cache_dims);
    auto v_cache = Floats(RandomFloats(cache_size, 14), cache_type, cache_dims);
    auto slots = Ints(slot), positions = Ints(pos);
    ASSERT_OK(cpu_->KvWrite({k->cpu(), v->cpu(), k_cache->cpu(), v_cache->cpu(), slots->cpu(),
                             positions->cpu()}));
    ASSERT_OK(gpu_->KvWrite({k->gpu(), v->gpu(), k_cache->gpu(), v_cache->gpu(), slots->gpu(),
                             positions->gpu()}));
    ExpectExact(*k_cache, "KvWrite k_cache", cache_type, shape);
    ExpectExact(*v_cache, "KvWrite v_cache", cache_type, shape);
  }
}

TEST_F(ParityTest, GatherRows) {
  struct Case {
    DType dtype;
    int64_t rows, width, m;
  };
  // F32 KV rows, BF16 rows of odd width (2-byte words), and a repeated / reversed index list.
  for (const Case c : {Case{DType::kF32, 4096, 1024, 300}, Case{DType::kBF16, 57, 7, 57},
                       Case{DType::kF16, 9, 128, 20}}) {
    const std::string shape = absl::StrCat("[", c.rows, ",", c.width, "] -> ", c.m, " rows");
    auto in = Floats(RandomFloats(c.rows * c.width, 21), c.dtype, {c.rows, c.width});
    auto out = Floats(std::vector<float>(c.m * c.width, 0.0f), c.dtype, {c.m, c.width});
    auto indices = Ints(RandomInts(c.m, 0, static_cast<int32_t>(c.rows - 1), 22));
    ASSERT_OK(cpu_->GatherRows({in->cpu(), indices->cpu(), out->cpu()}));
    ASSERT_OK(gpu_->GatherRows({in->gpu(), indices->gpu(), out->gpu()}));
    ExpectExact(*out, "GatherRows", c.dtype, shape);
  }
}

struct AttentionCase {
  const char* name;
  int64_t heads, kv_heads, head_dim, n_slots, max_seq;
  std::vector<int32_t> slots, positions;
};

std::vector<int32_t> Iota(int32_t count, int32_t start = 0) {
  std::vector<int32_t> v(count);
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::vector<AttentionCase> AttentionCases() {
  std::vector<AttentionCase> cases = {
      {"prefill MHA hd128 7 tokens", 8, 8, 128, 1, 64, std::vector<int32_t>(7, 0), Iota(7)},
      {"prefill GQA 8:1 hd128 33 tokens", 32, 4, 128, 2, 256, std::vector<int32_t>(33, 1),
       Iota(33)},
      {"prefill GQA 8:1 hd64 257 tokens", 16, 2, 64, 1, 512, std::vector<int32_t>(257, 0),
       Iota(257)},
      {"prefill continuation hd128 33 tokens at 100", 32, 4, 128, 1, 512,
       std::vector<int32_t>(33, 0), Iota(33, 100)},
      {"decode seq 1 position 0 GQA 8:1", 32, 4, 128, 1, 128, {0}, {0}},
      {"decode long cache 4096 GQA 8:1 hd128", 32, 4, 128, 1, 4096, {0}, {4095}},
      {"decode long cache 4096 MHA hd64", 32, 32, 64, 1, 4096, {0}, {3001}},
      {"decode ragged 4 slots GQA 8:1 hd128", 32, 4, 128, 4, 4096, {0, 1, 2, 3},
       {4095, 17, 1000, 2048}},
      {"mixed prefill+decode ragged hd64", 8, 1, 64, 3, 1024, {2, 2, 2, 2, 2, 0, 1},
       {10, 11, 12, 13, 14, 600, 3}},
      {"decode GQA 4:1 hd96 odd positions", 8, 2, 96, 3, 700, {2, 0, 1}, {6, 32, 699}},
      {"decode batch of 16 slots GQA 8:1 hd128", 32, 4, 128, 16, 4096, Iota(16),
       RandomInts(16, 0, 4095, 99)},
      // head dims that are not a multiple of 32 (the test fixtures' 8 and 16; 80)
      {"prefill GQA 8:1 hd8 19 tokens", 16, 2, 8, 1, 64, std::vector<int32_t>(19, 0), Iota(19)},
      {"mixed prefill+decode hd16 GQA 4:1", 8, 2, 16, 2, 600, {1, 1, 1, 0}, {0, 1, 2, 577}},
      {"decode long cache hd80 MHA", 8, 8, 80, 1, 2048, {0}, {2047}},
      // the embedded model's head_dim 32; GQA groups of 3 and of 32
      {"prefill GQA 4:1 hd32 45 tokens", 8, 2, 32, 1, 128, std::vector<int32_t>(45, 0), Iota(45)},
      {"decode long cache hd32 GQA 4:1", 8, 2, 32, 2, 2048, {1, 0}, {1999, 5}},
      {"prefill GQA 3:1 hd64 21 tokens", 6, 2, 64, 1, 64, std::vector<int32_t>(21, 0), Iota(21)},
      {"decode GQA 3:1 hd128 long cache", 12, 4, 128, 2, 1024, {0, 1}, {1023, 400}},
      {"prefill GQA 32:1 hd128 9 tokens", 32, 1, 128, 1, 64, std::vector<int32_t>(9, 0), Iota(9)},
      {"decode GQA 32:1 hd128 long cache", 32, 1, 128, 3, 4096, {2, 0, 1}, {4095, 0, 2222}},
      // several slots below the split threshold (max_seq < 512: never split), tails at 0 and
      // max_seq - 1
      {"multi-slot no split tails 0 and max_seq-1", 8, 2, 64, 4, 300, {0, 1, 2, 3},
       {0, 299, 150, 299}},
      {"multi-slot no split hd32 mixed", 8, 2, 32, 3, 511, {2, 2, 0, 1}, {509, 510, 0, 510}},
  };
  return cases;
}

// Both attention paths must be covered: the plain tiled kernel (splits == 1) and split-KV with
// a merge (splits > 1), which the long-cache decode cases take on any GPU with 5 or more SMs.
// Every case runs with F32, F16 and BF16 caches: both backends widen the same stored values
// exactly and accumulate in F32, so the F32 threshold holds whatever the cache dtype.
TEST_F(ParityTest, Attention) {
  int plain = 0, split = 0;
  for (const AttentionCase& c : AttentionCases()) {
    std::vector<std::pair<DType, bool>> variants;  // (cache dtype, with lse)
    for (const DType cache_type : kWeightTypes) {
      for (bool with_lse : {false, true}) variants.emplace_back(cache_type, with_lse);
    }
    for (const auto& [cache_type, with_lse] : variants) {
      const int64_t n = static_cast<int64_t>(c.positions.size());
      const int splits = gpu_->AttentionSplits(n, c.heads, c.kv_heads, c.max_seq);
      ++(splits > 1 ? split : plain);
      const std::string shape = absl::StrCat(c.name, with_lse ? " +lse" : "", " (n=", n,
                                             " max_seq=", c.max_seq, " splits=", splits, ")");
      SCOPED_TRACE(absl::StrCat(shape, " ", DTypeName(cache_type)));
      const std::vector<int64_t> cache_dims = {c.n_slots, c.max_seq, c.kv_heads, c.head_dim};
      const int64_t cache_size = c.n_slots * c.max_seq * c.kv_heads * c.head_dim;
      auto q = Floats(RandomFloats(n * c.heads * c.head_dim, 20), DType::kF32,
                      {n, c.heads, c.head_dim});
      auto k_cache = Floats(RandomFloats(cache_size, 21), cache_type, cache_dims);
      auto v_cache = Floats(RandomFloats(cache_size, 22), cache_type, cache_dims);
      auto slots = Ints(c.slots), positions = Ints(c.positions);
      auto out = Make(DType::kF32, {n, c.heads, c.head_dim});
      auto lse = Make(DType::kF32, {n, c.heads});
      out->Poison();
      lse->Poison();
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      AttentionArgs on_cpu{q->cpu(),     k_cache->cpu(),   v_cache->cpu(), slots->cpu(),
                           positions->cpu(), out->cpu(),   TensorView(),   scale};
      AttentionArgs on_gpu{q->gpu(),     k_cache->gpu(),   v_cache->gpu(), slots->gpu(),
                           positions->gpu(), out->gpu(),   TensorView(),   scale};
      if (with_lse) {
        on_cpu.lse = lse->cpu();
        on_gpu.lse = lse->gpu();
      }
      ASSERT_OK(cpu_->Attention(on_cpu));
      ASSERT_OK(gpu_->Attention(on_gpu));
      ExpectClose(*out, splits > 1 ? "Attention split" : "Attention", cache_type, shape,
                  Threshold(DType::kF32));
      if (with_lse) ExpectClose(*lse, "Attention lse", cache_type, shape, Threshold(DType::kF32));
    }
  }
  EXPECT_GT(plain, 0);
  EXPECT_GT(split, 0);
}

// The sparse variants (Top-theta, Top-k, every placement, compensation and VMC, cap_k) and
// their counters and calibration outputs, against the CPU reference kernel, on prefill, decode
// and mixed batches with GQA groups of 3, 8 and 4, F32 and F16 caches. A key within rounding of
// a threshold may be kept by one backend and not the other: counts may differ in at most 0.1 %
// of the kept elements, outputs within 1e-4.
TEST_F(ParityTest, SparseAttentionVariants) {
  using V = AttentionVariant;
  const std::vector<AttentionCase> cases = {
      {"prefill GQA 8:1 hd64 257 tokens", 16, 2, 64, 1, 512, std::vector<int32_t>(257, 0),
       Iota(257)},
      {"mixed prefill+decode ragged hd64",
       8,
       2,
       64,
       3,
       1024,
       {2, 2, 2, 2, 2, 0, 1},
       {10, 11, 12, 13, 14, 600, 3}},
      {"decode long cache 4096 GQA 8:1 hd128", 32, 4, 128, 2, 4096, {0, 1}, {4095, 1500}},
      {"decode GQA 3:1 hd128", 12, 4, 128, 2, 1024, {0, 1}, {1023, 400}},
  };
  std::vector<V> variants;
  for (V v : testing::ValidSparseVariants(8)) {
    v.sdc_scale = 0.8f;
    variants.push_back(v);
    if (v.kind == V::Kind::kTopTheta && !v.vmc) {
      v.cap_k = true;
      variants.push_back(v);
    }
  }
  V record;  // dense forward with the calibration outputs
  record.k = 8;
  variants.push_back(record);
  const int64_t bins = 40;
  for (const AttentionCase& c : cases) {
    for (const DType cache_type : {DType::kF32, DType::kF16}) {
      const int64_t n = static_cast<int64_t>(c.positions.size());
      const std::vector<int64_t> cache_dims = {c.n_slots, c.max_seq, c.kv_heads, c.head_dim};
      const int64_t cache_size = c.n_slots * c.max_seq * c.kv_heads * c.head_dim;
      auto q = Floats(RandomFloats(n * c.heads * c.head_dim, 30, 3.0f), DType::kF32,
                      {n, c.heads, c.head_dim});
      auto k_cache = Floats(RandomFloats(cache_size, 31), cache_type, cache_dims);
      auto v_cache = Floats(RandomFloats(cache_size, 32), cache_type, cache_dims);
      auto slots = Ints(c.slots), positions = Ints(c.positions);
      std::vector<float> pre(c.heads * bins), post(c.heads * bins), mass(c.heads * bins);
      for (int64_t h = 0; h < c.heads; ++h) {
        for (int64_t b = 0; b < bins; ++b) {
          pre[h * bins + b] = 0.05f * static_cast<float>((h + b) % 7) - 0.1f;
          post[h * bins + b] = 2.0f / static_cast<float>(20 + 25 * b);
          mass[h * bins + b] = 0.2f * static_cast<float>(1 + (h * b) % 5);
        }
      }
      auto pre_table = Floats(pre, DType::kF32, {c.heads, bins});
      auto post_table = Floats(post, DType::kF32, {c.heads, bins});
      auto mass_table = Floats(mass, DType::kF32, {c.heads, bins});
      for (V v : variants) {
        const std::string shape =
            absl::StrCat(c.name, " kind ", static_cast<int>(v.kind), " placement ",
                         static_cast<int>(v.placement), " sdc ", static_cast<int>(v.sdc), " vmc ",
                         v.vmc, " cap_k ", v.cap_k);
        SCOPED_TRACE(absl::StrCat(shape, " ", DTypeName(cache_type)));
        auto out = Make(DType::kF32, {n, c.heads, c.head_dim});
        auto lse = Make(DType::kF32, {n, c.heads});
        auto kept = Make(DType::kI32, {n, c.heads});
        auto vrows = Make(DType::kI32, {n, c.kv_heads});
        auto threshold = Make(DType::kF32, {n, c.heads});
        auto dropped = Make(DType::kF32, {n, c.heads});
        for (Twin* t : {out.get(), lse.get(), kept.get(), vrows.get()}) t->Poison();
        const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
        AttentionArgs on_cpu{q->cpu(),         k_cache->cpu(), v_cache->cpu(), slots->cpu(),
                             positions->cpu(), out->cpu(),     lse->cpu(),     scale};
        AttentionArgs on_gpu{q->gpu(),         k_cache->gpu(), v_cache->gpu(), slots->gpu(),
                             positions->gpu(), out->gpu(),     lse->gpu(),     scale};
        Twin& table = v.placement == V::Placement::kPostSoftmax ? *post_table : *pre_table;
        on_cpu.variant = on_gpu.variant = v;
        on_cpu.variant.bin_begin = on_gpu.variant.bin_begin = 5;
        if (v.kind == V::Kind::kTopTheta) {
          on_cpu.variant.thresholds = table.cpu();
          on_gpu.variant.thresholds = table.gpu();
        }
        if (v.sdc == V::Compensation::kOffline) {
          on_cpu.variant.missing_mass = mass_table->cpu();
          on_gpu.variant.missing_mass = mass_table->gpu();
        }
        on_cpu.variant.kept = kept->cpu();
        on_gpu.variant.kept = kept->gpu();
        on_cpu.variant.kept_vrows = vrows->cpu();
        on_gpu.variant.kept_vrows = vrows->gpu();
        if (!v.sparse()) {
          on_cpu.variant.row_threshold = threshold->cpu();
          on_gpu.variant.row_threshold = threshold->gpu();
          on_cpu.variant.topk_dropped = dropped->cpu();
          on_gpu.variant.topk_dropped = dropped->gpu();
        }
        ASSERT_OK(cpu_->Attention(on_cpu));
        ASSERT_OK(gpu_->Attention(on_gpu));
        ExpectClose(*out, "Attention sparse", cache_type, shape, 1e-4);
        ExpectClose(*lse, "Attention sparse lse", cache_type, shape, 1e-4);
        for (Twin* counts : {kept.get(), vrows.get()}) {
          std::vector<int32_t> want(counts->bytes() / 4), got(counts->bytes() / 4);
          std::memcpy(want.data(), counts->CpuBytes().data(), counts->bytes());
          std::memcpy(got.data(), counts->GpuBytes().data(), counts->bytes());
          int64_t total = 0, diff = 0;
          for (size_t i = 0; i < want.size(); ++i) {
            total += want[i];
            diff += std::abs(static_cast<int64_t>(want[i]) - got[i]);
          }
          EXPECT_LE(diff, total / 1000) << "counts";
        }
        if (!v.sparse()) {  // NaN on both sides for the rows with n <= k
          for (Twin* t : {threshold.get(), dropped.get()}) {
            const std::vector<float> want = t->CpuFloats(), got = t->GpuFloats();
            double worst = 0;
            for (size_t i = 0; i < want.size(); ++i) {
              if (std::isnan(want[i]) || std::isnan(got[i])) {
                EXPECT_TRUE(std::isnan(want[i]) && std::isnan(got[i])) << i;
                continue;
              }
              worst = std::max(
                  worst, std::abs(double(want[i]) - got[i]) / (1e-6 + std::abs(double(want[i]))));
            }
            Comparisons().push_back({"Attention calibration outputs",
                                     std::string(DTypeName(cache_type)), shape, worst, 1e-4});
            EXPECT_LE(worst, 1e-4);
          }
        }
      }
    }
  }
}

// One token whose position is outside the cache, in a tile with valid tokens, on the plain and
// the split-KV path: Synchronize reports OutOfRange, the valid tokens' rows equal the CPU's
// (computed without the bad token, since the CPU refuses the whole call), and the bad token's
// rows and lse are NaN on both paths.
TEST_F(ParityTest, AttentionWithOneTokenOutOfRange) {
  struct Case {
    const char* name;
    int64_t max_seq;
    std::vector<int32_t> slots, positions;
    int bad;
  };
  int plain = 0, split = 0;
  for (const Case& c : {Case{"short cache", 256, {0, 1, 0}, {10, 20, 256}, 2},
                        Case{"long cache", 4096, {0}, {4096}, 0},
                        Case{"long cache, 3 tokens", 4096, {1, 0, 1}, {3000, -1, 17}, 1}}) {
    constexpr int64_t kHeads = 8, kKv = 2, kHd = 64, kSlots = 2;
    const int64_t n = static_cast<int64_t>(c.positions.size());
    const int splits = gpu_->AttentionSplits(n, kHeads, kKv, c.max_seq);
    ++(splits > 1 ? split : plain);
    const std::string shape = absl::StrCat(c.name, " (n=", n, " splits=", splits, ")");
    SCOPED_TRACE(shape);
    const std::vector<int64_t> cache_dims = {kSlots, c.max_seq, kKv, kHd};
    const int64_t cache_size = kSlots * c.max_seq * kKv * kHd;
    const std::vector<float> q_all = RandomFloats(n * kHeads * kHd, 120);
    auto k_cache = Floats(RandomFloats(cache_size, 121), DType::kF32, cache_dims);
    auto v_cache = Floats(RandomFloats(cache_size, 122), DType::kF32, cache_dims);
    auto q = Floats(q_all, DType::kF32, {n, kHeads, kHd});
    auto slots = Ints(c.slots), positions = Ints(c.positions);
    auto out = Make(DType::kF32, {n, kHeads, kHd});
    auto lse = Make(DType::kF32, {n, kHeads});
    out->Poison();
    lse->Poison();
    const float scale = 0.125f;
    ASSERT_OK(gpu_->Attention({q->gpu(), k_cache->gpu(), v_cache->gpu(), slots->gpu(),
                               positions->gpu(), out->gpu(), lse->gpu(), scale}));
    const absl::Status s = gpu_->Synchronize();
    EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
    EXPECT_OK(gpu_->Synchronize());
    const absl::Status refused = cpu_->Attention({q->cpu(), k_cache->cpu(), v_cache->cpu(),
                                                  slots->cpu(), positions->cpu(), out->cpu(),
                                                  lse->cpu(), scale});
    EXPECT_EQ(refused.code(), absl::StatusCode::kOutOfRange) << refused;
    const std::vector<float> got = out->GpuFloats(), got_lse = lse->GpuFloats();
    // The CPU reference over the valid tokens only.
    std::vector<int32_t> good_slots, good_positions;
    std::vector<float> good_q;
    for (int64_t t = 0; t < n; ++t) {
      if (t == c.bad) continue;
      good_slots.push_back(c.slots[t]);
      good_positions.push_back(c.positions[t]);
      good_q.insert(good_q.end(), q_all.begin() + t * kHeads * kHd,
                    q_all.begin() + (t + 1) * kHeads * kHd);
    }
    std::vector<float> want, gpu_good;
    if (!good_slots.empty()) {
      const int64_t g = static_cast<int64_t>(good_slots.size());
      std::vector<float> ref(g * kHeads * kHd);
      ASSERT_OK(cpu_->Attention(
          {TensorView::Of(good_q.data(), DType::kF32, {g, kHeads, kHd}), k_cache->cpu(),
           v_cache->cpu(), TensorView::Of(good_slots.data(), DType::kI32, {g}),
           TensorView::Of(good_positions.data(), DType::kI32, {g}),
           TensorView::Of(ref.data(), DType::kF32, {g, kHeads, kHd}), TensorView(), scale}));
      want = ref;
      for (int64_t t = 0; t < n; ++t) {
        if (t == c.bad) continue;
        gpu_good.insert(gpu_good.end(), got.begin() + t * kHeads * kHd,
                        got.begin() + (t + 1) * kHeads * kHd);
      }
      const double error = RelativeError(gpu_good.data(), want.data(), want.size());
      Comparisons().push_back({"Attention 1 bad token", "F32", shape, error, 1e-5});
      EXPECT_LE(error, 1e-5) << "the valid tokens' rows";
    }
    for (int64_t e = c.bad * kHeads * kHd; e < (c.bad + 1) * kHeads * kHd; ++e) {
      ASSERT_TRUE(std::isnan(got[e])) << "bad token's output element " << e;
    }
    for (int64_t h = 0; h < kHeads; ++h) EXPECT_TRUE(std::isnan(got_lse[c.bad * kHeads + h]));
  }
  EXPECT_GT(plain, 0);
  EXPECT_GT(split, 0);
}

TEST_F(ParityTest, MergeAttention) {
  struct Case {
    int64_t n, heads, head_dim;
    bool in_place;
  };
  for (const Case c : {Case{1, 32, 128, false}, Case{7, 8, 64, true}, Case{33, 4, 128, false}}) {
    const std::string shape = absl::StrCat("[", c.n, ",", c.heads, ",", c.head_dim, "]",
                                           c.in_place ? " in place" : "");
    SCOPED_TRACE(shape);
    const std::vector<int64_t> dims = {c.n, c.heads, c.head_dim};
    auto out_a = Floats(RandomFloats(c.n * c.heads * c.head_dim, 30), DType::kF32, dims);
    auto out_b = Floats(RandomFloats(c.n * c.heads * c.head_dim, 31), DType::kF32, dims);
    std::vector<float> la = RandomFloats(c.n * c.heads, 32, 3.0f);
    std::vector<float> lb = RandomFloats(c.n * c.heads, 33, 3.0f);
    lb[0] = -INFINITY;  // a side that saw no keys
    auto lse_a = Floats(la, DType::kF32, {c.n, c.heads});
    auto lse_b = Floats(lb, DType::kF32, {c.n, c.heads});
    std::unique_ptr<Twin> out_sep, lse_sep;
    Twin* out = out_a.get();
    Twin* lse_out = lse_a.get();
    if (!c.in_place) {
      out_sep = Make(DType::kF32, dims);
      lse_sep = Make(DType::kF32, {c.n, c.heads});
      out_sep->Poison();
      lse_sep->Poison();
      out = out_sep.get();
      lse_out = lse_sep.get();
    }
    ASSERT_OK(cpu_->MergeAttention({out_a->cpu(), lse_a->cpu(), out_b->cpu(), lse_b->cpu(),
                                    out->cpu(), lse_out->cpu()}));
    ASSERT_OK(gpu_->MergeAttention({out_a->gpu(), lse_a->gpu(), out_b->gpu(), lse_b->gpu(),
                                    out->gpu(), lse_out->gpu()}));
    ExpectClose(*out, "MergeAttention", DType::kF32, shape, Threshold(DType::kF32));
    ExpectClose(*lse_out, "MergeAttention lse", DType::kF32, shape, Threshold(DType::kF32));
  }
}

TEST_F(ParityTest, SiluMulAndAdd) {
  struct Case {
    int64_t n, hidden;
    bool in_place;
  };
  for (const Case c : {Case{1, 11008, false}, Case{33, 11008, true}, Case{7, 13, false}}) {
    const std::string shape =
        absl::StrCat("[", c.n, ",", c.hidden, "]", c.in_place ? " in place" : "");
    SCOPED_TRACE(shape);
    const std::vector<int64_t> dims = {c.n, c.hidden};
    auto gate = Floats(RandomFloats(c.n * c.hidden, 40, 3.0f), DType::kF32, dims);
    auto up = Floats(RandomFloats(c.n * c.hidden, 41), DType::kF32, dims);
    std::unique_ptr<Twin> sep;
    Twin* out = gate.get();
    if (!c.in_place) {
      sep = Make(DType::kF32, dims);
      sep->Poison();
      out = sep.get();
    }
    ASSERT_OK(cpu_->SiluMul({gate->cpu(), up->cpu(), out->cpu()}));
    ASSERT_OK(gpu_->SiluMul({gate->gpu(), up->gpu(), out->gpu()}));
    ExpectClose(*out, "SiluMul", DType::kF32, shape, Threshold(DType::kF32));

    auto a = Floats(RandomFloats(c.n * c.hidden, 42), DType::kF32, dims);
    auto b = Floats(RandomFloats(c.n * c.hidden, 43), DType::kF32, dims);
    std::unique_ptr<Twin> sum_sep;
    Twin* sum = a.get();
    if (!c.in_place) {
      sum_sep = Make(DType::kF32, dims);
      sum_sep->Poison();
      sum = sum_sep.get();
    }
    ASSERT_OK(cpu_->Add({a->cpu(), b->cpu(), sum->cpu()}));
    ASSERT_OK(gpu_->Add({a->gpu(), b->gpu(), sum->gpu()}));
    ExpectExact(*sum, "Add", DType::kF32, shape);
  }
}

// HARP's ops: the mix of two logit rows (one rounding, exactly a where b == a) and the
// counter-based dropout (the same Philox bits on both backends, so the same elements drop).
TEST_F(ParityTest, LerpAndPhiloxDropout) {
  for (const auto [n, hidden] : {std::pair<int64_t, int64_t>{1, 32000}, {5, 4096}, {3, 13}}) {
    const std::string shape = absl::StrCat("[", n, ",", hidden, "]");
    SCOPED_TRACE(shape);
    const std::vector<int64_t> dims = {n, hidden};
    std::vector<float> plain = RandomFloats(n * hidden, 50, 8.0f);
    std::vector<float> reframed = RandomFloats(n * hidden, 51, 8.0f);
    for (int64_t i = 0; i < n * hidden; i += 3) reframed[i] = plain[i];
    auto a = Floats(plain, DType::kF32, dims);
    auto b = Floats(reframed, DType::kF32, dims);
    for (float w : {0.0f, 0.5f, 1.0f}) {
      auto out = Make(DType::kF32, dims);
      out->Poison();
      ASSERT_OK(cpu_->Lerp({a->cpu(), b->cpu(), out->cpu(), w}));
      ASSERT_OK(gpu_->Lerp({a->gpu(), b->gpu(), out->gpu(), w}));
      ExpectExact(*out, "Lerp", DType::kF32, absl::StrCat(shape, " weight ", w));
    }
    auto x = Floats(RandomFloats(n * hidden, 52), DType::kF32, dims);
    std::vector<int32_t> words;
    for (int64_t r = 0; r < n; ++r) {
      for (int32_t w : {static_cast<int32_t>(0x9e3779b9u), 77, static_cast<int32_t>(3 * r + 1),
                        static_cast<int32_t>(n + 9)}) {
        words.push_back(w);
      }
    }
    auto row_words = Make(DType::kI32, {n, 4});
    row_words->SetInts(words);
    for (float rate : {0.0f, 0.2f, 1.0f}) {
      ASSERT_OK(cpu_->PhiloxDropout({x->cpu(), row_words->cpu(), 0x4852u, rate, 64}));
      ASSERT_OK(gpu_->PhiloxDropout({x->gpu(), row_words->gpu(), 0x4852u, rate, 64}));
      ExpectExact(*x, "PhiloxDropout", DType::kF32, absl::StrCat(shape, " rate ", rate));
    }
  }
}

// HOMER's ops: significance scores over one slot of a cache of every dtype (MHA and GQA), and
// the average of two rows sets (exact: one F32 sum, one rounding).
TEST_F(ParityTest, KeyScoresAndAverage) {
  for (const auto [heads, kv_heads, head_dim] :
       {std::tuple<int64_t, int64_t, int64_t>{32, 32, 128}, {64, 8, 128}, {8, 2, 32}}) {
    const int64_t n_slots = 3, max_seq = 2100, count = 2048;
    for (DType cache_type : kWeightTypes) {
      const std::string shape = absl::StrCat(heads, ":", kv_heads, " d", head_dim, " ",
                                             DTypeName(cache_type));
      SCOPED_TRACE(shape);
      auto q = Floats(RandomFloats(heads * head_dim, 70), DType::kF32, {heads, head_dim});
      auto k = Floats(RandomFloats(n_slots * max_seq * kv_heads * head_dim, 71), cache_type,
                      {n_slots, max_seq, kv_heads, head_dim});
      auto out = Make(DType::kF32, {count});
      out->Poison();
      const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      ASSERT_OK(cpu_->KeyScores({q->cpu(), k->cpu(), out->cpu(), 2, scale}));
      ASSERT_OK(gpu_->KeyScores({q->gpu(), k->gpu(), out->gpu(), 2, scale}));
      ExpectClose(*out, "KeyScores", cache_type, shape, Threshold(DType::kF32));
      auto a = Floats(RandomFloats(5 * 1024, 72), cache_type, {5, 1024});
      auto b = Floats(RandomFloats(5 * 1024, 73), cache_type, {5, 1024});
      ASSERT_OK(cpu_->Average({a->cpu(), b->cpu(), a->cpu()}));
      ASSERT_OK(gpu_->Average({a->gpu(), b->gpu(), a->gpu()}));
      ExpectExact(*a, "Average", cache_type, shape);
    }
  }
}

TEST_F(ParityTest, Cast) {
  // Normal values, F16 subnormals and values beyond F16's range (infinity on both sides).
  std::vector<float> values = RandomFloats(4099, 50, 10.0f);
  for (size_t i = 0; i < 64; ++i) values[i] *= 1e-6f;
  for (size_t i = 64; i < 80; ++i) values[i] *= 1e4f;
  // NaNs of both signs with payloads (quiet and signalling): each dtype's canonical quiet NaN
  // with the sign on both backends.
  const uint32_t nans[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fa5a5a5u, 0xff812345u};
  for (size_t i = 0; i < 5; ++i) std::memcpy(&values[100 + i], &nans[i], 4);
  for (DType from : kWeightTypes) {
    for (DType to : kWeightTypes) {
      const std::string shape = absl::StrCat("[4099] ", DTypeName(from), "->", DTypeName(to));
      SCOPED_TRACE(shape);
      auto in = Floats(values, from, {4099});
      auto out = Make(to, {4099});
      out->Poison();
      ASSERT_OK(cpu_->Cast({in->cpu(), out->cpu()}));
      ASSERT_OK(gpu_->Cast({in->gpu(), out->gpu()}));
      ExpectExact(*out, "Cast", to, shape);
    }
  }
}

// Logits with ties: copies of the row's largest values at later indices.
std::vector<float> LogitsWithTies(int64_t n, int64_t v, uint32_t seed) {
  std::vector<float> logits = RandomFloats(n * v, seed, 4.0f);
  std::mt19937 gen(seed + 1);
  for (int64_t r = 0; r < n && v > 8; ++r) {
    float* row = logits.data() + r * v;
    std::vector<int64_t> order(v);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + 4, order.end(),
                      [row](int64_t a, int64_t b) { return row[a] > row[b]; });
    std::uniform_int_distribution<int64_t> pick(0, v - 1);
    for (int t = 0; t < 4; ++t) row[pick(gen)] = row[order[t]];  // ties among the top values
    for (int t = 0; t < 8; ++t) row[pick(gen)] = row[pick(gen)];  // and elsewhere
  }
  return logits;
}

TEST_F(ParityTest, ArgMax) {
  struct Case {
    int64_t n, v, offset;
  };
  for (const Case c : {Case{1, 32000, 0}, Case{4, 32016, 32016}, Case{3, 7, 5}}) {
    const std::string shape = absl::StrCat("[", c.n, ",", c.v, "] offset=", c.offset);
    SCOPED_TRACE(shape);
    auto logits = Floats(LogitsWithTies(c.n, c.v, 60), DType::kF32, {c.n, c.v});
    auto values = Make(DType::kF32, {c.n});
    auto indices = Make(DType::kI32, {c.n});
    values->Poison();
    indices->Poison();
    ASSERT_OK(cpu_->ArgMax({logits->cpu(), values->cpu(), indices->cpu(), c.offset}));
    ASSERT_OK(gpu_->ArgMax({logits->gpu(), values->gpu(), indices->gpu(), c.offset}));
    ExpectExact(*values, "ArgMax values", DType::kF32, shape);
    ExpectExact(*indices, "ArgMax indices", DType::kI32, shape);
  }
}

TEST_F(ParityTest, TopK) {
  struct Case {
    int64_t n, v, k, offset;
  };
  // k <= 64: selection rounds; larger k: radix sort.
  for (const Case c : {Case{1, 32000, 1, 0}, Case{2, 32016, 5, 32016}, Case{3, 32000, 40, 0},
                       Case{1, 32016, 64, 0}, Case{2, 32000, 65, 7}, Case{1, 32000, 1000, 0},
                       Case{2, 33, 33, 0}}) {
    const std::string shape = absl::StrCat("[", c.n, ",", c.v, "] k=", c.k);
    SCOPED_TRACE(shape);
    auto logits = Floats(LogitsWithTies(c.n, c.v, 61), DType::kF32, {c.n, c.v});
    auto values = Make(DType::kF32, {c.n, c.k});
    auto indices = Make(DType::kI32, {c.n, c.k});
    values->Poison();
    indices->Poison();
    ASSERT_OK(cpu_->TopK({logits->cpu(), values->cpu(), indices->cpu(), c.offset}));
    ASSERT_OK(gpu_->TopK({logits->gpu(), values->gpu(), indices->gpu(), c.offset}));
    ExpectExact(*values, "TopK values", DType::kF32, shape);
    ExpectExact(*indices, "TopK indices", DType::kI32, shape);
  }
}

// Rows with NaN logits, some with fewer numbers than k: NaN ranks after every number, NaNs in
// index order, on both backends and both top-k paths (selection, radix sort).
TEST_F(ParityTest, TopKAndArgMaxWithNans) {
  struct Case {
    int64_t n, v, k;
  };
  for (const Case c : {Case{3, 300, 8}, Case{3, 300, 100}, Case{2, 32000, 64},
                       Case{2, 32000, 70}}) {
    const std::string shape = absl::StrCat("[", c.n, ",", c.v, "] k=", c.k, " NaNs");
    SCOPED_TRACE(shape);
    std::vector<float> values = LogitsWithTies(c.n, c.v, 62);
    const float inf = std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < c.v; j += 7) values[j] = NAN;  // row 0: NaNs among numbers
    for (int64_t j = 0; j < c.v; ++j) {  // row 1: only 3 numbers, -inf among the NaNs
      values[c.v + j] = j == 5 ? 1.0f : j == 9 ? -inf : j == c.v - 1 ? 2.0f : NAN;
    }
    for (int64_t j = 0; j < c.v; ++j) values[(c.n - 1) * c.v + j] = NAN;  // last row: all NaN
    auto logits = Floats(values, DType::kF32, {c.n, c.v});
    auto top = Make(DType::kF32, {c.n, c.k});
    auto ids = Make(DType::kI32, {c.n, c.k});
    auto best = Make(DType::kF32, {c.n});
    auto best_id = Make(DType::kI32, {c.n});
    for (Twin* t : {top.get(), ids.get(), best.get(), best_id.get()}) t->Poison();
    ASSERT_OK(cpu_->TopK({logits->cpu(), top->cpu(), ids->cpu(), 11}));
    ASSERT_OK(gpu_->TopK({logits->gpu(), top->gpu(), ids->gpu(), 11}));
    ASSERT_OK(cpu_->ArgMax({logits->cpu(), best->cpu(), best_id->cpu(), 11}));
    ASSERT_OK(gpu_->ArgMax({logits->gpu(), best->gpu(), best_id->gpu(), 11}));
    ExpectExact(*ids, "TopK NaN indices", DType::kI32, shape);
    ExpectExact(*best_id, "ArgMax NaN indices", DType::kI32, shape);
    const std::vector<float> got = ids->GpuFloats();
    for (float id : got) ASSERT_TRUE(id >= 11 && id < 11 + c.v) << "index " << id;
  }
}

TEST_F(ParityTest, SoftmaxStats) {
  struct Case {
    int64_t n, v;
    bool masked;  // every third logit -inf (a masked vocabulary): no weight, no NaN
  };
  for (const Case c : {Case{1, 32000, false}, Case{3, 32016, false}, Case{2, 5, false},
                       Case{4, 4099, true}}) {
    const std::string shape = absl::StrCat("[", c.n, ",", c.v, "]", c.masked ? " masked" : "");
    SCOPED_TRACE(shape);
    std::vector<float> values = RandomFloats(c.n * c.v, 70, 5.0f);
    if (c.masked) {
      for (size_t i = 0; i < values.size(); i += 3) values[i] = -INFINITY;
      // A short shard's padding: row 1 has -inf after its first 7 logits, row 2 one finite
      // logit, row 3 none (m = -inf, S = E = 0).
      for (int64_t j = 7; j < c.v; ++j) values[c.v + j] = -INFINITY;
      for (int64_t j = 0; j < c.v; ++j) values[2 * c.v + j] = j == 100 ? 3.0f : -INFINITY;
      for (int64_t j = 0; j < c.v; ++j) values[3 * c.v + j] = -INFINITY;
    }
    auto logits = Floats(values, DType::kF32, {c.n, c.v});
    auto max = Make(DType::kF32, {c.n}), s = Make(DType::kF32, {c.n}),
         sx = Make(DType::kF32, {c.n});
    for (Twin* t : {max.get(), s.get(), sx.get()}) t->Poison();
    ASSERT_OK(cpu_->SoftmaxStats({logits->cpu(), max->cpu(), s->cpu(), sx->cpu()}));
    ASSERT_OK(gpu_->SoftmaxStats({logits->gpu(), max->gpu(), s->gpu(), sx->gpu()}));
    if (c.masked) {
      ExpectExact(*max, "SoftmaxStats max", DType::kF32, shape);  // -inf in row 3
    } else {
      ExpectClose(*max, "SoftmaxStats max", DType::kF32, shape, Threshold(DType::kF32));
    }
    for (float e : sx->GpuFloats()) ASSERT_FALSE(std::isnan(e)) << "E is NaN";
    for (float e : s->GpuFloats()) ASSERT_FALSE(std::isnan(e)) << "S is NaN";
    ExpectClose(*s, "SoftmaxStats sum", DType::kF32, shape, Threshold(DType::kF32));
    ExpectClose(*sx, "SoftmaxStats sum_shifted", DType::kF32, shape, Threshold(DType::kF32));
  }
}

// ---- CUDA graphs ----

// A decode-shaped step on fixed buffers: norm, projection, rope, cache write, split-KV
// attention over a long cache, output projection into the residual, SiLU-mul.
struct DecodeStep {
  static constexpr int64_t kDim = 512, kHeads = 8, kKvHeads = 2, kHeadDim = 64, kMaxSeq = 4096,
                           kFfn = 1024;
  std::unique_ptr<Twin> x, norm_w, h, wq, wk, wv, wo, q, k, v, attn, k_cache, v_cache, slots,
      positions, inv_freq, gate, up;

  absl::Status Enqueue(Backend& b) {
    RETURN_IF_ERROR(b.RmsNorm({x->gpu(), norm_w->gpu(), h->gpu(), 1e-5f}));
    RETURN_IF_ERROR(b.Gemm({h->gpu(), wq->gpu(), q->gpu().Reshaped({1, kHeads * kHeadDim})}));
    RETURN_IF_ERROR(b.Gemm({h->gpu(), wk->gpu(), k->gpu().Reshaped({1, kKvHeads * kHeadDim})}));
    RETURN_IF_ERROR(b.Gemm({h->gpu(), wv->gpu(), v->gpu().Reshaped({1, kKvHeads * kHeadDim})}));
    RETURN_IF_ERROR(b.Rope({q->gpu(), positions->gpu(), inv_freq->gpu()}));
    RETURN_IF_ERROR(b.Rope({k->gpu(), positions->gpu(), inv_freq->gpu()}));
    RETURN_IF_ERROR(b.KvWrite({k->gpu(), v->gpu(), k_cache->gpu(), v_cache->gpu(), slots->gpu(),
                               positions->gpu()}));
    AttentionArgs a{q->gpu(), k_cache->gpu(), v_cache->gpu(), slots->gpu(), positions->gpu(),
                    attn->gpu()};
    a.scale = 0.125f;
    RETURN_IF_ERROR(b.Attention(a));
    RETURN_IF_ERROR(b.Gemm({attn->gpu().Reshaped({1, kHeads * kHeadDim}), wo->gpu(), x->gpu(),
                            /*accumulate=*/true}));
    RETURN_IF_ERROR(b.SiluMul({gate->gpu(), up->gpu(), gate->gpu()}));
    return absl::OkStatus();
  }
};

TEST_F(ParityTest, GraphReplayMatchesEagerRuns) {
  using S = DecodeStep;
  S s;
  auto f32 = [&](std::vector<int64_t> dims) { return Make(DType::kF32, std::move(dims)); };
  s.x = f32({1, S::kDim});
  s.norm_w = Floats(RandomFloats(S::kDim, 80), DType::kBF16, {S::kDim});
  s.h = f32({1, S::kDim});
  s.wq = Floats(RandomFloats(S::kHeads * S::kHeadDim * S::kDim, 81, 0.05f), DType::kBF16,
                {S::kHeads * S::kHeadDim, S::kDim});
  s.wk = Floats(RandomFloats(S::kKvHeads * S::kHeadDim * S::kDim, 82, 0.05f), DType::kBF16,
                {S::kKvHeads * S::kHeadDim, S::kDim});
  s.wv = Floats(RandomFloats(S::kKvHeads * S::kHeadDim * S::kDim, 83, 0.05f), DType::kBF16,
                {S::kKvHeads * S::kHeadDim, S::kDim});
  s.wo = Floats(RandomFloats(S::kDim * S::kHeads * S::kHeadDim, 84, 0.05f), DType::kBF16,
                {S::kDim, S::kHeads * S::kHeadDim});
  s.q = f32({1, S::kHeads, S::kHeadDim});
  s.k = f32({1, S::kKvHeads, S::kHeadDim});
  s.v = f32({1, S::kKvHeads, S::kHeadDim});
  s.attn = f32({1, S::kHeads, S::kHeadDim});
  const std::vector<int64_t> cache_dims = {2, S::kMaxSeq, S::kKvHeads, S::kHeadDim};
  s.k_cache = f32(cache_dims);
  s.v_cache = f32(cache_dims);
  s.slots = Ints({1});
  s.positions = Ints({0});
  std::vector<float> inv(S::kHeadDim / 2);
  for (size_t i = 0; i < inv.size(); ++i) inv[i] = std::pow(10000.0f, -2.0f * i / S::kHeadDim);
  s.inv_freq = Floats(inv, DType::kF32, {S::kHeadDim / 2});
  s.gate = f32({1, S::kFfn});
  s.up = f32({1, S::kFfn});
  ASSERT_GT(gpu_->AttentionSplits(1, S::kHeads, S::kKvHeads, S::kMaxSeq), 1);

  const int64_t cache_size = 2 * S::kMaxSeq * S::kKvHeads * S::kHeadDim;
  const std::vector<float> cache_k0 = RandomFloats(cache_size, 85);
  const std::vector<float> cache_v0 = RandomFloats(cache_size, 86);
  // Per step: the inputs a runtime would update in place between replays.
  auto load_inputs = [&](int step) {
    s.x->SetFloats(RandomFloats(S::kDim, 90 + step));
    s.gate->SetFloats(RandomFloats(S::kFfn, 100 + step));
    s.up->SetFloats(RandomFloats(S::kFfn, 110 + step));
    s.positions->SetInts({step == 0 ? 4000 : 77});
    s.slots->SetInts({step == 0 ? 1 : 0});
    s.k_cache->SetFloats(cache_k0);
    s.v_cache->SetFloats(cache_v0);
  };
  auto outputs = [&] {
    std::vector<uint8_t> all;
    for (Twin* t : {s.x.get(), s.attn.get(), s.gate.get(), s.k_cache.get()}) {
      const std::vector<uint8_t> b = t->GpuBytes();
      all.insert(all.end(), b.begin(), b.end());
    }
    return all;
  };

  // Eager runs first: they also size the split-KV scratch, which cannot grow while capturing.
  std::vector<std::vector<uint8_t>> eager;
  for (int step = 0; step < 2; ++step) {
    load_inputs(step);
    ASSERT_OK(s.Enqueue(*gpu_));
    ASSERT_OK(gpu_->Synchronize());
    eager.push_back(outputs());
  }
  ASSERT_NE(eager[0], eager[1]);

  load_inputs(0);
  ASSERT_OK(gpu_->BeginCapture());
  const absl::Status during = s.Enqueue(*gpu_);
  const absl::Status sync = gpu_->Synchronize();  // refused, without breaking the capture
  auto graph = gpu_->EndCapture();
  ASSERT_OK(during);
  EXPECT_EQ(sync.code(), absl::StatusCode::kFailedPrecondition) << sync;
  ASSERT_TRUE(graph.ok()) << graph.status();
  for (int step = 0; step < 2; ++step) {
    load_inputs(step);  // the captured step reads the new positions, slots and activations
    ASSERT_OK(graph->Replay());
    ASSERT_OK(gpu_->Synchronize());
    EXPECT_TRUE(outputs() == eager[step]) << "replay " << step << " differs from the eager run";
  }
  Comparisons().push_back({"GraphReplay", "BF16", "decode step x2 vs eager", 0.0, 0.0});

  // Scratch grows under the graph: an eager 4-token split-KV attention (more partial states)
  // and a BF16 GEMM of 300 rows (the activation cast) move both buffers. The graph must still
  // replay to the eager results: the backend keeps the scratch it recorded alive.
  const uint64_t generation = gpu_->scratch_generation();
  {
    constexpr int64_t kN = 4;
    ASSERT_GT(gpu_->AttentionSplits(kN, S::kHeads, S::kKvHeads, S::kMaxSeq), 1);
    auto q4 = Floats(RandomFloats(kN * S::kHeads * S::kHeadDim, 140), DType::kF32,
                     {kN, S::kHeads, S::kHeadDim});
    auto out4 = Make(DType::kF32, {kN, S::kHeads, S::kHeadDim});
    auto slots4 = Ints({0, 1, 0, 1}), pos4 = Ints({4000, 3000, 2000, 1000});
    ASSERT_OK(gpu_->Attention({q4->gpu(), s.k_cache->gpu(), s.v_cache->gpu(), slots4->gpu(),
                               pos4->gpu(), out4->gpu(), TensorView(), 0.125f}));
    auto x300 = Floats(RandomFloats(300 * S::kDim, 141), DType::kF32, {300, S::kDim});
    auto y300 = Make(DType::kF32, {300, S::kHeads * S::kHeadDim});
    ASSERT_OK(gpu_->Gemm({x300->gpu(), s.wq->gpu(), y300->gpu()}));
    ASSERT_OK(gpu_->Synchronize());
  }
  EXPECT_GT(gpu_->scratch_generation(), generation) << "the eager ops grew the scratch";
  EXPECT_GT(gpu_->retired_scratch_bytes(), 0u) << "the graph's scratch was kept for it";
  for (int step = 0; step < 2; ++step) {
    load_inputs(step);
    ASSERT_OK(graph->Replay());
    ASSERT_OK(gpu_->Synchronize());
    EXPECT_TRUE(outputs() == eager[step]) << "replay " << step << " after scratch grew";
  }
  Comparisons().push_back({"GraphReplay", "BF16", "decode step after scratch grew", 0.0, 0.0});
  graph = absl::StatusOr<CudaGraph>(absl::CancelledError("released"));
  EXPECT_EQ(gpu_->retired_scratch_bytes(), 0u) << "the last graph released the old scratch";
}

// ---- Errors ----

TEST_F(ParityTest, ErrorsNameTheOpShapesAndMemory) {
  auto huge = gpu_->Allocate(size_t{1} << 50);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();
  EXPECT_NE(huge.status().message().find("free"), absl::string_view::npos) << huge.status();
  EXPECT_NE(huge.status().message().find("1125899906842624 bytes"), absl::string_view::npos)
      << huge.status();

  // Host views are refused before any kernel could fault on them.
  std::vector<float> host(64);
  auto w = Make(DType::kF32, {64});
  absl::Status s = gpu_->RmsNorm({TensorView::Of(host.data(), DType::kF32, {1, 64}), w->gpu(),
                                  TensorView::Of(host.data(), DType::kF32, {1, 64})});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("RmsNorm"), absl::string_view::npos) << s;

  // A position beyond the cache: OutOfRange from Synchronize (the op itself is asynchronous),
  // and the backend stays usable.
  auto k = Floats(RandomFloats(64, 1), DType::kF32, {1, 1, 64});
  auto cache = Make(DType::kF32, {1, 8, 1, 64});
  auto cache_v = Make(DType::kF32, {1, 8, 1, 64});
  auto slots = Ints({0}), positions = Ints({0});
  positions->SetInts({8});
  ASSERT_OK(gpu_->KvWrite({k->gpu(), k->gpu(), cache->gpu(), cache_v->gpu(), slots->gpu(),
                           positions->gpu()}));
  s = gpu_->Synchronize();
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
  EXPECT_OK(gpu_->Synchronize());

  // Unsupported head_dim (80 is supported, 48 is not): Unimplemented naming the op.
  ASSERT_FALSE(cuda::AttentionSupportsHeadDim(48));
  auto q = Make(DType::kF32, {1, 1, 48});
  auto kc = Make(DType::kF32, {1, 4, 1, 48});
  auto out = Make(DType::kF32, {1, 1, 48});
  s = gpu_->Attention({q->gpu(), kc->gpu(), kc->gpu(), slots->gpu(), slots->gpu(), out->gpu()});
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << s;
  EXPECT_NE(s.message().find("head_dim"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace tessera
