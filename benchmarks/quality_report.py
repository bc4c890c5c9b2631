"""Tables and plot for bench_quality: accuracy with Wilson CIs, retention with bootstrap CIs (on the questions every
condition has finished), and paired differences of ours against LLMLingua, truncation, the full prompt and the
previous default (on the questions both sides of each comparison have finished)."""

from __future__ import annotations

import json
import math
import os
import platform
import re
from collections import Counter
from pathlib import Path
from typing import Any

from quality_stats import accuracy_diff, mcnemar, retention, retention_diff, wilson

# Each "ours" row is compared with these, at its own ratio (full: the uncompressed prompt).
COMPARE = ("llmlingua", "truncate", "full", "ours-prev")


def _paired(evals, conds, kind: str, n: int) -> list[int]:
    return [q for q in range(n) if all(evals.get(m, r, q, kind) is not None for m, r in conds)]


def _done(evals, cond: tuple[str, float], kind: str, n: int) -> dict[int, dict]:
    return {q: rec for q in range(n) if (rec := evals.get(*cond, q, kind)) is not None}


def _rows(args, conds, prefixes, evals) -> tuple[list[dict], dict]:
    em_conds = [c for c in conds if any(evals.get(*c, q, "em") for q in range(args.n))]
    nll_conds = [c for c in conds if any(evals.get(*c, q, "nll") for q in range(args.n_retention))]
    em_q = _paired(evals, em_conds, "em", args.n)
    nll_q = _paired(evals, nll_conds, "nll", args.n_retention)
    base_nll = {m: [evals.get(m, r, q, "nll")["nll"] for q in nll_q] for m, r in nll_conds if m in ("full", "zero-shot")}
    rows = []
    for method, ratio in conds:
        pre = prefixes.get(method, ratio) or {}
        em, nll = _done(evals, (method, ratio), "em", args.n), _done(evals, (method, ratio), "nll", args.n_retention)
        row = {"method": method, "ratio": ratio, "achieved": pre.get("achieved"), "tokens": pre.get("tokens"),
               "compress_s": pre.get("seconds"), "_em": {q: bool(r["correct"]) for q, r in em.items()},
               "_nll": {q: r["nll"] for q, r in nll.items()},
               "nll_s": round(sum(r["seconds"] for r in nll.values()) / len(nll), 2) if nll else None}
        if (method, ratio) in em_conds and em_q:
            ok = [row["_em"][q] for q in em_q]
            lo, hi = wilson(sum(ok), len(ok))
            row.update(em_n=len(ok), correct=sum(ok), accuracy=round(sum(ok) / len(ok), 4),
                       acc_ci=[round(lo, 4), round(hi, 4)], _ok=ok,
                       gen_s=round(sum(em[q]["seconds"] for q in em_q) / len(em_q), 2))
        if (method, ratio) in nll_conds and nll_q and {"full", "zero-shot"} <= set(base_nll):
            nll_list = [row["_nll"][q] for q in nll_q]
            row.update(ret_n=len(nll_list), **retention(base_nll["zero-shot"], base_nll["full"], nll_list))
        rows.append(row)
    _tests(rows)
    _compare(rows)
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


def _compare(rows: list[dict]) -> None:
    """Paired differences of each "ours" row against COMPARE (and of each variant of ours against the default,
    "ours"), each on the questions both sides finished."""
    by = {(r["method"], r["ratio"]): r for r in rows}
    full, zero = by.get(("full", 1.0)), by.get(("zero-shot", 0.0))
    for r in rows:
        if not r["method"].startswith("ours") or r["method"] == "ours-prev":
            continue
        for other in COMPARE + (("ours",) if r["method"] != "ours" else ()):
            o = by.get((other, 1.0 if other == "full" else r["ratio"]))
            if o is None or o is r:
                continue
            out: dict[str, Any] = {}
            qs = sorted(set(r["_em"]) & set(o["_em"]))
            if qs:
                out["em"] = accuracy_diff([r["_em"][q] for q in qs], [o["_em"][q] for q in qs])
            if full and zero:
                qs = sorted(set(r["_nll"]) & set(o["_nll"]) & set(full["_nll"]) & set(zero["_nll"]))
                if qs:
                    out["ret"] = retention_diff([zero["_nll"][q] for q in qs], [full["_nll"][q] for q in qs],
                                                [r["_nll"][q] for q in qs], [o["_nll"][q] for q in qs])
            if "em" in out and "ret" in out and out["em"]["diff"] * out["ret"]["diff"] < 0:
                out["disagree"] = True  # the fast loop and the verdict point different ways
            if out:
                r.setdefault("vs", {})[other] = out


def _p(p: Any) -> str:
    """A McNemar p as printed: rounded to 4 places, so a tiny one would read as 0.0."""
    return "< 0.001" if isinstance(p, float) and p < 0.001 else str(p)


def _p_clause(p: Any) -> str:
    text = _p(p)
    return f"p {text}" if text.startswith("<") else f"p={text}"


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
        p_full = _p(r.get("mcnemar_vs_full", {}).get("p", "–"))
        p_ll = _p(r.get("mcnemar_vs_llmlingua", {}).get("p", "–"))
        lines.append(f"| {r['method']} | {r['ratio']} | {_fmt(r['achieved'])} | {_fmt(r['compress_s'])} | {acc} | "
                     f"{p_full} | {p_ll} | {ret} |")
    return "\n".join(lines + _paired_table(rows)) + "\n"


def _pp(d: dict) -> str:
    return f"{100 * d['diff']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"


def _paired_table(rows: list[dict]) -> list[str]:
    pairs = [(r, other, d) for r in rows for other, d in r.get("vs", {}).items()]
    if not pairs:
        return []
    lines = ["", "Paired differences, ours − other, in points (95 % bootstrap interval over questions; exact match "
             "also with its McNemar p). A \"!\" marks a comparison where retention and exact match disagree in sign.",
             "", "| method | ratio | vs | Δ exact match (n, p) | Δ retention (n) | |", "|---|---|---|---|---|---|"]
    for r, other, d in pairs:
        em = f"{_pp(d['em'])} ({d['em']['n']}, {_p_clause(d['em']['p'])})" if "em" in d else "–"
        ret = f"{_pp(d['ret'])} ({d['ret']['n']})" if "ret" in d else "–"
        lines.append(f"| {r['method']} | {r['ratio']} | {other} | {em} | {ret} | {'!' if d.get('disagree') else ''} |")
    return lines


def emit(report: dict, out: Path, name: str) -> None:
    """Print a check's JSON report and write it to ``out / name``."""
    print(json.dumps(report, indent=1))
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(report, indent=2) + "\n")


def machine() -> dict[str, Any]:
    """What the timings depend on: CPU model and the flags that pick the scorer's dtype, and thread counts."""
    flags, model = set(), platform.processor()
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split())
        model = re.search(r"^model name\s*:\s*(.*)$", text, re.M).group(1)
    except (OSError, AttributeError):
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return {"cpu": model, "cpus": os.cpu_count(), "flags": [f for f in wanted if f in flags]}


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    # Only the measures this run has: an exact-match-only run (--n-retention 0) gets one panel, not an empty one.
    panels = [(key, label) for key, label in (("accuracy", "exact match"), ("retention", "gold-NLL retention"))
              if any(key in r for r in rows)]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
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
                max_tokens=args.max_tokens, shots=args.shots, threads=args.threads or os.cpu_count(),
                scorer_dtype=getattr(args, "scorer_dtype", None), machine=machine())
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.stem
    clean_rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": clean_rows}, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(rows, meta))
    plotted = plot(rows, args.out / f"{stem}.png")
    headline = {"meta": meta, "plot": plotted,
                "rows": [{k: r.get(k) for k in ("method", "ratio", "achieved", "accuracy", "retention")} for r in rows]}
    return {"headline": headline, "rows": clean_rows}


def host_counts(recs: list[dict]) -> dict[str, int]:
    """How many records each kind of host made, by its bf16 feature (recorded since 2026-12-06)."""
    return dict(Counter(r.get("cpu_bf16", "unrecorded") for r in recs))


def hosts_line(rows: list[dict]) -> str:
    """One line saying where our methods' records were made: the host's bf16 feature picks the scorer's dtype under
    ``dtype="auto"``, and bf16 and fp32 scores can differ enough to keep different words."""
    parts = [f"{r['method']} {r['ratio']}: " + ", ".join(f"{k} {v}" for k, v in r["hosts"].items())
             for r in rows if r.get("hosts") and str(r["method"]).startswith("ours")]
    if not parts:
        return ""
    return ("Records by host (its bf16 feature sets the scorer's dtype: bf16 with amx_bf16 or avx512_bf16, fp32 "
            "with none; unrecorded: made before 2026-12-06, on either): " + "; ".join(parts) + ".")
