"""Where bench_chat's retention is lost: replies that copy their history, by how much they copy.

    python benchmarks/chat_copy.py [--work results/quality_work/chat-qwen1.5b-...] [--methods ours,truncate]

For each conversation with full, no-history and every ``--methods`` result at ``--ratio``: the share of the reply's
word 4-grams (its first ``--reply-chars`` characters, about the 256 tokens bench_chat scores) that occur in the
history. Conversations are put in bands of that share; per band: how many, their share of the full history's
worth (NLL no-history - NLL full, the weight pooled retention gives them), each method's retention within the band
and the points of overall retention it loses there. Reads the benchmark's cached results only (no model). Writes
chat_copy.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_quality import Store  # noqa: E402
from quality_report import emit  # noqa: E402

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "sharegpt_400.jsonl"
BANDS = ((0.0, 0.1), (0.1, 0.3), (0.3, 0.6), (0.6, 1.0))
_WORD = re.compile(r"\w+")


def grams(text: str, n: int = 4) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copy_share(row: dict, reply_chars: int) -> float | None:
    """Share of the last assistant turn's 4-grams found in the turns before it (as bench_chat splits them, before
    any --max-context cut); 0 for a reply too short to have one."""
    turns = [m["value"] for m in row["conversations"]]
    last = max((i for i, m in enumerate(row["conversations"]) if m["from"] == "gpt"), default=-1)
    if last < 1:
        return None
    reply = grams(turns[last].strip()[:reply_chars])
    history = set().union(*(grams(t) for t in turns[:last]))
    return len(reply & history) / len(reply) if reply else 0.0


def bands(shares: dict[str, float], evals: Store, methods: list[str], ratio: float) -> list[dict]:
    worth = {i: evals.get("no-history", 0.0, i)["nll"] - evals.get("full", 1.0, i)["nll"] for i in shares}
    total = sum(worth.values())
    rows = []
    for lo, hi in BANDS:
        ids = [i for i, s in shares.items() if lo <= s < hi or (hi == 1.0 and s == 1.0)]
        band_worth = sum(worth[i] for i in ids)
        row = {"copy_share": [lo, hi], "n": len(ids), "share_of_worth": round(band_worth / total, 3) if total else None}
        for m in methods:
            lost = sum(evals.get(m, ratio, i)["nll"] - evals.get("full", 1.0, i)["nll"] for i in ids)
            row[m] = {"retention_in_band": round(1 - lost / band_worth, 3) if band_worth else None,
                      "points_lost_overall": round(100 * lost / total, 1) if total else None}
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="bench_chat's work folder (default: the only chat-* one)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--methods", default="ours,truncate")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--reply-chars", type=int, default=1200)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    work = args.work or next(iter(sorted((HERE / "results" / "quality_work").glob("chat-*"))), None)
    if work is None:
        ap.error("no bench_chat work folder: give --work")
    methods = [m for m in args.methods.split(",") if m]
    evals = Store(work / "evals.jsonl", ("method", "ratio", "id"))  # bench_chat's: the latest record of each
    data = {r["id"]: r for r in map(json.loads, args.data.open()) if r.get("id")}
    need = [("full", 1.0), ("no-history", 0.0)] + [(m, args.ratio) for m in methods]
    ids = sorted({i for _, _, i in evals.rows if i in data and all(evals.get(m, r, i) for m, r in need)})
    shares = {i: s for i in ids if (s := copy_share(data[i], args.reply_chars)) is not None}
    report = {"work": work.name, "ratio": args.ratio, "conversations": len(shares),
              "bands": bands(shares, evals, methods, args.ratio)}
    emit(report, args.out, "chat_copy.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
