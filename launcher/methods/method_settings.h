// Loading and validating the method settings of a run (configs/method_settings.proto): the
// `method` section of a run config, `--method FILE.textproto`, and `--set method.NAME.FIELD=V`.
//
//   config::RunConfig c = ...;                     // --config, if any
//   RETURN_IF_ERROR(ApplyMethodFlag(&c));          // --method FILE replaces c.method
//   RETURN_IF_ERROR(SetField(&c, "method.homer.max_chunk_len=4096"));
//   RETURN_IF_ERROR(ValidateMethodSettings(c.method()));
//   RETURN_IF_ERROR(CheckMethodsAvailable(c.method()));  // method_availability.h
#ifndef TESSERA_LAUNCHER_METHODS_METHOD_SETTINGS_H_
#define TESSERA_LAUNCHER_METHODS_METHOD_SETTINGS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "configs/method_settings.pb.h"
#include "configs/run_config.pb.h"

namespace tessera {

// Parses a MethodSettings .textproto; unknown fields and malformed values are InvalidArgument
// naming file:line:column, a missing file NotFound naming --method.
absl::StatusOr<config::MethodSettings> LoadMethodSettings(const std::string& path);

// When --method was given, replaces config->method with that file's settings (the file says
// which methods run; --set method.* then changes single fields).
absl::Status ApplyMethodFlag(config::RunConfig* config);

// Checks every method that is present (method_validators.h); errors start with the field path
// as --set spells it: "method.homer.max_chunk_len: must be > 0, got -3 (...)". Says nothing
// about whether the methods are built: that is CheckMethodsAvailable.
absl::Status ValidateMethodSettings(const config::MethodSettings& settings);

}  // namespace tessera

#endif  // TESSERA_LAUNCHER_METHODS_METHOD_SETTINGS_H_
