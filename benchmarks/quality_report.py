"""Statistics, table and plot for bench_quality: accuracy with Wilson CIs, exact McNemar tests, retention with
bootstrap CIs. Only questions that every compared condition has finished are used, so comparisons stay paired."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar(a: list[bool], b: list[bool]) -> dict[str, Any]:
    """Exact two-sided McNemar test (binomial on the discordant pairs) of paired outcomes a vs b."""
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n if n else 1.0
    return {"only_this": only_a, "only_other": only_b, "p": round(min(1.0, 2 * tail), 4)}


def retention(zero: list[float], full: list[float], method: list[float], seed: int = 0) -> dict[str, float]:
    """(NLL_zero - NLL_method) / (NLL_zero - NLL_full) over summed gold-solution NLLs, with a 95 % bootstrap CI."""
    def ratio(idx: list[int]) -> float:
        gain = sum(zero[i] - full[i] for i in idx)
        return sum(zero[i] - method[i] for i in idx) / gain if gain else float("nan")

    n = len(method)
    if n == 0:
        return {"retention": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    rng = random.Random(seed)
    boots = sorted(ratio([rng.randrange(n) for _ in range(n)]) for _ in range(1000))
    return {"retention": round(ratio(list(range(n))), 4), "ci_low": round(boots[25], 4), "ci_high": round(boots[974], 4)}


def _paired(evals, conds, kind: str, n: int) -> list[int]:
    return [q for q in range(n) if all(evals.get(m, r, q, kind) is not None for m, r in conds)]


def _rows(args, conds, prefixes, evals) -> tuple[list[dict], dict]:
    em_conds = [c for c in conds if any(evals.get(*c, q, "em") for q in range(args.n))]
    nll_conds = [c for c in conds if any(evals.get(*c, q, "nll") for q in range(args.n_retention))]
    em_q = _paired(evals, em_conds, "em", args.n)
    nll_q = _paired(evals, nll_conds, "nll", args.n_retention)
    base_nll = {m: [evals.get(m, r, q, "nll")["nll"] for q in nll_q] for m, r in nll_conds if m in ("full", "zero-shot")}
    rows = []
    for method, ratio in conds:
        pre = prefixes.get(method, ratio) or {}
        row = {"method": method, "ratio": ratio, "achieved": pre.get("achieved"), "tokens": pre.get("tokens"),
               "compress_s": pre.get("seconds")}
        if (method, ratio) in em_conds and em_q:
            ok = [bool(evals.get(method, ratio, q, "em")["correct"]) for q in em_q]
            lo, hi = wilson(sum(ok), len(ok))
            row.update(em_n=len(ok), correct=sum(ok), accuracy=round(sum(ok) / len(ok), 4),
                       acc_ci=[round(lo, 4), round(hi, 4)], _ok=ok,
                       gen_s=round(sum(evals.get(method, ratio, q, "em")["seconds"] for q in em_q) / len(em_q), 2))
        if (method, ratio) in nll_conds and nll_q and {"full", "zero-shot"} <= set(base_nll):
            nll = [evals.get(method, ratio, q, "nll")["nll"] for q in nll_q]
            row.update(ret_n=len(nll), **retention(base_nll["zero-shot"], base_nll["full"], nll))
        rows.append(row)
    _tests(rows)
    return rows, {"em_questions": len(em_q), "retention_questions": len(nll_q)}


def _tests(rows: list[dict]) -> None:
    by = {(r["method"], r["ratio"]): r for r in rows}
    full = next((r for r in rows if r["method"] == "full" and "_ok" in r), None)
    for r in rows:
        if "_ok" not in r or r["method"] in ("full", "zero-shot"):
            continue
        if full:
            r["mcnemar_vs_full"] = mcnemar(r["_ok"], full["_ok"])
        ll = by.get(("llmlingua", r["ratio"]))
        if ll and "_ok" in ll and r["method"] != "llmlingua":
            r["mcnemar_vs_llmlingua"] = mcnemar(r["_ok"], ll["_ok"])


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.1f} %" if pct else str(x)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"Target: {meta['target']}; exact match on {meta['em_questions']} GSM8K test questions, retention on "
        f"{meta['retention_questions']} (paired: every row uses the same questions). "
        + (f"This invocation ran {meta['wall_s']:.0f} s." if meta["wall_s"] >= 1 else "Rebuilt from cached results."),
        "",
        "| method | ratio asked | achieved (target tokens) | compress s | accuracy [95 % CI] | McNemar p vs full | "
        "McNemar p vs LLMLingua | retention [95 % CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        acc = "–" if "accuracy" not in r else (
            f"{100 * r['accuracy']:.1f} % ({r['correct']}/{r['em_n']}) [{100 * r['acc_ci'][0]:.0f}–{100 * r['acc_ci'][1]:.0f}]")
        ret = "–" if "retention" not in r else (
            f"{100 * r['retention']:.1f} % [{100 * r['ci_low']:.0f}–{100 * r['ci_high']:.0f}]")
        p_full = r.get("mcnemar_vs_full", {}).get("p", "–")
        p_ll = r.get("mcnemar_vs_llmlingua", {}).get("p", "–")
        lines.append(f"| {r['method']} | {r['ratio']} | {_fmt(r['achieved'])} | {_fmt(r['compress_s'])} | {acc} | "
                     f"{p_full} | {p_ll} | {ret} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "accuracy", "exact match"), (axes[1], "retention", "gold-NLL retention")):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["achieved"], r[key]) for r in rows if r["method"] == method and key in r
                         and r["achieved"] is not None)
            if not pts:
                continue
            style = "--" if method in ("full", "zero-shot") else "-o"
            if len(pts) == 1 and method in ("full", "zero-shot"):
                ax.axhline(pts[0][1], linestyle="--", color="grey" if method == "full" else "black", label=method)
            else:
                ax.plot(*zip(*pts), style, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("achieved ratio of the demonstrations (target tokens)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def report(args, conds, prefixes, evals, work: Path, wall_s: float) -> dict:
    rows, meta = _rows(args, conds, prefixes, evals)
    meta.update(target=args.target, wall_s=wall_s, work=str(work), load_average=os.getloadavg(),
                max_tokens=args.max_tokens, shots=args.shots)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "bench_quality_dry" if args.dry else "bench_quality"
    clean_rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": clean_rows}, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(rows, meta))
    plotted = plot(rows, args.out / f"{stem}.png")
    headline = {"meta": meta, "plot": plotted,
                "rows": [{k: r.get(k) for k in ("method", "ratio", "achieved", "accuracy", "retention")} for r in rows]}
    return {"headline": headline, "rows": clean_rows}
