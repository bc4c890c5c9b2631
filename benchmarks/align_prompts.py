"""Prompts for aligning the scorer to the target: GSM8K train questions and BBH questions, never a test item.

    python benchmarks/align_prompts.py [--gsm8k 240] [--bbh 15] [--held-gsm8k 48] [--held-bbh 3] [--out DIR]

Writes ``DIR/prompts.jsonl`` (to tune on) and ``DIR/heldout.jsonl`` (to measure perplexity on; disjoint), one
``{"prompt", "source"}`` a line. GSM8K prompts are train questions from row 1,000 on (bench_quality's
demonstrations are early train rows; its test questions come from test.jsonl), in its "Question: ... Let's think
step by step" form. BBH prompts are each task's description and a BIG-bench question in bench_bbh's form, taken
from the end of bench_bbh's seeded order (its test questions are the start of that order), leaving out any
paragraph that one of the first 100 test questions of the task uses (``bench_bbh --n`` up to 100 is clean).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_bbh import COT, TASKS, load_task  # noqa: E402

GSM8K_FIRST_ROW = 1000
RESERVED_TESTS = 100  # per BBH task: bench_bbh --n up to this never meets an align prompt


def gsm8k_prompts(data: Path, n: int, skip: int = 0) -> list[dict]:
    with open(data / "gsm8k" / "train.jsonl", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    chosen = rows[GSM8K_FIRST_ROW + skip: GSM8K_FIRST_ROW + skip + n]
    return [{"prompt": f"Question: {r['question']}\nLet's think step by step", "source": "gsm8k-train"}
            for r in chosen]


def bbh_prompts(data: Path, per_task: int, skip: int = 0) -> list[dict]:
    out = []
    for task in TASKS:
        description, _, questions = load_task(data / "bbh", task, 10**6)
        # Some tasks ask several questions of one paragraph: leave out any paragraph a test question uses.
        tested = {_stem(row["question"]) for row in questions[:RESERVED_TESTS]}
        fresh = [row for row in questions[RESERVED_TESTS:] if _stem(row["question"]) not in tested]
        end = len(fresh) - skip
        for row in fresh[end - per_task: end]:
            out.append({"prompt": f"{description}\n\nQ: {row['question']}\n{COT}", "source": f"bbh-{task}"})
    return out


def _stem(question: str) -> str:
    return question.split("\nOptions:")[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--gsm8k", type=int, default=240)
    ap.add_argument("--bbh", type=int, default=15, help="per task (4 tasks)")
    ap.add_argument("--held-gsm8k", type=int, default=48)
    ap.add_argument("--held-bbh", type=int, default=3, help="per task")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "align")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tune = gsm8k_prompts(args.data, args.gsm8k) + bbh_prompts(args.data, args.bbh)
    held = (gsm8k_prompts(args.data, args.held_gsm8k, skip=args.gsm8k)
            + bbh_prompts(args.data, args.held_bbh, skip=args.bbh))
    for name, rows in (("prompts.jsonl", tune), ("heldout.jsonl", held)):
        with open(args.out / name, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(json.dumps({"prompts": len(tune), "heldout": len(held), "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
