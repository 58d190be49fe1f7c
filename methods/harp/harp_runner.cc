#include "methods/harp/harp_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "methods/step_agreement.h"

namespace tessera {
namespace {

using config::HarpSettings;

// The micro-batch id of a reframed pass in the stage headers (never a generator's).
constexpr int32_t kReframeMicroBatch = 1 << 20;
// The check word of a logit row: no hesitation, a hesitation without a pass, a reframed row.
constexpr float kPlain = 0.0f, kHesitated = 1.0f, kReframed = 2.0f;

double MsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<HarpRunner>> HarpRunner::Create(LlamaModel* model,
                                                               HarpRunnerOptions options) {
  if (options.settings.mode() == HarpSettings::KV_NOISE &&
      model->parallel().kv_dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "method.harp.mode: KV_NOISE masks a copy of the cached K/V and needs an F32 KV cache; "
        "this run's is ", DTypeName(model->parallel().kv_dtype),
        ": use --kv-dtype f32, or mode EXACT or SHADOW_LAZY"));
  }
  return std::unique_ptr<HarpRunner>(new HarpRunner(model, std::move(options)));
}

HarpRunner::HarpRunner(LlamaModel* model, HarpRunnerOptions options)
    : model_(model), options_(std::move(options)) {
  const HarpSettings& s = options_.settings;
  theta_bits_ = s.has_theta_bits() ? s.theta_bits() : 1.0f;
  delta_ = s.has_delta() ? s.delta() : 0.2f;
  beta_ = s.has_beta_vanilla() ? s.beta_vanilla() : 0.5f;
}

absl::Status HarpRunner::StartSequence(int32_t slot, uint64_t request_id) {
  Sequence& seq = sequences_[slot];
  seq = Sequence();
  seq.request_id = request_id;
  if (shadow_ != nullptr) shadow_->Clear(slot);
  return absl::OkStatus();
}

absl::Status HarpRunner::Record(const ForwardBatch& batch) {
  for (size_t i = 0; i < batch.tokens.size(); ++i) {
    auto it = sequences_.find(batch.slots[i]);
    if (it == sequences_.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "HARP: step ", batch.step, " feeds slot ", batch.slots[i],
          ", which holds no sequence (StartSequence was not called for it)"));
    }
    std::vector<int32_t>& tokens = it->second.tokens;
    if (batch.positions[i] != static_cast<int32_t>(tokens.size())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "HARP: step ", batch.step, " feeds slot ", batch.slots[i], " a token at position ",
          batch.positions[i], " after ", tokens.size(), " tokens; the reframed pass needs every "
          "token of the sequence in order"));
    }
    tokens.push_back(batch.tokens[i]);
    ++it->second.step_tokens;
  }
  return absl::OkStatus();
}

absl::Status HarpRunner::PlainPass(size_t g, const ForwardBatch& batch, KvCache& cache,
                                   std::vector<float>* checks) {
  const size_t rows = batch.logit_rows.size();
  checks->assign(2 * rows, 0.0f);
  ForwardHooks hooks;
  hooks.input = options_.plain_input;
  ASSIGN_OR_RETURN(const ForwardOutput out, model_->Forward(batch, cache, hooks));
  if (out.logits.empty()) return absl::OkStatus();  // not the logits' rank
  if (out.logit_rows.size() != rows) {
    return absl::InternalError(absl::StrCat("HARP: the plain pass of step ", batch.step, " made ",
                                            out.logit_rows.size(), " logit rows, want ", rows));
  }
  Tensor& copy = plain_[g];
  if (copy.view().rank == 0) copy = Tensor(&model_->backend(), DType::kF32);
  RETURN_IF_ERROR(copy.Resize({out.logits.dim(0), out.logits.dim(1)}));
  RETURN_IF_ERROR(
      model_->backend().CopyWithinDevice(copy.view().data, out.logits.data, out.logits.bytes()));
  ASSIGN_OR_RETURN(const std::vector<VocabRowStats> stats, model_->vocab().Stats(copy.view()));
  const int32_t max_len = options_.settings.max_reframe_len();
  for (size_t r = 0; r < rows; ++r) {
    const double bits = stats[r].entropy / std::log(2.0);
    const int32_t slot = batch.slots[batch.logit_rows[r]];
    const size_t length = sequences_.at(slot).tokens.size();
    const bool hesitated = bits > theta_bits_;
    const bool reframe = hesitated && delta_ > 0.0f &&
                         (max_len == 0 || length <= static_cast<size_t>(max_len));
    (*checks)[2 * r] = static_cast<float>(bits);
    (*checks)[2 * r + 1] = reframe ? kReframed : (hesitated ? kHesitated : kPlain);
  }
  return absl::OkStatus();
}

absl::Status HarpRunner::EnsureShadow(const KvCache& cache) {
  if (shadow_ != nullptr && shadow_->n_slots() == cache.n_slots() &&
      shadow_->max_seq() == cache.max_seq()) {
    return absl::OkStatus();
  }
  shadow_.reset();  // free first: the device may not hold both
  ASSIGN_OR_RETURN(shadow_, model_->MakeCache(cache.n_slots(), cache.max_seq()));
  for (auto& [slot, seq] : sequences_) seq.shadow_length = 0;
  return absl::OkStatus();
}

absl::StatusOr<KvCache*> HarpRunner::ReframedBatch(int32_t step,
                                                   const std::vector<Reframe>& reframes,
                                                   const KvCache& cache, ForwardBatch* batch) {
  const bool shadow = options_.settings.mode() == HarpSettings::SHADOW_LAZY;
  const bool kv_noise = options_.settings.mode() == HarpSettings::KV_NOISE;
  if (!shadow) {
    int32_t longest = 0;
    for (const Reframe& r : reframes) longest = std::max(longest, r.length);
    const int64_t slots = static_cast<int64_t>(reframes.size());
    if (scratch_ == nullptr || scratch_->n_slots() < slots || scratch_->max_seq() < longest) {
      const int64_t n = std::max<int64_t>(slots, scratch_ == nullptr ? 0 : scratch_->n_slots());
      const int64_t len = std::max<int64_t>(
          {int64_t{longest} + longest / 4, scratch_ == nullptr ? 0 : scratch_->max_seq(), 64});
      scratch_.reset();
      ASSIGN_OR_RETURN(scratch_, model_->MakeLayerScratchCache(n, len));
    }
    scratch_->ClearAll();
  }
  batch->step = step;
  batch->micro_batch = kReframeMicroBatch;
  std::vector<std::array<uint32_t, 4>> words;
  std::vector<KvNoiseAttention::Row> noisy;
  for (size_t j = 0; j < reframes.size(); ++j) {
    Sequence& seq = sequences_.at(reframes[j].slot);
    const PhiloxKey key = HarpMaskKey(options_.settings.seed(), seq.request_id);
    // EXACT: the whole sequence; SHADOW_LAZY: what the shadow cache lacks; KV_NOISE: this
    // step's tokens, over a masked copy of the entries before them.
    const int32_t first = shadow     ? seq.shadow_length
                          : kv_noise ? reframes[j].length - seq.step_tokens
                                     : 0;
    if (kv_noise) {
      KvNoiseAttention::Row row{static_cast<int32_t>(j), reframes[j].slot, {}, {key[0], key[1]},
                                reframes[j].length};
      for (int64_t l = 0; l < cache.layers(); ++l) {
        row.entries.push_back(cache.length(l, reframes[j].slot) - seq.step_tokens);
      }
      noisy.push_back(std::move(row));
    }
    for (int32_t p = first; p < reframes[j].length; ++p) {
      batch->tokens.push_back(seq.tokens[p]);
      batch->positions.push_back(p);
      batch->slots.push_back(shadow ? reframes[j].slot : static_cast<int32_t>(j));
      words.push_back(HarpMaskRowWords(key, p, shadow ? kShadowStep : reframes[j].length));
    }
    batch->logit_rows.push_back(static_cast<int32_t>(batch->tokens.size()) - 1);
    seq.counters.values["tokens_recomputed"] += reframes[j].length - first;
    if (shadow) seq.shadow_length = reframes[j].length;
  }
  input_.SetRows(std::move(words), delta_, options_.masked_input);
  if (kv_noise) {
    const auto& listed = options_.settings.kv_noise_layers();
    kv_noise_.Set(&cache, std::move(noisy), delta_, {listed.begin(), listed.end()});
    RETURN_IF_ERROR(kv_noise_.Reserve(*scratch_));
  }
  return shadow ? shadow_.get() : scratch_.get();
}

absl::Status HarpRunner::ReframedPass(int32_t step, const std::vector<Reframe>& reframes,
                                      const KvCache& real) {
  const auto start = std::chrono::steady_clock::now();
  ForwardBatch batch;
  ASSIGN_OR_RETURN(KvCache* const cache, ReframedBatch(step, reframes, real, &batch));
  ForwardHooks hooks;
  if (options_.settings.mode() == HarpSettings::KV_NOISE) hooks.attention = &kv_noise_;
  hooks.input = &input_;
  if (model_->plan().pp_size > 1) hooks.layer = &tag_check_;
  hooks.check_agreement = options_.check_agreement;
  ASSIGN_OR_RETURN(const ForwardOutput out, model_->Forward(batch, *cache, hooks));
  Backend& backend = model_->backend();
  if (!out.logits.empty()) {  // the last stage: mix into the plain logits
    for (size_t j = 0; j < reframes.size(); ++j) {
      const TensorView plain =
          plain_[reframes[j].micro_batch].view().Rows(reframes[j].row, reframes[j].row + 1);
      RETURN_IF_ERROR(backend.Lerp({plain, out.logits.Rows(j, j + 1), plain, 1.0f - beta_}));
    }
  }
  RETURN_IF_ERROR(backend.Synchronize());
  if (cache == scratch_.get()) scratch_->ClearAll();
  const double share = MsSince(start) / reframes.size();
  for (const Reframe& r : reframes) {
    auto& values = sequences_.at(r.slot).counters.values;
    values["reframed_passes"] += 1;
    values["reframe_ms"] += share;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> HarpRunner::Run(const std::vector<ForwardBatch>& micro_batches,
                                                   KvCache& cache,
                                                   const StepReduction& reduction) {
  const ShardPlan& plan = model_->plan();
  Communicator* pp = model_->parallel().pp;
  for (auto& [slot, seq] : sequences_) seq.step_tokens = 0;
  for (const ForwardBatch& b : micro_batches) RETURN_IF_ERROR(Record(b));
  if (options_.settings.mode() == HarpSettings::SHADOW_LAZY) RETURN_IF_ERROR(EnsureShadow(cache));
  if (plain_.size() < micro_batches.size()) plain_.resize(micro_batches.size());

  // 1. Plain passes and the checks on the logits' rank.
  std::vector<float> checks;
  std::vector<bool> has_logits(micro_batches.size(), false);
  for (size_t g = 0; g < micro_batches.size(); ++g) {
    std::vector<float> part;
    RETURN_IF_ERROR(PlainPass(g, micro_batches[g], cache, &part));
    has_logits[g] = plan.last_stage();
    checks.insert(checks.end(), part.begin(), part.end());
  }
  // 2. REFRAME: the last stage's checks reach every stage.
  if (plan.pp_size > 1) {
    RETURN_IF_ERROR(pp->Broadcast(
        TensorView::Of(checks.data(), DType::kF32, {static_cast<int64_t>(checks.size())}),
        plan.pp_size - 1));
  }
  const int32_t step = micro_batches.empty() ? 0 : micro_batches[0].step;
  std::vector<Reframe> reframes;
  std::vector<std::pair<int32_t, uint32_t>> decided;
  size_t k = 0;
  for (size_t g = 0; g < micro_batches.size(); ++g) {
    const ForwardBatch& batch = micro_batches[g];
    for (size_t r = 0; r < batch.logit_rows.size(); ++r, ++k) {
      HarpDecision d;
      d.step = batch.step;
      d.slot = batch.slots[batch.logit_rows[r]];
      d.entropy_bits = checks[2 * k];
      d.hesitated = checks[2 * k + 1] != kPlain;
      d.reframed = checks[2 * k + 1] == kReframed;
      decisions_.push_back(d);
      Sequence& seq = sequences_.at(d.slot);
      auto& values = seq.counters.values;
      values["checked_tokens"] += 1;
      values["hesitations"] += d.hesitated ? 1 : 0;
      values["entropy_bits_sum"] += d.entropy_bits;
      if (d.hesitated && !d.reframed && delta_ > 0.0f) values["skipped_long"] += 1;
      if (options_.settings.record_entropy()) {
        seq.counters.series["entropy_bits"].push_back(d.entropy_bits);
      }
      decided.emplace_back(d.slot, static_cast<uint32_t>(checks[2 * k + 1]));
      if (d.reframed) {
        reframes.push_back({g, static_cast<int64_t>(r), d.slot,
                            static_cast<int32_t>(seq.tokens.size())});
      }
    }
  }
  if (options_.check_agreement) {
    RETURN_IF_ERROR(CheckStepAgreement(model_->parallel().tp, step, decided,
                                       "HARP hesitation decisions"));
  }
  // 3. The reframed pass of the hesitating sequences, mixed into their logits.
  if (!reframes.empty()) RETURN_IF_ERROR(ReframedPass(step, reframes, cache));

  // 4. The reduction on the (mixed) logits; its words reach every stage.
  std::vector<float> words;
  for (size_t g = 0; g < micro_batches.size(); ++g) {
    const ForwardBatch& batch = micro_batches[g];
    const size_t count = batch.logit_rows.size() * reduction.words_per_row;
    std::vector<float> part(count);
    if (has_logits[g]) {
      ForwardOutput out;
      out.logits = plain_[g].view();
      for (size_t r = 0; r < batch.logit_rows.size(); ++r) {
        out.logit_rows.push_back(static_cast<int32_t>(r));
      }
      ASSIGN_OR_RETURN(part, reduction.reduce(g, batch, out));
      if (part.size() != count) {
        return absl::InternalError(absl::StrCat("step reduction made ", part.size(),
                                                " words, want ", count));
      }
    }
    words.insert(words.end(), part.begin(), part.end());
  }
  if (plan.pp_size > 1) {
    RETURN_IF_ERROR(pp->Broadcast(
        TensorView::Of(words.data(), DType::kF32, {static_cast<int64_t>(words.size())}),
        plan.pp_size - 1));
  }
  return words;
}

absl::StatusOr<std::vector<SequenceCounters>> HarpRunner::EndSequences(
    const std::vector<int32_t>& slots, KvCache& cache) {
  std::vector<SequenceCounters> out;
  for (int32_t slot : slots) {
    auto it = sequences_.find(slot);
    if (it == sequences_.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("HARP: slot ", slot, " ended but holds no sequence"));
    }
    out.push_back(std::move(it->second.counters));
    sequences_.erase(it);
  }
  return out;
}

}  // namespace tessera
