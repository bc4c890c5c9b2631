"""Batch prompting on GSM8K: prompt tokens per sample against batch size, demonstrations plain and compressed.

    python benchmarks/bench_batch.py --no-generate            # token accounting only (an oracle answers)
    python benchmarks/bench_batch.py --n 6 --batch-sizes 1,3,6  # also generate with the local model

48 test questions, 12 train demonstrations regrouped into blocks of the batch size (Cheng et al.), batch sizes
1, 2, 3, 4, 6, demonstrations uncompressed and compressed once at ``--ratio``. Tokens are counted in the embedded
model's tokenizer. In accounting mode an oracle returns the gold rationales in the batch format, so completion
tokens are realistic and no model is run for answers. Prints JSON, saves it and a plot under benchmarks/results/.
Targets (issue #3): at K=6, prompt tokens per sample <= 1/4 of one by one; with compression at 0.3, <= 1/8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

from lingua_compress.batch import GSM8K_PATTERN, BatchConfig, BatchFormat, Sample, run_batched
from lingua_compress.batch.cli import gsm8k_answer
from lingua_compress.llm import Completion

RESULTS = Path(__file__).parent / "results"
Q_LINE = re.compile(r"^Q\[(\d+)\]: (.*)$", re.M)


def load(data: Path, n: int, n_demos: int) -> tuple[list[Sample], list[Sample], dict[str, str]]:
    def rows(name):
        with open(data / name, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    test, train = rows("test.jsonl")[:n], rows("train.jsonl")[:n_demos]
    samples = [Sample(f"test-{i}", r["question"]) for i, r in enumerate(test)]
    demos = [Sample(f"train-{i}", r["question"], gsm8k_answer(r["answer"])) for i, r in enumerate(train)]
    gold = {f"test-{i}": gsm8k_answer(r["answer"]) for i, r in enumerate(test)}
    return samples, demos, gold


class Oracle:
    """Answers every slot with the gold rationale, in the indexed format: realistic output, no model run."""

    name, chat, max_concurrency = "oracle", False, 1

    def __init__(self, by_question: dict[str, str]) -> None:
        self.by_question = by_question

    def complete(self, prompt, *, max_tokens, stop=(), temperature=0.0):
        block = prompt.split("\n\n")[-1]
        lines = [f"A[{i}]: {self.by_question.get(' '.join(q.split()), '')}" for i, q in Q_LINE.findall(block)]
        return Completion("\n".join(lines).removeprefix("A[1]:"), None, None, "stop")


def final(text: str | None) -> str | None:
    m = re.findall(GSM8K_PATTERN, text or "")
    return m[-1].replace(",", "") if m else None


def one_config(samples, demos, gold, llm, count, k, ratio, compressor, args) -> dict:
    cfg = BatchConfig(batch_size=k, ratio=ratio, max_tokens_per_item=args.max_tokens_per_item,
                      max_retries=args.max_retries)
    started = time.perf_counter()
    res = run_batched(samples, llm, demos=demos, instruction="Solve the grade-school math problems.",
                      config=cfg, fmt=BatchFormat(answer_pattern=GSM8K_PATTERN), compressor=compressor,
                      count_tokens=count)
    correct = sum(1 for i, r in res.items.items() if r.ok and r.final == final(gold[i]))
    c = res.cost
    return {
        "batch_size": k, "ratio": ratio, "prefix_tokens": c.prefix_tokens,
        "prefix_tokens_original": c.prefix_tokens_original, "calls": c.calls, "retry_calls": c.retry_calls,
        "prompt_tokens_per_sample": round(c.prompt_tokens_per_sample, 2),
        "completion_tokens_per_sample": round(c.completion_tokens_per_sample, 2),
        "one_by_one_prompt_tokens_per_sample": round(c.baseline_prompt_tokens_per_sample, 2),
        "vs_one_by_one": round(c.vs_one_by_one, 4), "vs_one_by_one_compressed": round(c.vs_one_by_one_compressed, 4),
        "batching_gain": round(c.batching_gain, 3), "compression_gain": round(c.compression_gain, 3),
        "statuses": res.status_counts, "accuracy": round(correct / len(samples), 4) if samples else None,
        "wall_s": round(time.perf_counter() - started, 2),
    }


def plot(rows: list[dict], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: plot skipped"
    fig, ax = plt.subplots(figsize=(6, 4))
    for ratio in sorted({r["ratio"] or 1.0 for r in rows}, reverse=True):
        sel = [r for r in rows if (r["ratio"] or 1.0) == ratio]
        label = "demos uncompressed" if ratio == 1.0 else f"demos compressed at {ratio}"
        ax.plot([r["batch_size"] for r in sel], [r["prompt_tokens_per_sample"] for r in sel], "o-", label=label)
    base = rows[0]["one_by_one_prompt_tokens_per_sample"]
    ax.axhline(base, color="grey", ls="--", label="one by one, uncompressed")
    ax.set_xlabel("batch size K")
    ax.set_ylabel("prompt tokens per sample")
    ax.set_title("GSM8K, 12 demonstrations")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("/work/shared/data/gsm8k"))
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--demos", type=int, default=12)
    p.add_argument("--batch-sizes", default="1,2,3,4,6")
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--no-generate", action="store_true", help="token accounting only (oracle answers)")
    p.add_argument("--max-tokens-per-item", type=int, default=160)
    p.add_argument("--max-retries", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    from lingua_compress import Compressor
    from lingua_compress.llm import LocalLLM

    samples, demos, gold = load(args.data, args.n, args.demos)
    compressor = Compressor()
    local = LocalLLM(loaded=compressor.scorer.loaded)
    llm = Oracle({" ".join(s.fields[0][1].split()): gold[s.id] for s in samples}) if args.no_generate else local
    rows = []
    for ratio in (None, args.ratio):
        for k in [int(x) for x in args.batch_sizes.split(",")]:
            rows.append(one_config(samples, demos, gold, llm, local.count_tokens, k, ratio, compressor, args))
            print(json.dumps(rows[-1]), file=sys.stderr)
    mode = "accounting" if args.no_generate else "generate"
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "bench_batch", "mode": mode, "n": len(samples), "demos": len(demos), "tokenizer": "gemma-3-270m",
        "target": "oracle (gold answers)" if args.no_generate else "local gemma-3-270m (base), greedy",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        "rows": rows,
    }
    stem = args.out / f"bench_batch_{mode}"
    result["plot"] = plot(rows, stem.with_suffix(".png"))
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
