#!/usr/bin/env python3
"""`dsv4 serve` driven by the official `openai` Python client (issue 14): nano on the CPU for chat,
streaming chat, completions, models, logprobs, stop strings, every error status, hang-ups and the
SIGTERM drain; serve_scripted (a backend that writes known text) for tool calls, the reasoning /
content split, assistant history with reasoning_content, the loading state and 256 concurrent
streams. Outputs are kept short: nano on two CPU cores writes a few dozen tokens a second.

usage: openai_client_test.py --dsv4 BIN --serve-scripted BIN [--sanitized] [unittest args]"""
import argparse
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openai  # noqa: E402
from server_process import ServerProcess, http_get, metric  # noqa: E402

ARGS = None
NANO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "nano")
API_KEY = "test-key"
CTX = 512                 # --ctx-size of the nano server: the context-length error is reachable
MAX_BODY = 64 * 1024      # --max-body-bytes: a 413 needs only a small body

# What serve_scripted writes behind which user message (its completion starts after the prompt's
# <think>, so in thinking mode the text before </think> is reasoning).
WEATHER_REASONING = "The user asks for the weather, so I call the tool."
WEATHER_CONTENT = "Let me check."
SCRIPTS = [
    {"user": "What is the weather in Paris?",
     "completion": WEATHER_REASONING + "</think>" + WEATHER_CONTENT +
     "\n\n<｜DSML｜tool_calls>\n"
     "<｜DSML｜invoke name=\"get_weather\">\n"
     "<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n"
     "<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n"
     "</｜DSML｜invoke>\n"
     "</｜DSML｜tool_calls>"},
    {"user": "22 degrees and sunny",
     "completion": "The tool answered.</think>It is 22 degrees and sunny in Paris."},
]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather forecast for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}


def client(url, key=API_KEY, timeout=120):
    # max_retries=0: the client would retry 429/503 on its own and hide the status under test.
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=timeout)


def extra(obj, name):
    """A non-OpenAI field of a response object (reasoning_content), None when absent."""
    return (obj.model_extra or {}).get(name)


def raw_post(url, path, body, headers=None):
    """(status, parsed JSON) of a POST with a raw body; no client-side checks."""
    req = urllib.request.Request(url + path, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def assert_no_dsml(test, text):
    test.assertNotIn("DSML", text or "")
    test.assertNotIn("｜", text or "")


def nano_server(*extra_args, label="nano"):
    return ServerProcess([ARGS.dsv4, "serve", "-m", NANO_DIR, "--backend", "cpu", "--port", "0",
                          "--api-key", API_KEY, *extra_args], label)


class Nano(unittest.TestCase):
    """One nano server for the functional tests."""

    @classmethod
    def setUpClass(cls):
        cls.server = nano_server("--ctx-size", str(CTX), "--max-body-bytes", str(MAX_BODY))
        cls.server.wait_ready()
        cls.client = client(cls.server.url)

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0, "dsv4 serve did not exit 0 on SIGTERM"

    def chat(self, content, **kw):
        kw.setdefault("max_tokens", 8)
        kw.setdefault("temperature", 0)
        return self.client.chat.completions.create(model="nano", messages=[{"role": "user", "content": content}], **kw)

    def test_models(self):
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], ["nano"])
        self.assertEqual(self.client.models.retrieve("nano").id, "nano")
        with self.assertRaises(openai.NotFoundError):
            self.client.models.retrieve("gpt-4")

    def test_chat_whole_and_streamed_agree(self):
        whole = self.chat("Who was Moses?")
        self.assertTrue(whole.id.startswith("chatcmpl-"))
        self.assertEqual(whole.object, "chat.completion")
        self.assertEqual(whole.model, "nano")
        choice = whole.choices[0]
        self.assertIn(choice.finish_reason, ("length", "stop"))
        self.assertEqual(choice.message.role, "assistant")
        reasoning = extra(choice.message, "reasoning_content") or ""
        content = choice.message.content or ""
        self.assertTrue(reasoning or content)
        self.assertGreater(whole.usage.prompt_tokens, 3)
        self.assertEqual(whole.usage.total_tokens, whole.usage.prompt_tokens + whole.usage.completion_tokens)

        stream = self.chat("Who was Moses?", stream=True, stream_options={"include_usage": True})
        s_reasoning, s_content, finish, usage, roles = "", "", None, None, []
        for chunk in stream:
            self.assertEqual(chunk.object, "chat.completion.chunk")
            if chunk.usage is not None:
                usage = chunk.usage
                self.assertEqual(chunk.choices, [])
                continue
            delta = chunk.choices[0].delta
            if delta.role:
                roles.append(delta.role)
            s_reasoning += extra(delta, "reasoning_content") or ""
            s_content += delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        self.assertEqual(roles, ["assistant"])
        self.assertEqual((s_reasoning, s_content), (reasoning, content))  # greedy: the same text
        self.assertEqual(finish, choice.finish_reason)
        self.assertEqual(usage.completion_tokens, whole.usage.completion_tokens)

    def test_chat_mode_answers_as_content(self):
        r = self.chat("Who was Moses?", extra_body={"chat_template_kwargs": {"thinking": False}})
        self.assertIsNone(extra(r.choices[0].message, "reasoning_content"))
        self.assertTrue(r.choices[0].message.content)
        r2 = self.chat("Who was Moses?", reasoning_effort="none")  # vLLM's spelling of chat mode
        self.assertEqual(r2.choices[0].message.content, r.choices[0].message.content)

    def test_completions_whole_streamed_and_logprobs(self):
        kw = dict(model="nano", prompt="And it came to pass", max_tokens=8, temperature=0)
        whole = self.client.completions.create(logprobs=2, **kw)
        self.assertEqual(whole.object, "text_completion")
        text = whole.choices[0].text
        self.assertTrue(text)
        lp = whole.choices[0].logprobs
        self.assertEqual("".join(lp.tokens), text)
        self.assertEqual(len(lp.token_logprobs), whole.usage.completion_tokens)
        self.assertTrue(all(len(t) <= 2 for t in lp.top_logprobs))
        for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
            self.assertLessEqual(value, 0.0)
            self.assertAlmostEqual(max(top.values()), value if token in top else max(top.values()), places=5)
        streamed = "".join(c.choices[0].text for c in self.client.completions.create(stream=True, **kw)
                           if c.choices)
        self.assertEqual(streamed, text)

    def test_chat_logprobs(self):
        r = self.chat("Who was Moses?", logprobs=True, top_logprobs=3, max_tokens=5, extra_body={"ignore_eos": True})
        entries = r.choices[0].logprobs.content
        self.assertEqual(len(entries), r.usage.completion_tokens)  # every token is output (no stop token)
        for e in entries:
            self.assertLessEqual(e.logprob, 0.0)
            self.assertEqual(len(e.top_logprobs), 3)
            self.assertGreaterEqual(e.top_logprobs[0].logprob, e.logprob - 1e-5)  # most likely first
            self.assertEqual(bytes(e.bytes).decode("utf-8", "replace"), e.token)

    def test_stop_strings(self):
        kw = dict(model="nano", prompt="And it came to pass", max_tokens=12, temperature=0)
        text = self.client.completions.create(**kw).choices[0].text
        words = text.split()
        self.assertGreaterEqual(len(words), 3, text)
        stop = words[2]
        cut = self.client.completions.create(stop=[stop, "\u0000never"], **kw).choices[0]
        self.assertEqual(cut.text, text[:text.index(stop)])
        self.assertEqual(cut.finish_reason, "stop")

    def test_seeded_sampling_repeats(self):
        a = self.chat("Who was Moses?", temperature=1.0, seed=1234, max_tokens=6)
        b = self.chat("Who was Moses?", temperature=1.0, seed=1234, max_tokens=6)
        self.assertEqual(a.choices[0].message, b.choices[0].message)

    def test_errors(self):
        with self.assertRaises(openai.NotFoundError) as e:
            self.client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(e.exception.code, "model_not_found")
        with self.assertRaises(openai.BadRequestError) as e:
            self.chat("hi", extra_body={"frobnicate": 1})
        self.assertEqual(e.exception.param, "frobnicate")
        self.assertIn("frobnicate", e.exception.message)
        with self.assertRaises(openai.BadRequestError) as e:
            self.chat("hi", n=2)
        self.assertEqual(e.exception.param, "n")
        with self.assertRaises(openai.BadRequestError) as e:
            self.chat("hi", tool_choice="required", tools=[WEATHER_TOOL])
        self.assertEqual(e.exception.param, "tool_choice")
        with self.assertRaises(openai.BadRequestError) as e:
            self.chat("hi", max_tokens=10000)
        self.assertEqual(e.exception.code, "context_length_exceeded")
        self.assertIn(str(CTX), e.exception.message)
        self.assertIn("10000", e.exception.message)
        with self.assertRaises(openai.BadRequestError):
            self.chat("hi", temperature=-1)
        with self.assertRaises(openai.AuthenticationError):
            client(self.server.url, key="wrong").models.list()

        url = self.server.url
        auth = {"Authorization": "Bearer " + API_KEY}
        status, body = raw_post(url, "/v1/chat/completions", b"{}")
        self.assertEqual(status, 401)  # no key
        self.assertEqual(body["error"]["type"], "authentication_error")
        status, body = raw_post(url, "/v1/chat/completions", b'{"model": "nano", "messages": [', auth)
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["code"], "invalid_json")
        big = json.dumps({"model": "nano", "prompt": "x" * (MAX_BODY + 1)}).encode()
        status, body = raw_post(url, "/v1/completions", big, auth)
        self.assertEqual(status, 413)
        self.assertIn(str(MAX_BODY), body["error"]["message"])
        status, body = raw_post(url, "/v1/embeddings", b"{}", auth)
        self.assertEqual(status, 404)
        self.assertIn("/v1/embeddings", body["error"]["message"])
        self.assertEqual(http_get(url + "/health")[0], 200)  # the server took all that in its stride

    def cancelled(self):
        return metric(self.server.metrics(), 'dsv4_requests_finished_total{reason="cancelled"}')

    def idle(self):
        m = self.server.metrics()
        return metric(m, "dsv4_requests_running") == 0 and metric(m, "dsv4_kv_blocks_used") == 0

    def test_hang_up_cancels_and_frees_the_kv(self):
        before = self.cancelled()
        stream = self.client.completions.create(model="nano", prompt="And", max_tokens=400, temperature=0,
                                                stream=True, extra_body={"ignore_eos": True})
        for i, _ in enumerate(stream):
            if i == 1:
                break
        self.assertGreater(metric(self.server.metrics(), "dsv4_kv_blocks_used"), 0)
        stream.close()
        self.assertTrue(wait_for(lambda: self.cancelled() == before + 1 and self.idle()), self.server.metrics())

        # Non-streaming: a raw connection that sends its request and goes away.
        body = json.dumps({"model": "nano", "prompt": "And", "max_tokens": 400, "ignore_eos": True}).encode()
        host, port = self.server.url[len("http://"):].split(":")
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + API_KEY.encode() + b"\r\nContent-Length: " +
                  str(len(body)).encode() + b"\r\n\r\n" + body)
        self.assertTrue(wait_for(lambda: metric(self.server.metrics(), "dsv4_requests_running") == 1))
        s.close()
        self.assertTrue(wait_for(lambda: self.cancelled() == before + 2 and self.idle()), self.server.metrics())

    def test_metrics_and_health(self):
        self.assertEqual(http_get(self.server.url + "/health"), (200, '{"status":"ok"}'))
        self.chat("hi", max_tokens=2)
        m = self.server.metrics()
        for name in ("dsv4_http_requests_total", "dsv4_requests_finished_total", "dsv4_prompt_tokens_total",
                     "dsv4_generation_tokens_total", "dsv4_requests_running", "dsv4_requests_waiting",
                     "dsv4_kv_blocks_used", "dsv4_kv_cache_usage_ratio", "dsv4_time_to_first_token_seconds_bucket",
                     "dsv4_inter_token_latency_seconds_bucket"):
            self.assertIn(name, m)
        self.assertGreater(metric(m, 'dsv4_http_requests_total{endpoint="/v1/chat/completions",status="200"}'), 0)
        self.assertGreater(metric(m, "dsv4_time_to_first_token_seconds_count"), 0)


class NanoQueueAndShutdown(unittest.TestCase):
    def test_queue_full_is_429(self):
        srv = nano_server("--max-running", "1", "--max-waiting", "1", label="nano-queue")
        try:
            srv.wait_ready()
            c = client(srv.url)
            # ignore_eos: the running request cannot end (and admit the waiting one) during the test.
            kw = dict(model="nano", messages=[{"role": "user", "content": "hi"}], max_tokens=2000, stream=True,
                      extra_body={"ignore_eos": True})
            running = c.chat.completions.create(**kw)
            next(iter(running))  # the role chunk: submitted
            self.assertTrue(wait_for(lambda: metric(srv.metrics(), "dsv4_requests_running") == 1))
            waiting = c.chat.completions.create(**kw)
            next(iter(waiting))
            self.assertTrue(wait_for(lambda: metric(srv.metrics(), "dsv4_requests_waiting") == 1))
            with self.assertRaises(openai.RateLimitError) as e:
                c.chat.completions.create(**kw)
            self.assertEqual(e.exception.status_code, 429)
            running.close()
            waiting.close()
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_sigterm_drains_then_exits_0(self):
        srv = nano_server(label="nano-drain")
        srv.wait_ready()
        c = client(srv.url)
        stream = c.completions.create(model="nano", prompt="And", max_tokens=40, temperature=0, stream=True,
                                      extra_body={"ignore_eos": True})
        it = iter(stream)
        text = next(it).choices[0].text
        srv.proc.send_signal(signal.SIGTERM)
        self.assertTrue(wait_for(lambda: http_get(srv.url + "/health")[0] == 503))
        with self.assertRaises(openai.APIStatusError) as e:  # no new work while draining
            c.completions.create(model="nano", prompt="And", max_tokens=2)
        self.assertEqual(e.exception.status_code, 503)
        finish, n = None, 1
        for chunk in it:  # the running request finishes normally
            n += 1
            if chunk.choices:
                text += chunk.choices[0].text
                finish = chunk.choices[0].finish_reason or finish
        self.assertEqual(finish, "length")
        self.assertEqual(srv.proc.wait(60), 0)
        self.assertTrue(any("stopped" in line for line in srv.lines))


class Scripted(unittest.TestCase):
    """serve_scripted: the same HTTP server and service over a backend that writes SCRIPTS."""

    @classmethod
    def setUpClass(cls):
        cls.scripts = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(SCRIPTS, cls.scripts, ensure_ascii=False)
        cls.scripts.close()
        cls.server = ServerProcess([ARGS.serve_scripted, cls.scripts.name, "--load-delay-ms", "1500",
                                    "--step-ms", "10"], "scripted")
        # While "loading": /health and the API answer 503.
        cls.loading_health = http_get(cls.server.url + "/health")
        try:
            client(cls.server.url).models.list()
            cls.loading_api = 200
        except openai.APIStatusError as e:
            cls.loading_api = e.status_code
        cls.server.wait_ready()
        cls.client = client(cls.server.url)

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0
        os.unlink(cls.scripts.name)

    def test_loading_answers_503(self):
        self.assertEqual(self.loading_health, (503, '{"status":"loading"}'))
        self.assertEqual(self.loading_api, 503)

    def weather(self, **kw):
        return self.client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER_TOOL], **kw)

    def test_tool_call(self):
        r = self.weather()
        choice = r.choices[0]
        self.assertEqual(choice.finish_reason, "tool_calls")
        self.assertEqual(extra(choice.message, "reasoning_content"), WEATHER_REASONING)
        self.assertEqual(choice.message.content, WEATHER_CONTENT)
        self.assertEqual(len(choice.message.tool_calls), 1)
        call = choice.message.tool_calls[0]
        self.assertRegex(call.id, r"^call_[0-9a-f]{24}$")
        self.assertEqual(call.type, "function")
        self.assertEqual(call.function.name, "get_weather")
        self.assertEqual(json.loads(call.function.arguments), {"city": "Paris", "days": 3})

    def test_tool_call_streamed(self):
        reasoning, content, calls, finish = "", "", {}, None
        for chunk in self.weather(stream=True):
            delta = chunk.choices[0].delta
            for piece in (extra(delta, "reasoning_content"), delta.content):
                assert_no_dsml(self, piece)
            reasoning += extra(delta, "reasoning_content") or ""
            content += delta.content or ""
            for t in delta.tool_calls or []:
                entry = calls.setdefault(t.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = t.id or entry["id"]
                entry["name"] += t.function.name or ""
                entry["arguments"] += t.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
        self.assertEqual((reasoning, content, finish), (WEATHER_REASONING, WEATHER_CONTENT, "tool_calls"))
        self.assertEqual(list(calls), [0])
        self.assertEqual(calls[0]["name"], "get_weather")
        self.assertEqual(json.loads(calls[0]["arguments"]), {"city": "Paris", "days": 3})

    def test_history_with_reasoning_and_tool_result(self):
        first = self.weather().choices[0].message
        messages = [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": first.content, "reasoning_content": WEATHER_REASONING,
             "tool_calls": [t.model_dump() for t in first.tool_calls]},
            {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "22 degrees and sunny"},
        ]
        r = self.client.chat.completions.create(model="scripted", messages=messages, tools=[WEATHER_TOOL])
        self.assertEqual(r.choices[0].message.content, "It is 22 degrees and sunny in Paris.")
        self.assertEqual(extra(r.choices[0].message, "reasoning_content"), "The tool answered.")
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertIsNone(r.choices[0].message.tool_calls)

    def test_256_streams_at_once(self):
        n = 256
        barrier = threading.Barrier(n + 1, timeout=120)
        texts, errors = [None] * n, []
        c = client(self.server.url)

        def one(i):
            try:
                # 100 steps of 10 ms: still running when the last stream has its first token.
                stream = c.completions.create(model="scripted", prompt=f"stream {i}", max_tokens=100,
                                              temperature=0, stream=True)
                it = iter(stream)
                text = next(it).choices[0].text  # the first token: this request is running
                barrier.wait()                   # every stream open at the same time
                barrier.wait()                   # ... until the main thread has looked
                for chunk in it:
                    text += chunk.choices[0].text if chunk.choices else ""
                texts[i] = text
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(repr(e))
                barrier.abort()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        barrier.wait()
        in_flight = metric(self.server.metrics(), "dsv4_http_requests_in_flight")
        barrier.wait()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertGreaterEqual(in_flight, n)
        for i in (0, n // 2, n - 1):  # each stream carried its own request's text
            alone = c.completions.create(model="scripted", prompt=f"stream {i}", max_tokens=100, temperature=0)
            self.assertEqual(texts[i], alone.choices[0].text)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsv4", required=True)
    parser.add_argument("--serve-scripted", required=True)
    parser.add_argument("--sanitized", action="store_true")
    ARGS, rest = parser.parse_known_args()
    print(f"openai {openai.__version__}", flush=True)
    prog = unittest.main(argv=[sys.argv[0], "-v", *rest], exit=False)
    sys.exit(0 if prog.result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
