#include "launcher/serve/http_api.h"

#include <httplib.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "launcher/serve/completion_response.h"

namespace tessera::serve {
namespace {

using nlohmann::json;

constexpr char kJson[] = "application/json";

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(Dump(body), kJson);
}

void ReplyError(ServeState& state, httplib::Response& res, const ApiError& e) {
  state.metrics->Failed(e.http_status);
  Reply(res, e.http_status, e.Body());
}

// Queues a parsed completion and answers it: a JSON object, or server-sent events when
// streaming. `chat` answers as a chat.completion (chat.completion.chunk events when streaming).
void RunCompletion(ServeState& state, CompletionRequest request, bool chat,
                   httplib::Response& res) {
  const int64_t n = state.next_id.fetch_add(1);
  ResponseInfo info{absl::StrCat(chat ? "chatcmpl-" : "cmpl-", n), absl::ToUnixSeconds(absl::Now()),
                    state.limits.model_name};
  auto job = std::make_shared<ServeJob>(std::move(request));
  if (absl::Status queued = state.queue->Submit(job); !queued.ok()) {
    ReplyError(state, res, FromStatus(queued));
    return;
  }
  if (!job->request().stream) {
    job->WaitDone();
    if (!job->status().ok()) {
      ReplyError(state, res, FromStatus(job->status()));
      return;
    }
    json body = CompletionJson(job->request(), job->choices(), *state.tokenizer, info);
    if (chat) {
      body["object"] = "chat.completion";
      for (json& c : body["choices"]) {
        c["message"] = {{"role", "assistant"}, {"content", c["text"]}};
        c.erase("text");
        c.erase("logprobs");
      }
    }
    Reply(res, 200, body);
    return;
  }
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream", [&state, job, info, chat](size_t, httplib::DataSink& sink) {
        bool first = true;
        auto event = [&](const json& data) {
          const bool chunk = data.contains("object");  // not an error body
          const json sent = chat && chunk ? ChatChunkJson(data, first) : data;
          if (chunk) first = false;
          const std::string line = "data: " + Dump(sent) + "\n\n";
          return sink.write(line.data(), line.size());
        };
        bool done = false;
        while (!done) {
          const std::string text = job->WaitText(absl::Milliseconds(100), &done);
          if (!sink.is_writable()) return false;  // the client left; the job still finishes
          if (!text.empty() && !event(StreamChunkJson(info, text, nullptr))) return false;
        }
        if (!job->status().ok()) {
          const ApiError e = FromStatus(job->status());
          state.metrics->Failed(e.http_status);
          event(e.Body());
        } else {
          event(StreamChunkJson(info, "", &job->choices()[0].finish_reason));
          if (job->request().stream_usage) {
            json usage = StreamChunkJson(info, "", nullptr);
            usage["choices"] = json::array();
            usage["usage"] = UsageJson(job->request(), job->choices());
            event(usage);
          }
        }
        const std::string end = "data: [DONE]\n\n";
        sink.write(end.data(), end.size());
        sink.done();
        return true;
      });
}

void Completions(ServeState& state, const httplib::Request& req, httplib::Response& res) {
  auto parsed = ParseCompletionRequest(req.body, state.limits, *state.tokenizer);
  if (auto* e = std::get_if<ApiError>(&parsed)) return ReplyError(state, res, *e);
  RunCompletion(state, std::get<CompletionRequest>(std::move(parsed)), /*chat=*/false, res);
}

void ChatCompletions(ServeState& state, const httplib::Request& req, httplib::Response& res) {
  auto body = ParseJsonObject(req.body);
  if (auto* e = std::get_if<ApiError>(&body)) return ReplyError(state, res, *e);
  json& j = std::get<json>(body);
  if (!state.chat_template) {
    ApiError e = BadRequest("", "this server has no chat template; start it with "
                                "--chat-template llama-2 for a Llama-2 / CodeLlama chat model");
    return ReplyError(state, res, e);
  }
  if (!j.contains("messages")) return ReplyError(state, res, BadRequest("messages", "is required"));
  auto prompt = Llama2ChatPrompt(j["messages"]);
  if (auto* e = std::get_if<ApiError>(&prompt)) return ReplyError(state, res, *e);
  absl::StatusOr<std::vector<int32_t>> ids = EncodeWithSpecialTokens(
      *state.tokenizer, state.limits, std::get<std::string>(prompt), /*add_bos=*/false);
  if (!ids.ok()) return ReplyError(state, res, BadRequest("messages", std::string(ids.status().message())));
  json completion = json::object();
  for (auto& [key, v] : j.items()) {
    if (key == "messages") continue;
    if (key == "max_completion_tokens") {
      completion["max_tokens"] = v;
    } else if (key == "logprobs" || key == "top_logprobs" || key == "echo") {
      return ReplyError(state, res, BadRequest(key, "is not supported by /v1/chat/completions "
                                                    "here; use /v1/completions"));
    } else {
      completion[key] = v;
    }
  }
  completion["prompt"] = *ids;
  auto parsed = ParseCompletionRequest(Dump(completion), state.limits, *state.tokenizer);
  if (auto* e = std::get_if<ApiError>(&parsed)) return ReplyError(state, res, *e);
  RunCompletion(state, std::get<CompletionRequest>(std::move(parsed)), /*chat=*/true, res);
}

void Tokenize(ServeState& state, const httplib::Request& req, httplib::Response& res) {
  auto body = ParseJsonObject(req.body);
  if (auto* e = std::get_if<ApiError>(&body)) return ReplyError(state, res, *e);
  const json& j = std::get<json>(body);
  bool add_special = true;
  for (const auto& [key, v] : j.items()) {
    if (key == "model") continue;
    if (key == "add_special_tokens") {
      if (!v.is_boolean()) return ReplyError(state, res, BadRequest(key, "must be true or false"));
      add_special = v.get<bool>();
    } else if (key != "prompt") {
      return ReplyError(state, res, BadRequest(key, "unknown field; /tokenize takes prompt, "
                                                    "add_special_tokens, model"));
    }
  }
  if (!j.contains("prompt") || !j["prompt"].is_string()) {
    return ReplyError(state, res, BadRequest("prompt", "a string is required"));
  }
  absl::StatusOr<std::vector<int32_t>> ids = EncodeWithSpecialTokens(
      *state.tokenizer, state.limits, j["prompt"].get<std::string>(), add_special);
  if (!ids.ok()) return ReplyError(state, res, BadRequest("prompt", std::string(ids.status().message())));
  Reply(res, 200, {{"tokens", *ids}, {"count", ids->size()}, {"max_model_len", state.limits.context}});
}

void Detokenize(ServeState& state, const httplib::Request& req, httplib::Response& res) {
  auto body = ParseJsonObject(req.body);
  if (auto* e = std::get_if<ApiError>(&body)) return ReplyError(state, res, *e);
  const json& j = std::get<json>(body);
  for (const auto& [key, v] : j.items()) {
    if (key != "tokens" && key != "model") {
      return ReplyError(state, res, BadRequest(key, "unknown field; /detokenize takes tokens, model"));
    }
  }
  if (!j.contains("tokens") || !j["tokens"].is_array()) {
    return ReplyError(state, res, BadRequest("tokens", "a list of token ids is required"));
  }
  std::vector<int32_t> ids;
  for (size_t i = 0; i < j["tokens"].size(); ++i) {
    const json& t = j["tokens"][i];
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= state.limits.vocab_size) {
      return ReplyError(state, res,
                        BadRequest(absl::StrCat("tokens[", i, "]"),
                                   absl::StrCat("must be a token id in [0, ",
                                                state.limits.vocab_size, "), got ", t.dump())));
    }
    ids.push_back(t.get<int32_t>());
  }
  Reply(res, 200, {{"prompt", state.tokenizer->Decode(ids)}});
}

}  // namespace

std::variant<std::string, ApiError> Llama2ChatPrompt(const json& messages) {
  if (!messages.is_array() || messages.empty()) {
    return BadRequest("messages", "must be a non-empty list of {\"role\", \"content\"}");
  }
  std::string system, out;
  size_t first = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string()) {
      return BadRequest(field, "must be {\"role\": string, \"content\": string}");
    }
    const std::string role = m["role"].get<std::string>();
    if (role == "system") {
      if (i != 0) return BadRequest(field, "a system message may only come first");
      system = m["content"].get<std::string>();
      first = 1;
      continue;
    }
    const bool want_user = (i - first) % 2 == 0;
    if (role != (want_user ? "user" : "assistant")) {
      return BadRequest(field, absl::StrCat("roles must alternate user/assistant after an optional "
                                            "system message; expected ",
                                            want_user ? "user" : "assistant", ", got ", role));
    }
    std::string content = m["content"].get<std::string>();
    if (i == first && first == 1) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
    const std::string trimmed(absl::StripAsciiWhitespace(content));
    out += want_user ? "<s>[INST] " + trimmed + " [/INST]" : " " + trimmed + " </s>";
  }
  if ((messages.size() - first) % 2 == 0) {
    return BadRequest("messages", "the last message must be the user's");
  }
  return out;
}

void RegisterRoutes(httplib::Server& server, ServeState& state) {
  server.Post("/v1/completions", [&state](const httplib::Request& req, httplib::Response& res) {
    Completions(state, req, res);
  });
  server.Post("/v1/chat/completions", [&state](const httplib::Request& req, httplib::Response& res) {
    ChatCompletions(state, req, res);
  });
  server.Post("/tokenize", [&state](const httplib::Request& req, httplib::Response& res) {
    Tokenize(state, req, res);
  });
  server.Post("/detokenize", [&state](const httplib::Request& req, httplib::Response& res) {
    Detokenize(state, req, res);
  });
  server.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200, {{"status", "ok"}});
  });
  server.Get("/v1/models", [&state](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200,
          {{"object", "list"},
           {"data", json::array({{{"id", state.limits.model_name},
                                  {"object", "model"},
                                  {"created", 0},
                                  {"owned_by", "tessera"},
                                  {"max_model_len", state.limits.context}}})}});
  });
  server.Get("/tokenizer_info", [&state](const httplib::Request&, httplib::Response& res) {
    Reply(res, 200,
          {{"tokenizer_class", "LlamaTokenizer"},
           {"bos_token", "<s>"},
           {"eos_token", "</s>"},
           {"pad_token", nullptr},
           {"unk_token", "<unk>"},
           {"add_bos_token", true},
           {"model_max_length", state.limits.context}});
  });
  server.Get("/metrics", [&state](const httplib::Request&, httplib::Response& res) {
    res.set_content(state.metrics->Text(state.queue->waiting(), state.limits.model_name),
                    "text/plain; version=0.0.4");
  });
  server.set_error_handler([&state](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;  // a handler's own error
    ApiError e;
    e.http_status = res.status;
    e.type = res.status == 404 ? "not_found" : "invalid_request_error";
    e.message = res.status == 404
                    ? absl::StrCat("no route ", req.method, " ", req.path,
                                   "; see GET /v1/models, POST /v1/completions")
                    : absl::StrCat("HTTP ", res.status, " for ", req.method, " ", req.path);
    state.metrics->Failed(e.http_status);
    res.set_content(Dump(e.Body()), kJson);
  });
  server.set_exception_handler(
      [&state](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        ApiError e;
        e.http_status = 500;
        e.type = "internal_error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& x) {
          e.message = x.what();
        } catch (...) {
          e.message = "unknown error";
        }
        state.metrics->Failed(500);
        Reply(res, 500, e.Body());
      });
}

}  // namespace tessera::serve
