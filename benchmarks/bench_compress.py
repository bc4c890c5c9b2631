"""Speed, memory and ratio precision of compress() on an 8-shot GSM8K chain-of-thought prompt.

    python benchmarks/bench_compress.py [--data ../shared/data/gsm8k] [--repeats 3] [--out benchmarks/results]

Builds the prompt from 8 train demonstrations with their worked solutions (calculator annotations removed,
"####" written as "The answer is") plus one test question, about 2,400 scorer tokens. Compresses it at ratios
0.5, 0.2 and 0.1, interleaved, best of --repeats (this machine's timings are noisy; the load average is recorded),
and prints one JSON object per run plus a summary; results are saved as JSON. Model load is excluded from the
timings; the default model is converted (if needed) in a subprocess so its conversion peak does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "gsm8k"
RATIOS = (0.5, 0.2, 0.1)
INSTRUCTION = "Please reference the following examples to answer the math question."


def clean(answer: str) -> str:
    return re.sub(r"<<[^>]*>>", "", answer).replace("#### ", "The answer is ")


def demonstrations(data: Path, shots: int = 8, min_lines: int = 8) -> tuple[list[str], list[dict]]:
    """Long worked solutions, as in LLMLingua's CoT example: the first train rows with >= min_lines lines."""
    train = [json.loads(line) for line in (data / "train.jsonl").open()]
    rows = [r for r in train if r["answer"].count("\n") >= min_lines][:shots]
    return [f"Question: {r['question']}\nLet's think step by step\n{clean(r['answer'])}" for r in rows], rows


def build_prompt(data: Path, shots: int = 8, test_index: int = 2):
    from lingua_compress import Prompt

    test = [json.loads(line) for line in (data / "test.jsonl").open()]
    demos, rows = demonstrations(data, shots)
    question = f"Question: {test[test_index]['question']}"
    return Prompt(instruction=INSTRUCTION, demonstrations=demos, question=question), rows, test[test_index]


def numbers_check(prompt, rows, result) -> dict:
    """Every number of the question, and of each kept demonstration's final answer line, must survive."""
    question_numbers = re.findall(r"\d+(?:[.,]\d+)*", prompt.question)
    missing_q = [n for n in question_numbers if n not in result.text]
    kept_demos, missing_answers = 0, []
    for demo, row in zip(prompt.demonstrations, rows):
        span = (result.original.find(demo), result.original.find(demo) + len(demo))
        if not any(s < span[1] and e > span[0] for s, e in result.kept_spans):
            continue
        kept_demos += 1
        answer = row["answer"].split("####")[-1].strip()
        if f"The answer is {answer}" not in result.text and f"answer is {answer}" not in result.text \
                and not re.search(rf"\b{re.escape(answer)}\b", result.text):
            missing_answers.append(answer)
    return {"question_numbers": len(question_numbers), "question_numbers_missing": missing_q,
            "kept_demonstrations": kept_demos, "answers_missing": missing_answers}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.model is None:  # convert (if needed) outside this process: its 3 GB peak is not ours
        code = "from lingua_compress.models import default_model_path; default_model_path()"
        subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)

    from lingua_compress import Compressor

    prompt, rows, _ = build_prompt(args.data)
    compressor = Compressor(args.model)
    t0 = time.perf_counter()
    compressor.scorer
    load_s = time.perf_counter() - t0
    compressor.compress(prompt, 0.5)  # warm-up: first-call allocations and kernel selection
    runs: dict[float, list] = {r: [] for r in RATIOS}
    for _ in range(args.repeats):
        for ratio in RATIOS:  # interleaved, so drift in machine load hits every ratio alike
            t = time.perf_counter()
            res = compressor.compress(prompt, ratio)
            runs[ratio].append((time.perf_counter() - t, res))
    report = []
    for ratio in RATIOS:
        wall, res = min(runs[ratio], key=lambda x: x[0])
        row = {
            "ratio_requested": ratio,
            "ratio_achieved": round(res.kept_ratio, 4),
            "ratio_error_pct": round(100 * (res.kept_ratio - ratio) / ratio, 2),
            "original_tokens": res.original_tokens,
            "compressed_tokens": res.compressed_tokens,
            "target_tokens": res.target_tokens,
            "wall_s_best": round(wall, 3),
            "wall_s_all": [round(w, 3) for w, _ in runs[ratio]],
            "tokens_per_s": round(res.original_tokens / wall, 1),
            "scored_tokens": res.timings.scored_tokens,
            "parts": [p.__dict__ for p in res.parts],
            **numbers_check(prompt, rows, res),
        }
        print(json.dumps(row))
        report.append(row)
    summary = {
        "benchmark": "bench_compress",
        "model": compressor.scorer.name,
        "model_load_s": round(load_s, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "runs": report,
        "sample_0.2": next(r for w, r in runs[0.2]).text,
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("runs", "sample_0.2")}))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_compress.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
