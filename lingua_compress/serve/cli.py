"""``lingua-compress serve --upstream URL``: run the compressing proxy with uvicorn.

Exit codes: 0 stopped cleanly, 1 the model could not be loaded, 2 usage error or the ``serve`` extra is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from typing import Sequence

from ..errors import LinguaCompressError

EXTRA_MODULES = ("fastapi", "uvicorn", "httpx")
INSTALL_HINT = 'pip install "lingua_compress[serve]"'


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lingua-compress serve",
        description="An OpenAI-compatible proxy that compresses prompts before forwarding them. Point clients at "
                    "it with OPENAI_BASE_URL=http://HOST:PORT/v1. The upstream key is the client's Authorization "
                    "header, else $LINGUA_UPSTREAM_API_KEY, else $OPENAI_API_KEY (never a command-line flag).",
    )
    p.add_argument("--upstream", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--ratio", type=float, default=0.5,
                   help="kept/original tokens in (0, 1] (default 0.5); per request: header X-Lingua-Ratio")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8088, help="port to listen on (default 8088)")
    p.add_argument("--max-concurrency", type=int, default=64,
                   help="requests in flight at once; more are answered 429 with Retry-After (default 64)")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait on the upstream before answering 504 (default 300)")
    p.add_argument("--model", default=None, help="HF causal LM id or local path (default: embedded Gemma 3 270M)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | mps")
    p.add_argument("--no-preload", action="store_true",
                   help="load the model at the first request instead of before listening")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--access-log", action="store_true",
                   help="also log uvicorn's access lines (off by default: they include query strings)")
    return p


def missing_extra() -> list[str]:
    return [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    missing = missing_extra()
    if missing:
        print(f"lingua-compress serve: needs {', '.join(missing)}, which is not installed; run: {INSTALL_HINT}",
              file=sys.stderr)
        return 2
    from .app import create_app
    from .compressors import DefaultCompressors

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        compressors = DefaultCompressors(args.model, device=args.device)
        app = create_app(args.upstream, ratio=args.ratio, chat_compress=compressors.chat,
                         text_compress=compressors.text, max_concurrency=args.max_concurrency, timeout=args.timeout)
        if not args.no_preload:
            print("lingua-compress serve: loading the scoring model ...", file=sys.stderr)
            compressors.load()
    except LinguaCompressError as exc:
        print(f"lingua-compress serve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1
    import uvicorn

    print(f"lingua-compress serve: http://{args.host}:{args.port}/v1 -> {args.upstream} (ratio {args.ratio})",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    return 0
