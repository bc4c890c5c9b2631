"""The OpenAI-compatible client against a real HTTP server on loopback that replays scripted replies."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lingua_compress.errors import ConfigError
from lingua_compress.llm import LLMRequestError, OpenAIClient


def chat_reply(text="A[1]: The answer is 5.", finish="stop", usage=(120, 9)):
    body = {"id": "x", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]}
    if usage:
        body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    return 200, json.dumps(body).encode(), {}


class Script:
    """Replies handed out in order (the last one repeats); requests recorded."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def next(self):
        with self.lock:
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@pytest.fixture
def server():
    servers = []

    def start(replies):
        script = Script(replies)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with script.lock:
                    script.requests.append((self.path, dict(self.headers), json.loads(body)))
                    script.in_flight += 1
                    script.max_in_flight = max(script.max_in_flight, script.in_flight)
                try:
                    status, payload, headers = script.next()
                    if status == "sleep":
                        time.sleep(payload)
                        status, payload, headers = chat_reply()
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                finally:
                    with script.lock:
                        script.in_flight -= 1

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/v1", script

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


MSGS = [{"role": "user", "content": "Q[1]: 2+3?"}]


def test_chat_success_reads_usage_and_sends_openai_body(server, monkeypatch):
    url, script = server([chat_reply()])
    monkeypatch.setenv("TEST_KEY", "sk-test")
    client = OpenAIClient(url, "gpt-x", api_key_env="TEST_KEY")
    c = client.complete(MSGS, max_tokens=50, stop=["\nQ[", "a", "b", "c", "d"])
    assert (c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason, c.retries) == (
        "A[1]: The answer is 5.", 120, 9, "stop", 0)
    path, headers, body = script.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert body == {"model": "gpt-x", "max_tokens": 50, "temperature": 0.0, "messages": MSGS,
                    "stop": ["\nQ[", "a", "b", "c"]}


def test_completions_endpoint_and_missing_usage(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    body = {"choices": [{"text": " The answer is 5.", "finish_reason": "length"}]}
    url, script = server([(200, json.dumps(body).encode(), {})])
    c = OpenAIClient(url, "m", chat=False).complete("Q[1]: 2+3?\nA[1]:", max_tokens=5)
    assert (c.text, c.prompt_tokens, c.finish_reason) == (" The answer is 5.", None, "length")
    assert script.requests[0][0] == "/v1/completions"
    assert "Authorization" not in script.requests[0][1]


def test_429_then_success_backs_off(server):
    url, script = server([(429, b'{"error": "slow down"}', {"Retry-After": "0.01"}), chat_reply()])
    sleeps = []
    c = OpenAIClient(url, "m", sleep=sleeps.append).complete(MSGS, max_tokens=5)
    assert c.retries == 1 and len(script.requests) == 2
    assert sleeps == [0.01]  # Retry-After honoured


def test_5xx_exhausts_bounded_retries(server):
    url, script = server([(503, b"busy", {})])
    sleeps = []
    with pytest.raises(LLMRequestError, match="after 3 attempts.*HTTP 503"):
        OpenAIClient(url, "m", max_retries=2, backoff_s=0.1, sleep=sleeps.append).complete(MSGS, max_tokens=5)
    assert len(script.requests) == 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0]  # exponential backoff


def test_4xx_is_not_retried(server):
    url, script = server([(401, b'{"error": "bad key"}', {})])
    with pytest.raises(LLMRequestError, match="HTTP 401.*bad key"):
        OpenAIClient(url, "m", sleep=lambda s: None).complete(MSGS, max_tokens=5)
    assert len(script.requests) == 1


@pytest.mark.parametrize("payload,match", [(b"<html>oops</html>", "not JSON"), (b"[1, 2]", "not an object"),
                                           (b'{"choices": []}', "no choices")])
def test_malformed_body(server, payload, match):
    url, _ = server([(200, payload, {})])
    with pytest.raises(LLMRequestError, match=match):
        OpenAIClient(url, "m").complete(MSGS, max_tokens=5)


def test_timeout_then_retry_succeeds(server):
    url, script = server([("sleep", 1.0, {}), chat_reply("A[1]: ok")])
    with pytest.raises(LLMRequestError, match="timed out"):
        OpenAIClient(url, "m", timeout_s=0.2, max_retries=0).complete(MSGS, max_tokens=5)
    c = OpenAIClient(url, "m", timeout_s=5, max_retries=1, sleep=lambda s: None).complete(MSGS, max_tokens=5)
    assert c.text == "A[1]: ok"


def test_concurrency_limit(server):
    url, script = server([("sleep", 0.15, {})])
    client = OpenAIClient(url, "m", max_concurrency=2)
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda _: client.complete(MSGS, max_tokens=5), range(6)))
    assert script.max_in_flight == 2


def test_construction_touches_no_network_and_validates():
    OpenAIClient("http://10.255.255.1:9/v1", "m")  # unroutable: constructing must not connect
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIClient("ftp://x", "m")
    with pytest.raises(ConfigError, match="max_retries"):
        OpenAIClient("http://x", "m", max_retries=-1)
    with pytest.raises(ConfigError, match="chat mode"):
        OpenAIClient("http://x", "m").complete("plain text", max_tokens=1)
