"""Question-aware document ranking: where does the gold passage land, by our question-NLL ranking, by MiniLM
embedding similarity, and by the two fused? Ranking only, no compression and no target LLM; paired per item.

    python benchmarks/check_rank.py [--n 120] [--seed 1] [--disjoint-from 0] [--threads 1]
    python benchmarks/check_rank.py --dry     # wiring check: 2 short items of 3 passages, TF-IDF for MiniLM

bench_rag's prompts (20 passages, gold at start / middle / end in turn). Our ranking scores each document by the
mean NLL of the question (with LongLLMLingua's hint) written after it; MiniLM by cosine similarity to the question.
Fusions: "rank-mean" orders by the mean of the two ranks (ties by NLL), "z-sum" by the sum of the two scores'
z-scores within the item (what compress_documents does with ``retrieval_scores``). Default items: the tuning set
(seed 1, none of the evaluation's 200), so a fusion chosen here is judged on items it was not chosen on. Writes results/check_rank.json (``--dry``: check_rank_dry.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_rag as R  # noqa: E402
from quality_report import machine  # noqa: E402
from quality_stats import _interval, _resamples  # noqa: E402


def ranks(scores: np.ndarray) -> np.ndarray:
    """0 = best (highest score); ties broken by input order."""
    out = np.empty(len(scores), dtype=int)
    out[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
    return out


def fused(nll: np.ndarray, emb: np.ndarray) -> dict[str, np.ndarray]:
    """Each ranking's scores (higher = more relevant); "z-sum" is the library's fusion with ``retrieval_scores``."""
    from lingua_compress.question import fuse

    mean_rank = (ranks(nll) + ranks(emb)) / 2.0
    return {"nll": nll, "embed": emb, "rank-mean": -mean_rank + 1e-6 * fuse(nll, np.zeros_like(nll)),
            "z-sum": fuse(nll, emb)}


def nll_relevance(compressor, docs: list[str], question: str) -> np.ndarray:
    from dataclasses import replace

    from lingua_compress.question_run import _rank_and_place
    from lingua_compress.segment import Prompt

    config = replace(compressor.config, question_aware=True, reorder="none")
    return np.asarray(_rank_and_place(compressor.scorer, config, Prompt("", docs, question), []).relevance)


def summarise(records: list[dict], names: list[str]) -> dict:
    out: dict = {}
    for name in names:
        r = np.array([rec["gold_rank"][name] for rec in records])
        out[name] = {"top1": float(np.mean(r < 1)), "top2": float(np.mean(r < 2)), "top3": float(np.mean(r < 3)),
                     "mrr": float(np.mean(1.0 / (r + 1))), "mean_rank": float(np.mean(r))}
        if name != "nll":
            rr = [1.0 / (rec["gold_rank"][name] + 1) - 1.0 / (rec["gold_rank"]["nll"] + 1) for rec in records]
            boots = [float(np.mean([rr[i] for i in idx])) for idx in _resamples(len(rr), 0)]
            out[name]["mrr_vs_nll"] = {"diff": float(np.mean(rr)), "ci": list(_interval(boots))}
    return out


def main(argv: list[str] | None = None) -> dict:
    from lingua_compress import Compressor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=R.DEFAULT_DATA)
    ap.add_argument("--n", type=int, default=None, help="items (default 120; 2 with --dry)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--disjoint-from", type=int, default=0)
    ap.add_argument("--passages", type=int, default=None, help="per prompt (default 20; 3 with --dry)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dry", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    args.n = args.n if args.n is not None else (2 if args.dry else 120)
    args.passages = args.passages or (3 if args.dry else 20)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    items, rows = R.load_items(args.data, args.n, args.seed, R.DRY_MAX_CHARS if args.dry else 0,
                               args.disjoint_from)
    compressor, embed = Compressor(), R.EmbedTopK(args.dry)  # bench_rag's retrieval baseline: its similarities
    records, started = [], time.perf_counter()
    for i, item in enumerate(items):
        position = R.POSITIONS[i % len(R.POSITIONS)]
        docs, gold = R.documents(item, R.distractors(item, rows, args.passages, args.seed), args.passages, position)
        scores = fused(nll_relevance(compressor, docs, item["question"]),
                       np.asarray(embed.similarities(docs, item["question"])))
        records.append({"item": item["id"], "position": position,
                        "gold_rank": {k: int(ranks(v)[gold]) for k, v in scores.items()}})
        print(json.dumps(records[-1]), file=sys.stderr)
    summary = {"meta": {"n": len(records), "seed": args.seed, "disjoint_from": args.disjoint_from,
                        "passages": args.passages, "embedder": embed.name, "dry": args.dry,
                        "wall_s": round(time.perf_counter() - started, 1), "machine": machine()},
               "rankings": summarise(records, list(records[0]["gold_rank"]) if records else [])}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("check_rank_dry.json" if args.dry else "check_rank.json")
    path.write_text(json.dumps({**summary, "records": records}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
