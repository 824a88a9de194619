#!/usr/bin/env python3
"""mkfixture.py — builds a hostile checkpoint for tests/hostile: a copy of SRC at DST with edits.
  --config KEY=JSON        set a config.json key (JSON value, e.g. hc_sinkhorn_iters=1073741824)
  --patch NAME OFF HEX     overwrite bytes of tensor NAME at byte offset OFF with HEX (e.g. 7fc0)
  --alias A B              point tensor B's data_offsets at A's bytes (same dtype/shape; same shard)
Plain standard library; the data sections are copied byte for byte."""
import json, os, shutil, struct, sys

def shard_of(dst, name):
    wm = json.load(open(os.path.join(dst, "model.safetensors.index.json")))["weight_map"]
    return os.path.join(dst, wm[name])

def read_header(path):
    b = open(path, "rb").read()
    hl = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + hl]), b, 8 + hl

def write_header(path, h, b, data_start):
    s = json.dumps(h, separators=(",", ":")).encode()
    s += b" " * ((8 - len(s) % 8) % 8)
    with open(path + ".new", "wb") as f:
        f.write(struct.pack("<Q", len(s)) + s + b[data_start:])
    os.replace(path + ".new", path)

def main(a):
    src, dst = a[0], a[1]
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    i = 2
    while i < len(a):
        if a[i] == "--config":
            k, v = a[i + 1].split("=", 1)
            p = os.path.join(dst, "config.json")
            c = json.load(open(p))
            c[k] = json.loads(v)
            json.dump(c, open(p, "w"), indent=1)
            i += 2
        elif a[i] == "--patch":
            name, off, hx = a[i + 1], int(a[i + 2]), bytes.fromhex(a[i + 3])
            p = shard_of(dst, name)
            h, b, ds = read_header(p)
            b0 = h[name]["data_offsets"][0]
            with open(p, "r+b") as f:
                f.seek(ds + b0 + off)
                f.write(hx)
            i += 4
        elif a[i] == "--alias":
            x, y = a[i + 1], a[i + 2]
            p = shard_of(dst, x)
            assert p == shard_of(dst, y), "--alias needs two tensors of one shard"
            h, b, ds = read_header(p)
            h[y]["data_offsets"] = list(h[x]["data_offsets"])
            write_header(p, h, b, ds)
            i += 3
        else:
            sys.exit("mkfixture.py: unknown argument " + a[i])

if __name__ == "__main__":
    main(sys.argv[1:])
