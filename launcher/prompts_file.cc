#include "launcher/prompts_file.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "kernels/status_macros.h"
#include "runtime/file_io.h"
#include "runtime/json_fields.h"

namespace tessera {
namespace {

using nlohmann::json;

absl::Status LineError(const std::string& path, int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", what));
}

}  // namespace

absl::StatusOr<std::vector<PromptSpec>> ReadPromptsFile(const std::string& path,
                                                        const GenerationRequest& defaults) {
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, "--prompts"));
  std::vector<PromptSpec> specs;
  int number = 0;
  for (const std::string& line : SplitLines(text)) {
    ++number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return LineError(path, number, "not valid JSON");
    if (!j.is_object()) return LineError(path, number, "expected a JSON object");
    const JsonFields f(j, path, number);
    PromptSpec spec;
    spec.line = number;
    spec.request = defaults;
    ASSIGN_OR_RETURN(spec.text, f.String("prompt"));
    if (j.contains("id")) spec.id = j["id"];
    GenerationRequest& r = spec.request;
    SamplingParams& sp = r.sampling;
    ASSIGN_OR_RETURN(r.max_new_tokens,
                     f.Int32("max_new_tokens", 1, JsonFields::kInt32Max, r.max_new_tokens));
    ASSIGN_OR_RETURN(sp.top_k, f.Int32("top_k", 0, JsonFields::kInt32Max, sp.top_k));
    ASSIGN_OR_RETURN(int64_t seed, f.Int("seed", 0, std::numeric_limits<int64_t>::max(),
                                         static_cast<int64_t>(std::min<uint64_t>(
                                             sp.seed, std::numeric_limits<int64_t>::max()))));
    if (f.Has("seed")) sp.seed = static_cast<uint64_t>(seed);
    for (auto [key, out] : {std::pair<const char*, float*>{"temperature", &sp.temperature},
                            {"top_p", &sp.top_p}}) {
      ASSIGN_OR_RETURN(double v, f.Double(key, *out));
      if (!(std::fabs(v) <= std::numeric_limits<float>::max())) {
        return f.Error(key, absl::StrCat("must be a finite number, got ", v));
      }
      *out = static_cast<float>(v);
    }
    if (absl::Status s = ValidateSamplingParams(sp); !s.ok()) {
      return LineError(path, number, s.message());
    }
    if (f.Has("stop")) {
      ASSIGN_OR_RETURN(r.stop, f.StringList("stop"));
    }
    specs.push_back(std::move(spec));
  }
  if (specs.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no prompts in the file"));
  return specs;
}

}  // namespace tessera
