#!/usr/bin/env python3
"""layer_check.py — the tight per-layer comparison of a teacher-forced engine run against an oracle's
hyper-connection dumps (numpy only).

The engine ran `dsv4 logits ... --teacher-dir REF --dump-dir ENG`: its layer L saw exactly the oracle's
input, so ENG/hc_L.npy differs from REF/hc_L.npy only by that one layer's own numerics. On the
residual-dominant tiny models the engine reproduces the oracle bit for bit at most positions; the rare
exceptions are single BF16 rounding flips (attention probabilities, FP8 scale edges) or exact top-k ties.

usage: layer_check.py REF_DIR ENG_DIR N_LAYERS [--max-rel-l2 T] [--min-exact F]
Fails (exit 1) if, for any layer, the max over positions of the row relative L2 exceeds T (default 1e-2) or
the fraction of positions that are bitwise equal is below F (default 0.8)."""
import argparse
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("eng")
    ap.add_argument("n_layers", type=int)
    ap.add_argument("--max-rel-l2", type=float, default=1e-2)
    ap.add_argument("--min-exact", type=float, default=0.8)
    a = ap.parse_args()
    ok = True
    for layer in range(a.n_layers):
        r = np.load(f"{a.ref}/hc_{layer}.npy").astype(np.float64)
        e = np.load(f"{a.eng}/hc_{layer}.npy").astype(np.float64)
        if r.shape != e.shape:
            print(f"layer {layer}: shape {e.shape} != {r.shape}")
            return 2
        r2, e2 = r.reshape(r.shape[0], -1), e.reshape(e.shape[0], -1)
        rel = np.linalg.norm(e2 - r2, axis=1) / np.maximum(np.linalg.norm(r2, axis=1), 1e-30)
        exact = float(np.mean(np.all(e2 == r2, axis=1)))
        good = rel.max() <= a.max_rel_l2 and exact >= a.min_exact and np.all(np.isfinite(e2))
        ok &= bool(good)
        print(f"layer {layer}: max_rel_l2={rel.max():.3e} (pos {int(rel.argmax())}) bitwise_equal_positions="
              f"{exact:.3f} {'ok' if good else 'FAIL'}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
