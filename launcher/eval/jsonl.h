// Reading JSONL datasets with errors that name the file and line.
#ifndef TESSERA_LAUNCHER_EVAL_JSONL_H_
#define TESSERA_LAUNCHER_EVAL_JSONL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/json_fields.h"

namespace tessera {

struct JsonlRecord {
  int line = 0;  // 1-based
  nlohmann::json value;
};

// Every non-blank line must be a JSON object. An empty dataset is an error.
absl::StatusOr<std::vector<JsonlRecord>> ReadJsonl(const std::string& path);

// The fields of a record, with "FILE:LINE: field \"name\" ..." errors (runtime/json_fields.h).
JsonFields Fields(const std::string& path, const JsonlRecord& r);

// The required field `name` of a record, type-checked (and range-checked: [lo, hi]), with
// "FILE:LINE: field \"name\" ..." errors.
absl::StatusOr<std::string> StringField(const std::string& path, const JsonlRecord& r,
                                        const char* name);
absl::StatusOr<int64_t> IntField(const std::string& path, const JsonlRecord& r, const char* name,
                                 int64_t lo, int64_t hi);
absl::StatusOr<std::vector<std::string>> StringListField(const std::string& path,
                                                         const JsonlRecord& r, const char* name);
absl::Status RecordError(const std::string& path, const JsonlRecord& r, absl::string_view what);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_EVAL_JSONL_H_
