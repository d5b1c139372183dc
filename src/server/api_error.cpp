// ApiError and OpenAI's error JSON (api_error.h).
#include "server/api_error.h"

namespace dsv4::server {

ApiError::ApiError(int status, std::string message, std::string param, std::string code)
    : std::runtime_error(std::move(message)), status_(status), param_(std::move(param)),
      code_(std::move(code)) {}

void bad_field(const std::string& param, const std::string& message) {
  throw ApiError(400, message, param, "invalid_value");
}

void unsupported(const std::string& param, const std::string& message) {
  throw ApiError(400, message, param, "unsupported_parameter");
}

const char* error_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

chat::Json error_body(int status, const std::string& message, const std::string& param,
                      const std::string& code) {
  chat::Json e;
  e["message"] = message;
  e["type"] = error_type(status);
  e["param"] = param.empty() ? chat::Json(nullptr) : chat::Json(param);
  e["code"] = code.empty() ? chat::Json(nullptr) : chat::Json(code);
  return chat::Json{{"error", std::move(e)}};
}

chat::Json error_body(const ApiError& e) { return error_body(e.status(), e.what(), e.param(), e.code()); }

}  // namespace dsv4::server
