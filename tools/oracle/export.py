# Random tiny DeepSeek-V4 models in the official checkpoint layout (architecture.md §1, §11.1, §15.1):
# config.json, model.safetensors (BF16/F32 variant or FP8-block + MXFP4 quantised variant) and the HF state dict
# (§11.4 names) that HF runs; the number formats themselves live in formats.py.
import json
import math
import struct

import torch

from . import formats


def official_config(spec: dict, quantised: bool) -> dict:
    """config.json with the upstream key names (§1.1/§15.1); quantisation keys only in the quantised variant."""
    cfg = {
        "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
        "vocab_size": spec["vocab_size"], "hidden_size": spec["hidden_size"],
        "num_hidden_layers": len(spec["compress_ratios"]) - 1,
        "num_attention_heads": spec["num_attention_heads"], "num_key_value_heads": 1,
        "head_dim": spec["head_dim"], "qk_rope_head_dim": 64,
        "q_lora_rank": spec["q_lora_rank"], "o_groups": spec["o_groups"], "o_lora_rank": spec["o_lora_rank"],
        "sliding_window": 128, "compress_ratios": spec["compress_ratios"],
        "rope_theta": 10000, "compress_rope_theta": 160000,
        "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                         "beta_fast": 32, "beta_slow": 1},
        "max_position_embeddings": 1048576,
        "index_n_heads": spec["index_n_heads"], "index_head_dim": 128, "index_topk": spec["index_topk"],
        "n_routed_experts": spec["n_routed_experts"], "n_shared_experts": 1,
        "num_experts_per_tok": spec["num_experts_per_tok"],
        "moe_intermediate_size": spec["moe_intermediate_size"], "num_hash_layers": spec["num_hash_layers"],
        "scoring_func": "sqrtsoftplus", "topk_method": "noaux_tc", "norm_topk_prob": True,
        "routed_scaling_factor": spec["routed_scaling_factor"], "swiglu_limit": 10.0, "hidden_act": "silu",
        "hc_mult": 4, "hc_sinkhorn_iters": 20, "hc_eps": 1e-06, "rms_norm_eps": 1e-06,
        "num_nextn_predict_layers": 1, "bos_token_id": 0, "eos_token_id": 1,
        "tie_word_embeddings": False, "attention_bias": False, "torch_dtype": "bfloat16",
    }
    if quantised:
        cfg["expert_dtype"] = "fp4"
        cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                                      "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    return cfg


# Tensor kinds decide the stored dtype: "fp8" linears (§11.1/§12), "fp4" routed experts, "bf16", "f32", "i64".
def random_master_weights(cfg: dict, gen: torch.Generator) -> dict:
    """FP32 master weights with official names, kind tags and realistic scales:
    linears N(0, 1/fan_in) (std 1/sqrt(fan_in)), norms 1 + 0.1·N, and non-trivial ape / sinks / mHC base and scale /
    router bias / tid2eid. Returns {name: (kind, tensor)}; BF16 tensors are already rounded to BF16."""
    D, V, H, d = cfg["hidden_size"], cfg["vocab_size"], cfg["num_attention_heads"], cfg["head_dim"]
    Q, G, R = cfg["q_lora_rank"], cfg["o_groups"], cfg["o_lora_rank"]
    E, k, I = cfg["n_routed_experts"], cfg["num_experts_per_tok"], cfg["moe_intermediate_size"]
    Hi, di, n = cfg["index_n_heads"], cfg["index_head_dim"], cfg["hc_mult"]
    L = cfg["num_hidden_layers"]
    w = {}

    def randn(*shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=gen) * std + mean

    def lin(name, out, inn, kind):
        w[name] = (kind, randn(out, inn, std=1.0 / math.sqrt(inn)))

    def norm(name, size):
        w[name] = ("bf16", randn(size, std=0.1, mean=1.0))

    def hc(prefix, rows):
        # fn scaled so that fn·v̂ (v̂ has unit RMS over n·D values) is O(1): std 1/sqrt(n·D).
        w[prefix + "_fn"] = ("f32", randn(rows, n * D, std=1.0 / math.sqrt(n * D)))
        w[prefix + "_base"] = ("f32", randn(rows, std=1.0))
        nscale = 3 if rows == (2 + n) * n else 1
        w[prefix + "_scale"] = ("f32", torch.rand(nscale, generator=gen) * 1.5 + 0.5)

    def compressor(prefix, ratio, c):
        coff = 2 if ratio == 4 else 1
        lin(prefix + "wkv.weight", coff * c, D, "bf16")
        lin(prefix + "wgate.weight", coff * c, D, "bf16")
        w[prefix + "ape"] = ("f32", randn(ratio, coff * c, std=1.0))
        norm(prefix + "norm.weight", c)

    def block(prefix, ratio, hashed):
        norm(prefix + "attn_norm.weight", D)
        norm(prefix + "ffn_norm.weight", D)
        hc(prefix + "hc_attn", (2 + n) * n)
        hc(prefix + "hc_ffn", (2 + n) * n)
        a = prefix + "attn."
        w[a + "attn_sink"] = ("f32", randn(H, std=1.0))
        lin(a + "wq_a.weight", Q, D, "fp8")
        norm(a + "q_norm.weight", Q)
        lin(a + "wq_b.weight", H * d, Q, "fp8")
        lin(a + "wkv.weight", d, D, "fp8")
        norm(a + "kv_norm.weight", d)
        lin(a + "wo_a.weight", G * R, H * d // G, "fp8")
        lin(a + "wo_b.weight", D, G * R, "fp8")
        if ratio:
            compressor(a + "compressor.", ratio, d)
        if ratio == 4:
            lin(a + "indexer.wq_b.weight", Hi * di, Q, "fp8")
            lin(a + "indexer.weights_proj.weight", Hi, D, "bf16")
            compressor(a + "indexer.compressor.", 4, di)
        f = prefix + "ffn."
        lin(f + "gate.weight", E, D, "bf16")
        if hashed:
            # distinct expert ids per row, < E (§8.1; int64 in safetensors, §14.9)
            w[f + "gate.tid2eid"] = ("i64", torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(V)]))
        else:
            w[f + "gate.bias"] = ("f32", randn(E, std=0.3))
        for e in range(E):
            lin(f"{f}experts.{e}.w1.weight", I, D, "fp4")
            lin(f"{f}experts.{e}.w2.weight", D, I, "fp4")
            lin(f"{f}experts.{e}.w3.weight", I, D, "fp4")
        lin(f + "shared_experts.w1.weight", I, D, "fp8")
        lin(f + "shared_experts.w2.weight", D, I, "fp8")
        lin(f + "shared_experts.w3.weight", I, D, "fp8")

    w["embed.weight"] = ("bf16", randn(V, D, std=1.0))
    w["head.weight"] = ("bf16", randn(V, D, std=2.0 / math.sqrt(D)))
    norm("norm.weight", D)
    hc("hc_head", n)
    ratios = cfg["compress_ratios"]
    for l in range(L):
        block(f"layers.{l}.", ratios[l], l < cfg["num_hash_layers"])
    # MTP block (§10): layer id L, ratio ratios[L], score-routed; HF drops it but the engine's loader reads it.
    block("mtp.0.", ratios[L], False)
    lin("mtp.0.e_proj.weight", D, D, "fp8")
    lin("mtp.0.h_proj.weight", D, D, "fp8")
    for nm in ("enorm", "hnorm", "norm"):
        norm(f"mtp.0.{nm}.weight", D)
    hc("mtp.0.hc_head", n)

    # BF16 is the master precision of every non-F32 tensor: both variants start from the same BF16 values.
    out = {}
    for name, (kind, t) in w.items():
        if kind in ("bf16", "fp8", "fp4"):
            t = t.to(torch.bfloat16).float()
        out[name] = (kind, t)
    return out


def checkpoint_tensors(master: dict, quantised: bool):
    """Stored tensors {name: (safetensors dtype, raw tensor)} and the effective FP32 weights HF must run
    {name: tensor} (the dequantised values in the quantised variant)."""
    stored, effective = {}, {}
    for name, (kind, t) in master.items():
        if kind == "f32":
            stored[name] = ("F32", t.float())
            effective[name] = t.float()
        elif kind == "i64":
            stored[name] = ("I64", t.long())
            effective[name] = t.long()
        elif kind == "bf16" or not quantised:
            stored[name] = ("BF16", t.to(torch.bfloat16))
            effective[name] = t.float()
        elif kind == "fp8":
            q, s, deq = formats.quant_fp8_block(t)
            stored[name] = ("F8_E4M3", q)
            stored[name[: -len("weight")] + "scale"] = ("F8_E8M0", s)
            effective[name] = deq
        elif kind == "fp4":
            q, s, deq = formats.quant_mxfp4(t)
            stored[name] = ("I8", q)
            stored[name[: -len("weight")] + "scale"] = ("F8_E8M0", s)
            effective[name] = deq
        else:
            raise ValueError(f"unknown tensor kind {kind} for {name}")
    return stored, effective


def write_safetensors(path: str, tensors: dict) -> None:
    """Own safetensors writer (8-byte LE header length, JSON header, raw little-endian data) so that the
    F8_E4M3 / F8_E8M0 dtype strings are exactly the official ones."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        dtype, t = tensors[name]
        raw = t.contiguous().view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def hf_state_dict(effective: dict, cfg: dict) -> dict:
    """Map official names (§11.1) to HF in-memory names (§11.4); routed experts fused into
    gate_up_proj [E, 2I, D] (w1 rows first, then w3) and down_proj [E, D, I]. mtp.* is dropped (HF has no MTP)."""
    sd = {}
    E = cfg["n_routed_experts"]
    leaf = [
        ("attn_norm.weight", "input_layernorm.weight"), ("ffn_norm.weight", "post_attention_layernorm.weight"),
        ("hc_attn_fn", "attn_hc.fn"), ("hc_attn_base", "attn_hc.base"), ("hc_attn_scale", "attn_hc.scale"),
        ("hc_ffn_fn", "ffn_hc.fn"), ("hc_ffn_base", "ffn_hc.base"), ("hc_ffn_scale", "ffn_hc.scale"),
        ("attn.attn_sink", "self_attn.sinks"), ("attn.wq_a.weight", "self_attn.q_a_proj.weight"),
        ("attn.q_norm.weight", "self_attn.q_a_norm.weight"), ("attn.wq_b.weight", "self_attn.q_b_proj.weight"),
        ("attn.wkv.weight", "self_attn.kv_proj.weight"), ("attn.kv_norm.weight", "self_attn.kv_norm.weight"),
        ("attn.wo_a.weight", "self_attn.o_a_proj.weight"), ("attn.wo_b.weight", "self_attn.o_b_proj.weight"),
        ("attn.compressor.wkv.weight", "self_attn.compressor.kv_proj.weight"),
        ("attn.compressor.wgate.weight", "self_attn.compressor.gate_proj.weight"),
        ("attn.compressor.ape", "self_attn.compressor.position_bias"),
        ("attn.compressor.norm.weight", "self_attn.compressor.kv_norm.weight"),
        ("attn.indexer.wq_b.weight", "self_attn.compressor.indexer.q_b_proj.weight"),
        ("attn.indexer.weights_proj.weight", "self_attn.compressor.indexer.scorer.weights_proj.weight"),
        ("attn.indexer.compressor.wkv.weight", "self_attn.compressor.indexer.kv_proj.weight"),
        ("attn.indexer.compressor.wgate.weight", "self_attn.compressor.indexer.gate_proj.weight"),
        ("attn.indexer.compressor.ape", "self_attn.compressor.indexer.position_bias"),
        ("attn.indexer.compressor.norm.weight", "self_attn.compressor.indexer.kv_norm.weight"),
        ("ffn.gate.weight", "mlp.gate.weight"), ("ffn.gate.bias", "mlp.gate.e_score_correction_bias"),
        ("ffn.gate.tid2eid", "mlp.gate.tid2eid"),
        ("ffn.shared_experts.w1.weight", "mlp.shared_experts.gate_proj.weight"),
        ("ffn.shared_experts.w2.weight", "mlp.shared_experts.down_proj.weight"),
        ("ffn.shared_experts.w3.weight", "mlp.shared_experts.up_proj.weight"),
    ]
    sd["model.embed_tokens.weight"] = effective["embed.weight"]
    sd["lm_head.weight"] = effective["head.weight"]
    sd["model.norm.weight"] = effective["norm.weight"]
    sd["model.hc_head.hc_fn"] = effective["hc_head_fn"]
    sd["model.hc_head.hc_base"] = effective["hc_head_base"]
    sd["model.hc_head.hc_scale"] = effective["hc_head_scale"]
    for l in range(cfg["num_hidden_layers"]):
        p = f"layers.{l}."
        for src, dst in leaf:
            if p + src in effective:
                sd[f"model.layers.{l}.{dst}"] = effective[p + src]
        f = p + "ffn.experts."
        sd[f"model.layers.{l}.mlp.experts.gate_up_proj"] = torch.stack(
            [torch.cat([effective[f"{f}{e}.w1.weight"], effective[f"{f}{e}.w3.weight"]], 0) for e in range(E)])
        sd[f"model.layers.{l}.mlp.experts.down_proj"] = torch.stack(
            [effective[f"{f}{e}.w2.weight"] for e in range(E)])
    return sd
