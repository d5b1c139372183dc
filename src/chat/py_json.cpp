// Python-compatible json.dumps over nlohmann::ordered_json (see py_json.h); scalars reuse nlohmann's
// serializer where its output already equals Python's, containers are written here.
#include "chat/py_json.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "util/error.h"

namespace dsv4::chat {

std::string py_json_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);  // Python writes lower-case hex
          out += buf;
        } else {
          out += static_cast<char>(c);  // ensure_ascii=False: bytes >= 0x80 (and 0x7F) stay raw
        }
    }
  }
  out += '"';
  return out;
}

// Python's float repr: the shortest digits that round-trip (std::to_chars gives exactly those,
// closest to the value among equals, as CPython's dtoa does), laid out in fixed notation when the
// decimal exponent is in [-4, 16) ("1000000000000000.0", "0.0001") and as "1e+16" / "1.5e-05"
// otherwise. nlohmann's own layout differs from 1e15 on, so it is not used here.
static std::string py_float_repr(double d) {
  if (!std::isfinite(d)) fail("JSON value ", d, " is not finite");
  if (d == 0.0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  const std::string sci(buf, res.ptr);  // "-1.2345e+15"
  const size_t e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  const int exp10 = std::stoi(sci.substr(e + 1));
  std::string sign;
  if (mantissa[0] == '-') {
    sign = "-";
    mantissa.erase(0, 1);
  }
  std::string digits;
  for (char c : mantissa)
    if (c != '.') digits += c;
  if (exp10 < -4 || exp10 >= 16) {
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char ebuf[16];
    std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    return out + ebuf;
  }
  const int point = exp10 + 1;  // digits before the decimal point
  if (point <= 0) return sign + "0." + std::string(-point, '0') + digits;
  if (point >= static_cast<int>(digits.size()))
    return sign + digits + std::string(point - digits.size(), '0') + ".0";
  return sign + digits.substr(0, point) + "." + digits.substr(point);
}

static void dump_into(const Json& v, std::string& out) {
  switch (v.type()) {
    case Json::value_t::object: {
      out += '{';
      bool first = true;
      for (const auto& [key, item] : v.items()) {
        if (!first) out += ", ";
        first = false;
        out += py_json_quote(key);
        out += ": ";
        dump_into(item, out);
      }
      out += '}';
      return;
    }
    case Json::value_t::array: {
      out += '[';
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ", ";
        dump_into(v[i], out);
      }
      out += ']';
      return;
    }
    case Json::value_t::string:
      out += py_json_quote(v.get_ref<const std::string&>());
      return;
    case Json::value_t::number_float:
      out += py_float_repr(v.get<double>());
      return;
    default:  // null, boolean, integers: identical spelling in both
      out += v.dump();
  }
}

std::string py_json_dumps(const Json& value) {
  std::string out;
  dump_into(value, out);
  return out;
}

bool py_truthy(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null: return false;
    case Json::value_t::boolean: return v.get<bool>();
    case Json::value_t::number_integer: return v.get<int64_t>() != 0;
    case Json::value_t::number_unsigned: return v.get<uint64_t>() != 0;
    case Json::value_t::number_float: return v.get<double>() != 0.0;
    case Json::value_t::string: return !v.get_ref<const std::string&>().empty();
    default: return !v.empty();  // arrays, objects
  }
}

Json parse_json(std::string_view text, std::string_view origin) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is 1-based and points at the offending byte; the message names what was expected.
    fail(origin, ": invalid JSON at byte ", e.byte, ": ", e.what());
  } catch (const nlohmann::json::exception& e) {
    // Well-formed text the parser still refuses: a number beyond a double's range (out_of_range 406).
    fail(origin, ": invalid JSON: ", e.what());
  }
}

}  // namespace dsv4::chat
