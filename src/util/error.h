// Errors: one exception type for hostile input (config, headers, tokenizer files, prompts, HTTP),
// and DSV4_CHECK for broken internal invariants. Nothing below src/cli calls exit().
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace dsv4 {

// Bad input from outside: the message names the field / file / offset that is wrong.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A broken internal invariant (a bug in dsv4, not in the input).
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// Concatenate anything streamable into a string: cat("layer ", il, ": bad shape").
template <typename... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(cat(std::forward<Args>(args)...));
}

}  // namespace dsv4

#define DSV4_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond))                                                                           \
      throw ::dsv4::InternalError(::dsv4::cat(__FILE__, ":", __LINE__, ": check failed: ", \
                                              #cond));                                     \
  } while (0)

#define DSV4_CHECK_MSG(cond, ...)                                                          \
  do {                                                                                     \
    if (!(cond))                                                                           \
      throw ::dsv4::InternalError(::dsv4::cat(__FILE__, ":", __LINE__, ": check failed: ", \
                                              #cond, ": ", __VA_ARGS__));                  \
  } while (0)
