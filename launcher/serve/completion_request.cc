#include "launcher/serve/completion_request.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace tessera::serve {
namespace {

using nlohmann::json;

const char* TypeOf(const json& v) { return v.type_name(); }

ApiError WrongType(const std::string& field, const char* want, const json& v) {
  return BadRequest(field, absl::StrCat("must be ", want, ", got ", TypeOf(v)));
}

// An integer field within [lo, hi]; false with `error` set otherwise.
bool ReadInt(const json& v, const std::string& field, int64_t lo, int64_t hi, int64_t* out,
             ApiError* error) {
  if (!v.is_number_integer()) {
    *error = WrongType(field, "an integer", v);
    return false;
  }
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi)) {
    *error = BadRequest(field, absl::StrCat("must be at most ", hi, ", got ", v.dump()));
    return false;
  }
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) {
    *error = BadRequest(field, absl::StrCat("must be in [", lo, ", ", hi, "], got ", x));
    return false;
  }
  *out = x;
  return true;
}

bool ReadNumber(const json& v, const std::string& field, double lo, double hi, bool lo_open,
                double* out, ApiError* error) {
  if (!v.is_number()) {
    *error = WrongType(field, "a number", v);
    return false;
  }
  const double x = v.get<double>();
  if (!(lo_open ? x > lo : x >= lo) || !(x <= hi)) {
    *error = BadRequest(field, absl::StrCat("must be in ", lo_open ? "(" : "[", lo, ", ", hi,
                                            "], got ", x));
    return false;
  }
  *out = x;
  return true;
}

bool ReadBool(const json& v, const std::string& field, bool* out, ApiError* error) {
  if (!v.is_boolean()) {
    *error = WrongType(field, "true or false", v);
    return false;
  }
  *out = v.get<bool>();
  return true;
}

bool IsTokenList(const json& v) {
  if (!v.is_array() || v.empty()) return false;
  for (const json& x : v) {
    if (!x.is_number()) return false;
  }
  return true;
}

// A token-id prompt: integers in [0, vocab_size).
bool ReadTokenPrompt(const json& v, const std::string& field, const ServeLimits& limits,
                     CompletionPrompt* out, ApiError* error) {
  for (size_t i = 0; i < v.size(); ++i) {
    int64_t id = 0;
    if (!ReadInt(v[i], absl::StrCat(field, "[", i, "]"), 0, limits.vocab_size - 1, &id, error)) {
      error->message += absl::StrCat(" (token ids of a vocabulary of ", limits.vocab_size, ")");
      return false;
    }
    out->ids.push_back(static_cast<int32_t>(id));
  }
  return true;
}

bool ReadPrompts(const json& v, const ServeLimits& limits, const Tokenizer& tokenizer,
                 std::vector<CompletionPrompt>* out, ApiError* error) {
  auto text_prompt = [&](const json& s, const std::string& field) {
    CompletionPrompt p;
    p.text = s.get<std::string>();
    absl::StatusOr<std::vector<int32_t>> ids =
        EncodeWithSpecialTokens(tokenizer, limits, p.text, /*add_bos=*/true);
    if (!ids.ok()) {
      *error = BadRequest(field, std::string(ids.status().message()));
      return false;
    }
    p.ids = *std::move(ids);
    out->push_back(std::move(p));
    return true;
  };
  if (v.is_string()) return text_prompt(v, "prompt");
  if (!v.is_array() || v.empty()) {
    *error = BadRequest("prompt", absl::StrCat("must be a string, a list of strings, a list of "
                                               "token ids or a list of token-id lists, got ",
                                               v.is_array() ? "an empty list" : TypeOf(v)));
    return false;
  }
  if (IsTokenList(v)) {
    CompletionPrompt p;
    if (!ReadTokenPrompt(v, "prompt", limits, &p, error)) return false;
    out->push_back(std::move(p));
    return true;
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string field = absl::StrCat("prompt[", i, "]");
    if (v[i].is_string()) {
      if (!text_prompt(v[i], field)) return false;
    } else if (IsTokenList(v[i])) {
      CompletionPrompt p;
      if (!ReadTokenPrompt(v[i], field, limits, &p, error)) return false;
      out->push_back(std::move(p));
    } else {
      *error = BadRequest(field, absl::StrCat("must be a string or a non-empty list of token "
                                              "ids (all prompts of one form), got ",
                                              v[i].is_array() ? "another list" : TypeOf(v[i])));
      return false;
    }
  }
  return true;
}

bool ReadStop(const json& v, std::vector<std::string>* out, ApiError* error) {
  if (v.is_null()) return true;
  if (v.is_string()) {
    if (!v.get<std::string>().empty()) out->push_back(v.get<std::string>());
    return true;
  }
  if (!v.is_array()) {
    *error = WrongType("stop", "a string or a list of strings", v);
    return false;
  }
  if (v.size() > kMaxStops) {
    *error = BadRequest("stop", absl::StrCat("at most ", kMaxStops, " strings, got ", v.size()));
    return false;
  }
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) {
      *error = WrongType(absl::StrCat("stop[", i, "]"), "a string", v[i]);
      return false;
    }
    if (!v[i].get<std::string>().empty()) out->push_back(v[i].get<std::string>());
  }
  return true;
}

// Fields accepted only at the value that changes nothing.
bool CheckNeutral(const std::string& key, const json& v, ApiError* error) {
  bool neutral = v.is_null();
  if (key == "n" || key == "best_of") neutral = neutral || (v.is_number_integer() && v == 1);
  if (key == "presence_penalty" || key == "frequency_penalty") {
    neutral = neutral || (v.is_number() && v.get<double>() == 0.0);
  }
  if (key == "logit_bias") neutral = neutral || (v.is_object() && v.empty());
  if (!neutral) {
    *error = BadRequest(key, absl::StrCat("only ", key == "logit_bias" ? "{}" : key == "suffix" ? "null"
                                               : (key == "n" || key == "best_of") ? "1" : "0",
                                          " is supported, got ", v.dump()));
  }
  return neutral;
}

}  // namespace

bool CompletionRequest::one_pass() const {
  return max_tokens == 1 && sampling.temperature == 0.0f;
}

std::variant<json, ApiError> ParseJsonObject(absl::string_view body) {
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::parse_error& e) {
    const std::string what = e.what();
    return BadRequest("", absl::StrCat(what.find("UTF-8") != std::string::npos
                                           ? "the body is not valid UTF-8 JSON: "
                                           : "the body is not valid JSON: ",
                                       what));
  }
  if (!j.is_object()) {
    return BadRequest("", absl::StrCat("the body must be a JSON object, got ", j.type_name()));
  }
  return j;
}

absl::StatusOr<std::vector<int32_t>> EncodeWithSpecialTokens(const Tokenizer& tokenizer,
                                                             const ServeLimits& limits,
                                                             absl::string_view text, bool add_bos) {
  std::vector<int32_t> ids;
  if (add_bos) ids.push_back(limits.bos_id);
  const std::pair<absl::string_view, int32_t> specials[] = {{"<s>", limits.bos_id},
                                                            {"</s>", limits.eos_id}};
  while (!text.empty()) {
    size_t at = absl::string_view::npos, len = 0;
    int32_t id = 0;
    for (const auto& [piece, piece_id] : specials) {
      const size_t p = text.find(piece);
      if (p < at) {
        at = p;
        len = piece.size();
        id = piece_id;
      }
    }
    const absl::string_view plain = text.substr(0, at);
    if (!plain.empty()) {
      absl::StatusOr<std::vector<int32_t>> part = tokenizer.Encode(plain);
      if (!part.ok()) return part.status();
      ids.insert(ids.end(), part->begin(), part->end());
    }
    if (at == absl::string_view::npos) break;
    ids.push_back(id);
    text.remove_prefix(at + len);
  }
  return ids;
}

std::variant<CompletionRequest, ApiError> ParseCompletionRequest(absl::string_view body,
                                                                 const ServeLimits& limits,
                                                                 const Tokenizer& tokenizer) {
  std::variant<json, ApiError> parsed = ParseJsonObject(body);
  if (auto* e = std::get_if<ApiError>(&parsed)) return *e;
  const json& j = std::get<json>(parsed);
  CompletionRequest r;
  r.sampling.temperature = 1.0f;  // OpenAI's default
  ApiError error;
  bool has_prompt = false;
  for (const auto& [key, v] : j.items()) {
    int64_t i = 0;
    double x = 0;
    bool ok = true;
    if (key == "model") {
      if (!v.is_null() && !v.is_string()) {
        ok = false;
        error = WrongType("model", "a string", v);
      } else if (v.is_string() && v.get<std::string>() != limits.model_name) {
        ok = false;
        error = BadRequest("model", absl::StrCat("the model `", v.get<std::string>(),
                                                 "` is not served here; this server serves `",
                                                 limits.model_name, "` (GET /v1/models)"));
        error.http_status = 404;
        error.type = "model_not_found";
      }
    } else if (key == "prompt") {
      has_prompt = true;
      ok = ReadPrompts(v, limits, tokenizer, &r.prompts, &error);
    } else if (key == "max_tokens") {
      if (!v.is_null()) {
        ok = ReadInt(v, key, 0, std::numeric_limits<int32_t>::max(), &i, &error);
        r.max_tokens = static_cast<int32_t>(i);
      }
    } else if (key == "echo") {
      ok = v.is_null() || ReadBool(v, key, &r.echo, &error);
    } else if (key == "logprobs") {
      if (!v.is_null()) {
        ok = ReadInt(v, key, 0, kMaxLogprobs, &i, &error);
        r.logprobs = static_cast<int32_t>(i);
      }
    } else if (key == "temperature") {
      if (!v.is_null()) {
        ok = ReadNumber(v, key, 0.0, 1e6, false, &x, &error);
        r.sampling.temperature = static_cast<float>(x);
      }
    } else if (key == "top_p") {
      if (!v.is_null()) {
        ok = ReadNumber(v, key, 0.0, 1.0, true, &x, &error);
        r.sampling.top_p = static_cast<float>(x);
      }
    } else if (key == "top_k") {
      if (!v.is_null()) {
        ok = ReadInt(v, key, -1, std::numeric_limits<int32_t>::max(), &i, &error);
        r.sampling.top_k = i < 0 ? 0 : static_cast<int32_t>(i);
      }
    } else if (key == "seed") {
      if (!v.is_null()) {
        ok = ReadInt(v, key, std::numeric_limits<int64_t>::min(),
                     std::numeric_limits<int64_t>::max(), &i, &error);
        r.sampling.seed = static_cast<uint64_t>(i);
      }
    } else if (key == "stop") {
      ok = ReadStop(v, &r.stop, &error);
    } else if (key == "stream") {
      ok = v.is_null() || ReadBool(v, key, &r.stream, &error);
    } else if (key == "stream_options") {
      if (!v.is_null()) {
        if (!v.is_object()) {
          ok = false;
          error = WrongType(key, "an object", v);
        }
        for (const auto& [k, o] : v.items()) {
          if (!ok) break;
          if (k != "include_usage") {
            ok = false;
            error = BadRequest("stream_options." + k, "unknown field (only include_usage)");
          } else {
            ok = ReadBool(o, "stream_options.include_usage", &r.stream_usage, &error);
          }
        }
      }
    } else if (key == "ignore_eos") {
      ok = v.is_null() || ReadBool(v, key, &r.ignore_eos, &error);
    } else if (key == "user") {
      if (!v.is_null() && !v.is_string()) {
        ok = false;
        error = WrongType(key, "a string", v);
      }
    } else if (key == "n" || key == "best_of" || key == "presence_penalty" ||
               key == "frequency_penalty" || key == "logit_bias" || key == "suffix") {
      ok = CheckNeutral(key, v, &error);
    } else {
      ok = false;
      error = BadRequest(key, "unknown field; /v1/completions takes model, prompt, max_tokens, "
                              "echo, logprobs, temperature, top_p, top_k, seed, stop, n, stream, "
                              "stream_options, ignore_eos, user");
    }
    if (!ok) return error;
  }
  if (!has_prompt) return BadRequest("prompt", "is required");
  if (!r.stream && j.contains("stream_options") && !j["stream_options"].is_null()) {
    return BadRequest("stream_options", "is only allowed with \"stream\": true");
  }
  if (r.stream && r.prompts.size() != 1) {
    return BadRequest("stream", absl::StrCat("streams one prompt; got ", r.prompts.size()));
  }
  if (r.logprobs >= 0 && !limits.method.empty()) {
    ApiError e = BadRequest("logprobs", absl::StrCat("log-probabilities through the method ",
                                                     limits.method, " are not built yet; "
                                                     "serve without --method to score"));
    e.http_status = 501;
    e.type = "not_implemented";
    return e;
  }
  if (r.echo && r.stream) return BadRequest("echo", "is not supported with stream");
  const int64_t room = limits.context;
  for (size_t p = 0; p < r.prompts.size(); ++p) {
    const std::string field = r.prompts.size() == 1 ? "prompt" : absl::StrCat("prompt[", p, "]");
    const int64_t n = static_cast<int64_t>(r.prompts[p].ids.size());
    if (n > room) {
      return BadRequest(field, absl::StrCat(n, " tokens exceed the context of ", room,
                                            " tokens; shorten the prompt"));
    }
    // The last generated token needs no room of its own (its K/V are never read).
    if (n + r.max_tokens > room + 1) {
      return BadRequest("max_tokens", absl::StrCat(r.max_tokens, " new tokens after a prompt of ",
                                                   n, " tokens exceed the context of ", room,
                                                   " tokens; at most ", room + 1 - n));
    }
    if (r.max_tokens > 0 && n == room && !(r.one_pass() && limits.method.empty())) {
      return BadRequest(field, absl::StrCat("a prompt of ", n, " tokens fills the context; only "
                                            "greedy max_tokens 1 can follow it (shorten the "
                                            "prompt)"));
    }
    if (r.echo || r.logprobs >= 0) {
      r.prompts[p].text = r.prompts[p].text.empty() ? tokenizer.Decode(r.prompts[p].ids)
                                                    : r.prompts[p].text;
    }
  }
  return r;
}

}  // namespace tessera::serve
