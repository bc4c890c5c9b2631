"""Question-aware word scores: does the answer string survive compression as ``surprisal_weight`` varies?
Compression only, no target LLM; paired per item (same prompts, same scorer, one weight after another).

    python benchmarks/check_surprisal_weight.py [--n 30] [--ratios 0.25,0.1] [--weights 0,0.5]

A word scores its contrastive surprisal (without the question minus with it) plus ``surprisal_weight`` x its
surprisal given the question; 0 is LongLLMLingua's contrast alone. bench_rag's data substitutes the answers, so the
answer is a name the scorer does not expect after the question: pure contrast can rank it below the question's own
words. Prompts as in check_name_runs (20 passages, gold at start / middle / end in turn, seed 0, target tokens by
Qwen2.5-Coder's tokenizer). Writes results/check_surprisal_weight.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_rag as R  # noqa: E402
from check_name_runs import save, target_count  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    from lingua_compress import Compressor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--ratios", default="0.25,0.1")
    ap.add_argument("--weights", default="0,0.5")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "check_surprisal_weight.json")
    args = ap.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    items, rows = R.load_items(R.DEFAULT_DATA, args.n, 0)
    ours, count = R.Ours("sort", 0.3), target_count()
    base = ours.compressor
    arms = {w: Compressor(scorer=base.scorer, config=replace(base.config, surprisal_weight=w)) for w in weights}
    records = []
    for idx, item in enumerate(items):
        docs, _ = R.documents(item, R.distractors(item, rows, 20, 0), 20, R.POSITIONS[idx % len(R.POSITIONS)])
        for ratio in (float(r) for r in args.ratios.split(",")):
            rec: dict = {"item": item["id"], "ratio": ratio}
            for w, compressor in arms.items():
                ours.compressor = compressor
                t0 = time.perf_counter()
                text = ours.qa(docs, item["question"], ratio, count)
                rec[str(w)] = {"survived": R.contains(item["answer"], text), "s": round(time.perf_counter() - t0, 2)}
            records.append(rec)
            print(json.dumps(rec), file=sys.stderr)
    summary = {}
    for ratio in sorted({r["ratio"] for r in records}, reverse=True):
        rs = [r for r in records if r["ratio"] == ratio]
        summary[str(ratio)] = {"n": len(rs), "survived": {str(w): sum(r[str(w)]["survived"] for r in rs)
                                                          for w in weights}}
        if len(weights) == 2:
            a, b = (str(w) for w in weights)
            summary[str(ratio)].update({f"only_{a}": sum(r[a]["survived"] and not r[b]["survived"] for r in rs),
                                        f"only_{b}": sum(r[b]["survived"] and not r[a]["survived"] for r in rs)})
    return save(args.out, summary, records)


if __name__ == "__main__":
    main()
