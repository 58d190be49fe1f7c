#include "methods/early_exit/calm_runner.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "methods/early_exit/contrastive_confidence.h"
#include "methods/early_exit/exit_confidence.h"
#include "methods/step_agreement.h"

namespace tessera {
namespace {

using config::EarlyExitSettings;

constexpr int kCheckWords = 4;  // token, decision, confidence, top-1 id
constexpr int32_t kFillMicroBatch = 1 << 21;  // a state-propagation pass's micro-batch ids

}  // namespace

int64_t ForkVocabSchedule(int64_t blocks, int64_t layers, int64_t vocab) {
  constexpr double k1 = 35000, k_min = 250;
  const double k = std::floor(k1 / (1.0 + (k1 - k_min) / k_min * blocks / layers));
  return std::min<int64_t>(vocab, static_cast<int64_t>(std::max(k_min, k)));
}

struct CalmRunner::Seq {
  size_t micro_batch = 0;
  int32_t logit_index = 0;  // into the micro-batch's logit_rows
  int32_t slot = 0;
  int32_t first_row = 0, rows = 0;  // its rows in the micro-batch
  bool decode = false, running = true;
  int64_t exit_blocks = 0;  // 0: ran every block
  int32_t token = 0;
  int64_t offset = 0, previous_offset = 0;  // its first row in saved_ / previous_
  std::vector<int32_t> kept;  // vocabulary reduction: global ids, most likely first
  double confidence = 0;      // the last check's
  // JSD_CONTRASTIVE (one stage): the step's earlier checks' probabilities and block counts.
  std::vector<std::vector<double>> probs;
  std::vector<int64_t> prob_blocks;
};

// Saves the residual stream of every row at the check and ends the segment there.
class CalmRunner::SaveHook : public LayerHook {
 public:
  explicit SaveHook(CalmRunner* runner) : runner_(runner) {}
  void Target(int64_t layer) { layer_ = layer; }
  absl::StatusOr<LayerAction> AfterLayer(const LayerContext& ctx) override {
    if (ctx.layer != layer_) return LayerAction::Continue();
    const size_t g = static_cast<size_t>(ctx.batch->micro_batch);
    std::vector<Tensor>& saved = runner_->saved_;
    if (g >= saved.size()) saved.resize(g + 1);
    Tensor& t = saved[g];
    if (t.view().rank == 0) t = Tensor(ctx.backend, DType::kF32);
    RETURN_IF_ERROR(t.Resize({ctx.hidden.dim(0), ctx.hidden.dim(1)}));
    RETURN_IF_ERROR(ctx.backend->CopyWithinDevice(t.view().data, ctx.hidden.data,
                                                  ctx.hidden.bytes()));
    return LayerAction::Exit();
  }

 private:
  CalmRunner* runner_;
  int64_t layer_ = -1;
};

CalmRunner::CalmRunner(LlamaModel* model, CalmRunnerOptions options)
    : model_(model), options_(std::move(options)), engine_(model) {
  save_hook_ = std::make_unique<SaveHook>(this);
  checks_.assign(options_.settings.check_layers().begin(), options_.settings.check_layers().end());
}

CalmRunner::~CalmRunner() = default;

absl::StatusOr<std::unique_ptr<CalmRunner>> CalmRunner::Create(LlamaModel* model,
                                                               CalmRunnerOptions options) {
  std::unique_ptr<CalmRunner> r(new CalmRunner(model, std::move(options)));
  const int64_t layers = model->config().num_hidden_layers;
  const ShardPlan& plan = model->plan();
  if (r->checks_.empty()) {
    return absl::InvalidArgumentError("method.early_exit.check_layers: CALM needs a check");
  }
  const EarlyExitSettings& s = r->options_.settings;
  if (s.confidence() == EarlyExitSettings::JSD_CONTRASTIVE &&
      (plan.pp_size != 1 || s.vocab_reduction() != EarlyExitSettings::VOCAB_FULL)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "method.early_exit.confidence: JSD_CONTRASTIVE is a research mode for one pipeline stage "
        "and the full vocabulary; this run has pp ", plan.pp_size, " and vocab_reduction ",
        EarlyExitSettings::VocabReduction_Name(s.vocab_reduction())));
  }
  for (size_t k = 0; k < r->checks_.size(); ++k) {
    const int64_t c = r->checks_[k];
    if (c < 1 || c >= layers || (k > 0 && c <= r->checks_[k - 1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "method.early_exit.check_layers: ", c, " is not an increasing block count in [1, ",
          layers - 1, "]"));
    }
    const bool holds = plan.layer_begin <= c - 1 && c - 1 < plan.layer_end;
    r->holds_check_.push_back(holds);
    if (holds && !model->has_head()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "CALM checks after ", c, " blocks: pipeline stage ", plan.pp_rank,
          " holds no head; load the model with ModelOptions::head_after_layers"));
    }
  }
  return r;
}

absl::Status CalmRunner::StartSequence(int32_t slot, uint64_t) {
  if (slot >= static_cast<int32_t>(slots_.size())) {
    slots_.resize(slot + 1);
    prefilled_.resize(slot + 1, 0);
  }
  slots_[slot] = SlotCounters{};
  prefilled_[slot] = 0;
  return absl::OkStatus();
}

absl::Status CalmRunner::GatherSaved(const std::vector<Seq*>& seqs, bool from_previous,
                                     Tensor& to) {
  Backend& backend = model_->backend();
  const int64_t dim = model_->config().hidden_size;
  int64_t rows = 0;
  for (const Seq* s : seqs) rows += s->rows;
  if (to.view().rank == 0) to = Tensor(&backend, DType::kF32);
  RETURN_IF_ERROR(to.Resize({rows, dim}));
  int64_t at = 0;
  for (const Seq* s : seqs) {
    const Tensor& from = (from_previous ? previous_ : saved_).at(s->micro_batch);
    const int64_t offset = from_previous ? s->previous_offset : s->offset;
    RETURN_IF_ERROR(backend.CopyWithinDevice(to.view().Rows(at, at + s->rows).data,
                                             from.view().Rows(offset, offset + s->rows).data,
                                             s->rows * dim * sizeof(float)));
    at += s->rows;
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorView> CalmRunner::ReducedLogits(const std::vector<Seq*>& seqs,
                                                     const std::vector<int64_t>& keep) {
  Backend& backend = model_->backend();
  const ShardPlan& plan = model_->plan();
  const LlamaWeights& w = model_->weights();
  const int64_t dim = model_->config().hidden_size, width = plan.vocab_rows;
  const int64_t n = static_cast<int64_t>(seqs.size());
  for (Tensor* t : {&normed_, &reduced_, &scattered_}) {
    if (t->view().rank == 0) *t = Tensor(&backend, DType::kF32);
  }
  if (gathered_.view().rank == 0) gathered_ = Tensor(&backend, w.lm_head.dtype);
  if (ids_.view().rank == 0) ids_ = Tensor(&backend, DType::kI32);
  RETURN_IF_ERROR(scattered_.Resize({n, width}));
  const std::vector<float> minus_inf(n * width, -std::numeric_limits<float>::infinity());
  RETURN_IF_ERROR(backend.CopyToDevice(scattered_.view().data, minus_inf.data(), n * width * 4));
  RETURN_IF_ERROR(normed_.Resize({1, dim}));
  for (int64_t j = 0; j < n; ++j) {
    const Seq& s = *seqs[j];
    const TensorView h = saved_.at(s.micro_batch).view().Rows(s.offset + s.rows - 1,
                                                              s.offset + s.rows);
    std::vector<int32_t> local;
    for (int64_t i = 0; i < keep[j] && i < static_cast<int64_t>(s.kept.size()); ++i) {
      const int64_t id = s.kept[i] - plan.vocab_begin;
      if (id >= 0 && id < width) local.push_back(static_cast<int32_t>(id));
    }
    if (local.empty()) continue;  // none of the kept rows is in this rank's shard
    const int64_t m = static_cast<int64_t>(local.size());
    RETURN_IF_ERROR(ids_.Resize({m}));
    RETURN_IF_ERROR(gathered_.Resize({m, dim}));
    RETURN_IF_ERROR(reduced_.Resize({1, m}));
    RETURN_IF_ERROR(backend.Synchronize());  // the previous row's ops may read ids_
    RETURN_IF_ERROR(backend.CopyToDevice(ids_.view().data, local.data(), m * sizeof(int32_t)));
    RETURN_IF_ERROR(backend.GatherRows({w.lm_head, ids_.view(), gathered_.view()}));
    RETURN_IF_ERROR(backend.RmsNorm({h, w.final_norm, normed_.view(),
                                     static_cast<float>(model_->config().rms_norm_eps)}));
    RETURN_IF_ERROR(backend.Gemm({normed_.view(), gathered_.view(), reduced_.view()}));
    float* row = scattered_.view().Rows(j, j + 1).as<float>();
    for (int64_t i = 0; i < m; ++i) {
      RETURN_IF_ERROR(backend.CopyWithinDevice(row + local[i], reduced_.view().as<float>() + i,
                                               sizeof(float)));
    }
  }
  return scattered_.view();
}

int64_t CalmRunner::RowsAtCheck(const Seq& q, int64_t blocks, size_t check) const {
  const EarlyExitSettings& s = options_.settings;
  const int64_t v = model_->config().vocab_size;
  if (s.vocab_reduction() == EarlyExitSettings::VOCAB_FULL || check == 0) return v;
  int64_t k = static_cast<int64_t>(q.kept.size());
  if (s.vocab_reduction() == EarlyExitSettings::VOCAB_DECAYING) {
    k = std::min(k, ForkVocabSchedule(blocks, model_->config().num_hidden_layers, v));
  } else if (s.vocab_reduction() == EarlyExitSettings::VOCAB_ADAPTIVE) {
    // The previous check's confidence, as every rank received it (F32).
    const double c = static_cast<float>(q.confidence);
    k = std::min(k, std::max<int64_t>(1, static_cast<int64_t>(std::floor(v * (1.0 - 0.9 * c)))));
  }
  return k;
}

absl::StatusOr<std::vector<double>> CalmRunner::ContrastiveConfidences(
    int64_t blocks, const ForwardOutput& out, const std::vector<Seq*>& seqs,
    std::vector<bool>* can_exit) {
  const int64_t v = model_->config().vocab_size;
  RETURN_IF_ERROR(model_->vocab().GatherFull(out.logits, v, &full_logits_));
  std::vector<double> confidence(seqs.size(), 0.0);
  for (size_t j = 0; j < seqs.size(); ++j) {
    Seq& s = *seqs[j];
    std::vector<double> p =
        SoftmaxOf(absl::MakeConstSpan(full_logits_.data<float>() + j * v, v));
    std::vector<const std::vector<double>*> amateurs;
    std::vector<int64_t> amateur_blocks;
    for (size_t i = 0; i < s.probs.size(); ++i) {
      if (s.prob_blocks[i] < 2) continue;
      amateurs.push_back(&s.probs[i]);
      amateur_blocks.push_back(s.prob_blocks[i]);
    }
    if (amateurs.empty()) {
      (*can_exit)[j] = false;  // nothing to contrast with yet: this check only records
    } else {
      confidence[j] = JsdContrastiveConfidence(p, blocks, amateurs, amateur_blocks).confidence;
    }
    s.probs.push_back(std::move(p));
    s.prob_blocks.push_back(blocks);
  }
  return confidence;
}

int64_t CalmRunner::KeptRows() const {
  const EarlyExitSettings& s = options_.settings;
  if (s.vocab_reduction() == EarlyExitSettings::VOCAB_FULL) return 0;
  const int64_t v = model_->config().vocab_size;
  return s.has_vocab_k() ? s.vocab_k()
                         : ForkVocabSchedule(checks_[0], model_->config().num_hidden_layers, v);
}

absl::StatusOr<std::vector<VocabRowStats>> CalmRunner::CheckStats(int64_t blocks,
                                                                  size_t first_check,
                                                                  const ForwardOutput& out,
                                                                  const std::vector<Seq*>& seqs) {
  const EarlyExitSettings& s = options_.settings;
  VocabReducer& vocab = model_->vocab();
  const int64_t layers = model_->config().num_hidden_layers;
  const int64_t v = model_->config().vocab_size;
  const bool reduce = s.vocab_reduction() != EarlyExitSettings::VOCAB_FULL;
  const int64_t k0 = KeptRows();
  if (!reduce || first_check == 0) {
    ASSIGN_OR_RETURN(std::vector<VocabRowStats> stats, vocab.Stats(out.logits));
    if (reduce && first_check == 0) {
      ASSIGN_OR_RETURN(const auto top, vocab.TopK(out.logits, static_cast<int>(k0)));
      for (size_t j = 0; j < seqs.size(); ++j) {
        seqs[j]->kept.clear();
        for (const auto& [id, logit] : top[j]) seqs[j]->kept.push_back(id);
      }
    }
    return stats;
  }
  std::vector<int64_t> keep(seqs.size());
  for (size_t j = 0; j < seqs.size(); ++j) keep[j] = RowsAtCheck(*seqs[j], blocks, first_check);
  ASSIGN_OR_RETURN(const TensorView reduced, ReducedLogits(seqs, keep));
  return vocab.Stats(reduced);
}

absl::StatusOr<std::vector<float>> CalmRunner::Run(const std::vector<ForwardBatch>& micro_batches,
                                                   KvCache& cache,
                                                   const StepReduction& reduction) {
  if (micro_batches.empty()) return std::vector<float>();
  const int32_t step = micro_batches[0].step;
  const int64_t layers = model_->config().num_hidden_layers;
  const EarlyExitSettings& settings = options_.settings;
  const double tau = settings.has_threshold() ? settings.threshold() : 1.0;
  std::vector<Seq> seqs;
  for (size_t g = 0; g < micro_batches.size(); ++g) {
    const ForwardBatch& b = micro_batches[g];
    for (size_t j = 0; j < b.logit_rows.size(); ++j) {
      Seq s;
      s.micro_batch = g;
      s.logit_index = static_cast<int32_t>(j);
      s.slot = b.slots[b.logit_rows[j]];
      if (s.slot >= static_cast<int32_t>(slots_.size())) {
        return absl::InternalError(absl::StrCat("CALM: slot ", s.slot, " was never started"));
      }
      const auto first = std::find(b.slots.begin(), b.slots.end(), s.slot);
      s.first_row = static_cast<int32_t>(first - b.slots.begin());
      s.rows = static_cast<int32_t>(std::count(b.slots.begin(), b.slots.end(), s.slot));
      s.decode = prefilled_[s.slot] != 0;
      seqs.push_back(std::move(s));
    }
  }
  replayed_ = decisions_.size();
  for (size_t k = 0; k <= checks_.size(); ++k) {
    const bool last = k == checks_.size();
    const int64_t first = k == 0 ? 0 : checks_[k - 1];
    // The micro-batches of the rows still running.
    std::vector<ForwardBatch> batches;
    std::vector<std::vector<Seq*>> members;
    std::vector<size_t> original;
    for (size_t g = 0; g < micro_batches.size(); ++g) {
      const ForwardBatch& src = micro_batches[g];
      ForwardBatch b;
      b.step = step;
      b.micro_batch = static_cast<int32_t>(g);
      b.first_layer = first;
      std::vector<Seq*> in;
      for (Seq& s : seqs) {
        if (s.micro_batch != g || !s.running) continue;
        s.offset = static_cast<int64_t>(b.tokens.size());
        for (int32_t r = s.first_row; r < s.first_row + s.rows; ++r) {
          b.tokens.push_back(src.tokens[r]);
          b.positions.push_back(src.positions[r]);
          b.slots.push_back(src.slots[r]);
        }
        b.logit_rows.push_back(static_cast<int32_t>(b.tokens.size()) - 1);
        in.push_back(&s);
      }
      if (in.empty()) continue;
      batches.push_back(std::move(b));
      members.push_back(std::move(in));
      original.push_back(g);
    }
    if (batches.empty()) break;
    std::vector<Tensor> inputs(batches.size());
    if (k > 0 && holds_check_[k - 1]) {
      for (size_t i = 0; i < batches.size(); ++i) {
        RETURN_IF_ERROR(GatherSaved(members[i], /*from_previous=*/true, inputs[i]));
        batches[i].input = inputs[i].view();
      }
    }
    // The first check of a reduced vocabulary also sends each row's kept ids to every rank.
    const int64_t kept_words =
        !last && k == 0 && settings.vocab_reduction() != EarlyExitSettings::VOCAB_FULL ? KeptRows()
                                                                                       : 0;
    const int64_t stride = kCheckWords + kept_words;
    StepReduction red;
    red.words_per_row = last ? 1 : static_cast<int>(stride);
    red.reduce = [&](size_t i, const ForwardBatch&,
                     const ForwardOutput& out) -> absl::StatusOr<std::vector<float>> {
      const std::vector<Seq*>& in = members[i];
      ForwardOutput view;
      view.logits = out.logits;
      for (const Seq* s : in) view.logit_rows.push_back(s->logit_index);
      if (last) return reduction.reduce(original[i], micro_batches[original[i]], view);
      ASSIGN_OR_RETURN(const std::vector<VocabRowStats> stats,
                       CheckStats(checks_[k], k, out, in));
      if (settings.vocab_reduction() != EarlyExitSettings::VOCAB_FULL && k > 0) {
        view.logits = scattered_.view();  // the emitted token is the reduced argmax
      }
      ASSIGN_OR_RETURN(const std::vector<float> tokens,
                       reduction.reduce(original[i], micro_batches[original[i]], view));
      std::vector<double> contrastive;
      std::vector<bool> can_exit(in.size(), true);
      if (settings.confidence() == EarlyExitSettings::JSD_CONTRASTIVE) {
        ASSIGN_OR_RETURN(contrastive, ContrastiveConfidences(checks_[k], out, in, &can_exit));
      }
      std::vector<float> words(in.size() * stride);
      for (size_t j = 0; j < in.size(); ++j) {
        const double c = contrastive.empty()
                             ? ExitConfidence(stats[j], settings.confidence(),
                                              model_->config().vocab_size)
                             : contrastive[j];
        bool exits = false;
        if (in[j]->decode && can_exit[j]) {
          if (!options_.forced_decisions.empty()) {
            if (replayed_ >= options_.forced_decisions.size()) {
              return absl::FailedPreconditionError(absl::StrCat(
                  "CALM: the replayed decisions ran out at step ", step));
            }
            exits = options_.forced_decisions[replayed_++] != 0;
          } else {
            exits = c > tau;
          }
        }
        float* w = &words[j * stride];
        w[0] = tokens[j];
        w[1] = exits ? 1.0f : 0.0f;
        w[2] = static_cast<float>(c);
        w[3] = static_cast<float>(stats[j].top1);
        for (int64_t i = 0; i < kept_words; ++i) w[kCheckWords + i] = static_cast<float>(in[j]->kept[i]);
      }
      return words;
    };
    ForwardHooks hooks;
    if (!last) {
      save_hook_->Target(checks_[k] - 1);
      hooks.layer = save_hook_.get();
      hooks.check_agreement = options_.check_agreement;
    }
    ASSIGN_OR_RETURN(const std::vector<float> words, engine_.Run(batches, cache, red, hooks));
    // Every rank: the decisions, then the state propagation of the rows that exited.
    std::vector<Seq*> exited;
    size_t w = 0;
    for (const std::vector<Seq*>& in : members) {
      for (Seq* s : in) {
        if (last) {
          s->token = static_cast<int32_t>(words[w++]);
          continue;
        }
        const float* word = &words[w];
        w += stride;
        const int64_t rows_used = RowsAtCheck(*s, checks_[k], k);  // before the confidence moves
        s->confidence = word[2];
        if (kept_words > 0) s->kept.assign(word + kCheckWords, word + stride);
        if (!s->decode) continue;
        SlotCounters& c = slots_[s->slot];
        c.checks += 1;
        c.check_rows += static_cast<double>(rows_used);
        decisions_.push_back(word[1] != 0.0f ? 1 : 0);
        confidences_.push_back(word[2]);
        if (word[1] == 0.0f) continue;
        s->token = static_cast<int32_t>(word[0]);
        s->running = false;
        s->exit_blocks = checks_[k];
        c.exits += 1;
        c.filled_layers += static_cast<double>(layers - checks_[k]);
        exited.push_back(s);
      }
    }
    replayed_ = decisions_.size();
    if (!exited.empty()) {
      ForwardBatch fill;
      fill.step = step;
      fill.micro_batch = kFillMicroBatch + static_cast<int32_t>(k);
      fill.first_layer = checks_[k];
      fill.kv_only = true;
      for (const Seq* s : exited) {
        const ForwardBatch& src = micro_batches[s->micro_batch];
        fill.tokens.push_back(src.tokens[s->first_row]);
        fill.positions.push_back(src.positions[s->first_row]);
        fill.slots.push_back(src.slots[s->first_row]);
      }
      fill.logit_rows = {0};
      Tensor input;
      if (holds_check_[k]) {
        RETURN_IF_ERROR(GatherSaved(exited, /*from_previous=*/false, input));
        fill.input = input.view();
      }
      RETURN_IF_ERROR(model_->Forward(fill, cache, ForwardHooks()).status());
    }
    std::swap(saved_, previous_);
    for (Seq& s : seqs) s.previous_offset = s.offset;
  }
  if (options_.check_agreement) {
    std::vector<std::pair<int32_t, uint32_t>> decided;
    for (const Seq& s : seqs) {
      decided.push_back({s.token, static_cast<uint32_t>(s.exit_blocks)});
    }
    RETURN_IF_ERROR(CheckStepAgreement(model_->parallel().tp, step, decided, "CALM decisions"));
  }
  std::vector<float> tokens;
  for (const Seq& s : seqs) {
    SlotCounters& c = slots_[s.slot];
    c.counters.token_layers.push_back(static_cast<int32_t>(s.exit_blocks > 0 ? s.exit_blocks : layers));
    prefilled_[s.slot] = 1;
    tokens.push_back(static_cast<float>(s.token));
  }
  return tokens;
}

absl::StatusOr<std::vector<SequenceCounters>> CalmRunner::EndSequences(
    const std::vector<int32_t>& slots, KvCache& cache) {
  std::vector<SequenceCounters> out;
  const double dim = static_cast<double>(model_->config().hidden_size);
  for (int32_t slot : slots) {
    if (slot >= static_cast<int32_t>(slots_.size())) {
      out.emplace_back();
      continue;
    }
    SlotCounters& s = slots_[slot];
    SequenceCounters c = std::move(s.counters);
    c.values = {{"exit_checks", s.checks},
                {"exits", s.exits},
                {"exit_check_rows", s.check_rows},
                {"exit_check_flops", 2.0 * dim * s.check_rows},
                {"kv_filled_layers", s.filled_layers}};
    out.push_back(std::move(c));
    s = SlotCounters{};
  }
  return out;
}

}  // namespace tessera
