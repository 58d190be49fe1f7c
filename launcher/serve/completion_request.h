// The body of POST /v1/completions, parsed and checked against the model before it is queued, so
// that a bad request fails alone and a queued one cannot fail on its input.
//
// Accepted fields (anything else is refused, naming the field):
//   model (the served name or null), prompt (a string, a list of strings, a list of token ids or
//   a list of token-id lists), max_tokens (>= 0, default 16), echo, logprobs (0..20 or null),
//   temperature (>= 0, default 1; 0 is greedy), top_p (0 < p <= 1), top_k (-1 or 0: off), seed,
//   stop (a string or up to 16 strings), n (1), best_of (1), stream, stream_options
//   ({"include_usage"}), ignore_eos, user; presence_penalty and frequency_penalty only at 0,
//   logit_bias only empty, suffix only null.
// Text prompts get BOS; token-id prompts are read as given (lm-evaluation-harness sends its own).
#ifndef TESSERA_LAUNCHER_SERVE_COMPLETION_REQUEST_H_
#define TESSERA_LAUNCHER_SERVE_COMPLETION_REQUEST_H_

#include <string>
#include <variant>
#include <vector>

#include "absl/strings/string_view.h"
#include "launcher/serve/api_error.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

namespace tessera::serve {

// What requests are checked against: fixed when the server starts.
struct ServeLimits {
  std::string model_name;
  int64_t context = 0;     // tokens one sequence may hold (runtime/context_limit.h)
  int32_t vocab_size = 0;
  int32_t bos_id = 1, eos_id = 2;
  std::string method;      // the method running generation steps; empty: the plain runtime
};

struct CompletionPrompt {
  std::vector<int32_t> ids;  // what the model reads
  std::string text;          // the prompt's text (decoded, for token-id prompts)
};

struct CompletionRequest {
  std::vector<CompletionPrompt> prompts;  // one choice each, in order
  int32_t max_tokens = 16;
  bool echo = false;
  int32_t logprobs = -1;  // -1: none; N: token log-probabilities with the top N
  SamplingParams sampling;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool stream = false;
  bool stream_usage = false;  // stream_options.include_usage
  // max_tokens 1, greedy, no method: the token comes from the pass that scores the prompt, so a
  // prompt may fill the whole context (what lm-evaluation-harness's loglikelihood sends).
  bool one_pass() const;
};

constexpr int kMaxLogprobs = 20;
constexpr size_t kMaxStops = 16;

std::variant<CompletionRequest, ApiError> ParseCompletionRequest(absl::string_view body,
                                                                 const ServeLimits& limits,
                                                                 const Tokenizer& tokenizer);

// Text to ids as /tokenize does: the special tokens' text ("<s>", "</s>") becomes their ids,
// the text between them is encoded by SentencePiece; with `add_bos`, BOS first.
absl::StatusOr<std::vector<int32_t>> EncodeWithSpecialTokens(const Tokenizer& tokenizer,
                                                             const ServeLimits& limits,
                                                             absl::string_view text, bool add_bos);

// Parses a JSON body (an object), or the 400 to answer (malformed JSON, invalid UTF-8).
std::variant<nlohmann::json, ApiError> ParseJsonObject(absl::string_view body);

}  // namespace tessera::serve

#endif  // TESSERA_LAUNCHER_SERVE_COMPLETION_REQUEST_H_
