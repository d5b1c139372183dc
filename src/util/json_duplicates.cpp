// find_duplicate_key: a SAX pass that keeps, per open object, the keys seen so far and, per open
// container, where it sits in its parent, so that a duplicate can be named by its full path.
#include "util/json_duplicates.h"

#include <nlohmann/json.hpp>
#include <unordered_set>
#include <vector>

namespace dsv4 {

namespace {

using json = nlohmann::json;

class DuplicateKeyFinder : public nlohmann::json_sax<json> {
 public:
  std::optional<DuplicateKey> duplicate;

  bool key(string_t& k) override {
    Frame& f = frames_.back();
    f.current_key = k;
    if (f.keys.insert(k).second) return true;
    duplicate = DuplicateKey{path(), k};
    return false;  // stop: the first duplicate is the one reported
  }
  bool start_object(std::size_t) override { return open(false); }
  bool start_array(std::size_t) override { return open(true); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool null() override { return value(); }
  bool boolean(bool) override { return value(); }
  bool number_integer(number_integer_t) override { return value(); }
  bool number_unsigned(number_unsigned_t) override { return value(); }
  bool number_float(number_float_t, const string_t&) override { return value(); }
  bool string(string_t&) override { return value(); }
  bool binary(binary_t&) override { return value(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }

 private:
  struct Frame {
    bool array = false;
    size_t next_index = 0;               // arrays: index of the next element
    std::unordered_set<std::string> keys;  // objects: keys seen so far
    std::string current_key;             // objects: the key whose value is being read
    std::string segment;                 // how the parent names this container ("a", "[3]")
  };

  // A value starts inside the innermost container: its name there, as a path segment.
  std::string segment_in_parent() {
    if (frames_.empty()) return "";
    Frame& f = frames_.back();
    if (f.array) return "[" + std::to_string(f.next_index++) + "]";
    return f.current_key;
  }
  bool value() {
    segment_in_parent();
    return true;
  }
  bool open(bool array) {
    Frame f;
    f.array = array;
    f.segment = segment_in_parent();
    frames_.push_back(std::move(f));
    return true;
  }
  bool close() {
    frames_.pop_back();
    return true;
  }
  // Path of the innermost open container: "a.b[2]" (the top-level object is "").
  std::string path() const {
    std::string p;
    for (size_t i = 1; i < frames_.size(); ++i) {
      const std::string& s = frames_[i].segment;
      if (!p.empty() && s.front() != '[') p += '.';
      p += s;
    }
    return p;
  }

  std::vector<Frame> frames_;
};

}  // namespace

std::optional<DuplicateKey> find_duplicate_key(std::string_view json_text) {
  DuplicateKeyFinder finder;
  json::sax_parse(json_text.begin(), json_text.end(), &finder);
  return finder.duplicate;
}

}  // namespace dsv4
