"""``lingua-compress batch``: answer a JSONL file of questions in batches, resumably, with a JSON cost summary.

Exit codes: 0 every item ok, 1 some items ended with another status (see the output), 2 bad arguments or
input, 3 the model or the API failed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError, LinguaCompressError
from .cost import CostReport, Prices
from .runner import BatchConfig, run_batched
from .types import GSM8K_PATTERN, BatchFormat, Sample

_CALC = re.compile(r"<<[^>]*>>")


def gsm8k_answer(text: str) -> str:
    """A GSM8K answer as a one-paragraph rationale ending "The answer is N." (calculator notes removed)."""
    body, _, final = text.partition("####")
    body = " ".join(_CALC.sub("", body).split())
    return f"{body} The answer is {final.strip().replace(',', '')}." if final else body


def read_samples(path: Path, fields: Sequence[str], answer_field: str | None, *, gsm8k: bool = False) -> list[Sample]:
    """Samples from JSONL: ``id`` (default: the line number), the input ``fields``, and optionally an answer."""
    samples = []
    with open(path, encoding="utf-8") as handle:
        for n, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n} is not valid JSON: {exc}") from exc
            missing = [f for f in fields if not isinstance(row.get(f), str)]
            if missing:
                raise ConfigError(f"{path}:{n} lacks string field(s) {missing}; set them with --fields")
            answer = row.get(answer_field) if answer_field else None
            if answer is not None and gsm8k:
                answer = gsm8k_answer(str(answer))
            inputs: Any = row[fields[0]] if fields == ["question"] else {f: row[f] for f in fields}
            samples.append(Sample(str(row.get("id", n)), inputs, None if answer is None else str(answer)))
    return samples


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lingua-compress batch", description=__doc__.splitlines()[0])
    p.add_argument("questions", type=Path, help="JSONL with an 'id' and the input field(s) per line")
    p.add_argument("--demos", type=Path, help="JSONL demonstrations with the input field(s) and an answer")
    p.add_argument("-o", "--output", type=Path, required=True, help="answers JSONL (appended; ids done are skipped)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--auto-demo", action="store_true", help="ask the model to repeat each question first")
    p.add_argument("--json-answers", action="store_true", help="ask for answers as one JSON object")
    p.add_argument("--group", choices=["sequential", "random", "similarity", "knn"], default="sequential")
    p.add_argument("--ratio", type=float, help="compress the shared demonstrations to this share of tokens")
    p.add_argument("--instruction", default="", help="task instruction placed before the demonstrations")
    p.add_argument("--fields", default="question", help="comma-separated input fields (default: question)")
    p.add_argument("--answer-field", default="answer", help="answer field of the demonstrations")
    p.add_argument("--gsm8k", action="store_true", help="GSM8K answers: '#### N' -> 'The answer is N.' and extract N")
    p.add_argument("--answer-pattern", help="regex with one group extracting the final answer")
    p.add_argument("--max-tokens-per-item", type=int, default=256)
    p.add_argument("--max-retries", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=32, help="questions per checkpoint written to the output")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--base-url", help="OpenAI-compatible API, e.g. https://api.openai.com/v1")
    target.add_argument("--local", action="store_true", help="run the embedded local model")
    p.add_argument("--model", help="model name for --base-url (or a local model path with --local)")
    p.add_argument("--completions", action="store_true", help="use /completions instead of /chat/completions")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--price-in", type=float, help="dollars per million prompt tokens")
    p.add_argument("--price-out", type=float, help="dollars per million completion tokens")
    return p


def _done_ids(path: Path) -> set[str]:
    done: set[str] = set()
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interrupted run; its id is asked again
            if row.get("status") == "ok":
                done.add(str(row.get("id")))
    return done


def _target(args: argparse.Namespace) -> tuple[Any, Any]:
    """The target LLM and the compressor (sharing one loaded model when both are local)."""
    from ..api import Compressor
    from ..llm import LocalLLM, OpenAIClient

    compressor = Compressor() if args.ratio is not None and args.ratio < 1.0 else None
    if args.local:
        if compressor is not None and args.model is None:
            return LocalLLM(loaded=compressor.scorer.loaded), compressor
        return LocalLLM(args.model), compressor
    if not args.model:
        raise ConfigError("--base-url needs --model NAME")
    return OpenAIClient(args.base_url, args.model, chat=not args.completions, api_key_env=args.api_key_env,
                        timeout_s=args.timeout, max_concurrency=args.concurrency), compressor


def run(args: argparse.Namespace) -> int:
    fields = [f.strip() for f in args.fields.split(",") if f.strip()]
    samples = read_samples(args.questions, fields, None)
    demos = read_samples(args.demos, fields, args.answer_field, gsm8k=args.gsm8k) if args.demos else []
    style = "auto_demo" if args.auto_demo else ("json" if args.json_answers else "indexed")
    pattern = args.answer_pattern or (GSM8K_PATTERN if args.gsm8k else None)
    fmt = BatchFormat(style=style, answer_pattern=pattern)
    config = BatchConfig(batch_size=args.batch_size, group=args.group, seed=args.seed, ratio=args.ratio,
                         max_tokens_per_item=args.max_tokens_per_item, max_retries=args.max_retries)
    prices = Prices(args.price_in, args.price_out) if args.price_in is not None and args.price_out is not None else None
    done = _done_ids(args.output)
    todo = [s for s in samples if s.id not in done]
    llm, compressor = _target(args) if todo else (None, None)
    from tqdm import tqdm

    reports, statuses = [], {"ok": len(done & {s.id for s in samples})}
    with tqdm(total=len(samples), initial=len(samples) - len(todo), file=sys.stderr, unit="q") as bar, \
            open(args.output, "a", encoding="utf-8") as out:
        step = max(args.chunk, args.batch_size)
        for lo in range(0, len(todo), step):
            res = run_batched(todo[lo : lo + step], llm, demos=demos, instruction=args.instruction, config=config,
                              fmt=fmt, compressor=compressor, prices=prices, progress=bar.update)
            for r in res.items.values():
                out.write(json.dumps({"id": r.id, "status": r.status, "answer": r.final, "text": r.answer,
                                      "note": r.note, "attempts": r.attempts}, ensure_ascii=False) + "\n")
                statuses[r.status] = statuses.get(r.status, 0) + 1
            out.flush()  # a checkpoint: an interrupted run resumes after the last chunk written
            reports.append(res.cost)
    summary: dict[str, Any] = {"questions": len(samples), "skipped_already_ok": len(samples) - len(todo),
                               "statuses": statuses}
    if reports:
        summary["cost"] = CostReport.merge(reports).to_dict()
    print(json.dumps(summary, indent=2))
    return 0 if statuses.get("ok", 0) == len(samples) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"lingua-compress batch: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, LinguaCompressError) as exc:
        print(f"lingua-compress batch: failed: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
