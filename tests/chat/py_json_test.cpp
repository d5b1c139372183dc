// Python-compatible JSON text and the UTF-8 check. Expected strings are what CPython 3.11's
// json.dumps(v, ensure_ascii=False) prints (checked by running it); the UTF-8 cases are the
// Unicode standard's ill-formed sequences (Table 3-7 bounds).
#include <gtest/gtest.h>

#include <cmath>

#include "chat/py_json.h"
#include "util/error.h"

namespace dsv4::chat {
namespace {

TEST(PyJson, MatchesPythonJsonDumps) {
  const Json v = Json::parse(R"({"b": [1, 2.5, 1e-05, 1e16, 1e15, 0.0001, -0.0, 1.0, true, null],
                                 "a": "q\"\\\n\t\r\b\f\u0001\u007f/é中", "e": {}, "l": []})");
  EXPECT_EQ(py_json_dumps(v),
            "{\"b\": [1, 2.5, 1e-05, 1e+16, 1000000000000000.0, 0.0001, -0.0, 1.0, true, null], "
            "\"a\": \"q\\\"\\\\\\n\\t\\r\\b\\f\\u0001\x7f/é中\", \"e\": {}, \"l\": []}");
  EXPECT_EQ(py_json_quote("a\x1f"), "\"a\\u001f\"");
  // repr() of these doubles in CPython 3.11.
  const std::pair<double, const char*> reprs[] = {
      {0.1, "0.1"}, {1.0 / 3, "0.3333333333333333"}, {123456789012345678.0, "1.2345678901234568e+17"},
      {9999999999999998.0, "9999999999999998.0"}, {1e16, "1e+16"}, {1.5e-5, "1.5e-05"},
      {-2.5e-7, "-2.5e-07"}, {5e-324, "5e-324"}, {1.7976931348623157e308, "1.7976931348623157e+308"},
      {100.0, "100.0"}, {-0.001, "-0.001"}, {123.456, "123.456"}, {2e22, "2e+22"}};
  for (const auto& [d, want] : reprs) EXPECT_EQ(py_json_dumps(Json(d)), want) << want;
  EXPECT_THROW(py_json_dumps(Json(std::nan(""))), Error);
  EXPECT_THROW(parse_json("{\"a\": }", "x.json"), Error);
  // Syntactically a number, but beyond a double: nlohmann's out_of_range, reported like a syntax error.
  EXPECT_THROW(parse_json("{\"a\": -2e2222}", "x.json"), Error);
  EXPECT_THROW(parse_json("[1e309]", "x.json"), Error);
}

TEST(PyJson, Truthiness) {
  for (const char* falsy : {"null", "false", "0", "0.0", "\"\"", "[]", "{}"})
    EXPECT_FALSE(py_truthy(Json::parse(falsy))) << falsy;
  for (const char* truthy : {"true", "1", "-1", "0.5", "\" \"", "[0]", "{\"a\": null}"})
    EXPECT_TRUE(py_truthy(Json::parse(truthy))) << truthy;
}

}  // namespace
}  // namespace dsv4::chat
