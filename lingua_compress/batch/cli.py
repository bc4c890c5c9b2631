"""``lingua-compress batch``: answer a JSONL file of questions in batches, resumably, with a JSON cost summary.

Exit codes: 0 every item ok, 1 some items ended with another status (see the output), 2 bad arguments or
input, 3 the model or the API failed (also when a call still failed after its re-asks: the answers that came
back are written, and a rerun asks the rest).

Reruns are idempotent: the output holds one line per id; ids answered ``ok`` are skipped and the others are asked
again, their new line replacing the old one.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError, LinguaCompressError
from .answers import check_paths, id_value, jsonl_rows, load_answers, rewrite_answers, row_id, to_json_line
from .cost import CostReport, Prices
from .runner import BatchConfig, run_batched
from .types import GSM8K_PATTERN, BatchFormat, ItemResult, Sample
from .vote import ItemVotes

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_API = 0, 1, 2, 3
_CALC = re.compile(r"<<[^>]*>>")


def gsm8k_answer(text: str) -> str:
    """A GSM8K answer as a one-paragraph rationale ending "The answer is N." (calculator notes removed)."""
    body, _, final = text.partition("####")
    body = " ".join(_CALC.sub("", body).split())
    return f"{body} The answer is {final.strip().replace(',', '')}." if final else body


def read_samples(path: Path, fields: Sequence[str], answer_field: str | None, *, gsm8k: bool = False) -> list[Sample]:
    """Samples from JSONL: ``id`` (a string or an integer; default: the line number), the input ``fields``, and
    with ``answer_field`` the answer. Ids must be unique across the file; ``Sample.id`` is the id's JSON text
    (see :mod:`.answers`), so ``4`` and ``"4"`` stay two ids."""
    samples, first = [], {}
    for n, row in jsonl_rows(path):
        key = row_id(path, n, row, first)
        missing = [f for f in fields if not isinstance(row.get(f), str)]
        if missing:
            raise ConfigError(f"{path}:{n} lacks string field(s) {missing}; set them with --fields")
        answer = row.get(answer_field) if answer_field else None
        if answer_field and answer is None:
            raise ConfigError(f"{path}:{n} lacks the answer field {answer_field!r} a demonstration needs; "
                              f"set it with --answer-field")
        if answer is not None and gsm8k:
            answer = gsm8k_answer(str(answer))
        inputs: Any = row[fields[0]] if list(fields) == ["question"] else {f: row[f] for f in fields}
        samples.append(Sample(key, inputs, None if answer is None else str(answer)))
    return samples


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lingua-compress batch", description=__doc__.splitlines()[0])
    p.add_argument("questions", type=Path,
                   help="JSONL with the input field(s) and a unique 'id' (string or integer; default: line number)")
    p.add_argument("--demos", type=Path, help="JSONL demonstrations with the input field(s) and an answer")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="answers JSONL, one line per id; a rerun skips ids answered ok and asks the rest again")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--auto-demo", action="store_true", help="ask the model to repeat each question first")
    p.add_argument("--json-answers", action="store_true", help="ask for answers as one JSON object")
    p.add_argument("--group", choices=["sequential", "random", "similarity", "knn"], default="sequential")
    p.add_argument("--ratio", type=float, help="compress the shared demonstrations to this share of tokens")
    p.add_argument("--drop-blocks", action=argparse.BooleanOptionalAction, default=None,
                   help="with --ratio: the compression may drop whole demonstration blocks, then thins the kept "
                        "ones (default: BatchConfig.drop_blocks)")
    p.add_argument("--instruction", default="", help="task instruction placed before the demonstrations")
    p.add_argument("--fields", default="question", help="comma-separated input fields (default: question)")
    p.add_argument("--answer-field", default="answer", help="answer field of the demonstrations")
    p.add_argument("--gsm8k", action="store_true", help="GSM8K answers: '#### N' -> 'The answer is N.' and extract N")
    p.add_argument("--answer-pattern", help="regex with one group extracting the final answer")
    p.add_argument("--max-tokens-per-item", type=int, default=256)
    p.add_argument("--max-retries", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--votes", type=int, default=1, metavar="P",
                   help="ask each batch in up to P seeded permutations and keep each question's majority answer")
    p.add_argument("--vote-agree", type=int, metavar="N",
                   help="with --votes: retire a question once N of its answers agree (default: once the rounds "
                        "left cannot change its vote)")
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


def _resume(path: Path, samples: Sequence[Sample]) -> tuple[set[str], list[Sample]]:
    """Ids already answered ``ok`` in ``path``, and the samples still to ask. ``path`` is rewritten to one line
    per id first, without the lines of the ids about to be asked again: each gets exactly one new line."""
    rows = load_answers(path)
    wanted = {s.id for s in samples}
    done = {key for key, row in rows.items() if key in wanted and row.get("status") == "ok"}
    if path.exists():
        rewrite_answers(path, (row for key, row in rows.items() if key in done or key not in wanted))
    return done, [s for s in samples if s.id not in done]


def _row(r: ItemResult, votes: ItemVotes | None = None) -> dict[str, Any]:
    row = {"id": id_value(r.id), "status": r.status, "answer": r.final, "text": r.answer, "note": r.note,
           "attempts": r.attempts}
    if votes is not None:
        row["votes"] = list(votes.answers)
    return row


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
    check_paths(args.output, (args.questions, args.demos))
    fields = [f.strip() for f in args.fields.split(",") if f.strip()]
    samples = read_samples(args.questions, fields, None)
    demos = read_samples(args.demos, fields, args.answer_field, gsm8k=args.gsm8k) if args.demos else []
    style = "auto_demo" if args.auto_demo else ("json" if args.json_answers else "indexed")
    pattern = args.answer_pattern or (GSM8K_PATTERN if args.gsm8k else None)
    fmt = BatchFormat(style=style, answer_pattern=pattern)
    config = BatchConfig(batch_size=args.batch_size, group=args.group, seed=args.seed, ratio=args.ratio,
                         max_tokens_per_item=args.max_tokens_per_item, max_retries=args.max_retries,
                         votes=args.votes, vote_agree=args.vote_agree,
                         **({} if args.drop_blocks is None else {"drop_blocks": args.drop_blocks}))
    prices = Prices(args.price_in, args.price_out) if args.price_in is not None and args.price_out is not None else None
    done, todo = _resume(args.output, samples)
    llm, compressor = _target(args) if todo else (None, None)
    from tqdm import tqdm

    reports, statuses, call_errors = [], {"ok": len(done)} if done else {}, []
    with tqdm(total=len(samples), initial=len(done), file=sys.stderr, unit="q") as bar, \
            open(args.output, "a", encoding="utf-8") as out:
        step = max(args.chunk, args.batch_size)
        for lo in range(0, len(todo), step):
            res = run_batched(todo[lo : lo + step], llm, demos=demos, instruction=args.instruction, config=config,
                              fmt=fmt, compressor=compressor, prices=prices, progress=bar.update)
            for r in res.items.values():
                out.write(to_json_line(_row(r, res.votes.get(r.id))) + "\n")
                statuses[r.status] = statuses.get(r.status, 0) + 1
                if r.call_error is not None:
                    call_errors.append(r.call_error)
            out.flush()  # a checkpoint: an interrupted run resumes after the last chunk written
            reports.append(res.cost)
    summary: dict[str, Any] = {"questions": len(samples), "skipped_already_ok": len(done), "statuses": statuses}
    if reports:
        summary["cost"] = CostReport.merge(reports).to_dict()
    print(json.dumps(summary, indent=2))
    return _exit_code(statuses.get("ok", 0) == len(samples), call_errors)


def _exit_code(all_ok: bool, call_errors: Sequence[str]) -> int:
    if call_errors:
        print(f"lingua-compress batch: failed: {len(call_errors)} question(s) got no answer because the API call "
              f"failed (first error: {call_errors[0]}); rerun the same command to ask them again", file=sys.stderr)
        return EXIT_API
    return EXIT_OK if all_ok else EXIT_SOME_FAILED


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"lingua-compress batch: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, LinguaCompressError) as exc:
        print(f"lingua-compress batch: failed: {exc}", file=sys.stderr)
        return EXIT_API


if __name__ == "__main__":
    sys.exit(main())
