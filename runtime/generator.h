// Generator: batched generation with continuous admission.
//
// Requests run together in one ragged batch: each owns a KV cache slot; a step feeds the next
// token of every running sequence plus the whole prompt of newly admitted ones, so prefill of a
// new request and decode of older ones share a forward pass. Each sequence stops on its own: an
// EOS id, a stop string, max_new_tokens, or the end of the context. Results do not depend on the
// batch composition (sampling randomness is keyed by request index and step).
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
#include "runtime/tokenizer.h"

namespace tessera {

struct GenerationRequest {
  std::vector<int32_t> prompt_ids;  // including BOS when the model expects it; not empty
  int32_t max_new_tokens = 16;
  SamplingParams sampling;
  std::vector<std::string> stop;  // stop strings (need a tokenizer); the match is cut from text
  bool ignore_eos = false;
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
};

struct GeneratorOptions {
  int32_t max_batch = 16;   // sequences resident at once (KV cache slots)
  int32_t max_seq_len = 0;  // KV cache length per slot; 0: enough for the longest request,
                            // capped at max_position_embeddings
};

// Called with (request index, new text) as text becomes final; only with a tokenizer.
using TextCallback = std::function<void(size_t, absl::string_view)>;

class Generator {
 public:
  // `model` must outlive the generator; `tokenizer` may be null (ids only, no stop strings).
  Generator(LlamaModel* model, const Tokenizer* tokenizer, GeneratorOptions options = {});

  absl::StatusOr<std::vector<GenerationResult>> Generate(
      const std::vector<GenerationRequest>& requests, const TextCallback& on_text = nullptr);

 private:
  absl::Status Validate(const std::vector<GenerationRequest>& requests) const;

  LlamaModel* model_;
  const Tokenizer* tokenizer_;
  GeneratorOptions options_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_GENERATOR_H_
