// The context a subcommand can serve — the longest sequence one sequence slot reaches,
// Forward::kv_cache().max_context (the config's max_position_embeddings, the KV budget, --ctx-size)
// — and what it implies for the inputs, checked before any work starts.
#pragma once

#include <cstdint>
#include <string>

#include "model/forward.h"

namespace dsv4::cli {

// Error "<what>: N tokens, longer than the context of C tokens (...)" when n_tokens > C.
void check_fits_context(const Forward& f, int64_t n_tokens, const std::string& what);

// Generation: the prompt must leave room for at least one generated token (Error naming both
// lengths); max_tokens beyond the room left is capped, with a note on stderr, so the output ends
// with finish reason "length" at the end of the context. Returns the (capped) max_tokens.
int64_t max_tokens_in_context(const Forward& f, int64_t prompt_tokens, int64_t max_tokens);

}  // namespace dsv4::cli
