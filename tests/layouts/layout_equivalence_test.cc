// Every parallel layout gives the single-rank answer: ranks run as threads (LocalCommunicator),
// each with its own backend and its shard of the model. For each golden fixture family and each
// layout (tp2, tp4 with KV-head replication where n_kv_heads < 4, pp2, tp2 x pp2), logits are
// within 1e-5 relative of the single-rank run and greedy tokens, batched with micro-batching,
// equal the tokens transformers produced.
#include <omp.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "parallel/local_communicator.h"
#include "parallel/process_groups.h"
#include "runtime/generator.h"
#include "runtime/llama_model.h"
#include "runtime/vocab_parallel.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

constexpr int kPrompts = 3;

struct LayoutCase {
  std::string model;
  int tp, pp;
};

std::vector<int32_t> ReadIds(const SafetensorsFile& golden, const std::string& name) {
  const TensorEntry& t = golden.tensors().at(name);
  const int32_t* p = reinterpret_cast<const int32_t*>(t.data);
  return std::vector<int32_t>(p, p + t.shape[0]);
}

ForwardBatch AllPositions(const std::vector<int32_t>& ids) {
  ForwardBatch b;
  for (size_t i = 0; i < ids.size(); ++i) {
    b.tokens.push_back(ids[i]);
    b.positions.push_back(static_cast<int32_t>(i));
    b.slots.push_back(0);
    b.logit_rows.push_back(static_cast<int32_t>(i));
  }
  return b;
}

// What one rank observed: full logits per prompt (last stage only) and greedy tokens per prompt.
struct RankResult {
  absl::Status status;
  std::vector<std::vector<float>> logits;
  std::vector<std::vector<int32_t>> tokens;
};

void RunRank(const std::string& dir, WorldLayout layout, std::unique_ptr<Communicator> world,
             const std::vector<std::vector<int32_t>>& prompts, RankResult* out) {
  omp_set_num_threads(1);
  out->status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(ProcessGroups groups, MakeProcessGroups(std::move(world), layout));
    ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(BackendKind::kCpu));
    ModelParallelism par{groups.layout, groups.tp.get(), groups.pp.get()};
    ASSIGN_OR_RETURN(auto model, LlamaModel::Load(dir, backend.get(), par));
    for (const auto& ids : prompts) {
      auto cache = model->MakeCache(1, static_cast<int64_t>(ids.size()));
      Tensor local, full;
      RETURN_IF_ERROR(model->Forward(AllPositions(ids), *cache, &local));
      if (model->plan().last_stage()) {
        RETURN_IF_ERROR(GatherLogits(groups.tp.get(), model->plan(), model->config().vocab_size,
                                     local, &full));
        out->logits.emplace_back(full.data<float>(), full.data<float>() + full.numel());
      }
    }
    std::vector<GenerationRequest> requests;
    for (const auto& ids : prompts) {
      GenerationRequest r;
      r.prompt_ids = ids;
      r.max_new_tokens = 32;
      r.ignore_eos = true;
      requests.push_back(r);
    }
    Generator generator(model.get(), nullptr, {.max_batch = 3, .micro_batches = 2});
    ASSIGN_OR_RETURN(auto results, generator.Generate(requests));
    for (const auto& r : results) out->tokens.push_back(r.token_ids);
    return absl::OkStatus();
  }();
}

class LayoutTest : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(LayoutTest, MatchesSingleRank) {
  const LayoutCase& c = GetParam();
  const std::string dir = "tests/fixtures/models/" + c.model;
  ASSERT_OK_AND_ASSIGN(auto golden, SafetensorsFile::Open(dir + "/golden.safetensors"));
  std::vector<std::vector<int32_t>> prompts, greedy;
  for (int p = 0; p < kPrompts; ++p) {
    prompts.push_back(ReadIds(*golden, absl::StrCat("prompt", p, ".input_ids")));
    greedy.push_back(ReadIds(*golden, absl::StrCat("prompt", p, ".greedy")));
  }
  // The single-rank reference.
  RankResult reference;
  RunRank(dir, WorldLayout{}, std::move(LocalCommunicator::Create(1)[0]), prompts, &reference);
  ASSERT_OK(reference.status);

  const WorldLayout layout{c.tp, c.pp, 1, 0};
  auto comms = LocalCommunicator::Create(layout.world_size(), absl::Seconds(60));
  std::vector<RankResult> results(layout.world_size());
  std::vector<std::thread> threads;
  for (int r = 0; r < layout.world_size(); ++r) {
    threads.emplace_back(RunRank, dir, layout, std::move(comms[r]), std::cref(prompts), &results[r]);
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < layout.world_size(); ++r) {
    WorldLayout me = layout;
    me.rank = r;
    ASSERT_OK(results[r].status);
    for (int p = 0; p < kPrompts; ++p) {
      EXPECT_EQ(results[r].tokens[p], greedy[p]) << me.Prefix() << "prompt " << p;
      if (!me.last_stage()) continue;
      const auto& got = results[r].logits[p];
      const auto& want = reference.logits[p];
      ASSERT_EQ(got.size(), want.size());
      const double err = testing::RelativeError(got.data(), want.data(), want.size());
      EXPECT_LT(err, 1e-5) << me.Prefix() << "prompt " << p;
    }
  }
}

std::vector<LayoutCase> AllCases() {
  std::vector<LayoutCase> cases;
  for (const char* model : {"llama2_mha", "llama70b_gqa", "codellama", "llama31", "llama70b_gqa_bf16"}) {
    for (auto [tp, pp] : std::vector<std::pair<int, int>>{{2, 1}, {4, 1}, {1, 2}, {2, 2}}) {
      cases.push_back({model, tp, pp});
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LayoutTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<LayoutCase>& info) {
                           return absl::StrCat(info.param.model, "_tp", info.param.tp, "_pp",
                                               info.param.pp);
                         });

}  // namespace
}  // namespace tessera
