"""BIG-Bench Hard, 3-shot chain of thought: does the target still answer after the exemplars are compressed?

    python benchmarks/bench_bbh.py [--n 25] [--methods ours,llmlingua,truncate,full,zero-shot] [--ratios 0.5,0.3]
    python benchmarks/bench_bbh.py --dry          # wiring check on the embedded model, 2 questions per task
    python benchmarks/bench_bbh.py --report-only

The LLMLingua paper's BBH setting on four tasks (../shared/data/bbh): each task's three CoT exemplars are compressed
once per method and ratio, the task description and the question ("Q: ... A: Let's think step by step.") are
appended uncompressed, decoding is greedy, and the option letter (or the count) after "the answer is" is compared
with the gold answer. Questions are BIG-bench's examples minus the exemplars, sampled with a fixed seed; options are
shown as "(A) ..." in a seeded shuffle. Prefixes and per-question results are kept in the work folder, so a run
resumes; questions run in blocks so a partial run is paired. Results: results/bench_bbh.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import string
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_quality import Store, current, extract, make_prefixes  # noqa: E402
from quality_methods import BASELINES, JOIN, known  # noqa: E402
from quality_report import machine  # noqa: E402
from quality_stats import accuracy_diff, wilson  # noqa: E402
from quality_targets import GEN_VERSION, finish  # noqa: E402

TASKS = ("date_understanding", "logical_deduction_three_objects", "tracking_shuffled_objects_three_objects",
         "object_counting")
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "bbh"
COT = "A: Let's think step by step."
COMPARE = ("llmlingua", "truncate", "full")
_LETTER = re.compile(r"answer is\s*\(?([A-R])\)", re.I)
_ANY_LETTER = re.compile(r"\(([A-R])\)")
_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                      "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}
# Where an answer ends. The 1.5B target rarely ends a BBH answer with a blank line: it runs on ("...(E).Human: ...",
# "A: Let's think..." and a made-up next question with an answer of its own), which used to be generated up to the
# token cap and read for its last answer (11 of the first 386 predictions were the run-on's). Generation now stops
# at the first finished answer or a run-on marker; stored outputs are re-read with the same rule (finish()).
RUN_ON = ("Human:", "\nQ:", " Q:", "\nA:", " A: ")
UNTIL = {
    "letter": re.compile(r"answer is\s*\(?[A-R]\)", re.I),
    # A number is finished by what follows it: not a digit, and a "." or "," only when a non-digit follows that
    # (never the end of the text: mid-generation, "12." may still become "12.5").
    "number": re.compile(rf"answer is\s*(\$?\d+|{'|'.join(_WORDS)})(?=[^\w.,]|[.,]\D)", re.I),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--target", default="qwen1.5b", help="qwen1.5b, qwen0.5b or embedded")
    ap.add_argument("--n", type=int, default=None, help="questions per task (default 25; 2 with --dry)")
    ap.add_argument("--methods", default="ours,llmlingua,truncate,full,zero-shot")
    ap.add_argument("--ratios", default="0.5,0.3")
    ap.add_argument("--max-tokens", type=int, default=None, help="generation cap (default 320; 16 with --dry)")
    ap.add_argument("--block", type=int, default=5, help="questions per task per block")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dry", action="store_true", help="embedded model as target, no llmlingua: checks the wiring")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.dry:
        args.target = "embedded"
        args.methods = ",".join(m for m in args.methods.split(",") if m != "llmlingua")
    args.n = args.n if args.n is not None else (2 if args.dry else 25)
    args.max_tokens = args.max_tokens or (16 if args.dry else 320)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    args.ratios = [float(r) for r in args.ratios.split(",") if r]
    if bad := [m for m in args.methods if not known(m)]:
        ap.error(f"unknown methods {bad}")
    if bad := [t for t in args.tasks if not (args.data / t / "task.json").exists()]:
        ap.error(f"no task.json for {bad} under {args.data}")
    if any(not 0 < r <= 1 for r in args.ratios):
        ap.error("ratios must be in (0, 1]")
    return args


def _options(example: dict, rng: random.Random) -> tuple[str, str]:
    """The options as BBH shows them ("Options:\n(A) ..."), shuffled, and the gold letter."""
    items = list(example["target_scores"].items())
    rng.shuffle(items)
    lines = [f"({string.ascii_uppercase[i]}) {text}" for i, (text, _) in enumerate(items)]
    gold = next(string.ascii_uppercase[i] for i, (_, score) in enumerate(items) if score == 1)
    return "\nOptions:\n" + "\n".join(lines), gold


def load_task(data: Path, task: str, n: int) -> tuple[str, list[str], list[dict]]:
    """The task's description, its three exemplars as demonstrations, and n sampled test questions."""
    import yaml

    spec = yaml.safe_load((data / task / "cot_3shot.yaml").read_text())
    shots = spec["fewshot_config"]["samples"]
    demos = [f"Q: {s['input'].strip()}\n{COT}\n{s['target'].strip()}" for s in shots]
    raw = json.loads((data / task / "task.json").read_text())
    prefix = raw.get("task_prefix", "").strip()
    seen = {re.sub(r"\s+", " ", s["input"]) for s in shots}
    rng = random.Random(f"bbh-{task}")
    examples = [e for e in raw["examples"] if not any(re.sub(r"\s+", " ", e["input"]) in s for s in seen)]
    rng.shuffle(examples)
    tests = []
    for e in examples[:n]:
        question = f"{prefix} {e['input'].strip()}".strip()
        if "target_scores" in e:
            options, gold = _options(e, rng)
            tests.append({"question": question + options, "gold": gold, "kind": "letter"})
        else:
            target = e["target"] if isinstance(e["target"], list) else [e["target"]]
            gold = next(str(t) for t in target if str(t).isdigit())
            tests.append({"question": question, "gold": gold, "kind": "number"})
    return spec["description"].strip(), demos, tests


def answer(text: str, kind: str) -> str | None:
    if kind == "letter":
        found = _LETTER.findall(text) or _ANY_LETTER.findall(text)
        return found[-1].upper() if found else None
    words = re.findall(r"answer is\s+([a-z]+)\b", text, re.I)
    if words and words[-1].lower() in _WORDS:
        return str(_WORDS[words[-1].lower()])
    return extract(text)


def scored(rec: dict, kind: str) -> bool:
    """Whether a stored result is right, its output read up to its first finished answer (see RUN_ON)."""
    return answer(finish(rec["output"], RUN_ON, UNTIL[kind]), kind) == rec["gold"]


def conditions(args: argparse.Namespace) -> list[tuple[str, float]]:
    conds = [(m, r) for m in args.methods if m not in BASELINES for r in args.ratios]
    return conds + [(m, 1.0 if m == "full" else 0.0) for m in BASELINES if m in args.methods]


def work_dir(args: argparse.Namespace, task: str, demos: list[str]) -> Path:
    from lingua_compress.models import cache_dir

    key = {"target": args.target, "demos": demos, "max_tokens": args.max_tokens, "format": "bbh-cot-v1"}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    base = args.work or (cache_dir() / "bench_bbh" if args.dry else HERE / "results" / "quality_work")
    return base / f"bbh-{task}-{args.target}-{digest}"


def evaluate(args, target, task: str, instruction: str, conds, tests, prefixes: Store, evals: Store, bar) -> None:
    for lo in range(0, len(tests), args.block):
        for method, ratio in conds:
            prefix = prefixes.get(method, ratio)
            todo = [i for i in range(lo, min(lo + args.block, len(tests))) if evals.get(method, ratio, i, "em") is None]
            bar.update(min(lo + args.block, len(tests)) - lo - len(todo))
            if not todo:
                continue
            head = target.user_open + instruction + (JOIN + prefix["text"] if prefix["text"] else "")
            target.set_prefix(target.tokenize(head))
            for i in todo:
                row = tests[i]
                t = time.perf_counter()
                out = target.generate(target.tokenize(f"{JOIN}Q: {row['question']}\n{COT}" + target.assistant_open),
                                      args.max_tokens, RUN_ON, UNTIL[row["kind"]])
                pred = answer(out, row["kind"])
                evals.add({"method": method, "ratio": ratio, "q": i, "kind": "em", "fp": prefix["fp"], "task": task,
                           "output": out, "pred": pred, "gold": row["gold"], "correct": pred == row["gold"],
                           "gen": GEN_VERSION, "seconds": round(time.perf_counter() - t, 3)})
                bar.update(1)


def _stores(args, task: str, demos: list[str]) -> tuple[Store, Store]:
    work = work_dir(args, task, demos)
    work.mkdir(parents=True, exist_ok=True)
    return Store(work / "prefixes.jsonl", ("method", "ratio")), Store(work / "evals.jsonl", ("method", "ratio", "q", "kind"))


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    conds = conditions(args)
    loaded = {t: load_task(args.data, t, args.n) for t in args.tasks}
    stores = {t: _stores(args, t, demos) for t, (_, demos, _) in loaded.items()}
    started = time.perf_counter()
    if not args.report_only:
        from lingua_compress.models import cache_dir
        from quality_targets import load_target

        target = load_target(args.target, cache_dir() / "targets", args.threads)
        for task, (_, demos, _) in loaded.items():
            make_prefixes(args, target, demos, conds, stores[task][0])
    for prefixes, evals in stores.values():
        evals.rows = current(evals.rows, prefixes)  # stale results are redone, not counted as done
    if not args.report_only:
        bar = tqdm(total=len(conds) * sum(len(t) for _, _, t in loaded.values()), desc="bbh", file=sys.stderr)
        for task, (instruction, _, tests) in loaded.items():
            evaluate(args, target, task, instruction, conds, tests, *stores[task], bar)
        bar.close()
    return report(args, conds, loaded, stores, time.perf_counter() - started)


def _outcomes(conds, loaded, stores) -> dict[tuple[str, float], dict[tuple[str, int], bool]]:
    """Per condition, (task, question) -> correct, for results made from the current prefix of that condition."""
    out: dict = {c: {} for c in conds}
    for task, (_, _, tests) in loaded.items():
        prefixes, evals = stores[task]
        for c in conds:
            for q in range(len(tests)):
                rec = evals.get(*c, q, "em")
                if rec is not None:
                    out[c][(task, q)] = scored(rec, tests[q]["kind"])
    return out


def report(args, conds, loaded, stores, wall_s: float) -> dict:
    results = _outcomes(conds, loaded, stores)
    common = set.intersection(*(set(v) for v in results.values())) if results else set()
    rows = []
    for c in conds:
        ok = [results[c][k] for k in sorted(common)]
        lo, hi = wilson(sum(ok), len(ok))
        achieved = [(stores[t][0].get(*c) or {}).get("achieved") for t in loaded]
        row = {"method": c[0], "ratio": c[1], "n": len(ok), "correct": sum(ok),
               "accuracy": round(sum(ok) / len(ok), 4) if ok else None, "acc_ci": [round(lo, 4), round(hi, 4)],
               "achieved_mean": round(sum(achieved) / len(achieved), 4) if None not in achieved else None,
               "per_task": {t: round(sum(results[c][(t, q)] for t2, q in common if t2 == t)
                                     / max(1, sum(1 for t2, _ in common if t2 == t)), 4) for t in loaded}}
        if c[0].startswith("ours") and c[0] != "ours-prev":
            row["vs"] = {}
            for other in COMPARE:
                oc = (other, 1.0 if other == "full" else c[1])
                if oc in results and oc != c:
                    keys = sorted(set(results[c]) & set(results[oc]))
                    row["vs"][other] = accuracy_diff([results[c][k] for k in keys], [results[oc][k] for k in keys])
        rows.append(row)
    meta = {"target": args.target, "tasks": list(loaded), "questions_per_task": args.n, "paired_questions": len(common),
            "wall_s": round(wall_s, 1), "max_tokens": args.max_tokens, "machine": machine(),
            "threads": args.threads}
    stem = "bench_bbh_dry" if args.dry else "bench_bbh"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(rows, meta))
    return {"meta": meta, "rows": [{k: r[k] for k in ("method", "ratio", "n", "accuracy", "achieved_mean")}
                                   for r in rows]}


def markdown(rows: list[dict], meta: dict) -> str:
    tasks = meta["tasks"]
    lines = [f"Target: {meta['target']}; BBH 3-shot CoT, {len(tasks)} tasks, {meta['paired_questions']} questions "
             "answered by every condition (paired).", "",
             "| method | ratio asked | achieved (mean over tasks) | accuracy [95 % CI] | "
             + " | ".join(tasks) + " |", "|---|---|---|---|" + "---|" * len(tasks)]
    for r in rows:
        acc = "–" if r["accuracy"] is None else (
            f"{100 * r['accuracy']:.1f} % ({r['correct']}/{r['n']}) [{100 * r['acc_ci'][0]:.0f}–{100 * r['acc_ci'][1]:.0f}]")
        per = " | ".join(f"{100 * r['per_task'][t]:.0f} %" for t in tasks)
        lines.append(f"| {r['method']} | {r['ratio']} | {r['achieved_mean']} | {acc} | {per} |")
    lines += ["", "Paired differences in exact match, ours − other, points [95 % bootstrap interval] (n, McNemar p):",
              "", "| method | ratio | vs | Δ exact match |", "|---|---|---|---|"]
    for r in rows:
        for other, d in r.get("vs", {}).items():
            lines.append(f"| {r['method']} | {r['ratio']} | {other} | {100 * d['diff']:+.1f} "
                         f"[{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}] ({d['n']}, p={d['p']}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
