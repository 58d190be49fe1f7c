#include "methods/early_exit/free_runner.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "methods/early_exit/exit_confidence.h"
#include "methods/step_agreement.h"

namespace tessera {
namespace {

using config::EarlyExitSettings;

// Words per logit row of the shallow pass: the shallow token, the decision, the confidence and
// the shallow argmax.
constexpr int kShallowWords = 4;
constexpr int32_t kFlushMicroBatch = 1 << 20;  // a flush's micro-batch id, apart from the step's

// A uniform draw in [0, 1) for check number `index` (splitmix64 of the index).
double ForcedDraw(uint64_t index) {
  uint64_t z = index + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

}  // namespace

class FreeRunner::ExitHook : public LayerHook {
 public:
  explicit ExitHook(FreeRunner* runner) : runner_(runner) {}
  absl::StatusOr<LayerAction> AfterLayer(const LayerContext& ctx) override {
    if (ctx.layer != runner_->exit_layer_ - 1) return LayerAction::Continue();
    RETURN_IF_ERROR(runner_->SaveRows(ctx));
    return LayerAction::Exit();
  }

 private:
  FreeRunner* runner_;
};

FreeRunner::FreeRunner(LlamaModel* model, FreeRunnerOptions options)
    : model_(model),
      options_(std::move(options)),
      exit_layer_(options_.settings.exit_layer()),
      engine_(model),
      tau_(BetaMixtureOptions{
          .bmm_compat = !options_.settings.has_bmm_compat() || options_.settings.bmm_compat(),
          .max_refits = options_.settings.has_adaptive_max_refits()
                            ? options_.settings.adaptive_max_refits()
                            : 300,
          .initial_threshold =
              options_.settings.has_threshold() ? options_.settings.threshold() : 1.0}) {
  exit_hook_ = std::make_unique<ExitHook>(this);
}

FreeRunner::~FreeRunner() = default;

absl::StatusOr<std::unique_ptr<FreeRunner>> FreeRunner::Create(LlamaModel* model,
                                                               FreeRunnerOptions options) {
  const int64_t layers = model->config().num_hidden_layers;
  const int64_t exit_layer = options.settings.exit_layer();
  if (exit_layer < 1 || exit_layer >= layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "method.early_exit.exit_layer: is ", exit_layer, "; the model has ", layers,
        " layers, so it must be in [1, ", layers - 1, "]"));
  }
  std::unique_ptr<FreeRunner> r(new FreeRunner(model, std::move(options)));
  const ShardPlan& plan = model->plan();
  r->holds_exit_ = plan.layer_begin <= exit_layer - 1 && exit_layer - 1 < plan.layer_end;
  if (r->holds_exit_ && !model->has_head()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "early exit after ", exit_layer, " blocks: pipeline stage ", plan.pp_rank,
        " holds no head; load the model with ModelOptions::head_after_layers = {", exit_layer - 1,
        "}"));
  }
  return r;
}

bool FreeRunner::Static() const {
  return options_.settings.policy() == EarlyExitSettings::STATIC;
}

absl::Status FreeRunner::StartSequence(int32_t slot, uint64_t) {
  if (slot >= static_cast<int32_t>(slots_.size())) slots_.resize(slot + 1);
  Slot& s = slots_[slot];
  s = Slot{};
  if (options_.settings.adaptive_threshold()) tau_.Refit();
  s.tau = tau_.Threshold();
  return absl::OkStatus();
}

absl::Status FreeRunner::SaveRows(const LayerContext& ctx) {
  const ForwardBatch& b = *ctx.batch;
  const int64_t dim = model_->config().hidden_size;
  Backend& backend = *ctx.backend;
  std::map<int32_t, int64_t> next;  // slot -> its next saved row
  for (size_t r = 0; r < b.tokens.size();) {
    const int32_t slot = b.slots[r];
    size_t end = r;
    while (end < b.tokens.size() && b.slots[end] == slot) ++end;
    if (slot >= static_cast<int32_t>(slots_.size())) {
      return absl::InternalError(absl::StrCat("early exit: slot ", slot, " was never started"));
    }
    if (slot >= static_cast<int32_t>(saved_.size())) saved_.resize(slot + 1);
    auto [it, fresh] = next.try_emplace(slot, slots_[slot].pending.size());
    const int64_t first = it->second, rows = static_cast<int64_t>(end - r);
    Tensor& store = saved_[slot];
    const int64_t capacity = store.view().rank == 0 ? 0 : store.dim(0);
    if (first + rows > capacity) {  // grow, keeping the rows saved so far
      Tensor grown(&backend, DType::kF32);
      RETURN_IF_ERROR(grown.Resize({std::max<int64_t>(2 * capacity, first + rows + 16), dim}));
      if (first > 0) {
        RETURN_IF_ERROR(backend.CopyWithinDevice(grown.view().data, store.view().data,
                                                 first * dim * sizeof(float)));
      }
      store = std::move(grown);
    }
    RETURN_IF_ERROR(backend.CopyWithinDevice(
        store.view().Rows(first, first + rows).data,
        ctx.hidden.Rows(static_cast<int64_t>(r), static_cast<int64_t>(end)).data,
        rows * dim * sizeof(float)));
    it->second += rows;
    r = end;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> FreeRunner::Run(const std::vector<ForwardBatch>& micro_batches,
                                                   KvCache& cache,
                                                   const StepReduction& reduction) {
  if (micro_batches.empty()) return std::vector<float>();
  const int32_t step = micro_batches[0].step;
  last_step_ = step;
  const int64_t layers = model_->config().num_hidden_layers;
  std::vector<StepRow> rows;
  for (size_t g = 0; g < micro_batches.size(); ++g) {
    const ForwardBatch& b = micro_batches[g];
    for (size_t j = 0; j < b.logit_rows.size(); ++j) {
      StepRow row;
      row.micro_batch = g;
      row.logit_index = static_cast<int32_t>(j);
      row.slot = b.slots[b.logit_rows[j]];
      if (row.slot >= static_cast<int32_t>(slots_.size())) {
        return absl::InternalError(absl::StrCat("early exit: slot ", row.slot, " was never started"));
      }
      const int64_t n = std::count(b.slots.begin(), b.slots.end(), row.slot);
      row.decode = slots_[row.slot].prefilled;
      if (row.decode && n != 1) {
        return absl::InternalError(absl::StrCat("early exit: slot ", row.slot, " fed ", n,
                                                " tokens in one decode step"));
      }
      rows.push_back(row);
    }
  }

  // 1-2. The shallow pass and, where its logits are, the decisions.
  StepReduction shallow;
  shallow.words_per_row = kShallowWords;
  shallow.reduce = [&](size_t g, const ForwardBatch& batch,
                       const ForwardOutput& out) -> absl::StatusOr<std::vector<float>> {
    ASSIGN_OR_RETURN(const std::vector<VocabRowStats> stats, model_->vocab().Stats(out.logits));
    ASSIGN_OR_RETURN(const std::vector<float> tokens, reduction.reduce(g, batch, out));
    std::vector<float> words(out.logit_rows.size() * kShallowWords);
    for (size_t j = 0; j < out.logit_rows.size(); ++j) {
      const int32_t slot = batch.slots[batch.logit_rows[out.logit_rows[j]]];
      const double c = ExitConfidence(stats[j], options_.settings.confidence(),
                                      model_->config().vocab_size);
      bool exits = false;
      if (slots_[slot].prefilled) {
        if (Static()) {
          exits = true;
        } else if (!options_.forced_decisions.empty()) {
          if (replayed_ >= options_.forced_decisions.size()) {
            return absl::FailedPreconditionError(absl::StrCat(
                "early exit: the replayed decisions ran out at step ", batch.step, " (",
                options_.forced_decisions.size(), " given)"));
          }
          exits = options_.forced_decisions[replayed_++] != 0;
        } else if (options_.settings.has_forced_exit_rate()) {
          exits = ForcedDraw(replayed_++) < options_.settings.forced_exit_rate();
        } else {
          exits = c > slots_[slot].tau;
        }
      }
      float* w = &words[j * kShallowWords];
      w[0] = tokens[j];
      w[1] = exits ? 1.0f : 0.0f;
      w[2] = static_cast<float>(c);
      w[3] = static_cast<float>(stats[j].top1);
    }
    return words;
  };
  ForwardHooks hooks;
  hooks.layer = exit_hook_.get();
  hooks.input = options_.input_hook;
  hooks.check_agreement = options_.check_agreement;
  ASSIGN_OR_RETURN(const std::vector<float> words,
                   engine_.Run(micro_batches, cache, shallow, hooks));

  // Every rank: the pending stacks grow by the step's rows, then the decisions apply.
  for (const ForwardBatch& b : micro_batches) {
    for (size_t r = 0; r < b.tokens.size(); ++r) {
      slots_[b.slots[r]].pending.push_back(PendingRow{b.tokens[r]});
    }
  }
  const int max_pending = options_.settings.max_pending();
  for (size_t i = 0; i < rows.size(); ++i) {
    StepRow& row = rows[i];
    const float* w = &words[i * kShallowWords];
    Slot& s = slots_[row.slot];
    row.token = static_cast<int32_t>(w[0]);
    row.exits = w[1] != 0.0f;
    if (!row.decode) {
      row.deep = true;
      continue;
    }
    if (!Static()) {
      PendingRow& p = s.pending.back();
      p.checked = true;
      p.confidence = w[2];
      p.shallow_top1 = static_cast<int32_t>(w[3]);
      decisions_.push_back(row.exits ? 1 : 0);
      confidences_.push_back(w[2]);
      s.checks += 1;
    }
    s.exits += row.exits ? 1 : 0;
    s.counters.token_layers.push_back(static_cast<int32_t>(row.exits ? exit_layer_ : layers));
    if (Static()) {
      s.pending.clear();  // the deep layers never see a decode row
    } else {
      row.deep = !row.exits ||
                 (max_pending > 0 && static_cast<int64_t>(s.pending.size()) >= max_pending);
    }
  }
  replayed_ = decisions_.size();
  if (options_.check_agreement) RETURN_IF_ERROR(CheckAgreement(step, rows));

  // 3. The deep pass for the sequences that need it.
  if (std::any_of(rows.begin(), rows.end(), [](const StepRow& r) { return r.deep; })) {
    RETURN_IF_ERROR(DeepPass(rows, micro_batches, cache, &reduction, step));
  }
  std::vector<float> tokens;
  for (const StepRow& row : rows) {
    if (!row.decode) {
      Slot& s = slots_[row.slot];
      s.prefilled = true;
      s.counters.token_layers.push_back(static_cast<int32_t>(layers));
    }
    tokens.push_back(static_cast<float>(row.token));
  }
  return tokens;
}

absl::Status FreeRunner::DeepPass(std::vector<StepRow>& rows,
                                  const std::vector<ForwardBatch>& micro_batches, KvCache& cache,
                                  const StepReduction* reduction, int32_t step) {
  const int64_t dim = model_->config().hidden_size;
  Backend& backend = model_->backend();
  const bool calibrate = options_.settings.adaptive_threshold() && !Static();
  // Per deep micro-batch: its batch, the original micro-batch, the step rows emitting from it
  // (logit rows 0..), and the (slot, pending index) of each calibration logit row after them.
  struct Deep {
    ForwardBatch batch;
    size_t original = 0;
    std::vector<size_t> emit;
    std::vector<std::pair<int32_t, size_t>> calib;
  };
  std::vector<Deep> deep;
  std::map<size_t, size_t> deep_of;  // original micro-batch -> index in `deep`
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!rows[i].deep) continue;
    auto [it, fresh] = deep_of.try_emplace(rows[i].micro_batch, deep.size());
    if (fresh) {
      deep.emplace_back();
      deep.back().original = rows[i].micro_batch;
      deep.back().batch.step = step;
      deep.back().batch.micro_batch =
          micro_batches.empty() ? kFlushMicroBatch : static_cast<int32_t>(rows[i].micro_batch);
      deep.back().batch.first_layer = exit_layer_;
    }
    Deep& d = deep[it->second];
    const Slot& s = slots_[rows[i].slot];
    for (size_t k = 0; k < s.pending.size(); ++k) {
      d.batch.tokens.push_back(s.pending[k].token);
      d.batch.positions.push_back(s.deep_length + static_cast<int32_t>(k));
      d.batch.slots.push_back(rows[i].slot);
    }
    if (reduction != nullptr && !rows[i].exits) {  // emits the deep token of its last row
      d.emit.push_back(i);
      d.batch.logit_rows.push_back(static_cast<int32_t>(d.batch.tokens.size()) - 1);
    }
  }
  // Calibration rows after the emission rows: the checked rows of chunks that carried exited
  // rows (a go-deep step with an empty stack adds nothing, as in FREE).
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!rows[i].deep || !calibrate) continue;
    const Slot& s = slots_[rows[i].slot];
    if (s.pending.size() < 2) continue;
    Deep& d = deep[deep_of.at(rows[i].micro_batch)];
    const int32_t base = static_cast<int32_t>(
        std::find(d.batch.slots.begin(), d.batch.slots.end(), rows[i].slot) - d.batch.slots.begin());
    for (size_t k = 0; k < s.pending.size(); ++k) {
      if (!s.pending[k].checked) continue;
      d.calib.emplace_back(rows[i].slot, k);
      d.batch.logit_rows.push_back(base + static_cast<int32_t>(k));
    }
  }
  for (Deep& d : deep) {  // a pass asks for at least one row: its last (discarded)
    if (d.batch.logit_rows.empty()) {
      d.batch.logit_rows.push_back(static_cast<int32_t>(d.batch.tokens.size()) - 1);
    }
  }
  // The input rows, on the stage that saved them.
  if (holds_exit_) {
    deep_input_.resize(std::max(deep_input_.size(), deep.size()));
    for (size_t g = 0; g < deep.size(); ++g) {
      ForwardBatch& b = deep[g].batch;
      Tensor& in = deep_input_[g];
      if (in.view().rank == 0) in = Tensor(&backend, DType::kF32);
      const int64_t n = static_cast<int64_t>(b.tokens.size());
      RETURN_IF_ERROR(in.Resize({n, dim}));
      for (int64_t r = 0; r < n;) {
        const int32_t slot = b.slots[r];
        const int64_t count = static_cast<int64_t>(slots_[slot].pending.size());
        RETURN_IF_ERROR(backend.CopyWithinDevice(in.view().Rows(r, r + count).data,
                                                 saved_.at(slot).view().data,
                                                 count * dim * sizeof(float)));
        r += count;
      }
      b.input = in.view();
    }
  }
  std::vector<ForwardBatch> batches;
  for (const Deep& d : deep) batches.push_back(d.batch);
  StepReduction choose;
  choose.reduce = [&](size_t g, const ForwardBatch& batch,
                      const ForwardOutput& out) -> absl::StatusOr<std::vector<float>> {
    const Deep& d = deep[g];
    const int64_t n_emit = static_cast<int64_t>(d.emit.size());
    const int64_t n_rows = out.logits.dim(0);
    std::vector<float> words;
    if (n_emit > 0) {
      ForwardOutput emit;
      emit.logits = out.logits.Rows(0, n_emit);
      for (size_t e : d.emit) emit.logit_rows.push_back(rows[e].logit_index);
      ASSIGN_OR_RETURN(words, reduction->reduce(d.original, micro_batches[d.original], emit));
    }
    if (n_rows > n_emit) {
      ASSIGN_OR_RETURN(const std::vector<int32_t> top, model_->vocab().ArgMax(out.logits.Rows(n_emit, n_rows)));
      words.insert(words.end(), top.begin(), top.end());
    }
    return words;
  };
  ASSIGN_OR_RETURN(const std::vector<float> words, engine_.Run(batches, cache, choose, ForwardHooks{}));

  size_t w = 0;
  for (const Deep& d : deep) {
    for (size_t e : d.emit) rows[e].token = static_cast<int32_t>(words[w++]);
    for (const auto& [slot, k] : d.calib) {
      const PendingRow& p = slots_[slot].pending[k];
      RETURN_IF_ERROR(tau_.Add(p.confidence, static_cast<int32_t>(words[w++]) == p.shallow_top1));
    }
    if (d.emit.empty() && d.calib.empty()) ++w;  // the discarded row
  }
  for (StepRow& row : rows) {
    if (!row.deep) continue;
    Slot& s = slots_[row.slot];
    const double chunk = static_cast<double>(s.pending.size());
    if (row.decode) {
      s.deep_passes += 1;
      s.deep_rows += chunk;
      s.max_chunk = std::max(s.max_chunk, chunk);
      if (row.exits) s.flushes += 1;
    }
    s.deep_length += static_cast<int32_t>(s.pending.size());
    s.pending.clear();
  }
  return absl::OkStatus();
}

absl::Status FreeRunner::CheckAgreement(int32_t step, const std::vector<StepRow>& rows) {
  std::vector<std::pair<int32_t, uint32_t>> decided;
  for (const StepRow& r : rows) {
    float tau = static_cast<float>(slots_[r.slot].tau);
    uint32_t tau_bits;
    std::memcpy(&tau_bits, &tau, sizeof(tau));
    decided.push_back({r.token, ((r.exits ? 1u : 0u) | (r.deep ? 2u : 0u)) ^ (tau_bits << 2)});
  }
  return CheckStepAgreement(model_->parallel().tp, step, decided,
                            "early-exit decisions, tokens or thresholds");
}

absl::Status FreeRunner::Flush(const std::vector<int32_t>& slots, KvCache& cache) {
  std::vector<StepRow> rows;
  for (int32_t slot : slots) {
    if (slot >= static_cast<int32_t>(slots_.size()) || slots_[slot].pending.empty()) continue;
    StepRow row;
    row.slot = slot;
    row.exits = true;  // emits nothing
    row.deep = true;
    rows.push_back(row);
  }
  if (rows.empty()) return absl::OkStatus();
  return DeepPass(rows, {}, cache, nullptr, last_step_);
}

absl::StatusOr<std::vector<SequenceCounters>> FreeRunner::EndSequences(
    const std::vector<int32_t>& slots, KvCache& cache) {
  if (options_.settings.flush_at_end() && !Static()) RETURN_IF_ERROR(Flush(slots, cache));
  std::vector<SequenceCounters> out;
  for (int32_t slot : slots) {
    if (slot >= static_cast<int32_t>(slots_.size())) {
      out.emplace_back();
      continue;
    }
    Slot& s = slots_[slot];
    SequenceCounters c = std::move(s.counters);
    const double head_flops = 2.0 * model_->config().hidden_size * model_->config().vocab_size;
    c.values = {{"exit_checks", s.checks},
                {"exits", s.exits},
                {"deep_passes", s.deep_passes},
                {"deep_rows", s.deep_rows},
                {"max_deep_chunk", s.max_chunk},
                {"cap_flushes", s.flushes},
                {"exit_check_flops", s.checks * head_flops},
                {"threshold", s.tau}};
    out.push_back(std::move(c));
    s = Slot{};
  }
  return out;
}

}  // namespace tessera
