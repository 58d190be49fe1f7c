// HttpApi: the routes of `tessera serve` on a cpp-httplib server (Debian's libcpp-httplib),
// run by the leader rank. Handlers parse and check requests, queue them for the engine and wait;
// they never touch the model or a communicator.
//
//   POST /v1/completions      OpenAI completions (completion_request.h), `stream` as SSE
//   POST /v1/chat/completions  messages through the Llama-2 chat template (--chat-template)
//   GET  /v1/models, /health, /metrics (Prometheus text), /tokenizer_info
//   POST /tokenize {"prompt", "add_special_tokens"} -> {"tokens", "count", "max_model_len"}
//   POST /detokenize {"tokens"} -> {"prompt"}
// Errors are OpenAI-style JSON (api_error.h); unknown routes 404, wrong methods 405.
#ifndef TESSERA_LAUNCHER_SERVE_HTTP_API_H_
#define TESSERA_LAUNCHER_SERVE_HTTP_API_H_

#include <atomic>
#include <string>

#include "launcher/serve/completion_request.h"
#include "launcher/serve/metrics.h"
#include "launcher/serve/serve_job.h"

namespace httplib {
class Server;
}

namespace tessera::serve {

struct ServeState {
  ServeLimits limits;
  const Tokenizer* tokenizer = nullptr;
  WorkQueue* queue = nullptr;
  ServeMetrics* metrics = nullptr;
  bool chat_template = false;  // the Llama-2 [INST] template is on
  std::atomic<int64_t> next_id{0};
};

// Installs every route and the error handlers on `server`; `state` must outlive it.
void RegisterRoutes(httplib::Server& server, ServeState& state);

// The Llama-2 / CodeLlama chat prompt of `messages` ([{"role", "content"}], roles system (first
// only), user and assistant alternating, ending with user), as the text /tokenize reads:
// "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...".
std::variant<std::string, ApiError> Llama2ChatPrompt(const nlohmann::json& messages);

}  // namespace tessera::serve

#endif  // TESSERA_LAUNCHER_SERVE_HTTP_API_H_
