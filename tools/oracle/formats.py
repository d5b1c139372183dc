# Number formats of the official checkpoint and of the reference's fake-quant points, written from
# architecture.md §11.2 (FP8 E4M3 + UE8M0 blocks), §11.3 (MXFP4), §12 (activation / KV / indexer round trips).
# Pure torch on float32 tensors; independent of the C++ code (src/util/float_formats, src/model/quant).
import torch

E4M3_MAX = 448.0          # OCP E4M3 (fn) largest finite value, §11.2
E2M1_MAX = 6.0            # largest E2M1 magnitude, §11.3
ACT_AMAX_FLOOR = 1e-4     # §11.2 / §12: max(amax, 1e-4) before the FP8 scale
FP4_AMAX_FLOOR = 6.0 * 2.0 ** -126   # §12: max(amax, 6·2^-126) before the FP4 scale
E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def ceil_log2(v: torch.Tensor) -> torch.Tensor:
    """Exact ceil(log2(v)) for positive finite float32 v (frexp avoids log2 rounding at powers of two)."""
    mant, expo = torch.frexp(v)           # v = mant · 2^expo, mant in [0.5, 1)
    return torch.where(mant == 0.5, expo - 1, expo).to(torch.int32)


def pow2(e: torch.Tensor) -> torch.Tensor:
    return torch.ldexp(torch.ones_like(e, dtype=torch.float32), e.to(torch.int32))


def round_e4m3(x: torch.Tensor) -> torch.Tensor:
    """Round float32 to the nearest E4M3 value (RNE, saturating at ±448), returned as float32."""
    return x.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).to(torch.float32)


def round_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Round float32 to the nearest E2M1 value (RNE: ties go to the even code, i.e. mantissa bit 0), clamp ±6."""
    grid = E2M1_GRID.to(x.device)
    a = x.abs().clamp(max=E2M1_MAX)
    hi = torch.searchsorted(grid, a.contiguous()).clamp(1, 7)   # grid[hi-1] <= a <= grid[hi] (a>0)
    lo = hi - 1
    dlo = a - grid[lo]
    dhi = grid[hi] - a
    # code index == position in the grid; even code index <=> mantissa bit 0
    pick_hi = (dhi < dlo) | ((dhi == dlo) & (hi % 2 == 0))
    mag = torch.where(pick_hi, grid[hi], grid[lo])
    return torch.where(x < 0, -mag, mag)


def e2m1_code(x: torch.Tensor) -> torch.Tensor:
    """E2M1 nibble (bit 3 = sign, bits 0-2 = grid index) of values already on the grid."""
    grid = E2M1_GRID.to(x.device)
    idx = torch.searchsorted(grid, x.abs().contiguous())
    return (idx + torch.where(x < 0, 8, 0)).to(torch.uint8)


def _blocks(x: torch.Tensor, block: int):
    """View the last dim in blocks of `block` (last block may be partial: padded with zeros)."""
    n = x.shape[-1]
    nb = -(-n // block)
    pad = nb * block - n
    xp = torch.nn.functional.pad(x, (0, pad)) if pad else x
    return xp.reshape(*x.shape[:-1], nb, block), n


def fake_quant_fp8_act(x: torch.Tensor, block: int) -> torch.Tensor:
    """§11.2/§12 activation (and KV NoPE) round trip: per 1×block, scale 2^ceil(log2(max(amax,1e-4)/448))."""
    xb, n = _blocks(x.float(), block)
    amax = xb.abs().amax(-1, keepdim=True).clamp(min=ACT_AMAX_FLOOR)
    s = pow2(ceil_log2(amax / E4M3_MAX))
    y = round_e4m3(xb / s) * s
    return y.reshape(*x.shape[:-1], -1)[..., :n].to(x.dtype)


def fake_quant_fp4(x: torch.Tensor, block: int = 32) -> torch.Tensor:
    """§12 indexer q/k round trip: per 1×32, scale 2^ceil(log2(max(amax, 6·2^-126)/6)), E2M1 RNE."""
    xb, n = _blocks(x.float(), block)
    amax = xb.abs().amax(-1, keepdim=True).clamp(min=FP4_AMAX_FLOOR)
    s = pow2(ceil_log2(amax / E2M1_MAX))
    y = round_e2m1(xb / s) * s
    return y.reshape(*x.shape[:-1], -1)[..., :n].to(x.dtype)


def hadamard_matrix(n: int) -> torch.Tensor:
    """Sylvester-order Hadamard H_n (H_1 = [1], H_2k = [[H, H], [H, -H]]), unnormalised."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    assert h.shape[0] == n, "Hadamard size must be a power of two"
    return h


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """§6 step 3: y = H·x / sqrt(n) over the last dim (H symmetric, so x·H works row-wise)."""
    n = x.shape[-1]
    h = hadamard_matrix(n).to(device=x.device, dtype=torch.float32)
    return (x.float() @ h * n ** -0.5).to(x.dtype)


# ---- weight quantisers for the "quantised" checkpoint variant -------------------------------------------------

def quant_fp8_block(w: torch.Tensor, block: int = 128):
    """§11.2: 128×128 tiles, UE8M0 scale 2^ceil(log2(amax/448)) per tile (amax floored at 1e-4 so an
    all-zero tile stays finite). Returns (E4M3 tensor [out,in], scale exponent bytes uint8 [ceil(out/128), ceil(in/128)],
    dequantised float32 [out,in])."""
    out, inn = w.shape
    ro, ri = -(-out // block), -(-inn // block)
    wp = torch.nn.functional.pad(w.float(), (0, ri * block - inn, 0, ro * block - out))
    tiles = wp.reshape(ro, block, ri, block)
    amax = tiles.abs().amax(dim=(1, 3)).clamp(min=ACT_AMAX_FLOOR)            # [ro, ri]
    e = ceil_log2(amax / E4M3_MAX)
    s = pow2(e)[:, None, :, None]
    q = (tiles / s).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    deq = (q.float() * s).reshape(ro * block, ri * block)[:out, :inn]
    q = q.reshape(ro * block, ri * block)[:out, :inn].contiguous()
    return q, (e + 127).to(torch.uint8), deq


def quant_mxfp4(w: torch.Tensor, block: int = 32):
    """§11.3: per row, per 32 inputs, UE8M0 scale 2^ceil(log2(max(amax, 6·2^-126)/6)); E2M1 RNE; byte b of a row
    holds element 2b in the low nibble, 2b+1 in the high nibble. Returns (packed int8 [out, in/2],
    scale exponent bytes uint8 [out, in/32], dequantised float32 [out, in])."""
    out, inn = w.shape
    assert inn % block == 0, "MXFP4 needs in_features % 32 == 0"
    wb = w.float().reshape(out, inn // block, block)
    amax = wb.abs().amax(-1, keepdim=True).clamp(min=FP4_AMAX_FLOOR)
    e = ceil_log2(amax / E2M1_MAX)
    s = pow2(e)
    v = round_e2m1(wb / s)
    deq = (v * s).reshape(out, inn)
    codes = e2m1_code(v.reshape(out, inn))
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).view(torch.int8)
    return packed.contiguous(), (e.squeeze(-1) + 127).to(torch.uint8), deq
