#include "runtime/step_engine.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {
namespace {

constexpr int kReductionTag = 110;  // exit stage -> last stage

}  // namespace

StepEngine::StepEngine(LlamaModel* model, StepPolicy* policy)
    : model_(model), policy_(policy), combined_(&model->backend(), DType::kF32) {}

int StepEngine::StageOfLayer(int64_t layer) const {
  return tessera::StageOfLayer(model_->config(), model_->plan().pp_size,
                               model_->parallel().stage_layers, layer);
}

absl::StatusOr<ForwardOutput> StepEngine::RunPasses(const ForwardBatch& batch, KvCache& cache,
                                                    const ForwardHooks* hooks) {
  if (hooks != nullptr) return model_->Forward(batch, cache, *hooks);
  const int passes = policy_ == nullptr ? 1 : policy_->Passes(batch);
  if (passes == 1) {
    return model_->Forward(batch, cache, policy_ == nullptr ? ForwardHooks() : policy_->PassHooks(0));
  }
  Backend& backend = model_->backend();
  std::vector<TensorView> logits;
  ForwardOutput first;
  pass_logits_.resize(passes);
  for (int p = 0; p < passes; ++p) {
    const ForwardBatch pass_batch = p == 0 ? batch : policy_->PassBatch(batch, p);
    ASSIGN_OR_RETURN(ForwardOutput out, model_->Forward(pass_batch, cache, policy_->PassHooks(p)));
    if (out.logits.empty()) {
      if (p == 0) first = out;
      continue;
    }
    // The next pass reuses the model's logits buffer: keep a copy.
    Tensor& copy = pass_logits_[p];
    if (copy.view().rank == 0) copy = Tensor(&backend, DType::kF32);
    RETURN_IF_ERROR(copy.Resize({out.logits.dim(0), out.logits.dim(1)}));
    RETURN_IF_ERROR(backend.CopyWithinDevice(copy.view().data, out.logits.data, out.logits.bytes()));
    logits.push_back(copy.view());
    if (p == 0) first = out;
  }
  if (logits.empty()) return first;  // not the logits' rank
  if (static_cast<int>(logits.size()) != passes) {
    return absl::InternalError("StepEngine: some passes of a step made logits on this rank and "
                               "others did not; passes of one step must end on the same stage");
  }
  for (const TensorView& l : logits) {
    if (l.dim(0) != logits[0].dim(0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "StepEngine: the passes of step ", batch.step, " made ", logits[0].dim(0), " and ",
          l.dim(0), " logit rows; a policy's passes must ask for the same rows"));
    }
  }
  RETURN_IF_ERROR(combined_.Resize({logits[0].dim(0), logits[0].dim(1)}));
  RETURN_IF_ERROR(policy_->Combine(backend, logits, combined_.view()));
  first.logits = combined_.view();
  return first;
}

absl::StatusOr<std::vector<float>> StepEngine::Run(const std::vector<ForwardBatch>& micro_batches,
                                                   KvCache& cache,
                                                   const StepReduction& reduction) {
  return Run(micro_batches, cache, reduction, nullptr);
}

absl::StatusOr<std::vector<float>> StepEngine::Run(const std::vector<ForwardBatch>& micro_batches,
                                                   KvCache& cache, const StepReduction& reduction,
                                                   const ForwardHooks& hooks) {
  return Run(micro_batches, cache, reduction, &hooks);
}

absl::StatusOr<std::vector<float>> StepEngine::Run(const std::vector<ForwardBatch>& micro_batches,
                                                   KvCache& cache, const StepReduction& reduction,
                                                   const ForwardHooks* hooks) {
  const ShardPlan& plan = model_->plan();
  Communicator* pp = model_->parallel().pp;
  std::vector<float> words;
  for (size_t g = 0; g < micro_batches.size(); ++g) {
    const ForwardBatch& batch = micro_batches[g];
    const size_t count = batch.logit_rows.size() * reduction.words_per_row;
    ASSIGN_OR_RETURN(const ForwardOutput out, RunPasses(batch, cache, hooks));
    std::vector<float> part(count);
    if (!out.logits.empty()) {  // this rank holds the logits: reduce them
      if (out.logit_rows.size() != batch.logit_rows.size()) {
        return absl::InternalError(absl::StrCat(
            "step ", batch.step, ": a hook dropped rows whose logits were asked for; the step "
            "engine needs every logit row"));
      }
      ASSIGN_OR_RETURN(part, reduction.reduce(g, batch, out));
      if (part.size() != count) {
        return absl::InternalError(absl::StrCat("step reduction made ", part.size(),
                                                " words, want ", count));
      }
    }
    if (plan.pp_size > 1 && out.exit_layer >= 0) {  // an exit before the last stage
      const int exit_stage = StageOfLayer(out.exit_layer);
      const TensorView view =
          TensorView::Of(part.data(), DType::kF32, {static_cast<int64_t>(count)});
      if (exit_stage != plan.pp_size - 1) {
        if (plan.pp_rank == exit_stage) RETURN_IF_ERROR(pp->Send(view, plan.pp_size - 1, kReductionTag));
        if (plan.last_stage()) RETURN_IF_ERROR(pp->Recv(view, exit_stage, kReductionTag));
      }
    }
    words.insert(words.end(), part.begin(), part.end());
  }
  if (plan.pp_size > 1) {  // the last stage's words reach every stage
    RETURN_IF_ERROR(pp->Broadcast(
        TensorView::Of(words.data(), DType::kF32, {static_cast<int64_t>(words.size())}),
        plan.pp_size - 1));
  }
  return words;
}

}  // namespace tessera
