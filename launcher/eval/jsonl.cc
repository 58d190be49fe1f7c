#include "launcher/eval/jsonl.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace tessera {

absl::Status RecordError(const std::string& path, const JsonlRecord& r, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", r.line, ": ", what));
}

absl::StatusOr<std::vector<JsonlRecord>> ReadJsonl(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open dataset ", path));
  std::vector<JsonlRecord> records;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
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

absl::StatusOr<std::string> StringField(const std::string& path, const JsonlRecord& r,
                                        const char* name) {
  auto it = r.value.find(name);
  if (it == r.value.end()) return RecordError(path, r, absl::StrCat("field \"", name, "\" is missing"));
  if (!it->is_string()) return RecordError(path, r, absl::StrCat("field \"", name, "\" must be a string"));
  return it->get<std::string>();
}

absl::StatusOr<int64_t> IntField(const std::string& path, const JsonlRecord& r, const char* name) {
  auto it = r.value.find(name);
  if (it == r.value.end()) return RecordError(path, r, absl::StrCat("field \"", name, "\" is missing"));
  if (!it->is_number_integer()) {
    return RecordError(path, r, absl::StrCat("field \"", name, "\" must be an integer"));
  }
  return it->get<int64_t>();
}

absl::StatusOr<std::vector<std::string>> StringListField(const std::string& path,
                                                         const JsonlRecord& r, const char* name) {
  auto it = r.value.find(name);
  if (it == r.value.end()) return RecordError(path, r, absl::StrCat("field \"", name, "\" is missing"));
  if (!it->is_array()) {
    return RecordError(path, r, absl::StrCat("field \"", name, "\" must be a list of strings"));
  }
  std::vector<std::string> out;
  for (const auto& v : *it) {
    if (!v.is_string()) {
      return RecordError(path, r, absl::StrCat("field \"", name, "\" must be a list of strings"));
    }
    out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace tessera
