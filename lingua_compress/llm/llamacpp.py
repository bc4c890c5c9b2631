"""A local GGUF target through llama-cpp-python (an optional package: ``pip install llama-cpp-python``).

Used where the target LLM is a GGUF file on this machine, e.g. to collect its responses for distribution
alignment. Loaded on the first call; nothing happens at construction beyond checking that the file exists.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from .base import Completion, LLMRequestError, Message, check_prompt

INSTALL_HINT = "pip install llama-cpp-python"


class LlamaCppLLM:
    """Generates with ``llama_cpp.Llama``: chat mode uses the GGUF's own chat template (instruct models),
    completion mode sends the prompt as is. ``temperature=0`` decodes greedily (top-k 1), for repeatable data.
    """

    max_concurrency = 1  # one llama.cpp context; it is not safe to share between threads

    def __init__(self, path: str | Path, *, chat: bool = True, n_ctx: int = 4096, threads: int | None = None,
                 seed: int = 0) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"GGUF file {str(self.path)!r} does not exist")
        if not isinstance(n_ctx, int) or n_ctx < 64:
            raise ConfigError(f"n_ctx={n_ctx!r} must be an int >= 64")
        self.chat, self.n_ctx, self.threads, self.seed = chat, n_ctx, threads, seed
        self.name = f"llama.cpp:{self.path.name}"
        self._llm: Any = None
        self._lock = threading.Lock()

    @property
    def llm(self) -> Any:
        with self._lock:
            if self._llm is None:
                try:
                    from llama_cpp import Llama
                except ImportError as exc:
                    raise ConfigError(f"a GGUF target needs llama-cpp-python; run: {INSTALL_HINT}") from exc
                self._llm = Llama(str(self.path), n_ctx=self.n_ctx, n_threads=self.threads or os.cpu_count(),
                                  seed=self.seed, verbose=False)
        return self._llm

    def complete(self, prompt: str | Sequence[Message], *, max_tokens: int, stop: Sequence[str] = (),
                 temperature: float = 0.0) -> Completion:
        check_prompt(prompt, self.chat)
        llm = self.llm
        sampling = {"max_tokens": int(max_tokens), "temperature": float(temperature), "stop": list(stop),
                    "seed": self.seed, "repeat_penalty": 1.0}
        if temperature == 0:
            sampling["top_k"] = 1
        started = time.perf_counter()
        try:
            if self.chat:
                data = llm.create_chat_completion(messages=[dict(m) for m in prompt], **sampling)
                text = data["choices"][0]["message"]["content"]
            else:
                data = llm.create_completion(prompt=prompt, **sampling)
                text = data["choices"][0]["text"]
        except ValueError as exc:  # llama-cpp-python's error for a prompt longer than the context
            raise LLMRequestError(f"{self.name}: {exc}") from exc
        usage = data.get("usage") or {}
        return Completion(text or "", usage.get("prompt_tokens"), usage.get("completion_tokens"),
                          data["choices"][0].get("finish_reason"), self.path.name, time.perf_counter() - started)
