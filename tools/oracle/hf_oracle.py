#!/usr/bin/env python3
"""hf_oracle.py — reference logits / hyper-connection states for DeepSeek V4 checkpoints in the
released format, computed with Hugging Face transformers' DeepSeek V4 patched to the official
numerics (hf_patches.py; spec §6).

Usage (same semantics as the engine's `dsv4 logits`):

  python3 tools/oracle/hf_oracle.py --model DIR --tokens 1,2,3,... --prefill N --out logits.npy
        [--dump-dir D] [--mode prefill|decode|chunked|full] [--chunk C] [--dtype bf16|fp32]

  --tokens   comma list, or @file.json (a JSON list of ids, or an object with a "tokens" list)
  --mode prefill (default): forward tokens[0:N] (one prefill), then one decode forward per remaining
             token.  decode: every token is its own forward (N only selects the output rows).
             chunked: prefill tokens[0:N], then forwards of --chunk tokens.  full: one forward of the
             whole sequence (all positions at once; the noise-floor reference for the other modes).
  Output: float32 logits [T-N+1, vocab]; row i = logits after position N-1+i (row 0 = after the
  prefill). --dump-dir D writes hc_L.npy float32 [T, hc_mult, hidden] for every layer L: the
  hyper-connection state after layer L at positions 0..T-1 (prefill positions, then decode ones).

Other entry points:
  --make-goldens OUTDIR   write the committed golden set (tests/data/golden) for --models
  --noise-floor           print the oracle's own noise floor (prefill vs decode vs full, bf16 vs fp32)

Precision (--dtype): bf16 (default) reproduces the official BF16 activations; fp32 keeps every
activation in FP32 (the FP8/FP4 fake-quants and FP8 activation quantization stay). Weights are always
held as their exact dequantized values in FP32.
"""
import argparse
import inspect
import json
import os
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_patches as P  # noqa: E402

from transformers.cache_utils import DynamicCache  # noqa: E402
from transformers.models.deepseek_v4.configuration_deepseek_v4 import DeepseekV4Config  # noqa: E402
from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4ForCausalLM  # noqa: E402


# ----------------------------------------------------------------------------------------------------
# safetensors reading and exact dequantization (independent of the safetensors package)
# ----------------------------------------------------------------------------------------------------
def _e4m3_values():
    v = np.zeros(256, dtype=np.float64)
    for c in range(256):
        s, e, m = c >> 7, (c >> 3) & 15, c & 7
        if e == 15 and m == 7:
            x = np.nan
        elif e == 0:
            x = (m / 8.0) * 2.0 ** -6
        else:
            x = (1 + m / 8.0) * 2.0 ** (e - 7)
        v[c] = -x if s else x
    return v.astype(np.float32)


E4M3 = _e4m3_values()
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)


def e8m0(u8):
    u = u8.astype(np.int32)
    out = np.ldexp(np.float32(1.0), u - 127).astype(np.float32)
    return np.where(u == 255, np.float32(np.nan), out)


class SafeDir:
    """Reads tensors of a sharded released checkpoint as numpy arrays (raw dtypes)."""

    def __init__(self, d):
        self.d = d
        idx = os.path.join(d, "model.safetensors.index.json")
        if os.path.exists(idx):
            self.wmap = json.load(open(idx))["weight_map"]
        else:
            self.wmap = {k: "model.safetensors" for k in self._header("model.safetensors")[0]}
        self._hdr = {}

    def _header(self, fn):
        with open(os.path.join(self.d, fn), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            h = json.loads(f.read(n))
        h.pop("__metadata__", None)
        return h, 8 + n

    def names(self):
        return list(self.wmap)

    def raw(self, name):
        fn = self.wmap[name]
        if fn not in self._hdr:
            self._hdr[fn] = self._header(fn)
        h, base = self._hdr[fn]
        info = h[name]
        a, b = info["data_offsets"]
        with open(os.path.join(self.d, fn), "rb") as f:
            f.seek(base + a)
            data = f.read(b - a)
        dt = {"BF16": np.uint16, "F32": np.float32, "F8_E4M3": np.uint8, "F8_E8M0": np.uint8,
              "I8": np.uint8, "I64": np.int64, "I32": np.int32, "F16": np.float16}[info["dtype"]]
        return info["dtype"], np.frombuffer(data, dtype=dt).reshape(info["shape"])

    def f32(self, name):
        """Exact FP32 values of a tensor; FP8 / FP4 weights are dequantized with their .scale."""
        dt, a = self.raw(name)
        if dt == "BF16":
            return (a.astype(np.uint32) << 16).view(np.float32)
        if dt == "F32":
            return a.astype(np.float32)
        if dt == "F16":
            return a.astype(np.float32)
        if dt == "F8_E4M3":
            w = E4M3[a]
            sdt, s = self.raw(name[: -len("weight")] + "scale")
            s = e8m0(s)
            out, inn = w.shape
            s = np.repeat(np.repeat(s, 128, axis=0), 128, axis=1)[:out, :inn]
            return (w * s).astype(np.float32)
        if dt == "I8":   # packed FP4 e2m1: low nibble = even element, 1x32 e8m0 scales
            lo, hi = E2M1[a & 15], E2M1[a >> 4]
            w = np.stack([lo, hi], axis=-1).reshape(a.shape[0], a.shape[1] * 2)
            _, s = self.raw(name[: -len("weight")] + "scale")
            return (w * np.repeat(e8m0(s), 32, axis=1)).astype(np.float32)
        raise ValueError(f"{name}: unexpected dtype {dt}")


# ----------------------------------------------------------------------------------------------------
# Config and weights
# ----------------------------------------------------------------------------------------------------
LT = {0: "sliding_attention", 4: "compressed_sparse_attention"}


def hf_config(cfg):
    n = cfg["num_hidden_layers"]
    ratios = cfg["compress_ratios"][:n]
    hca = sorted({r for r in ratios if r not in (0, 4)})
    if len(hca) > 1:
        raise ValueError(f"HF allows one HCA ratio per model; got {hca}")
    layer_types = [LT.get(r, "heavily_compressed_attention") for r in ratios]
    rs = cfg.get("rope_scaling") or {}
    pr = cfg.get("qk_rope_head_dim", 64) / cfg["head_dim"]
    main = {"rope_type": "default", "rope_theta": float(cfg.get("rope_theta", 10000)), "partial_rotary_factor": pr}
    comp = {"rope_theta": float(cfg.get("compress_rope_theta", 160000)), "partial_rotary_factor": pr}
    if rs.get("type", rs.get("rope_type")) == "yarn":
        comp.update(rope_type="yarn", factor=float(rs["factor"]),
                    original_max_position_embeddings=int(rs["original_max_position_embeddings"]),
                    beta_fast=float(rs["beta_fast"]), beta_slow=float(rs["beta_slow"]), attention_factor=1.0)
    else:
        comp["rope_type"] = "default"
    keep = ["vocab_size", "hidden_size", "moe_intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "q_lora_rank", "num_experts_per_tok", "n_routed_experts",
            "n_shared_experts", "scoring_func", "norm_topk_prob", "routed_scaling_factor",
            "max_position_embeddings", "rope_theta", "compress_rope_theta", "hc_mult", "hc_sinkhorn_iters",
            "hc_eps", "swiglu_limit", "sliding_window", "o_groups", "o_lora_rank", "index_n_heads",
            "index_head_dim", "index_topk", "rms_norm_eps", "bos_token_id", "eos_token_id",
            "tie_word_embeddings", "hidden_act", "attention_bias", "attention_dropout"]
    kw = {k: cfg[k] for k in keep if k in cfg}
    nh = cfg.get("num_hash_layers", 3)
    kw.update(layer_types=layer_types,
              compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": hca[0] if hca else 128},
              mlp_layer_types=["hash_moe"] * min(n, nh) + ["moe"] * max(0, n - nh),
              rope_parameters={"main": main, "compress": comp}, partial_rotary_factor=pr,
              num_nextn_predict_layers=cfg.get("num_nextn_predict_layers", 1))
    c = DeepseekV4Config(**kw)
    c._attn_implementation = "eager"
    rope_cfg = dict(rd=cfg.get("qk_rope_head_dim", 64), theta=float(cfg.get("rope_theta", 10000)),
                    compress_theta=float(cfg.get("compress_rope_theta", 160000)),
                    yarn=((float(rs["factor"]), int(rs["original_max_position_embeddings"]),
                           float(rs["beta_fast"]), float(rs["beta_slow"])) if comp["rope_type"] == "yarn" else None))
    return c, rope_cfg


def map_name(k):
    """Checkpoint name -> HF parameter name (spec §2.5). None = not used by HF (MTP)."""
    if k.startswith("mtp."):
        return None
    top = {"embed.weight": "model.embed_tokens.weight", "head.weight": "lm_head.weight",
           "norm.weight": "model.norm.weight", "hc_head_fn": "model.hc_head.hc_fn",
           "hc_head_base": "model.hc_head.hc_base", "hc_head_scale": "model.hc_head.hc_scale"}
    if k in top:
        return top[k]
    parts = k.split(".")
    assert parts[0] == "layers", k
    L, rest = parts[1], ".".join(parts[2:])
    p = f"model.layers.{L}."
    simple = {"attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
              "hc_attn_fn": "attn_hc.fn", "hc_attn_base": "attn_hc.base", "hc_attn_scale": "attn_hc.scale",
              "hc_ffn_fn": "ffn_hc.fn", "hc_ffn_base": "ffn_hc.base", "hc_ffn_scale": "ffn_hc.scale",
              "attn.attn_sink": "self_attn.sinks", "attn.q_norm.weight": "self_attn.q_a_norm.weight",
              "attn.kv_norm.weight": "self_attn.kv_norm.weight",
              "ffn.gate.weight": "mlp.gate.weight", "ffn.gate.bias": "mlp.gate.e_score_correction_bias",
              "ffn.gate.tid2eid": "mlp.gate.tid2eid"}
    if rest in simple:
        return p + simple[rest]
    lin = {"attn.wq_a": "self_attn.q_a_proj", "attn.wq_b": "self_attn.q_b_proj", "attn.wkv": "self_attn.kv_proj",
           "attn.wo_a": "self_attn.o_a_proj", "attn.wo_b": "self_attn.o_b_proj",
           "attn.indexer.wq_b": "self_attn.compressor.indexer.q_b_proj",
           "attn.indexer.weights_proj": "self_attn.compressor.indexer.scorer.weights_proj",
           "ffn.shared_experts.w1": "mlp.shared_experts.gate_proj",
           "ffn.shared_experts.w2": "mlp.shared_experts.down_proj",
           "ffn.shared_experts.w3": "mlp.shared_experts.up_proj"}
    for pre, comp in (("attn.indexer.compressor.", "self_attn.compressor.indexer."),
                      ("attn.compressor.", "self_attn.compressor.")):
        if rest.startswith(pre):
            sub = rest[len(pre):]
            m = {"wkv.weight": "kv_proj.weight", "wgate.weight": "gate_proj.weight", "ape": "position_bias",
                 "norm.weight": "kv_norm.weight"}
            return p + comp + m[sub]
    for ck, hk in lin.items():
        if rest == ck + ".weight":
            return p + hk + ".weight"
        if rest == ck + ".scale":
            return "SCALE"
    if rest.startswith("ffn.experts."):
        return "EXPERT"
    raise KeyError(k)


def load_model(model_dir, dtype="bf16", threads=None):
    if threads:
        torch.set_num_threads(threads)
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    hcfg, rope_cfg = hf_config(cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        model = DeepseekV4ForCausalLM(hcfg).float().eval().requires_grad_(False)
    sd = SafeDir(model_dir)
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    loaded, quant = set(), set()
    n_layers = hcfg.num_hidden_layers
    E, inter = hcfg.n_routed_experts, hcfg.moe_intermediate_size
    with torch.no_grad():
        for k in sd.names():
            if k.startswith("layers.") and int(k.split(".")[1]) >= n_layers:
                continue
            h = map_name(k)
            if h is None or h == "SCALE":
                continue
            if h == "EXPERT":
                continue
            dt, _ = sd.raw(k)
            t = params[h]
            if dt == "I64":
                t.copy_(torch.from_numpy(sd.raw(k)[1].astype(np.int64)))
            else:
                v = torch.from_numpy(sd.f32(k).copy())
                assert tuple(v.shape) == tuple(t.shape), (k, h, v.shape, t.shape)
                t.copy_(v)
            loaded.add(h)
            if dt in ("F8_E4M3", "I8") and not k.endswith("attn.wo_a.weight"):
                quant.add(h[: -len(".weight")])
        for L in range(n_layers):
            ex = model.model.layers[L].mlp.experts
            for e in range(E):
                b = f"layers.{L}.ffn.experts.{e}."
                ex.gate_up_proj[e, :inter].copy_(torch.from_numpy(sd.f32(b + "w1.weight")))
                ex.gate_up_proj[e, inter:].copy_(torch.from_numpy(sd.f32(b + "w3.weight")))
                ex.down_proj[e].copy_(torch.from_numpy(sd.f32(b + "w2.weight")))
                dts = {sd.raw(b + w + ".weight")[0] for w in ("w1", "w2", "w3")}
            ex._dsv4_actq = bool(dts & {"F8_E4M3", "I8"})
            loaded.update({f"model.layers.{L}.mlp.experts.gate_up_proj", f"model.layers.{L}.mlp.experts.down_proj"})
    missing = [n for n in dict(model.named_parameters()) if n not in loaded]
    if missing:
        raise RuntimeError(f"parameters not in checkpoint: {missing}")
    for L in range(n_layers):     # learned-routing layers must have their bias
        g = model.model.layers[L].mlp.gate
        if hasattr(g, "e_score_correction_bias"):
            assert f"model.layers.{L}.mlp.gate.e_score_correction_bias" in loaded, L
        if hasattr(g, "tid2eid"):
            assert f"model.layers.{L}.mlp.gate.tid2eid" in loaded, L
    P.prepare_model(model, quant, rope_cfg)
    set_dtype(model, dtype)
    return model


def set_dtype(model, dtype):
    P.STATE.act = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    with torch.no_grad():   # BF16 table values are exact in both dtypes
        emb = model.model.embed_tokens
        emb.weight.data = emb.weight.data.float().to(P.STATE.act)


# ----------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------
# transformers 5.17 names the cache argument `past_key_values`, 5.24 `cache` (old name deprecated)
_CACHE_KW = "cache" if "cache" in inspect.signature(DeepseekV4ForCausalLM.forward).parameters else "past_key_values"


class Runner:
    def __init__(self, model):
        self.model = model
        self.cache = DynamicCache(config=model.config)
        self.pos = 0
        self.hc = [[] for _ in model.model.layers]
        self.hooks = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(model.model.layers)]

    def _hook(self, i):
        def f(mod, args, out):
            h = out[0] if isinstance(out, tuple) else out
            self.hc[i].append(h[0].float().clone())
        return f

    def forward(self, toks):
        ids = torch.tensor([toks], dtype=torch.long)
        pos = torch.arange(self.pos, self.pos + len(toks)).unsqueeze(0)
        with torch.no_grad():
            out = self.model(input_ids=ids, position_ids=pos, use_cache=True, **{_CACHE_KW: self.cache})
        self.pos += len(toks)
        return out.logits[0].float()           # [S, vocab]

    def close(self):
        for h in self.hooks:
            h.remove()

    def hc_states(self):
        return [torch.cat(h, dim=0).numpy() for h in self.hc]


def run(model, tokens, prefill, mode="prefill", chunk=1):
    """Returns (logits [T-N+1, vocab] float32, hc list per layer [T, hc, D] float32)."""
    T, N = len(tokens), prefill
    assert 1 <= N <= T
    r = Runner(model)
    rows = []
    try:
        if mode == "full":
            lg = r.forward(tokens)
            rows = [lg[i] for i in range(N - 1, T)]
        elif mode == "decode":
            for i in range(T):
                lg = r.forward(tokens[i:i + 1])
                if i >= N - 1:
                    rows.append(lg[-1])
        elif mode in ("prefill", "chunked"):
            step = 1 if mode == "prefill" else chunk
            lg = r.forward(tokens[:N])
            rows.append(lg[-1])
            i = N
            while i < T:
                lg = r.forward(tokens[i:i + step])
                rows.extend(lg[j] for j in range(lg.shape[0]))
                i += step
        else:
            raise ValueError(mode)
        hc = r.hc_states()
    finally:
        r.close()
    return torch.stack(rows).numpy().astype(np.float32), hc


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def row_rel(a, b):
    return [rel_l2(a[i], b[i]) for i in range(len(a))]


# ----------------------------------------------------------------------------------------------------
# MTP block (spec §4.10; DeepSeek-V3 convention: row i = h_i with the embedding of token i+1, RoPE
# position i, predicts token i+2)
# ----------------------------------------------------------------------------------------------------
MTP_OWN = ("e_proj.weight", "h_proj.weight", "enorm.weight", "hnorm.weight")


class MTP:
    """The MTP block as a one-layer HF DeepSeek V4 model (sliding attention, learned routing) patched
    like the main model; its embedding and LM head are the main model's (shared), its final norm and
    hc_head are mtp.0.norm / mtp.0.hc_head_*. The layer's input is replaced by
    Z[h] = e_proj(enorm(embed[next])) + h_proj(hnorm(X[h])) (both FP8 linears, BF16 outputs, BF16 sum)."""

    def __init__(self, model_dir, dtype="bf16"):
        cfg = json.load(open(os.path.join(model_dir, "config.json")))
        n = cfg["num_hidden_layers"]
        c1 = dict(cfg, num_hidden_layers=1, compress_ratios=[cfg["compress_ratios"][n]], num_hash_layers=0)
        assert c1["compress_ratios"][0] == 0, "the MTP block is a sliding-window layer"
        hcfg, rope_cfg = hf_config(c1)
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        torch.manual_seed(0)
        with torch.no_grad():
            model = DeepseekV4ForCausalLM(hcfg).float().eval().requires_grad_(False)
        sd = SafeDir(model_dir)
        params = dict(model.named_parameters())
        params.update(dict(model.named_buffers()))
        top = {"mtp.0.norm.weight": "model.norm.weight", "mtp.0.hc_head_fn": "model.hc_head.hc_fn",
               "mtp.0.hc_head_base": "model.hc_head.hc_base", "mtp.0.hc_head_scale": "model.hc_head.hc_scale",
               "embed.weight": "model.embed_tokens.weight", "head.weight": "lm_head.weight"}
        loaded, quant, self.own = set(), set(), {}
        E, inter = hcfg.n_routed_experts, hcfg.moe_intermediate_size
        with torch.no_grad():
            for k in sd.names():
                if k in top:
                    h = top[k]
                elif k.startswith("mtp.0."):
                    rest = k[len("mtp.0."):]
                    if rest in MTP_OWN:
                        self.own[rest] = torch.from_numpy(sd.f32(k).copy())
                        continue
                    if rest.endswith(".scale") and rest[: -len("scale")] + "weight" in MTP_OWN:
                        continue
                    h = map_name("layers.0." + rest)
                else:
                    continue
                if h in (None, "SCALE", "EXPERT"):
                    continue
                dt, _ = sd.raw(k)
                v = torch.from_numpy(sd.f32(k).copy())
                assert tuple(v.shape) == tuple(params[h].shape), (k, h, v.shape, params[h].shape)
                params[h].copy_(v)
                loaded.add(h)
                if dt in ("F8_E4M3", "I8") and not k.endswith("attn.wo_a.weight"):
                    quant.add(h[: -len(".weight")])
            ex = model.model.layers[0].mlp.experts
            for e in range(E):
                b = f"mtp.0.ffn.experts.{e}."
                ex.gate_up_proj[e, :inter].copy_(torch.from_numpy(sd.f32(b + "w1.weight")))
                ex.gate_up_proj[e, inter:].copy_(torch.from_numpy(sd.f32(b + "w3.weight")))
                ex.down_proj[e].copy_(torch.from_numpy(sd.f32(b + "w2.weight")))
                dts = {sd.raw(b + w + ".weight")[0] for w in ("w1", "w2", "w3")}
            ex._dsv4_actq = bool(dts & {"F8_E4M3", "I8"})
            loaded.update({"model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"})
        missing = [n for n in dict(model.named_parameters()) if n not in loaded]
        if missing or set(self.own) != set(MTP_OWN):
            raise RuntimeError(f"MTP parameters not in checkpoint: {missing} {sorted(set(MTP_OWN) - set(self.own))}")
        assert hasattr(model.model.layers[0].mlp.gate, "e_score_correction_bias")
        P.prepare_model(model, quant, rope_cfg)
        set_dtype(model, dtype)
        self.model = model
        self._z = None
        model.model.layers[0].register_forward_pre_hook(self._replace_input)

    def _replace_input(self, mod, args):
        return (self._z,) + tuple(args[1:])

    def inputs(self, X, next_ids):
        """Z [1, S, hc, D] from the main final HC state X [S, hc, D] and the next tokens [S]."""
        emb = self.model.model.embed_tokens.weight[torch.tensor(next_ids, dtype=torch.long)]
        e = P.rms_norm(self.own["enorm.weight"], emb.unsqueeze(0), self.eps)
        hx = P.rms_norm(self.own["hnorm.weight"], torch.from_numpy(X).unsqueeze(0).to(P.STATE.act), self.eps)
        ep = P.qlinear(self.own["e_proj.weight"], e, True)
        hp = P.qlinear(self.own["h_proj.weight"], hx, True)
        return P.rb(ep.float().unsqueeze(2) + hp.float())

    def run(self, X, tokens, mode="full"):
        """MTP logits [T-1, vocab]: row i from X[i] and tokens[i+1]. mode full: one forward of all rows;
        decode: one forward per row (incremental cache)."""
        T = len(tokens)
        if T < 2:
            return np.zeros((0, self.model.config.vocab_size), np.float32)
        Z = self.inputs(X[: T - 1], tokens[1:])
        cache = DynamicCache(config=self.model.config)
        rows = []
        spans = [(0, T - 1)] if mode == "full" else [(i, i + 1) for i in range(T - 1)]
        with torch.no_grad():
            for a, b in spans:
                self._z = Z[:, a:b].contiguous()
                ids = torch.tensor([tokens[a + 1:b + 1]], dtype=torch.long)
                pos = torch.arange(a, b).unsqueeze(0)
                out = self.model(input_ids=ids, position_ids=pos, use_cache=True, **{_CACHE_KW: cache})
                rows.append(out.logits[0].float())
        return torch.cat(rows).numpy().astype(np.float32)


def run_mtp(model, mtp, tokens, main_mode="full", mtp_mode="full"):
    """MTP logits [T-1, vocab] for a token list: the main model's final HC state (main_mode: full = one
    forward, decode = token by token), then the MTP block (mtp_mode)."""
    _, hc = run(model, tokens, 1, main_mode)
    return mtp.run(hc[-1], tokens, mtp_mode)


MTP_CASES = ["len2_decode", "len5", "len40_hc", "len257"]


def make_mtp_goldens(models, outdir, tol):
    """MTP goldens next to the main ones: <case>.mtp.npy and mtp_manifest.json (same token files). The
    golden path is a full forward of both; the noise floor is the all-decode path of both."""
    for mdir in models:
        name = os.path.basename(os.path.normpath(mdir))
        od = os.path.join(outdir, name)
        model = load_model(mdir, "bf16")
        mtp = MTP(mdir, "bf16")
        manifest = {"model": name, "model_dir": mdir, "checkpoint_sha256": checkpoint_sha256(mdir),
                    "transformers": __import__("transformers").__version__, "torch": torch.__version__,
                    "oracle": "tools/oracle/hf_oracle.py MTP (bf16, official numerics)",
                    "rows": "row i = MTP logits at position i (final HC state h_i with the embedding of token i+1, "
                            "RoPE position i), predicting token i+2; engine: `dsv4 logits --mtp-out` with the "
                            "same tokens (any prefill)", "cases": []}
        for case in MTP_CASES:
            toks = json.load(open(os.path.join(od, f"{case}.tokens.json")))["tokens"]
            t0 = time.time()
            lg = run_mtp(model, mtp, toks, "full", "full")
            alt = run_mtp(model, mtp, toks, "decode", "decode")
            rr = row_rel(lg, alt) if len(lg) else [0.0]
            nmax, nmean = max(rr), float(np.mean(rr))
            t = {"logits_max_row_rel_l2": max(tol["logits_max_row_rel_l2"], 3 * nmax),
                 "logits_mean_row_rel_l2": max(tol["logits_mean_row_rel_l2"], 3 * nmean),
                 "hc_max_row_rel_l2": tol["hc_max_row_rel_l2"]}
            ent = {"name": case, "tokens_file": f"{case}.tokens.json", "n_tokens": len(toks),
                   "logits_file": f"{case}.mtp.npy", "rows": int(lg.shape[0]),
                   "oracle_noise_floor": {"logits_max_row_rel_l2": nmax, "logits_mean_row_rel_l2": nmean,
                                          "paths": "full forward of main model and MTP vs both token by token"},
                   "tolerance": t}
            np.save(os.path.join(od, ent["logits_file"]), lg)
            manifest["cases"].append(ent)
            print(f"{name}/{case} MTP: T={len(toks)} rows={lg.shape[0]} noise max={nmax:.2e} mean={nmean:.2e} "
                  f"({time.time() - t0:.1f}s)", flush=True)
        manifest["teacher_forced"] = make_mtp_tf_golden(mdir, od, mtp)
        json.dump(manifest, open(os.path.join(od, "mtp_manifest.json"), "w"), indent=1)


def make_mtp_tf_golden(mdir, od, mtp=None, case="len40_hc"):
    """The MTP block alone: its logits from the golden's own final HC state (<case>.hc/hc_{n-1}.npy), to
    compare with `dsv4 logits --mtp-teacher` (the engine's MTP fed the same state)."""
    mtp = mtp or MTP(mdir, "bf16")
    n = json.load(open(os.path.join(mdir, "config.json")))["num_hidden_layers"]
    X = np.load(os.path.join(od, f"{case}.hc", f"hc_{n - 1}.npy"))
    toks = json.load(open(os.path.join(od, f"{case}.tokens.json")))["tokens"]
    lg = mtp.run(X, toks, "full")
    np.save(os.path.join(od, f"{case}.mtp_tf.npy"), lg)
    print(f"{os.path.basename(od)}/{case} MTP teacher-forced: rows={lg.shape[0]}", flush=True)
    return {"name": case, "logits_file": f"{case}.mtp_tf.npy", "hc_file": f"{case}.hc/hc_{n - 1}.npy",
            "rows": int(lg.shape[0]), "tolerance": {"logits_max_row_rel_l2": 1e-2, "min_rows_within_1e-6": 0.8}}


# ----------------------------------------------------------------------------------------------------
# Goldens
# ----------------------------------------------------------------------------------------------------
# (name, length, prefill N, dump hc). Lengths cross every boundary: CSA window 4 (1..5), the 128-token
# sliding window (127/128/129), 2 windows (255/256/257), the HCA ratio and twice it (40 > 2x16).
GOLDEN_CASES = [
    ("len1", 1, 1, False), ("len2_decode", 2, 1, False), ("len3_prefill", 3, 3, False),
    ("len4", 4, 2, False), ("len5", 5, 4, False), ("len40_hc", 40, 17, True),
    ("len127_prefill", 127, 127, False), ("len128", 128, 100, False), ("len129_prefill", 129, 129, False),
    ("len255_decode", 255, 1, False), ("len256", 256, 200, False), ("len257_prefill", 257, 257, False),
    ("len257", 257, 130, False),
]


def golden_tokens(model_name, case, T, vocab):
    seed = sum(map(ord, model_name + "/" + case))
    rng = np.random.default_rng(seed)
    return [int(x) for x in rng.integers(0, vocab, size=T)]


def checkpoint_sha256(mdir):
    """sha256 over config.json and every *.safetensors file (sorted names): detects stale goldens."""
    import hashlib
    h = hashlib.sha256()
    for fn in sorted(os.listdir(mdir)):
        if fn == "config.json" or fn.endswith(".safetensors"):
            h.update(fn.encode())
            with open(os.path.join(mdir, fn), "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def make_goldens(models, outdir, tol):
    for mdir in models:
        name = os.path.basename(os.path.normpath(mdir))
        od = os.path.join(outdir, name)
        os.makedirs(od, exist_ok=True)
        model = load_model(mdir, "bf16")
        vocab = model.config.vocab_size
        manifest = {"model": name, "model_dir": mdir, "checkpoint_sha256": checkpoint_sha256(mdir),
                    "transformers": __import__("transformers").__version__, "torch": torch.__version__, "oracle": "tools/oracle/hf_oracle.py (bf16, official numerics)",
                    "rows": "row i = logits after position prefill-1+i; engine runs `dsv4 logits` with the "
                            "same tokens and prefill", "cases": []}
        for case, T, N, dump in GOLDEN_CASES:
            toks = golden_tokens(name, case, T, vocab)
            t0 = time.time()
            lg, hc = run(model, toks, N, "prefill")
            # the oracle's own noise: the same positions through the other paths
            alts = [run(model, toks, 1, "full")]
            if N > 1:
                alts.append(run(model, toks, 1, "prefill"))
            nmax, nmean, hcn = 0.0, 0.0, [0.0] * len(hc)
            for alg, ahc in alts:
                rr = row_rel(lg, alg[N - 1:])
                nmax, nmean = max(nmax, max(rr)), max(nmean, float(np.mean(rr)))
                hcn = [max(v, max(row_rel(h, ah))) for v, h, ah in zip(hcn, hc, ahc)]
            t = {"logits_max_row_rel_l2": max(tol["logits_max_row_rel_l2"], 3 * nmax),
                 "logits_mean_row_rel_l2": max(tol["logits_mean_row_rel_l2"], 3 * nmean),
                 "hc_max_row_rel_l2": max(tol["hc_max_row_rel_l2"], 3 * max(hcn))}
            ent = {"name": case, "tokens_file": f"{case}.tokens.json", "prefill": N, "n_tokens": T,
                   "logits_file": f"{case}.logits.npy", "rows": int(lg.shape[0]),
                   "oracle_noise_floor": {"logits_max_row_rel_l2": nmax, "logits_mean_row_rel_l2": nmean,
                                          "hc_max_row_rel_l2_per_layer": hcn,
                                          "paths": "golden path vs full-sequence prefill" +
                                                   (" and vs all-decode" if N > 1 else "")},
                   "tolerance": t}
            json.dump({"tokens": toks, "prefill": N}, open(os.path.join(od, ent["tokens_file"]), "w"))
            np.save(os.path.join(od, ent["logits_file"]), lg)
            if dump:
                hd = f"{case}.hc"
                os.makedirs(os.path.join(od, hd), exist_ok=True)
                for L, h in enumerate(hc):
                    np.save(os.path.join(od, hd, f"hc_{L}.npy"), h.astype(np.float32))
                ent["hc_dir"] = hd
                ent["hc_layers"] = len(hc)
            manifest["cases"].append(ent)
            print(f"{name}/{case}: T={T} N={N} rows={lg.shape[0]} noise max={nmax:.2e} mean={nmean:.2e} "
                  f"hc={max(hcn):.2e} ({time.time() - t0:.1f}s)", flush=True)
        json.dump(manifest, open(os.path.join(od, "manifest.json"), "w"), indent=1)


def noise_floor(models, T=257):
    """Oracle self-consistency: the same positions through different paths / precisions."""
    res = {}
    for mdir in models:
        name = os.path.basename(os.path.normpath(mdir))
        model = load_model(mdir, "bf16")
        toks = golden_tokens(name, "noise", T, model.config.vocab_size)
        out = {}
        for dt in ("bf16", "fp32"):
            set_dtype(model, dt)
            full, hfull = run(model, toks, 1, "full")
            for mode, N, ch in (("prefill", 1, 1), ("prefill", 130, 1), ("chunked", 1, 16)):
                lg, hc = run(model, toks, N, mode, ch)
                rr = row_rel(lg, full[N - 1:])
                key = f"{dt} {mode} N={N}" + (f" chunk={ch}" if mode == "chunked" else "") + " vs full"
                out[key] = {"logits_max": max(rr), "logits_mean": float(np.mean(rr)),
                            "hc_max_per_layer": [max(row_rel(a, b)) for a, b in zip(hc, hfull)]}
                print(name, key, json.dumps(out[key]), flush=True)
            out[f"{dt} full"] = (full, hfull)
        b, f = out.pop("bf16 full"), out.pop("fp32 full")
        rr = row_rel(b[0], f[0])
        out["bf16 full vs fp32 full"] = {"logits_max": max(rr), "logits_mean": float(np.mean(rr)),
                                         "hc_max_per_layer": [max(row_rel(x, y)) for x, y in zip(b[1], f[1])]}
        print(name, "bf16 full vs fp32 full", json.dumps(out["bf16 full vs fp32 full"]), flush=True)
        res[name] = out
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--tokens")
    ap.add_argument("--prefill", type=int)
    ap.add_argument("--out")
    ap.add_argument("--dump-dir")
    ap.add_argument("--mode", default="prefill", choices=["prefill", "decode", "chunked", "full"])
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-quant", action="store_true", help="diagnostics: disable all FP8/FP4 fake-quants")
    ap.add_argument("--make-goldens")
    ap.add_argument("--make-mtp-goldens", help="write MTP goldens into OUTDIR/<model>/ (after --make-goldens)")
    ap.add_argument("--mtp-out", help="also write the MTP block's logits [T-1, vocab] (full forward)")
    ap.add_argument("--noise-floor", action="store_true")
    ap.add_argument("--models", nargs="*", default=["tests/data/tiny-flash", "tests/data/tiny-pro"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.make_goldens:
        make_goldens(a.models, a.make_goldens, DEFAULT_TOL)
        return
    if a.make_mtp_goldens:
        make_mtp_goldens(a.models, a.make_mtp_goldens, DEFAULT_TOL)
        return
    if a.noise_floor:
        json.dump(noise_floor(a.models), open("/tmp/dsv4_noise_floor.json", "w"), indent=1)
        return
    if not (a.model and a.tokens and a.out):
        ap.error("--model, --tokens and --out are required")
    if a.tokens.startswith("@"):
        j = json.load(open(a.tokens[1:]))
        toks = j["tokens"] if isinstance(j, dict) else j
        if a.prefill is None and isinstance(j, dict):
            a.prefill = j.get("prefill")
    else:
        toks = [int(x) for x in a.tokens.split(",") if x.strip()]
    N = a.prefill if a.prefill is not None else len(toks)
    model = load_model(a.model, a.dtype)
    P.STATE.quant = not a.no_quant
    lg, hc = run(model, toks, N, a.mode, a.chunk)
    np.save(a.out, lg)
    if a.dump_dir:
        os.makedirs(a.dump_dir, exist_ok=True)
        for L, h in enumerate(hc):
            np.save(os.path.join(a.dump_dir, f"hc_{L}.npy"), h.astype(np.float32))
    print(f"wrote {a.out} {lg.shape}", file=sys.stderr)
    if a.mtp_out:
        ml = MTP(a.model, a.dtype).run(hc[-1], toks, "full")
        np.save(a.mtp_out, ml)
        print(f"wrote {a.mtp_out} {ml.shape}", file=sys.stderr)


# tolerance floors; each golden case gets max(floor, 3 x its measured oracle noise floor)
DEFAULT_TOL = {"logits_max_row_rel_l2": 2e-2, "logits_mean_row_rel_l2": 5e-3, "hc_max_row_rel_l2": 2e-2}

if __name__ == "__main__":
    main()
