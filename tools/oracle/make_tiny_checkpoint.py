#!/usr/bin/env python3
"""make_tiny_checkpoint.py — owns the generator of small RANDOM DeepSeek V4 checkpoints in the exact
released format (spec §2): official tensor names (no `model.` prefix), FP8 e4m3 weights with e8m0
128x128 block scales, routed experts as packed FP4 in I8 (low nibble = even element) with e8m0 per-32
scales, BF16 / F32 / I64 elsewhere, sharded safetensors + model.safetensors.index.json, and a config.json
with the same keys as the released one (plus root "expert_dtype": "fp4").

numpy only: the safetensors format (8-byte LE header length, JSON header, raw little-endian data) is
written by hand. Deterministic for a given (preset, seed, residual-scale).

"Residual-dominant" weights: every projection is drawn with std 1/sqrt(fan_in) except the ones that write
back into the residual stream (attn.wo_b, routed expert w2, shared expert w2), which get
residual_scale/sqrt(fan_in). The block outputs are then small next to the residual, so the tiny model is
not chaotic and small numeric differences between implementations stay small.

Usage:  make_tiny_checkpoint.py --preset tiny-flash --out tests/data/tiny-flash [--seed 1] [--residual-scale 0.1]
"""
import argparse
import json
import os
import sys

import numpy as np

# ---------------------------------------------------------------------------------------------------
# Presets. head_dim stays 512 / rope 64 / index_head_dim 128 like the released models, so kernels that
# specialize on those widths can run the tiny models unchanged.
# ---------------------------------------------------------------------------------------------------
PRESETS = {
    # Flash-like: SWA, CSA, HCA (ratio 16), CSA, then the MTP block (SWA). Layers 0,1 hash-routed
    # (as Flash routes layers 0..2 by hash, the last of them a CSA layer).
    "tiny-flash": dict(
        hidden_size=256, num_hidden_layers=4, compress_ratios=[0, 4, 16, 4, 0], num_hash_layers=2,
        num_attention_heads=4, head_dim=512, qk_rope_head_dim=64, q_lora_rank=128, o_groups=2,
        o_lora_rank=128, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=128,
        vocab_size=512, index_n_heads=4, index_head_dim=128, index_topk=4, sliding_window=128,
        routed_scaling_factor=1.5, num_nextn_predict_layers=1, shards=3),
    # Pro-like: HCA first (ratio 8, another non-128 ratio), then CSA/HCA alternating, MTP last.
    "tiny-pro": dict(
        hidden_size=256, num_hidden_layers=4, compress_ratios=[8, 8, 4, 8, 0], num_hash_layers=2,
        num_attention_heads=4, head_dim=512, qk_rope_head_dim=64, q_lora_rank=128, o_groups=2,
        o_lora_rank=128, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=128,
        vocab_size=512, index_n_heads=4, index_head_dim=128, index_topk=4, sliding_window=128,
        routed_scaling_factor=2.5, num_nextn_predict_layers=1, shards=4),
}

# ---------------------------------------------------------------------------------------------------
# Number formats
# ---------------------------------------------------------------------------------------------------
def f32_to_bf16_bits(x):
    """RNE float32 -> bfloat16 bit patterns (uint16). Inputs here are finite."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def _e4m3_table():
    vals = np.zeros(128, dtype=np.float64)  # codes 0..127 positive; 127 = NaN
    for c in range(128):
        e, m = c >> 3, c & 7
        vals[c] = (m / 8.0) * 2.0 ** -6 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7)
    return vals[:127]  # drop NaN; max 448 at code 126


E4M3_POS = _e4m3_table()
ITEMSIZE = {"I64": 8, "F32": 4, "BF16": 2, "F8_E4M3": 1, "F8_E8M0": 1, "I8": 1}
E2M1_POS = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float64)


def encode_e4m3(x):
    """x already scaled into [-448, 448]; nearest e4m3 code (ties to the even code), saturating."""
    a = np.minimum(np.abs(x.astype(np.float64)), 448.0)
    idx = np.searchsorted(E4M3_POS, a)              # first table value >= a
    idx = np.clip(idx, 1, len(E4M3_POS) - 1)
    lo, hi = E4M3_POS[idx - 1], E4M3_POS[idx]
    pick_hi = (hi - a < a - lo) | ((hi - a == a - lo) & (idx % 2 == 0))
    code = np.where(pick_hi, idx, idx - 1).astype(np.uint8)
    return np.where(x < 0, code | 0x80, code).astype(np.uint8)


def encode_e2m1(x):
    """x already scaled into [-6, 6]; nearest e2m1 code (ties to even code), saturating."""
    a = np.minimum(np.abs(x.astype(np.float64)), 6.0)
    d = np.abs(a[..., None] - E2M1_POS)              # [..., 8]
    # ties to even code: add a tiny penalty to odd codes
    d = d + (np.arange(8) % 2) * 1e-12
    code = np.argmin(d, axis=-1).astype(np.uint8)
    return np.where(x < 0, code | 8, code).astype(np.uint8)


def pow2_exp(amax, qmax):
    """e8m0 exponent so that amax / 2^e <= qmax (official ue8m0 rounding: ceil(log2(amax/qmax)))."""
    amax = np.maximum(amax, 1e-30)
    return np.ceil(np.log2(amax / qmax)).astype(np.int64)


def quant_fp8_block(w):
    """w [out, in] float -> (e4m3 codes [out, in], e8m0 [ceil(out/128), ceil(in/128)])."""
    out, inn = w.shape
    so, si = -(-out // 128), -(-inn // 128)
    pad = np.zeros((so * 128, si * 128))
    pad[:out, :inn] = np.abs(w)
    amax = pad.reshape(so, 128, si, 128).max(axis=(1, 3))
    e = pow2_exp(amax, 448.0)
    full = np.repeat(np.repeat(e, 128, axis=0), 128, axis=1)[:out, :inn]
    codes = encode_e4m3(w / np.exp2(full))
    return codes, (e + 127).astype(np.uint8)


def quant_fp4_rows(w):
    """w [out, in] -> (packed I8 [out, in/2] low nibble = even element, e8m0 [out, in/32])."""
    out, inn = w.shape
    blk = w.reshape(out, inn // 32, 32)
    e = pow2_exp(np.abs(blk).max(axis=2), 6.0)
    codes = encode_e2m1(blk / np.exp2(e)[..., None]).reshape(out, inn)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8).view(np.int8)
    return packed, (e + 127).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# Tensor construction
# ---------------------------------------------------------------------------------------------------
class Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.tensors = {}   # name -> (dtype string, shape, bytes)

    def normal(self, shape, std):
        x = self.rng.standard_normal(shape) * std
        x[x == 0] = std  # never exactly zero
        return x

    def add(self, name, dtype, arr):
        assert name not in self.tensors, name
        self.tensors[name] = (dtype, list(arr.shape), np.ascontiguousarray(arr).tobytes())

    def bf16(self, name, shape, std, mean=0.0):
        self.add(name, "BF16", f32_to_bf16_bits((self.normal(shape, std) + mean).astype(np.float32)))

    def f32(self, name, shape, std, mean=0.0):
        self.add(name, "F32", (self.normal(shape, std) + mean).astype(np.float32))

    def fp8_linear(self, prefix, out, inn, std):
        codes, scale = quant_fp8_block(self.normal((out, inn), std))
        self.add(prefix + ".weight", "F8_E4M3", codes)
        self.add(prefix + ".scale", "F8_E8M0", scale)

    def fp4_linear(self, prefix, out, inn, std):
        packed, scale = quant_fp4_rows(self.normal((out, inn), std))
        self.add(prefix + ".weight", "I8", packed)
        self.add(prefix + ".scale", "F8_E8M0", scale)

    def norm(self, name, n):
        self.bf16(name, (n,), 0.1, mean=1.0)

    def hc(self, prefix, mix, hc, dim, n_scale):
        self.f32(prefix + "_fn", (mix, hc * dim), 1.0 / np.sqrt(hc * dim))
        self.f32(prefix + "_base", (mix,), 0.5)
        self.add(prefix + "_scale", "F32", self.rng.uniform(0.2, 1.0, n_scale).astype(np.float32))


def build_block(b, p, c, layer_id, ratio, hash_routed, rs):
    """One transformer block (main layer or the MTP block) with prefix p (ends with '.')."""
    D, H, hd = c["hidden_size"], c["num_attention_heads"], c["head_dim"]
    QL, G, R = c["q_lora_rank"], c["o_groups"], c["o_lora_rank"]
    E, k, I = c["n_routed_experts"], c["num_experts_per_tok"], c["moe_intermediate_size"]
    hcm = 4
    mix = (2 + hcm) * hcm
    b.norm(p + "attn_norm.weight", D)
    b.norm(p + "ffn_norm.weight", D)
    b.hc(p + "hc_attn", mix, hcm, D, 3)
    b.hc(p + "hc_ffn", mix, hcm, D, 3)
    b.fp8_linear(p + "attn.wq_a", QL, D, 1 / np.sqrt(D))
    b.norm(p + "attn.q_norm.weight", QL)
    b.fp8_linear(p + "attn.wq_b", H * hd, QL, 1 / np.sqrt(QL))
    b.fp8_linear(p + "attn.wkv", hd, D, 1 / np.sqrt(D))
    b.norm(p + "attn.kv_norm.weight", hd)
    b.fp8_linear(p + "attn.wo_a", G * R, (H // G) * hd, 1 / np.sqrt((H // G) * hd))
    b.fp8_linear(p + "attn.wo_b", D, G * R, rs / np.sqrt(G * R))
    b.f32(p + "attn.attn_sink", (H,), 1.0)
    if ratio:
        coff = 2 if ratio == 4 else 1
        b.bf16(p + "attn.compressor.wkv.weight", (coff * hd, D), 1 / np.sqrt(D))
        b.bf16(p + "attn.compressor.wgate.weight", (coff * hd, D), 1 / np.sqrt(D))
        b.f32(p + "attn.compressor.ape", (ratio, coff * hd), 0.5)
        b.norm(p + "attn.compressor.norm.weight", hd)
        if ratio == 4:
            nI, dI = c["index_n_heads"], c["index_head_dim"]
            b.fp8_linear(p + "attn.indexer.wq_b", nI * dI, QL, 1 / np.sqrt(QL))
            b.bf16(p + "attn.indexer.weights_proj.weight", (nI, D), 1 / np.sqrt(D))
            b.bf16(p + "attn.indexer.compressor.wkv.weight", (2 * dI, D), 1 / np.sqrt(D))
            b.bf16(p + "attn.indexer.compressor.wgate.weight", (2 * dI, D), 1 / np.sqrt(D))
            b.f32(p + "attn.indexer.compressor.ape", (4, 2 * dI), 0.5)
            b.norm(p + "attn.indexer.compressor.norm.weight", dI)
    b.bf16(p + "ffn.gate.weight", (E, D), 1 / np.sqrt(D))
    if hash_routed:
        vocab = c["vocab_size"]
        ids = np.argsort(b.rng.random((vocab, E)), axis=1)[:, :k].astype(np.int64)  # distinct per row
        b.add(p + "ffn.gate.tid2eid", "I64", ids)
    else:
        b.f32(p + "ffn.gate.bias", (E,), 0.1)
    for e in range(E):
        q = p + "ffn.experts.%d." % e
        b.fp4_linear(q + "w1", I, D, 1 / np.sqrt(D))
        b.fp4_linear(q + "w2", D, I, rs / np.sqrt(I))
        b.fp4_linear(q + "w3", I, D, 1 / np.sqrt(D))
    b.fp8_linear(p + "ffn.shared_experts.w1", I, D, 1 / np.sqrt(D))
    b.fp8_linear(p + "ffn.shared_experts.w2", D, I, rs / np.sqrt(I))
    b.fp8_linear(p + "ffn.shared_experts.w3", I, D, 1 / np.sqrt(D))


def build_model(c, seed, rs):
    b = Builder(seed)
    D, V, L = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    b.bf16("embed.weight", (V, D), 1.0)
    for i in range(L):
        build_block(b, "layers.%d." % i, c, i, c["compress_ratios"][i], i < c["num_hash_layers"], rs)
    b.norm("norm.weight", D)
    b.bf16("head.weight", (V, D), 2.0 / np.sqrt(D))
    b.hc("hc_head", 4, 4, D, 1)
    for m in range(c["num_nextn_predict_layers"]):
        p = "mtp.%d." % m
        build_block(b, p, c, L + m, c["compress_ratios"][L + m], False, rs)
        b.fp8_linear(p + "e_proj", D, D, 1 / np.sqrt(D))
        b.fp8_linear(p + "h_proj", D, D, 1 / np.sqrt(D))
        b.norm(p + "enorm.weight", D)
        b.norm(p + "hnorm.weight", D)
        b.norm(p + "norm.weight", D)
        b.hc(p + "hc_head", 4, 4, D, 1)
    return b.tensors




# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------
def write_safetensors(path, tensors):
    """tensors: list of (name, dtype, shape, bytes) in file order."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for _, _, _, data in tensors:
            f.write(data)


def make_config(c):
    ref = {
        "architectures": ["DeepseekV4ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": 0, "eos_token_id": 1, "hc_eps": 1e-06, "hc_mult": 4, "hc_sinkhorn_iters": 20,
        "head_dim": c["head_dim"], "hidden_act": "silu", "hidden_size": c["hidden_size"],
        "index_head_dim": c["index_head_dim"], "index_n_heads": c["index_n_heads"],
        "index_topk": c["index_topk"], "initializer_range": 0.02, "max_position_embeddings": 1048576,
        "model_type": "deepseek_v4", "moe_intermediate_size": c["moe_intermediate_size"],
        "n_routed_experts": c["n_routed_experts"], "n_shared_experts": 1, "norm_topk_prob": True,
        "num_attention_heads": c["num_attention_heads"], "num_experts_per_tok": c["num_experts_per_tok"],
        "num_hidden_layers": c["num_hidden_layers"], "num_hash_layers": c["num_hash_layers"],
        "num_key_value_heads": 1, "num_nextn_predict_layers": c["num_nextn_predict_layers"],
        "o_groups": c["o_groups"], "o_lora_rank": c["o_lora_rank"], "q_lora_rank": c["q_lora_rank"],
        "qk_rope_head_dim": c["qk_rope_head_dim"],
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
        "rms_norm_eps": 1e-06,
        "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 16,
                         "original_max_position_embeddings": 65536, "type": "yarn"},
        "rope_theta": 10000, "routed_scaling_factor": c["routed_scaling_factor"],
        "scoring_func": "sqrtsoftplus", "sliding_window": c["sliding_window"], "swiglu_limit": 10.0,
        "tie_word_embeddings": False, "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
        "transformers_version": "4.57.1", "use_cache": True, "vocab_size": c["vocab_size"],
        "compress_rope_theta": 160000, "compress_ratios": c["compress_ratios"], "expert_dtype": "fp4",
    }
    return ref


def shard_names(tensors, n_shards):
    """Splits names into n_shards files of roughly equal bytes; mtp.* always in the last shard (as in
    the released Flash checkpoint)."""
    main = [n for n in tensors if not n.startswith("mtp.")]
    mtp = [n for n in tensors if n.startswith("mtp.")]
    total = sum(len(tensors[n][2]) for n in main)
    per = total / max(1, n_shards - (1 if mtp else 0))
    shards, cur, acc = [], [], 0
    for n in main:
        cur.append(n)
        acc += len(tensors[n][2])
        if acc >= per * (len(shards) + 1) and len(shards) < n_shards - 1:
            shards.append(cur)
            cur = []
    if cur:
        shards.append(cur)
    if mtp:
        if len(shards) < n_shards:
            shards.append(mtp)
        else:
            shards[-1].extend(mtp)
    return shards


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny-flash", choices=sorted(PRESETS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--residual-scale", type=float, default=0.1,
                    help="std multiplier of wo_b and expert/shared w2 (default 0.1)")
    a = ap.parse_args()
    c = dict(PRESETS[a.preset])
    n_shards = c.pop("shards")
    assert len(c["compress_ratios"]) == c["num_hidden_layers"] + c["num_nextn_predict_layers"]
    tensors = build_model(c, a.seed, a.residual_scale)
    os.makedirs(a.out, exist_ok=True)
    for f in os.listdir(a.out):
        if f.endswith(".safetensors") or f in ("model.safetensors.index.json", "config.json"):
            os.remove(os.path.join(a.out, f))
    shards = shard_names(tensors, n_shards)
    weight_map, total = {}, 0
    for i, names in enumerate(shards):
        fn = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
        # Widest element type first: with the 8-byte padded header every F32/I64 tensor then starts
        # aligned (safetensors forbids gaps between tensors, so alignment comes from ordering).
        names = sorted(names, key=lambda n: -ITEMSIZE[tensors[n][0]])
        write_safetensors(os.path.join(a.out, fn), [(n,) + tensors[n] for n in names])
        for n in names:
            weight_map[n] = fn
            total += len(tensors[n][2])
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
                  f, indent=2)
        f.write("\n")
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(make_config(c), f, indent=2)
        f.write("\n")
    print("%s: %d tensors, %d bytes in %d shards -> %s" % (a.preset, len(tensors), total, len(shards), a.out))


if __name__ == "__main__":
    sys.exit(main())
