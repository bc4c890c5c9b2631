"""An OpenAI-compatible HTTP client (chat and completions) on the standard library only.

Works with OpenAI, vLLM, llama.cpp's server, Ollama's /v1 and other servers speaking the same wire format.
Nothing is sent at construction; the key is read from the environment at the first call.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Sequence

from ..errors import ConfigError
from .base import Completion, LLMRequestError, Message, check_prompt

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_STOP = 4  # OpenAI accepts at most four stop sequences


class OpenAIClient:
    """Calls ``{base_url}/chat/completions`` (``chat=True``) or ``{base_url}/completions``.

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
        model: the model name sent in each request.
        api_key_env: environment variable holding the key (no key: no Authorization header, for local servers).
        timeout_s: per-request socket timeout.
        max_retries: extra attempts on 429, 5xx, timeouts and connection errors, with exponential backoff
            (``Retry-After`` honoured up to ``max_backoff_s``).
        max_concurrency: calls allowed in flight at once across threads.
    """

    def __init__(self, base_url: str, model: str, *, chat: bool = True, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, max_retries: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 20.0,
                 max_concurrency: int = 4, extra_body: dict[str, Any] | None = None, seed: int = 0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url={base_url!r} must be an http:// or https:// URL, e.g. http://127.0.0.1:8000/v1")
        if not isinstance(model, str) or not model:
            raise ConfigError(f"model={model!r} must be a non-empty model name")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries={max_retries!r} must be an int >= 0")
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigError(f"max_concurrency={max_concurrency!r} must be an int >= 1")
        if not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
            raise ConfigError(f"timeout_s={timeout_s!r} must be a positive number of seconds")
        self.base_url = base_url.rstrip("/")
        self.model, self.chat, self.api_key_env = model, chat, api_key_env
        self.name = f"openai:{model}"
        self.timeout_s, self.max_retries = float(timeout_s), max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.max_concurrency = max_concurrency
        self.extra_body = dict(extra_body or {})
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._rng = random.Random(seed)  # jitter only; seeded so test runs repeat
        self._sleep = sleep

    def complete(self, prompt: str | Sequence[Message], *, max_tokens: int, stop: Sequence[str] = (),
                 temperature: float = 0.0) -> Completion:
        check_prompt(prompt, self.chat)
        body: dict[str, Any] = {"model": self.model, "max_tokens": int(max_tokens), "temperature": temperature}
        if self.chat:
            body["messages"] = [dict(m) for m in prompt]
        else:
            body["prompt"] = prompt
        if stop:
            body["stop"] = list(stop)[:MAX_STOP]
        body.update(self.extra_body)
        path = "/chat/completions" if self.chat else "/completions"
        started = time.perf_counter()
        with self._slots:
            data, retries = self._post_with_retries(self.base_url + path, body)
        return _completion(data, self.chat, time.perf_counter() - started, retries, self.model)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post_with_retries(self, url: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        payload = json.dumps(body).encode()
        last = ""
        retry_after: float | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._sleep(self._delay(attempt, retry_after))
                retry_after = None
            try:
                return self._post(url, payload), attempt
            except urllib.error.HTTPError as exc:
                detail = _read_error(exc)
                if exc.code not in RETRY_STATUS:
                    raise LLMRequestError(f"POST {url} failed with HTTP {exc.code}: {detail}") from exc
                retry_after = _retry_after(exc)
                last = f"HTTP {exc.code}: {detail}"
            except (TimeoutError, socket.timeout) as exc:
                last = f"timed out after {self.timeout_s:g} s ({exc})"
            except urllib.error.URLError as exc:
                if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                    last = f"timed out after {self.timeout_s:g} s"
                else:
                    last = f"connection failed: {exc.reason}"
            except ConnectionError as exc:
                last = f"connection failed: {exc}"
        raise LLMRequestError(f"POST {url} failed after {self.max_retries + 1} attempts; last error: {last}")

    def _post(self, url: str, payload: bytes) -> dict[str, Any]:
        request = urllib.request.Request(url, data=payload, headers=self._headers(), method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            raw = response.read()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LLMRequestError(f"POST {url} returned a body that is not JSON: {raw[:200]!r}") from exc
        if not isinstance(data, dict):
            raise LLMRequestError(f"POST {url} returned JSON that is not an object: {raw[:200]!r}")
        return data

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = self.backoff_s * 2 ** (attempt - 1)
        return min(base * (1.0 + 0.25 * self._rng.random()), self.max_backoff_s)


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _read_error(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read()[:300].decode("utf-8", "replace")
    except Exception:  # the error body is only a hint for the message
        return str(exc.reason)


def _completion(data: dict[str, Any], chat: bool, latency: float, retries: int, model: str) -> Completion:
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMRequestError(f"reply has no choices[0].{'message.content' if chat else 'text'}: "
                              f"{json.dumps(data)[:300]}") from exc
    usage = data.get("usage") or {}
    return Completion(
        text=text or "",
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
        finish_reason=choice.get("finish_reason"),
        model=str(data.get("model") or model),
        latency_s=latency,
        retries=retries,
    )


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
