// JsonFields: typed, range-checked reads of the fields of one JSON object (config.json, a line of
// a JSONL file, a safetensors index), with errors that name the file, the line (for JSONL) and
// the field, and say what the field must hold:
//
//   prompts.jsonl:3: field "top_k" must be an integer in [0, 2147483647], got 4294967296
//   model/config.json: field "rms_norm_eps" must be a number, got "1e-5"
//
//   JsonFields f(j, path);                       // or JsonFields(j, path, line) for JSONL
//   ASSIGN_OR_RETURN(int32_t bos, f.Int32("bos_token_id", 0, vocab - 1));  // required
//   ASSIGN_OR_RETURN(int32_t k, f.Int32("top_k", 0, kMax, /*fallback=*/0));  // optional
//
// Every value is checked for its JSON type (a string where a number belongs is an error, never
// ignored) and integers for their range before any narrowing, so nothing wraps. A field holding
// null counts as absent, as transformers writes unset fields.
#ifndef TESSERA_RUNTIME_JSON_FIELDS_H_
#define TESSERA_RUNTIME_JSON_FIELDS_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace tessera {

// `value` as an integer in [lo, hi]; the error says only what is wrong ("must be an integer in
// [lo, hi], got X"), for the caller to prefix with where the value is.
absl::StatusOr<int64_t> JsonInteger(const nlohmann::json& value, int64_t lo, int64_t hi);

class JsonFields {
 public:
  static constexpr int32_t kInt32Max = std::numeric_limits<int32_t>::max();

  // `object` must outlive this and should be a JSON object (fields of anything else are absent).
  // `file` names it in messages; `line` > 0 adds ":LINE" (JSONL).
  JsonFields(const nlohmann::json& object, std::string file, int line = 0);

  // Whether `field` is present and not null.
  bool Has(absl::string_view field) const;
  // The raw value of a present field (null when absent).
  const nlohmann::json& Raw(absl::string_view field) const;

  // Required fields: absent or null is an error.
  absl::StatusOr<int64_t> Int(absl::string_view field, int64_t lo, int64_t hi) const;
  absl::StatusOr<int32_t> Int32(absl::string_view field, int32_t lo, int32_t hi) const;
  absl::StatusOr<double> Double(absl::string_view field) const;
  absl::StatusOr<std::string> String(absl::string_view field) const;
  absl::StatusOr<bool> Bool(absl::string_view field) const;
  absl::StatusOr<std::vector<std::string>> StringList(absl::string_view field) const;

  // Optional fields: `fallback` when absent or null; a present value is checked as above.
  absl::StatusOr<int64_t> Int(absl::string_view field, int64_t lo, int64_t hi,
                              int64_t fallback) const;
  absl::StatusOr<int32_t> Int32(absl::string_view field, int32_t lo, int32_t hi,
                                int32_t fallback) const;
  absl::StatusOr<double> Double(absl::string_view field, double fallback) const;
  absl::StatusOr<std::string> String(absl::string_view field, std::string fallback) const;
  absl::StatusOr<bool> Bool(absl::string_view field, bool fallback) const;

  // An int32 or a list of them (eos_token_id), each in [lo, hi]; list entries are named
  // "field[i]" in messages.
  absl::StatusOr<std::vector<int32_t>> Int32OrList(absl::string_view field, int32_t lo,
                                                   int32_t hi) const;

  // InvalidArgument "FILE[:LINE]: field \"FIELD\" WHAT"; `field` may be a path
  // ("rope_scaling.factor").
  absl::Status Error(absl::string_view field, absl::string_view what) const;
  // "FILE" or "FILE:LINE".
  const std::string& where() const { return where_; }

 private:
  const nlohmann::json& object_;
  std::string where_;
};

}  // namespace tessera

#endif  // TESSERA_RUNTIME_JSON_FIELDS_H_
