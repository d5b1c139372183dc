#!/usr/bin/env python3
# Trains the nano DeepSeek-V4 with HF transformers' DeepseekV4ForCausalLM (the oracle's own
# modules) on the KJV corpus, then evaluates and exports it. Owns the training loop, the
# indexer alignment loss, the MTP loss and the aux-loss-free router bias update; the
# quantised export is export.py, the perplexity definition common.strided_perplexity.
#
# Needs: torch, numpy, tokenizers, transformers >= 5.17 (models/deepseek_v4). Inputs (--data):
# train.txt, dev.txt, validation.txt (prepare_corpus.py) and tokenizer.json (train_tokenizer.py).
# Outputs (--out): master-*.safetensors (BF16/F32 weights, HF names, + mtp.*), the shipped
# checkpoint in <out>/nano/, train_log.jsonl, results.json, samples.txt.
#
# Losses: next-token CE; + kMtpWeight * CE of the MTP block predicting token t+2 (§10); + the
# indexer alignment loss: KL(main attention's head-averaged distribution over all visible CSA
# entries || softmax of the indexer scores), with the indexer's inputs detached so it trains
# only the indexer (its top-k gives it no gradient otherwise) - DeepSeek-V3.2's recipe.

import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import export as exporter  # noqa: E402

kMtpWeight = 0.3
kIndexerWeight = 1.0
kBiasUpdate = 1e-3        # aux-loss-free balancing step (DeepSeek-V3)
kWarmupFrac = 0.05
kMinLrFrac = 0.1


def log(*a):
    print(*a, flush=True)


def tokenize(tok, path):
    text = open(path, encoding="utf-8").read()
    return tok.encode(text, add_special_tokens=False).ids


class Capture:
    """Forward hooks that collect what the extra losses need, only while `on`."""

    def __init__(self, model, cfg):
        from transformers.models.deepseek_v4 import modeling_deepseek_v4 as mv4
        self.mv4, self.on = mv4, False
        self.layer0_kwargs, self.streams = None, None
        self.q, self.ckv = {}, {}
        layers = model.model.layers
        layers[0].register_forward_pre_hook(self._pre0, with_kwargs=True)
        model.model.hc_head.register_forward_pre_hook(self._head)
        self.csa = [i for i, t in enumerate(cfg.layer_types) if t == "compressed_sparse_attention"]
        for i in self.csa:
            att = layers[i].self_attn
            att.q_b_proj.register_forward_hook(lambda m, a, o, i=i: self._set(self.q, i, o))
            att.compressor.register_forward_hook(lambda m, a, o, i=i: self._set(self.ckv, i, o[0]))

    def _set(self, d, i, v):
        if self.on:
            d[i] = v

    def _pre0(self, mod, args, kwargs):
        if self.on:
            self.layer0_kwargs = kwargs

    def _head(self, mod, args):
        if self.on:
            self.streams = args[0]

    def clear(self):
        self.layer0_kwargs, self.streams = None, None
        self.q.clear(); self.ckv.clear()


def install_indexer_patches(state):
    """Detach the indexer's inputs (its loss must train only the indexer) and keep its scores."""
    from transformers.models.deepseek_v4 import modeling_deepseek_v4 as mv4
    orig_idx, orig_score = mv4.DeepseekV4Indexer.forward, mv4.DeepseekV4IndexerScorer.forward

    def idx_forward(self, hidden_states, q_residual, position_ids, cache, layer_idx):
        return orig_idx(self, hidden_states.detach(), q_residual.detach(), position_ids, cache, layer_idx)

    def score_forward(self, q, compressed_kv, hidden_states):
        s = orig_score(self, q, compressed_kv, hidden_states)
        if state["on"]:
            state["scores"][id(self)] = s
        return s

    mv4.DeepseekV4Indexer.forward = idx_forward
    mv4.DeepseekV4IndexerScorer.forward = score_forward


def indexer_loss(cfg, q_raw, ckv, scores, cos, sin):
    """KL(p_attn || softmax(scores)) over visible compressed entries, averaged over rows that see
    at least one entry; also returns the attention mass captured by the indexer's top-k (rows
    with more visible entries than index_topk) and the uniform-choice expectation of it.
    Computed in FP32 outside autocast (the -inf-like mask value does not fit BF16)."""
    B, S, _ = q_raw.shape
    H, hd = cfg.num_attention_heads, cfg.head_dim
    T = ckv.shape[2]
    with torch.autocast(q_raw.device.type, enabled=False):
        return _indexer_loss_fp32(cfg, q_raw, ckv, scores, cos, sin, B, S, H, hd, T)


def _indexer_loss_fp32(cfg, q_raw, ckv, scores, cos, sin, B, S, H, hd, T):
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import apply_rotary_pos_emb
    with torch.no_grad():
        q = q_raw.detach().float().view(B, S, H, hd).transpose(1, 2)
        q = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps)   # q_b_norm (§4.1)
        q = apply_rotary_pos_emb(q, cos.float(), sin.float())
        logits = torch.matmul(q, ckv.detach().float().transpose(-1, -2)) * hd ** -0.5  # [B,H,S,T]
        pos = torch.arange(S, device=q.device)
        visible = torch.arange(T, device=q.device)[None, :] < ((pos + 1) // 4)[:, None]     # §5.4
        neg = torch.finfo(torch.float32).min
        p = torch.softmax(logits.masked_fill(~visible, neg), -1).mean(1)                   # [B,S,T]
    logq = torch.log_softmax(scores.float().masked_fill(~visible, neg), -1)
    kl = (p * (torch.log(p.clamp_min(1e-30)) - logq)).masked_fill(~visible, 0).sum(-1)
    rows = visible.any(-1)
    loss = kl[:, rows].mean()
    with torch.no_grad():
        k = cfg.index_topk
        sel = visible.sum(-1) > k
        if sel.any():
            top = scores.detach().float().masked_fill(~visible, neg).topk(k, -1).indices
            mass = p.gather(-1, top).sum(-1)[:, sel].mean().item()
            uniform = (k / visible.sum(-1)[sel].float()).mean().item()
        else:
            mass = uniform = float("nan")
    return loss, mass, uniform


def set_hash_tables(model, cfg, seed):
    """tid2eid: for every token id, num_experts_per_tok distinct experts drawn at random (fixed
    seed) - a frozen table, as in the release (§8.1)."""
    g = torch.Generator().manual_seed(seed)
    E, k = cfg.n_routed_experts, cfg.num_experts_per_tok
    for i, t in enumerate(cfg.mlp_layer_types):
        if t == "hash_moe":
            tab = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(cfg.vocab_size)])
            model.model.layers[i].mlp.gate.tid2eid.copy_(tab)


def master_state(model, mtp) -> dict:
    sd = {k: v for k, v in model.state_dict().items()}
    sd.update({"mtp." + k: v for k, v in mtp.state_dict().items()})
    return {k: v.detach().float().cpu().numpy() if v.dtype != torch.long else v.cpu().numpy()
            for k, v in sd.items() if "inv_freq" not in k}


def save_master(master: dict, out_dir: str) -> dict:
    """Writes master-*.safetensors: F32 tensors that the release keeps in F32 (§11.1), I64
    tid2eid, everything else BF16. Returns the same weights as read back (BF16-rounded)."""
    f32 = {hf for _, hf, kind in common.name_map(common.NANO_CONFIG) if kind == "f32"}
    tensors = {}
    for k, v in master.items():
        if v.dtype == np.int64:
            tensors[k] = ("I64", v, v.shape)
        elif k in f32:
            tensors[k] = ("F32", v.astype(np.float32), v.shape)
        else:
            tensors[k] = ("BF16", exporter.to_bf16_bits(v), v.shape)
    shard, size, n = {}, 0, 0
    for k in sorted(tensors):
        b = tensors[k][1].nbytes
        if shard and size + b > exporter.kMaxShardBytes:
            common.write_safetensors(os.path.join(out_dir, f"master-{n:02d}.safetensors"), shard); n += 1
            shard, size = {}, 0
        shard[k] = tensors[k]; size += b
    common.write_safetensors(os.path.join(out_dir, f"master-{n:02d}.safetensors"), shard)
    return exporter.load_master(out_dir)


def load_into(model, mtp, weights: dict):
    dev = next(model.parameters()).device
    msd = {k[len("mtp."):]: torch.from_numpy(v) for k, v in weights.items() if k.startswith("mtp.")}
    sd = {k: torch.from_numpy(v) for k, v in weights.items() if not k.startswith("mtp.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "inv_freq" not in m]
    if missing or unexpected:
        raise SystemExit(f"error: state mismatch: missing {missing[:5]} unexpected {unexpected[:5]}")
    if mtp is not None:
        mtp.load_state_dict(msd, strict=True)
    model.to(dev)


@torch.no_grad()
def hf_perplexity(model, tokens, n_ctx, max_chunks=0):
    dev = next(model.parameters()).device
    model.eval()

    def fn(chunk):
        ids = torch.tensor([chunk], device=dev)
        return model(input_ids=ids).logits[0].float().cpu().numpy()

    t0 = time.time()
    ppl, n, _ = common.strided_perplexity(fn, tokens, n_ctx, 0, max_chunks)
    return ppl, n, time.time() - t0


@torch.no_grad()
def quick_loss(model, tokens, n_ctx, n_chunks, dev, amp):
    """Mean next-token CE over the first n_chunks chunks (all positions), for monitoring."""
    model.eval()
    tot, cnt = 0.0, 0
    for c in range(min(n_chunks, len(tokens) // n_ctx)):
        ids = torch.tensor([[0] + tokens[c * n_ctx + 1:(c + 1) * n_ctx]], device=dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            lg = model(input_ids=ids).logits
        tot += F.cross_entropy(lg[0, :-1].float(), ids[0, 1:], reduction="sum").item()
        cnt += n_ctx - 1
    model.train()
    return tot / cnt


def sample(model, tok, prompts, n_new, seed, dev):
    model.eval()
    outs = []
    for p in prompts:
        torch.manual_seed(seed)
        ids = torch.tensor([[0] + tok.encode(p, add_special_tokens=False).ids], device=dev)
        g = model.generate(input_ids=ids, max_new_tokens=n_new, do_sample=True, temperature=0.8,
                           top_k=40, top_p=1.0, eos_token_id=1, pad_token_id=1)
        outs.append(tok.decode(g[0, 1:].tolist(), skip_special_tokens=False))
    return outs


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-seconds", type=float, default=300)
    ap.add_argument("--max-steps", type=int, default=0, help="stop earlier (CPU debugging)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=common.kTrainContext)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--eval-every", type=float, default=45, help="seconds between dev checks")
    ap.add_argument("--eval-chunks", type=int, default=0, help="0: whole validation file")
    ap.add_argument("--experts-impl", default="grouped_mm")
    ap.add_argument("--sample-tokens", type=int, default=120)
    ap.add_argument("--amp", choices=["auto", "on", "off"], default="auto", help="bf16 autocast (auto: on GPU)")
    args = ap.parse_args()

    t_start = time.time()
    import transformers
    from tokenizers import Tokenizer
    from transformers import DeepseekV4ForCausalLM
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = dev.type == "cuda" if args.amp == "auto" else args.amp == "on"
    if dev.type == "cpu":
        torch.set_num_threads(2)
    log(f"torch {torch.__version__} transformers {transformers.__version__} device {dev}"
        + (f" ({torch.cuda.get_device_name()})" if dev.type == "cuda" else "") + f" seed {args.seed}")
    random.seed(args.seed); np.random.seed(args.seed); torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    tok = Tokenizer.from_file(os.path.join(args.data, "tokenizer.json"))
    train = np.array(tokenize(tok, os.path.join(args.data, "train.txt")), dtype=np.int64)
    devset = tokenize(tok, os.path.join(args.data, "dev.txt"))
    val = tokenize(tok, os.path.join(args.data, "validation.txt"))
    log(f"tokens: train {len(train)} dev {len(devset)} validation {len(val)}")

    cfg = common.hf_config(common.NANO_CONFIG)
    model = DeepseekV4ForCausalLM(cfg)
    mtp = common.make_mtp(cfg, model)
    set_hash_tables(model, cfg, args.seed)
    model.to(dev); mtp.to(dev)
    try:  # probe the faster experts kernel with one forward/backward; fall back to eager
        model.set_experts_implementation(args.experts_impl)
        mtp.layer.mlp.experts.config._experts_implementation = args.experts_impl
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            probe = model(input_ids=torch.randint(0, cfg.vocab_size, (2, 256), device=dev)).logits
        probe.float().square().mean().backward()
        model.zero_grad(set_to_none=True)
        log(f"experts implementation: {args.experts_impl}")
    except Exception as e:
        log(f"experts implementation {args.experts_impl} failed ({e!r}); using eager")
        model.zero_grad(set_to_none=True)
        model.set_experts_implementation("eager")
        mtp.layer.mlp.experts.config._experts_implementation = "eager"
    n_params = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in mtp.parameters())
    log(f"params: {n_params} (main {sum(p.numel() for p in model.parameters())})")

    state = {"on": False, "scores": {}}
    install_indexer_patches(state)
    cap = Capture(model, cfg)
    routers = [m for m in list(model.modules()) + list(mtp.modules())
               if isinstance(m, cap.mv4.DeepseekV4TopKRouter)]
    loads = {id(r): torch.zeros(cfg.n_routed_experts, device=dev) for r in routers}

    def count_load(mod, args, out):  # out = (logits, weights, indices); returns None: output kept
        if state["on"]:
            loads[id(mod)].add_(torch.bincount(out[2].reshape(-1), minlength=cfg.n_routed_experts).float())

    for r in routers:
        r.register_forward_hook(count_load)
    scorers = {i: model.model.layers[i].self_attn.compressor.indexer.scorer for i in cap.csa}

    params = list(model.parameters()) + list(mtp.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=amp)

    rng = np.random.default_rng(args.seed)
    S, B = args.seq, args.batch
    logf = open(os.path.join(args.out, "train_log.jsonl"), "w")
    best = (float("inf"), None, 0)
    step, tokens_seen, t_train0, last_eval = 0, 0, time.time(), time.time()
    model.train(); mtp.train()
    while True:
        elapsed = time.time() - t_train0
        frac = elapsed / args.train_seconds
        if frac >= 1 or (args.max_steps and step >= args.max_steps):
            break
        lr = args.lr * (frac / kWarmupFrac if frac < kWarmupFrac else
                        kMinLrFrac + (1 - kMinLrFrac) * 0.5 * (1 + math.cos(math.pi * (frac - kWarmupFrac) / (1 - kWarmupFrac))))
        for g in opt.param_groups:
            g["lr"] = lr
        offs = rng.integers(0, len(train) - S, size=B)
        ids = torch.from_numpy(np.stack([np.concatenate([[0], train[o:o + S - 1]]) for o in offs])).to(dev)
        state["on"] = cap.on = True
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            out = model(input_ids=ids)
            logits = out.logits
            ce = F.cross_entropy(logits[:, :-1].float().reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1))
            kw = cap.layer0_kwargs
            h_mtp = mtp(cap.streams, torch.roll(ids, -1, 1), model.model.embed_tokens,
                        kw["position_embeddings"], kw["position_ids"], kw["attention_mask"])
            lg_mtp = model.lm_head(h_mtp[:, :-2])
            ce_mtp = F.cross_entropy(lg_mtp.float().reshape(-1, cfg.vocab_size), ids[:, 2:].reshape(-1))
            cos, sin = kw["position_embeddings"]["compress"]
            kls, masses, unis = [], [], []
            for i in cap.csa:
                kl, mass, uni = indexer_loss(cfg, cap.q[i], cap.ckv[i], state["scores"][id(scorers[i])], cos, sin)
                kls.append(kl); masses.append(mass); unis.append(uni)
            kl = torch.stack(kls).mean()
        loss = ce + kMtpWeight * ce_mtp + kIndexerWeight * kl
        state["on"] = cap.on = False
        cap.clear(); state["scores"].clear()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():  # aux-loss-free balancing: raise under-loaded experts' bias
            for r in routers:
                c = loads[id(r)]
                r.e_score_correction_bias.add_(kBiasUpdate * torch.sign(c.mean() - c))
                c.zero_()
        step += 1
        tokens_seen += B * S
        if step % 10 == 0 or step == 1:
            el = time.time() - t_train0
            rec = {"step": step, "t": round(el, 1), "lr": lr, "loss": round(ce.item(), 4),
                   "mtp_loss": round(ce_mtp.item(), 4), "indexer_kl": round(kl.item(), 4),
                   "indexer_topk_mass": round(float(np.nanmean(masses)), 4),
                   "uniform_topk_mass": round(float(np.nanmean(unis)), 4),
                   "gnorm": round(gnorm.item(), 3), "tok_per_s": round(tokens_seen / el)}
            if time.time() - last_eval > args.eval_every:
                rec["dev_loss"] = round(quick_loss(model, devset, S, 8, dev, amp), 4)
                last_eval = time.time()
                if rec["dev_loss"] < best[0]:
                    best = (rec["dev_loss"], master_state(model, mtp), step)
            log(json.dumps(rec)); logf.write(json.dumps(rec) + "\n"); logf.flush()
    train_time = time.time() - t_train0
    final_dev = quick_loss(model, devset, S, 8, dev, amp)
    log(f"trained {step} steps, {tokens_seen} tokens in {train_time:.0f}s ({tokens_seen / max(train_time, 1e-9):.0f} tok/s); "
        f"final dev loss {final_dev:.4f}, best {best[0]:.4f} at step {best[2]}")
    chosen = master_state(model, mtp) if final_dev <= best[0] else best[1]
    chosen_step = step if final_dev <= best[0] else best[2]

    # Master (BF16) -> the shipped checkpoint; every evaluation below uses weights read back.
    master = save_master(chosen, args.out)
    ship = os.path.join(args.out, "nano")
    exporter.export(master, ship, os.path.join(args.data, "tokenizer.json"))

    results = {"steps": step, "chosen_step": chosen_step, "tokens_seen": tokens_seen,
               "train_seconds": round(train_time, 1), "train_tok_per_s": round(tokens_seen / max(train_time, 1e-9)),
               "params": n_params, "seed": args.seed, "batch": B, "seq": S, "lr": args.lr,
               "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
               "torch": torch.__version__, "transformers": transformers.__version__,
               "train_tokens": len(train), "validation_tokens": len(val)}
    model.float()
    for name, weights in (("bf16", master), ("dequantised", exporter.load_official(ship))):
        load_into(model, mtp, weights)
        ppl, n, secs = hf_perplexity(model, val, common.kTrainContext, args.eval_chunks)
        results[f"val_ppl_hf_{name}"] = ppl
        results[f"val_scored_tokens_{name}"] = n
        log(f"validation perplexity, HF fp32 on {name} weights: {ppl:.4f} over {n} tokens ({secs:.1f}s)")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)

    prompts = ["And it came to pass", "In the beginning", "The LORD is my shepherd",
               "Blessed are the"]
    try:
        outs = sample(model, tok, prompts, args.sample_tokens, args.seed, dev)
        with open(os.path.join(args.out, "samples.txt"), "w") as f:
            for p, o in zip(prompts, outs):
                f.write(f"=== prompt {p!r} (dequantised weights, seed {args.seed}, T=0.8, top-k 40)\n{o}\n\n")
        log(open(os.path.join(args.out, "samples.txt")).read())
    except Exception as e:
        log(f"sampling failed: {e!r}")
    log(f"total wall {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
