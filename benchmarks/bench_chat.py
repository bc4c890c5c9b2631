"""Multi-turn chat: how much of the history's help with the real next reply survives compression?

    python benchmarks/bench_chat.py [--n 100] [--methods ours,truncate,llmlingua] [--ratios 0.5,0.3]
    python benchmarks/bench_chat.py --dry            # wiring check on the embedded model: no Qwen, no llmlingua
    python benchmarks/bench_chat.py --report-only

ShareGPT conversations (../shared/data/sharegpt_400.jsonl), in a seeded order. Per conversation the last assistant
turn is the reply; the messages before it (human -> user, gpt -> assistant) are the history, which must end with a
user turn. History and reply are rendered with Qwen's ChatML template (its default system prompt first) and the
reply's summed NLL under the target is taken given
  * full: the whole history (retention 1);
  * no-history: only the last user turn (retention 0; without it the reply answers nothing, so it is kept);
  * each method at each ratio of the history's content tokens (target tokenizer), the last user turn kept:
    ours (compress_messages), truncate (oldest tokens dropped), llmlingua (0.2.2, same Gemma weights).
Retention = (NLL_no-history - NLL_method) / (NLL_no-history - NLL_full), pooled over conversations, with a 95 %
bootstrap interval, and paired differences ours - baseline. Long conversations are cut: the oldest whole messages
go until system + history + reply fit --max-context target tokens; the reply is scored on its first --max-reply
tokens. Per-conversation results are appended to a work folder, so a killed run continues.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_quality import Store  # noqa: E402
from chat_carry import backfill, carry, out_digest  # noqa: E402
from chat_methods import (CONTINUE, FORMAT, Count, Messages, content_tokens, fingerprint,  # noqa: E402
                          make_method, render)
from quality_report import host_counts, hosts_line, machine  # noqa: E402
from quality_stats import retention, retention_diff  # noqa: E402

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "sharegpt_400.jsonl"
ROLES = {"human": "user", "gpt": "assistant"}
# Qwen2.5's chat template: this system turn is what it inserts when the messages bring none.
SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
ASSISTANT_OPEN = "<|im_start|>assistant\n"
METHODS = ("ours", "truncate", "llmlingua")
# Ours with other MessagesConfig settings: the budget shared evenly (no recency ramp, no short turns kept), the
# ramp at recency 0.5 and 0.1 (the default is 0.25), no elision of the oldest turns and more of it (elide_below 0
# and 0.3; the default is 0.1), a prototype that keeps the end of the newest reply verbatim (ours-tail), and the
# compressor's coarse stage (whole lines and sentences) spending the whole budget, no token thinning (ours-coarse).
ABLATIONS = ("ours-flat", "ours-half", "ours-steeper", "ours-noelide", "ours-elide-more", "ours-tail",
             "ours-coarse")
BASELINES = (("full", 1.0), ("no-history", 0.0))
COMPARE = ("truncate", "llmlingua", *ABLATIONS)
FULL_RUN = 100  # conversations a full run scores: the default --n, and what --disjoint-from keeps apart
NO_HISTORY_NOTE = ("no-history (retention 0) keeps the last user turn: without it the reply answers nothing; "
                   "every method keeps it too and compresses the turns before it")


# ---------------------------------------------------------------- conversations


def make_item(row: dict, count: Count, args: argparse.Namespace) -> tuple[dict | None, str]:
    """The reply, and the history cut to fit the context cap; or None and why the conversation is skipped."""
    if any(m.get("from") not in ROLES for m in row["conversations"]):
        return None, "unknown role"
    msgs = [{"role": ROLES[m["from"]], "content": m["value"].strip()} for m in row["conversations"]]
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=-1)
    if last < 1 or msgs[last - 1]["role"] != "user" or not msgs[last]["content"] or not msgs[last - 1]["content"]:
        return None, "no user turn right before the last reply"
    reply_tokens = min(count(msgs[last]["content"]), args.max_reply)
    history = [m for m in msgs[:last] if m["content"]]  # empty turns carry nothing to score or compress
    dropped = 0
    while len(history) > 1 and count(SYSTEM + render(history) + ASSISTANT_OPEN) + reply_tokens > args.max_context:
        history.pop(0)  # the oldest whole message goes first, as a chat client's context window would
        dropped += 1
    if count(SYSTEM + render(history) + ASSISTANT_OPEN) + reply_tokens > args.max_context:
        return None, "last user turn and reply alone exceed --max-context"
    if content_tokens(history[:-1], count) < args.min_history:
        return None, "less than --min-history tokens before the last user turn"
    item = {"id": row["id"], "history": history, "reply": msgs[last]["content"], "max_reply": args.max_reply,
            "dropped_messages": dropped}
    item["digest"] = hashlib.sha1(json.dumps([history, item["reply"], args.max_reply]).encode()).hexdigest()[:12]
    return item, ""


def load_items(args: argparse.Namespace, count: Count) -> tuple[list[dict], Counter]:
    """The first --n usable conversations in a seeded order, and how many were skipped for which reason."""
    rows = [json.loads(line) for line in args.data.open() if line.strip()]
    rows.sort(key=lambda r: r["id"])
    apart: set[str] = set()
    if args.disjoint_from is not None:  # a tuning set: none of the conversations that seed's full run scores
        other = argparse.Namespace(**{**vars(args), "seed": args.disjoint_from, "n": FULL_RUN, "disjoint_from": None,
                                        "continuations": False})
        apart = {it["id"] for it in load_items(other, count)[0]}
    random.Random(args.seed).shuffle(rows)
    items, skipped = [], Counter()
    for row in rows:
        if row["id"] in apart:
            skipped["in the --disjoint-from seed's 100"] += 1
            continue
        item, why = make_item(row, count, args)
        if item is not None and args.continuations and not CONTINUE.match(item["history"][-1]["content"]):
            item, why = None, "last user turn not a request to continue (--continuations)"
        if item is None:
            skipped[why] += 1
            continue
        items.append(item)
        if len(items) == args.n:
            break
    return items, skipped


# ---------------------------------------------------------------- the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="JSONL: id, conversations [{from, value}]")
    ap.add_argument("--target", default="qwen1.5b", help="qwen1.5b, qwen0.5b or embedded")
    ap.add_argument("--n", type=int, default=None, help="conversations (default 100; 3 with --dry)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"of {METHODS + ABLATIONS}")
    ap.add_argument("--ratios", default=None, help="ratios of the history's content tokens (default 0.5,0.3; 0.5 dry)")
    ap.add_argument("--seed", type=int, default=0, help="which conversations: their order is shuffled with it")
    ap.add_argument("--disjoint-from", type=int, default=None, metavar="SEED",
                    help="skip the 100 conversations that --seed SEED scores: tune settings on conversations that "
                         "the evaluation never sees")
    ap.add_argument("--continuations", action="store_true",
                    help="only conversations whose last user turn asks to continue the previous reply (a tuning "
                         "subset for rules about such turns)")
    ap.add_argument("--max-context", type=int, default=None,
                    help="target tokens of system + history + reply; older messages are cut (default 3000; 300 dry)")
    ap.add_argument("--max-reply", type=int, default=None, help="reply tokens scored (default 256; 24 with --dry)")
    ap.add_argument("--min-history", type=int, default=None,
                    help="skip conversations with fewer tokens before the last user turn (default 64; 24 dry)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dry", action="store_true", help="embedded model as target, no llmlingua: checks the wiring")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--backfill", action="store_true", help="first give current results made before digests were "
                    "kept their compressed history's digest (compression only; see chat_carry)")
    ap.add_argument("--work", type=Path, default=None, help="per-conversation results (dry default: a temp folder)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.dry:
        args.target = "embedded"
        args.methods = ",".join(m for m in args.methods.split(",") if m != "llmlingua")
    args.n = args.n if args.n is not None else (3 if args.dry else FULL_RUN)
    args.max_context = args.max_context or (300 if args.dry else 3000)
    args.max_reply = args.max_reply or (24 if args.dry else 256)
    args.min_history = args.min_history if args.min_history is not None else (24 if args.dry else 64)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.ratios = [float(r) for r in (args.ratios or ("0.5" if args.dry else "0.5,0.3")).split(",") if r]
    if bad := [m for m in args.methods if m not in METHODS + ABLATIONS]:
        ap.error(f"unknown methods {bad}; choose from {METHODS + ABLATIONS}")
    if any(not 0 < r <= 1 for r in args.ratios):
        ap.error("ratios must be in (0, 1]")
    if not 0 < args.max_context <= 4000:  # LlamaTarget's context is 4096 tokens
        ap.error("--max-context must be in (0, 4000]")
    args.stem = "bench_chat_dry" if args.dry else "bench_chat" if args.seed == 0 else f"bench_chat_seed{args.seed}"
    return args


def conditions(args: argparse.Namespace) -> list[tuple[str, float]]:
    return [*BASELINES, *((m, r) for m in args.methods for r in args.ratios)]


def work_dir(args: argparse.Namespace) -> Path:
    if args.work:
        return args.work
    if args.dry:
        return Path(tempfile.mkdtemp(prefix="bench_chat_dry-"))
    # Items are checked by digest and methods by fingerprint, so one folder per target and format is enough.
    digest = hashlib.sha1(f"{args.target}-{FORMAT}-{SYSTEM}".encode()).hexdigest()[:10]
    return HERE / "results" / "quality_work" / f"chat-{args.target}-{digest}"


def current(store: Store, items: list[dict], conds: list[tuple[str, float]]) -> dict[tuple, dict]:
    """Results made from today's item text by today's method code; anything else is redone, never counted."""
    fps = {m: fingerprint(m) for m in dict.fromkeys(m for m, _ in conds)}
    digests = {it["id"]: it["digest"] for it in items}
    return {k: row for k, row in store.rows.items()
            if row.get("fp") == fps.get(row["method"]) and row.get("digest") == digests.get(row["id"])}


def reply_nll(target, context: list[int], reply: list[int]) -> float:
    """Summed NLL of ``reply`` after the target's prefix and ``context``.

    llama.cpp answers through the quality harness's ``gold_nll``. The embedded (dry) target would there compute its
    262k-vocabulary head over every context token, which costs more than the model itself on chat-length contexts,
    so it is asked for the reply's rows only (``logits_to_keep``); the result is the same number.
    """
    from quality_targets import TorchTarget, _nll_rows

    if not isinstance(target, TorchTarget):
        return target.gold_nll(context, reply)
    torch = target.torch
    with torch.inference_mode():
        out = target.lm(input_ids=torch.tensor([target.prefix + context + reply]), logits_to_keep=len(reply) + 1)
    return _nll_rows(out.logits[0, :-1].float().numpy(), reply)  # the first kept row predicts reply[0]


def score(target, item: dict, messages: Messages, count: Count) -> dict:
    """The reply's summed NLL given these history messages, and what the history costs."""
    reply = target.tokenize(item["reply"])[:item["max_reply"]]
    context = target.tokenize(render(messages) + ASSISTANT_OPEN)
    t = time.perf_counter()
    nll = reply_nll(target, context, reply)
    orig = content_tokens(item["history"], count)
    kept = content_tokens(messages, count)
    return {"nll": nll, "reply_tokens": len(reply), "context_tokens": len(context), "orig_tokens": orig,
            "kept_tokens": kept, "achieved": round(kept / orig, 4) if orig else 1.0, "messages": len(messages),
            "nll_s": round(time.perf_counter() - t, 3)}


def evaluate(args, target, items: list[dict], conds, store: Store, done: dict, count: Count) -> None:
    from tqdm import tqdm

    from lingua_compress.models import cache_dir, cpu_bf16_feature

    host = cpu_bf16_feature()  # decides the scorer's dtype (auto: bf16 with the feature, else fp32): kept per row
    fns: dict[str, Any] = {}
    fps = {m: fingerprint(m) for m in dict.fromkeys(m for m, _ in conds)}
    bar = tqdm(total=len(items) * len(conds), desc="chat", file=sys.stderr, smoothing=0.05)
    for item in items:  # every condition of a conversation before the next: a partial run is still paired
        for method, ratio in conds:
            if (method, ratio, item["id"]) in done:
                bar.update(1)
                continue
            if method not in fns:  # loaded on first need: a resumed run skips models it no longer needs
                fns[method] = make_method(method, cache_dir() / "bench_quality")
            t = time.perf_counter()
            messages = fns[method](item["history"], ratio, count)
            compress_s = round(time.perf_counter() - t, 3)
            out = out_digest(messages)
            row = carry(store.get(method, ratio, item["id"]), item, out, fps[method], compress_s) or {
                "method": method, "ratio": ratio, "id": item["id"], "fp": fps[method], "digest": item["digest"],
                "compress_s": compress_s, "cpu_bf16": host, "out": out, **score(target, item, messages, count)}
            store.add(row)
            done[(method, ratio, item["id"])] = row
            bar.update(1)
    bar.close()


def run(args: argparse.Namespace) -> dict:
    from lingua_compress.models import cache_dir
    from quality_targets import load_target

    started = time.perf_counter()
    # The target's tokenizer decides which conversations fit, so it is loaded even for --report-only.
    target = load_target(args.target, cache_dir() / "targets", args.threads)
    count = functools.lru_cache(maxsize=200_000)(lambda text: len(target.tokenize(text)))
    items, skipped = load_items(args, count)
    conds = conditions(args)
    work = work_dir(args)
    work.mkdir(parents=True, exist_ok=True)
    store = Store(work / "evals.jsonl", ("method", "ratio", "id"))
    done = current(store, items, conds)
    if args.backfill:
        filled = backfill(store, items, done, lambda m: make_method(m, cache_dir() / "bench_quality"), count)
        print(f"backfilled {filled} digests", file=sys.stderr)
    if not args.report_only:
        target.set_prefix(target.tokenize(SYSTEM))  # shared by every condition: computed once
        evaluate(args, target, items, conds, store, done, count)
    meta = {"target": args.target, "data": str(args.data), "seed": args.seed, "disjoint_from": args.disjoint_from,
            "continuations_only": args.continuations, "conversations_asked": args.n,
            "skipped": dict(skipped), "max_context": args.max_context, "max_reply": args.max_reply,
            "min_history": args.min_history, "cut_conversations": sum(it["dropped_messages"] > 0 for it in items),
            "no_history": NO_HISTORY_NOTE, "format": FORMAT, "work": str(work), "wall_s": round(time.perf_counter()
            - started, 1), "threads": args.threads or os.cpu_count(), "load_average": os.getloadavg(),
            "machine": machine()}
    return report(args, conds, items, done, meta)


# ---------------------------------------------------------------- report


def _rows(conds, items, done) -> tuple[list[dict], list[str]]:
    """One row per condition, all on the conversations every condition with results has finished (paired).

    A condition with no current result at all (a method not run yet, or one whose code changed since) is shown
    empty rather than emptying the whole table.
    """
    active = [c for c in conds if c in BASELINES or any((*c, it["id"]) in done for it in items)]
    ids = [it["id"] for it in items if all((*c, it["id"]) in done for c in active)]
    nll = {c: [done[(*c, i)]["nll"] for i in ids] for c in active}
    zero, full = nll[BASELINES[1]], nll[BASELINES[0]]
    rows = []
    for c in conds:
        row: dict[str, Any] = {"method": c[0], "ratio": c[1], "n": len(ids) if c in active else 0}
        recs = [done[(*c, i)] for i in ids] if c in active else []
        if recs:
            row.update(retention(zero, full, nll[c]))
            pooled = sum(r["kept_tokens"] for r in recs) / sum(r["orig_tokens"] for r in recs)
            row.update(achieved=round(sum(r["achieved"] for r in recs) / len(recs), 4),
                       achieved_pooled=round(pooled, 4),
                       compress_s=round(sum(r["compress_s"] for r in recs) / len(recs), 3),
                       nll_s=round(sum(r["nll_s"] for r in recs) / len(recs), 3), hosts=host_counts(recs))
        if c[0] == "ours" and recs:
            row["vs"] = {o: retention_diff(zero, full, nll[c], nll[(o, c[1])]) for o in COMPARE if (o, c[1]) in nll}
            # A ceiling, not a method: per conversation the better of ours and the other. A target above it is out
            # of reach of both, and of any rule that picks one of them per conversation.
            row["best_of"] = {o: retention(zero, full, [min(a, b) for a, b in zip(nll[c], nll[(o, c[1])])])
                              for o in COMPARE if (o, c[1]) in nll and o not in ABLATIONS}
        rows.append(row)
    return rows, ids


def per_conversation(conds, ids: list[str], done) -> list[dict]:
    """Each conversation's own numbers: what the history is worth there (the pooled retention weighs
    conversations by it) and every condition's retention and achieved ratio, to see where a method loses."""
    out = []
    for i in ids:
        zero, full = done[(*BASELINES[1], i)]["nll"], done[(*BASELINES[0], i)]["nll"]
        gain = zero - full
        row: dict[str, Any] = {"id": i, "history_gain_nats": round(gain, 2)}
        for c in conds:
            if c not in BASELINES and (*c, i) in done:
                r = done[(*c, i)]
                row[f"{c[0]}@{c[1]}"] = {"retention": round((zero - r["nll"]) / gain, 3) if gain else None,
                                         "achieved": r["achieved"]}
        out.append(row)
    return out


def verdict(rows: list[dict], ratio: float = 0.5) -> dict[str, Any]:
    """The issue's target at 0.5: retention >= 0.9 and not below either baseline (paired interval reported)."""
    ours = next((r for r in rows if r["method"] == "ours" and r["ratio"] == ratio and "retention" in r), None)
    if ours is None:
        return {}
    out: dict[str, Any] = {"ratio": ratio, "n": ours["n"], "retention": ours["retention"],
                           "retention_at_least_0.9": ours["retention"] >= 0.9}
    for other, d in ours.get("vs", {}).items():
        if other in ABLATIONS:
            continue
        out[f"vs_{other}"] = {"diff": d["diff"], "ci": [d["ci_low"], d["ci_high"]], "not_below": d["diff"] >= 0,
                              "above_with_95": d["ci_low"] > 0}
    return out


def report(args, conds, items, done, meta: dict) -> dict:
    rows, ids = _rows(conds, items, done)
    meta.update(paired_conversations=len(ids), verdict=verdict(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    per = per_conversation(conds, ids, done)
    (args.out / f"{args.stem}.json").write_text(json.dumps({"meta": meta, "rows": rows, "per_conversation": per},
                                                           indent=1))
    (args.out / f"{args.stem}.md").write_text(markdown(rows, meta))
    summary = {"meta": meta, "rows": [{k: r.get(k) for k in ("method", "ratio", "n", "retention", "ci_low",
                                                              "ci_high", "achieved", "compress_s")} for r in rows]}
    print(json.dumps(summary, indent=1))
    return summary


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown(rows: list[dict], meta: dict) -> str:
    skipped = ", ".join(f"{v} {k}" for k, v in meta["skipped"].items()) or "none"
    apart = "" if meta.get("disjoint_from") is None else f", none of seed {meta['disjoint_from']}'s {FULL_RUN}"
    apart += "; only those whose last user turn asks to continue" if meta.get("continuations_only") else ""
    lines = [f"Target: {meta['target']}; reply likelihood retention on {meta['paired_conversations']} ShareGPT "
             f"conversations (seed {meta['seed']}{apart}; paired: every condition on the same ones). The reply is "
             f"the last assistant turn, scored on its first {meta['max_reply']} tokens; histories were cut to "
             f"{meta['max_context']} target tokens in {meta['cut_conversations']} conversations (oldest messages "
             f"first). Skipped: {skipped}. "
             f"{NO_HISTORY_NOTE[0].upper() + NO_HISTORY_NOTE[1:]}.", "",
             "| method | ratio asked | achieved (content tokens, mean / pooled) | retention % [95 % CI] | compress s "
             "| NLL s |", "|---|---|---|---|---|---|"]
    for r in rows:
        ret = "–" if "retention" not in r else (
            f"{_pct(r['retention'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]")
        achieved = f"{r.get('achieved', '–')} / {r.get('achieved_pooled', '–')}"
        lines.append(f"| {r['method']} | {r['ratio']} | {achieved} | {ret} | {r.get('compress_s', '–')} | "
                     f"{r.get('nll_s', '–')} |")
    hosts = hosts_line(rows)
    lines += ["", hosts] if hosts else []
    lines += ["", "Paired differences in retention, ours − baseline, points [95 % bootstrap interval over "
              "conversations]:", "", "| ratio | vs | Δ retention | n |", "|---|---|---|---|"]
    for r in rows:
        for other, d in r.get("vs", {}).items():
            lines.append(f"| {r['ratio']} | {other} | {100 * d['diff']:+.1f} [{100 * d['ci_low']:+.1f}, "
                         f"{100 * d['ci_high']:+.1f}] | {d['n']} |")
    best = [f"{o} at {r['ratio']}: {_pct(d['retention'])} [{_pct(d['ci_low'])}, {_pct(d['ci_high'])}]"
            for r in rows for o, d in r.get("best_of", {}).items()]
    lines += ["", "Ceiling, not a method: retention % of the better of ours and the baseline in each conversation, "
              "pooled: " + "; ".join(best) + "."] if best else []
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
