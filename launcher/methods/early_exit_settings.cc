// Validation of EarlyExitSettings (shared/specs/early_exit.md §1, §2, §4, §6.3).
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "launcher/methods/field_checks.h"
#include "launcher/methods/method_validators.h"

namespace tessera {

using config::EarlyExitSettings;
using method_checks::FieldError;
using method_checks::Join;

absl::Status ValidateEarlyExitSettings(const EarlyExitSettings& s, const std::string& path) {
  RETURN_IF_ERROR(method_checks::KnownEnum(Join(path, "policy"),
                                           EarlyExitSettings::Policy_descriptor(), s.policy()));
  const std::string policy = EarlyExitSettings::Policy_Name(s.policy());
  const bool calm = s.policy() == EarlyExitSettings::CALM;
  const bool free = s.policy() == EarlyExitSettings::FREE;
  const std::string exit_layer = Join(path, "exit_layer");
  if (calm) {
    if (s.exit_layer() != 0) {
      return FieldError(exit_layer,
                        "applies to policies FREE and STATIC; CALM checks before "
                        "every block from min_exit_layer on, so remove it");
    }
  } else if (s.exit_layer() != 0) {
    RETURN_IF_ERROR(method_checks::Positive(exit_layer, s.exit_layer(), "blocks before the exit"));
  }
  if (s.has_min_exit_layer()) {
    const std::string field = Join(path, "min_exit_layer");
    if (!calm)
      return FieldError(field, "applies to policy CALM only; remove it or set policy: CALM");
    RETURN_IF_ERROR(
        method_checks::AtLeast(field, s.min_exit_layer(), 1, "the first block checked; unset: 1"));
  }
  if (s.has_threshold()) {
    const std::string field = Join(path, "threshold");
    if (!calm && !free) {
      return FieldError(field,
                        "has no effect with policy STATIC (every token exits at "
                        "exit_layer); remove it");
    }
    RETURN_IF_ERROR(method_checks::Finite(field, s.threshold(), "unset: 1.0, never exit"));
  }
  if (s.adaptive_threshold()) {
    if (!free) {
      return FieldError(Join(path, "adaptive_threshold"), "applies to policy FREE only");
    }
    const float initial = s.has_threshold() ? s.threshold() : 1.0f;
    if (initial >= 1.0f) {
      return FieldError(Join(path, "threshold"),
                        absl::StrCat("must be below 1 with adaptive_threshold, got ", initial,
                                     " (the initial tau; at >= 1 no token exits, so nothing is "
                                     "learned; FREE's scripts start at 0.9)"));
    }
  }
  if (s.flush_at_end() && !free) {
    return FieldError(Join(path, "flush_at_end"), "applies to policy FREE only; remove it");
  }
  RETURN_IF_ERROR(method_checks::KnownEnum(Join(path, "confidence"),
                                           EarlyExitSettings::Confidence_descriptor(),
                                           s.confidence()));
  if (s.confidence() == EarlyExitSettings::JSD_CONTRASTIVE && !calm) {
    return FieldError(Join(path, "confidence"),
                      "JSD_CONTRASTIVE compares a check with earlier checks: policy CALM only");
  }
  if (s.confidence() == EarlyExitSettings::JSD_CONTRASTIVE &&
      s.vocab_reduction() != EarlyExitSettings::VOCAB_FULL) {
    return FieldError(Join(path, "confidence"),
                      "JSD_CONTRASTIVE needs the full vocabulary (vocab_reduction: VOCAB_FULL): a "
                      "pruned amateur has log-probability -inf outside its rows");
  }
  if (s.confidence() != EarlyExitSettings::TOP2_GAP && s.policy() == EarlyExitSettings::STATIC) {
    return FieldError(Join(path, "confidence"), "has no effect with policy STATIC; remove it");
  }
  for (const char* field : {"bmm_compat", "adaptive_max_refits"}) {
    const bool set = std::string(field) == "bmm_compat" ? s.has_bmm_compat()
                                                        : s.has_adaptive_max_refits();
    if (set && !s.adaptive_threshold()) {
      return FieldError(Join(path, field),
                        "applies with adaptive_threshold: true only; remove it or set that");
    }
  }
  if (s.has_adaptive_max_refits()) {
    RETURN_IF_ERROR(method_checks::AtLeast(Join(path, "adaptive_max_refits"),
                                           s.adaptive_max_refits(), 0, "0: tau stays frozen"));
  }
  if (s.has_forced_exit_rate()) {
    const std::string field = Join(path, "forced_exit_rate");
    if (!free) return FieldError(field, "applies to policy FREE only; remove it");
    if (s.adaptive_threshold()) {
      return FieldError(field, "replaces the threshold; remove adaptive_threshold or this");
    }
    RETURN_IF_ERROR(method_checks::Finite(field, s.forced_exit_rate(), "a probability"));
    if (s.forced_exit_rate() < 0 || s.forced_exit_rate() > 1) {
      return FieldError(field, absl::StrCat("must be in [0, 1], got ", s.forced_exit_rate()));
    }
  }
  if (s.check_layers_size() > 0 || s.vocab_reduction() != EarlyExitSettings::VOCAB_FULL ||
      s.has_vocab_k()) {
    if (!calm) {
      const char* field = s.check_layers_size() > 0 ? "check_layers"
                          : s.has_vocab_k()         ? "vocab_k"
                                                    : "vocab_reduction";
      return FieldError(Join(path, field), "applies to policy CALM only; remove it");
    }
  }
  RETURN_IF_ERROR(method_checks::KnownEnum(Join(path, "vocab_reduction"),
                                           EarlyExitSettings::VocabReduction_descriptor(),
                                           s.vocab_reduction()));
  for (int i = 0; i < s.check_layers_size(); ++i) {
    const std::string field = absl::StrCat(Join(path, "check_layers"), "[", i, "]");
    RETURN_IF_ERROR(method_checks::AtLeast(field, s.check_layers(i),
                                           s.has_min_exit_layer() ? s.min_exit_layer() : 1,
                                           "a block count at or after min_exit_layer"));
    if (i > 0 && s.check_layers(i) <= s.check_layers(i - 1)) {
      return FieldError(field, "must be larger than the one before: the list is increasing");
    }
  }
  if (s.has_vocab_k()) {
    if (s.vocab_reduction() == EarlyExitSettings::VOCAB_FULL) {
      return FieldError(Join(path, "vocab_k"), "needs a vocab_reduction; set one or remove it");
    }
    RETURN_IF_ERROR(method_checks::Positive(Join(path, "vocab_k"), s.vocab_k(), "rows kept"));
  }
  if (s.max_pending() != 0) {
    const std::string field = Join(path, "max_pending");
    if (!free) return FieldError(field, "applies to policy FREE only; remove it");
    RETURN_IF_ERROR(method_checks::AtLeast(field, s.max_pending(), 0, "0: no cap"));
  }
  return absl::OkStatus();
}

}  // namespace tessera
