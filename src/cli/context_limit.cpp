// check_fits_context / max_tokens_in_context (context_limit.h). The context counts every token a
// sequence holds: prompt and generated (llama.cpp's n_ctx, vLLM's max_model_len).
#include "cli/context_limit.h"

#include <cstdio>

#include "model/config.h"
#include "util/error.h"

namespace dsv4::cli {

namespace {

std::string context_text(const Forward& f) {
  return cat("the context of ", f.kv_cache().max_context, " tokens (--ctx-size; the model's max_position_embeddings is ",
             f.config().max_position_embeddings, ")");
}

}  // namespace

void check_fits_context(const Forward& f, int64_t n_tokens, const std::string& what) {
  if (n_tokens > f.kv_cache().max_context)
    fail(what, ": ", n_tokens, " tokens, longer than ", context_text(f));
}

int64_t max_tokens_in_context(const Forward& f, int64_t prompt_tokens, int64_t max_tokens) {
  const int64_t ctx = f.kv_cache().max_context;
  if (prompt_tokens >= ctx)
    fail("the prompt is ", prompt_tokens, " tokens, ", prompt_tokens > ctx ? "longer than " : "as long as ",
         context_text(f), ": no room to generate");
  const int64_t room = ctx - prompt_tokens;
  if (max_tokens <= room) return max_tokens;
  std::fprintf(stderr, "note: --max-tokens %lld capped to %lld: the prompt (%lld tokens) and the answer share %s\n",
               (long long)max_tokens, (long long)room, (long long)prompt_tokens, context_text(f).c_str());
  return room;
}

}  // namespace dsv4::cli
