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

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;
  std::string field;
  ~Regex() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(const std::vector<SplitSpec>& splits, const std::string& origin) {
  for (const SplitSpec& s : splits) {
    auto re = std::make_unique<Regex>();
    re->field = s.field;
    int error = 0;
    PCRE2_SIZE offset = 0;
    // \p{..} and \s are spelled out with HF's Unicode version (regex_translate.h); UCP makes what
    // remains (\d, \w, POSIX classes) Unicode-aware too, as in Oniguruma. MULTILINE: Oniguruma's
    // Ruby syntax, which HF uses, makes ^ and $ line anchors.
    const std::string pattern = s.literal ? s.pattern : translate_regex(s.pattern, s.field);
    const uint32_t options =
        PCRE2_UTF | PCRE2_UCP | (s.literal ? PCRE2_LITERAL : PCRE2_MULTILINE);
    re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                             options, &error, &offset, nullptr);
    if (!re->code)
      fail(origin, ": field '", s.field, "': regex does not compile (offset ", offset,
           " after translation): ", pcre2_message(error));
    // JIT is an accelerator only: when unavailable pcre2_match interprets the same pattern.
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);
    steps_.push_back(std::move(re));
  }
}

PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer::~PreTokenizer() = default;

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces) const {
  if (text.empty()) return;
  MatchScratch& ms = scratch_for_thread();
  std::vector<std::string_view> current{text}, next;
  for (const auto& re : steps_) {
    next.clear();
    for (std::string_view piece : current) {
      // HF `Split` (Isolated): every match and every non-empty gap becomes a piece. Each piece is
      // its own subject, so look-arounds never see past its ends (" 3" -> " ", "3").
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
      size_t prev = 0, start = 0;
      while (start <= piece.size()) {
        const int rc = pcre2_match(re->code, subject, piece.size(), start, PCRE2_NO_UTF_CHECK,
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
  pieces.insert(pieces.end(), current.begin(), current.end());
}

}  // namespace dsv4
