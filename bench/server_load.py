#!/usr/bin/env python3
"""Load generator for `dsv4 serve` (or any OpenAI-compatible server): N concurrent clients stream
/v1/completions requests of a fixed shape (random prompt ids of --prompt-tokens, --output-tokens
generated with ignore_eos, greedy) and it prints generated tokens per second and the TTFT,
inter-token and end-to-end latency percentiles. Standard library only (http.client), so it runs
on a GPU host without PyPI.

TTFT is from sending the request to the first streamed text; inter-token latency is the gap between
consecutive streamed chunks divided by the tokens they carried (the server sends one chunk per
scheduler step, so usually one token; the average is printed).

usage: python3 bench/server_load.py --url http://127.0.0.1:8000 [--clients 64] [--requests 256]
         [--prompt-tokens 128] [--output-tokens 128] [--api-key K] [--json]"""
import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
import urllib.parse


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def request_json(url, path, api_key, body=None):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer " + api_key
    conn.request("POST" if body is not None else "GET", path, body=json.dumps(body) if body is not None else None,
                 headers=headers)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"{path}: HTTP {r.status}: {data[:300]!r}")
    return json.loads(data)


class Client(threading.Thread):
    """Sends requests from the shared queue over one keep-alive connection, timing each."""

    def __init__(self, args, model, jobs, results, lock):
        super().__init__(daemon=True)
        self.args, self.model, self.jobs, self.results, self.lock = args, model, jobs, results, lock
        u = urllib.parse.urlparse(args.url)
        self.host, self.port = u.hostname, u.port or 80

    def run(self):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.args.api_key:
            headers["Authorization"] = "Bearer " + self.args.api_key
        while True:
            with self.lock:
                if not self.jobs:
                    break
                prompt = self.jobs.pop()
            body = json.dumps({"model": self.model, "prompt": prompt, "max_tokens": self.args.output_tokens,
                               "temperature": 0, "ignore_eos": True, "stream": True,
                               "stream_options": {"include_usage": True}})
            t_send = time.perf_counter()
            conn.request("POST", "/v1/completions", body=body, headers=headers)
            r = conn.getresponse()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
            chunk_times, tokens = [], 0
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data: "):
                    continue
                if line == b"data: [DONE]":
                    break
                event = json.loads(line[6:])
                if "error" in event:
                    raise RuntimeError(f"stream error: {event['error']}")
                if event.get("usage") and not event.get("choices"):
                    tokens = event["usage"]["completion_tokens"]
                elif event["choices"] and event["choices"][0]["text"]:
                    chunk_times.append(time.perf_counter())
            r.read()  # the chunked terminator, so the connection can be reused
            t_end = time.perf_counter()
            with self.lock:
                self.results.append((t_send, chunk_times, tokens, t_end))
        conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=0, help="default: 4 per client")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--warmup", type=int, default=4, help="requests sent one by one first, not measured")
    p.add_argument("--api-key", default="")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="also print the numbers as one JSON line")
    args = p.parse_args()
    n_requests = args.requests or 4 * args.clients

    model = request_json(args.url, "/v1/models", args.api_key)["data"][0]["id"]
    rng = random.Random(args.seed)
    # Random ids away from the special tokens at both ends of the vocabulary (nano: 8,192 ids).
    def prompt():
        return [rng.randrange(100, 8000) for _ in range(args.prompt_tokens)]

    for _ in range(args.warmup):
        request_json(args.url, "/v1/completions", args.api_key,
                     {"model": model, "prompt": prompt(), "max_tokens": 8, "temperature": 0, "ignore_eos": True})

    jobs = [prompt() for _ in range(n_requests)]
    results, lock = [], threading.Lock()
    clients = [Client(args, model, jobs, results, lock) for _ in range(args.clients)]
    t0 = time.perf_counter()
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    wall = time.perf_counter() - t0
    if len(results) != n_requests:
        sys.exit(f"only {len(results)} of {n_requests} requests completed")

    ttft = [(times[0] - t_send) * 1e3 for t_send, times, _, _ in results if times]
    itl, chunks, tokens = [], 0, 0
    for t_send, times, n, _ in results:
        chunks += len(times)
        tokens += n
        per_chunk = n / max(len(times), 1)
        itl += [(b - a) * 1e3 / per_chunk for a, b in zip(times, times[1:])]
    e2e = [t_end - t_send for t_send, _, _, t_end in results]
    out = {
        "model": model, "clients": args.clients, "requests": n_requests, "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens, "wall_s": wall, "generated_tokens": tokens,
        "generated_tok_per_s": tokens / wall, "requests_per_s": n_requests / wall,
        "tokens_per_chunk": tokens / max(chunks, 1),
        "ttft_ms": {q: percentile(ttft, q) for q in (50, 90, 99)} | {"mean": statistics.fmean(ttft)},
        "itl_ms": {q: percentile(itl, q) for q in (50, 90, 99)} | {"mean": statistics.fmean(itl)},
        "e2e_s": {q: percentile(e2e, q) for q in (50, 90, 99)},
    }
    print(f"model {model}: {args.clients} clients, {n_requests} requests of {args.prompt_tokens} prompt + "
          f"{args.output_tokens} generated tokens (ignore_eos, greedy)")
    print(f"wall {wall:.2f} s: {tokens} generated tokens = {out['generated_tok_per_s']:.1f} tok/s, "
          f"{out['requests_per_s']:.2f} requests/s, {out['tokens_per_chunk']:.2f} tokens per streamed chunk")
    for name, unit, d in (("TTFT", "ms", out["ttft_ms"]), ("inter-token latency", "ms", out["itl_ms"]),
                          ("end-to-end", "s", out["e2e_s"])):
        print(f"{name:20s} p50 {d[50]:9.2f} {unit}   p90 {d[90]:9.2f} {unit}   p99 {d[99]:9.2f} {unit}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
