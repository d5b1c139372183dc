# The reference's quantisation points (architecture.md §12, design.md "official") patched onto an HF
# DeepseekV4ForCausalLM that runs dequantised weights in FP32; the formats themselves live in formats.py.
#
# Points simulated (everything else stays FP32, including wo_a, see testdata/parity/README.md):
#   * FP8 E4M3 1×128 activation round trip in front of every FP8/FP4 GEMM: wq_a, wq_b, wkv, wo_b,
#     indexer.wq_b, shared experts w1/w3/w2, routed experts w1/w3/w2 (e_proj/h_proj belong to MTP; HF has none).
#   * KV NoPE (first head_dim-64 dims) FP8 round trip in 1×64 blocks: window kv and main compressed kv.
#   * Indexer q and indexer keys: Hadamard(128)/sqrt(128) then FP4 E2M1 round trip in 1×32 blocks.
#   * Routed experts: routing weight applied to h before the (quantised) w2 input (§8.2).
import torch
import torch.nn.functional as F

from . import formats

ACT_BLOCK = 128   # §11.2: per-token 1×128 activation blocks
KV_BLOCK = 64     # §12: KV NoPE blocks
FP4_BLOCK = 32    # §12: indexer FP4 blocks
ROPE_DIM = 64     # §4.4: trailing rope dims stay unquantised


def _act_quant_pre_hook(module, args):
    return (formats.fake_quant_fp8_act(args[0], ACT_BLOCK),) + tuple(args[1:])


def _kv_nope_hook(module, args, output):
    # RoPE touches only the trailing 64 dims, so rounding the NoPE dims right after the norm equals
    # rounding them after RoPE (§4.2 order).
    nope = output.shape[-1] - ROPE_DIM
    return torch.cat([formats.fake_quant_fp8_act(output[..., :nope], KV_BLOCK), output[..., nope:]], dim=-1)


def _indexer_scorer_forward(scorer):
    original = scorer.forward

    def forward(q, compressed_kv, hidden_states):
        # Quantising every cached key again on each call gives the same values as quantising once at emission
        # (the round trip is a deterministic per-row function).
        q = formats.fake_quant_fp4(formats.hadamard(q), FP4_BLOCK)
        k = formats.fake_quant_fp4(formats.hadamard(compressed_kv), FP4_BLOCK)
        return original(q, k, hidden_states)
    return forward


def _experts_forward(experts):
    def forward(hidden_states, top_k_index, top_k_weights):
        final = torch.zeros_like(hidden_states)
        for e in range(experts.num_experts):
            token_idx, pos = torch.where(top_k_index == e)
            if token_idx.numel() == 0:
                continue
            x = formats.fake_quant_fp8_act(hidden_states[token_idx], ACT_BLOCK)
            h = experts._apply_gate(F.linear(x, experts.gate_up_proj[e]))
            h = h * top_k_weights[token_idx, pos, None]          # §8.2: weight before w2
            h = formats.fake_quant_fp8_act(h, ACT_BLOCK)
            final.index_add_(0, token_idx, F.linear(h, experts.down_proj[e]).to(final.dtype))
        return final
    return forward


def patch_official(model) -> None:
    """Install the §12 points on every decoder layer of an HF DeepseekV4ForCausalLM (in place)."""
    for layer in model.model.layers:
        attn = layer.self_attn
        for lin in (attn.q_a_proj, attn.q_b_proj, attn.kv_proj, attn.o_b_proj):
            lin.register_forward_pre_hook(_act_quant_pre_hook)
        attn.kv_norm.register_forward_hook(_kv_nope_hook)
        if attn.compressor is not None:
            attn.compressor.kv_norm.register_forward_hook(_kv_nope_hook)
            indexer = getattr(attn.compressor, "indexer", None)
            if indexer is not None:
                indexer.q_b_proj.register_forward_pre_hook(_act_quant_pre_hook)
                indexer.scorer.forward = _indexer_scorer_forward(indexer.scorer)
        shared = layer.mlp.shared_experts
        for lin in (shared.gate_proj, shared.up_proj, shared.down_proj):
            lin.register_forward_pre_hook(_act_quant_pre_hook)
        layer.mlp.experts.forward = _experts_forward(layer.mlp.experts)
