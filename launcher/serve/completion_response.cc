#include "launcher/serve/completion_response.h"

#include <algorithm>

namespace tessera::serve {
namespace {

using nlohmann::json;

int64_t CodePoints(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// The text of ids[k] as it decodes after the (up to 8) tokens before it.
std::string PieceText(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, size_t k) {
  const size_t from = k >= 8 ? k - 8 : 0;
  return tokenizer.DecodeAfter(absl::MakeConstSpan(ids.data() + from, k - from),
                               absl::MakeConstSpan(ids.data() + k, 1));
}

json TopJson(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, size_t k,
             const ScoredToken& s) {
  json top = json::object();
  std::vector<int32_t> context(ids.begin() + (k >= 8 ? k - 8 : 0), ids.begin() + k);
  for (const IdLogprob& alt : s.top) {
    std::vector<int32_t> one = context;
    one.push_back(alt.id);
    const std::string text = PieceText(tokenizer, one, one.size() - 1);
    if (!top.contains(text)) top[text] = alt.logprob;
  }
  return top;
}

json LogprobsJson(const CompletionRequest& r, const CompletionPrompt& prompt,
                  const ChoiceResult& c, const Tokenizer& tokenizer) {
  std::vector<int32_t> ids = prompt.ids;
  ids.insert(ids.end(), c.token_ids.begin(), c.token_ids.end());
  const size_t first = r.echo ? 0 : prompt.ids.size();
  json tokens = json::array(), values = json::array(), tops = json::array(),
       offsets = json::array();
  int64_t offset = r.echo ? 0 : CodePoints(prompt.text);
  for (size_t k = first; k < ids.size(); ++k) {
    const std::string text = PieceText(tokenizer, ids, k);
    tokens.push_back(text);
    offsets.push_back(offset);
    offset += CodePoints(text);
    const ScoredToken* s = nullptr;
    if (k >= prompt.ids.size()) {
      const size_t g = k - prompt.ids.size();
      if (g < c.generated_scores.size()) s = &c.generated_scores[g];
    } else if (k >= 1 && k - 1 < c.prompt_scores.size()) {
      s = &c.prompt_scores[k - 1];
    }
    if (s == nullptr) {
      values.push_back(nullptr);
      tops.push_back(nullptr);
    } else {
      values.push_back(s->logprob);
      tops.push_back(TopJson(tokenizer, ids, k, *s));
    }
  }
  return {{"tokens", tokens},
          {"token_logprobs", values},
          {"top_logprobs", tops},
          {"text_offset", offsets}};
}

}  // namespace

json UsageJson(const CompletionRequest& request, const std::vector<ChoiceResult>& choices) {
  int64_t prompt = 0, completion = 0;
  for (const CompletionPrompt& p : request.prompts) prompt += static_cast<int64_t>(p.ids.size());
  for (const ChoiceResult& c : choices) completion += static_cast<int64_t>(c.token_ids.size());
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion}};
}

json CompletionJson(const CompletionRequest& request, const std::vector<ChoiceResult>& choices,
                    const Tokenizer& tokenizer, const ResponseInfo& info) {
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    const CompletionPrompt& prompt = request.prompts[i];
    json choice = {{"index", i},
                   {"text", request.echo ? prompt.text + c.text : c.text},
                   {"finish_reason", c.finish_reason}};
    choice["logprobs"] =
        request.logprobs >= 0 ? LogprobsJson(request, prompt, c, tokenizer) : json(nullptr);
    list.push_back(std::move(choice));
  }
  return {{"id", info.id},
          {"object", "text_completion"},
          {"created", info.created},
          {"model", info.model},
          {"choices", list},
          {"usage", UsageJson(request, choices)}};
}

json StreamChunkJson(const ResponseInfo& info, const std::string& text,
                     const std::string* finish_reason) {
  json choice = {{"index", 0}, {"text", text}, {"logprobs", nullptr}};
  choice["finish_reason"] = finish_reason == nullptr ? json(nullptr) : json(*finish_reason);
  return {{"id", info.id},
          {"object", "text_completion"},
          {"created", info.created},
          {"model", info.model},
          {"choices", json::array({choice})}};
}

json ChatChunkJson(json chunk, bool first) {
  chunk["object"] = "chat.completion.chunk";
  for (json& c : chunk["choices"]) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!c["text"].get<std::string>().empty()) delta["content"] = c["text"];
    c["delta"] = delta;
    c.erase("text");
    c.erase("logprobs");
  }
  return chunk;
}

}  // namespace tessera::serve
