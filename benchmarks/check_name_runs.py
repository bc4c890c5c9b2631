"""Names kept whole (question-aware runs): does the answer string survive compression, with and without
``question.cohere_names``? Compression only, no target LLM; paired per item.

    python benchmarks/check_name_runs.py [--n 30] [--ratios 0.25,0.1]

The bench_rag prompts (20 passages, gold at start / middle / end in turn, seed 0) and its ``ours-qa`` method (target
tokens counted by Qwen2.5-Coder's tokenizer, vocabulary only). Writes results/check_name_runs.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_rag as R  # noqa: E402
from quality_report import machine  # noqa: E402


def target_count():
    from llama_cpp import Llama

    from lingua_compress.models import cache_dir
    from quality_targets import TARGETS, assemble

    tok = Llama(str(assemble(TARGETS["qwen1.5b"], cache_dir() / "targets")), vocab_only=True, verbose=False)
    return lambda text: len(tok.tokenize(text.encode(), add_bos=False, special=False))


def save(path: Path, summary: dict, records: list[dict]) -> dict:
    """Write the summary, the machine and every record; print the summary."""
    out = {"summary": summary, "machine": machine(), "records": records}
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return out


def main(argv: list[str] | None = None) -> dict:
    from lingua_compress import question as Q

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--ratios", default="0.25,0.1")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "check_name_runs.json")
    args = ap.parse_args(argv)
    items, rows = R.load_items(R.DEFAULT_DATA, args.n, 0)
    ours, count, cohere = R.Ours("sort", 0.3), target_count(), Q.cohere_names
    records = []
    for idx, item in enumerate(items):
        docs, _ = R.documents(item, R.distractors(item, rows, 20, 0), 20, R.POSITIONS[idx % len(R.POSITIONS)])
        for ratio in (float(r) for r in args.ratios.split(",")):
            rec = {"item": item["id"], "ratio": ratio}
            for name, fn in (("whole", cohere), ("off", lambda seg, rank: rank)):
                Q.cohere_names = fn
                t0 = time.perf_counter()
                text = ours.qa(docs, item["question"], ratio, count)
                rec[name] = {"survived": R.contains(item["answer"], text), "s": round(time.perf_counter() - t0, 2)}
            Q.cohere_names = cohere
            records.append(rec)
            print(json.dumps(rec), file=sys.stderr)
    summary = {}
    for ratio in sorted({r["ratio"] for r in records}, reverse=True):
        rs = [r for r in records if r["ratio"] == ratio]
        summary[str(ratio)] = {"n": len(rs), **{k: sum(r[k]["survived"] for r in rs) for k in ("whole", "off")},
                               "only_whole": sum(r["whole"]["survived"] and not r["off"]["survived"] for r in rs),
                               "only_off": sum(r["off"]["survived"] and not r["whole"]["survived"] for r in rs)}
    return save(args.out, summary, records)


if __name__ == "__main__":
    main()
