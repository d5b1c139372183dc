#!/usr/bin/env python3
# Exports the nano model in the official DeepSeek-V4 checkpoint layout (architecture.md §11):
# FP8 E4M3 weights with one UE8M0 scale per 128x128 tile (§11.2), MXFP4 routed experts (E2M1,
# low nibble = even element, one E8M0 scale per 32 inputs, §11.3), BF16 embed/head/norms/
# compressors/router, F32 mHC/sinks/ape/gate.bias, I64 tid2eid; sharded safetensors + index.
# Also the matching dequantisers (the loader for eval_ppl.py). Training is in train.py.
#
# Needs: numpy, torch (only to round F32 -> BF16 and for the self-test). Usage:
#   export.py --master DIR --out DIR     (DIR holds master-*.safetensors written by train.py)
#   export.py --selftest                 (quantisers against independent references)

import argparse
import glob
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

kE4M3Max = 448.0        # OCP E4M3 largest finite value
kE2M1Max = 6.0          # E2M1 largest value
kFp8Tile = 128          # §11.2 weight_block_size
kFp4Block = 32          # §11.3 inputs per E8M0 scale
kE8M0Bias = 127
kMaxShardBytes = 15 * 1024 * 1024  # device transfers cap files at 16 MiB


def _e4m3_table() -> np.ndarray:
    """Values of the non-negative finite E4M3 codes 0x00..0x7E (0x7F is NaN), increasing."""
    v = []
    for code in range(0x7F):
        e, m = code >> 3, code & 7
        v.append(m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
    return np.array(v, dtype=np.float64)


E4M3 = _e4m3_table()
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float64)


def _round_to_grid(x: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Index of the nearest grid value to |x| (x already within the grid's range), ties to the
    even code (round-to-nearest-even: even code = even mantissa LSB)."""
    a = np.abs(x)
    hi = np.clip(np.searchsorted(grid, a, side="left"), 1, len(grid) - 1)
    lo = hi - 1
    dlo, dhi = a - grid[lo], grid[hi] - a
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (hi % 2 == 0))
    return np.where(pick_hi, hi, lo)


def _pow2_scale_exponent(amax: np.ndarray, qmax: float) -> np.ndarray:
    """UE8M0 exponent e with 2^e = 2^ceil(log2(amax / qmax)) (§11.2), clamped to E8M0's range."""
    amax = np.maximum(amax, np.float64(2.0) ** -126 * qmax)  # all-zero block: smallest scale
    return np.clip(np.ceil(np.log2(amax / qmax)), -kE8M0Bias, kE8M0Bias).astype(np.int32)


def quant_fp8(w: np.ndarray):
    """w [out, in] float -> (codes uint8 [out, in], scale bytes uint8 [ceil(out/128), ceil(in/128)])."""
    w = w.astype(np.float64)
    o, i = w.shape
    so, si = -(-o // kFp8Tile), -(-i // kFp8Tile)
    pad = np.zeros((so * kFp8Tile, si * kFp8Tile))
    pad[:o, :i] = w
    tiles = pad.reshape(so, kFp8Tile, si, kFp8Tile)
    exp = _pow2_scale_exponent(np.abs(tiles).max(axis=(1, 3)), kE4M3Max)      # [so, si]
    scaled = tiles / (2.0 ** exp)[:, None, :, None]
    scaled = np.clip(scaled, -kE4M3Max, kE4M3Max)  # saturate (cannot trigger with ceil scales)
    idx = _round_to_grid(scaled, E4M3)
    codes = (idx | np.where(scaled < 0, 0x80, 0)).astype(np.uint8)
    codes = codes.reshape(so * kFp8Tile, si * kFp8Tile)[:o, :i]
    return np.ascontiguousarray(codes), (exp + kE8M0Bias).astype(np.uint8)


def dequant_fp8(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    mag = np.append(E4M3, np.nan)[codes & 0x7F]
    val = np.where(codes & 0x80, -mag, mag)
    s = 2.0 ** (scale.astype(np.float64) - kE8M0Bias)
    s = np.repeat(np.repeat(s, kFp8Tile, 0), kFp8Tile, 1)[:codes.shape[0], :codes.shape[1]]
    return (val * s).astype(np.float32)


def quant_mxfp4(w: np.ndarray):
    """w [out, in] (in % 32 == 0) -> (packed int8 [out, in/2], scale bytes uint8 [out, in/32])."""
    w = w.astype(np.float64)
    o, i = w.shape
    assert i % kFp4Block == 0, w.shape
    blocks = w.reshape(o, i // kFp4Block, kFp4Block)
    exp = _pow2_scale_exponent(np.abs(blocks).max(axis=2), kE2M1Max)           # [o, i/32]
    scaled = np.clip(blocks / (2.0 ** exp)[:, :, None], -kE2M1Max, kE2M1Max)
    idx = _round_to_grid(scaled, E2M1)
    nib = (idx | np.where(scaled < 0, 8, 0)).astype(np.uint8).reshape(o, i)
    packed = (nib[:, 0::2] | (nib[:, 1::2] << 4)).astype(np.uint8)  # low nibble = even element
    return packed.view(np.int8), (exp + kE8M0Bias).astype(np.uint8)


def dequant_mxfp4(packed: np.ndarray, scale: np.ndarray) -> np.ndarray:
    p = packed.view(np.uint8)
    o = p.shape[0]
    nib = np.empty((o, p.shape[1] * 2), dtype=np.uint8)
    nib[:, 0::2], nib[:, 1::2] = p & 0xF, p >> 4
    mag = E2M1[nib & 7]
    val = np.where(nib & 8, -mag, mag)
    s = np.repeat(2.0 ** (scale.astype(np.float64) - kE8M0Bias), kFp4Block, axis=1)
    return (val * s).astype(np.float32)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    import torch
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


# ---------------------------------------------------------------------------------------------

def export(master: dict, out_dir: str, tokenizer_path: str | None = None) -> list:
    """master: HF name -> float32 np.ndarray (or int64 for tid2eid). Writes config.json,
    model-0000k-of-0000n.safetensors, model.safetensors.index.json. Returns the shard paths."""
    cfg = common.NANO_CONFIG
    tensors = {}
    for off, hf, kind in common.name_map(cfg):
        w = master[hf]
        if kind == "bf16":
            tensors[off] = ("BF16", to_bf16_bits(w), w.shape)
        elif kind == "f32":
            tensors[off] = ("F32", w.astype(np.float32), w.shape)
        elif kind == "i64":
            tensors[off] = ("I64", w.astype(np.int64), w.shape)
        elif kind == "fp8":
            q, s = quant_fp8(w)
            tensors[off] = ("F8_E4M3", q, q.shape)
            tensors[off[:-len("weight")] + "scale"] = ("F8_E8M0", s, s.shape)
    I = cfg["moe_intermediate_size"]
    for off, hf in common.expert_prefixes(cfg):
        gu, dn = master[hf + "gate_up_proj"], master[hf + "down_proj"]   # [E, 2I, D], [E, D, I]
        for e in range(gu.shape[0]):
            for w, mat in (("w1", gu[e, :I]), ("w3", gu[e, I:]), ("w2", dn[e])):
                q, s = quant_mxfp4(mat)
                tensors[f"{off}{e}.{w}.weight"] = ("I8", q, q.shape)
                tensors[f"{off}{e}.{w}.scale"] = ("F8_E8M0", s, s.shape)
    # Shards: fill in name order up to kMaxShardBytes.
    shards, cur, cur_bytes = [], {}, 0
    for name in sorted(tensors):
        n = tensors[name][1].nbytes
        if cur and cur_bytes + n > kMaxShardBytes:
            shards.append(cur); cur, cur_bytes = {}, 0
        cur[name] = tensors[name]; cur_bytes += n
    shards.append(cur)
    os.makedirs(out_dir, exist_ok=True)
    for old in glob.glob(os.path.join(out_dir, "model*.safetensors")):
        os.remove(old)
    weight_map, paths, total = {}, [], 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        common.write_safetensors(os.path.join(out_dir, fname), shard, {"format": "pt"})
        paths.append(os.path.join(out_dir, fname))
        for name, (dt, arr, shape) in shard.items():
            weight_map[name] = fname; total += arr.nbytes
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump({**cfg, **common.QUANT_KEYS}, f, indent=2)
    if tokenizer_path:
        import shutil
        shutil.copy(tokenizer_path, os.path.join(out_dir, "tokenizer.json"))
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump({"add_bos_token": False, "add_eos_token": False,
                       "bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>",
                       "pad_token": "<｜end▁of▁sentence｜>", "model_max_length": common.kTrainContext,
                       "tokenizer_class": "PreTrainedTokenizerFast"}, f, ensure_ascii=False, indent=2)
    print(f"exported {len(tensors)} tensors, {total / 1e6:.2f} MB in {len(shards)} shards to {out_dir}")
    return paths


def load_official(model_dir: str) -> dict:
    """Reads a checkpoint folder in the official layout, dequantises, returns HF name -> np array
    (float32, or int64 for tid2eid), experts fused as HF expects."""
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    raw = {}
    for p in sorted(glob.glob(os.path.join(model_dir, "model*.safetensors"))):
        raw.update(common.read_safetensors(p))
    out = {}
    for off, hf, kind in common.name_map(cfg):
        dt, a = raw[off]
        if kind == "fp8":
            out[hf] = dequant_fp8(a, raw[off[:-len("weight")] + "scale"][1])
        elif dt == "BF16":
            out[hf] = bf16_bits_to_f32(a)
        else:
            out[hf] = a.copy()
    I, E = cfg["moe_intermediate_size"], cfg["n_routed_experts"]
    for off, hf in common.expert_prefixes(cfg):
        w = {k: np.stack([dequant_mxfp4(raw[f"{off}{e}.{k}.weight"][1], raw[f"{off}{e}.{k}.scale"][1])
                          for e in range(E)]) for k in ("w1", "w2", "w3")}
        out[hf + "gate_up_proj"] = np.concatenate([w["w1"], w["w3"]], axis=1)
        out[hf + "down_proj"] = w["w2"]
    return out


def load_master(master_dir: str) -> dict:
    out = {}
    for p in sorted(glob.glob(os.path.join(master_dir, "master-*.safetensors"))):
        for name, (dt, a) in common.read_safetensors(p).items():
            out[name] = bf16_bits_to_f32(a) if dt == "BF16" else a.copy()
    if not out:
        raise SystemExit(f"error: no master-*.safetensors in {master_dir}")
    return out


def selftest():
    import torch
    seed = int.from_bytes(os.urandom(4), "little")
    print("selftest seed", seed)
    rng = np.random.default_rng(seed)
    # FP8: codes must equal torch's float8_e4m3fn cast (RNE) of the same scaled values, and
    # dequant(quant(w)) must be within half an E4M3 ulp (2^-4 relative) of w per element.
    w = (rng.standard_normal((256, 384)) * np.exp(rng.uniform(-6, 3, (256, 1)))).astype(np.float32)
    q, s = quant_fp8(w)
    exp = s.astype(np.float64) - kE8M0Bias
    scaled = w.astype(np.float64) / np.repeat(np.repeat(2.0 ** exp, 128, 0), 128, 1)
    ref = torch.from_numpy(scaled).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    assert np.array_equal(ref, q), f"fp8 codes differ at {np.argwhere(ref != q)[:5]}"
    d = dequant_fp8(q, s)
    assert np.all(np.abs(d - w) <= np.abs(w) * 2.0 ** -4 + 2.0 ** -9 * np.repeat(np.repeat(2.0 ** exp, 128, 0), 128, 1)), "fp8 error"
    # MXFP4: compare with torch's float4_e2m1fn_x2 packing if available, else with a direct
    # nearest-value search over the 15 signed E2M1 values.
    w = (rng.standard_normal((64, 256)) * np.exp(rng.uniform(-4, 2, (64, 1)))).astype(np.float32)
    p, s = quant_mxfp4(w)
    d = dequant_mxfp4(p, s)
    sc = np.repeat(2.0 ** (s.astype(np.float64) - kE8M0Bias), 32, axis=1)
    x = w / sc
    signed = np.concatenate([-E2M1[::-1], E2M1])
    nearest_err = np.min(np.abs(x[..., None] - signed), axis=-1)
    assert np.allclose(np.abs(x - d / sc), nearest_err, atol=0), "fp4 not nearest"
    assert np.all(np.abs(x) <= 6.0) and np.all(np.abs(x).reshape(64, -1, 32).max(-1) > 3.0 - 1e-12), "fp4 scale not tight"
    print("selftest ok: fp8 codes == torch float8_e4m3fn; mxfp4 nearest with tight power-of-two scales")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--master")
    ap.add_argument("--out")
    ap.add_argument("--tokenizer")
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args()
    if a.selftest:
        selftest()
        return
    if not (a.master and a.out):
        ap.error("--master and --out are required (or --selftest)")
    export(load_master(a.master), a.out, a.tokenizer)


if __name__ == "__main__":
    main()
