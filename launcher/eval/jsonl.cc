#include "launcher/eval/jsonl.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "kernels/status_macros.h"
#include "runtime/file_io.h"

namespace tessera {

absl::Status RecordError(const std::string& path, const JsonlRecord& r, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", r.line, ": ", what));
}

absl::StatusOr<std::vector<JsonlRecord>> ReadJsonl(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path, "dataset"));
  std::vector<JsonlRecord> records;
  int number = 0;
  for (const std::string& line : SplitLines(text)) {
    ++number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    JsonlRecord r{number, nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false)};
    if (r.value.is_discarded()) return RecordError(path, r, "not valid JSON");
    if (!r.value.is_object()) return RecordError(path, r, "expected a JSON object");
    records.push_back(std::move(r));
  }
  if (records.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": the dataset is empty"));
  }
  return records;
}

JsonFields Fields(const std::string& path, const JsonlRecord& r) {
  return JsonFields(r.value, path, r.line);
}

absl::StatusOr<std::string> StringField(const std::string& path, const JsonlRecord& r,
                                        const char* name) {
  return Fields(path, r).String(name);
}

absl::StatusOr<int64_t> IntField(const std::string& path, const JsonlRecord& r, const char* name,
                                 int64_t lo, int64_t hi) {
  return Fields(path, r).Int(name, lo, hi);
}

absl::StatusOr<std::vector<std::string>> StringListField(const std::string& path,
                                                         const JsonlRecord& r, const char* name) {
  return Fields(path, r).StringList(name);
}

}  // namespace tessera
