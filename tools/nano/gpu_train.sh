#!/usr/bin/env bash
# Driver for the GPU machine (device `run`): installs the carried transformers wheel (the image's
# transformers may predate the oracle's), trains + evaluates + exports with train.py under a
# hard time limit, and copies the results into $OUT (at most 8 files of <= 16 MiB, 64 MiB in
# all): the BF16 master shards, a tar of logs/results/config, the log. The quantised shards
# (27 MB more) do not fit beside the master; export.py re-creates them byte for byte from the
# master (checked on the first run: identical shard 2 and index).
# Inputs: build-nano/data (prepare_corpus.py + train_tokenizer.py output), .whl/transformers-*.whl.
# Run from the repository root, e.g. with carry [".whl", "build-nano/data"]:
#   bash tools/nano/gpu_train.sh [train_seconds]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-build-nano/gpu_out}
mkdir -p "$OUT"
TRAIN_SECONDS=${1:-330}
if ls .whl/transformers-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
  # Keep the image's own transformers if the carried one does not import with this torch.
  python3 -c "from transformers import DeepseekV4ForCausalLM" || { echo "carried transformers failed; image's"; unset PYTHONPATH; }
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)"
RUN=/tmp/nano_run
# Hard guard: training stops itself after TRAIN_SECONDS; evaluation/export/sampling follow.
timeout $((TRAIN_SECONDS + 200)) python3 tools/nano/train.py --data build-nano/data --out "$RUN" \
  --train-seconds "$TRAIN_SECONDS" 2>&1 | tee "$OUT/train.log"
rc=${PIPESTATUS[0]}
cp "$RUN"/master-*.safetensors "$OUT"/ 2>/dev/null
( cd "$RUN" && tar -cf "$OUT/meta.tar" train_log.jsonl results.json samples.txt nano/config.json \
    nano/model.safetensors.index.json nano/tokenizer.json nano/tokenizer_config.json 2>/dev/null )
ls -la "$OUT"
exit $rc
