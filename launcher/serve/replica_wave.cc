#include "launcher/serve/replica_wave.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "runtime/scorer.h"

namespace tessera::serve {
namespace {

using nlohmann::json;

struct Ref {
  size_t request, prompt;
};

// Keeps the `n` best alternatives of scores made with a larger top_n.
void KeepTop(std::vector<ScoredToken>* scores, int n) {
  for (ScoredToken& s : *scores) {
    if (static_cast<int>(s.top.size()) > n) s.top.resize(std::max(n, 0));
  }
}

// The single token of a one-pass request: EOS and stop strings end it as Generate would.
void FinishOneToken(const CompletionRequest& r, const CompletionPrompt& prompt, int32_t id,
                    const Tokenizer& tokenizer, const std::vector<int32_t>& eos_ids,
                    ChoiceResult* c) {
  c->token_ids = {id};
  if (std::find(eos_ids.begin(), eos_ids.end(), id) != eos_ids.end() && !r.ignore_eos) {
    c->finish_reason = "stop";
    return;
  }
  c->text = tokenizer.DecodeAfter(prompt.ids, c->token_ids);
  for (const std::string& stop : r.stop) {
    const size_t at = c->text.find(stop);
    if (at != std::string::npos) {
      c->text.resize(at);
      c->finish_reason = "stop";
    }
  }
}

GenerationRequest ToGeneration(const CompletionRequest& r, size_t p) {
  GenerationRequest g;
  g.prompt_ids = r.prompts[p].ids;
  g.id = p;  // the same prompt and seed give the same text, whatever else runs
  g.max_new_tokens = r.max_tokens;
  g.sampling = r.sampling;
  g.stop = r.stop;
  g.ignore_eos = r.ignore_eos;
  return g;
}

}  // namespace

bool RunsGeneration(const CompletionRequest& r, const WaveSettings& settings) {
  return r.max_tokens > 0 && !(r.one_pass() && !settings.method);
}

absl::StatusOr<std::vector<std::vector<ChoiceResult>>> RunWave(
    ModelBundle& bundle, const std::vector<const CompletionRequest*>& wave,
    const WaveSettings& settings, const WaveText& on_text, const WaveFeed* feed) {
  std::vector<const CompletionRequest*> requests = wave;  // grows with admitted requests
  LlamaModel& model = *bundle.model;
  const Tokenizer& tokenizer = *bundle.tokenizer;
  const std::vector<int32_t>& eos_ids = model.config().eos_token_ids;
  std::vector<std::vector<ChoiceResult>> out(requests.size());
  Scorer scorer(&model, settings.generator.max_batch, /*max_tokens_per_pass=*/2048,
                settings.generator.max_seq_len);

  // 1. Scoring passes: echo-only requests and greedy single tokens.
  std::vector<TokenScoreRequest> scoring;
  std::vector<Ref> scored;
  std::vector<GenerationRequest> generating;
  std::vector<Ref> generated;
  int top_n = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const CompletionRequest& r = *requests[i];
    out[i].resize(r.prompts.size());
    const bool prompt_logprobs = r.echo && r.logprobs >= 0;
    for (size_t p = 0; p < r.prompts.size(); ++p) {
      const std::vector<int32_t>& ids = r.prompts[p].ids;
      if (r.max_tokens == 0) {
        if (!prompt_logprobs) continue;
        scoring.push_back({ids, /*score_next=*/false, /*score_prompt=*/true});
      } else if (r.one_pass() && !settings.method) {
        scoring.push_back({ids, /*score_next=*/true, /*score_prompt=*/prompt_logprobs});
      } else {
        generating.push_back(ToGeneration(r, p));
        generated.push_back({i, p});
        continue;
      }
      scored.push_back({i, p});
      top_n = std::max(top_n, r.logprobs);
    }
  }
  // Runs `scoring` and hands each scored prompt's tokens (cut to its request's top N) to `take`.
  using Take = std::function<void(size_t, const CompletionRequest&, ChoiceResult&,
                                  std::vector<ScoredToken>&)>;
  auto score = [&](const Take& take) -> absl::Status {
    if (scoring.empty()) return absl::OkStatus();
    ASSIGN_OR_RETURN(auto scores, scorer.ScoreTokens(scoring, top_n));
    for (size_t k = 0; k < scored.size(); ++k) {
      const CompletionRequest& r = *requests[scored[k].request];
      KeepTop(&scores[k], r.logprobs);
      take(k, r, out[scored[k].request][scored[k].prompt], scores[k]);
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(score([&](size_t k, const CompletionRequest& r, ChoiceResult& c,
                            std::vector<ScoredToken>& s) {
    if (scoring[k].score_next) {
      const ScoredToken next = s.back();
      s.pop_back();
      FinishOneToken(r, r.prompts[scored[k].prompt], next.id, tokenizer, eos_ids, &c);
      if (r.logprobs >= 0) c.generated_scores = {next};
      if (on_text && !c.text.empty()) on_text(scored[k].request, c.text);
    }
    if (r.echo && r.logprobs >= 0) c.prompt_scores = std::move(s);
  }));

  // 2. Generation, with the requests the feed admits while it runs.
  std::vector<size_t> unfinished(requests.size(), 0);  // prompts still generating, per request
  for (const Ref& g : generated) ++unfinished[g.request];
  // Requests complete after the scoring pass are answered now, not after the generation.
  if (feed != nullptr && feed->done) {
    for (size_t i = 0; i < requests.size(); ++i) {
      if (unfinished[i] == 0) feed->done(i, out[i]);
    }
  }
  auto take = [&](size_t k, const GenerationResult& result) {
    ChoiceResult& c = out[generated[k].request][generated[k].prompt];
    c.token_ids = result.token_ids;
    c.text = result.text;
    c.finish_reason = result.finish_reason == FinishReason::kLength ? "length" : "stop";
  };
  GenerationFeed generation_feed;
  if (feed != nullptr && feed->admit) {
    generation_feed.admit = [&](int32_t free_slots)
        -> absl::StatusOr<std::vector<GenerationRequest>> {
      ASSIGN_OR_RETURN(std::vector<const CompletionRequest*> more, feed->admit(free_slots));
      std::vector<GenerationRequest> admitted;
      for (const CompletionRequest* r : more) {
        if (!RunsGeneration(*r, settings)) {
          return absl::InternalError("an admitted request does not run generation");
        }
        const size_t i = requests.size();
        requests.push_back(r);
        out.emplace_back(r->prompts.size());
        unfinished.push_back(r->prompts.size());
        for (size_t p = 0; p < r->prompts.size(); ++p) {
          admitted.push_back(ToGeneration(*r, p));
          generated.push_back({i, p});
        }
      }
      return admitted;
    };
    generation_feed.finished = [&](size_t k, const GenerationResult& result) {
      take(k, result);
      const size_t i = generated[k].request;
      if (--unfinished[i] == 0 && requests[i]->logprobs < 0 && feed->done) feed->done(i, out[i]);
    };
  }
  if (!generating.empty()) {  // a wave without generation admits nothing (all ranks alike)
    Generator generator(&model, &tokenizer, settings.generator);
    TextCallback text = nullptr;
    if (on_text) {
      text = [&](size_t k, absl::string_view t) { on_text(generated[k].request, t); };
    }
    ASSIGN_OR_RETURN(std::vector<GenerationResult> results,
                     generator.Generate(generating, text, &generation_feed));
    for (size_t k = 0; k < results.size(); ++k) take(k, results[k]);
  }

  // 3. Log-probabilities of generated tokens: prompt and completion scored in one pass.
  scoring.clear();
  scored.clear();
  top_n = 0;
  for (const Ref& g : generated) {
    const CompletionRequest& r = *requests[g.request];
    if (r.logprobs < 0) continue;
    std::vector<int32_t> all = r.prompts[g.prompt].ids;
    const std::vector<int32_t>& gen = out[g.request][g.prompt].token_ids;
    all.insert(all.end(), gen.begin(), gen.end());
    scoring.push_back({std::move(all), /*score_next=*/false, /*score_prompt=*/true});
    scored.push_back(g);
    top_n = std::max(top_n, r.logprobs);
  }
  RETURN_IF_ERROR(score([&](size_t, const CompletionRequest& r, ChoiceResult& c,
                            std::vector<ScoredToken>& s) {
    const size_t g = c.token_ids.size();
    c.generated_scores.assign(s.end() - g, s.end());
    if (r.echo) c.prompt_scores.assign(s.begin(), s.end() - g);
  }));
  return out;
}

std::string EncodeWaveMessage(WaveKind kind, const std::vector<const CompletionRequest*>& requests) {
  const char* name = kind == WaveKind::kWave    ? "wave"
                     : kind == WaveKind::kAdmit ? "admit"
                     : kind == WaveKind::kIdle  ? "idle"
                                                : "stop";
  json m = {{"kind", name}};
  json list = json::array();
  for (const CompletionRequest* r : requests) {
    json prompts = json::array();
    for (const CompletionPrompt& p : r->prompts) prompts.push_back(p.ids);
    list.push_back({{"prompts", prompts},
                    {"max_tokens", r->max_tokens},
                    {"echo", r->echo},
                    {"logprobs", r->logprobs},
                    {"temperature", r->sampling.temperature},
                    {"top_p", r->sampling.top_p},
                    {"top_k", r->sampling.top_k},
                    {"seed", r->sampling.seed},
                    {"stop", r->stop},
                    {"ignore_eos", r->ignore_eos}});
  }
  m["requests"] = list;
  return m.dump(-1, ' ', false, json::error_handler_t::replace);
}

absl::Status DecodeWaveMessage(const std::string& message, WaveKind* kind,
                               std::vector<CompletionRequest>* requests) {
  const json m = json::parse(message, nullptr, /*allow_exceptions=*/false);
  if (m.is_discarded() || !m.is_object() || !m.contains("kind") || !m["kind"].is_string() ||
      !m.contains("requests") || !m["requests"].is_array()) {
    return absl::DataLossError("a malformed wave message from the replica's leader");
  }
  const std::string k = m["kind"].get<std::string>();
  if (k == "wave") {
    *kind = WaveKind::kWave;
  } else if (k == "admit") {
    *kind = WaveKind::kAdmit;
  } else if (k == "idle") {
    *kind = WaveKind::kIdle;
  } else if (k == "stop") {
    *kind = WaveKind::kStop;
  } else {
    return absl::DataLossError(absl::StrCat("a wave message of unknown kind \"", k, "\""));
  }
  requests->clear();
  try {
    for (const json& j : m["requests"]) {
      CompletionRequest r;
      for (const json& ids : j.at("prompts")) {
        r.prompts.push_back({ids.get<std::vector<int32_t>>(), ""});
      }
      r.max_tokens = j.at("max_tokens").get<int32_t>();
      r.echo = j.at("echo").get<bool>();
      r.logprobs = j.at("logprobs").get<int32_t>();
      r.sampling.temperature = j.at("temperature").get<float>();
      r.sampling.top_p = j.at("top_p").get<float>();
      r.sampling.top_k = j.at("top_k").get<int32_t>();
      r.sampling.seed = j.at("seed").get<uint64_t>();
      r.stop = j.at("stop").get<std::vector<std::string>>();
      r.ignore_eos = j.at("ignore_eos").get<bool>();
      requests->push_back(std::move(r));
    }
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("a malformed wave message from the replica's leader: ",
                                            e.what()));
  }
  return absl::OkStatus();
}

}  // namespace tessera::serve
