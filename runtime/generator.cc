#include "runtime/generator.h"

#include <algorithm>
#include <chrono>
#include <deque>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/context_limit.h"
#include "runtime/utf8.h"
#include "runtime/vocab_parallel.h"

namespace tessera {
namespace {

using Clock = std::chrono::steady_clock;

// Prompt tokens kept as decoding context, so the first generated piece keeps its leading space.
constexpr size_t kDecodeContext = 4;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

struct Sequence {
  size_t request = 0;
  int32_t slot = 0;
  int32_t length = 0;             // tokens fed so far (the next position, for the runner)
  int64_t entries = 0;            // KV cache entries the sequence holds once `pending` is fed
  std::vector<int32_t> pending;   // tokens to feed in the next step
  std::vector<int32_t> context;   // trailing prompt ids for decoding
  size_t emitted = 0;             // bytes of result.text already streamed
  bool finished = false;
  GenerationResult result;
};

}  // namespace

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos:
      return "eos";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
  }
  return "?";
}

Generator::Generator(LlamaModel* model, const Tokenizer* tokenizer, GeneratorOptions options)
    : model_(model),
      tokenizer_(tokenizer),
      options_(options),
      engine_(model, options.policy),
      runner_(options.runner != nullptr ? options.runner : &engine_) {}

absl::Status Generator::Validate(const std::vector<GenerationRequest>& requests) const {
  const ModelConfig& c = model_->config();
  if (options_.max_batch < 1) return absl::InvalidArgumentError("max_batch must be >= 1");
  ASSIGN_OR_RETURN(const int64_t limit, ContextLimit(c, options_.max_seq_len));
  for (size_t i = 0; i < requests.size(); ++i) {
    const GenerationRequest& r = requests[i];
    const std::string where =
        r.source.empty() ? absl::StrCat("request ", i, ": ") : absl::StrCat(r.source, ": ");
    if (r.prompt_ids.empty()) return absl::InvalidArgumentError(where + "the prompt is empty");
    if (runner_->PromptEntries(static_cast<int64_t>(r.prompt_ids.size())) >= limit) {
      const std::string context =
          options_.max_seq_len > 0
              ? absl::StrCat("max_seq_len is ", options_.max_seq_len)
              : absl::StrCat("the model's context (max_position_embeddings) is ", limit);
      return absl::InvalidArgumentError(absl::StrCat(
          where, "the prompt has ", r.prompt_ids.size(), " tokens; ", context,
          " and generation needs at least one more position",
          ContextLimitHint(c, options_.max_seq_len,
                           static_cast<int64_t>(r.prompt_ids.size()) + r.max_new_tokens)));
    }
    for (int32_t id : r.prompt_ids) {
      if (id < 0 || id >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(where, "token id ", id,
                                                       " is outside the vocabulary [0, ",
                                                       c.vocab_size, ")"));
      }
    }
    if (r.max_new_tokens < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "max_new_tokens must be >= 1, got ", r.max_new_tokens));
    }
    if (!r.stop.empty() && tokenizer_ == nullptr) {
      return absl::InvalidArgumentError(where + "stop strings need a tokenizer.model");
    }
    for (const std::string& s : r.stop) {
      if (s.empty()) return absl::InvalidArgumentError(where + "a stop string is empty");
    }
    absl::Status sampling = ValidateSamplingParams(r.sampling);
    if (!sampling.ok()) return absl::InvalidArgumentError(where + std::string(sampling.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<GenerationResult>> Generator::Generate(
    const std::vector<GenerationRequest>& initial, const TextCallback& on_text,
    const GenerationFeed* feed) {
  RETURN_IF_ERROR(Validate(initial));
  const bool admitting = feed != nullptr && feed->admit;
  if (initial.empty() && !admitting) return std::vector<GenerationResult>();
  // Stable references while admitted requests are appended.
  std::deque<GenerationRequest> requests(initial.begin(), initial.end());
  const ModelConfig& c = model_->config();
  const Clock::time_point start = Clock::now();

  ASSIGN_OR_RETURN(const int64_t limit, ContextLimit(c, options_.max_seq_len));
  int64_t max_seq = admitting ? limit : options_.max_seq_len;
  if (max_seq == 0) {
    for (const GenerationRequest& r : requests) {
      max_seq = std::max<int64_t>(
          max_seq, runner_->PromptEntries(r.prompt_ids.size()) + r.max_new_tokens);
    }
  }
  max_seq = std::min(max_seq, limit);
  const int64_t n_slots =
      admitting ? options_.max_batch : std::min<int64_t>(options_.max_batch, requests.size());
  ASSIGN_OR_RETURN(KvCache * cache, model_->AcquireCache(n_slots, max_seq));
  const ShardPlan& plan = model_->plan();
  const int32_t micro_batches = options_.micro_batches > 0 ? options_.micro_batches : plan.pp_size;
  int32_t step = 0;

  std::vector<GenerationResult> results(requests.size());
  std::deque<size_t> queue;
  for (size_t i = 0; i < requests.size(); ++i) queue.push_back(i);
  std::vector<int32_t> free_slots;
  for (int32_t s = static_cast<int32_t>(n_slots) - 1; s >= 0; --s) free_slots.push_back(s);
  std::vector<Sequence> running;

  // Streams the part of the text that can no longer change: complete UTF-8, no trailing
  // replacement character (a byte-fallback sequence still being built), and not a possible
  // beginning of a stop string.
  auto stream = [&](Sequence& s, bool final) {
    if (!on_text) return;
    const std::string& text = s.result.text;
    size_t ready = text.size();
    if (!final) {
      ready = CompleteUtf8Prefix(text);
      static const std::string kReplacement = "\xEF\xBF\xBD";
      if (ready >= 3 && text.compare(ready - 3, 3, kReplacement) == 0) ready -= 3;
      size_t hold = 0;
      for (const std::string& stop : requests[s.request].stop) hold = std::max(hold, stop.size() - 1);
      ready = ready > hold ? ready - hold : 0;
      ready = CompleteUtf8Prefix(absl::string_view(text).substr(0, ready));
    }
    if (ready > s.emitted) {
      on_text(s.request, absl::string_view(text).substr(s.emitted, ready - s.emitted));
      s.emitted = ready;
    }
  };

  // Asks the feed for as many requests as there are slots that queued requests leave free.
  auto admit = [&]() -> absl::Status {
    if (!admitting) return absl::OkStatus();
    const int32_t room = std::max<int32_t>(
        0, static_cast<int32_t>(free_slots.size()) - static_cast<int32_t>(queue.size()));
    ASSIGN_OR_RETURN(std::vector<GenerationRequest> more, feed->admit(room));
    if (static_cast<int32_t>(more.size()) > room) {
      return absl::InternalError(absl::StrCat("the generation feed returned ", more.size(),
                                              " requests for ", room, " free slots"));
    }
    RETURN_IF_ERROR(Validate(more));
    for (GenerationRequest& r : more) {
      if (runner_->PromptEntries(r.prompt_ids.size()) >= max_seq) {
        return absl::InvalidArgumentError(absl::StrCat(
            "an admitted prompt of ", r.prompt_ids.size(), " tokens leaves no room in the ",
            max_seq, "-token cache"));
      }
      queue.push_back(requests.size());
      requests.push_back(std::move(r));
      results.emplace_back();
    }
    return absl::OkStatus();
  };

  while (true) {
    RETURN_IF_ERROR(admit());
    if (queue.empty() && running.empty()) break;
    while (!queue.empty() && !free_slots.empty()) {
      Sequence s;
      s.request = queue.front();
      queue.pop_front();
      s.slot = free_slots.back();
      free_slots.pop_back();
      cache->Clear(s.slot);
      const GenerationRequest& r = requests[s.request];
      RETURN_IF_ERROR(runner_->StartSequence(
          s.slot, r.id == GenerationRequest::kIndex ? s.request : r.id));
      s.pending = r.prompt_ids;
      s.entries = runner_->PromptEntries(r.prompt_ids.size());
      const size_t keep = std::min(kDecodeContext, r.prompt_ids.size());
      s.context.assign(r.prompt_ids.end() - keep, r.prompt_ids.end());
      s.result.prompt_tokens = static_cast<int32_t>(r.prompt_ids.size());
      running.push_back(std::move(s));
    }
    // The running sequences in `micro_batches` contiguous groups, one forward pass each.
    const size_t groups = std::min<size_t>(micro_batches, running.size());
    auto group_range = [&](size_t g) {
      return std::make_pair(running.size() * g / groups, running.size() * (g + 1) / groups);
    };
    std::vector<ForwardBatch> batches(groups);
    for (size_t g = 0; g < groups; ++g) {
      const auto [begin, end] = group_range(g);
      ForwardBatch& batch = batches[g];
      batch.step = step;
      batch.micro_batch = static_cast<int32_t>(g);
      for (size_t i = begin; i < end; ++i) {
        const Sequence& s = running[i];
        for (size_t j = 0; j < s.pending.size(); ++j) {
          batch.tokens.push_back(s.pending[j]);
          batch.positions.push_back(s.length + static_cast<int32_t>(j));
          batch.slots.push_back(s.slot);
        }
        batch.logit_rows.push_back(static_cast<int32_t>(batch.tokens.size()) - 1);
      }
    }
    // The next token of each sequence, chosen where the logits are and sent to every stage.
    StepReduction choose;
    choose.reduce = [&](size_t g, const ForwardBatch&,
                        const ForwardOutput& out) -> absl::StatusOr<std::vector<float>> {
      const size_t begin = group_range(g).first;
      std::vector<const GenerationRequest*> reqs;
      std::vector<uint64_t> ids, steps;
      for (const int32_t row : out.logit_rows) {  // row j answers sequence begin + logit_rows[j]
        const size_t i = begin + row;
        const GenerationRequest& r = requests[running[i].request];
        reqs.push_back(&r);
        ids.push_back(r.id == GenerationRequest::kIndex ? running[i].request : r.id);
        steps.push_back(running[i].result.token_ids.size());
      }
      ASSIGN_OR_RETURN(std::vector<int32_t> tokens, SelectTokens(out.logits, reqs, ids, steps));
      return std::vector<float>(tokens.begin(), tokens.end());  // ids below 2^24: exact
    };
    ASSIGN_OR_RETURN(const std::vector<float> chosen, runner_->Run(batches, *cache, choose));
    ++step;

    for (size_t i = 0; i < running.size(); ++i) {
      Sequence& s = running[i];
      const GenerationRequest& r = requests[s.request];
      GenerationResult& out = s.result;
      const int32_t token = static_cast<int32_t>(chosen[i]);
      s.length += static_cast<int32_t>(s.pending.size());
      s.pending = {token};
      if (!out.token_ids.empty()) ++s.entries;  // the token fed this step is now in the cache
      out.token_ids.push_back(token);
      if (out.token_ids.size() == 1) out.time_to_first_token_ms = MsSince(start);

      const bool is_eos = std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), token) !=
                          c.eos_token_ids.end();
      if (is_eos && !r.ignore_eos) {
        s.finished = true;
        out.finish_reason = FinishReason::kEos;
      }
      if (tokenizer_ != nullptr) {
        const size_t n_text = out.token_ids.size() - (s.finished ? 1 : 0);
        out.text = tokenizer_->DecodeAfter(s.context, absl::MakeSpan(out.token_ids.data(), n_text));
        size_t cut = std::string::npos;
        for (const std::string& stop : r.stop) cut = std::min(cut, out.text.find(stop));
        if (cut != std::string::npos) {
          out.text.resize(cut);
          s.finished = true;
          out.finish_reason = FinishReason::kStop;
        }
      }
      if (!s.finished && (static_cast<int32_t>(out.token_ids.size()) >= r.max_new_tokens ||
                          s.entries + 1 > max_seq)) {
        s.finished = true;
        out.finish_reason = FinishReason::kLength;
      }
      stream(s, s.finished);
      if (s.finished) out.total_ms = MsSince(start);
    }
    std::vector<int32_t> ended;
    for (const Sequence& s : running) {
      if (s.finished) ended.push_back(s.slot);
    }
    if (!ended.empty()) {
      ASSIGN_OR_RETURN(std::vector<SequenceCounters> counters,
                       runner_->EndSequences(ended, *cache));
      size_t e = 0;
      for (Sequence& s : running) {
        if (!s.finished) continue;
        s.result.counters = std::move(counters[e++]);
        free_slots.push_back(s.slot);
        results[s.request] = std::move(s.result);
        if (feed != nullptr && feed->finished) feed->finished(s.request, results[s.request]);
      }
    }
    running.erase(std::remove_if(running.begin(), running.end(),
                                 [](const Sequence& s) { return s.finished; }),
                  running.end());
  }
  return results;
}

absl::StatusOr<std::vector<int32_t>> Generator::SelectTokens(
    TensorView logits, const std::vector<const GenerationRequest*>& requests,
    const std::vector<uint64_t>& ids, const std::vector<uint64_t>& steps) {
  const bool all_greedy = std::all_of(requests.begin(), requests.end(), [](const auto* r) {
    return r->sampling.temperature == 0.0f;
  });
  if (all_greedy) return model_->vocab().ArgMax(logits);
  const int64_t vocab = model_->config().vocab_size;
  RETURN_IF_ERROR(model_->vocab().GatherFull(logits, vocab, &full_logits_));
  std::vector<int32_t> tokens(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const absl::Span<const float> row(full_logits_.data<float>() + i * vocab, vocab);
    tokens[i] = SampleToken(row, requests[i]->sampling, ids[i], steps[i]);
  }
  return tokens;
}

}  // namespace tessera
