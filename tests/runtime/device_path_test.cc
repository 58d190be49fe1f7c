// The runtime's device path without a GPU: the model, generator and scorer run on
// GuardedDeviceBackend (CPU math behind memory the host cannot touch, views checked to be device
// memory) and must give exactly what they give on the CPU backend, which the golden tests tie
// to transformers. A host access to device memory kills the test (SIGSEGV); a host buffer
// passed to an op fails it with the op and view named.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "runtime/generator.h"
#include "runtime/llama_model.h"
#include "runtime/safetensors.h"
#include "runtime/scorer.h"
#include "tests/golden/golden_fixture.h"
#include "tests/runtime/guarded_device_backend.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

// F32 MHA with two shards, 8:1 GQA in BF16, and the trained embedded model.
const char* const kModels[] = {"tests/fixtures/models/llama2_mha",
                               "tests/fixtures/models/llama70b_gqa_bf16",
                               "models/tessera-code-tiny"};

class DevicePathTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(cpu_, MakeBackend(BackendKind::kCpu));
    ASSERT_OK_AND_ASSIGN(on_cpu_, LlamaModel::Load(GetParam(), cpu_.get()));
    ASSERT_OK_AND_ASSIGN(on_device_, LlamaModel::Load(GetParam(), &device_));
    ASSERT_OK_AND_ASSIGN(golden_,
                         SafetensorsFile::Open(std::string(GetParam()) + "/golden.safetensors"));
    for (int p = 0; p < 3; ++p) {
      prompts_.push_back(testing::ReadIds(*golden_, absl::StrCat("prompt", p, ".input_ids")));
    }
  }

  static std::vector<GenerationRequest> Requests(const std::vector<std::vector<int32_t>>& prompts,
                                                 float temperature) {
    std::vector<GenerationRequest> requests;
    for (const auto& ids : prompts) {
      GenerationRequest r;
      r.prompt_ids = ids;
      r.max_new_tokens = 12;
      r.ignore_eos = true;
      r.sampling.temperature = temperature;
      r.sampling.top_k = temperature > 0 ? 40 : 0;
      r.sampling.top_p = temperature > 0 ? 0.9f : 1.0f;
      r.sampling.seed = 7;
      requests.push_back(r);
    }
    return requests;
  }

  testing::GuardedDeviceBackend device_;  // declared before the models that use it
  std::unique_ptr<Backend> cpu_;
  std::unique_ptr<LlamaModel> on_cpu_, on_device_;
  std::unique_ptr<SafetensorsFile> golden_;
  std::vector<std::vector<int32_t>> prompts_;
};

TEST_P(DevicePathTest, WeightsLiveInDeviceMemory) {
  // Every weight byte was uploaded; nothing is read from the host mapping afterwards (it would
  // not be device memory: CheckViews refuses it).
  EXPECT_GT(device_.bytes_to_device(), 0);
}

TEST_P(DevicePathTest, LogitsEqualTheCpuBackend) {
  for (const auto& ids : prompts_) {
    const int64_t n = static_cast<int64_t>(ids.size());
    Tensor logits[2];
    LlamaModel* models[2] = {on_cpu_.get(), on_device_.get()};
    for (int i = 0; i < 2; ++i) {
      ASSERT_OK_AND_ASSIGN(auto cache, models[i]->MakeCache(1, n));
      ASSERT_OK(models[i]->Forward(testing::AllPositions(ids), *cache, &logits[i]));
    }
    ASSERT_EQ(logits[0].numel(), logits[1].numel());
    EXPECT_EQ(testing::RelativeError(logits[1].data<float>(), logits[0].data<float>(),
                                     logits[0].numel()),
              0.0);
    // Activations are reused: the same pass again allocates no device memory.
    ASSERT_OK_AND_ASSIGN(auto cache, on_device_->MakeCache(1, n));
    const int64_t before = device_.allocations();
    ASSERT_OK(on_device_->Forward(testing::AllPositions(ids), *cache, &logits[1]));
    EXPECT_EQ(device_.allocations(), before) << "a repeated forward pass allocated";
  }
  EXPECT_GT(device_.ops(), 0);
  EXPECT_GT(device_.bytes_to_host(), 0);
}

TEST_P(DevicePathTest, GreedyAndSampledGenerationEqualTheCpuBackend) {
  for (float temperature : {0.0f, 0.8f}) {
    SCOPED_TRACE(absl::StrCat("temperature ", temperature));
    const auto requests = Requests(prompts_, temperature);
    Generator cpu_generator(on_cpu_.get(), nullptr, {.max_batch = 3});
    Generator device_generator(on_device_.get(), nullptr, {.max_batch = 3});
    ASSERT_OK_AND_ASSIGN(auto expected, cpu_generator.Generate(requests));
    ASSERT_OK_AND_ASSIGN(auto got, device_generator.Generate(requests));
    ASSERT_EQ(got.size(), expected.size());
    for (size_t p = 0; p < got.size(); ++p) {
      EXPECT_EQ(got[p].token_ids, expected[p].token_ids) << "prompt " << p;
    }
    if (temperature == 0.0f) {  // greedy: also transformers' tokens
      for (int p = 0; p < 3; ++p) {
        const auto golden = testing::ReadIds(*golden_, absl::StrCat("prompt", p, ".greedy"));
        EXPECT_EQ(got[p].token_ids, std::vector<int32_t>(golden.begin(), golden.begin() + 12))
            << "prompt " << p;
      }
    }
  }
}

// Device memory is allocated once: after a first call has sized the activations and the model's
// KV cache, further calls (even generating 3x more tokens, or scoring) allocate nothing.
TEST_P(DevicePathTest, RepeatedCallsDoNotAllocate) {
  int64_t allocations[3];
  for (int run = 0; run < 3; ++run) {
    auto requests = Requests(prompts_, 0.0f);
    for (auto& r : requests) r.max_new_tokens = run == 2 ? 24 : 8;
    Generator generator(on_device_.get(), nullptr, {.max_batch = 3, .max_seq_len = 64});
    const int64_t before = device_.allocations();
    ASSERT_OK(generator.Generate(requests).status());
    allocations[run] = device_.allocations() - before;
  }
  EXPECT_GT(allocations[0], 0);
  EXPECT_EQ(allocations[1], 0);
  EXPECT_EQ(allocations[2], 0);
  Scorer scorer(on_device_.get());
  const int64_t before = device_.allocations();
  ASSERT_OK(scorer.Loglikelihood({{prompts_[2], {1, 2, 3}}}).status());
  EXPECT_EQ(device_.allocations(), before) << "scoring after generation allocated";
}

TEST_P(DevicePathTest, LoglikelihoodsEqualTheCpuBackend) {
  // Each prompt continued by transformers' first 8 greedy tokens: every token is the argmax.
  std::vector<LoglikelihoodRequest> requests;
  for (int p = 0; p < 3; ++p) {
    const auto greedy = testing::ReadIds(*golden_, absl::StrCat("prompt", p, ".greedy"));
    requests.push_back({prompts_[p], std::vector<int32_t>(greedy.begin(), greedy.begin() + 8)});
  }
  Scorer cpu_scorer(on_cpu_.get()), device_scorer(on_device_.get());
  ASSERT_OK_AND_ASSIGN(auto expected, cpu_scorer.Loglikelihood(requests));
  ASSERT_OK_AND_ASSIGN(auto got, device_scorer.Loglikelihood(requests));
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].logprob, expected[i].logprob) << "request " << i;
    EXPECT_TRUE(got[i].is_greedy) << "request " << i;
    EXPECT_TRUE(expected[i].is_greedy) << "request " << i;
    EXPECT_EQ(got[i].token_logprobs, expected[i].token_logprobs) << "request " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, DevicePathTest, ::testing::ValuesIn(kModels),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           std::string name(info.param);
                           name = name.substr(name.rfind('/') + 1);
                           for (char& ch : name) {
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

// The guard itself: a host buffer handed to an op is refused with the op and view named.
TEST(GuardedDeviceBackendTest, RefusesHostViews) {
  testing::GuardedDeviceBackend device;
  ASSERT_OK_AND_ASSIGN(void* dev, device.Allocate(4 * sizeof(float)));
  float host[4] = {1, 2, 3, 4};
  const TensorView on_device = TensorView::Of(dev, DType::kF32, {4}, Device::kCuda);
  const TensorView host_tagged_device = TensorView::Of(host, DType::kF32, {4}, Device::kCuda);
  const TensorView host_view = TensorView::Of(host, DType::kF32, {4});
  absl::Status s = device.Add({on_device, host_view, on_device});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("Add: b"), absl::string_view::npos) << s;
  s = device.Add({on_device, host_tagged_device, on_device});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("not inside device memory"), absl::string_view::npos) << s;
  ASSERT_OK(device.CopyToDevice(dev, host, sizeof(host)));
  ASSERT_OK(device.Add({on_device, on_device, on_device}));
  float back[4] = {};
  ASSERT_OK(device.CopyToHost(back, dev, sizeof(back)));
  EXPECT_EQ(back[3], 8.0f);
  EXPECT_EQ(device.CopyToHost(back, host, sizeof(back)).code(),
            absl::StatusCode::kInvalidArgument);
  device.Free(dev);
}

// And host code touching device memory dies, as it would on a GPU.
TEST(GuardedDeviceBackendDeathTest, HostReadOfDeviceMemoryFaults) {
  testing::GuardedDeviceBackend device;
  ASSERT_OK_AND_ASSIGN(void* dev, device.Allocate(64));
  volatile float* p = static_cast<float*>(dev);
  EXPECT_DEATH({ (void)p[0]; }, "");
  device.Free(dev);
}

}  // namespace
}  // namespace tessera
