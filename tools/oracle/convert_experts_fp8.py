#!/usr/bin/env python3
"""convert_experts_fp8.py — re-encodes the FP4 routed experts of a released-format checkpoint to FP8, as
the official conversion's `--expert-dtype fp8` path does for Hopper (spec §2.2): for every 128x128 tile,
tile scale = (max of its per-32 e8m0 scales) / 64, and each value e2m1 · (scale_32 / tile_scale) is stored
as e4m3 (exact: e2m1 has 2 significant bits and the ratio is a power of two <= 64, so |v| <= 384 fits;
values whose ratio falls below 2^-14 would lose bits — the script reports how many). Everything else is
copied byte for byte; config.json gets "expert_dtype": "fp8". numpy only.

usage: convert_experts_fp8.py SRC_DIR DST_DIR
"""
import json
import os
import re
import shutil
import sys

import numpy as np

E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float64)


def e4m3_encode(x):
    """Exact encode of values known to be representable in e4m3 (asserts it)."""
    codes = np.zeros(x.shape, dtype=np.uint8)
    table = np.zeros(256)
    for c in range(256):
        s, e, m = c >> 7, (c >> 3) & 15, c & 7
        if e == 15 and m == 7:
            table[c] = np.nan
            continue
        v = m * 2.0 ** -9 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
        table[c] = -v if s else v
    lookup = {}
    for c in range(256):
        if not np.isnan(table[c]):
            lookup.setdefault(float(table[c]), c)
    flat = x.ravel()
    out = codes.ravel()
    for i, v in enumerate(flat.tolist()):
        key = 0.0 if v == 0 else v
        if np.signbit(v) and v == 0:
            out[i] = 0x80
            continue
        c = lookup.get(key)
        assert c is not None, f"value {v} not representable in e4m3"
        out[i] = c
    return codes


def read_st(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    return header, data


def write_st(path, tensors):
    # Widest element first keeps every tensor aligned to its element size (no gaps allowed).
    width = {"F32": 4, "I64": 8, "BF16": 2, "F8_E4M3": 1, "F8_E8M0": 1, "I8": 1}
    tensors = sorted(tensors, key=lambda t: -width[t[1]])
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for t in tensors:
            f.write(t[3])


def convert(w_i8, s_e8m0):
    """w [out, in/2] packed e2m1 (low nibble first), s [out, in/32] e8m0 -> (fp8 [out, in], scale [out/128, in/128])."""
    out, half = w_i8.shape
    k = half * 2
    codes = np.empty((out, k), dtype=np.uint8)
    codes[:, 0::2] = w_i8 & 0x0F
    codes[:, 1::2] = w_i8 >> 4
    vals = E2M1[codes]
    exp32 = s_e8m0.astype(np.int64) - 127                       # [out, k/32]
    to, tk = (out + 127) // 128, (k + 127) // 128
    tile_exp = np.zeros((to, tk), dtype=np.int64)
    lossy = 0
    fp8 = np.empty((out, k), dtype=np.float64)
    for i in range(to):
        for j in range(tk):
            blk = exp32[i * 128:(i + 1) * 128, j * 4:(j + 1) * 4]
            te = int(blk.max()) - 6                               # max / 64
            tile_exp[i, j] = te
            ratio = np.repeat(blk - te, 32, axis=1)               # log2(scale_32 / tile_scale) <= 6
            lossy += int(np.sum(ratio < -14))
            fp8[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = \
                vals[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] * np.exp2(ratio)
    return e4m3_encode(fp8), (tile_exp + 127).astype(np.uint8), lossy


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["expert_dtype"] = "fp8"
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=2)
    idx_path = os.path.join(src, "model.safetensors.index.json")
    shards = sorted(set(json.load(open(idx_path))["weight_map"].values()))
    shutil.copy(idx_path, dst)
    pat = re.compile(r"\.ffn\.experts\.\d+\.w[123]\.weight$")
    lossy_total = 0
    for sh in shards:
        header, data = read_st(os.path.join(src, sh))
        out = []
        for name, t in header.items():
            a, b = t["data_offsets"]
            if name.endswith(".scale") and pat.search(name[:-len(".scale")] + ".weight"):
                continue  # rewritten with its weight
            if pat.search(name):
                sname = name[:-len(".weight")] + ".scale"
                st = header[sname]
                w = np.frombuffer(data[a:b], dtype=np.uint8).reshape(t["shape"])
                s = np.frombuffer(data[st["data_offsets"][0]:st["data_offsets"][1]], dtype=np.uint8).reshape(st["shape"])
                q, sc, lossy = convert(w, s)
                lossy_total += lossy
                out.append((name, "F8_E4M3", list(q.shape), q.tobytes()))
                out.append((sname, "F8_E8M0", list(sc.shape), sc.tobytes()))
            else:
                out.append((name, t["dtype"], t["shape"], data[a:b]))
        write_st(os.path.join(dst, sh), out)
    print(f"wrote {dst}: experts re-encoded to FP8 ({lossy_total} values with scale ratio below 2^-14 lost bits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
