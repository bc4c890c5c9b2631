"""``lingua-compress align``: collect the target LLM's responses to your prompts, then tune a scorer adapter.

    lingua-compress align --prompts prompts.jsonl --base-url URL --model NAME -o my-adapter/
    lingua-compress align --prompts prompts.txt --target-gguf qwen.gguf -o my-adapter/ --steps 300 --max-minutes 30

The pairs file (default ``<output>.pairs.jsonl``) is the resumable state: rerun the same command after a crash and
only unanswered prompts are asked. Without a target, the adapter is tuned on an existing pairs file.
Exit codes: 0 ok, 1 the target, the model or the disk failed (or some prompts failed: the adapter is tuned on the
rest, a rerun asks them again), 2 usage error (bad arguments, a bad prompts file, a missing extra).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError, LinguaCompressError
from .load import INSTALL_HINT, peft_available

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "lingua-compress align"


class UsageError(Exception):
    """A command-line mistake, reported in one line with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Collect the target LLM's responses to your prompts, then "
                                "tune a LoRA adapter of the scorer on them (needs the align extra).",
                                epilog="Evaluate an adapter with benchmarks/bench_align.py.")
    p.add_argument("--prompts", type=Path, help="JSONL with a 'prompt' field, or plain text with one prompt a line")
    p.add_argument("--prompt-field", default="prompt", help="JSONL field holding the prompt (default: prompt)")
    p.add_argument("-o", "--output", type=Path, required=True, help="adapter directory to write")
    p.add_argument("--pairs", type=Path, help="prompt/response JSONL, appended to (default: <output>.pairs.jsonl)")
    target = p.add_argument_group("target LLM (one of)")
    target.add_argument("--base-url", help="OpenAI-compatible API, e.g. http://127.0.0.1:8080/v1 (needs --model)")
    target.add_argument("--model", help="model name sent to --base-url")
    target.add_argument("--target-gguf", type=Path, help="a local GGUF file, run with llama-cpp-python")
    target.add_argument("--completion", action="store_true", help="send plain completions, not chat messages")
    target.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the API key")
    target.add_argument("--concurrency", type=int, default=4, help="API calls in flight (default: 4)")
    target.add_argument("--max-tokens", type=int, default=256, help="longest response asked for (default: 256)")
    target.add_argument("--n-ctx", type=int, default=4096, help="context of a GGUF target (default: 4096)")
    tune = p.add_argument_group("tuning")
    tune.add_argument("--steps", type=int, default=200, help="optimizer steps (default: 200)")
    tune.add_argument("--max-minutes", type=float, default=None, help="stop tuning after this many minutes")
    tune.add_argument("--batch-size", type=int, default=4, help="pairs per step (default: 4)")
    tune.add_argument("--lr", type=float, default=2e-4, help="learning rate (default: 2e-4)")
    tune.add_argument("--rank", type=int, default=8, help="LoRA rank (default: 8)")
    tune.add_argument("--max-length", type=int, default=512, help="tokens per example (default: 512)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--scorer", default=None, help="base scorer: HF id or local path (default: embedded Gemma)")
    tune.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | mps (default: auto)")
    p.add_argument("--collect-only", action="store_true", help="collect the pairs, do not tune")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return _run(args)
    except (UsageError, ConfigError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (LinguaCompressError, OSError) as exc:
        print(f"{PROG}: failed: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from .tune import TuneConfig

    client = _check_args(args)
    config = None if args.collect_only else TuneConfig(
        steps=args.steps, max_minutes=args.max_minutes, batch_size=args.batch_size, lr=args.lr, rank=args.rank,
        max_length=args.max_length, seed=args.seed, device=args.device)
    pairs_path = args.pairs or Path(str(args.output).rstrip("/\\") + ".pairs.jsonl")
    summary: dict[str, Any] = {"pairs_file": str(pairs_path)}
    failed = 0
    if client is not None:
        collected = _collect(args, client, pairs_path)
        summary["collect"], failed = collected.to_dict(), collected.failed
    if config is not None:
        summary["adapter"], summary["manifest"] = _tune(args, config, pairs_path, client)
    print(json.dumps(summary, indent=2))
    if failed:
        print(f"{PROG}: {failed} prompt(s) failed and were left out; rerun the same command to ask them again",
              file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _check_args(args: argparse.Namespace) -> Any:
    """Every usage mistake, before any slow work; the target client (None: tune on existing pairs)."""
    if args.base_url and args.target_gguf:
        raise UsageError("give one target: --base-url with --model, or --target-gguf, not both")
    if bool(args.base_url) != bool(args.model):
        raise UsageError("--base-url and --model go together (the server's URL and the model name it serves)")
    if not args.collect_only and not peft_available():
        raise UsageError(f"tuning needs the 'align' extra (peft), which is not installed; run: {INSTALL_HINT}")
    has_target = bool(args.base_url or args.target_gguf)
    if has_target and args.prompts is None:
        raise UsageError("a target needs --prompts (JSONL with a 'prompt' field, or one prompt a line)")
    if not has_target:
        if args.prompts is not None:
            raise UsageError("--prompts needs a target to answer them: --base-url URL --model NAME, or --target-gguf")
        if args.collect_only:
            raise UsageError("--collect-only needs a target: --base-url URL --model NAME, or --target-gguf")
        pairs = args.pairs or Path(str(args.output).rstrip("/\\") + ".pairs.jsonl")
        if not pairs.is_file():
            raise UsageError(f"no target given and no pairs file {str(pairs)!r} to tune on; give --prompts and "
                             f"a target (--base-url URL --model NAME, or --target-gguf PATH)")
        return None
    if args.target_gguf:
        if not args.target_gguf.is_file():
            raise UsageError(f"--target-gguf {str(args.target_gguf)!r} does not exist or is not a file")
        if importlib.util.find_spec("llama_cpp") is None:
            raise UsageError("--target-gguf needs llama-cpp-python, which is not installed; run: "
                             "pip install llama-cpp-python")
        from ..llm.llamacpp import LlamaCppLLM

        return LlamaCppLLM(args.target_gguf, chat=not args.completion, n_ctx=args.n_ctx)
    from ..llm.openai_http import OpenAIClient

    return OpenAIClient(args.base_url, args.model, chat=not args.completion, api_key_env=args.api_key_env,
                        max_concurrency=args.concurrency)


def _collect(args: argparse.Namespace, client: Any, pairs_path: Path) -> Any:
    from .collect import CollectConfig, collect_responses
    from .pairs import pair_targets, read_prompts

    others = [t for t in (pair_targets(pairs_path) if pairs_path.is_file() else []) if t != client.name]
    if others:  # resuming into another target's pairs would mix two distributions in one adapter
        raise UsageError(f"{str(pairs_path)!r} holds responses of {', '.join(others)}, not {client.name}; "
                         f"give another --pairs file")
    config = CollectConfig(max_tokens=args.max_tokens)
    prompts = read_prompts(args.prompts, field=args.prompt_field)
    return collect_responses(prompts, client, pairs_path, config=config, progress=False if args.quiet else None)


def _tune(args: argparse.Namespace, config: Any, pairs_path: Path, client: Any) -> tuple[str, dict[str, Any]]:
    from .pairs import pair_targets, read_pairs
    from .tune import tune_adapter

    pairs = read_pairs(pairs_path)
    target = client.name if client is not None else ", ".join(pair_targets(pairs_path))
    result = tune_adapter(pairs, args.output, config=config, model=args.scorer, target=target,
                          progress=False if args.quiet else None)
    return str(result.path), result.manifest
