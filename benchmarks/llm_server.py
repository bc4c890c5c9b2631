"""An OpenAI-compatible server on loopback, started and stopped by a benchmark: llama-cpp-python's own
(``python -m llama_cpp.server``, its ``server`` extra) for real runs, or a scripted stand-in speaking the same wire
format for dry runs. Both run as a child process behind the same start / health-check / stop code.

    python benchmarks/llm_server.py --port 8123 --answers answers.json   # the scripted stand-in alone

The stand-in answers each ``Q[i]:`` line of the last user message with "... The answer is N." (N from the
``--answers`` table keyed by question text, plus one from slot ``--wrong-from`` on, so batching visibly costs
accuracy), echoes the question first when the system message asks for Auto-Demo, applies the stop strings and
reports usage (words and punctuation marks).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

_TOKEN = re.compile(r"\w+|[^\w\s]")
_Q_LINE = re.compile(r"^Q\[(\d+)\]: (.*)$", re.M)


class ServerError(RuntimeError):
    """The server did not come up (the message holds the end of its log)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def llama_command(gguf: Path, port: int, *, alias: str, n_ctx: int, threads: int, chat_format: str) -> list[str]:
    """llama-cpp-python's server: greedy requests are served one at a time (its lock), the previous prompt's KV
    cache is reused for the longest common prefix, so a shared demonstration prefix is evaluated once."""
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
            "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
            "--chat_format", chat_format, "--host", "127.0.0.1", "--port", str(port), "--seed", "0",
            "--logits_all", "false", "--use_mlock", "false", "--interrupt_requests", "false", "--verbose", "false"]


def fake_command(port: int, answers: Path, wrong_from: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--answers", str(answers),
            "--wrong-from", str(wrong_from)]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, so a killed benchmark never leaves a server behind."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/models", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _tail(log: Path, n: int = 2000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


@contextlib.contextmanager
def serve(command: list[str], port: int, log: Path, timeout_s: float = 300.0) -> Iterator[str]:
    """Start ``command`` (a server listening on ``port``), wait until ``/v1/models`` answers, yield the base URL,
    and stop the server however the block ends (exception, Ctrl-C, SIGTERM turned into SystemExit)."""
    base = f"http://127.0.0.1:{port}/v1"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # Its own session: a Ctrl-C in the terminal reaches the benchmark only, which then stops the server in order.
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent)
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(base):
            if proc.poll() is not None:
                raise ServerError(f"server exited with code {proc.returncode} before answering; log {log}:\n"
                                  f"{_tail(log)}")
            if time.monotonic() > deadline:
                raise ServerError(f"server not healthy after {timeout_s:g} s; log {log}:\n{_tail(log)}")
            time.sleep(0.25)
        yield base
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)  # uvicorn would wait for a generation in flight: not worth waiting for
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- the scripted stand-in


def fake_reply(body: dict, answers: dict[str, str], wrong_from: int) -> dict:
    messages = body.get("messages") or []
    system = next((m["content"] for m in messages if m.get("role") == "system"), "")
    last = messages[-1]["content"] if messages else ""
    echo = "repeat question" in system
    lines = []
    for slot, question in _Q_LINE.findall(last):
        final = answers.get(question.strip())
        if final is None:
            continue
        value = int(final) + (1 if int(slot) >= wrong_from else 0)
        if echo:
            lines.append(f"Q[{slot}]: {question}")
        lines.append(f"A[{slot}]: We work it out step by step. The answer is {value}.")
    text = "\n".join(lines)
    for stop in body.get("stop") or []:
        text = text.split(stop)[0]
    prompt = sum(len(_TOKEN.findall(m.get("content", ""))) + 4 for m in messages)
    return {"id": "fake", "object": "chat.completion", "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": len(_TOKEN.findall(text)),
                      "total_tokens": prompt + len(_TOKEN.findall(text))}}


def _handler(answers: dict[str, str], wrong_from: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, data: dict) -> None:
            payload = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": "only /v1/chat/completions"})
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._send(200, fake_reply(body, answers, wrong_from))

        def log_message(self, *args) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="scripted OpenAI-compatible chat server for dry runs")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--answers", type=Path, required=True, help="JSON object: question text -> final answer")
    ap.add_argument("--wrong-from", type=int, default=1 << 30, help="answer wrong (+1) from this slot on")
    args = ap.parse_args(argv)
    answers = json.loads(args.answers.read_text())
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), _handler(answers, args.wrong_from))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    httpd.serve_forever(poll_interval=0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
