"""What the proxy compresses, as two plain functions it can be handed (tests pass fakes, users their own).

``ChatCompress(messages, ratio) -> (messages, original_tokens, compressed_tokens)`` for chat requests and
``TextCompress(prompt, ratio) -> (text, original_tokens, compressed_tokens)`` for completion prompts. Both run in
a worker thread, one at a time (the app serialises them), so they may hold torch state.
"""

from __future__ import annotations

import copy
import threading
from typing import Any, Callable

ChatCompress = Callable[[list[dict[str, Any]], float], tuple[list[dict[str, Any]], int, int]]
TextCompress = Callable[[str, float], tuple[str, int, int]]

# Roles whose content is prose worth compressing. Tool results are often JSON that word-dropping would break;
# structure-safe handling belongs to ``Compressor.compress_messages`` when it is available.
COMPRESSIBLE_ROLES = frozenset({"system", "user", "assistant"})


class DefaultCompressors:
    """``chat`` and ``text`` over one :class:`~lingua_compress.Compressor`, created on first use (or ``load()``).

    Args:
        model: HF causal LM id or local path (default: the embedded scorer).
        device: passed to ``Compressor``.
        compressor: an existing compressor (anything with ``compress``) instead of building one.
    """

    def __init__(self, model: str | None = None, *, device: str = "auto", compressor: Any = None) -> None:
        self._spec = {"model": model, "device": device}
        self._compressor = compressor
        self._lock = threading.Lock()

    def load(self) -> Any:
        """The compressor with its scorer loaded, so the first request does not pay for the model load."""
        with self._lock:
            if self._compressor is None:
                from ..api import Compressor

                self._compressor = Compressor(self._spec["model"], device=self._spec["device"])
            compressor = self._compressor
        getattr(compressor, "scorer", None)  # a Compressor loads its model on first access (once, under its lock)
        return compressor

    def chat(self, messages: list[dict[str, Any]], ratio: float) -> tuple[list[dict[str, Any]], int, int]:
        compressor = self.load()
        # The messages layer (structure-safe content, turn policy) is used when this Compressor has it.
        compress_messages = getattr(compressor, "compress_messages", None)
        if callable(compress_messages):
            result = compress_messages(messages, ratio)
            return list(result.messages), int(result.original_tokens), int(result.compressed_tokens)
        return compress_each_message(compressor.compress, messages, ratio)

    def text(self, prompt: str, ratio: float) -> tuple[str, int, int]:
        result = self.load().compress(prompt, ratio)
        return result.text, int(result.original_tokens), int(result.compressed_tokens)


def compress_each_message(compress: Callable[[str, float], Any], messages: list[dict[str, Any]],
                          ratio: float) -> tuple[list[dict[str, Any]], int, int]:
    """Compress each system/user/assistant text with ``compress(text, ratio)``, except the last user turn.

    The last user turn is the question being asked now: cutting it risks changing what is asked. Counts cover
    the compressed texts only. The input list is not modified; the shape of every message is kept.
    """
    last_user = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"),
                    default=-1)
    out, original, kept = [], 0, 0
    for i, message in enumerate(messages):
        if i == last_user or not isinstance(message, dict) or message.get("role") not in COMPRESSIBLE_ROLES:
            out.append(message)
            continue
        message = copy.deepcopy(message)
        content = message.get("content")
        if isinstance(content, str):
            message["content"], n, k = _compress_text(compress, content, ratio)
            original, kept = original + n, kept + k
        elif isinstance(content, list):  # multimodal parts: only the text parts are touched
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                    part["text"], n, k = _compress_text(compress, part["text"], ratio)
                    original, kept = original + n, kept + k
        out.append(message)
    return out, original, kept


def _compress_text(compress: Callable[[str, float], Any], text: str, ratio: float) -> tuple[str, int, int]:
    if not text.strip():
        return text, 0, 0
    result = compress(text, ratio)
    return result.text, int(result.original_tokens), int(result.compressed_tokens)
