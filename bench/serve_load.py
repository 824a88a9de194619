#!/usr/bin/env python3
"""serve_load.py — a load generator for `dsv4 serve` (or any OpenAI-compatible server) that reports what
`vllm bench serve` reports: TTFT, TPOT (excluding the first token), ITL and end-to-end latency (mean, median,
p90, p99), request and token throughput. Not a test; docs/PERF.md says how to run it.

Requests: the random dataset of `vllm bench serve` — prompts of random token ids (exact input lengths, sent
to /v1/completions as token arrays) with input and output lengths drawn uniformly from
[L * (1 - range_ratio), L * (1 + range_ratio)]; every answer runs to its length (ignore_eos) and is streamed
(stream_options.include_usage gives the exact token counts). `--endpoint chat` sends random words as one user
message instead (lengths then approximate). A fixed number of clients (--concurrency, a comma list runs each
in turn) keep one request in flight each until --num-prompts are done. Standard library only.

  python3 bench/serve_load.py --url http://127.0.0.1:8000 --concurrency 1,8,32,64 \\
      --input-len 1024 --output-len 1024 --num-prompts 128 [--json-out results.json]
"""
import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
import urllib.parse


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def one_request(url, args, prompt, out_len):
    """Streams one request; returns dict(ok, ttft, itl[], e2e, in_tokens, out_tokens, error)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=args.timeout)
    body = {"model": args.model, "max_tokens": out_len, "temperature": args.temperature, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": not args.allow_eos}
    if args.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
        path = "/v1/chat/completions"
    else:
        body["prompt"] = prompt
        path = "/v1/completions"
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = f"Bearer {args.api_key}"
    res = {"ok": False, "ttft": None, "itl": [], "e2e": None, "in_tokens": 0, "out_tokens": 0, "error": ""}
    t0 = time.perf_counter()
    try:
        conn.request("POST", path, json.dumps(body), headers)
        r = conn.getresponse()
        if r.status != 200:
            res["error"] = f"HTTP {r.status}: {r.read()[:200]!r}"
            return res
        last = None
        for raw in r:
            line = raw.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                break
            ev = json.loads(data)
            if ev.get("usage"):
                res["in_tokens"] = ev["usage"]["prompt_tokens"]
                res["out_tokens"] = ev["usage"]["completion_tokens"]
            for c in ev.get("choices", []):
                piece = c.get("text") if "text" in c else (c.get("delta") or {}).get("content") or \
                    (c.get("delta") or {}).get("reasoning_content")
                if piece:
                    now = time.perf_counter()
                    if last is None:
                        res["ttft"] = now - t0
                    else:
                        res["itl"].append(now - last)
                    last = now
        res["e2e"] = time.perf_counter() - t0
        res["ok"] = res["ttft"] is not None
        if not res["ok"]:
            res["error"] = "no tokens streamed"
    except Exception as e:  # noqa: BLE001 - a failed request is counted, not fatal
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    return res


def make_requests(args, rng):
    reqs = []
    lo_in, hi_in = int(args.input_len * (1 - args.range_ratio)), int(args.input_len * (1 + args.range_ratio))
    lo_out, hi_out = int(args.output_len * (1 - args.range_ratio)), int(args.output_len * (1 + args.range_ratio))
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "engine", "number", "purple"]
    for _ in range(args.num_prompts):
        n_in, n_out = rng.randint(max(1, lo_in), max(1, hi_in)), rng.randint(max(1, lo_out), max(1, hi_out))
        if args.endpoint == "chat":
            prompt = " ".join(rng.choice(words) for _ in range(n_in))
        else:
            prompt = [rng.randint(1000, 100000) for _ in range(n_in)]
        reqs.append((prompt, n_out))
    return reqs


def run(args, concurrency, reqs):
    results, lock, it = [], threading.Lock(), iter(list(reqs))

    def worker():
        while True:
            with lock:
                nxt = next(it, None)
            if nxt is None:
                return
            r = one_request(args.url, args, *nxt)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dur = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    ms = 1000.0
    ttft = [r["ttft"] * ms for r in ok]
    tpot = [(r["e2e"] - r["ttft"]) / (r["out_tokens"] - 1) * ms for r in ok if r["out_tokens"] > 1]
    itl = [x * ms for r in ok for x in r["itl"]]
    e2e = [r["e2e"] * ms for r in ok]
    n_in, n_out = sum(r["in_tokens"] for r in ok), sum(r["out_tokens"] for r in ok)
    summary = {"concurrency": concurrency, "completed": len(ok), "failed": len(results) - len(ok), "duration_s": dur,
               "total_input_tokens": n_in, "total_output_tokens": n_out, "request_throughput": len(ok) / dur,
               "output_throughput": n_out / dur, "total_token_throughput": (n_in + n_out) / dur,
               "errors": sorted({r["error"] for r in results if not r["ok"]})[:5]}
    for name, xs in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2e)):
        summary[f"mean_{name}_ms"] = statistics.fmean(xs) if xs else float("nan")
        for p, key in ((50, "median"), (90, "p90"), (99, "p99")):
            summary[f"{key}_{name}_ms"] = percentile(xs, p)
    return summary


def report(s):
    w = 50
    print("{s:{c}^{n}}".format(s=f" Serving Benchmark Result (concurrency {s['concurrency']}) ", n=w, c="="))
    rows = [("Successful requests:", s["completed"]), ("Failed requests:", s["failed"]),
            ("Benchmark duration (s):", f"{s['duration_s']:.2f}"), ("Total input tokens:", s["total_input_tokens"]),
            ("Total generated tokens:", s["total_output_tokens"]),
            ("Request throughput (req/s):", f"{s['request_throughput']:.2f}"),
            ("Output token throughput (tok/s):", f"{s['output_throughput']:.2f}"),
            ("Total Token throughput (tok/s):", f"{s['total_token_throughput']:.2f}")]
    for k, v in rows:
        print(f"{k:<40}{v:<10}")
    for name, title in (("ttft", "Time to First Token"), ("tpot", "Time per Output Token (excl. 1st token)"),
                        ("itl", "Inter-token Latency"), ("e2el", "End-to-end Latency")):
        print("{s:{c}^{n}}".format(s=title, n=w, c="-"))
        for key, label in (("mean", "Mean"), ("median", "Median"), ("p90", "P90"), ("p99", "P99")):
            print(f"{label + ' ' + name.upper() + ' (ms):':<40}{s[f'{key}_{name}_ms']:<10.2f}")
    if s["errors"]:
        print("errors:", *s["errors"], sep="\n  ")
    print("=" * w)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    ap.add_argument("--model", default="dsv4")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--concurrency", default="1", help="comma list, e.g. 1,8,32,64 (each runs in turn)")
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--input-len", type=int, default=1024)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--range-ratio", type=float, default=0.0, help="lengths uniform in L*(1 +- ratio)")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--allow-eos", action="store_true", help="let answers end at EOS (default: run to length)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--warmup", type=int, default=1, help="requests run (and not counted) before each level")
    ap.add_argument("--json-out", default=None, help="write every level's summary (and the arguments) here")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    levels = [int(x) for x in args.concurrency.split(",") if x]
    out = []
    for c in levels:
        for prompt, n in make_requests(argparse.Namespace(**{**vars(args), "num_prompts": args.warmup}), rng):
            one_request(args.url, args, prompt, min(n, 8))
        s = run(args, c, make_requests(args, rng))
        report(s)
        out.append(s)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "results": out}, f, indent=1)
    return 0 if all(s["failed"] == 0 for s in out) else 1


if __name__ == "__main__":
    sys.exit(main())
