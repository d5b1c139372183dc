// Split steps of the pre-tokenizer (see pretokenizer.h) with PCRE2. The patterns come from
// tokenizer.json (encoding.md §6.2 step 3); which characters become which token is bpe.cpp's job.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/pretokenizer.h"

#include <pcre2.h>

#include "tokenizer/regex_translate.h"
#include "util/error.h"

namespace dsv4 {

namespace {

// JIT backtracking stack per thread. The V4 patterns need almost none (their repeats are single
// character classes); the ceiling only bounds a hostile tokenizer.json pattern.
constexpr size_t kJitStackStartBytes = 32 * 1024;
constexpr size_t kJitStackMaxBytes = 16 * 1024 * 1024;

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

// Per-thread match state: pcre2 match data and JIT stacks must not be shared between threads.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* jit_stack = pcre2_jit_stack_create(kJitStackStartBytes, kJitStackMaxBytes, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  MatchScratch() {
    DSV4_CHECK(data && jit_stack && context);
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchScratch() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_data_free(data);
  }
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
};

MatchScratch& scratch_for_thread() {
  thread_local MatchScratch scratch;
  return scratch;
}

// Length of the UTF-8 character starting with byte `b` (the subject is valid UTF-8).
size_t char_length(unsigned char b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }

}  // namespace

// One Split step, compiled twice (regex_translate.h): `native` uses PCRE2's own category tables
// and is fast; `exact` spells HF's Unicode 16 categories out as ranges and is used only for text
// with a code point whose category PCRE2 sees differently (unicode_drift.h).
struct PreTokenizer::Regex {
  pcre2_code* native = nullptr;
  pcre2_code* exact = nullptr;
  std::string field;
  ~Regex() {
    pcre2_code_free(native);
    pcre2_code_free(exact);
  }
};

PreTokenizer::PreTokenizer(const std::vector<SplitSpec>& splits, const std::string& origin) {
  // MULTILINE: Oniguruma's Ruby syntax, which HF uses, makes ^ and $ line anchors. UCP makes what
  // translation leaves (\d, \w, POSIX classes) Unicode-aware too, as in Oniguruma.
  auto compile = [&](const std::string& pattern, const SplitSpec& s) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    const uint32_t options = s.literal ? PCRE2_UTF | PCRE2_LITERAL  // LITERAL admits no UCP
                                       : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     options, &error, &offset, nullptr);
    if (!code)
      fail(origin, ": field '", s.field, "': regex does not compile (offset ", offset,
           " after translation): ", pcre2_message(error));
    // JIT is an accelerator only: when unavailable pcre2_match interprets the same pattern.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    return code;
  };
  std::vector<std::string> native_patterns, literals;
  for (const SplitSpec& s : splits) {
    auto re = std::make_unique<Regex>();
    re->field = s.field;
    if (s.literal) {
      re->native = compile(s.pattern, s);
      literals.push_back(s.pattern);
    } else {
      const TranslatedRegex t = translate_regex(s.pattern, s.field);
      re->native = compile(t.native, s);
      native_patterns.push_back(t.native);
      if (t.uses_categories) {
        re->exact = compile(t.exact, s);
        uses_categories_ = true;
      }
    }
    steps_.push_back(std::move(re));
  }
  if (uses_categories_) stand_ins_ = std::make_unique<DriftStandIns>(native_patterns, literals);
}

PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer::~PreTokenizer() = default;

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  if (text.empty()) return;
  MatchScratch& ms = scratch_for_thread();
  // Text with drifting characters is split either with stand-ins in their place (same offsets,
  // native patterns) or, when that is impossible, with the exact patterns.
  bool exact = false;
  std::string substituted;
  std::string_view subject_text = text;
  if (uses_categories_) {
    switch (stand_ins_->substitute(text, substituted)) {
      case DriftStandIns::Outcome::kNoDrift: break;
      case DriftStandIns::Outcome::kSubstituted: subject_text = substituted; break;
      case DriftStandIns::Outcome::kNeedsExact: exact = true; break;
    }
  }
  std::vector<std::string_view> current{subject_text}, next;
  for (const auto& re : steps_) {
    const pcre2_code* code = exact && re->exact ? re->exact : re->native;
    next.clear();
    for (std::string_view piece : current) {
      // HF `Split` (Isolated): every match and every non-empty gap becomes a piece. Each piece is
      // its own subject, so look-arounds never see past its ends (" 3" -> " ", "3").
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
      size_t prev = 0, start = 0;
      while (start <= piece.size()) {
        const int rc = pcre2_match(code, subject, piece.size(), start, PCRE2_NO_UTF_CHECK,
                                   ms.data, ms.context);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0)
          fail("pre-tokenizer regex '", re->field, "' failed on a ", piece.size(),
               "-byte piece: ", pcre2_message(rc));
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(ms.data);
        const size_t m0 = ov[0], m1 = ov[1];
        if (m0 > prev) next.push_back(piece.substr(prev, m0 - prev));
        if (m1 > m0) next.push_back(piece.substr(m0, m1 - m0));
        prev = m1;
        // After an empty match the search resumes one character later (Oniguruma find_iter).
        start = m1 > m0 ? m1 : m1 + (m1 < piece.size() ? char_length(piece[m1]) : 1);
      }
      if (prev < piece.size()) next.push_back(piece.substr(prev));
    }
    current.swap(next);
  }
  for (std::string_view piece : current)  // back to the caller's bytes, at the same offsets
    pieces.push_back(text.substr(piece.data() - subject_text.data(), piece.size()));
}

}  // namespace dsv4
