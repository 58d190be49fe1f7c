#include "launcher/prompts_file.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace tessera {
namespace {

using nlohmann::json;

absl::Status LineError(const std::string& path, int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", what));
}

}  // namespace

absl::StatusOr<std::vector<PromptSpec>> ReadPromptsFile(const std::string& path,
                                                        const GenerationRequest& defaults) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--prompts: cannot open ", path));
  std::vector<PromptSpec> specs;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return LineError(path, number, "not valid JSON");
    if (!j.is_object()) return LineError(path, number, "expected a JSON object");
    PromptSpec spec;
    spec.line = number;
    spec.request = defaults;
    if (!j.contains("prompt") || !j["prompt"].is_string()) {
      return LineError(path, number, "field \"prompt\" (a string) is missing");
    }
    spec.text = j["prompt"].get<std::string>();
    if (j.contains("id")) spec.id = j["id"];
    auto int_field = [&](const char* key, auto* out, int64_t min) -> absl::Status {
      if (!j.contains(key)) return absl::OkStatus();
      if (!j[key].is_number_integer() || j[key].get<int64_t>() < min) {
        return LineError(path, number, absl::StrCat("field \"", key, "\" must be an integer >= ", min));
      }
      *out = j[key].get<std::remove_pointer_t<decltype(out)>>();
      return absl::OkStatus();
    };
    auto float_field = [&](const char* key, float* out) -> absl::Status {
      if (!j.contains(key)) return absl::OkStatus();
      if (!j[key].is_number()) {
        return LineError(path, number, absl::StrCat("field \"", key, "\" must be a number"));
      }
      *out = j[key].get<float>();
      return absl::OkStatus();
    };
    for (absl::Status s : {int_field("max_new_tokens", &spec.request.max_new_tokens, 1),
                           float_field("temperature", &spec.request.sampling.temperature),
                           int_field("top_k", &spec.request.sampling.top_k, 0),
                           float_field("top_p", &spec.request.sampling.top_p),
                           int_field("seed", &spec.request.sampling.seed, 0)}) {
      if (!s.ok()) return s;
    }
    if (absl::Status s = ValidateSamplingParams(spec.request.sampling); !s.ok()) {
      return LineError(path, number, s.message());
    }
    if (j.contains("stop")) {
      if (!j["stop"].is_array()) return LineError(path, number, "field \"stop\" must be a list of strings");
      spec.request.stop.clear();
      for (const json& s : j["stop"]) {
        if (!s.is_string()) return LineError(path, number, "field \"stop\" must be a list of strings");
        spec.request.stop.push_back(s.get<std::string>());
      }
    }
    specs.push_back(std::move(spec));
  }
  if (specs.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no prompts in the file"));
  return specs;
}

}  // namespace tessera
