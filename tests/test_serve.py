"""The OpenAI-compatible proxy, for real: a scripted upstream and the proxy both run under uvicorn on loopback,
and the official ``openai`` client talks to the proxy. A fake word-dropping compressor keeps it fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

fastapi = pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse, Response, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from lingua_compress import cli  # noqa: E402
from lingua_compress.serve import DefaultCompressors, compress_each_message, create_app, serve_in_thread  # noqa: E402

HOLD_S = 5.0  # how long the streaming upstream waits for the client to confirm its first chunk
MESSAGES = [
    {"role": "system", "content": "You are a careful assistant who answers math questions step by step."},
    {"role": "user", "content": "Natalia sold clips to 48 of her friends in April and half as many in May."},
    {"role": "assistant", "content": "She sold 48 clips in April and 24 clips in May, 72 in total."},
    {"role": "user", "content": "How many clips did Natalia sell altogether in April and May?"},
]


# ---------------------------------------------------------------- the scripted upstream


class Script:
    """An OpenAI-compatible upstream whose behaviour is picked by the request's ``model``; it records requests."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.release = threading.Event()
        self.released_in_time: bool | None = None
        self.waiting = self.most_waiting = 0  # requests held in the slow wait at once: did the proxy overlap them?
        routes = [Route("/v1/chat/completions", self.chat, methods=["POST"]),
                  Route("/v1/completions", self.completions, methods=["POST"]),
                  Route("/v1/models", self.models, methods=["GET"])]
        self.app = Starlette(routes=routes)

    async def _record(self, request: Request) -> dict:
        raw = await request.body()
        entry = {"path": request.url.path, "query": request.url.query, "headers": dict(request.headers),
                 "raw": raw, "json": json.loads(raw) if raw else None}
        self.received.append(entry)
        return entry

    async def chat(self, request: Request) -> Response:
        body = (await self._record(request))["json"]
        model = body.get("model")
        if model == "fail":
            return JSONResponse({"error": {"message": "upstream exploded", "type": "server_error", "param": None,
                                           "code": "boom"}}, status_code=500, headers={"x-upstream": "yes"})
        if model in ("sleep", "slow"):
            self.waiting += 1
            self.most_waiting = max(self.most_waiting, self.waiting)
            try:
                await asyncio.sleep(4.0 if model == "sleep" else 0.3)
            finally:
                self.waiting -= 1
        if model in ("stream", "stall"):
            return StreamingResponse(self._sse(model), media_type="text/event-stream")
        return JSONResponse(completion(model, f"seen {len(body['messages'])} messages"),
                            headers={"x-request-id": "up-1"})

    async def _sse(self, model: str):
        yield sse_chunk("Hel")
        if model == "stall":
            await asyncio.sleep(2.0)  # past the proxy's timeout, mid-stream
            return
        deadline = time.monotonic() + HOLD_S
        while not self.release.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.released_in_time = self.release.is_set()
        yield sse_chunk("lo")
        yield sse_chunk("!")
        yield b"data: [DONE]\n\n"

    async def completions(self, request: Request) -> Response:
        body = (await self._record(request))["json"]
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = [{"index": i, "text": f"ok {i}", "finish_reason": "stop", "logprobs": None}
                   for i in range(len(prompts))]
        return JSONResponse({"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"],
                             "choices": choices})

    async def models(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"object": "list", "data": [{"id": "m1", "object": "model", "created": 0,
                                                         "owned_by": "me"}]})


def completion(model: str, text: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


def sse_chunk(text: str) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "stream",
             "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return f"data: {json.dumps(chunk)}\n\n".encode()


# ---------------------------------------------------------------- a fake compressor and the proxy under test


def drop_every_other(text: str, ratio: float) -> SimpleNamespace:
    words = text.split()
    kept = words[::2]
    return SimpleNamespace(text=" ".join(kept), original_tokens=len(words), compressed_tokens=len(kept))


class Fake:
    """Deterministic chat/text compression that records the ratios it was asked for."""

    def __init__(self) -> None:
        self.ratios: list[float] = []

    def chat(self, messages, ratio):
        self.ratios.append(ratio)
        return compress_each_message(drop_every_other, messages, ratio)

    def text(self, prompt, ratio):
        self.ratios.append(ratio)
        r = drop_every_other(prompt, ratio)
        return r.text, r.original_tokens, r.compressed_tokens


@pytest.fixture(scope="module")
def upstream():
    script = Script()
    with serve_in_thread(script.app) as url:
        script.url = url + "/v1"
        yield script


@pytest.fixture
def script(upstream):
    upstream.received.clear()
    upstream.release.clear()
    upstream.released_in_time = None
    return upstream


class Proxy(SimpleNamespace):
    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "x"), max_retries=0, **kw)

    def stats(self) -> dict:
        return httpx.get(self.url + "/stats").json()


@pytest.fixture
def serve(script):
    """``with serve(**create_app options) as proxy``: the proxy under uvicorn, a Fake compressor by default."""
    def start(upstream_url: str | None = None, **kw):
        fake = Fake()
        kw.setdefault("chat_compress", fake.chat)
        kw.setdefault("text_compress", fake.text)
        app = create_app(upstream_url or script.url, **{"ratio": 0.4, **kw})
        return _Serving(app, fake)
    return start


class _Serving:
    def __init__(self, app, fake) -> None:
        self.app, self.fake, self._cm = app, fake, serve_in_thread(app)

    def __enter__(self) -> Proxy:
        return Proxy(url=self._cm.__enter__(), app=self.app, fake=self.fake)

    def __exit__(self, *exc) -> None:
        self._cm.__exit__(*exc)


# ---------------------------------------------------------------- the compressed routes


def test_chat_is_compressed_and_answered_unchanged(serve, script):
    with serve() as proxy:
        raw = proxy.client().chat.completions.with_raw_response.create(model="ok", messages=MESSAGES)
    reply = raw.parse()
    assert reply.choices[0].message.content == "seen 4 messages" and raw.headers["x-request-id"] == "up-1"
    sent = script.received[-1]["json"]["messages"]
    assert [set(m) for m in sent] == [set(m) for m in MESSAGES] and [m["role"] for m in sent] == [
        m["role"] for m in MESSAGES]
    for before, after in zip(MESSAGES[:3], sent[:3]):
        assert after["content"] == drop_every_other(before["content"], 0).text != before["content"]
    assert sent[3] == MESSAGES[3]  # the last user turn is the question: never cut
    original = sum(len(m["content"].split()) for m in MESSAGES[:3])
    assert int(raw.headers["x-lingua-original-tokens"]) == original
    assert int(raw.headers["x-lingua-compressed-tokens"]) < original
    assert float(raw.headers["x-lingua-compress-ms"]) >= 0
    assert proxy.fake.ratios == [0.4]


def test_completions_string_and_list_prompts(serve, script):
    with serve() as proxy:
        client = proxy.client()
        one = client.completions.create(model="ok", prompt="one two three four five six")
        many = client.completions.create(model="ok", prompt=["a b c d", "e f g h i j"])
        ids = client.completions.create(model="ok", prompt=[1, 2, 3, 4])  # token ids: nothing to compress
    assert one.choices[0].text == "ok 0" and len(many.choices) == 2 and ids.choices[0].text == "ok 0"
    prompts = [r["json"]["prompt"] for r in script.received]
    assert prompts == ["one three five", ["a c", "e g i"], [1, 2, 3, 4]]


def test_stream_first_chunk_arrives_before_the_upstream_finishes(serve, script):
    with serve() as proxy:
        response = proxy.client().chat.completions.with_raw_response.create(
            model="stream", messages=MESSAGES, stream=True)
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = iter(response.parse())
        first = next(chunks)
        assert script.released_in_time is None  # the upstream is still holding the rest back
        script.release.set()
        rest = [c.choices[0].delta.content for c in chunks]
    assert first.choices[0].delta.content == "Hel" and rest == ["lo", "!"]
    assert script.released_in_time is True
    assert response.headers["x-lingua-original-tokens"]


def test_stream_broken_midway_reaches_the_client_as_an_error(serve, script):
    with serve(timeout=0.5) as proxy:
        stream = proxy.client().chat.completions.create(model="stall", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError, match="broke off"):
            for _ in stream:
                pass
        assert proxy.stats()["errors"] == 1


# ---------------------------------------------------------------- errors and timeouts


def test_upstream_error_passes_through(serve, script):
    with serve() as proxy:
        with pytest.raises(openai.InternalServerError) as exc:
            proxy.client().chat.completions.create(model="fail", messages=MESSAGES)
        raw = httpx.post(proxy.url + "/v1/chat/completions", json={"model": "fail", "messages": MESSAGES})
        stats = proxy.stats()
    assert exc.value.status_code == 500 and "upstream exploded" in exc.value.message
    assert raw.status_code == 500 and raw.headers["x-upstream"] == "yes"
    assert raw.json()["error"] == {"message": "upstream exploded", "type": "server_error", "param": None,
                                   "code": "boom"}
    assert stats["upstream_errors"] == 2 and stats["errors"] == 0


def test_upstream_timeout_is_504(serve, script):
    with serve(timeout=0.5) as proxy:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as exc:
            proxy.client().chat.completions.create(model="sleep", messages=MESSAGES)
        assert time.monotonic() - started < 3.0  # cut at the timeout, not when the upstream answers (4 s)
    assert exc.value.status_code == 504 and exc.value.body["code"] == "upstream_timeout"


def test_unreachable_upstream_is_502(serve):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with serve(f"http://127.0.0.1:{port}/v1") as proxy:
        r = httpx.post(proxy.url + "/v1/chat/completions", json={"model": "ok", "messages": MESSAGES})
        assert proxy.stats()["errors"] == 1
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
    assert r.json()["error"]["type"] == "api_error"


def test_compression_failure_forwards_the_original(serve, script):
    def broken(messages, ratio):
        raise RuntimeError("model gone")

    with serve(chat_compress=broken) as proxy:
        r = httpx.post(proxy.url + "/v1/chat/completions", json={"model": "ok", "messages": MESSAGES})
        stats = proxy.stats()
    assert r.status_code == 200 and r.headers["x-lingua-compress-error"] == "RuntimeError"
    assert script.received[-1]["json"]["messages"] == MESSAGES and stats["compress_failures"] == 1


# ---------------------------------------------------------------- per-request control, bad input


def test_bypass_forwards_the_bytes_untouched(serve, script):
    body = b'{"model": "ok",   "messages": ' + json.dumps(MESSAGES).encode() + b"}"
    with serve() as proxy:
        r = httpx.post(proxy.url + "/v1/chat/completions", content=body,
                       headers={"content-type": "application/json", "X-Lingua-Bypass": "1"})
        stats = proxy.stats()
    assert r.status_code == 200 and "x-lingua-original-tokens" not in r.headers
    assert script.received[-1]["raw"] == body and "x-lingua-bypass" not in script.received[-1]["headers"]
    assert proxy.fake.ratios == [] and stats["bypassed"] == 1 and stats["compressed"] == 0


def test_ratio_header_good_and_bad(serve, script):
    with serve() as proxy:
        client = proxy.client()
        client.chat.completions.create(model="ok", messages=MESSAGES, extra_headers={"X-Lingua-Ratio": "0.3"})
        assert proxy.fake.ratios == [0.3]
        assert "x-lingua-ratio" not in script.received[-1]["headers"]
        for bad in ("abc", "0", "1.5", "nan", "-0.2"):
            with pytest.raises(openai.BadRequestError) as exc:
                client.chat.completions.create(model="ok", messages=MESSAGES, extra_headers={"X-Lingua-Ratio": bad})
            assert repr(bad) in exc.value.message and "(0, 1]" in exc.value.message
        assert len(script.received) == 1 and proxy.stats()["errors"] == 5


def test_bad_json_is_400(serve, script):
    with serve() as proxy:
        bad = httpx.post(proxy.url + "/v1/chat/completions", content=b'{"model": "ok", "messages": [',
                         headers={"content-type": "application/json"})
        array = httpx.post(proxy.url + "/v1/completions", json=["not", "an", "object"])
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert array.status_code == 400 and "list" in array.json()["error"]["message"]
    assert script.received == []


def test_other_v1_paths_pass_through(serve, script):
    with serve() as proxy:
        models = proxy.client().models.list()
        r = httpx.get(proxy.url + "/v1/models?limit=3")
    assert [m.id for m in models.data] == ["m1"] and r.json()["data"][0]["id"] == "m1"
    assert script.received[-1]["query"] == "limit=3" and proxy.fake.ratios == []


def test_health_and_stats(serve, script):
    with serve() as proxy:
        assert httpx.get(proxy.url + "/health").json() == {"status": "ok"}
        client = proxy.client()
        client.chat.completions.create(model="ok", messages=MESSAGES)
        client.completions.create(model="ok", prompt="one two three four")
        httpx.post(proxy.url + "/v1/chat/completions", json={"model": "ok", "messages": MESSAGES},
                   headers={"X-Lingua-Bypass": "true"})
        stats = proxy.stats()
    original = sum(len(m["content"].split()) for m in MESSAGES[:3]) + 4
    kept = sum(len(drop_every_other(m["content"], 0).text.split()) for m in MESSAGES[:3]) + 2
    assert stats["requests"] == 3 and stats["compressed"] == 2 and stats["bypassed"] == 1
    assert stats["original_tokens"] == original and stats["compressed_tokens"] == kept
    assert stats["saved_tokens"] == original - kept and stats["in_flight"] == 0
    assert stats["errors"] == stats["rejected_429"] == stats["upstream_errors"] == 0


# ---------------------------------------------------------------- keys, headers, logs


def test_client_authorization_passes_through_and_env_key_fills_in(serve, script, monkeypatch):
    monkeypatch.setenv("LINGUA_UPSTREAM_API_KEY", "env-key")
    with serve() as proxy:
        proxy.client(api_key="client-key").chat.completions.create(model="ok", messages=MESSAGES)
        assert script.received[-1]["headers"]["authorization"] == "Bearer client-key"
        httpx.post(proxy.url + "/v1/chat/completions", json={"model": "ok", "messages": MESSAGES},
                   headers={"Connection": "keep-alive, X-Drop-Me", "X-Drop-Me": "1", "Keep-Alive": "timeout=5",
                            "X-Other": "kept"})
    headers = script.received[-1]["headers"]
    assert headers["authorization"] == "Bearer env-key" and headers["x-other"] == "kept"
    assert "x-drop-me" not in headers and "keep-alive" not in headers
    assert int(headers["content-length"]) == len(script.received[-1]["raw"])  # recomputed for the new body


def test_no_prompt_text_or_key_in_logs(serve, script, caplog):
    caplog.set_level(logging.DEBUG)
    secret_messages = [{"role": "user", "content": "zebraword quokkaword " * 5},
                       {"role": "user", "content": "last turn pangolinword"}]
    with serve() as proxy:
        for ratio in ("0.5", "bad"):
            httpx.post(proxy.url + "/v1/chat/completions", json={"model": "ok", "messages": secret_messages},
                       headers={"Authorization": "Bearer sk-topsecretkey", "X-Lingua-Ratio": ratio})
        httpx.post(proxy.url + "/v1/chat/completions", content=b'{"x": "zebraword',
                   headers={"Authorization": "Bearer sk-topsecretkey"})
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert any(r.name == "lingua_compress.serve" for r in caplog.records)
    for secret in ("zebraword", "quokkaword", "pangolinword", "topsecretkey"):
        assert secret not in text


# ---------------------------------------------------------------- load: exactly one answer per request


async def _fire(url: str, n: int) -> list:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=30)

    async def one(i: int):
        try:
            return await client.chat.completions.with_raw_response.create(
                model="slow", messages=MESSAGES, extra_headers={"X-Req-Id": str(i)})
        except openai.APIStatusError as exc:
            return exc

    try:
        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.close()


def test_fifty_concurrent_requests_each_answered_once(serve, script):
    with serve(max_concurrency=64) as proxy:
        results = asyncio.run(_fire(proxy.url, 50))
        stats = proxy.stats()
    assert all(not isinstance(r, Exception) and r.parse().choices[0].message.content for r in results)
    seen = sorted(int(r["headers"]["x-req-id"]) for r in script.received)
    assert seen == list(range(50)) and stats["requests"] == 50 and stats["in_flight"] == 0
    # The upstream's 0.3 s waits overlapped: counted there, not timed, so a loaded machine cannot fail it.
    assert script.most_waiting >= 4, script.most_waiting


def test_over_the_limit_gets_429_with_retry_after(serve, script):
    with serve(max_concurrency=4) as proxy:
        results = asyncio.run(_fire(proxy.url, 30))
        stats = proxy.stats()
    ok = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    busy = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(ok) + len(busy) == 30 and 1 <= len(ok) and len(busy) >= 1
    assert all(r.response.headers["retry-after"] == "1" and r.body["code"] == "proxy_busy" for r in busy)
    assert sorted(int(r["headers"]["x-req-id"]) for r in script.received) == ok  # each admitted one once
    assert stats["rejected_429"] == len(busy) and stats["requests"] == len(ok) and stats["in_flight"] == 0


# ---------------------------------------------------------------- the default compressors


def test_default_compressors_prefer_compress_messages():
    class WithMessages:
        def compress_messages(self, messages, ratio=None, **kw):
            return SimpleNamespace(messages=[{"role": "user", "content": "short"}], original_tokens=9,
                                   compressed_tokens=1)

    class Plain:
        def compress(self, text, ratio):
            return drop_every_other(text, ratio)

    assert DefaultCompressors(compressor=WithMessages()).chat(MESSAGES, 0.5) == (
        [{"role": "user", "content": "short"}], 9, 1)
    messages, original, kept = DefaultCompressors(compressor=Plain()).chat(MESSAGES, 0.5)
    assert messages[3] == MESSAGES[3] and messages[0]["content"] != MESSAGES[0]["content"] and original > kept
    parts = [{"role": "user", "content": [{"type": "text", "text": "a b c d"}, {"type": "image_url"}]},
             {"role": "tool", "content": "x y z w"}, {"role": "user", "content": "q"}]
    out, _, _ = compress_each_message(drop_every_other, parts, 0.5)
    assert out[0]["content"][0]["text"] == "a c" and out[1] == parts[1] and parts[0]["content"][0]["text"] == "a b c d"


@pytest.mark.filterwarnings("ignore::lingua_compress.BudgetWarning")  # a short chat cannot meet its budget
def test_real_compressor_through_the_proxy(serve, script, scorer):
    from lingua_compress import Compressor

    default = DefaultCompressors(compressor=Compressor(scorer=scorer))
    long_messages = [{"role": "system", "content": MESSAGES[0]["content"] * 3},
                     {"role": "user", "content": MESSAGES[1]["content"] * 4}, MESSAGES[3]]
    with serve(chat_compress=default.chat, text_compress=default.text) as proxy:
        raw = proxy.client().chat.completions.with_raw_response.create(model="ok", messages=long_messages)
    sent = script.received[-1]["json"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "user"] and sent[-1] == MESSAGES[3]
    assert int(raw.headers["x-lingua-compressed-tokens"]) < int(raw.headers["x-lingua-original-tokens"])


# ---------------------------------------------------------------- CLI, imports, benchmark


def test_cli_serve_wiring(monkeypatch, capsys, tmp_path):
    import uvicorn

    from tiny import save_tiny_model

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    model = str(save_tiny_model(tmp_path / "tiny"))
    argv = ["serve", "--upstream", "http://127.0.0.1:9/v1", "--ratio", "0.3", "--port", "9999", "--model", model]
    assert cli.main(argv) == 0
    assert ran["host"] == "127.0.0.1" and ran["port"] == 9999 and ran["access_log"] is False
    assert ran["app"].state.proxy.ratio == 0.3
    assert cli.main(["serve", "--upstream", "http://127.0.0.1:9/v1", "--ratio", "2", "--no-preload"]) == 2
    assert "ratio=2.0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", "--help"])
    assert exc.value.code == 0 and "--upstream" in capsys.readouterr().out


def test_cli_serve_without_the_extra(monkeypatch, capsys):
    from lingua_compress.serve import cli as serve_cli

    monkeypatch.setattr(serve_cli.importlib.util, "find_spec", lambda name: None)
    assert cli.main(["serve", "--upstream", "http://127.0.0.1:9/v1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "lingua_compress[serve]"' in err


def test_importing_the_library_needs_no_fastapi():
    code = ("import sys, lingua_compress, lingua_compress.serve; "
            "assert not {'fastapi', 'uvicorn', 'starlette'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_bench_proxy_dry(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bench_proxy

    assert bench_proxy.main(["--dry", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench_proxy_dry.json").read_text())
    assert report["latency_ms"]["direct"]["p50"] > 0 and report["load"]["requests_per_s"] > 0
    assert report["load"]["errors"] == 0
