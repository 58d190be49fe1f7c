// `tessera plan` sizes exactly the KV cache the runtime allocates: every rank of a layout loads a
// fixture model with a KV dtype (ModelParallelism::kv_dtype, what --kv-dtype sets), builds its
// cache (LlamaModel::MakeCache) and compares KvCache::bytes() with the memory plan's KV bytes per
// token for that rank times the cache's tokens (slots x entries). The plan's and the runtime's
// defaults are the same dtype.
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/status_macros.h"
#include "runtime/llama_model.h"
#include "runtime/memory_plan.h"
#include "tests/layouts/threaded_world.h"
#include "tests/test_util.h"

namespace tessera {
namespace {

struct AgreementCase {
  std::string model;
  int tp, pp;
  DType kv_dtype;
};

void PrintTo(const AgreementCase& c, std::ostream* os) {
  *os << c.model << " tp" << c.tp << " pp" << c.pp << " " << DTypeName(c.kv_dtype);
}

constexpr int64_t kSlots = 3, kEntries = 37;

absl::Status CheckRank(const AgreementCase& c, const MemoryPlan& plan, ProcessGroups& groups) {
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(BackendKind::kCpu));
  ModelParallelism par{groups.layout, groups.tp.get(), groups.pp.get()};
  par.kv_dtype = c.kv_dtype;
  ASSIGN_OR_RETURN(auto model,
                   LlamaModel::Load("tests/fixtures/models/" + c.model, backend.get(), par));
  ASSIGN_OR_RETURN(auto cache, model->MakeCache(kSlots, kEntries));
  const RankMemory& r =
      plan.ranks[groups.layout.pp_rank() * groups.layout.tp + groups.layout.tp_rank()];
  const uint64_t planned = r.kv_bytes_per_token * kSlots * kEntries;
  if (cache->dtype() != c.kv_dtype || cache->bytes() != planned) {
    return absl::InternalError(absl::StrCat(
        groups.layout.Prefix(), "the runtime allocated ", cache->bytes(), " bytes of ",
        DTypeName(cache->dtype()), " KV cache for ", kSlots, " x ", kEntries,
        " tokens; the plan says ", r.kv_bytes_per_token, " bytes per token, ", planned));
  }
  return absl::OkStatus();
}

class KvPlanAgreementTest : public ::testing::TestWithParam<AgreementCase> {};

TEST_P(KvPlanAgreementTest, PlannedKvBytesAreTheAllocatedBytes) {
  const AgreementCase& c = GetParam();
  ASSERT_OK_AND_ASSIGN(ModelConfig config,
                       LoadModelConfig("tests/fixtures/models/" + c.model));
  MemoryPlanOptions options;
  options.kv_dtype = c.kv_dtype;
  options.device_memory_bytes = kGiB;
  const WorldLayout layout{c.tp, c.pp, 1, 0};
  ASSERT_OK_AND_ASSIGN(MemoryPlan plan, MakeMemoryPlan(config, layout, options));
  const std::vector<absl::Status> statuses = testing::RunThreadedWorld(
      layout, [&](ProcessGroups& groups) { return CheckRank(c, plan, groups); });
  for (const absl::Status& s : statuses) EXPECT_OK(s);
  std::printf("[kv plan] %s tp%d pp%d %s: rank 0 plans %llu KV bytes per token\n",
              c.model.c_str(), c.tp, c.pp, std::string(DTypeName(c.kv_dtype)).c_str(),
              static_cast<unsigned long long>(plan.ranks[0].kv_bytes_per_token));
}

// llama70b_gqa has 2 KV heads: split at tp 2, replicated at tp 4. llama2_mha has 4 of 4.
INSTANTIATE_TEST_SUITE_P(
    Layouts, KvPlanAgreementTest,
    ::testing::Values(AgreementCase{"llama70b_gqa", 1, 1, DType::kF32},
                      AgreementCase{"llama70b_gqa", 2, 1, DType::kBF16},
                      AgreementCase{"llama70b_gqa", 4, 1, DType::kF16},
                      AgreementCase{"llama70b_gqa", 2, 2, DType::kF32},
                      AgreementCase{"llama70b_gqa", 2, 2, DType::kBF16},
                      AgreementCase{"llama2_mha", 2, 2, DType::kF16},
                      AgreementCase{"llama31", 2, 1, DType::kBF16}));

// Both default to F32, so `tessera plan` without --kv-dtype plans the cache that generate,
// eval and bench allocate without it (the flag's own default is checked by cli_test).
TEST(KvPlanAgreementDefaults, PlanAndRuntimeDefaultToTheSameDType) {
  EXPECT_EQ(MemoryPlanOptions{}.kv_dtype, ModelParallelism{}.kv_dtype);
  EXPECT_EQ(ModelParallelism{}.kv_dtype, DType::kF32);
}

}  // namespace
}  // namespace tessera
