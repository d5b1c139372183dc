// Errors the HTTP API returns: an HTTP status plus OpenAI's error object
// {"error": {"message", "type", "param", "code"}}. Which request field is wrong is decided by the
// request parser and the endpoints; turning an ApiError into a reply is http_server.cpp's job.
#pragma once

#include <string>

#include "chat/py_json.h"

namespace dsv4::server {

class ApiError : public std::runtime_error {
 public:
  // `param`: the request field at fault ("" when none); `code`: OpenAI's machine-readable code
  // ("context_length_exceeded", "model_not_found", ...; "" for none).
  ApiError(int status, std::string message, std::string param = {}, std::string code = {});
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string param_, code_;
};

// 400 for a request field with a bad value or type.
[[noreturn]] void bad_field(const std::string& param, const std::string& message);
// 400 for a parameter (or a value of it) this server does not implement: never silently ignored.
[[noreturn]] void unsupported(const std::string& param, const std::string& message);

// OpenAI's "type" for an HTTP status: invalid_request_error (4xx), authentication_error (401),
// not_found_error (404), rate_limit_error (429), server_error (5xx).
const char* error_type(int status);

// {"error": {"message", "type", "param", "code"}} (param and code null when empty).
chat::Json error_body(int status, const std::string& message, const std::string& param = {},
                      const std::string& code = {});
chat::Json error_body(const ApiError& e);

}  // namespace dsv4::server
