"""GSM8K end to end: does the target LLM still answer after the demonstrations are compressed?

    python benchmarks/bench_quality.py [--n 200] [--n-retention N] [--methods ours,llmlingua,...] [--ratios ...]
    python benchmarks/bench_quality.py --dry            # wiring check on the embedded model: no Qwen, no llmlingua
    python benchmarks/bench_quality.py --report-only    # tables and plot from what has been computed so far
    python benchmarks/bench_quality.py --fast --methods ours --ratios 0.2   # the fast loop: retention only, 100 q

The LLMLingua paper's protocol: 8 chain-of-thought demonstrations compressed once, the instruction and question
appended uncompressed, greedy decoding. For each method and ratio of the demonstrations it measures
  * exact match of the final answer on the first --n test questions (paired across methods);
  * gold-solution likelihood retention (NLL_zero-shot - NLL_method) / (NLL_zero-shot - NLL_full) under the
    target, on the first --n-retention questions; the prefix's KV cache is computed once per method and ratio;
  * the achieved ratio in the target's tokenizer and the compression seconds.
Compressed prefixes and per-question results are appended to a work folder, so an interrupted run continues where
it stopped and a larger --n only computes the new questions. Questions run in blocks, every method on a block
before the next, so a partial run is still paired. Install and timing notes: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_compress import DEFAULT_DATA, INSTRUCTION, clean, demonstrations  # noqa: E402
from quality_methods import (BASELINES, COMPRESSING, JOIN, OURS_VARIANTS, fingerprint, freeze, known,  # noqa: E402
                             make_method)
from quality_targets import GEN_VERSION, PROMPT_FORMAT  # noqa: E402

RATIOS = (0.5, 0.2, 0.1, 0.05)
DEFAULT_METHODS = ("ours", "llmlingua", "random", "truncate", *BASELINES)
ABLATIONS = tuple(v for v in OURS_VARIANTS if v != "ours")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with GSM8K train.jsonl and test.jsonl")
    ap.add_argument("--target", default="qwen1.5b", help="qwen1.5b, qwen0.5b or embedded")
    ap.add_argument("--n", type=int, default=None, help="questions for exact match (default 200; 5 with --dry)")
    ap.add_argument("--n-retention", type=int, default=None, help="questions for retention (default: --n)")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--ratios", default=",".join(map(str, RATIOS)))
    ap.add_argument("--ablation-ratios", default=None,
                    help="ratios for ours with one stage off, retention only (default 0.2; none with --fast)")
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--min-lines", type=int, default=8, help="demonstrations: first train rows with this many lines")
    ap.add_argument("--max-tokens", type=int, default=None, help="generation cap (default 256; 24 with --dry)")
    ap.add_argument("--block", type=int, default=20, help="questions per block (every method runs a block in turn)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dry", action="store_true", help="embedded model as target, no llmlingua: checks the wiring")
    ap.add_argument("--fast", action="store_true",
                    help="the fast loop: retention only (no generation) on --n-retention questions (default 100), "
                         "full and zero-shot added; writes bench_quality_fast.*")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--freeze", metavar="NAME", default=None,
                    help="store the prefixes the importable lingua_compress makes at --ratios under NAME (e.g. "
                         "ours-prev, run with an older checkout on PYTHONPATH) and exit")
    ap.add_argument("--work", type=Path, default=None, help="cache of prefixes and per-question results")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.dry:
        args.target = "embedded"
        args.methods = ",".join(m for m in args.methods.split(",") if m != "llmlingua")
    if args.fast:
        args.n = args.n or 0
        args.n_retention = args.n_retention or 100
        args.methods = ",".join(dict.fromkeys([*args.methods.split(","), *BASELINES]))
    args.n = args.n if args.n is not None else (5 if args.dry else 200)
    args.n_retention = args.n_retention if args.n_retention is not None else args.n
    args.stem = "bench_quality_dry" if args.dry else "bench_quality_fast" if args.fast else "bench_quality"
    args.max_tokens = args.max_tokens or (24 if args.dry else 256)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.ablation_ratios is None:
        args.ablation_ratios = "" if args.fast else "0.2"
    unknown = [m for m in args.methods if not known(m)]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {(*COMPRESSING, *BASELINES)} or ours[setting=value;...]")
    args.ratios = [float(r) for r in args.ratios.split(",") if r]
    args.ablation_ratios = [float(r) for r in args.ablation_ratios.split(",") if r]
    if any(not 0 < r <= 1 for r in args.ratios + args.ablation_ratios):
        ap.error("ratios must be in (0, 1]")
    return args


def load_data(args: argparse.Namespace) -> tuple[list[str], list[dict]]:
    test = [json.loads(line) for line in (args.data / "test.jsonl").open()]
    demos, _ = demonstrations(args.data, args.shots, args.min_lines)
    return demos, test[:max(args.n, args.n_retention)]


def conditions(args: argparse.Namespace) -> list[tuple[str, float]]:
    conds = [(m, r) for m in args.methods if m not in BASELINES for r in args.ratios]
    conds += [(m, r) for m in ABLATIONS for r in args.ablation_ratios if m not in args.methods]
    conds += [(m, 1.0 if m == "full" else 0.0) for m in BASELINES if m in args.methods]
    return conds


def work_dir(args: argparse.Namespace, demos: list[str]) -> Path:
    from lingua_compress.models import cache_dir

    # Anything that changes a result changes the folder; --n, --methods and --ratios only add to it.
    key = {"target": args.target, "demos": demos, "max_tokens": args.max_tokens, "instruction": INSTRUCTION,
           "format": PROMPT_FORMAT}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    # Real runs keep their per-question results in the repository, so a later session continues them.
    base = args.work or (cache_dir() / "bench_quality" if args.dry else HERE / "results" / "quality_work")
    return base / f"{args.target}-{digest}"


class Store:
    """Append-only JSONL of finished records; a torn last line (a killed run) is ignored and rewritten."""

    def __init__(self, path: Path, key: tuple[str, ...]) -> None:
        self.path, self.key = path, key
        self.rows = {self._k(row): row for row in self.history()}

    def _k(self, row: dict) -> tuple:
        return tuple(row[k] for k in self.key)

    def history(self) -> list[dict]:
        """Every row ever added, older versions of a key included."""
        rows = []
        for line in self.path.read_text().splitlines() if self.path.exists() else []:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def get(self, *key) -> dict | None:
        return self.rows.get(tuple(key))

    def add(self, row: dict) -> None:
        self.rows[self._k(row)] = row
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def make_prefixes(args, target, demos, conds, store: Store) -> None:
    from lingua_compress.models import cache_dir

    def count(text: str) -> int:
        return len(target.tokenize(text))

    full_tokens = count(JOIN.join(demos))
    for method in dict.fromkeys(m for m, _ in conds):
        fp = fingerprint(method)
        todo = [r for m, r in conds if m == method and (store.get(method, r) or {}).get("fp") != fp]
        if not todo:
            continue
        fn = None if method in BASELINES else make_method(method, cache_dir() / "bench_quality")
        for ratio in todo:
            t = time.perf_counter()
            text = JOIN.join(demos) if method == "full" else "" if method == "zero-shot" else fn(demos, ratio, count)
            seconds = time.perf_counter() - t
            n = count(text)
            store.add({"method": method, "ratio": ratio, "fp": fp, "text": text, "seconds": round(seconds, 3),
                       "tokens": n, "full_tokens": full_tokens, "achieved": round(n / full_tokens, 4)})
            print(f"prefix {method} {ratio}: {n}/{full_tokens} tokens in {seconds:.1f} s", file=sys.stderr)
        del fn


ANSWER = re.compile(r"answer is[^0-9\-]*(-?[\d,]*\.?\d+)", re.I)
NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def extract(text: str) -> str | None:
    found = ANSWER.findall(text) or NUMBER.findall(text)
    if not found:
        return None
    value = found[-1].replace(",", "").rstrip(".")
    try:
        number = float(value)
    except ValueError:
        return None
    return str(int(number)) if number == int(number) else str(number)


def _digest(prefix: dict) -> str:
    return hashlib.sha1(prefix["text"].encode()).hexdigest()


def _made(prefixes: Store) -> dict:
    """The text digest of every prefix ever made, by (method, ratio, fp)."""
    return {(p["method"], p["ratio"], p["fp"]): _digest(p) for p in prefixes.history()}


def by_text(evals: Store, prefixes: Store) -> dict:
    """Every finished result by (prefix text digest, question, kind), whichever method made that text: a variant
    that becomes the default makes the same prefix under another name, and the target sees only the text."""
    made = _made(prefixes)
    out = {}
    for row in evals.history():
        text = made.get((row["method"], row["ratio"], row.get("fp")))
        if text is not None and (row["kind"] != "em" or row.get("gen") == GEN_VERSION):
            out[(text, row["q"], row["kind"])] = row
    return out


def current(rows: dict, prefixes: Store) -> dict:
    """The results still valid: made from the very prefix text the method makes now, by today's generation rule.

    A result depends on its prefix's text, not on the code that made it, so a code change that leaves the text
    alone (a speed-up, a refactor) keeps the cached results; every prefix ever made is looked up by its fp.
    """
    made = _made(prefixes)
    now = {k: _digest(p) for k, p in prefixes.rows.items()}
    return {k: v for k, v in rows.items()
            if made.get((k[0], k[1], v.get("fp"))) == now.get((k[0], k[1]), object())
            and (v["kind"] != "em" or v.get("gen") == GEN_VERSION)}


def evaluate(args, target, conds, tests, prefixes: Store, evals: Store) -> None:
    from tqdm import tqdm

    n_all = max(args.n, args.n_retention)
    em_ok = {c for c in conds if c[0] not in ABLATIONS or c[0] in args.methods}
    steps = sum(min(args.n_retention, n_all) + (args.n if c in em_ok else 0) for c in conds)
    bar = tqdm(total=steps, desc="evaluating", file=sys.stderr, smoothing=0.05)
    reusable = by_text(evals, prefixes)
    for lo in range(0, n_all, args.block):
        block = range(lo, min(lo + args.block, n_all))
        for method, ratio in conds:
            prefix = prefixes.get(method, ratio)
            prefix_text, text_key = prefix["text"], _digest(prefix)
            todo = [(i, kind) for i in block for kind in ("nll", "em")
                    if (kind == "nll" and i < args.n_retention) or (kind == "em" and i < args.n and (method, ratio) in em_ok)]
            done = [t for t in todo if evals.get(method, ratio, t[0], t[1]) is not None]
            todo = [t for t in todo if t not in done]
            for i, kind in list(todo):
                same = reusable.get((text_key, i, kind))
                if same is not None:  # the same text was evaluated under another name: copy, marked as such
                    evals.add({**same, "method": method, "ratio": ratio, "fp": prefix["fp"],
                               "copied_from": same.get("copied_from", same["method"])})
                    done.append((i, kind))
                    todo.remove((i, kind))
            bar.update(len(done))
            if not todo:
                continue
            head = target.user_open + INSTRUCTION + (JOIN + prefix_text if prefix_text else "")
            target.set_prefix(target.tokenize(head))
            for i, kind in todo:
                row = tests[i]
                question = target.tokenize(f"{JOIN}Question: {row['question']}\nLet's think step by step"
                                           + target.assistant_open)
                rec = {"method": method, "ratio": ratio, "q": i, "kind": kind, "fp": prefix["fp"]}
                t = time.perf_counter()
                if kind == "nll":
                    gold = target.tokenize(clean(row["answer"]))
                    rec.update(nll=target.gold_nll(question, gold), gold_tokens=len(gold))
                else:
                    out = target.generate(question, args.max_tokens)
                    gold = row["answer"].split("####")[-1].strip().replace(",", "")
                    pred = extract(out)
                    rec.update(output=out, pred=pred, gold=gold, correct=pred == extract(gold), gen=GEN_VERSION)
                rec["seconds"] = round(time.perf_counter() - t, 3)
                evals.add(rec)
                reusable[(text_key, i, kind)] = rec
                bar.update(1)
    bar.close()


def scorer_dtype() -> str:
    """The dtype our scorer runs in on this machine (bf16 only where the CPU computes it natively)."""
    from lingua_compress.models import resolve_dtype

    return str(resolve_dtype("auto", "cpu")).replace("torch.", "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    demos, tests = load_data(args)
    conds = conditions(args)
    work = work_dir(args, demos)
    work.mkdir(parents=True, exist_ok=True)
    prefixes = Store(work / "prefixes.jsonl", ("method", "ratio"))
    evals = Store(work / "evals.jsonl", ("method", "ratio", "q", "kind"))
    started = time.perf_counter()
    if args.freeze:
        from lingua_compress.models import cache_dir
        from quality_targets import load_target

        target = load_target(args.target, cache_dir() / "targets", args.threads)
        texts = freeze(args.freeze, demos, args.ratios, lambda t: len(target.tokenize(t)))
        print(json.dumps({r: len(target.tokenize(t)) for r, t in texts.items()}))
        return 0
    if not args.report_only:
        from lingua_compress.models import cache_dir
        from quality_targets import load_target

        target = load_target(args.target, cache_dir() / "targets", args.threads)
        make_prefixes(args, target, demos, conds, prefixes)
        args.scorer_dtype = scorer_dtype()
    evals.rows = current(evals.rows, prefixes)
    if not args.report_only:
        evaluate(args, target, conds, tests, prefixes, evals)
    from quality_report import report

    summary = report(args, conds, prefixes, evals, work, time.perf_counter() - started)
    print(json.dumps(summary["headline"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
