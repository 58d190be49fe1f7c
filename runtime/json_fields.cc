#include "runtime/json_fields.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace tessera {
namespace {

using nlohmann::json;

// The value as JSON text for messages, shortened.
std::string Shown(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

const json& Null() {
  static const json* null = new json();
  return *null;
}

}  // namespace

absl::StatusOr<int64_t> JsonInteger(const json& value, int64_t lo, int64_t hi) {
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat(
        lo == 1 ? absl::StrCat("must be a positive integer (at most ", hi, ")")
                : absl::StrCat("must be an integer in [", lo, ", ", hi, "]"),
        ", got ", Shown(value)));
  };
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    if (hi < 0 || v > static_cast<uint64_t>(hi) || static_cast<int64_t>(v) < lo) return bad();
    return static_cast<int64_t>(v);
  }
  if (value.is_number_integer()) {
    const int64_t v = value.get<int64_t>();
    if (v < lo || v > hi) return bad();
    return v;
  }
  return bad();  // float (including integers too large for 64 bits), string, bool, ...
}

JsonFields::JsonFields(const json& object, std::string file, int line)
    : object_(object), where_(line > 0 ? absl::StrCat(file, ":", line) : std::move(file)) {}

bool JsonFields::Has(absl::string_view field) const { return !Raw(field).is_null(); }

const json& JsonFields::Raw(absl::string_view field) const {
  if (!object_.is_object()) return Null();
  auto it = object_.find(std::string(field));
  return it == object_.end() ? Null() : *it;
}

absl::Status JsonFields::Error(absl::string_view field, absl::string_view what) const {
  return absl::InvalidArgumentError(absl::StrCat(where_, ": field \"", field, "\" ", what));
}

absl::StatusOr<int64_t> JsonFields::Int(absl::string_view field, int64_t lo, int64_t hi) const {
  if (!Has(field)) return Error(field, "is missing");
  absl::StatusOr<int64_t> v = JsonInteger(Raw(field), lo, hi);
  if (!v.ok()) return Error(field, v.status().message());
  return v;
}

absl::StatusOr<int32_t> JsonFields::Int32(absl::string_view field, int32_t lo, int32_t hi) const {
  ASSIGN_OR_RETURN(int64_t v, Int(field, lo, hi));
  return static_cast<int32_t>(v);
}

absl::StatusOr<double> JsonFields::Double(absl::string_view field) const {
  if (!Has(field)) return Error(field, "is missing");
  const json& v = Raw(field);
  if (!v.is_number()) return Error(field, absl::StrCat("must be a number, got ", Shown(v)));
  return v.get<double>();
}

absl::StatusOr<std::string> JsonFields::String(absl::string_view field) const {
  if (!Has(field)) return Error(field, "is missing");
  const json& v = Raw(field);
  if (!v.is_string()) return Error(field, absl::StrCat("must be a string, got ", Shown(v)));
  return v.get<std::string>();
}

absl::StatusOr<bool> JsonFields::Bool(absl::string_view field) const {
  if (!Has(field)) return Error(field, "is missing");
  const json& v = Raw(field);
  if (!v.is_boolean()) return Error(field, absl::StrCat("must be true or false, got ", Shown(v)));
  return v.get<bool>();
}

absl::StatusOr<std::vector<std::string>> JsonFields::StringList(absl::string_view field) const {
  if (!Has(field)) return Error(field, "is missing");
  const json& v = Raw(field);
  if (!v.is_array()) return Error(field, absl::StrCat("must be a list of strings, got ", Shown(v)));
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) {
      return Error(absl::StrCat(field, "[", i, "]"), absl::StrCat("must be a string, got ",
                                                                  Shown(v[i])));
    }
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

absl::StatusOr<int64_t> JsonFields::Int(absl::string_view field, int64_t lo, int64_t hi,
                                        int64_t fallback) const {
  if (!Has(field)) return fallback;
  return Int(field, lo, hi);
}

absl::StatusOr<int32_t> JsonFields::Int32(absl::string_view field, int32_t lo, int32_t hi,
                                          int32_t fallback) const {
  if (!Has(field)) return fallback;
  return Int32(field, lo, hi);
}

absl::StatusOr<double> JsonFields::Double(absl::string_view field, double fallback) const {
  if (!Has(field)) return fallback;
  return Double(field);
}

absl::StatusOr<std::string> JsonFields::String(absl::string_view field,
                                               std::string fallback) const {
  if (!Has(field)) return fallback;
  return String(field);
}

absl::StatusOr<bool> JsonFields::Bool(absl::string_view field, bool fallback) const {
  if (!Has(field)) return fallback;
  return Bool(field);
}

absl::StatusOr<std::vector<int32_t>> JsonFields::Int32OrList(absl::string_view field, int32_t lo,
                                                             int32_t hi) const {
  if (!Has(field)) return Error(field, "is missing");
  const json& v = Raw(field);
  std::vector<int32_t> ids;
  if (!v.is_array()) {
    absl::StatusOr<int64_t> id = JsonInteger(v, lo, hi);
    if (!id.ok()) {
      return Error(field, absl::StrCat(id.status().message(), " (an integer or a list of them)"));
    }
    ids.push_back(static_cast<int32_t>(*id));
    return ids;
  }
  for (size_t i = 0; i < v.size(); ++i) {
    absl::StatusOr<int64_t> id = JsonInteger(v[i], lo, hi);
    if (!id.ok()) return Error(absl::StrCat(field, "[", i, "]"), id.status().message());
    ids.push_back(static_cast<int32_t>(*id));
  }
  return ids;
}

}  // namespace tessera
