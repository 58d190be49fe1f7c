// Range checks for method settings whose errors name the field path, say what is allowed and
// what was given, e.g. "method.homer.max_chunk_len: must be > 0, got -3 (tokens per chunk)".
// Each returns OkStatus when the value is allowed, else InvalidArgument.
#ifndef TESSERA_LAUNCHER_METHODS_FIELD_CHECKS_H_
#define TESSERA_LAUNCHER_METHODS_FIELD_CHECKS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace tessera::method_checks {

// "<path>.<field>".
std::string Join(absl::string_view path, absl::string_view field);

// "<path>: <what>" as InvalidArgument.
absl::Status FieldError(absl::string_view path, absl::string_view what);

// value >= min; `meaning` (may be empty) is appended in parentheses to say what the field is.
absl::Status AtLeast(absl::string_view path, int64_t value, int64_t min,
                     absl::string_view meaning = "");

// value > 0 (for a count where 0 is not allowed: "must be > 0, got -3").
absl::Status Positive(absl::string_view path, int64_t value, absl::string_view meaning = "");

// A finite value >= min.
absl::Status AtLeastReal(absl::string_view path, double value, double min,
                         absl::string_view meaning = "");

// A finite value in [lo, hi], or [lo, hi) when `hi_open`.
absl::Status InRange(absl::string_view path, double value, double lo, double hi, bool hi_open,
                     absl::string_view meaning = "");

// A finite value (not NaN or infinite).
absl::Status Finite(absl::string_view path, double value, absl::string_view meaning = "");

// `value` names a value of `type` (text format can carry numbers an enum does not define).
absl::Status KnownEnum(absl::string_view path, const google::protobuf::EnumDescriptor* type,
                       int value);

}  // namespace tessera::method_checks

#endif  // TESSERA_LAUNCHER_METHODS_FIELD_CHECKS_H_
