"""Command line: ``lingua-compress [FILE] --ratio 0.2`` reads stdin by default and writes the compressed text.

Subcommands ``align``, ``batch``, ``corpus`` and ``serve`` have their own options (``lingua-compress batch --help``).
Exit codes: 0 ok, 1 compression or model error, 2 usage error (undecodable input included), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Sequence, TextIO

from .errors import ConfigError, LinguaCompressError
from .models import ATTENTION_NAMES, DTYPE_NAMES

SUBCOMMANDS = {
    "align": "lingua_compress.align.cli",  # tuning needs the align extra; says so itself when it is missing
    "batch": "lingua_compress.batch.cli",
    "corpus": "lingua_compress.corpus",
    "serve": "lingua_compress.serve.cli",  # needs the serve extra; says so itself when it is missing
}
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DECODE_ERRORS = ("strict", "replace", "ignore")
_DROP_ON, _DROP_OFF = "\x1b[9;2;31m", "\x1b[0m"  # strikethrough, dim, red


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lingua-compress",
        description="Compress a prompt with a small local LM. "
                    "Subcommands: align, batch, corpus, serve (see '<cmd> --help').",
    )
    p.add_argument("file", nargs="?", default="-", help="prompt file (default: stdin)")
    p.add_argument("-i", "--input", dest="input", help="same as FILE")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--ratio", type=float, help="kept/original tokens in (0, 1] (default 0.5)")
    budget.add_argument("--target-tokens", type=int, help="absolute token budget instead of --ratio")
    p.add_argument("--keep", action="append", default=[], metavar="REGEX", help="never cut matches (repeatable)")
    p.add_argument("--model", default=None, help="HF causal LM id or local path (default: embedded Gemma 3 270M)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | mps")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="auto",
                   help="scorer precision; auto: bf16 on CUDA and on CPUs with AVX512-BF16/AMX, else float32")
    p.add_argument("--attention", choices=ATTENTION_NAMES, default="eager",
                   help="attention kernel: eager (default) or torch's sdpa, faster on a bf16 CPU (see README)")
    p.add_argument("--target-tokenizer", default=None, help="count tokens with this HF tokenizer (id or path)")
    p.add_argument("--errors", choices=DECODE_ERRORS, default="strict",
                   help="input that is not UTF-8: stop with the byte offset (strict, default), replace bad bytes "
                        "with U+FFFD (replace), or drop them (ignore)")
    qa = p.add_argument_group("retrieved documents (question-aware, LongLLMLingua)")
    qa.add_argument("--question", default=None, metavar="TEXT",
                    help="the input's blank-line-separated blocks are documents: rank and prune them by how well each "
                         "predicts this question, and end the prompt with it")
    qa.add_argument("--reorder", choices=("none", "sort", "two_ends"), default="none",  # config.REORDER_MODES
                    help="with --question: keep the documents' order, put the most relevant first, or at both ends")
    qa.add_argument("--dynamic-ratio", type=float, default=0.0, metavar="D",
                    help="with --question, in [0, 1): prune more relevant documents less (by up to D of the ratio)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the full result as JSON")
    out.add_argument("--show", action="store_true", help="print the prompt with dropped text marked")
    return p


def render_show(original: str, spans: Sequence[tuple[int, int]], colour: bool) -> str:
    """The original with dropped stretches struck through (terminal) or wrapped in [- -] (elsewhere)."""
    out, pos = [], 0
    for s, e in list(spans) + [(len(original), len(original))]:
        dropped = original[pos:s]
        if dropped.strip():
            out.append(f"{_DROP_ON}{dropped}{_DROP_OFF}" if colour else f"[-{dropped}-]")
        else:
            out.append(dropped)
        out.append(original[s:e])
        pos = e
    return "".join(out)


class InputDecodeError(Exception):
    """The input is not UTF-8 and --errors is strict."""


def _read(path: str, errors: str = "strict") -> str:
    """The input as text, decoded here (not by the stream) so a bad byte is reported with its offset."""
    if path == "-":
        raw = getattr(sys.stdin, "buffer", None)
        if raw is None:  # a text-only stream (an embedding program's StringIO): already decoded
            return sys.stdin.read()
        data, name = raw.read(), "<stdin>"
    else:
        with open(path, "rb") as fh:
            data, name = fh.read(), path
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise InputDecodeError(
            f"{name} is not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} cannot be decoded "
            f"({exc.reason}); fix the input, or pass --errors replace (or --errors ignore)"
        ) from None


def _write(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
        return
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _compress(args: argparse.Namespace, stream: TextIO) -> int:
    from .api import Compressor

    text = _read(args.input or args.file, args.errors)
    compressor = Compressor(args.model, device=args.device, dtype=args.dtype, attention=args.attention)
    ratio = 0.5 if args.ratio is None and args.target_tokens is None else args.ratio
    if args.question is not None:
        from .documents import compress_documents, split_documents

        out = compress_documents(
            compressor, split_documents(text), args.question, ratio, target_tokens=args.target_tokens,
            reorder=args.reorder, dynamic_ratio=args.dynamic_ratio, target_tokenizer=args.target_tokenizer,
            keep=args.keep,
        )
        result = out.result
    elif args.reorder != "none" or args.dynamic_ratio:
        raise ConfigError("--reorder and --dynamic-ratio follow the documents' relevance to a question: give "
                          "--question")
    else:
        out = result = compressor.compress(
            text, ratio, target_tokens=args.target_tokens, keep=args.keep,
            target_tokenizer=args.target_tokenizer,  # a name or path: the API loads it, local files first
        )
    if args.json:
        _write(args.output, json.dumps(out.to_dict(), ensure_ascii=False) + "\n")
    elif args.show:  # with --question the original is the prompt as placed (documents reordered, question last)
        colour = args.output == "-" and sys.stdout.isatty()
        _write(args.output, render_show(result.original, result.kept_spans, colour) + "\n")
    else:
        _write(args.output, out.text + ("" if out.text.endswith("\n") else "\n"))
    keys = ("original_tokens", "compressed_tokens", "kept_ratio", "backend")  # backend: which compute path ran
    summary = {k: v for k, v in result.to_dict().items() if k in keys}
    print(json.dumps(summary), file=stream)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C while the model loads or scores: one line and the conventional 128 + SIGINT, not a torch traceback.
        print("lingua-compress: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        try:
            module = importlib.import_module(SUBCOMMANDS[argv[0]])
        except ImportError as exc:
            print(f"lingua-compress {argv[0]}: not available ({exc})", file=sys.stderr)
            return EXIT_USAGE
        return int(module.main(argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return _compress(args, sys.stderr)
    except InputDecodeError as exc:
        print(f"lingua-compress: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LinguaCompressError as exc:
        print(f"lingua-compress: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAILED
    except OSError as exc:
        print(f"lingua-compress: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
