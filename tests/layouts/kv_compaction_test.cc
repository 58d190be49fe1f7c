// Decoding after KV-cache entries were dropped equals transformers decoding with the same pruned
// cache: tools/reference/kv_compaction.py prefilled a prompt, kept a subset of each layer's
// entries (one keep-set for all layers, or one per layer) and ran continuation tokens at the
// following positions; the fixture holds the keep-sets and the continuation logits. Tessera
// prefills the same prompt, compacts each layer (KvCache::Compact), decodes the continuation in
// one step, and must give the same logits at every layout.
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "runtime/llama_model.h"
#include "runtime/vocab_parallel.h"
#include "tests/golden/golden_fixture.h"
#include "tests/layouts/threaded_world.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

struct CompactionCase {
  std::string model, keep;  // keep: "uniform" or "per_layer"
  int tp, pp;
};

void PrintTo(const CompactionCase& c, std::ostream* os) {
  *os << c.model << " " << c.keep << " tp" << c.tp << " pp" << c.pp;
}

absl::Status CheckCompaction(const CompactionCase& c, ProcessGroups& groups) {
  const std::string me = groups.layout.Prefix();
  ASSIGN_OR_RETURN(auto fixture, SafetensorsFile::Open(
                                     "tests/fixtures/kv_compaction/" + c.model + ".safetensors"));
  const std::vector<int32_t> prompt = testing::ReadIds(*fixture, "prompt_ids");
  const std::vector<int32_t> cont = testing::ReadIds(*fixture, "continuation_ids");
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(BackendKind::kCpu));
  const ModelParallelism par{groups.layout, groups.tp.get(), groups.pp.get()};
  ASSIGN_OR_RETURN(auto model,
                   LlamaModel::Load("tests/fixtures/models/" + c.model, backend.get(), par));
  ASSIGN_OR_RETURN(auto cache, model->MakeCache(1, prompt.size() + cont.size()));
  ForwardBatch prefill = testing::AllPositions(prompt);
  prefill.logit_rows = {static_cast<int32_t>(prompt.size()) - 1};
  Tensor logits;
  RETURN_IF_ERROR(model->Forward(prefill, *cache, &logits));

  const ShardPlan& plan = model->plan();
  std::vector<std::vector<int32_t>> keeps;
  for (int64_t l = 0; l < plan.layers(); ++l) {
    keeps.push_back(
        testing::ReadIds(*fixture, absl::StrCat(c.keep, ".keep.", plan.layer_begin + l)));
    RETURN_IF_ERROR(cache->Compact(l, /*slot=*/0, keeps.back()));
  }
  ForwardBatch step;
  step.step = 1;
  for (size_t j = 0; j < cont.size(); ++j) {
    step.tokens.push_back(cont[j]);
    step.positions.push_back(static_cast<int32_t>(prompt.size() + j));
    step.slots.push_back(0);
    step.logit_rows.push_back(static_cast<int32_t>(j));
  }
  RETURN_IF_ERROR(model->Forward(step, *cache, &logits));

  for (int64_t l = 0; l < plan.layers(); ++l) {  // kept positions, then the continuation's
    std::vector<int32_t> want = keeps[l];
    for (size_t j = 0; j < cont.size(); ++j) want.push_back(prompt.size() + j);
    const absl::Span<const int32_t> got = cache->positions(l, 0);
    if (std::vector<int32_t>(got.begin(), got.end()) != want) {
      return absl::InternalError(absl::StrCat(me, "layer ", plan.layer_begin + l,
                                              ": the cache's positions are not the kept ones"));
    }
  }
  if (!plan.last_stage()) return absl::OkStatus();
  Tensor full;
  RETURN_IF_ERROR(GatherLogits(par.tp, plan, model->config().vocab_size, logits, &full));
  const TensorEntry& want = fixture->tensors().at(c.keep + ".logits");
  const double err = testing::RelativeError(full.data<float>(),
                                            reinterpret_cast<const float*>(want.data),
                                            static_cast<size_t>(full.numel()));
  std::printf("%s %s %s: relative L2 %.3g against transformers\n", me.c_str(), c.model.c_str(),
              c.keep.c_str(), err);
  if (!(err < 1e-5)) {
    return absl::InternalError(absl::StrCat(me, c.model, " ", c.keep, ": logits after Compact ",
                                            "differ from transformers' by ", err, " (relative)"));
  }
  return absl::OkStatus();
}

class KvCompactionTest : public ::testing::TestWithParam<CompactionCase> {};

TEST_P(KvCompactionTest, DecodingAfterCompactMatchesTransformers) {
  const CompactionCase& c = GetParam();
  const std::vector<absl::Status> statuses = testing::RunThreadedWorld(
      {c.tp, c.pp, 1, 0}, [&](ProcessGroups& groups) { return CheckCompaction(c, groups); });
  for (const absl::Status& s : statuses) EXPECT_OK(s);
}

std::vector<CompactionCase> AllCases() {
  std::vector<CompactionCase> cases;
  for (const char* model : {"llama2_mha", "llama70b_gqa"}) {
    for (const char* keep : {"uniform", "per_layer"}) {
      for (auto [tp, pp] : std::vector<std::pair<int, int>>{{1, 1}, {2, 1}, {1, 2}, {2, 2}}) {
        cases.push_back({model, keep, tp, pp});
      }
    }
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KvCompactionTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<CompactionCase>& info) {
                           return absl::StrCat(info.param.model, "_", info.param.keep, "_tp",
                                               info.param.tp, "_pp", info.param.pp);
                         });

}  // namespace
}  // namespace tessera
