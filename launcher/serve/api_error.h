// ApiError: an OpenAI-style error response: an HTTP status and the body
//   {"error": {"message", "type", "param", "code"}}.
#ifndef TESSERA_LAUNCHER_SERVE_API_ERROR_H_
#define TESSERA_LAUNCHER_SERVE_API_ERROR_H_

#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace tessera::serve {

struct ApiError {
  int http_status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // the offending field ("max_tokens", "prompt[2]"); empty: none

  nlohmann::json Body() const;
};

ApiError BadRequest(std::string param, std::string message);
// A Status from the runtime: InvalidArgument / OutOfRange -> 400, Unimplemented -> 501,
// ResourceExhausted -> 429, Unavailable -> 503, anything else -> 500.
ApiError FromStatus(const absl::Status& status, std::string param = "");

}  // namespace tessera::serve

#endif  // TESSERA_LAUNCHER_SERVE_API_ERROR_H_
