"""Question-aware against question-agnostic compression of bench_rag's prompts: seconds side by side, per item.

    python benchmarks/check_rag_speed.py [--n 6] [--passages 20] [--ratios 0.25,0.1] [--repeats 3] [--dtype auto]
    python benchmarks/check_rag_speed.py --dry        # wiring check: 1 short item, 1 repeat

Issue 12's speed target: question-aware compression of a 20-passage prompt costs at most 1.5x question-agnostic.
bench_rag records both modes' seconds too, but beside a target LLM and other jobs; here they run alone, interleaved
(agnostic, then question-aware, per repeat), best of ``--repeats``, model load and a warm-up excluded. Both modes
are bench_rag's: ``compress_documents`` with the question (``reorder="sort"``, ``dynamic_ratio=0.3``) and without
it. The budget is the ratio of the documents in the scorer's own tokens (no target tokenizer needed: both modes get
the same one). The report also gives the tokens each mode forwarded through the scorer, which is where the time
goes: the ranking pass forwards every document with the question after it, the contrastive pass the kept ones
again with the question in front. Writes results/check_rag_speed.json (``--dry``: check_rag_speed_dry.json; a
``--dtype`` other than auto: check_rag_speed_<dtype>.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_rag as R  # noqa: E402
from quality_report import emit, machine  # noqa: E402

TARGET = 1.5  # question-aware / question-agnostic seconds, at most


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=R.DEFAULT_DATA)
    ap.add_argument("--n", type=int, default=None, help="items (default 6; 1 with --dry)")
    ap.add_argument("--passages", type=int, default=None, help="documents per prompt (default 20; 3 with --dry)")
    ap.add_argument("--ratios", default="0.25,0.1")
    ap.add_argument("--repeats", type=int, default=None, help="best of (default 3; 1 with --dry)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                    help="the scorer's (float32: the path of a CPU without native bf16)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--dry", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    args.n = args.n if args.n is not None else (1 if args.dry else 6)
    args.passages = args.passages or (3 if args.dry else 20)
    args.repeats = args.repeats or (1 if args.dry else 3)
    args.ratios = [float(r) for r in args.ratios.split(",") if r]
    if args.n < 1 or args.passages < 2 or args.repeats < 1 or not args.ratios:
        ap.error("--n and --repeats must be at least 1, --passages at least 2, and --ratios not empty")
    return args


def modes(compressor, docs: list[str], question: str, ratio: float) -> dict:
    """Both modes of bench_rag's ``ours``: the call each makes, keyed by the method's name there."""
    return {"ours-agnostic": lambda: compressor.compress_documents(docs, ratio=ratio, question_aware=False),
            "ours-qa": lambda: compressor.compress_documents(docs, question=question, ratio=ratio, reorder="sort",
                                                             dynamic_ratio=0.3)}


def time_item(compressor, docs: list[str], question: str, ratio: float, repeats: int) -> dict:
    """Best-of seconds of each mode, interleaved, and the tokens each forwarded."""
    calls = modes(compressor, docs, question, ratio)
    best: dict[str, tuple[float, object]] = {}
    for _ in range(repeats):
        for name, call in calls.items():
            t = time.perf_counter()
            res = call()
            dt = time.perf_counter() - t
            if name not in best or dt < best[name][0]:
                best[name] = (dt, res)
    row = {}
    for name, (dt, res) in best.items():
        row[name] = {"s": round(dt, 3), "scored_tokens": res.result.timings.scored_tokens,
                     "kept_ratio": round(res.kept_ratio, 4)}
    row["qa_over_agnostic"] = round(best["ours-qa"][0] / best["ours-agnostic"][0], 3)
    row["original_tokens"] = best["ours-qa"][1].original_tokens
    return row


def summarise(records: list[dict], ratios: list[float]) -> dict:
    out = {}
    for ratio in ratios:
        rs = [r for r in records if r["ratio"] == ratio]
        x = [r["qa_over_agnostic"] for r in rs]
        tokens = [r["ours-qa"]["scored_tokens"] / r["ours-agnostic"]["scored_tokens"] for r in rs]
        out[str(ratio)] = {
            "n": len(rs), "qa_over_agnostic_median": round(statistics.median(x), 3),
            "qa_over_agnostic_min": min(x), "qa_over_agnostic_max": max(x),
            "qa_over_agnostic_total": round(sum(r["ours-qa"]["s"] for r in rs)
                                            / sum(r["ours-agnostic"]["s"] for r in rs), 3),
            "scored_tokens_qa_over_agnostic_median": round(statistics.median(tokens), 3),
            "items_within_target": sum(v <= TARGET for v in x),
            "median_s": {m: round(statistics.median(r[m]["s"] for r in rs), 3) for m in ("ours-agnostic", "ours-qa")},
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from lingua_compress import Compressor

    if args.threads:
        torch.set_num_threads(args.threads)
    items, rows = R.load_items(args.data, args.n, 0, R.DRY_MAX_CHARS if args.dry else 0)
    compressor = Compressor(dtype=args.dtype)
    compressor.compress_documents(["A warm-up document.", "Another one."], question="Which one?", ratio=0.5)
    records = []
    for idx, item in enumerate(items):
        position = R.POSITIONS[idx % len(R.POSITIONS)]
        docs, _ = R.documents(item, R.distractors(item, rows, args.passages, 0), args.passages, position)
        for ratio in args.ratios:
            rec = {"item": item["id"], "position": position, "ratio": ratio,
                   **time_item(compressor, docs, item["question"], ratio, args.repeats)}
            records.append(rec)
            print(f"{item['id']} {ratio}: x{rec['qa_over_agnostic']}", file=sys.stderr)
    report = {"benchmark": "check_rag_speed", "target_qa_over_agnostic": TARGET, "passages": args.passages,
              "repeats": args.repeats, "summary": summarise(records, args.ratios),
              "backend": dataclasses.asdict(compressor.scorer.backend),
              "torch_threads": torch.get_num_threads(), **machine(), "records": records, "dry": args.dry}
    suffix = ("_dry" if args.dry else "") + ("" if args.dtype == "auto" else f"_{args.dtype}")
    emit(report, args.out, f"check_rag_speed{suffix}.json")
    return report


if __name__ == "__main__":
    main()
