"""Forwarding to the upstream server: headers in and out, errors as OpenAI-style JSON, SSE relayed unbuffered."""

from __future__ import annotations

import json
import logging
from typing import Any, AsyncIterator, Callable, Iterable

import anyio
import httpx
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger("lingua_compress.serve")

# Per-connection headers (RFC 9110 §7.6.1) belong to one hop; host and content-length are recomputed by httpx
# for the body actually sent, which compression changes.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length",
})
# Uvicorn adds its own date and server headers; passing the upstream's too would send them twice.
RESPONSE_DROP = HOP_BY_HOP | {"date", "server"}
OWN_PREFIX = "x-lingua-"  # our control headers are for the proxy, never for the upstream


class ProxyErrorResponse(JSONResponse):
    """An error the proxy answered itself (as opposed to an upstream error passed through)."""


def error_response(status: int, message: str, code: str,
                   headers: dict[str, str] | None = None) -> ProxyErrorResponse:
    """An error body in OpenAI's shape, so clients raise their usual exception with a readable message."""
    kind = "invalid_request_error" if status == 400 else "rate_limit_error" if status == 429 else "api_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return ProxyErrorResponse(body, status_code=status, headers=headers)


def request_headers(headers: Iterable[tuple[bytes, bytes]], api_key: str | None) -> list[tuple[bytes, bytes]]:
    """The client's raw headers minus hop-by-hop and our own; the proxy's key only when the client sent none.

    Raw bytes both ways, so a header value that is not ASCII reaches the upstream as it was sent.
    """
    items = [(name.lower(), value) for name, value in headers]
    named_in_connection = {token.strip().decode("latin-1") for name, value in items if name == b"connection"
                           for token in value.lower().split(b",")}
    out = [(n, v) for n, v in items
           if (name := n.decode("latin-1")) not in HOP_BY_HOP and name not in named_in_connection
           and not name.startswith(OWN_PREFIX)]
    if api_key and not any(n == b"authorization" for n, _ in out):
        out.append((b"authorization", f"Bearer {api_key}".encode("latin-1")))
    return out


def response_headers(headers: httpx.Headers, decoded: bool) -> list[tuple[bytes, bytes]]:
    """The upstream's headers for the client. ``decoded``: the body was un-gzipped, so its encoding header goes."""
    drop = RESPONSE_DROP | {"content-encoding"} if decoded else RESPONSE_DROP
    return [(n.lower(), v) for n, v in headers.raw if n.lower().decode("latin-1") not in drop]


class Upstream:
    """One shared ``httpx.AsyncClient`` to ``base_url`` (``{base_url}/chat/completions`` and so on).

    Args:
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        timeout: seconds allowed for connecting (at most 10) and for each wait on the upstream (first byte, next
            chunk); past it the client gets a 504 (or, mid-stream, an error event).
        max_connections: size of the connection pool; the app admits no more requests than this at once.
        api_key: sent as a Bearer token when the client sent no ``Authorization``.
        on_error: called with the exception type name when a stream breaks after its headers were sent.
    """

    def __init__(self, base_url: str, *, timeout: float, max_connections: int, api_key: str | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self.limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.api_key = api_key
        self.on_error = on_error or (lambda name: None)
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, limits=self.limits)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def forward(self, method: str, path: str, query: bytes, headers: Iterable[tuple[bytes, bytes]],
                      body: bytes, extra_headers: dict[str, str] | None = None) -> Response:
        """Send the request on and return the upstream's status, headers and body, streamed when it is SSE.

        Raises nothing for upstream trouble: unreachable is a 502, timed out a 504, both in OpenAI's error shape.
        """
        self.start()  # normally done in the app's lifespan; this covers servers that skip lifespan events
        assert self._client is not None
        url = f"{self.base_url}/{path}" + (f"?{query.decode('latin-1')}" if query else "")
        request = self._client.build_request(method, url, headers=request_headers(headers, self.api_key),
                                             content=body or None)
        try:
            upstream = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            return error_response(504, f"the upstream did not answer in time ({type(exc).__name__})",
                                  "upstream_timeout")
        except httpx.HTTPError as exc:
            return error_response(502, f"the upstream could not be reached ({type(exc).__name__}: {exc})",
                                  "upstream_unreachable")
        if upstream.headers.get("content-type", "").startswith("text/event-stream"):
            response: Response = _Relay(upstream, self.on_error)
        else:
            try:
                content = await upstream.aread()
            except httpx.TimeoutException as exc:
                return error_response(504, f"the upstream's answer timed out ({type(exc).__name__})",
                                      "upstream_timeout")
            except httpx.HTTPError as exc:
                return error_response(502, f"the upstream's answer broke off ({type(exc).__name__})",
                                      "upstream_unreachable")
            finally:
                await upstream.aclose()
            response = Response(content, status_code=upstream.status_code)
            response.raw_headers.extend(response_headers(upstream.headers, decoded=True))
        response.raw_headers.extend((k.lower().encode(), v.encode()) for k, v in (extra_headers or {}).items())
        return response


class _Relay(StreamingResponse):
    """Relays an SSE body chunk by chunk as the upstream sends it, and always closes the upstream response."""

    def __init__(self, upstream: httpx.Response, on_error: Callable[[str], None]) -> None:
        self._upstream, self._on_error = upstream, on_error
        super().__init__(self._chunks(), status_code=upstream.status_code)
        # Raw bytes are relayed, so the upstream's content-encoding still describes them.
        self.raw_headers.extend(response_headers(upstream.headers, decoded=False))

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            # Headers are gone already: an SSE error event is how OpenAI clients learn a stream failed midway.
            self._on_error(type(exc).__name__)
            log.warning("upstream stream broke off: %s", type(exc).__name__)
            error: dict[str, Any] = {"message": f"the upstream stream broke off ({type(exc).__name__})",
                                     "type": "api_error", "param": None, "code": "upstream_stream_error"}
            yield f"data: {json.dumps({'error': error})}\n\n".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: on a client disconnect this scope is cancelled, and the upstream must still be released.
            with anyio.CancelScope(shield=True):
                await self._upstream.aclose()
