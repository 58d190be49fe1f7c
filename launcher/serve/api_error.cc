#include "launcher/serve/api_error.h"

namespace tessera::serve {

nlohmann::json ApiError::Body() const {
  nlohmann::json error = {{"message", message}, {"type", type}, {"code", http_status}};
  error["param"] = param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param);
  return {{"error", error}};
}

ApiError BadRequest(std::string param, std::string message) {
  ApiError e;
  e.param = std::move(param);
  e.message = e.param.empty() ? std::move(message) : e.param + ": " + message;
  return e;
}

ApiError FromStatus(const absl::Status& status, std::string param) {
  ApiError e;
  e.param = std::move(param);
  e.message = std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      e.http_status = 400;
      break;
    case absl::StatusCode::kUnimplemented:
      e.http_status = 501;
      e.type = "not_implemented";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.http_status = 429;
      e.type = "rate_limit_exceeded";
      break;
    case absl::StatusCode::kUnavailable:
      e.http_status = 503;
      e.type = "service_unavailable";
      break;
    default:
      e.http_status = 500;
      e.type = "internal_error";
  }
  return e;
}

}  // namespace tessera::serve
