"""Proxy overhead: the latency ``lingua-compress serve`` adds per request, and requests/s under load.

    python benchmarks/bench_proxy.py            # 300 sequential requests each way, then 50 concurrent clients
    python benchmarks/bench_proxy.py --real     # also the embedded compressor; compression ms reported apart
    python benchmarks/bench_proxy.py --dry      # a smoke run in seconds (the tests run it)

A scripted upstream answers at once (a fixed chat completion, or three SSE chunks), so what is measured is the
proxy itself: parsing, the worker-thread hop, re-serialising, forwarding, relaying. The proxy runs with a no-op
compressor for that; ``--real`` adds a second proxy with the real one and subtracts its ``X-Lingua-Compress-Ms``.
Upstream, proxy and client are separate processes on loopback, as in use. Sequential requests alternate between
direct and proxied so machine noise hits both alike. Prints JSON and saves it under benchmarks/results/.
Target (issue #13): proxy overhead <= 10 ms per request beyond compression time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
TARGET_MS = 10.0
MESSAGES = [
    {"role": "system", "content": "You are a careful assistant. Answer math questions step by step, then give "
                                  "the final answer on its own line as 'The answer is N'."},
    {"role": "user", "content": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                                "clips in May. How many clips did Natalia sell altogether in April and May? " * 4},
    {"role": "assistant", "content": "Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips "
                                     "altogether in April and May. The answer is 72. " * 3},
    {"role": "user", "content": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
                                "babysitting. How much did she earn?"},
]


# ---------------------------------------------------------------- the servers (each in its own process)


def upstream_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "bench",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is 10."},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 200, "completion_tokens": 5, "total_tokens": 205}}

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        if not body.get("stream"):
            return JSONResponse(answer)

        async def chunks():
            for piece in ("The answer", " is", " 10."):
                delta = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                yield f"data: {json.dumps(delta)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/health", health)])


def proxy_app(upstream: str, real: bool, model: str | None) -> Any:
    from lingua_compress.serve import DefaultCompressors, create_app

    if real:
        default = DefaultCompressors(model)
        default.load()  # before listening: model loading is not proxy latency
        return create_app(upstream, ratio=0.5, chat_compress=default.chat, text_compress=default.text)

    def noop_chat(messages: list, ratio: float) -> tuple[list, int, int]:
        return messages, 0, 0

    def noop_text(prompt: str, ratio: float) -> tuple[str, int, int]:
        return prompt, 0, 0

    return create_app(upstream, ratio=0.5, chat_compress=noop_chat, text_compress=noop_text, max_concurrency=64)


def serve_role(args: argparse.Namespace) -> int:
    import uvicorn

    app = upstream_app() if args.role == "upstream" else proxy_app(args.upstream, args.real, args.model)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


class Server:
    """A role of this script in a subprocess, up once its /health answers."""

    def __init__(self, role: str, *extra: str, wait_s: float = 300.0) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, __file__, "--role", role, "--port", str(self.port), *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self._wait(wait_s)

    def _wait(self, wait_s: float) -> None:
        import httpx

        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        self.log.seek(0)
        raise RuntimeError(f"server on {self.url} did not start:\n{self.log.read().decode()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------- measurements


def summary(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return {"n": len(ms), "p50": round(statistics.median(ms), 3), "p90": round(pick(0.9), 3),
            "p99": round(pick(0.99), 3), "mean": round(statistics.fmean(ms), 3)}


def sequential(urls: dict[str, str], n: int, stream: bool) -> dict[str, dict]:
    """``n`` requests per URL, alternating; ms to the full answer (or to the first SSE chunk when streaming)."""
    import httpx

    times: dict[str, list[float]] = {name: [] for name in urls}
    compress_ms: list[float] = []
    payload = {"model": "bench", "messages": MESSAGES, "stream": stream}
    with httpx.Client(timeout=600) as client:
        for i in range(n + 5):  # the first 5 warm connections and code paths up
            for name, url in urls.items():
                started = time.perf_counter()
                with client.stream("POST", url + "/v1/chat/completions", json=payload) as r:
                    chunks = r.iter_raw()
                    first = next(chunks)  # the first SSE chunk, or the first piece of the JSON body
                    if not stream:
                        first += b"".join(chunks)
                    elapsed = (time.perf_counter() - started) * 1000
                    for _ in chunks:
                        pass
                assert r.status_code == 200 and first, (name, r.status_code)
                if i >= 5:
                    times[name].append(elapsed)
                    if "x-lingua-compress-ms" in r.headers and name == "real":
                        compress_ms.append(float(r.headers["x-lingua-compress-ms"]))
    out = {name: summary(ms) for name, ms in times.items()}
    if compress_ms:
        out["real_compress_ms"] = summary(compress_ms)
        out["real_minus_compress"] = summary([t - c for t, c in zip(times["real"], compress_ms)])
    return out


async def _load(url: str, concurrency: int, total: int) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    payload = {"model": "bench", "messages": MESSAGES}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(range(concurrency))  # the warm-up round: one request per connection

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in queue:
            started = time.perf_counter()
            r = await client.post(url + "/v1/chat/completions", json=payload)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        queue = iter(range(total))
        latencies.clear()
        statuses.clear()
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    errors = sum(n for code, n in statuses.items() if code != 200)
    return {"concurrency": concurrency, "requests": total, "wall_s": round(wall, 3),
            "requests_per_s": round(total / wall, 1), "latency_ms": summary(latencies), "statuses": statuses,
            "errors": errors}


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {name: version(name) for name in ("fastapi", "starlette", "uvicorn", "httpx")}
    loop = "uvloop" if _has("uvloop") else "asyncio"
    http = "httptools" if _has("httptools") else "h11"
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "versions": versions, "uvicorn_loop": loop, "uvicorn_http": http}


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ---------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    n, n_stream, total = (20, 10, 100) if args.dry else (args.n, args.n // 3, args.load_requests)
    upstream = Server("upstream")
    servers = [upstream]
    try:
        proxy = Server("proxy", "--upstream", upstream.url + "/v1")
        servers.append(proxy)
        urls = {"direct": upstream.url, "proxy": proxy.url}
        latency = sequential(urls, n, stream=False)
        ttfb = sequential(urls, n_stream, stream=True)
        load = asyncio.run(_load(proxy.url, args.concurrency, total))
        load_direct = asyncio.run(_load(upstream.url, args.concurrency, total))
        real = None
        if args.real:
            extra = ["--real"] + (["--model", args.model] if args.model else [])
            servers.append(Server("proxy", "--upstream", upstream.url + "/v1", *extra))
            real = sequential({"direct": upstream.url, "real": servers[-1].url}, args.n_real, stream=False)
    finally:
        for server in servers:
            server.stop()
    overhead = round(latency["proxy"]["p50"] - latency["direct"]["p50"], 3)
    report: dict[str, Any] = {
        "benchmark": "bench_proxy", "dry": args.dry, "machine": machine(),
        "latency_ms": latency, "first_chunk_ms": ttfb, "overhead_ms_p50": overhead,
        "overhead_ms_mean": round(latency["proxy"]["mean"] - latency["direct"]["mean"], 3),
        "first_chunk_overhead_ms_p50": round(ttfb["proxy"]["p50"] - ttfb["direct"]["p50"], 3),
        "load": load, "load_direct": load_direct, "target_ms": TARGET_MS, "target_met": overhead <= TARGET_MS,
    }
    if real is not None:
        real_overhead = real["real_minus_compress"]["p50"] - real["direct"]["p50"]
        report["real"] = {**real, "overhead_beyond_compression_ms_p50": round(real_overhead, 3)}
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry", action="store_true", help="a few requests only: a smoke run in seconds")
    p.add_argument("--n", type=int, default=300, help="sequential requests per path (default 300)")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--load-requests", type=int, default=2000, help="requests in the load phase (default 2000)")
    p.add_argument("--real", action="store_true", help="also measure a proxy with the real compressor")
    p.add_argument("--n-real", type=int, default=10, help="sequential requests with the real compressor")
    p.add_argument("--model", default=None, help="scorer for --real (default: the embedded model)")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    p.add_argument("--role", choices=("upstream", "proxy"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--upstream", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role:
        return serve_role(args)
    report = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "bench_proxy_dry.json" if args.dry else "bench_proxy.json"
    (out / name).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
