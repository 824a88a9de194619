#!/usr/bin/env python3
"""compare.py — compare engine outputs with oracle goldens (numpy only).

Single case against a golden manifest:
  compare.py --manifest tests/data/golden/tiny-flash/manifest.json --case len257 \
             --logits out.npy [--hc-dir DIR] [--tol T] [--hc-tol T]
All cases of a manifest (engine files named like the goldens: <case>.logits.npy, <case>.hc/hc_L.npy):
  compare.py --manifest tests/data/golden/tiny-flash/manifest.json --engine-dir DIR [--tol T] [--hc-tol T]
Two arbitrary files:
  compare.py --ref golden.npy --logits out.npy [--ref-hc-dir D --hc-dir D] [--tol T] [--hc-tol T]

Metrics (pass = all within tolerance): per-row relative L2 ||e - g|| / ||g|| of the logits (row = one position), its max and mean,
argmax agreement; per layer L the max over positions of the relative L2 of the HC state rows
([hc_mult, hidden] flattened). Tolerances default to the manifest's per-case "tolerance"
({"logits_max_row_rel_l2", "logits_mean_row_rel_l2", "hc_max_row_rel_l2"}), else 2e-2 / 5e-3 / 2e-2;
--tol / --mean-tol / --hc-tol override them.
Exit status: 0 pass, 1 above tolerance (or argmax disagreement with --strict-argmax), 2 usage/shape error.
"""
import argparse
import json
import os
import sys

import numpy as np

DEFAULT_TOL = {"logits_max_row_rel_l2": 2e-2, "logits_mean_row_rel_l2": 5e-3, "hc_max_row_rel_l2": 2e-2}


def row_rel_l2(e, g):
    e = np.asarray(e, np.float64).reshape(len(e), -1)
    g = np.asarray(g, np.float64).reshape(len(g), -1)
    return np.linalg.norm(e - g, axis=1) / np.maximum(np.linalg.norm(g, axis=1), 1e-30)


def load(path):
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return np.load(path)


def compare_case(name, ref_logits, eng_logits, ref_hc_dir, eng_hc_dir, tol, mean_tol, hc_tol, strict_argmax, verbose):
    ok = True
    g, e = load(ref_logits), load(eng_logits)
    if g.shape != e.shape:
        print(f"[{name}] logits shape mismatch: engine {e.shape} golden {g.shape}")
        return False, True
    if not np.all(np.isfinite(e)):
        print(f"[{name}] engine logits contain NaN/Inf")
        return False, False
    rr = row_rel_l2(e, g)
    am = float(np.mean(np.argmax(e, -1) == np.argmax(g, -1)))
    worst = int(np.argmax(rr))
    status = "ok"
    if rr.max() > tol or rr.mean() > mean_tol or (strict_argmax and am < 1.0):
        ok = False
        status = "FAIL"
    print(f"[{name}] logits rows={len(rr)} max_rel_l2={rr.max():.3e} (row {worst}) mean={rr.mean():.3e} "
          f"argmax_agree={am:.3f} tol max={tol:.1e} mean={mean_tol:.1e} {status}")
    if verbose:
        print("   per-row rel-L2: " + " ".join(f"{v:.2e}" for v in rr))
    if ref_hc_dir and eng_hc_dir:
        L = 0
        while os.path.exists(os.path.join(ref_hc_dir, f"hc_{L}.npy")):
            gh = load(os.path.join(ref_hc_dir, f"hc_{L}.npy"))
            p = os.path.join(eng_hc_dir, f"hc_{L}.npy")
            if not os.path.exists(p):
                print(f"[{name}] hc layer {L}: engine file missing {p}")
                return False, True
            eh = load(p)
            if gh.shape != eh.shape:
                print(f"[{name}] hc layer {L} shape mismatch: engine {eh.shape} golden {gh.shape}")
                return False, True
            hr = row_rel_l2(eh, gh)
            st = "ok" if hr.max() <= hc_tol else "FAIL"
            ok &= hr.max() <= hc_tol
            print(f"[{name}] hc layer {L}: max_rel_l2={hr.max():.3e} (pos {int(np.argmax(hr))}) mean={hr.mean():.3e} "
                  f"tol={hc_tol:.1e} {st}")
            L += 1
        if L == 0:
            print(f"[{name}] no golden hc files in {ref_hc_dir}")
            return False, True
    return ok, False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest")
    ap.add_argument("--case")
    ap.add_argument("--engine-dir")
    ap.add_argument("--ref")
    ap.add_argument("--ref-hc-dir")
    ap.add_argument("--logits")
    ap.add_argument("--hc-dir")
    ap.add_argument("--tol", type=float)
    ap.add_argument("--mean-tol", type=float)
    ap.add_argument("--hc-tol", type=float)
    ap.add_argument("--strict-argmax", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    all_ok, usage_err = True, False
    try:
        if a.manifest:
            man = json.load(open(a.manifest))
            base = os.path.dirname(os.path.abspath(a.manifest))
            cases = man["cases"]
            if a.case:
                cases = [c for c in cases if c["name"] == a.case]
                if not cases:
                    print(f"no case {a.case} in {a.manifest}")
                    sys.exit(2)
                if not a.logits and not a.engine_dir:
                    ap.error("--logits or --engine-dir required")
            elif not a.engine_dir:
                ap.error("--engine-dir (or --case with --logits) required")
            for c in cases:
                t = dict(DEFAULT_TOL, **c.get("tolerance", {}))
                tol = a.tol if a.tol is not None else t["logits_max_row_rel_l2"]
                hct = a.hc_tol if a.hc_tol is not None else t["hc_max_row_rel_l2"]
                mt = a.mean_tol if a.mean_tol is not None else t["logits_mean_row_rel_l2"]
                if a.engine_dir:
                    el = os.path.join(a.engine_dir, c["logits_file"])
                    eh = os.path.join(a.engine_dir, c["hc_dir"]) if c.get("hc_dir") else None
                else:
                    el, eh = a.logits, a.hc_dir
                rh = os.path.join(base, c["hc_dir"]) if c.get("hc_dir") and eh else None
                ok, ue = compare_case(f"{man.get('model', '?')}/{c['name']}", os.path.join(base, c["logits_file"]), el,
                                      rh, eh, tol, mt, hct, a.strict_argmax, a.verbose)
                all_ok &= ok
                usage_err |= ue
        elif a.ref and a.logits:
            ok, ue = compare_case("files", a.ref, a.logits, a.ref_hc_dir, a.hc_dir,
                                  a.tol if a.tol is not None else DEFAULT_TOL["logits_max_row_rel_l2"],
                                  a.mean_tol if a.mean_tol is not None else DEFAULT_TOL["logits_mean_row_rel_l2"],
                                  a.hc_tol if a.hc_tol is not None else DEFAULT_TOL["hc_max_row_rel_l2"],
                                  a.strict_argmax, a.verbose)
            all_ok, usage_err = ok, ue
        else:
            ap.error("use --manifest ... or --ref/--logits")
    except FileNotFoundError as ex:
        print(f"missing file: {ex}")
        sys.exit(2)
    if usage_err:
        sys.exit(2)
    print("PASS" if all_ok else "FAIL")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
