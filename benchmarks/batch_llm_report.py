"""bench_batch_llm's report: per condition accuracy (Wilson 95 % interval), paired differences (bootstrap interval,
exact McNemar p) against K = 1 with the same demonstrations and against the condition one change away, statuses and
id accounting against the gold ids, tokens, calls and seconds per question; JSON, markdown and a plot."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections import Counter
from pathlib import Path

from quality_stats import accuracy_diff, wilson


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def condition_row(cond, ids: list[str], store, questions: dict[str, str], block: int) -> dict:
    from lingua_compress.batch import STATUSES

    recs = {i: r for i in ids if (r := store.get(cond.name, i)) is not None}
    have = list(recs.values())
    correct = sum(bool(r["correct"]) for r in have)
    lo, hi = wilson(correct, len(have))
    blocks_seen = {r["block"] for r in have}
    lost = [i for k, i in enumerate(ids) if k // block in blocks_seen and i not in recs]
    statuses = Counter(r["status"] for r in have)
    row = {
        "condition": cond.name, "k": cond.k, "style": cond.style, "group": cond.group,
        "demos": "full" if cond.ratio is None else cond.ratio, "drop_blocks": cond.blocks, "votes": cond.votes,
        "n": len(have),
        "correct": correct, "accuracy": round(correct / len(have), 4) if have else None,
        "ci_low": round(lo, 4) if have else None, "ci_high": round(hi, 4) if have else None,
        "lenient_accuracy": round(sum(bool(r.get("lenient")) for r in have) / len(have), 4) if have else None,
        "statuses": {s: statuses.get(s, 0) for s in STATUSES},
        "ids": {"expected": len(ids), "recorded": len(have), "pending": len(ids) - len(have) - len(lost),
                "lost": len(lost), "unknown_status": sum(statuses[s] for s in statuses if s not in STATUSES),
                "misattributed": sum(r["question_sha"] != _sha(questions[i]) for i, r in recs.items())},
        "prompt_tokens_per_q": _mean([r["prompt_tokens"] for r in have]),
        "completion_tokens_per_q": _mean([r["completion_tokens"] for r in have]),
        "calls_per_q": _mean([r["calls"] for r in have]),
        "seconds_per_q": _mean([r["seconds"] for r in have]),
        "usage_source": sorted({r["usage_source"] for r in have}),
    }
    if cond.votes > 1:
        row["rounds_per_q"] = _mean([len(r["votes"] or []) for r in have])
    return row


def neighbours(cond, names: set[str]) -> list[tuple[object, str]]:
    """The conditions ``cond`` is compared with: K = 1 with the same demonstrations, and the condition that
    differs by one setting (no voting, no Auto-Demo, uncompressed demonstrations, sequential grouping)."""
    from dataclasses import replace

    pairs = [(cond.baseline, "K=1, same demonstrations")] if cond.k > 1 or cond.votes > 1 else []
    if cond.votes > 1:
        pairs.append((replace(cond, votes=1), "same without voting"))
    if cond.style == "auto_demo":
        pairs.append((replace(cond, style="indexed"), "plain indexed batches"))
    if cond.blocks:
        pairs.append((replace(cond, blocks=False), "compressed keeping every block"))
    if cond.ratio is not None:
        pairs.append((replace(cond, ratio=None, blocks=False), "uncompressed demonstrations"))
    if cond.group != "sequential":
        pairs.append((replace(cond, group="sequential"), "sequential grouping"))
    return [(o, why) for o, why in pairs if o.name in names and o.name != cond.name]


def paired(cond, other, why: str, ids: list[str], store) -> dict:
    both = [i for i in ids if store.get(cond.name, i) and store.get(other.name, i)]
    a = [bool(store.get(cond.name, i)["correct"]) for i in both]
    b = [bool(store.get(other.name, i)["correct"]) for i in both]
    pa = sum(store.get(cond.name, i)["prompt_tokens"] for i in both)
    pb = sum(store.get(other.name, i)["prompt_tokens"] for i in both)
    # Lenient too: K = 1 drops 'The answer is' more often than batches do, so strict accuracy alone mixes format
    # failures into the cost of batching.
    la = [bool(store.get(cond.name, i)["lenient"]) for i in both]
    lb = [bool(store.get(other.name, i)["lenient"]) for i in both]
    return {"condition": cond.name, "vs": other.name, "why": why, **accuracy_diff(a, b),
            "lenient": accuracy_diff(la, lb), "prompt_tokens_ratio": round(pa / pb, 4) if pb else None}


def _diff(d: dict) -> str:
    """A paired difference in points with its interval."""
    return f"{100 * d['diff']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown(result: dict) -> str:
    lines = [f"# Batch prompting on GSM8K, {result['target']}", "",
             f"{result['n']} test questions (blocks of {result['block']}), {result['demos']} demonstrations, "
             f"chat completions through `{result['server']}`. Accuracy in %, 95 % Wilson interval; Δ vs K=1 in "
             f"points, paired bootstrap 95 % interval and exact McNemar p; lenient: also right by the last number "
             f"of an answer that missed 'The answer is N' (a format failure, not a wrong one); tokens from the "
             f"server's usage.", "",
             "| condition | n | accuracy [95 % CI] | Δ vs K=1 [CI], p | lenient | Δ lenient vs K=1 [CI] | "
             "prompt tok/q | × K=1 | completion tok/q | calls/q | s/q | statuses |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {d["condition"]: d for d in result["paired"] if d["why"].startswith("K=1")}
    for r in result["rows"]:
        if not r["n"]:  # a partial run: say so rather than print NaNs
            lines.append(f"| {r['condition']} | 0 | pending |" + " |" * 9)
            continue
        d = base.get(r["condition"])
        delta = f"{_diff(d)}, p={d['p']}" if d else ""
        ldelta = _diff(d["lenient"]) if d else ""
        st = ", ".join(f"{k} {v}" for k, v in r["statuses"].items() if v)
        share = d["prompt_tokens_ratio"] if d else ""
        lines.append(f"| {r['condition']} | {r['n']} | {_pct(r['accuracy'])} [{_pct(r['ci_low'])}, "
                     f"{_pct(r['ci_high'])}] | {delta} | {_pct(r['lenient_accuracy'])} | {ldelta} | "
                     f"{r['prompt_tokens_per_q']} | {share} | "
                     f"{r['completion_tokens_per_q']} | {r['calls_per_q']} | {r['seconds_per_q']} | {st} |")
    lines += ["", "Paired differences with the condition one setting away:", "",
              "| condition | vs | n | Δ points [95 % CI] | McNemar p | prompt tokens × |",
              "|---|---|---|---|---|---|"]
    for d in result["paired"]:
        if d["n"] and not d["why"].startswith("K=1"):
            lines.append(f"| {d['condition']} | {d['vs']} ({d['why']}) | {d['n']} | {_diff(d)} | {d['p']} | "
                         f"{d['prompt_tokens_ratio']} |")
    acc = result["accounting"]
    lines += ["", f"Ids: {acc['records']} records over {acc['conditions']} conditions; lost {acc['lost']}, "
              f"misattributed {acc['misattributed']}, pending {acc['pending']} (checked against the gold ids)."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: plot skipped"
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in rows:
        if not r["n"]:
            continue
        colour = {"indexed": "tab:blue", "auto_demo": "tab:orange"}[r["style"]] if r["k"] > 1 else "black"
        marker = "o" if r["demos"] == "full" else "s"
        err = [[r["accuracy"] - r["ci_low"]], [r["ci_high"] - r["accuracy"]]]
        ax.errorbar(r["prompt_tokens_per_q"], r["accuracy"], yerr=err, fmt=marker, color=colour,
                    mfc="white" if r["votes"] > 1 else colour, capsize=2, alpha=0.8)
        ax.annotate(r["condition"], (r["prompt_tokens_per_q"], r["accuracy"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("prompt tokens per question (server usage; log scale)")
    ax.set_ylabel("GSM8K accuracy (Wilson 95 %)")
    ax.set_title("Batch prompting: accuracy vs prompt tokens (black K=1, blue indexed, orange Auto-Demo;\n"
                 "square: demonstrations compressed; hollow: voting)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    return str(path)


def report(args, samples: list, gold: dict[str, str], store, work: Path, seconds: float) -> dict:
    ids = [s.id for s in samples[: args.n]]
    questions = {s.id: s.text for s in samples}
    rows = [condition_row(c, ids, store, questions, args.block) for c in args.conds]
    names = {c.name for c in args.conds}
    pairs = [paired(c, o, why, ids, store) for c in args.conds for o, why in neighbours(c, names)]
    accounting = {"conditions": len(rows), "records": sum(r["n"] for r in rows),
                  **{k: sum(r["ids"][k] for r in rows) for k in ("lost", "misattributed", "pending")}}
    result = {
        "benchmark": "bench_batch_llm", "target": "scripted stand-in (dry)" if args.dry else
        "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", "server": "scripted loopback server" if args.dry else
        f"python -m llama_cpp.server --chat_format {args.chat_format} --n_ctx {args.n_ctx} --n_threads {args.threads}",
        "n": len(ids), "block": args.block, "demos": args.demos, "work": str(work), "seconds": round(seconds, 1),
        "settings": {"max_tokens_per_item": args.max_tokens_per_item, "max_retries": args.max_retries,
                     "votes": args.votes, "ratio": args.ratio, "seed": args.seed},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        "rows": rows, "paired": pairs, "accounting": accounting,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / args.stem
    result["plot"] = plot(rows, stem.with_suffix(".png"))
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    stem.with_suffix(".md").write_text(markdown(result))
    return result
