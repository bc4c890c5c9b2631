"""An OpenAI-compatible compressing proxy: ``lingua-compress serve --upstream URL`` (extra ``serve``).

Clients point ``OPENAI_BASE_URL`` at the proxy; it compresses chat messages and completion prompts, forwards the
request to the upstream server and hands back the upstream's answer (streamed through as it arrives).

Layout: ``compressors`` (what gets compressed, with the model loaded once), ``upstream`` (forwarding with httpx:
headers, errors, streaming), ``app`` (the ASGI app: routes, backpressure, stats), ``cli`` (the subcommand),
``background`` (serve an app from a thread: notebooks, tests).
This module imports nothing heavy: ``import lingua_compress`` and ``lingua-compress --help`` never need fastapi.
"""

from __future__ import annotations

from typing import Any

from .background import serve_in_thread
from .compressors import ChatCompress, DefaultCompressors, TextCompress, compress_each_message

__all__ = [
    "ChatCompress", "DefaultCompressors", "TextCompress", "compress_each_message", "create_app", "main",
    "serve_in_thread",
]


def __getattr__(name: str) -> Any:
    # Lazy: ``app`` imports fastapi and httpx, which the extra provides and the core library never needs.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "main":
        from .cli import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
