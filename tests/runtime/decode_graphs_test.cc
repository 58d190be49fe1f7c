// Decode steps replayed as CUDA graphs give exactly the tokens of eager execution. Without a GPU
// the CUDA half skips with a visible message; the CPU half checks that graphs are refused where
// they cannot be captured.
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "runtime/decode_graphs.h"
#include "runtime/generator.h"
#include "runtime/llama_model.h"
#include "tests/golden/golden_fixture.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

constexpr char kModel[] = "tests/fixtures/models/llama70b_gqa";  // F32: GPU math stays close

TEST(DecodeGraphsTest, RefusedOnTheCpuBackend) {
  auto backend = *MakeBackend(BackendKind::kCpu);
  EXPECT_FALSE(DecodeGraphs::Supported(*backend));
  ASSERT_OK_AND_ASSIGN(auto model, LlamaModel::Load(kModel, backend.get()));
  const absl::Status s = model->EnableDecodeGraphs(true);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_OK(model->EnableDecodeGraphs(false));
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

}  // namespace
}  // namespace tessera
