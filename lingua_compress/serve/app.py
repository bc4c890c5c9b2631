"""The proxy's ASGI app: compress, forward, account; with bounded concurrency and no prompt text in logs.

``create_app(upstream, ratio=0.4)`` serves ``POST /v1/chat/completions`` and ``POST /v1/completions``
(compressed), any other ``/v1/...`` path (forwarded untouched), ``GET /health`` and ``GET /stats``.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigError
from .compressors import ChatCompress, DefaultCompressors, TextCompress
from .upstream import ProxyErrorResponse, Upstream, error_response, log

COMPRESSED_PATHS = {"chat/completions": "chat", "completions": "text"}
BYPASS_VALUES = frozenset({"1", "true", "yes", "on"})
RETRY_AFTER_S = 1  # a hint only: the proxy frees a slot as soon as any request in flight finishes
KEY_ENV_VARS = ("LINGUA_UPSTREAM_API_KEY", "OPENAI_API_KEY")


@dataclass
class Stats:
    """Counters since start. Only the event loop thread changes them, so no lock is needed."""

    requests: int = 0  # /v1 requests admitted (not counting 429s)
    compressed: int = 0  # requests whose messages or prompt went through compression
    bypassed: int = 0  # X-Lingua-Bypass requests
    errors: int = 0  # answers the proxy made itself (400, 502, 504) and streams that broke off
    upstream_errors: int = 0  # upstream statuses >= 400, passed through as they were
    compress_failures: int = 0  # compression raised: the original request was forwarded instead
    rejected_429: int = 0
    in_flight: int = 0
    original_tokens: int = 0
    compressed_tokens: int = 0
    compress_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["saved_tokens"] = self.original_tokens - self.compressed_tokens
        data["compress_ms"] = round(self.compress_ms, 3)
        return data


class Proxy:
    """The request path: parse, compress in a worker thread (one at a time), forward, count."""

    def __init__(self, upstream: Upstream, ratio: float, chat: ChatCompress, text: TextCompress) -> None:
        self.upstream, self.ratio, self.chat, self.text = upstream, ratio, chat, text
        self.stats = Stats()
        self._torch: anyio.CapacityLimiter | None = None  # serialises compression: torch work is not concurrent

    async def handle(self, request: Request, path: str) -> Response:
        started = time.perf_counter()
        self.stats.requests += 1
        body = await request.body()
        kind = COMPRESSED_PATHS.get(path) if request.method == "POST" else None
        bypass = request.headers.get("x-lingua-bypass", "").strip().lower() in BYPASS_VALUES
        extra: dict[str, str] = {}
        if kind is not None and bypass:
            self.stats.bypassed += 1
        elif kind is not None:
            prepared = await self._prepare(kind, body, request.headers.get("x-lingua-ratio"))
            if isinstance(prepared, Response):  # a 400: nothing goes upstream
                self._account(prepared, request.method, path, started, extra)
                return prepared
            body, extra = prepared
        # The path and query as the client encoded them: decoding and re-encoding could change an id in the path.
        raw_path = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
        response = await self.upstream.forward(request.method, raw_path.removeprefix("/v1/"),
                                               request.scope.get("query_string", b""), request.headers.raw, body, extra)
        self._account(response, request.method, path, started, extra)
        return response

    async def _prepare(self, kind: str, body: bytes,
                       ratio_header: str | None) -> Response | tuple[bytes, dict[str, str]]:
        """The body to send on (compressed when there is something to compress) and the accounting headers."""
        try:
            ratio = parse_ratio(ratio_header, self.ratio)
        except ValueError as exc:
            return error_response(400, str(exc), "invalid_ratio")
        try:
            payload = json.loads(body)
        except ValueError:  # the body itself is never echoed: it is prompt text
            return error_response(400, "the request body is not valid JSON", "invalid_json")
        if not isinstance(payload, dict):
            return error_response(400, f"the request body must be a JSON object, not {type(payload).__name__}",
                                  "invalid_json")
        if self._torch is None:
            self._torch = anyio.CapacityLimiter(1)
        try:
            done = await anyio.to_thread.run_sync(self._compress, kind, payload, ratio, limiter=self._torch)
        except Exception as exc:  # availability over savings: the upstream still gets the original request
            self.stats.compress_failures += 1
            log.warning("compression failed (%s); forwarding the request uncompressed", type(exc).__name__)
            return body, {"X-Lingua-Compress-Error": type(exc).__name__}
        if done is None:  # nothing compressible (no messages, token-id prompts): forward the bytes as they came
            return body, {}
        original, kept, ms = done
        self.stats.compressed += 1
        self.stats.original_tokens += original
        self.stats.compressed_tokens += kept
        self.stats.compress_ms += ms
        new_body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return new_body, {"X-Lingua-Original-Tokens": str(original), "X-Lingua-Compressed-Tokens": str(kept),
                          "X-Lingua-Compress-Ms": f"{ms:.1f}"}

    def _compress(self, kind: str, payload: dict[str, Any], ratio: float) -> tuple[int, int, float] | None:
        """In the worker thread: compress ``payload`` in place; ``(original, kept, ms)`` or None if untouched."""
        started = time.perf_counter()
        if kind == "chat":
            messages = payload.get("messages")
            if not isinstance(messages, list) or not messages:
                return None
            payload["messages"], original, kept = self.chat(messages, ratio)
        else:
            prompt = payload.get("prompt")
            if isinstance(prompt, str):
                payload["prompt"], original, kept = self.text(prompt, ratio)
            elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
                results = [self.text(p, ratio) for p in prompt]
                payload["prompt"] = [r[0] for r in results]
                original, kept = sum(r[1] for r in results), sum(r[2] for r in results)
            else:
                return None
        return original, kept, (time.perf_counter() - started) * 1000

    def _account(self, response: Response, method: str, path: str, started: float, extra: dict[str, str]) -> None:
        if isinstance(response, ProxyErrorResponse):
            self.stats.errors += 1
        elif response.status_code >= 400:
            self.stats.upstream_errors += 1
        tokens = extra.get("X-Lingua-Original-Tokens"), extra.get("X-Lingua-Compressed-Tokens")
        # Method, path, status, timings and counts only: never bodies, queries or headers (prompts and keys).
        log.info("%s /v1/%s -> %d in %.1f ms (tokens %s -> %s)", method, path, response.status_code,
                 (time.perf_counter() - started) * 1000, *tokens)

    def on_stream_error(self, name: str) -> None:
        self.stats.errors += 1


def parse_ratio(value: str | None, default: float) -> float:
    """The ``X-Lingua-Ratio`` header as a ratio in (0, 1], or ``default`` when absent."""
    if value is None:
        return default
    try:
        ratio = float(value)
    except ValueError:
        ratio = math.nan
    if not 0 < ratio <= 1:  # also refuses nan and inf
        raise ValueError(f"X-Lingua-Ratio: {value[:40]!r} is not accepted; use a number in (0, 1], e.g. 0.3 "
                         f"(kept tokens / original tokens)")
    return ratio


class BoundedConcurrency:
    """ASGI middleware: at most ``limit`` /v1 requests in flight; beyond that an immediate 429 with Retry-After.

    Refusing at once (rather than queueing) keeps latency bounded and lets clients back off; a request counts
    until its last byte is sent, streams included.
    """

    def __init__(self, app: ASGIApp, proxy: Proxy, limit: int) -> None:
        self.app, self.proxy, self.limit = app, proxy, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        stats = self.proxy.stats
        if stats.in_flight >= self.limit:
            stats.rejected_429 += 1
            busy = error_response(429, f"the proxy is at its limit of {self.limit} requests in flight; retry "
                                       f"after {RETRY_AFTER_S} s", "proxy_busy",
                                  headers={"Retry-After": str(RETRY_AFTER_S)})
            await busy(scope, receive, send)
            return
        stats.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            stats.in_flight -= 1


def create_app(upstream: str, *, ratio: float = 0.5, chat_compress: ChatCompress | None = None,
               text_compress: TextCompress | None = None, max_concurrency: int = 64, timeout: float = 300.0,
               api_key: str | None = None) -> FastAPI:
    """The proxy as a FastAPI app; run it with ``uvicorn.run(app, host="127.0.0.1", port=8088)``.

    Args:
        upstream: the OpenAI-compatible base URL requests go to, e.g. ``http://127.0.0.1:8000/v1``.
        ratio: default kept/original tokens in (0, 1]; a request may ask for another with ``X-Lingua-Ratio``.
        chat_compress, text_compress: the compression functions (default: one embedded-model
            :class:`~lingua_compress.Compressor`, loaded at the first request).
        max_concurrency: requests in flight at once; more get a 429 with ``Retry-After``.
        timeout: seconds to wait on the upstream (connect at most 10 s) before answering 504.
        api_key: the upstream key used when a client sends no ``Authorization`` (default: the environment's
            ``LINGUA_UPSTREAM_API_KEY``, then ``OPENAI_API_KEY``).
    """
    ratio, max_concurrency, timeout = _check(upstream, ratio, max_concurrency, timeout)
    if chat_compress is None or text_compress is None:
        default = DefaultCompressors()
        chat_compress, text_compress = chat_compress or default.chat, text_compress or default.text
    api_key = api_key or next((os.environ[v] for v in KEY_ENV_VARS if os.environ.get(v)), None)
    forwarder = Upstream(upstream, timeout=timeout, max_connections=max_concurrency, api_key=api_key)
    proxy = Proxy(forwarder, ratio, chat_compress, text_compress)
    forwarder.on_error = proxy.on_stream_error

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        forwarder.start()  # one pooled client for all requests, closed on shutdown
        try:
            yield
        finally:
            await forwarder.aclose()

    app = FastAPI(title="lingua_compress proxy", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.proxy = proxy
    app.add_middleware(BoundedConcurrency, proxy=proxy, limit=max_concurrency)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return proxy.stats.to_dict()

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def v1(request: Request, path: str) -> Response:
        return await proxy.handle(request, path)

    return app


def _check(upstream: str, ratio: float, max_concurrency: int, timeout: float) -> tuple[float, int, float]:
    if not isinstance(upstream, str) or not upstream.startswith(("http://", "https://")):
        raise ConfigError(f"upstream={upstream!r} is not accepted; give an http(s) base URL such as "
                          "http://127.0.0.1:8000/v1")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ConfigError(f"ratio={ratio!r} is not accepted; use a number in (0, 1]")
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ConfigError(f"max_concurrency={max_concurrency!r} is not accepted; use an integer >= 1")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ConfigError(f"timeout={timeout!r} is not accepted; use a number of seconds > 0")
    return float(ratio), max_concurrency, float(timeout)
