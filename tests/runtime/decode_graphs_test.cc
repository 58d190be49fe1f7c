// Decode steps replayed as captured graphs give exactly the tokens of eager execution, also when
// op scratch grows after graphs were captured (a request joining mid-run, a longer prefill, a
// larger batch, a second Generate call).
//
// - The bookkeeping of DecodeGraphs against a scripted GraphCapture.
// - The guarded device backend with graph capture (tests/runtime/guarded_device_backend.h): a
//   replay checks every view it touches against the live allocations, so a graph that kept a
//   pointer to freed scratch fails instead of passing. Runs everywhere.
// - The CUDA backend (skips without a GPU): the same generations with split-KV attention (a
//   1024-position cache), cuBLAS inside graphs (batches above 8) and BF16 weights (the GEMM's
//   activation cast scratch).
#include <cmath>
#include <cstring>
#include <functional>
#include <random>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/graph_capture.h"
#include "runtime/decode_graphs.h"
#include "runtime/generator.h"
#include "runtime/llama_model.h"
#include "tests/golden/golden_fixture.h"
#include "tests/runtime/guarded_device_backend.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

constexpr char kModel[] = "tests/fixtures/models/llama70b_gqa";  // F32: GPU math stays close
constexpr char kBf16Model[] = "tests/fixtures/models/llama70b_gqa_bf16";

// ---- DecodeGraphs against a scripted capture ----

class ScriptedCapture final : public GraphCapture {
 public:
  struct Work final : CapturedWork {
    explicit Work(ScriptedCapture* c) : capture(c) { ++capture->live; }
    ~Work() override { --capture->live; }
    absl::Status Replay() override {
      ++capture->replays;
      return absl::OkStatus();
    }
    ScriptedCapture* capture;
  };
  absl::Status BeginCapture() override {
    ++begins;
    return absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<CapturedWork>> EndCapture() override {
    ++ends;
    return std::make_unique<Work>(this);
  }
  uint64_t scratch_generation() const override { return generation; }

  uint64_t generation = 7;
  int begins = 0, ends = 0, live = 0, replays = 0;
};

TEST(DecodeGraphsTest, GraphsCapturedOnOlderScratchAreDroppedAndRecaptured) {
  ScriptedCapture capture;
  DecodeGraphs graphs(&capture);
  const DecodeGraphKey one{1, &capture, 4, 512}, two{2, &capture, 4, 512};
  EXPECT_FALSE(graphs.Has(one));
  ASSERT_OK(graphs.Capture(one, [] { return absl::OkStatus(); }));
  ASSERT_OK(graphs.Capture(two, [] { return absl::OkStatus(); }));
  EXPECT_TRUE(graphs.Has(one));
  ASSERT_OK(graphs.Replay(one));
  EXPECT_EQ(capture.replays, 1);

  capture.generation = 8;  // an eager op grew its scratch
  EXPECT_FALSE(graphs.Has(one)) << "a graph of the old scratch must not be replayed";
  EXPECT_EQ(capture.live, 0) << "both graphs dropped, so the backend can release old scratch";
  EXPECT_EQ(graphs.dropped_for_scratch(), 2);
  const absl::Status s = graphs.Replay(two);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_EQ(capture.replays, 1);

  ASSERT_OK(graphs.Capture(one, [] { return absl::OkStatus(); }));
  EXPECT_TRUE(graphs.Has(one));
  EXPECT_FALSE(graphs.Has(two));
  EXPECT_EQ(graphs.size(), 1);
}

TEST(DecodeGraphsTest, AFailedEnqueueStillEndsTheCapture) {
  ScriptedCapture capture;
  DecodeGraphs graphs(&capture);
  const DecodeGraphKey key{3, &capture, 1, 64};
  const absl::Status s = graphs.Capture(key, [] { return absl::InternalError("op failed"); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_EQ(capture.begins, 1);
  EXPECT_EQ(capture.ends, 1);
  EXPECT_FALSE(graphs.Has(key));
  EXPECT_EQ(capture.live, 0);
}

TEST(DecodeGraphsTest, RefusedOnTheCpuBackend) {
  auto backend = *MakeBackend(BackendKind::kCpu);
  EXPECT_FALSE(DecodeGraphs::Supported(*backend));
  ASSERT_OK_AND_ASSIGN(auto model, LlamaModel::Load(kModel, backend.get()));
  const absl::Status s = model->EnableDecodeGraphs(true);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_OK(model->EnableDecodeGraphs(false));
}

// ---- A captured graph whose scratch grows under it (guarded device) ----

TEST(DecodeGraphsTest, AGraphStillReplaysCorrectlyAfterItsScratchGrew) {
  testing::GuardedDeviceBackend device(/*graphs=*/true);
  GraphCapture* capture = device.graph_capture();
  ASSERT_NE(capture, nullptr);
  constexpr int64_t kHeads = 4, kKvHeads = 2, kHeadDim = 8, kMaxSeq = 16, kLong = 5;
  auto upload = [&](const std::vector<float>& host, std::vector<int64_t> dims, DType dtype) {
    void* p = *device.Allocate(host.size() * 4);
    EXPECT_OK(device.CopyToDevice(p, host.data(), host.size() * 4));
    TensorView v;
    v.data = p;
    v.dtype = dtype;
    v.device = Device::kCuda;
    for (int64_t d : dims) v.shape[v.rank++] = d;
    return v;
  };
  auto ints = [&](std::vector<int32_t> values) {
    std::vector<float> bits(values.size());
    std::memcpy(bits.data(), values.data(), values.size() * 4);
    return upload(bits, {static_cast<int64_t>(values.size())}, DType::kI32);
  };
  const std::vector<int64_t> cache_dims = {1, kMaxSeq, kKvHeads, kHeadDim};
  const TensorView k_cache = upload(testing::RandomFloats(kMaxSeq * kKvHeads * kHeadDim, 1),
                                    cache_dims, DType::kF32);
  const TensorView v_cache = upload(testing::RandomFloats(kMaxSeq * kKvHeads * kHeadDim, 2),
                                    cache_dims, DType::kF32);
  const TensorView q1 = upload(testing::RandomFloats(kHeads * kHeadDim, 3), {1, kHeads, kHeadDim},
                               DType::kF32);
  const TensorView q5 = upload(testing::RandomFloats(kLong * kHeads * kHeadDim, 4),
                               {kLong, kHeads, kHeadDim}, DType::kF32);
  const TensorView out1 = upload(std::vector<float>(kHeads * kHeadDim), {1, kHeads, kHeadDim},
                                 DType::kF32);
  const TensorView out5 = upload(std::vector<float>(kLong * kHeads * kHeadDim),
                                 {kLong, kHeads, kHeadDim}, DType::kF32);
  const TensorView slot1 = ints({0}), pos1 = ints({9});
  const TensorView slots5 = ints({0, 0, 0, 0, 0}), pos5 = ints({0, 1, 2, 3, 4});
  auto decode = [&] {
    return device.Attention({q1, k_cache, v_cache, slot1, pos1, out1, TensorView(), 0.35f});
  };
  auto read = [&](TensorView v) {
    std::vector<float> host(v.numel());
    EXPECT_OK(device.CopyToHost(host.data(), v.data, v.bytes()));
    return host;
  };

  ASSERT_OK(decode());  // eager, sizing the scratch for one token
  const std::vector<float> eager = read(out1);
  ASSERT_OK(capture->BeginCapture());
  const absl::Status enqueued = decode();
  auto direct = capture->EndCapture();
  ASSERT_OK(enqueued);
  ASSERT_OK(direct.status());
  DecodeGraphs graphs(capture);
  const DecodeGraphKey key{1, k_cache.data, 1, kMaxSeq};
  ASSERT_OK(graphs.Capture(key, decode));
  const uint64_t captured_at = capture->scratch_generation();

  // A five-token prefill grows the attention scratch while both graphs exist.
  ASSERT_OK(device.Attention({q5, k_cache, v_cache, slots5, pos5, out5, TensorView(), 0.35f}));
  EXPECT_GT(capture->scratch_generation(), captured_at);
  EXPECT_GT(device.scratch().retired_bytes(), 0u) << "the graphs' scratch was kept for them";

  // Replayed directly, the old graph touches only live memory (each view is checked against
  // the live allocations) and gives the eager result.
  const std::vector<float> zeros(kHeads * kHeadDim, 0.0f);
  ASSERT_OK(device.CopyToDevice(out1.data, zeros.data(), out1.bytes()));
  ASSERT_OK((*direct)->Replay());
  EXPECT_EQ(read(out1), eager);

  // DecodeGraphs no longer offers its graph: the next step of this shape is captured again, on
  // the current scratch, and gives the same result.
  EXPECT_FALSE(graphs.Has(key));
  EXPECT_GT(device.scratch().retired_bytes(), 0u) << "the direct graph still holds it";
  direct->reset();
  EXPECT_EQ(device.scratch().retired_bytes(), 0u) << "the last old graph released the scratch";
  ASSERT_OK(graphs.Capture(key, decode));
  ASSERT_OK(device.CopyToDevice(out1.data, zeros.data(), out1.bytes()));
  ASSERT_OK(graphs.Replay(key));
  EXPECT_EQ(read(out1), eager);
  EXPECT_EQ(device.replays(), 2);
}

// ---- Whole generations, eager against graphs ----

// `count` requests of varied prompt lengths and token budgets (ids of the fixtures' 512-word
// vocabulary), so that sequences finish at different steps and later ones join mid-run.
std::vector<GenerationRequest> VariedRequests(int count, int min_prompt, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> id(3, 511), extra(0, 24);
  std::vector<GenerationRequest> requests(count);
  for (int i = 0; i < count; ++i) {
    GenerationRequest& r = requests[i];
    r.prompt_ids.push_back(1);
    const int length = min_prompt + extra(gen);
    for (int t = 1; t < length; ++t) r.prompt_ids.push_back(id(gen));
    r.max_new_tokens = 4 + (i * 5) % 11;
    r.ignore_eos = true;
  }
  return requests;
}

// The tokens of each Generate call, in order, on one model.
std::vector<std::vector<std::vector<int32_t>>> GenerateAll(
    Backend* backend, const char* model_dir, bool graphs, const GeneratorOptions& options,
    const std::vector<std::vector<GenerationRequest>>& calls,
    const std::function<void()>& after_each_call = nullptr) {
  std::vector<std::vector<std::vector<int32_t>>> tokens;
  auto model = LlamaModel::Load(model_dir, backend);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return tokens;
  EXPECT_OK((*model)->EnableDecodeGraphs(graphs));
  Generator generator(model->get(), nullptr, options);
  for (const auto& requests : calls) {
    auto results = generator.Generate(requests);
    EXPECT_TRUE(results.ok()) << results.status();
    if (!results.ok()) return tokens;
    tokens.emplace_back();
    for (const auto& r : *results) tokens.back().push_back(r.token_ids);
    if (after_each_call) after_each_call();
  }
  return tokens;
}

// Two calls: short prompts at batch 3 (requests join as others finish), then longer prompts
// on the same model, whose prefills grow scratch under the graphs of the first call.
std::vector<std::vector<GenerationRequest>> TwoCalls(int first, int second) {
  return {VariedRequests(first, 4, 11), VariedRequests(second, 30, 12)};
}

TEST(DecodeGraphsTest, GuardedDeviceGraphStepsEqualEagerStepsAsScratchGrows) {
  const auto calls = TwoCalls(7, 5);
  const GeneratorOptions options{.max_batch = 3};
  testing::GuardedDeviceBackend eager_device(/*graphs=*/false);
  const auto eager = GenerateAll(&eager_device, kModel, false, options, calls);
  testing::GuardedDeviceBackend device(/*graphs=*/true);
  std::vector<uint64_t> generation;
  std::vector<int64_t> captures, replays;
  const auto replayed = GenerateAll(&device, kModel, true, options, calls, [&] {
    generation.push_back(device.scratch().generation());
    captures.push_back(device.captures());
    replays.push_back(device.replays());
  });
  ASSERT_EQ(eager.size(), 2u);
  EXPECT_EQ(replayed, eager);
  ASSERT_EQ(generation.size(), 2u);
  EXPECT_GT(replays[0], 10) << "decode steps of the first call were replayed";
  EXPECT_GT(generation[1], generation[0]) << "the second call's prefills grew the scratch";
  EXPECT_GT(captures[1], captures[0]) << "graphs were captured again on the new scratch";
  EXPECT_GT(replays[1], replays[0]) << "and replayed";
  // Eager on the guarded device is the CPU backend's math: the same tokens as the CPU.
  auto cpu = *MakeBackend(BackendKind::kCpu);
  EXPECT_EQ(GenerateAll(cpu.get(), kModel, false, options, calls), eager);
}

// Greedy generation of three prompts in one batch (decode steps of 3, 2 and 1 sequences as they
// finish at different lengths), eager and with graphs: identical tokens, equal to transformers'.
TEST(DecodeGraphsTest, ReplayedStepsEqualEagerSteps) {
  auto backend = MakeBackend(BackendKind::kCuda);
  if (!backend.ok()) GTEST_SKIP() << "no CUDA backend: " << backend.status().message();
  ASSERT_OK_AND_ASSIGN(auto golden, SafetensorsFile::Open(std::string(kModel) + "/golden.safetensors"));
  std::vector<GenerationRequest> requests;
  for (int p = 0; p < 3; ++p) {
    GenerationRequest r;
    r.prompt_ids = testing::ReadIds(*golden, absl::StrCat("prompt", p, ".input_ids"));
    r.max_new_tokens = 12 + 8 * p;
    r.ignore_eos = true;
    requests.push_back(r);
  }
  std::vector<std::vector<int32_t>> tokens[2];
  for (bool graphs : {false, true}) {
    ASSERT_OK_AND_ASSIGN(auto model, LlamaModel::Load(kModel, backend->get()));
    ASSERT_OK(model->EnableDecodeGraphs(graphs));
    Generator generator(model.get(), nullptr, {.max_batch = 3});
    ASSERT_OK_AND_ASSIGN(auto results, generator.Generate(requests));
    for (const auto& r : results) tokens[graphs].push_back(r.token_ids);
  }
  EXPECT_EQ(tokens[0], tokens[1]);
  for (int p = 0; p < 3; ++p) {
    const auto expected = testing::ReadIds(*golden, absl::StrCat("prompt", p, ".greedy"));
    EXPECT_EQ(std::vector<int32_t>(tokens[1][p].begin(), tokens[1][p].begin() + 12),
              std::vector<int32_t>(expected.begin(), expected.begin() + 12))
        << "prompt " << p;
  }
}

// On the GPU: a 1024-position cache (split-KV attention and its partial-state scratch), batches
// above 8 (cuBLAS inside the graphs) with BF16 and F32 weights (the BF16 GEMM's activation cast
// scratch), requests joining mid-run and a second call with longer prompts: graph tokens equal
// eager tokens exactly.
TEST(DecodeGraphsTest, CudaGraphStepsEqualEagerStepsAsScratchGrows) {
  auto backend = MakeBackend(BackendKind::kCuda);
  if (!backend.ok()) GTEST_SKIP() << "no CUDA backend: " << backend.status().message();
  const auto calls = TwoCalls(14, 12);
  const GeneratorOptions options{.max_batch = 10, .max_seq_len = 1024};
  for (const char* model : {kBf16Model, kModel}) {
    SCOPED_TRACE(model);
    const auto eager = GenerateAll(backend->get(), model, false, options, calls);
    const auto replayed = GenerateAll(backend->get(), model, true, options, calls);
    ASSERT_EQ(eager.size(), 2u);
    EXPECT_EQ(replayed, eager);
  }
}

}  // namespace
}  // namespace tessera
