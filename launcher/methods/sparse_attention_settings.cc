// Validation of SparseAttentionSettings (shared/specs/top_theta.md §1, §3, §5): ranges, and the
// constraints the reference CLI enforces between options.
#include <map>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/methods/field_checks.h"
#include "launcher/methods/method_validators.h"

namespace tessera {

using config::SparseAttentionSettings;
using method_checks::FieldError;
using method_checks::Join;

namespace {

absl::Status ValidateLayerK(const SparseAttentionSettings& s, const std::string& path) {
  std::map<int32_t, int> seen;  // layer -> index in layer_k
  for (int i = 0; i < s.layer_k_size(); ++i) {
    const std::string item = absl::StrCat(path, ".layer_k[", i, "]");
    RETURN_IF_ERROR(
        method_checks::AtLeast(item + ".layer", s.layer_k(i).layer(), 0, "a global layer index"));
    RETURN_IF_ERROR(
        method_checks::AtLeast(item + ".k", s.layer_k(i).k(), 0, "0 keeps the layer dense"));
    const auto [it, added] = seen.emplace(s.layer_k(i).layer(), i);
    if (!added) {
      return FieldError(item + ".layer",
                        absl::StrCat("layer ", s.layer_k(i).layer(), " is already given by ", path,
                                     ".layer_k[", it->second, "]; keep one"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateSparseAttentionSettings(const SparseAttentionSettings& s,
                                             const std::string& path) {
  RETURN_IF_ERROR(method_checks::KnownEnum(Join(path, "kind"),
                                           SparseAttentionSettings::Kind_descriptor(), s.kind()));
  if (s.kind() == SparseAttentionSettings::KIND_UNSPECIFIED) {
    return FieldError(Join(path, "kind"),
                      "is required: TOP_THETA (calibrated thresholds) or "
                      "TOP_K (the k largest scores)");
  }
  const bool theta = s.kind() == SparseAttentionSettings::TOP_THETA;
  const std::string kind = SparseAttentionSettings::Kind_Name(s.kind());
  RETURN_IF_ERROR(method_checks::KnownEnum(
      Join(path, "placement"), SparseAttentionSettings::Placement_descriptor(), s.placement()));
  RETURN_IF_ERROR(method_checks::KnownEnum(
      Join(path, "sdc"), SparseAttentionSettings::Compensation_descriptor(), s.sdc()));
  RETURN_IF_ERROR(method_checks::KnownEnum(
      Join(path, "empty_row"), SparseAttentionSettings::EmptyRow_descriptor(), s.empty_row()));
  if (s.has_k()) {
    RETURN_IF_ERROR(
        method_checks::AtLeast(Join(path, "k"), s.k(), 1, "keys kept per row; unset: 256"));
  }
  RETURN_IF_ERROR(ValidateLayerK(s, path));

  const bool pre = s.placement() == SparseAttentionSettings::PRE_SOFTMAX;
  const bool sdc = s.sdc() != SparseAttentionSettings::SDC_NONE;
  if (sdc && !pre) {
    return FieldError(Join(path, "sdc"),
                      "requires placement: PRE_SOFTMAX (post-softmax does not "
                      "renormalise); set sdc: SDC_NONE or placement: "
                      "PRE_SOFTMAX");
  }
  if (s.sdc() == SparseAttentionSettings::SDC_EXP_THRESHOLD && !theta) {
    return FieldError(Join(path, "sdc"),
                      absl::StrCat("SDC_EXP_THRESHOLD needs a threshold, so "
                                   "kind TOP_THETA; with ",
                                   kind, " use SDC_EXACT or SDC_OFFLINE_CALIBRATED"));
  }
  if (s.has_sdc_scale()) {
    const std::string field = Join(path, "sdc_scale");
    if (!sdc)
      return FieldError(field, "has no effect with sdc: SDC_NONE; remove it or choose an sdc");
    RETURN_IF_ERROR(method_checks::AtLeastReal(field, s.sdc_scale(), 0, "unset: 1.0"));
  }
  if (s.vmc() && pre && !sdc) {
    return FieldError(Join(path, "vmc"),
                      "with placement PRE_SOFTMAX needs an sdc other than "
                      "SDC_NONE (the kept weights sum to 1, so it would add "
                      "nothing)");
  }
  if (s.cap_k() && !theta) {
    return FieldError(Join(path, "cap_k"), absl::StrCat("applies to kind TOP_THETA only (", kind,
                                                        " keeps exactly k); remove it"));
  }
  if (s.empty_row() != SparseAttentionSettings::EMPTY_ROW_KEEP_MAX && !theta) {
    return FieldError(Join(path, "empty_row"), "applies to kind TOP_THETA only; remove it");
  }
  const bool needs_calibration =
      theta || s.sdc() == SparseAttentionSettings::SDC_OFFLINE_CALIBRATED;
  if (needs_calibration && s.calibration_dir().empty()) {
    return FieldError(
        Join(path, "calibration_dir"),
        absl::StrCat("is required with ", theta ? "kind TOP_THETA" : "sdc: SDC_OFFLINE_CALIBRATED",
                     ": the directory of th.txt / sdc.txt written by "
                     "`tessera calibrate`"));
  }
  if (!needs_calibration && !s.calibration_dir().empty()) {
    return FieldError(
        Join(path, "calibration_dir"),
        absl::StrCat("has no effect with kind ", kind, " and sdc ",
                     SparseAttentionSettings::Compensation_Name(s.sdc()), "; remove it"));
  }
  return absl::OkStatus();
}

}  // namespace tessera
