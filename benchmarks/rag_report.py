"""Tables for bench_rag: per condition on the items every condition finished (paired), and paired differences of
ours against the others (each on the items both sides finished), with Wilson and bootstrap intervals and McNemar."""

from __future__ import annotations

import json
import math
import os
import statistics
from typing import Any

from quality_report import host_counts, hosts_line, machine
from quality_stats import accuracy_diff, mcnemar, wilson

# Each of ours is compared with these at its own ratio (full: the uncompressed documents).
COMPARE = {"ours-qa": ("full", "longllmlingua", "embed", "truncate", "ours-agnostic", "ours-qa-nll"),
           "ours-agnostic": ("full",), "ours-qa-doc": ("ours-qa", "embed", "full"), "ours-qa-nll": ("embed", "full")}


def _ok(store, items, k: int, cond: tuple[str, float]) -> dict[str, dict]:
    out = {}
    for item in items:
        rec = store.get(item["id"], k, *cond)
        if rec is not None and rec.get("status") == "ok":
            out[item["id"]] = rec
    return out


def _rate(flags: list[bool]) -> dict[str, Any]:
    lo, hi = wilson(sum(flags), len(flags))
    return {"rate": round(sum(flags) / len(flags), 4) if flags else None, "ci": [round(lo, 4), round(hi, 4)]}


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


SECONDS = ("compress_s", "answer_s", "compress_cpu_s", "answer_cpu_s")  # per record, wall and CPU


def _median(values: list[float]) -> float | None:
    """Seconds are summarised by their median: one run paused mid-item (SIGSTOP, a suspended laptop) records hours
    of wall time that are not the method's, and would dominate a mean over a few dozen items."""
    return round(float(statistics.median(values)), 4) if values else None


def _row(k: int, cond: tuple[str, float], recs: list[dict], failed: int) -> dict:
    acc, par = _rate([r["correct"] for r in recs]), _rate([r["parametric"] for r in recs])
    by_pos = {}
    for pos in dict.fromkeys(r["position"] for r in recs):
        hits = [r["correct"] for r in recs if r["position"] == pos]
        by_pos[pos] = {"n": len(hits), "accuracy": _mean([float(h) for h in hits])}
    return {"passages": k, "method": cond[0], "ratio": cond[1], "n": len(recs),
            "correct": sum(r["correct"] for r in recs), "accuracy": acc["rate"], "acc_ci": acc["ci"],
            "parametric": par["rate"], "param_ci": par["ci"],
            "survival": _mean([float(r["survived"]) for r in recs]), "achieved": _mean([r["achieved"] for r in recs]),
            **{key: _median([r[key] for r in recs]) for key in SECONDS},
            "by_position": by_pos, "not_ok": failed, "hosts": host_counts(recs)}


def _diff(a: dict[str, dict], b: dict[str, dict]) -> dict[str, Any]:
    keys = sorted(set(a) & set(b))
    x, y = [a[q]["correct"] for q in keys], [b[q]["correct"] for q in keys]
    acc = accuracy_diff(x, y)
    acc.update({k: v for k, v in mcnemar(x, y).items() if k != "p"})  # the discordant pairs behind p
    surv = accuracy_diff([a[q]["survived"] for q in keys], [b[q]["survived"] for q in keys])
    return {"accuracy": acc, "survival": surv}


FIRST_RATIOS = (0.25, 0.1)  # with the most passages: run for every item before the other conditions


def phase(args, k: int, method: str, ratio: float) -> int:
    """0 for the conditions the results are judged on (the most passages at FIRST_RATIOS, and full), else 1. The run
    finishes phase 0 for every item before phase 1, so each phase's rows pair on the items it has finished."""
    return 0 if k == max(args.passages) and (method == "full" or ratio in FIRST_RATIOS) else 1


def tables(args, items, conds, store) -> tuple[list[dict], list[dict], dict[int, int]]:
    """Rows per condition, on the items every open condition of its phase finished (``paired``: per passage count,
    the judged phase's count where it has one); differences on each pair's own common items."""
    rows, diffs, paired = [], [], {}
    for k in args.passages:
        done = {c: _ok(store, items, k, c) for c in conds}
        # Settled methods stopped at fewer items: pairing every row on theirs would freeze the whole table with them.
        live = {c: set(v) for c, v in done.items() if c[0] not in args.settled} or {c: set(v) for c, v in done.items()}
        common = {}
        for ph in (0, 1):
            sets = [v for c, v in live.items() if phase(args, k, *c) == ph]
            if sets:
                common[ph] = set.intersection(*sets)
        paired[k] = len(common[min(common)]) if common else 0
        for c in conds:
            own = common.get(phase(args, k, *c), set()) if c[0] not in args.settled else set(done[c])
            recs = [done[c][q["id"]] for q in items if q["id"] in own]
            failed = sum(1 for q in items if (r := store.get(q["id"], k, *c)) and r.get("status") != "ok")
            rows.append(_row(k, c, recs, failed))
        for a, others in COMPARE.items():
            for r in args.ratios:
                if (a, r) not in done:
                    continue
                for b in others:
                    cb = (b, 1.0) if b == "full" else (b, r)
                    if cb in done and done[(a, r)] and done[cb]:
                        diffs.append({"passages": k, "ratio": r, "method": a, "vs": b, **_diff(done[(a, r)], done[cb])})
    return rows, diffs, paired


def headline(args, rows: list[dict], diffs: list[dict]) -> dict[str, Any]:
    """The comparisons the issue asks for, at the most passages: ours-qa at 0.25 (else the lowest ratio) against
    full, LongLLMLingua and the embedding baseline; survival; question-aware vs agnostic; compression seconds."""
    k = max(args.passages)
    r = 0.25 if 0.25 in args.ratios else min(args.ratios)
    pick = {(d["method"], d["vs"], d["ratio"]): d for d in diffs if d["passages"] == k}
    at = {(x["method"], x["ratio"]): x for x in rows if x["passages"] == k}
    out: dict[str, Any] = {"passages": k, "ratio": r}
    for b in ("full", "longllmlingua", "embed"):
        if ("ours-qa", b, r) in pick:
            out[f"ours-qa_vs_{b}"] = pick[("ours-qa", b, r)]["accuracy"]
    out["survival"] = {m: x["survival"] for (m, rr), x in at.items() if rr in (r, 1.0)}
    out["qa_vs_agnostic"] = {str(rr): pick[("ours-qa", "ours-agnostic", rr)]["accuracy"]
                             for rr in (0.25, 0.1) if ("ours-qa", "ours-agnostic", rr) in pick}
    out["compress_s"] = {m: {"wall": at[(m, r)]["compress_s"], "cpu": at[(m, r)]["compress_cpu_s"]}
                         for m in ("ours-qa", "ours-agnostic") if (m, r) in at}
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _num(x: Any) -> str:
    return "–" if x is None else str(x)


def _ci(rate: float | None, ci: list[float], n: int, hits: int | None = None) -> str:
    if rate is None:
        return "–"
    count = f" ({hits}/{n})" if hits is not None else ""
    return f"{100 * rate:.1f} %{count} [{100 * ci[0]:.0f}–{100 * ci[1]:.0f}]"


def _pp(d: dict) -> str:
    return f"{100 * d['diff']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"


def markdown(rows: list[dict], diffs: list[dict], meta: dict) -> str:
    pos = meta["positions"]
    held = f", none of seed {meta['disjoint_from']}'s" if meta["disjoint_from"] is not None else ""
    lines = [f"Target: {meta['target']}; counterfactual NQ, {meta['items']} items (seed {meta['seed']}{held}), gold "
             f"passage at {'/'.join(pos)} (round-robin); paired items per passage count: {meta['paired']} (with the most "
             "passages, the judged conditions - ratios 0.25 and 0.1, and full - pair apart from the others, which run "
             "after them item by item; every difference is on its own pair's common items). Accuracy: "
             "the substituted answer in the one-line reply; parametric: the real-world answer instead; survival: the "
             "answer still in the compressed documents; achieved: kept / original document tokens (target's); seconds: "
             "medians over items."
             + (f" Settled (not run past the items they had; each row on its own items, n in its accuracy cell): "
                f"{', '.join(meta['settled'])}." if meta["settled"] else ""), "",
             "| passages | method | ratio | achieved | accuracy [95 % CI] | parametric [95 % CI] | survival | "
             + " | ".join(pos) + " | compress s (wall / CPU) | answer s (wall / CPU) | not ok |",
             "|---|---|---|---|---|---|---|" + "---|" * len(pos) + "---|---|---|"]
    for r in rows:
        by = " | ".join(_pct(r["by_position"].get(p, {}).get("accuracy")) for p in pos)
        lines.append(f"| {r['passages']} | {r['method']} | {r['ratio']} | {_num(r['achieved'])} | "
                     f"{_ci(r['accuracy'], r['acc_ci'], r['n'], r['correct'])} | "
                     f"{_ci(r['parametric'], r['param_ci'], r['n'])} | {_pct(r['survival'])} | {by} | "
                     f"{_num(r['compress_s'])} / {_num(r['compress_cpu_s'])} | "
                     f"{_num(r['answer_s'])} / {_num(r['answer_cpu_s'])} | "
                     f"{r['not_ok']} |")
    hosts = hosts_line(rows)
    lines += ["", hosts] if hosts else []
    lines += ["", "Paired differences, ours − other, in points (95 % bootstrap interval over items; accuracy also "
              "with the exact McNemar p and its discordant pairs):", "",
              "| passages | ratio | method | vs | Δ accuracy (n, p, only ours/only other) | Δ survival |",
              "|---|---|---|---|---|---|"]
    for d in diffs:
        a, s = d["accuracy"], d["survival"]
        lines.append(f"| {d['passages']} | {d['ratio']} | {d['method']} | {d['vs']} | {_pp(a)} ({a['n']}, p={a['p']}, "
                     f"{a.get('only_this')}/{a.get('only_other')}) | {_pp(s)} |")
    return "\n".join(lines) + "\n"


def report(args, items, conds, store, work, wall_s: float) -> dict:
    rows, diffs, paired = tables(args, items, conds, store)
    meta = {"target": args.target, "items": len(items), "passages": args.passages, "ratios": args.ratios,
            "positions": args.positions, "methods": args.methods, "settled": args.settled, "paired": paired,
            "reorder": args.reorder,
            "dynamic_ratio": args.dynamic_ratio, "max_tokens": args.max_tokens, "seed": args.seed,
            "disjoint_from": args.disjoint_from,
            "work": str(work), "wall_s": round(wall_s, 1), "threads": args.threads or os.cpu_count(),
            "load_average": os.getloadavg(), "machine": machine()}
    head = headline(args, rows, diffs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(json.dumps({"meta": meta, "headline": head, "rows": rows,
                                                            "paired": diffs}, indent=1))
    (args.out / f"{args.stem}.md").write_text(markdown(rows, diffs, meta))
    return {"meta": meta, "headline": head,
            "rows": [{k: r[k] for k in ("passages", "method", "ratio", "n", "accuracy", "survival", "achieved")}
                     for r in rows]}
