# Helpers for tools/hf_golden.py: number formats and quantisers (formats.py), random tiny models in the
# official checkpoint layout (export.py), and the reference's fake-quantisation points patched onto HF (official_numerics.py).
