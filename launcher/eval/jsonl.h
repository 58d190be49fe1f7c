// Reading JSONL datasets with errors that name the file and line.
#ifndef TESSERA_LAUNCHER_EVAL_JSONL_H_
#define TESSERA_LAUNCHER_EVAL_JSONL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tessera {

struct JsonlRecord {
  int line = 0;  // 1-based
  nlohmann::json value;
};

// Every non-blank line must be a JSON object. An empty dataset is an error.
absl::StatusOr<std::vector<JsonlRecord>> ReadJsonl(const std::string& path);

// The field `name` of a record, with "FILE:LINE: field \"name\" ..." errors.
absl::StatusOr<std::string> StringField(const std::string& path, const JsonlRecord& r,
                                        const char* name);
absl::StatusOr<int64_t> IntField(const std::string& path, const JsonlRecord& r, const char* name);
absl::StatusOr<std::vector<std::string>> StringListField(const std::string& path,
                                                         const JsonlRecord& r, const char* name);
absl::Status RecordError(const std::string& path, const JsonlRecord& r, absl::string_view what);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_EVAL_JSONL_H_
