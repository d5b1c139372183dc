# An independent FP32 implementation of the forward pass written from architecture.md §2–§9 alone (no HF code),
# reading the official checkpoint files; used to check that HF matches the document and that the HF patches of
# official_numerics.py match §12. Formats/quantisers come from formats.py.
import json
import math
import struct

import torch
import torch.nn.functional as F

from . import formats

E2M1_VALUES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def load_checkpoint(model_dir):
    """Read config.json and model.safetensors; dequantise FP8-block (§11.2) and MXFP4 (§11.3) to float32."""
    cfg = json.load(open(f"{model_dir}/config.json"))
    raw = open(f"{model_dir}/model.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    dt = {"BF16": torch.bfloat16, "F32": torch.float32, "I64": torch.int64, "I8": torch.int8,
          "F8_E4M3": torch.float8_e4m3fn, "F8_E8M0": torch.uint8}
    t = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        buf = bytearray(raw[8 + n + a: 8 + n + b])
        t[name] = torch.frombuffer(buf, dtype=dt[h["dtype"]]).reshape(h["shape"]) if b > a else None
    w = {}
    lut = torch.tensor(E2M1_VALUES + [-v for v in E2M1_VALUES])
    for name, x in t.items():
        if name.endswith(".scale"):
            continue
        sname = name[: -len("weight")] + "scale" if name.endswith(".weight") else None
        if sname in t and x.dtype == torch.float8_e4m3fn:
            s = formats.pow2(t[sname].to(torch.int32) - 127)
            s = s.repeat_interleave(128, 0)[: x.shape[0]].repeat_interleave(128, 1)[:, : x.shape[1]]
            w[name] = x.float() * s
        elif sname in t and x.dtype == torch.int8:
            u = x.view(torch.uint8).to(torch.int64)
            vals = torch.stack([lut[u & 15], lut[u >> 4]], -1).reshape(x.shape[0], -1)
            s = formats.pow2(t[sname].to(torch.int32) - 127).repeat_interleave(32, 1)
            w[name] = vals * s
        elif x.dtype == torch.int64:
            w[name] = x
        else:
            w[name] = x.float()
    return cfg, w


def rms(x, eps=1e-6):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def rope_table(cfg, compress):
    """§4.4: main table θ=10000 (no YaRN); compress table θ=compress_rope_theta with YaRN, no mscale."""
    r = cfg["qk_rope_head_dim"]
    i = torch.arange(r // 2, dtype=torch.float64)
    theta = cfg["compress_rope_theta"] if compress else cfg["rope_theta"]
    w = theta ** (-2 * i / r)
    if compress:
        ys = cfg["rope_scaling"]
        s, l0 = ys["factor"], ys["original_max_position_embeddings"]
        corr = lambda beta: r * math.log(l0 / (2 * math.pi * beta)) / (2 * math.log(theta))  # noqa: E731
        lo, hi = max(math.floor(corr(ys["beta_fast"])), 0), min(math.ceil(corr(ys["beta_slow"])), r - 1)
        ramp = ((i - lo) / (hi - lo)).clamp(0, 1)
        w = w * (1 - ramp) + w / s * ramp
    return w


def rope(x, pos, w, inverse=False):
    """Interleaved pairs on the trailing 2·len(w) dims; x [..., T, ..., dim] with pos broadcast on dim 0."""
    r = 2 * w.shape[0]
    ang = pos.double()[:, None] * w[None, :]                       # [T, r/2]
    cos, sin = torch.cos(ang).float(), torch.sin(ang).float()
    if inverse:
        sin = -sin
    shape = [x.shape[0]] + [1] * (x.dim() - 2) + [r // 2]
    cos, sin = cos.reshape(shape), sin.reshape(shape)
    x = x.clone()
    e, o = x[..., -r::2].clone(), x[..., -r + 1::2].clone()
    x[..., -r::2] = e * cos - o * sin
    x[..., -r + 1::2] = e * sin + o * cos
    return x


class Reference:
    def __init__(self, model_dir, official=False):
        self.cfg, self.w = load_checkpoint(model_dir)
        self.official = official
        self.tables = {False: rope_table(self.cfg, False), True: rope_table(self.cfg, True)}

    def act(self, x):   # §12 point 1
        return formats.fake_quant_fp8_act(x, 128) if self.official else x

    def kv_nope(self, x):   # §12 point 2
        if not self.official:
            return x
        r = self.cfg["qk_rope_head_dim"]
        return torch.cat([formats.fake_quant_fp8_act(x[..., :-r], 64), x[..., -r:]], -1)

    def idx_quant(self, x):   # §12 point 4
        return formats.fake_quant_fp4(formats.hadamard(x), 32) if self.official else x

    def hc_pre(self, X, p):
        """§3.1. X [T, n, D] → u [T, D], post [T, n], C [T, n, n]."""
        c, n = self.cfg, self.cfg["hc_mult"]
        fn, base, scale = self.w[p + "_fn"], self.w[p + "_base"], self.w[p + "_scale"]
        m = rms(X.reshape(X.shape[0], -1), c["rms_norm_eps"]) @ fn.T
        pre = torch.sigmoid(scale[0] * m[:, :n] + base[:n]) + c["hc_eps"]
        post = 2 * torch.sigmoid(scale[1] * m[:, n:2 * n] + base[n:2 * n])
        M = (scale[2] * m[:, 2 * n:] + base[2 * n:]).reshape(-1, n, n)
        C = torch.softmax(M, -1) + c["hc_eps"]
        C = C / (C.sum(-2, keepdim=True) + c["hc_eps"])
        for _ in range(c["hc_sinkhorn_iters"] - 1):
            C = C / (C.sum(-1, keepdim=True) + c["hc_eps"])
            C = C / (C.sum(-2, keepdim=True) + c["hc_eps"])
        u = (pre[:, :, None] * X).sum(1)
        return u, post, C

    @staticmethod
    def hc_post(X, f, post, C):
        """§3.2: X'_b = post_b·f + Σ_a C[a][b]·X_a."""
        return post[:, :, None] * f[:, None, :] + torch.einsum("tab,tad->tbd", C, X)

    def compress(self, x, p, ratio, c, pos_w):
        """§5: all entries j < T//ratio of one compressor; returns [Nc, c] after norm + RoPE at j·ratio."""
        T = x.shape[0]
        a = x @ self.w[p + "wkv.weight"].T
        z = x @ self.w[p + "wgate.weight"].T + self.w[p + "ape"][torch.arange(T) % ratio]
        nc = T // ratio
        out = []
        for j in range(nc):
            cur = slice(j * ratio, (j + 1) * ratio)
            if ratio == 4:
                vals = [a[cur, c:]]
                logits = [z[cur, c:]]
                if j > 0:
                    prev = slice((j - 1) * ratio, j * ratio)
                    vals.insert(0, a[prev, :c])
                    logits.insert(0, z[prev, :c])
                vals, logits = torch.cat(vals, 0), torch.cat(logits, 0)
            else:
                vals, logits = a[cur], z[cur]
            out.append((torch.softmax(logits, 0) * vals).sum(0))
        if nc == 0:
            return x.new_zeros(0, c)
        k = rms(torch.stack(out), self.cfg["rms_norm_eps"]) * self.w[p + "norm.weight"]
        return rope(k, torch.arange(nc) * ratio, pos_w)

    def attention(self, x, l, ratio):
        c, p = self.cfg, f"layers.{l}.attn."
        T, H, d = x.shape[0], c["num_attention_heads"], c["head_dim"]
        pos = torch.arange(T)
        tw = self.tables[ratio != 0]
        qr = rms(self.act(x) @ self.w[p + "wq_a.weight"].T) * self.w[p + "q_norm.weight"]
        q = (self.act(qr) @ self.w[p + "wq_b.weight"].T).reshape(T, H, d)
        q = rope(rms(q), pos, tw)
        kv = rms(self.act(x) @ self.w[p + "wkv.weight"].T) * self.w[p + "kv_norm.weight"]
        kv = self.kv_nope(rope(kv, pos, tw))
        # key set per query (§4.3, §5.4, §6, §7): mask [T, T + Nc]
        window = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - c["sliding_window"])
        keys, mask = kv, window
        if ratio:
            comp = self.kv_nope(self.compress(x, p + "compressor.", ratio, d, tw))
            nc = comp.shape[0]
            visible = torch.arange(nc)[None, :] < ((pos + 1) // ratio)[:, None]
            if ratio == 4 and nc:
                KI = self.idx_quant(self.compress(x, p + "indexer.compressor.", 4, c["index_head_dim"], tw))
                Hi, di = c["index_n_heads"], c["index_head_dim"]
                qI = rope((self.act(qr) @ self.w[p + "indexer.wq_b.weight"].T).reshape(T, Hi, di), pos, tw)
                qI = self.idx_quant(qI)
                wh = (x @ self.w[p + "indexer.weights_proj.weight"].T) * di ** -0.5 * Hi ** -0.5
                S = (wh[:, :, None] * F.relu(torch.einsum("thd,jd->thj", qI, KI))).sum(1)
                S = S.masked_fill(~visible, float("-inf"))
                sel = torch.zeros_like(visible)
                for t in range(T):
                    nv = int(visible[t].sum())
                    if nv:
                        sel[t, S[t].topk(min(c["index_topk"], nv)).indices] = True
                visible = visible & sel
            keys = torch.cat([kv, comp], 0)
            mask = torch.cat([window, visible], 1)
        logits = torch.einsum("thd,sd->ths", q, keys) / math.sqrt(d)
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        sink = self.w[p + "attn_sink"][None, :, None].expand(T, H, 1)
        prob = torch.softmax(torch.cat([logits, sink], -1), -1)[..., :-1]
        o = rope(torch.einsum("ths,sd->thd", prob, keys), pos, tw, inverse=True)
        G, R = c["o_groups"], c["o_lora_rank"]
        wo_a = self.w[p + "wo_a.weight"].reshape(G, R, -1)
        z = torch.einsum("tgi,gri->tgr", o.reshape(T, G, -1), wo_a).reshape(T, G * R)
        return self.act(z) @ self.w[p + "wo_b.weight"].T

    def swiglu(self, x, w1, w3):
        lim = self.cfg["swiglu_limit"]
        g = (self.act(x) @ w1.T).clamp(max=lim)
        v = (self.act(x) @ w3.T).clamp(-lim, lim)
        return F.silu(g) * v

    def moe(self, x, tokens, l):
        c, p = self.cfg, f"layers.{l}.ffn."
        s = torch.sqrt(F.softplus(x @ self.w[p + "gate.weight"].T))
        if p + "gate.tid2eid" in self.w:
            idx = self.w[p + "gate.tid2eid"][tokens]
        else:
            idx = (s + self.w[p + "gate.bias"]).topk(c["num_experts_per_tok"], -1).indices
        ws = s.gather(1, idx)
        ws = ws / ws.sum(-1, keepdim=True) * c["routed_scaling_factor"]
        out = torch.zeros_like(x)
        for t in range(x.shape[0]):
            for e, wt in zip(idx[t].tolist(), ws[t]):
                q = f"{p}experts.{e}."
                h = self.swiglu(x[t:t + 1], self.w[q + "w1.weight"], self.w[q + "w3.weight"])
                if self.official:      # §8.2: weight before w2 (only the quantised order differs)
                    out[t] += (self.act(wt * h) @ self.w[q + "w2.weight"].T)[0]
                else:
                    out[t] += wt * (h @ self.w[q + "w2.weight"].T)[0]
        q = p + "shared_experts."
        h = self.swiglu(x, self.w[q + "w1.weight"], self.w[q + "w3.weight"])
        return out + self.act(h) @ self.w[q + "w2.weight"].T

    @torch.no_grad()
    def forward(self, tokens):
        c = self.cfg
        tokens = torch.tensor(tokens)
        X = self.w["embed.weight"][tokens][:, None, :].expand(-1, c["hc_mult"], -1).clone()
        for l in range(c["num_hidden_layers"]):
            pl = f"layers.{l}."
            u, post, C = self.hc_pre(X, pl + "hc_attn")
            f = self.attention(rms(u) * self.w[pl + "attn_norm.weight"], l, c["compress_ratios"][l])
            X = self.hc_post(X, f, post, C)
            u, post, C = self.hc_pre(X, pl + "hc_ffn")
            f = self.moe(rms(u) * self.w[pl + "ffn_norm.weight"], tokens, l)
            X = self.hc_post(X, f, post, C)
        n = c["hc_mult"]
        m = rms(X.reshape(X.shape[0], -1)) @ self.w["hc_head_fn"].T
        pre = torch.sigmoid(m * self.w["hc_head_scale"] + self.w["hc_head_base"]) + c["hc_eps"]
        h = rms((pre[:, :, None] * X).sum(1)) * self.w["norm.weight"]
        assert pre.shape[1] == n
        return h @ self.w["head.weight"].T
