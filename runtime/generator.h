// Generator: batched generation with continuous admission, on one rank or on every rank of a
// model replica (tensor and pipeline parallel).
//
// Requests run together in one ragged batch: each owns a KV cache slot; a step feeds the next
// token of every running sequence plus the whole prompt of newly admitted ones, so prefill of a
// new request and decode of older ones share a forward pass. Each sequence stops on its own: an
// EOS id, a stop string, max_new_tokens, or the end of the context. Results do not depend on the
// batch composition (sampling randomness is keyed by request id and step).
//
// Sharded: every rank of the replica runs the same Generate() call. Each step's sequences are
// split into micro-batches that flow through the pipeline stages one after another, so stages
// work on different micro-batches at once; the last stage picks the next tokens (greedy by a
// vocabulary-parallel argmax, sampling from gathered logits) and broadcasts them to every stage.
//
//   Generator gen(model, tokenizer, {.max_batch = 8});
//   ASSIGN_OR_RETURN(auto results, gen.Generate(requests, on_text));
#ifndef TESSERA_RUNTIME_GENERATOR_H_
#define TESSERA_RUNTIME_GENERATOR_H_

#include "absl/strings/string_view.h"
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/llama_model.h"
#include "runtime/sampler.h"
#include "runtime/step_engine.h"
#include "runtime/tokenizer.h"

namespace tessera {

struct GenerationRequest {
  static constexpr uint64_t kIndex = ~uint64_t{0};
  std::vector<int32_t> prompt_ids;  // including BOS when the model expects it; not empty
  uint64_t id = kIndex;  // keys the sampling randomness; kIndex: the request's index in the call
  int32_t max_new_tokens = 16;
  SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings (need a tokenizer); the match is cut from text
  bool ignore_eos = false;
  // Where the request came from, prefixing its error messages ("prompts.jsonl:3", "--prompt");
  // empty: "request I" (its index in the Generate() call).
  std::string source;
};

enum class FinishReason { kEos, kStop, kLength };
const char* FinishReasonName(FinishReason reason);  // "eos", "stop", "length"

struct GenerationResult {
  std::vector<int32_t> token_ids;  // generated ids (an EOS that ended the sequence included)
  std::string text;                // decoded generated text (empty without a tokenizer)
  FinishReason finish_reason = FinishReason::kLength;
  int32_t prompt_tokens = 0;
  double time_to_first_token_ms = 0;  // from the start of Generate()
  double total_ms = 0;                // from the start of Generate() to this sequence's end
  SequenceCounters counters;  // what a method's runner counted (empty for the plain runtime)
};

struct GeneratorOptions {
  int32_t max_batch = 16;   // sequences resident at once (KV cache slots)
  int32_t micro_batches = 0;  // per step, for pipeline overlap; 0: one per pipeline stage
  // KV cache length per slot; 0: enough for the longest request, capped at
  // max_position_embeddings. Past max_position_embeddings only with a rope_scaling that extends
  // the context (ContextLimit, runtime/context_limit.h); prompts must be shorter than it.
  int32_t max_seq_len = 0;
  StepPolicy* policy = nullptr;  // a method's passes per step (not owned); null: one plain pass
  // A method that runs each step itself (not owned; FREE's shallow and deep passes); null: the
  // step engine (with `policy`).
  StepRunner* runner = nullptr;
};

// Called with (request index, new text) as text becomes final; only with a tokenizer.
using TextCallback = std::function<void(size_t, absl::string_view)>;

// Requests joining a running Generate() call (a server's queue). Sharded, every rank must admit
// the same requests at the same step: the replica's leader takes them and sends them to the
// others, which return what they receive.
struct GenerationFeed {
  // Called before every step with the number of free KV cache slots (0 when none is free, so
  // that every rank calls it equally often); returns at most that many requests, which get the
  // indices after the call's own requests in the order returned. Generate() ends once nothing
  // runs and this returns none. An error ends the call.
  std::function<absl::StatusOr<std::vector<GenerationRequest>>(int32_t free_slots)> admit;
  // Called with (request index, its result) as each sequence ends; may be empty.
  std::function<void(size_t, const GenerationResult&)> finished;
};

class Generator {
 public:
  // `model` must outlive the generator; `tokenizer` may be null (ids only, no stop strings).
  Generator(LlamaModel* model, const Tokenizer* tokenizer, GeneratorOptions options = {});

  // With `feed` (not owned; null: none), requests also join while the call runs; the KV cache
  // then has max_batch slots of the context limit (max_seq_len, else max_position_embeddings),
  // and the results cover the admitted requests too.
  absl::StatusOr<std::vector<GenerationResult>> Generate(
      const std::vector<GenerationRequest>& requests, const TextCallback& on_text = nullptr,
      const GenerationFeed* feed = nullptr);

 private:
  absl::Status Validate(const std::vector<GenerationRequest>& requests) const;
  // Next token of each row of one micro-batch's logits (last stage only).
  absl::StatusOr<std::vector<int32_t>> SelectTokens(TensorView logits,
                                                    const std::vector<const GenerationRequest*>& requests,
                                                    const std::vector<uint64_t>& ids,
                                                    const std::vector<uint64_t>& steps);

  LlamaModel* model_;
  const Tokenizer* tokenizer_;
  GeneratorOptions options_;
  StepEngine engine_;
  StepRunner* runner_;  // options.runner, or &engine_
  Tensor full_logits_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_GENERATOR_H_
