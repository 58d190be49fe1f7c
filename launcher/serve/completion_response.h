// The JSON of a /v1/completions answer (OpenAI's text_completion object), of its streamed
// chunks, and the log-probabilities block:
//   "logprobs": {"tokens": [...], "token_logprobs": [...], "top_logprobs": [{text: logprob}],
//                "text_offset": [...]}
// With echo the prompt's tokens come first and its first token's entries are null (it has no
// context). Token strings are each token's text as it decodes after the tokens before it;
// text_offset counts Unicode code points from the start of the choice's text (the prompt's,
// with echo). A top_logprobs dict keeps the most likely token of each distinct text.
#ifndef TESSERA_LAUNCHER_SERVE_COMPLETION_RESPONSE_H_
#define TESSERA_LAUNCHER_SERVE_COMPLETION_RESPONSE_H_

#include <string>
#include <vector>

#include "launcher/serve/completion_request.h"
#include "launcher/serve/serve_job.h"
#include "nlohmann/json.hpp"

namespace tessera::serve {

struct ResponseInfo {
  std::string id;     // "cmpl-N"
  int64_t created = 0;  // Unix seconds
  std::string model;
};

nlohmann::json CompletionJson(const CompletionRequest& request,
                              const std::vector<ChoiceResult>& choices, const Tokenizer& tokenizer,
                              const ResponseInfo& info);

// One server-sent event's data: a text chunk of choice 0, or (text empty and finish_reason set)
// the last chunk.
nlohmann::json StreamChunkJson(const ResponseInfo& info, const std::string& text,
                               const std::string* finish_reason);

// The same chunk as /v1/chat/completions streams it (chat.completion.chunk): the text as
// choices[0].delta.content, the first chunk with the assistant role.
nlohmann::json ChatChunkJson(nlohmann::json chunk, bool first);

nlohmann::json UsageJson(const CompletionRequest& request, const std::vector<ChoiceResult>& choices);

}  // namespace tessera::serve

#endif  // TESSERA_LAUNCHER_SERVE_COMPLETION_RESPONSE_H_
