# Shared pieces of the nano-model tools: the model configuration (upstream key names), the
# HF <-> official tensor-name map (architecture.md §11.1, §11.4), a minimal safetensors
# reader/writer, the MTP block (§10) built from HF modules, and llama.cpp-style strided perplexity.
# Training is in train.py, quantisation/export in export.py, evaluation in eval_ppl.py.
#
# Needs: torch, numpy, transformers >= 5.17 with models/deepseek_v4 (the HF oracle).

import copy
import json
import math
import struct

import numpy as np

# ---------------------------------------------------------------------------------------------
# Configuration (architecture.md §1.1 keys; shapes chosen for the FP8 128x128 / MXFP4-32 grids).
# Layer schedule as Flash: two sliding layers, then CSA/HCA alternating; 3 hash-routed layers;
# the last compress_ratios entry is the MTP block (sliding).

NANO_CONFIG = {
    "architectures": ["DeepseekV4ForCausalLM"],
    "model_type": "deepseek_v4",
    "vocab_size": 8192,
    "hidden_size": 256,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 1,
    "head_dim": 128,
    "qk_rope_head_dim": 64,
    "q_lora_rank": 256,
    "o_groups": 2,
    "o_lora_rank": 128,
    "sliding_window": 128,
    "compress_ratios": [0, 0, 4, 128, 4, 128, 4, 128, 0],
    "rope_theta": 10000,
    "compress_rope_theta": 160000,
    "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                     "beta_fast": 32, "beta_slow": 1},
    "max_position_embeddings": 1048576,
    "index_n_heads": 4,
    "index_head_dim": 128,
    "index_topk": 32,
    "n_routed_experts": 16,
    "n_shared_experts": 1,
    "num_experts_per_tok": 4,
    "moe_intermediate_size": 128,
    "num_hash_layers": 3,
    "scoring_func": "sqrtsoftplus",
    "topk_method": "noaux_tc",
    "norm_topk_prob": True,
    "routed_scaling_factor": 1.5,
    "swiglu_limit": 10.0,
    "hidden_act": "silu",
    "hc_mult": 4,
    "hc_sinkhorn_iters": 20,
    "hc_eps": 1e-06,
    "rms_norm_eps": 1e-06,
    "num_nextn_predict_layers": 1,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "torch_dtype": "bfloat16",
    "initializer_range": 0.02,
}

# What the shipped config.json adds (the release's quantisation, §11.2/§11.3).
QUANT_KEYS = {
    "expert_dtype": "fp4",
    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                            "activation_scheme": "dynamic", "weight_block_size": [128, 128]},
}

kTrainContext = 1024


def hf_config(official: dict):
    """DeepseekV4Config from upstream keys (HF folds compress_ratios etc., §1.3)."""
    from transformers import DeepseekV4Config
    # Deep copy: HF's rope validation writes into the nested rope_scaling dict.
    d = {k: copy.deepcopy(v) for k, v in official.items()
         if k not in ("expert_dtype", "quantization_config", "architectures", "torch_dtype", "topk_method")}
    d.pop("model_type", None)
    cfg = DeepseekV4Config(**d)
    cfg._attn_implementation = "eager"
    return cfg


# ---------------------------------------------------------------------------------------------
# Name map: official name -> (HF name, storage kind). Kinds: "bf16", "f32", "fp8", "i64",
# "expert" (MXFP4, handled separately because HF fuses experts).

def _layer_map(o: str, h: str, ratio: int, hash_layer: bool) -> list:
    m = [
        (f"{o}attn_norm.weight", f"{h}input_layernorm.weight", "bf16"),
        (f"{o}ffn_norm.weight", f"{h}post_attention_layernorm.weight", "bf16"),
    ]
    for site in ("attn", "ffn"):
        for part in ("fn", "base", "scale"):
            m.append((f"{o}hc_{site}_{part}", f"{h}{site}_hc.{part}", "f32"))
    a, ha = o + "attn.", h + "self_attn."
    m += [
        (f"{a}attn_sink", f"{ha}sinks", "f32"),
        (f"{a}wq_a.weight", f"{ha}q_a_proj.weight", "fp8"),
        (f"{a}q_norm.weight", f"{ha}q_a_norm.weight", "bf16"),
        (f"{a}wq_b.weight", f"{ha}q_b_proj.weight", "fp8"),
        (f"{a}wkv.weight", f"{ha}kv_proj.weight", "fp8"),
        (f"{a}kv_norm.weight", f"{ha}kv_norm.weight", "bf16"),
        (f"{a}wo_a.weight", f"{ha}o_a_proj.weight", "fp8"),
        (f"{a}wo_b.weight", f"{ha}o_b_proj.weight", "fp8"),
    ]
    if ratio:
        c, hc = a + "compressor.", ha + "compressor."
        m += [
            (f"{c}wkv.weight", f"{hc}kv_proj.weight", "bf16"),
            (f"{c}wgate.weight", f"{hc}gate_proj.weight", "bf16"),
            (f"{c}ape", f"{hc}position_bias", "f32"),
            (f"{c}norm.weight", f"{hc}kv_norm.weight", "bf16"),
        ]
    if ratio == 4:
        i, hi = a + "indexer.", ha + "compressor.indexer."
        m += [
            (f"{i}wq_b.weight", f"{hi}q_b_proj.weight", "fp8"),
            (f"{i}weights_proj.weight", f"{hi}scorer.weights_proj.weight", "bf16"),
            (f"{i}compressor.wkv.weight", f"{hi}kv_proj.weight", "bf16"),
            (f"{i}compressor.wgate.weight", f"{hi}gate_proj.weight", "bf16"),
            (f"{i}compressor.ape", f"{hi}position_bias", "f32"),
            (f"{i}compressor.norm.weight", f"{hi}kv_norm.weight", "bf16"),
        ]
    f, hf = o + "ffn.", h + "mlp."
    m.append((f"{f}gate.weight", f"{hf}gate.weight", "bf16"))
    if hash_layer:
        m.append((f"{f}gate.tid2eid", f"{hf}gate.tid2eid", "i64"))
    else:
        m.append((f"{f}gate.bias", f"{hf}gate.e_score_correction_bias", "f32"))
    for w, hn in (("w1", "gate_proj"), ("w2", "down_proj"), ("w3", "up_proj")):
        m.append((f"{f}shared_experts.{w}.weight", f"{hf}shared_experts.{hn}.weight", "fp8"))
    return m


def name_map(cfg: dict) -> list:
    """[(official, hf, kind)] for every non-expert tensor; MTP tensors use the HF names of our
    Mtp module below (prefix "mtp.")."""
    L = cfg["num_hidden_layers"]
    m = [
        ("embed.weight", "model.embed_tokens.weight", "bf16"),
        ("head.weight", "lm_head.weight", "bf16"),
        ("norm.weight", "model.norm.weight", "bf16"),
        ("hc_head_fn", "model.hc_head.hc_fn", "f32"),
        ("hc_head_base", "model.hc_head.hc_base", "f32"),
        ("hc_head_scale", "model.hc_head.hc_scale", "f32"),
    ]
    for l in range(L):
        m += _layer_map(f"layers.{l}.", f"model.layers.{l}.", cfg["compress_ratios"][l],
                        l < cfg["num_hash_layers"])
    m += _layer_map("mtp.0.", "mtp.layer.", 0, False)
    m += [
        ("mtp.0.e_proj.weight", "mtp.e_proj.weight", "fp8"),
        ("mtp.0.h_proj.weight", "mtp.h_proj.weight", "fp8"),
        ("mtp.0.enorm.weight", "mtp.enorm.weight", "bf16"),
        ("mtp.0.hnorm.weight", "mtp.hnorm.weight", "bf16"),
        ("mtp.0.norm.weight", "mtp.norm.weight", "bf16"),
        ("mtp.0.hc_head_fn", "mtp.hc_head.hc_fn", "f32"),
        ("mtp.0.hc_head_base", "mtp.hc_head.hc_base", "f32"),
        ("mtp.0.hc_head_scale", "mtp.hc_head.hc_scale", "f32"),
    ]
    return m


def expert_prefixes(cfg: dict) -> list:
    """[(official ffn prefix, HF experts prefix)] for every MoE (main layers + MTP)."""
    L = cfg["num_hidden_layers"]
    return ([(f"layers.{l}.ffn.experts.", f"model.layers.{l}.mlp.experts.") for l in range(L)]
            + [("mtp.0.ffn.experts.", "mtp.layer.mlp.experts.")])


# ---------------------------------------------------------------------------------------------
# safetensors (own reader/writer: the format is an 8-byte header length, a JSON header, data).

ST_DTYPES = {"BF16": (np.uint16, 2), "F32": (np.float32, 4), "F8_E4M3": (np.uint8, 1),
             "F8_E8M0": (np.uint8, 1), "I8": (np.int8, 1), "I64": (np.int64, 8),
             "U8": (np.uint8, 1)}


def write_safetensors(path: str, tensors: dict, metadata: dict | None = None):
    """tensors: name -> (dtype string, np.ndarray with the storage bytes, shape)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        dt, arr, shape = tensors[name]
        b = np.ascontiguousarray(arr).tobytes()
        n = int(np.prod(shape)) * ST_DTYPES[dt][1]
        assert len(b) == n, (name, len(b), n)
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        blobs.append(b)
        off += n
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path: str) -> dict:
    """name -> (dtype string, np.ndarray of storage type, shaped)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        npdt, size = ST_DTYPES[e["dtype"]]
        a, b = e["data_offsets"]
        arr = np.frombuffer(data[base + a:base + b], dtype=npdt).reshape(e["shape"])
        out[name] = (e["dtype"], arr)
    return out


# ---------------------------------------------------------------------------------------------
# MTP block (architecture.md §10), assembled from HF's decoder layer and hyper-head.

def make_mtp(cfg, model):
    import torch
    from torch import nn
    from transformers.models.deepseek_v4 import modeling_deepseek_v4 as mv4

    class Mtp(nn.Module):
        def __init__(self):
            super().__init__()
            c2 = copy.deepcopy(cfg)
            L = cfg.num_hidden_layers
            c2.num_hidden_layers = L + 1
            c2.layer_types = list(cfg.layer_types) + ["sliding_attention"]
            c2.mlp_layer_types = list(cfg.mlp_layer_types) + ["moe"]
            D = cfg.hidden_size
            self.e_proj = nn.Linear(D, D, bias=False)
            self.h_proj = nn.Linear(D, D, bias=False)
            self.enorm = mv4.DeepseekV4RMSNorm(D, eps=cfg.rms_norm_eps)
            self.hnorm = mv4.DeepseekV4RMSNorm(D, eps=cfg.rms_norm_eps)
            self.norm = mv4.DeepseekV4RMSNorm(D, eps=cfg.rms_norm_eps)
            self.layer = mv4.DeepseekV4DecoderLayer(c2, L)
            self.hc_head = mv4.DeepseekV4HyperHead(cfg)

        def forward(self, streams, next_ids, embed, position_embeddings, position_ids, attention_mask):
            # streams: [B, S, hc, D] main model's final state (pre hc_head); next_ids: [B, S]
            e = self.enorm(embed(next_ids))
            x = self.h_proj(self.hnorm(streams)) + self.e_proj(e).unsqueeze(2)
            x = self.layer(x, position_embeddings=position_embeddings, position_ids=position_ids,
                           attention_mask=attention_mask, input_ids=None, cache=None)
            return self.norm(self.hc_head(x))

    mtp = Mtp()
    mtp.apply(model._init_weights)
    # HF's _init_weights leaves some parameters alone when they are flagged as initialised;
    # set the ones that start as torch.empty explicitly (same values as HF's init).
    with torch.no_grad():
        for mod in mtp.modules():
            if isinstance(mod, mv4.DeepseekV4HyperConnection):
                mod.fn.normal_(0, cfg.initializer_range); mod.base.zero_(); mod.scale.fill_(1)
            elif isinstance(mod, mv4.DeepseekV4HyperHead):
                mod.hc_fn.normal_(0, cfg.initializer_range); mod.hc_base.zero_(); mod.hc_scale.fill_(1)
            elif isinstance(mod, mv4.DeepseekV4Attention):
                mod.sinks.zero_()
            elif isinstance(mod, mv4.DeepseekV4Experts):
                mod.gate_up_proj.normal_(0, cfg.initializer_range)
                mod.down_proj.normal_(0, cfg.initializer_range)
            elif isinstance(mod, mv4.DeepseekV4TopKRouter):
                mod.weight.normal_(0, cfg.initializer_range); mod.e_score_correction_bias.zero_()
            elif isinstance(mod, mv4.DeepseekV4RMSNorm):
                mod.weight.fill_(1)
            elif isinstance(mod, nn.Linear):
                mod.weight.normal_(0, cfg.initializer_range)
    return mtp


# ---------------------------------------------------------------------------------------------
# Perplexity, llama.cpp style: the token stream is cut into chunks of n_ctx tokens; each chunk
# is evaluated on its own with its first token replaced by BOS; only the predictions of the
# second half are scored (positions first = n_ctx/2 .. n_ctx-2 predict tokens first+1 .. n_ctx-1),
# so every scored token has at least n_ctx/2 tokens of context.

def strided_perplexity(logits_fn, tokens: list, n_ctx: int, bos: int, max_chunks: int = 0):
    """logits_fn(list[int]) -> np.ndarray [n, vocab] float. Returns (ppl, n_scored, nll_sum)."""
    n_chunks = len(tokens) // n_ctx
    if max_chunks:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks == 0:
        raise ValueError(f"need at least n_ctx={n_ctx} tokens, got {len(tokens)}")
    first = n_ctx // 2
    nll, count = 0.0, 0
    for c in range(n_chunks):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        chunk[0] = bos
        logits = np.asarray(logits_fn(chunk), dtype=np.float64)
        for p in range(first, n_ctx - 1):
            row = logits[p]
            mx = row.max()
            lse = mx + math.log(np.exp(row - mx).sum())
            nll += lse - row[chunk[p + 1]]
            count += 1
    return math.exp(nll / count), count, nll
