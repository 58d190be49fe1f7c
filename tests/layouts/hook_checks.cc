// The forward-hook checks shared by forward_hooks_test (ranks as threads) and mpi_layout_test
// --hooks (ranks as processes under mpirun); see tests/layouts/hook_checks.h.
#include "tests/layouts/hook_checks.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/llama_model.h"
#include "tests/golden/golden_fixture.h"
#include "tests/test_util.h"

namespace tessera::testing {
namespace {


class ExitAfter : public LayerHook {
 public:
  explicit ExitAfter(int64_t layer) : layer_(layer) {}
  absl::StatusOr<LayerAction> AfterLayer(const LayerContext& ctx) override {
    return ctx.layer == layer_ ? LayerAction::Exit() : LayerAction::Continue();
  }

 private:
  int64_t layer_;
};

class KeepAfter : public LayerHook {
 public:
  KeepAfter(int64_t layer, std::vector<int32_t> rows) : layer_(layer), rows_(std::move(rows)) {}
  absl::StatusOr<LayerAction> AfterLayer(const LayerContext& ctx) override {
    return ctx.layer == layer_ ? LayerAction::KeepRows(rows_) : LayerAction::Continue();
  }

 private:
  int64_t layer_;
  std::vector<int32_t> rows_;
};

}  // namespace

absl::StatusOr<HookSetup> Prepare(const std::string& name, ProcessGroups& groups,
                              const std::vector<int64_t>& head_layers) {
  HookSetup s;
  ASSIGN_OR_RETURN(s.fixture,
                   SafetensorsFile::Open("tests/fixtures/forward_hooks/" + name + ".safetensors"));
  s.prompt = ReadIds(*s.fixture, "prompt_ids");
  ASSIGN_OR_RETURN(s.backend, MakeBackend(BackendKind::kCpu));
  ModelOptions options;
  options.head_after_layers = head_layers;
  ASSIGN_OR_RETURN(s.model, LlamaModel::Load("tests/fixtures/models/" + name, s.backend.get(),
                                             {groups.layout, groups.tp.get(), groups.pp.get()},
                                             options));
  ASSIGN_OR_RETURN(s.cache, s.model->MakeCache(1, s.prompt.size()));
  return s;
}

namespace {

// The full-vocabulary logits of `out` (gathered over tp) against the fixture tensor `name`.
absl::Status CompareLogits(HookSetup& s, const ForwardOutput& out, const std::string& name,
                           const std::string& where) {
  Tensor full;
  RETURN_IF_ERROR(s.model->vocab().GatherFull(out.logits, s.model->config().vocab_size, &full));
  const TensorEntry& want = s.fixture->tensors().at(name);
  if (want.shape[0] != full.dim(0)) {
    return absl::InternalError(absl::StrCat(where, ": ", full.dim(0), " logit rows, want ",
                                            want.shape[0]));
  }
  const double err = RelativeError(
      full.data<float>(), reinterpret_cast<const float*>(want.data), full.numel());
  std::printf("%s: relative L2 %.3g against transformers\n", where.c_str(), err);
  if (!(err < 1e-5)) {
    return absl::InternalError(absl::StrCat(where, ": logits differ from transformers' by ", err));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckExits(const std::string& name, ProcessGroups& groups) {
  for (int64_t l = 0; l < 4; ++l) {
    ASSIGN_OR_RETURN(HookSetup s, Prepare(name, groups, {l}));
    const ShardPlan& plan = s.model->plan();
    const std::string where = absl::StrCat(groups.layout.Prefix(), name, " exit after layer ", l);
    ExitAfter hook(l);
    ForwardHooks hooks;
    hooks.layer = &hook;
    hooks.check_agreement = true;
    ASSIGN_OR_RETURN(const ForwardOutput out,
                     s.model->Forward(AllPositions(s.prompt), *s.cache, hooks));
    // Stages before the exit's do not learn of it (the step engine tells them); the exit's stage
    // and every later one do, through the stage header.
    const bool holder = l >= plan.layer_begin && l < plan.layer_end;
    const bool informed = l < plan.layer_end;
    if (out.exit_layer != (informed ? l : -1) ||
        ((out.message.flags & StageMessage::kExited) != 0) != informed) {
      return absl::InternalError(absl::StrCat(where, ": this stage saw exit layer ",
                                              out.exit_layer));
    }
    if (holder != !out.logits.empty()) {
      return absl::InternalError(absl::StrCat(where, ": logits on the wrong stage"));
    }
    for (int64_t local = 0; local < plan.layers(); ++local) {  // no K/V past the exit
      const int32_t want = plan.layer_begin + local <= l ? s.prompt.size() : 0;
      if (s.cache->length(local, 0) != want) {
        return absl::InternalError(absl::StrCat(where, ": layer ", plan.layer_begin + local,
                                                " holds ", s.cache->length(local, 0),
                                                " entries, want ", want));
      }
    }
    if (holder) RETURN_IF_ERROR(CompareLogits(s, out, absl::StrCat("exit.", l, ".logits"), where));
  }
  return absl::OkStatus();
}

absl::Status CheckKeepRows(const std::string& name, ProcessGroups& groups) {
  ASSIGN_OR_RETURN(HookSetup s, Prepare(name, groups, {}));
  const std::vector<int32_t> keep = ReadIds(*s.fixture, "keep.rows");
  const std::string where = absl::StrCat(groups.layout.Prefix(), name, " rows kept after layer 1");
  KeepAfter hook(1, keep);
  ForwardHooks hooks;
  hooks.layer = &hook;
  hooks.check_agreement = true;
  ASSIGN_OR_RETURN(const ForwardOutput out,
                   s.model->Forward(AllPositions(s.prompt), *s.cache, hooks));
  const ShardPlan& plan = s.model->plan();
  for (int64_t local = 0; local < plan.layers(); ++local) {
    const absl::Span<const int32_t> got = s.cache->positions(local, 0);
    std::vector<int32_t> want = keep;
    if (plan.layer_begin + local <= 1) {
      want.resize(s.prompt.size());
      std::iota(want.begin(), want.end(), 0);
    }
    if (std::vector<int32_t>(got.begin(), got.end()) != want) {
      return absl::InternalError(absl::StrCat(where, ": layer ", plan.layer_begin + local,
                                              " caches the wrong positions"));
    }
  }
  if (!plan.last_stage()) return absl::OkStatus();
  if (out.logit_rows != keep) {
    return absl::InternalError(where + ": the logit rows are not the kept rows");
  }
  return CompareLogits(s, out, "keep.logits", where);
}

namespace {

// Stage 0's last layer writes a method flag and payload word; the first layer of every later
// stage must see them.
class PayloadHook : public LayerHook {
 public:
  absl::StatusOr<LayerAction> AfterLayer(const LayerContext& ctx) override {
    if (ctx.plan->first_stage() && ctx.layer == ctx.plan->layer_end - 1) {
      ctx.message->flags |= 1u << 12;
      ctx.message->payload[3] = 4242 + ctx.batch->step;
    }
    if (!ctx.plan->first_stage() && ctx.layer == ctx.plan->layer_begin) {
      seen_flags = ctx.message->flags;
      seen_word = ctx.message->payload[3];
    }
    return LayerAction::Continue();
  }
  uint32_t seen_flags = 0;
  int32_t seen_word = 0;
};

}  // namespace

absl::Status CheckPayload(const std::string& name, ProcessGroups& groups) {
  ASSIGN_OR_RETURN(HookSetup s, Prepare(name, groups, {}));
  PayloadHook hook;
  ForwardHooks hooks;
  hooks.layer = &hook;
  ForwardBatch batch = AllPositions(s.prompt);
  batch.step = 5;
  RETURN_IF_ERROR(s.model->Forward(batch, *s.cache, hooks).status());
  if (!s.model->plan().first_stage() && (hook.seen_flags != 1u << 12 || hook.seen_word != 4247)) {
    return absl::InternalError(absl::StrCat(groups.layout.Prefix(), "stage ",
                                            s.model->plan().pp_rank, " saw flags ",
                                            hook.seen_flags, " and word ", hook.seen_word));
  }
  return absl::OkStatus();
}

absl::Status CheckForwardHooks(const std::string& name, ProcessGroups& groups) {
  RETURN_IF_ERROR(CheckExits(name, groups));
  RETURN_IF_ERROR(CheckKeepRows(name, groups));
  return CheckPayload(name, groups);
}

}  // namespace tessera::testing
