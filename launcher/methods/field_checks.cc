#include "launcher/methods/field_checks.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tessera::method_checks {
namespace {

std::string Meaning(absl::string_view meaning) {
  return meaning.empty() ? "" : absl::StrCat(" (", meaning, ")");
}

}  // namespace

std::string Join(absl::string_view path, absl::string_view field) {
  return absl::StrCat(path, ".", field);
}

absl::Status FieldError(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::Status AtLeast(absl::string_view path, int64_t value, int64_t min,
                     absl::string_view meaning) {
  if (value >= min) return absl::OkStatus();
  return FieldError(path, absl::StrCat("must be >= ", min, ", got ", value, Meaning(meaning)));
}

absl::Status Positive(absl::string_view path, int64_t value, absl::string_view meaning) {
  if (value > 0) return absl::OkStatus();
  return FieldError(path, absl::StrCat("must be > 0, got ", value, Meaning(meaning)));
}

absl::Status AtLeastReal(absl::string_view path, double value, double min,
                         absl::string_view meaning) {
  if (std::isfinite(value) && value >= min) return absl::OkStatus();
  return FieldError(
      path, absl::StrCat("must be a finite number >= ", min, ", got ", value, Meaning(meaning)));
}

absl::Status InRange(absl::string_view path, double value, double lo, double hi, bool hi_open,
                     absl::string_view meaning) {
  if (std::isfinite(value) && value >= lo && (hi_open ? value < hi : value <= hi)) {
    return absl::OkStatus();
  }
  return FieldError(path, absl::StrCat("must be in [", lo, ", ", hi, hi_open ? ")" : "]", ", got ",
                                       value, Meaning(meaning)));
}

absl::Status Finite(absl::string_view path, double value, absl::string_view meaning) {
  if (std::isfinite(value)) return absl::OkStatus();
  return FieldError(path, absl::StrCat("must be a finite number, got ", value, Meaning(meaning)));
}

absl::Status KnownEnum(absl::string_view path, const google::protobuf::EnumDescriptor* type,
                       int value) {
  if (type->FindValueByNumber(value) != nullptr) return absl::OkStatus();
  std::vector<std::string> names;
  for (int i = 0; i < type->value_count(); ++i) names.push_back(type->value(i)->name());
  return FieldError(path, absl::StrCat("is ", value, ", which names no value; use one of ",
                                       absl::StrJoin(names, ", ")));
}

}  // namespace tessera::method_checks
