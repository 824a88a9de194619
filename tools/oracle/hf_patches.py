#!/usr/bin/env python3
"""hf_patches.py — make Hugging Face transformers' DeepSeek V4 follow the *official* numerics.

HF's `models/deepseek_v4/modeling_deepseek_v4.py` (5.17 and 5.24 checked) matches the official
architecture but not its numerics (spec §6). `apply_patches()` replaces the forward methods of the HF
module classes (class-level monkey patches; the HF module tree, parameter names, cache classes, window
mask and compressor window/overlap bookkeeping stay HF's) so that, point by point of spec §6:

  1  window KV and main compressed KV: nope dims FP8 fake-quant (e4m3, block 64, ue8m0)   [§3.3]
  2  indexer q and indexer keys: Hadamard rotation then FP4 fake-quant (block 32)          [§3.4, §3.5]
  3  indexer scores: BF16 q·k, BF16 relu·weight, head sum with one BF16 rounding; top-k with
     ties broken towards the LOWER entry number (spec §4.6; deterministic stable sort)
  4  every FP8/FP4-weight linear quantizes its input to FP8 (1x128, ue8m0) first; the weights are the
     exact dequantized values, products in FP32, output rounded to the activation dtype  [§3.6]
     (wo_a: BF16 weights, no activation quantization, like the official conversion)
  6  compressor projections, gate softmax and pooling in FP32; rounded once before the norm [§4.5]
 13  routing weight multiplied into the SwiGLU output before the down projection           [§4.8]
  and the cheap ones:
  7  attention scores/softmax FP32, un-normalised probabilities rounded to BF16 before P·V,
     denominator (with sink) FP32                                                        [§3.8]
  8  RoPE cos/sin FP32 (official YaRN inv_freq formula), rotation FP32 then rounded        [§3.7]
  9  RMSNorm out = bf16(w·x_norm) (FP32 weight)                                           [§3.2]
 10  per-head q RMS normalisation in BF16 arithmetic                                       [§4.3]
 11  hc_pre (official op order: linear then ·rsqrt), hc_post and hc_head in FP32, one rounding
 12  router FP32, weights normalised by Σw (no +1e-20); expert top-k ties -> lower index
 15  LM head FP32 (all positions are computed; the official code computes only the last)

"Activation dtype" (STATE.act): torch.bfloat16 reproduces the official BF16 roundings; torch.float32
turns every rounding to the activation dtype into a no-op (the FP8/FP4 fake-quants and the activation
quantization before FP8/FP4 linears are *kept*: they are part of the model definition).

Everything here is written from the spec; no code is taken from the official repository.
"""
import math

import torch
import torch.nn.functional as F

from transformers.models.deepseek_v4 import modeling_deepseek_v4 as M


class _State:
    act = torch.bfloat16     # activation dtype (bf16 = official)
    quant = True             # False disables every FP8/FP4 fake-quant (diagnostics only, not official)


STATE = _State()


def rb(x):
    """Round to the activation dtype (RNE); identity in fp32 mode for fp32 tensors."""
    return x.to(STATE.act)


# ----------------------------------------------------------------------------------------------------
# Numeric primitives (spec §3). All exact where the spec says exact; selfcheck.py verifies them.
# ----------------------------------------------------------------------------------------------------
_INV448 = torch.tensor(1.0 / 448.0, dtype=torch.float32)
_INV6 = torch.tensor(1.0 / 6.0, dtype=torch.float32)


def pow2_ceil(y):
    """2^ceil(log2(y)) for positive normal fp32 y, exact (frexp: y = m·2^e, m in [0.5, 1))."""
    m, e = torch.frexp(y)
    e = e - (m == 0.5).to(e.dtype)
    return torch.ldexp(torch.ones_like(y), e)


def fp8_quant_dequant(x, block):
    """act_quant fake-quant (spec §3.3, ue8m0): returns the dequantized values as FP32.
    Exactly representable in BF16 (3-bit mantissa times a power of two)."""
    if not STATE.quant:
        return x.float()
    xf = x.float().unflatten(-1, (-1, block))
    amax = xf.abs().amax(dim=-1, keepdim=True).clamp_min(1e-4)
    s = pow2_ceil(amax * _INV448)
    q = (xf / s).clamp(-448.0, 448.0).to(torch.float8_e4m3fn).float()   # torch cast = RNE
    return (q * s).flatten(-2)


_E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=torch.float32)
_E2M1_MID = (_E2M1[1:] + _E2M1[:-1]) / 2     # decision points 0.25 .. 5.0


def e2m1_rne(v):
    """Round |v| <= 6 to the nearest e2m1 value, ties to the even code (spec §3.4)."""
    a = v.abs()
    idx = torch.bucketize(a, _E2M1_MID.to(a.device))            # first midpoint >= a  -> lower code
    # bucketize(right=False): a == midpoint gives the index of that midpoint = the lower code; fix
    # ties: the tie goes to the even code of the two neighbours.
    tie = (idx < 7) & (a == _E2M1_MID.to(a.device)[idx.clamp(max=6)])
    lo = idx
    hi = idx + 1
    idx = torch.where(tie & (hi % 2 == 0), hi, lo)
    return torch.copysign(_E2M1.to(a.device)[idx], v)


def fp4_quant_dequant(x, block=32):
    """fp4_act_quant fake-quant (spec §3.4): returns FP32 values (exact in BF16)."""
    if not STATE.quant:
        return x.float()
    xf = x.float().unflatten(-1, (-1, block))
    amax = xf.abs().amax(dim=-1, keepdim=True).clamp_min(6.0 * 2.0 ** -126)
    s = pow2_ceil(amax * _INV6)
    q = e2m1_rne((xf / s).clamp(-6.0, 6.0))
    return (q * s).flatten(-2)


_HAD = {}


def hadamard_matrix(n):
    if n not in _HAD:
        i = torch.arange(n)
        bits = torch.bitwise_and(i[:, None], i[None, :])
        pc = torch.zeros_like(bits)
        b = bits.clone()
        while bool((b > 0).any()):
            pc += b & 1
            b >>= 1
        _HAD[n] = (1.0 - 2.0 * (pc % 2)).to(torch.float32)
    return _HAD[n]


def hadamard(x):
    """Sylvester Walsh-Hadamard along the last dim, scale n^-1/2, FP32 math (spec §3.5)."""
    n = x.shape[-1]
    return (x.float() @ hadamard_matrix(n)) * (n ** -0.5)


def rms_norm(weight, x, eps):
    """Official RMSNorm: bf16(w · (x · rsqrt(mean x² + eps))) in FP32 (spec §3.2)."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    return rb(weight.float() * xf)


def q_head_norm(q, eps):
    """Weightless per-head RMS normalisation in activation-dtype arithmetic (spec §4.3 step 1):
    square, mean (fp32 accumulation, one rounding), +eps, rsqrt and the multiply each rounded."""
    n = q.shape[-1]
    sq = rb(q.float().square())
    m = rb(sq.float().sum(-1, keepdim=True) / n)
    m = rb(m.float() + eps)
    r = rb(torch.rsqrt(m.float()))
    return rb(q.float() * r.float())


def rope(x, cos, sin, rd=64):
    """Interleaved RoPE on the last `rd` dims (pairs (2p, 2p+1)), FP32 then rounded (spec §3.7).
    cos/sin: [B, S, rd/2] FP32; x: [B, S, ..., D]. Pass -sin for the inverse rotation."""
    shape = cos.shape[:2] + (1,) * (x.dim() - 3) + cos.shape[-1:]
    c, s = cos.reshape(shape), sin.reshape(shape)
    r = x[..., -rd:].float()
    a, b = r[..., 0::2], r[..., 1::2]
    out = torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2)
    return torch.cat([x[..., :-rd], rb(out).to(x.dtype)], dim=-1)


def official_inv_freq(dim, base, yarn=None):
    """ω_p per spec §3.7; yarn = (factor, original_seq_len, beta_fast, beta_slow) or None."""
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    if yarn is not None:
        factor, orig, beta_fast, beta_slow = yarn

        def corr(nrot):
            return dim * math.log(orig / (nrot * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(corr(beta_fast)), 0)
        high = min(math.ceil(corr(beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
    return freqs


def sinkhorn_split(mixes, scale, base, hc, iters, eps):
    """Spec §3.9 (FP32)."""
    pre = torch.sigmoid(mixes[..., :hc] * scale[0] + base[:hc]) + eps
    post = 2 * torch.sigmoid(mixes[..., hc:2 * hc] * scale[1] + base[hc:2 * hc])
    comb = mixes[..., 2 * hc:].unflatten(-1, (hc, hc)) * scale[2] + base[2 * hc:].view(hc, hc)
    comb = torch.softmax(comb, dim=-1) + eps
    comb = comb / (comb.sum(dim=-2, keepdim=True) + eps)
    for _ in range(iters - 1):
        comb = comb / (comb.sum(dim=-1, keepdim=True) + eps)
        comb = comb / (comb.sum(dim=-2, keepdim=True) + eps)
    return pre, post, comb


def sparse_attn(q, kv, allowed, sink, scale):
    """Spec §3.8. q [B,S,H,D], kv [B,L,D] (K = V), allowed [B,S,L] bool, sink [H] FP32.
    FP32 scores and softmax; un-normalised probabilities rounded to the activation dtype before P·V;
    denominator (including exp(sink - m)) in FP32 from the unrounded probabilities."""
    kvf = kv.float()
    s = torch.einsum("bshd,bld->bshl", q.float(), kvf) * scale
    s = s.masked_fill(~allowed[:, :, None, :], float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    p = torch.exp(s - m)
    z = p.sum(dim=-1, keepdim=True) + torch.exp(sink.float().view(1, 1, -1, 1) - m)
    o = torch.einsum("bshl,bld->bshd", rb(p).float(), kvf) / z
    return rb(o)


def topk_low_index(scores, k):
    """Indices of the k largest scores; equal scores: the lower index wins (stable sort)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]


def qlinear(weight, x, actq):
    """Linear y = x·Wᵀ. actq: FP8 1x128 ue8m0 activation quantization first (FP8/FP4 weights).
    The weight holds the exact dequantized values; FP32 product; output rounded (spec §3.6)."""
    xin = fp8_quant_dequant(x, 128) if actq else x.float()
    return rb(F.linear(xin, weight.float()))


def _lin(mod, x):
    return qlinear(mod.weight, x, getattr(mod, "_dsv4_actq", False))


# ----------------------------------------------------------------------------------------------------
# Patched forwards
# ----------------------------------------------------------------------------------------------------
def _rmsnorm_forward(self, hidden_states):
    return rms_norm(self.weight, hidden_states, self.variance_epsilon)


def _rotary_forward(self, x, position_ids, layer_type=None):
    inv = getattr(self, f"{layer_type}_inv_freq").float()
    freqs = position_ids[..., None].float() * inv.to(position_ids.device)
    return freqs.cos(), freqs.sin()          # FP32, no attention scaling (V4 has none)


def _post_entry(pooled, norm, rotary, positions, kind, rd):
    """Compressed entry post-processing (spec §4.5): round, RMSNorm, RoPE at w·r, then FP8 (main)
    or Hadamard + FP4 (indexer) fake-quant."""
    e = rms_norm(norm.weight, rb(pooled), norm.variance_epsilon)
    cos, sin = rotary(e, position_ids=positions, layer_type="compress")
    e = rope(e, cos, sin, rd)
    if kind == "main":
        e = torch.cat([rb(fp8_quant_dequant(e[..., :-rd], 64)), e[..., -rd:]], dim=-1)
    else:
        e = rb(fp4_quant_dequant(rb(hadamard(e)), 32))
    return e


def _compress(mod, hidden_states, cache_layer, name, ratio, d, overlap, kind, rd):
    """Shared compressor body: FP32 projections (input and weights up-cast), HF's cache window
    bookkeeping, FP32 gated softmax pooling. Returns all entries so far [B, T, d]."""
    batch = hidden_states.shape[0]
    x = hidden_states.float()
    kv = F.linear(x, mod.kv_proj.weight.float())
    gate = F.linear(x, mod.gate_proj.weight.float())
    if cache_layer is None:
        usable = (kv.shape[1] // ratio) * ratio
        chunk_kv, chunk_gate, first = kv[:, :usable], gate[:, :usable], 0
    else:
        chunk_kv, chunk_gate, first = cache_layer.store_compression_weights(name, kv, gate)
    if chunk_kv.shape[1] > 0:
        nw = chunk_kv.shape[1] // ratio
        chunk_kv = chunk_kv.view(batch, nw, ratio, -1).float()
        chunk_gate = chunk_gate.view(batch, nw, ratio, -1).float() + mod.position_bias.float()
        if overlap:
            vals = chunk_kv.new_zeros((batch, nw, 2 * ratio, d))
            scores = chunk_gate.new_full((batch, nw, 2 * ratio, d), float("-inf"))
            vals[:, :, ratio:] = chunk_kv[..., d:]
            scores[:, :, ratio:] = chunk_gate[..., d:]
            if nw > 1:
                vals[:, 1:, :ratio] = chunk_kv[:, :-1, :, :d]
                scores[:, 1:, :ratio] = chunk_gate[:, :-1, :, :d]
            if cache_layer is not None:
                pk, pg = cache_layer.update_overlap_state(name, chunk_kv, chunk_gate, d)
                if pk is not None:
                    vals[:, 0, :ratio] = pk.float()
                    scores[:, 0, :ratio] = pg.float()
        else:
            vals, scores = chunk_kv, chunk_gate
        pooled = (vals * torch.softmax(scores, dim=2)).sum(dim=2)        # FP32
        positions = (torch.arange(nw) * ratio + first).unsqueeze(0).expand(batch, -1)
        ent = _post_entry(pooled, mod.kv_norm, mod.rotary_emb, positions, kind, rd)
    else:
        ent = torch.zeros((batch, 0, d), dtype=STATE.act)
    if cache_layer is not None:
        ent = cache_layer.update_compressor_states(name, ent)
    return ent


def _visible(position_ids, ratio, n):
    thr = (position_ids + 1) // ratio                                        # [B, S]
    return torch.arange(n).view(1, 1, -1) < thr.unsqueeze(-1)                 # [B, S, n]


def _hca_forward(self, hidden_states, q_residual, position_ids, cache, layer_idx):
    cl = cache.layers[layer_idx] if cache is not None else None
    rd = self.rotary_emb.config.qk_rope_head_dim
    ent = _compress(self, hidden_states, cl, "compressor", self.compress_rate, self.head_dim, False, "main", rd)
    return ent, _visible(position_ids, self.compress_rate, ent.shape[1])


def _indexer_forward(self, hidden_states, q_residual, position_ids, cache, layer_idx):
    """Lightning indexer (spec §4.6). Returns top-k entry numbers [B, S, k], -1 = none."""
    cl = cache.layers[layer_idx] if cache is not None else None
    batch, seq, _ = hidden_states.shape
    rd = self.rotary_emb.config.qk_rope_head_dim
    keys = _compress(self, hidden_states, cl, "indexer", self.compress_rate, self.head_dim, True, "indexer", rd)
    q = _lin(self.q_b_proj, q_residual).view(batch, seq, self.num_heads, self.head_dim)
    cos, sin = self.rotary_emb(hidden_states, position_ids=position_ids, layer_type="compress")
    q = rope(q, cos, sin, rd)
    q = rb(fp4_quant_dequant(rb(hadamard(q)), 32))
    w = qlinear(self.scorer.weights_proj.weight, hidden_states, False)                 # BF16 linear
    w = rb(w.float() * (self.head_dim ** -0.5 * self.num_heads ** -0.5))
    sc = rb(torch.einsum("bshd,btd->bsht", q.float(), keys.float()))
    sc = rb(torch.relu(sc.float()) * w.float().unsqueeze(-1))
    score = rb(sc.float().sum(dim=2)).float()                                         # [B, S, T]
    n = keys.shape[1]
    k = min(self.index_topk, n)
    if n == 0:
        return torch.zeros((batch, seq, 0), dtype=torch.long)
    vis = _visible(position_ids, self.compress_rate, n)
    score = score.masked_fill(~vis, float("-inf"))
    idx = topk_low_index(score, k)
    thr = ((position_ids + 1) // self.compress_rate).unsqueeze(-1)
    return torch.where(idx >= thr, torch.full_like(idx, -1), idx)


def _csa_forward(self, hidden_states, q_residual, position_ids, cache, layer_idx):
    cl = cache.layers[layer_idx] if cache is not None else None
    rd = self.rotary_emb.config.qk_rope_head_dim
    ent = _compress(self, hidden_states, cl, "compressor", self.compress_rate, self.head_dim, True, "main", rd)
    top = self.indexer(hidden_states, q_residual, position_ids, cache, layer_idx)
    batch, seq = position_ids.shape[0], position_ids.shape[1]
    n = ent.shape[1]
    allowed = torch.zeros((batch, seq, n + 1), dtype=torch.bool)
    safe = torch.where(top >= 0, top, torch.full_like(top, n))
    allowed.scatter_(-1, safe, True)
    return ent, allowed[..., :n] & _visible(position_ids, self.compress_rate, n)


def _attn_forward(self, hidden_states, position_embeddings=None, position_ids=None, attention_mask=None,
                  cache=None, past_key_values=None, **kwargs):
    cache = cache if cache is not None else past_key_values
    B, S, _ = hidden_states.shape
    hd = self.head_dim
    rd = self.config.qk_rope_head_dim
    eps = self.q_a_norm.variance_epsilon
    cos, sin = position_embeddings[self.rope_layer_type]
    x = hidden_states
    q_res = self.q_a_norm(_lin(self.q_a_proj, x))
    q = _lin(self.q_b_proj, q_res).view(B, S, self.num_heads, hd)
    q = q_head_norm(q, eps)
    q = rope(q, cos, sin, rd)
    kv = self.kv_norm(_lin(self.kv_proj, x))
    kv = rope(kv, cos, sin, rd)
    kv = torch.cat([rb(fp8_quant_dequant(kv[..., :-rd], 64)), kv[..., -rd:]], dim=-1)   # spec §4.3 step 2
    kvh = kv.unsqueeze(1)
    if cache is not None:
        kvh = cache.update(kvh, kvh, self.layer_idx)[0]
    L = kvh.shape[2]
    if attention_mask is None:
        allowed = torch.ones((B, S, L), dtype=torch.bool)
    else:
        am = attention_mask[:, 0, :, -L:] if attention_mask.dim() == 4 else attention_mask
        allowed = am if am.dtype == torch.bool else (am.float() > -1e30)
    kv_all = kvh[:, 0]
    if self.compressor is not None:
        ent, allowed_c = self.compressor(hidden_states, q_res, position_ids, cache, self.layer_idx)
        kv_all = torch.cat([kv_all, ent.to(kv_all.dtype)], dim=1)
        allowed = torch.cat([allowed, allowed_c], dim=-1)
    o = sparse_attn(q, kv_all, allowed, self.sinks, self.scaling)
    o = rope(o, cos, -sin, rd)                                                 # inverse RoPE at t
    G = self.config.o_groups
    og = o.reshape(B, S, G, -1)
    wa = self.o_a_proj.weight.view(G, -1, og.shape[-1])
    u = rb(torch.einsum("bsgd,grd->bsgr", og.float(), wa.float()))             # BF16 wo_a
    out = _lin(self.o_b_proj, u.flatten(2))
    return out, None


def _hc_forward(self, hidden_streams):
    flat = hidden_streams.flatten(2).float()
    r = torch.rsqrt(flat.square().mean(-1, keepdim=True) + self.input_norm.eps)
    mixes = F.linear(flat, self.fn.float()) * r
    pre, post, comb = sinkhorn_split(mixes, self.scale.float(), self.base.float(), self.hc_mult,
                                     self.hc_sinkhorn_iters, self.hc_eps)
    collapsed = rb((pre.unsqueeze(-1) * hidden_streams.float()).sum(dim=2))
    return post, comb, collapsed


def _hc_head_forward(self, x):
    flat = x.flatten(2).float()
    r = torch.rsqrt(flat.square().mean(-1, keepdim=True) + self.input_norm.eps)
    mixes = F.linear(flat, self.hc_fn.float()) * r
    pre = torch.sigmoid(mixes * self.hc_scale.float() + self.hc_base.float()) + self.eps
    return rb((pre.unsqueeze(-1) * x.float()).sum(dim=2))


def hc_post(a, residual, post, comb):
    """X_new[k] = post[k]·a + Σ_j comb[j][k]·residual[j], FP32, one rounding (spec §4.2)."""
    y = post.unsqueeze(-1) * a.float().unsqueeze(-2) + (comb.unsqueeze(-1) * residual.float().unsqueeze(-2)).sum(dim=2)
    return rb(y)


def _layer_forward(self, hidden_states, input_ids=None, **kwargs):
    post, comb, collapsed = self.attn_hc(hidden_states)
    a, _ = self.self_attn(self.input_layernorm(collapsed), **kwargs)
    hidden_states = hc_post(a, hidden_states, post, comb)
    post, comb, collapsed = self.ffn_hc(hidden_states)
    f = self.mlp(self.post_attention_layernorm(collapsed), input_ids=input_ids)
    return hc_post(f, hidden_states, post, comb)


def _router_scores(self, flat):
    logits = F.linear(flat.float(), self.weight.float())
    assert self.config_scoring == "sqrtsoftplus"
    return F.softplus(logits).sqrt()


def _weights(scores, idx, scale):
    w = scores.gather(1, idx)
    return w / w.sum(dim=-1, keepdim=True) * scale


def _topk_router_forward(self, hidden_states):
    flat = hidden_states.reshape(-1, self.hidden_dim)
    s = _router_scores(self, flat)
    idx = topk_low_index(s + self.e_score_correction_bias.float(), self.top_k)
    return None, _weights(s, idx, self.routed_scaling_factor), idx


def _hash_router_forward(self, hidden_states, input_ids):
    flat = hidden_states.reshape(-1, self.hidden_dim)
    s = _router_scores(self, flat)
    idx = self.tid2eid[input_ids.reshape(-1)].long()
    return None, _weights(s, idx, self.routed_scaling_factor), idx


def _swiglu(gate, up, limit):
    gate, up = gate.float(), up.float()
    if limit > 0:
        up = up.clamp(min=-limit, max=limit)
        gate = gate.clamp(max=limit)
    return F.silu(gate) * up


def _mlp_forward(self, x):        # shared expert (FP8 weights), multiplier 1
    h = _swiglu(_lin(self.gate_proj, x), _lin(self.up_proj, x), self.limit)
    return _lin(self.down_proj, rb(h))


def routed_expert(experts, e, x, w):
    """Routed expert e on rows x with routing weights w [n, 1] (spec §4.8 step 4)."""
    inter = experts.down_proj.shape[-1]
    gu = experts.gate_up_proj[e]
    act = getattr(experts, "_dsv4_actq", True)
    gate = qlinear(gu[:inter], x, act)
    up = qlinear(gu[inter:], x, act)
    h = _swiglu(gate, up, experts.limit) * w.float()            # weight applied BEFORE w2
    return qlinear(experts.down_proj[e], rb(h), act)


def _moe_forward(self, hidden_states, input_ids=None):
    B, S, D = hidden_states.shape
    flat = hidden_states.reshape(-1, D)
    if self.is_hash:
        _, w, idx = self.gate(hidden_states, input_ids)
    else:
        _, w, idx = self.gate(hidden_states)
    y = torch.zeros(flat.shape, dtype=torch.float32)
    for e in torch.unique(idx).tolist():
        rows, slot = torch.where(idx == e)
        y[rows] += routed_expert(self.experts, e, flat[rows], w[rows, slot, None]).float()
    y += self.shared_experts(flat).float()
    return rb(y).view(B, S, D)


def _grouped_forward(self, x):
    raise RuntimeError("o_a_proj is evaluated inside the patched attention")


def _lm_head_forward(self, x):
    return F.linear(x.float(), self.weight.float())


_PATCHED = False


def apply_patches():
    """Install the class-level patches (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    M.DeepseekV4RMSNorm.forward = _rmsnorm_forward
    M.DeepseekV4RotaryEmbedding.forward = _rotary_forward
    M.DeepseekV4HCACompressor.forward = _hca_forward
    M.DeepseekV4CSACompressor.forward = _csa_forward
    M.DeepseekV4Indexer.forward = _indexer_forward
    M.DeepseekV4Attention.forward = _attn_forward
    M.DeepseekV4HyperConnection.forward = _hc_forward
    M.DeepseekV4HyperHead.forward = _hc_head_forward
    M.DeepseekV4DecoderLayer.forward = _layer_forward
    M.DeepseekV4TopKRouter.forward = _topk_router_forward
    M.DeepseekV4HashRouter.forward = _hash_router_forward
    M.DeepseekV4MLP.forward = _mlp_forward
    M.DeepseekV4SparseMoeBlock.forward = _moe_forward
    M.DeepseekV4GroupedLinear.forward = _grouped_forward
    _PATCHED = True


def prepare_model(model, quantized_modules, rope_cfg):
    """Per-instance setup after the weights are loaded.
    quantized_modules: HF module names whose checkpoint weight was FP8/FP4 (activation-quantized).
    rope_cfg: dict(rd, theta, compress_theta, yarn=(factor, orig, beta_fast, beta_slow) or None)."""
    apply_patches()
    named = dict(model.named_modules())
    for n in quantized_modules:
        named[n]._dsv4_actq = True
    for mod in model.modules():
        if isinstance(mod, (M.DeepseekV4TopKRouter, M.DeepseekV4HashRouter)):
            mod.config_scoring = model.config.scoring_func
        if isinstance(mod, M.DeepseekV4RotaryEmbedding):
            main = official_inv_freq(rope_cfg["rd"], rope_cfg["theta"], None)
            comp = official_inv_freq(rope_cfg["rd"], rope_cfg["compress_theta"], rope_cfg["yarn"])
            for lt, f in (("main", main), ("compress", comp)):
                setattr(mod, f"{lt}_inv_freq", f.clone())
                setattr(mod, f"{lt}_original_inv_freq", f.clone())
                setattr(mod, f"{lt}_attention_scaling", 1.0)
    model.lm_head.forward = _lm_head_forward.__get__(model.lm_head)
    return model
