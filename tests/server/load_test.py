#!/usr/bin/env python3
"""Load test of `dsv4 serve` (issue 14): 64 concurrent clients (the official `openai` client)
send 1,000 requests to nano on the CPU — completions and chat, streaming and not, and streams the
client drops after the first chunk. Every request must come back whole (finish_reason, usage, a
streamed text equal to its parts), every greedy text must equal the same request run alone, and
afterwards the server must account for every request and hold no KV blocks.

Outputs are a few tokens long: nano on two CPU cores serves ~10-25 requests a second, so the whole
run takes one to two minutes. Skipped under the sanitizers (five to ten times slower there; the
functional suite openai_client_test.py runs under them instead).

usage: load_test.py --dsv4 BIN [--serve-scripted BIN] [--sanitized] [--requests N] [--clients N]"""
import argparse
import collections
import concurrent.futures
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openai  # noqa: E402
from server_process import SKIP, ServerProcess, metric  # noqa: E402

NANO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "nano")

# Short prompts, each with its own output length; the greedy oracle is one run of each alone.
COMPLETION_PROMPTS = ["And it came to pass", "In the beginning", "Then said Jesus", "And the LORD spake",
                      "Blessed are", "Now the serpent", "And Moses", "The fool hath said",
                      "Thus saith the LORD", "And they went", "Behold", "Hear, O Israel"]
CHAT_PROMPTS = ["Who was Moses?", "Tell me of David.", "What is wisdom?", "Where is Egypt?"]


def max_tokens_for(i):
    return 2 + i % 4  # 2..5 tokens


def completion(client, prompt_idx, stream):
    kw = dict(model="nano", prompt=COMPLETION_PROMPTS[prompt_idx], max_tokens=max_tokens_for(prompt_idx),
              temperature=0)
    if not stream:
        r = client.completions.create(**kw)
        c = r.choices[0]
        return c.text, c.finish_reason, r.usage.completion_tokens
    text, finish, usage = "", None, None
    for chunk in client.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        if chunk.usage is not None and not chunk.choices:
            usage = chunk.usage.completion_tokens
            continue
        text += chunk.choices[0].text
        finish = chunk.choices[0].finish_reason or finish
    return text, finish, usage


def chat(client, prompt_idx, stream):
    kw = dict(model="nano", messages=[{"role": "user", "content": CHAT_PROMPTS[prompt_idx]}],
              max_tokens=max_tokens_for(prompt_idx) + 2, temperature=0)
    if not stream:
        r = client.chat.completions.create(**kw)
        m = r.choices[0].message
        return ((m.model_extra or {}).get("reasoning_content") or "") + "|" + (m.content or ""), \
            r.choices[0].finish_reason, r.usage.completion_tokens
    reasoning, content, finish, usage = "", "", None, None
    for chunk in client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        if chunk.usage is not None and not chunk.choices:
            usage = chunk.usage.completion_tokens
            continue
        d = chunk.choices[0].delta
        reasoning += (d.model_extra or {}).get("reasoning_content") or ""
        content += d.content or ""
        finish = chunk.choices[0].finish_reason or finish
    return reasoning + "|" + content, finish, usage


def dropped_stream(client, prompt_idx):
    """A stream the client closes after its first chunk (the server must cancel it)."""
    stream = client.completions.create(model="nano", prompt=COMPLETION_PROMPTS[prompt_idx], max_tokens=200,
                                       temperature=0, stream=True)
    next(iter(stream))
    stream.close()
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsv4", required=True)
    parser.add_argument("--serve-scripted")  # unused: the same command line as openai_client_test.py
    parser.add_argument("--sanitized", action="store_true")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()
    if args.sanitized:
        print("load test skipped: a sanitizer build serves nano 5-10x slower, which would make this "
              "1,000-request run take many minutes; openai_client_test.py covers the server under ASan")
        return SKIP
    seed = int(os.environ.get("DSV4_TEST_SEED") or random.SystemRandom().randrange(2**63))
    print(f"[seed] DSV4_TEST_SEED={seed} (the request mix; set it to replay)", flush=True)
    rng = random.Random(seed)

    server = ServerProcess([args.dsv4, "serve", "-m", NANO_DIR, "--backend", "cpu", "--port", "0",
                            "--max-running", "64"], "nano")
    try:
        server.wait_ready()
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=300)

        # The oracle: each request alone, one at a time.
        t0 = time.time()
        alone = {}
        for i in range(len(COMPLETION_PROMPTS)):
            alone[("completion", i)] = completion(client, i, False)
        for i in range(len(CHAT_PROMPTS)):
            alone[("chat", i)] = chat(client, i, False)
        n_alone = len(alone)
        print(f"{n_alone} requests alone in {time.time() - t0:.1f} s", flush=True)

        # The mix: 40 % completions, 20 % streamed completions, 15 % chat, 10 % streamed chat,
        # 15 % streams dropped after their first chunk.
        plan = []
        for _ in range(args.requests):
            x = rng.random()
            if x < 0.40:
                plan.append(("completion", rng.randrange(len(COMPLETION_PROMPTS)), False))
            elif x < 0.60:
                plan.append(("completion", rng.randrange(len(COMPLETION_PROMPTS)), True))
            elif x < 0.75:
                plan.append(("chat", rng.randrange(len(CHAT_PROMPTS)), False))
            elif x < 0.85:
                plan.append(("chat", rng.randrange(len(CHAT_PROMPTS)), True))
            else:
                plan.append(("dropped", rng.randrange(len(COMPLETION_PROMPTS)), True))

        def run(job):
            kind, idx, stream = job
            if kind == "completion":
                return completion(client, idx, stream)
            if kind == "chat":
                return chat(client, idx, stream)
            return dropped_stream(client, idx)

        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            futures = [pool.submit(run, job) for job in plan]
            results = []
            for f in futures:
                try:
                    results.append(f.result())
                except Exception as e:  # noqa: BLE001 (every failure is reported below)
                    results.append(e)
        elapsed = time.time() - t0

        failures = collections.Counter()
        examples = {}
        for job, result in zip(plan, results):
            kind, idx, stream = job
            if isinstance(result, Exception):
                failures["exception"] += 1
                examples.setdefault("exception", f"{job}: {result!r}")
                continue
            if kind == "dropped":
                continue
            text, finish, usage = result
            want_text, want_finish, want_usage = alone[(kind, idx)]
            if finish not in ("length", "stop") or usage is None:
                failures["incomplete"] += 1
                examples.setdefault("incomplete", f"{job}: finish {finish}, usage {usage}")
            elif (text, finish, usage) != (want_text, want_finish, want_usage):
                failures["differs from alone"] += 1
                examples.setdefault("differs from alone",
                                    f"{job}: {text!r} ({finish}, {usage}) vs alone {want_text!r} "
                                    f"({want_finish}, {want_usage})")
        kinds = collections.Counter((k, s) for k, _, s in plan)
        print(f"{args.requests} requests from {args.clients} clients in {elapsed:.1f} s "
              f"({args.requests / elapsed:.1f} req/s): " +
              ", ".join(f"{k}{' stream' if s and k != 'dropped' else ''} {n}" for (k, s), n in sorted(kinds.items())),
              flush=True)

        # Every request reached an outcome on the server, and nothing holds a sequence or KV.
        def settled():
            m = server.metrics()
            return (metric(m, "dsv4_requests_running") == 0 and metric(m, "dsv4_requests_waiting") == 0
                    and metric(m, "dsv4_kv_blocks_used") == 0 and metric(m, "dsv4_http_requests_in_flight") == 0)
        deadline = time.time() + 30
        while not settled() and time.time() < deadline:
            time.sleep(0.1)
        m = server.metrics()
        finished = {r: metric(m, f'dsv4_requests_finished_total{{reason="{r}"}}')
                    for r in ("eos", "stop_id", "stop_string", "length", "cancelled", "error")}
        total = args.requests + n_alone
        print(f"server: finished {finished}, KV blocks used {metric(m, 'dsv4_kv_blocks_used'):.0f}, "
              f"running {metric(m, 'dsv4_requests_running'):.0f}, waiting {metric(m, 'dsv4_requests_waiting'):.0f}")
        if not settled():
            failures["server not idle afterwards"] += 1
        if sum(finished.values()) != total:
            failures["requests unaccounted for"] += 1
            examples.setdefault("requests unaccounted for", f"{sum(finished.values()):.0f} finished of {total}")
        if finished["error"]:
            failures["requests failed on the server"] += 1
        n_dropped = kinds[("dropped", True)]
        if not 0 < finished["cancelled"] <= n_dropped:
            failures["dropped streams not cancelled"] += 1
            examples.setdefault("dropped streams not cancelled", f"{finished['cancelled']:.0f} of {n_dropped}")
    finally:
        status = server.stop()
    if status != 0:
        failures["exit status"] += 1
        examples["exit status"] = f"dsv4 serve exited {status} on SIGTERM"
    if failures:
        print("FAILED: " + ", ".join(f"{k}: {n}" for k, n in failures.items()))
        for k, e in examples.items():
            print(f"  {k}, e.g. {e}")
        return 1
    print("OK: every request whole, every greedy text equal to its run alone, every request accounted for")
    return 0


if __name__ == "__main__":
    sys.exit(main())
