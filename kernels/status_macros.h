// Status propagation macros for absl::Status / absl::StatusOr.
//
// Debian's Abseil 20220623 ships no status macros, so they are defined once here, in the lowest
// module, and every other module uses them:
//
//   RETURN_IF_ERROR(file.Read(&buf));
//   ASSIGN_OR_RETURN(Tensor t, LoadTensor(name));
//   ASSIGN_OR_RETURN(auto cfg, ParseConfig(path));
#ifndef TESSERA_KERNELS_STATUS_MACROS_H_
#define TESSERA_KERNELS_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TESSERA_STATUS_CONCAT_INNER_(a, b) a##b
#define TESSERA_STATUS_CONCAT_(a, b) TESSERA_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if not ok.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status _tessera_status = (expr);   \
    if (!_tessera_status.ok()) return _tessera_status; \
  } while (0)

#define TESSERA_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                   \
  if (!statusor.ok()) return statusor.status();             \
  lhs = std::move(statusor).value()

// Evaluates `expr` (an absl::StatusOr<T>); on error returns its status, otherwise assigns the
// value to `lhs`, which may be a declaration (`auto x`) or an existing variable.
#define ASSIGN_OR_RETURN(lhs, expr) \
  TESSERA_ASSIGN_OR_RETURN_IMPL_(TESSERA_STATUS_CONCAT_(_tessera_statusor_, __LINE__), lhs, expr)

#endif  // TESSERA_KERNELS_STATUS_MACROS_H_
