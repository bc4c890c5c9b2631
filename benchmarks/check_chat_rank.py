"""Which older chat message does the next reply copy from, and can the last user turn's question NLL find it?
Ranking only, no compression and no target LLM; per conversation.

    python benchmarks/check_chat_rank.py [--seed 1] [--n 100]
    python benchmarks/check_chat_rank.py --dry     # wiring check: two built-in conversations, the scorer's tokens

bench_chat's conversations (the history before the last assistant reply, cut to its context cap; default: the
tuning set, seed 1, none of the evaluation's 100). For every message before the last user turn: how many of the
reply's word 4-grams (its first 1,200 characters, as chat_copy counts them) it holds, and its relevance as
LongLLMLingua ranks documents: the mean NLL of the last user turn written after it, by the library's scorer (plain,
and with LongLLMLingua's hint), and the share of the last turn's words of 4+ letters it contains. Each picker names
one message: the newest, the newest assistant reply, the most relevant by each score, the most relevant assistant
reply by question NLL. Over conversations whose reply copies at least ``--min-copied`` 4-grams: how often the pick
is the message the reply copies most from, and the share of that message's copied 4-grams the pick holds (does a
question-aware budget beat compress_messages' recency ramp at keeping what the reply reuses?). Writes
results/check_chat_rank.json (``--dry``: check_chat_rank_dry.json).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from chat_copy import grams  # noqa: E402
from quality_report import machine  # noqa: E402

PICKERS = ("newest", "newest-assistant", "question-nll", "question-nll-hint", "lexical", "question-nll-assistant")
_WORD = re.compile(r"\w+")
_LETTER = ("Dear hiring manager, I am writing to apply for the senior analyst role at your firm. I have led "
           "pricing studies for six years and built the forecasting models my team still uses every week.")
DRY = [
    {"id": "dry-rewrite", "history": [
        {"role": "user", "content": "Write a short cover letter for a senior analyst role."},
        {"role": "assistant", "content": _LETTER},
        {"role": "user", "content": "Rewrite it to mention my Python skills."}],
     "reply": _LETTER.replace("models", "Python models")},
    {"id": "dry-older", "history": [
        {"role": "user", "content": "List three fruits rich in vitamin C."},
        {"role": "assistant", "content": "Oranges, kiwis and strawberries are all rich in vitamin C, and guavas too."},
        {"role": "user", "content": "And three vegetables?"},
        {"role": "assistant", "content": "Peppers, broccoli and kale are good vegetable sources."},
        {"role": "user", "content": "Put the fruits in a numbered list."}],
     "reply": "1. Oranges, kiwis and strawberries are all rich in vitamin C\n2. Guavas too."},
]


def lexical(last: str, text: str) -> float:
    """Share of the last turn's words of 4+ letters that ``text`` contains (lower-cased)."""
    words = {w for w in _WORD.findall(last.lower()) if len(w) > 3}
    return len(words & set(_WORD.findall(text.lower()))) / (1 + len(words))


def picks(roles: list[str], scores: dict[str, list[float]]) -> dict[str, int]:
    """The message each picker names (indices into the older messages; the first on ties)."""
    n = len(roles)
    assistants = [i for i, r in enumerate(roles) if r == "assistant"]
    q_assistant = [s if r == "assistant" else -np.inf for s, r in zip(scores["question-nll"], roles)]
    return {"newest": n - 1, "newest-assistant": assistants[-1] if assistants else n - 1,
            "question-nll": int(np.argmax(scores["question-nll"])),
            "question-nll-hint": int(np.argmax(scores["question-nll-hint"])),
            "lexical": int(np.argmax(scores["lexical"])),
            "question-nll-assistant": int(np.argmax(q_assistant)) if assistants else n - 1}


def record(scorer, item: dict, chunk: int) -> dict:
    """Per older message: copied 4-grams and the three relevance scores; and each picker's message."""
    from lingua_compress.question import RANK_HINT, rank_documents, text_tokens

    older, last = item["history"][:-1], item["history"][-1]["content"]
    reply = grams(item["reply"][:1200])
    docs = [text_tokens(scorer, m["content"]) for m in older]
    scores = {}
    for name, suffix in (("question-nll", "\n\n" + last), ("question-nll-hint", "\n\n" + last + RANK_HINT)):
        scores[name] = rank_documents(scorer, docs, text_tokens(scorer, suffix), chunk)[0].round(4).tolist()
    scores["lexical"] = [round(lexical(last, m["content"]), 4) for m in older]
    roles = [m["role"] for m in older]
    return {"id": item["id"], "roles": roles, "copied": [len(reply & grams(m["content"])) for m in older],
            "reply_grams": len(reply), **scores, "picks": picks(roles, scores)}


def summarise(records: list[dict], min_copied: int) -> dict:
    """Per picker: how often it names the most-copied message, and the share of those 4-grams its pick holds."""
    used = [r for r in records if sum(r["copied"]) >= min_copied]
    best = sum(max(r["copied"]) for r in used)
    out: dict = {"conversations": len(records), "judged": len(used), "min_copied": min_copied}
    for name in PICKERS:
        got = [r["copied"][r["picks"][name]] for r in used]
        out[name] = {"picks_top_source": sum(g == max(r["copied"]) for g, r in zip(got, used)),
                     "copied_in_pick": round(sum(got) / best, 3) if best else None}
    return out


def load(args: argparse.Namespace) -> list[dict]:
    if args.dry:
        return DRY
    import bench_chat
    from check_name_runs import target_count

    chat = bench_chat.parse_args(["--seed", str(args.seed), "--n", str(args.n)]
                                 + (["--disjoint-from", "0"] if args.seed != 0 else []))
    return bench_chat.load_items(chat, target_count())[0]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="bench_chat's conversation order (1: the tuning set)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--min-copied", type=int, default=10, help="judge conversations copying at least this many")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dry", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    out = args.out or HERE / "results" / ("check_chat_rank_dry.json" if args.dry else "check_chat_rank.json")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from lingua_compress import Compressor

    scorer = Compressor().scorer
    records = []
    for item in load(args):
        records.append(record(scorer, item, 512))
        print(json.dumps({k: records[-1][k] for k in ("id", "copied", "picks")}), file=sys.stderr)
    summary = summarise(records, 1 if args.dry else args.min_copied)
    out.write_text(json.dumps({"summary": summary, "machine": machine(), "records": records}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
