"""Batch prompting on GSM8K with a real target behind a real server: how much accuracy does batching cost?

    python benchmarks/bench_batch_llm.py --conditions core --n 120     # K = 1, 4, 6 (+ Auto-Demo, voting)
    python benchmarks/bench_batch_llm.py --conditions grid --n 48      # the whole grid of issue 14
    python benchmarks/bench_batch_llm.py --k 2,3 --style auto_demo --n 48   # a slice of the grid
    python benchmarks/bench_batch_llm.py --dry                         # wiring check: scripted server, seconds
    python benchmarks/bench_batch_llm.py --report-only

Qwen2.5-Coder-1.5B-Instruct (GGUF, llama.cpp) runs in llama-cpp-python's own OpenAI-compatible server
(``python -m llama_cpp.server``) on loopback, started and stopped here, and the library's ``OpenAIClient`` drives it
through ``run_batched`` with chat completions and the model's ChatML template: the path a user takes against any
hosted API. 12 GSM8K train demonstrations (regrouped into blocks of the batch size, Cheng et al.), the first
``--n`` test questions. Conditions: K in {1, 2, 3, 4, 6}; plain indexed batches vs Auto-Demo (the model repeats each
question first); grouping sequential vs similarity vs Auto-Demo kNN; demonstrations uncompressed vs compressed once
at 0.3; permutation voting. Questions run in blocks (``--block``, a multiple of every K); similarity and kNN
groups are formed within a block, so a larger ``--n`` never changes the groups of earlier blocks. By default each
condition runs over all blocks in turn (the server reuses the KV cache of the shared demonstration prefix, so it
is evaluated once per condition); ``--order block`` runs every condition on a block before the next. Comparisons
are paired on the questions both sides have finished. One record per (condition, question) is appended to
``results/quality_work/batch-<digest>/records.jsonl``; a killed run continues where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_batch import final, load  # noqa: E402
from bench_quality import Store  # noqa: E402

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "gsm8k"
DRY_DATA = HERE.parent / "tests" / "data" / "mini_gsm8k_batch"
INSTRUCTION = "Solve the grade-school math problems. End each answer with 'The answer is N.'"
FORMAT = "batch-chat-v1"  # bump when the prompt layout or the answer rule changes: the work folder changes with it
STYLES = ("indexed", "auto_demo")
GROUPS = {"sequential": "seq", "similarity": "sim", "knn": "knn"}
ALIAS = "qwen2.5-coder-1.5b-instruct"


@dataclass(frozen=True)
class Cond:
    """One condition of the grid: batch size, answer style, grouping, demonstrations ratio (None: uncompressed)
    and permutation votes."""

    k: int
    style: str = "indexed"
    group: str = "sequential"
    ratio: float | None = None
    votes: int = 1
    blocks: bool = False  # compression may drop whole demonstration blocks (BatchConfig.drop_blocks)

    @property
    def name(self) -> str:
        demos = "full" if self.ratio is None else f"c{self.ratio:g}" + ("-blocks" if self.blocks else "")
        return f"k{self.k}-{self.style}-{GROUPS[self.group]}-{demos}" + (f"-v{self.votes}" if self.votes > 1 else "")

    @property
    def baseline(self) -> "Cond":
        """K = 1, one by one, with the same demonstrations."""
        return Cond(1, ratio=self.ratio, blocks=self.blocks)


def grid(ratio: float, votes: int) -> list[Cond]:
    out = [Cond(1), Cond(1, ratio=ratio)]
    out += [Cond(k, s, "sequential", r) for r in (None, ratio) for k in (2, 3, 4, 6) for s in STYLES]
    out += [Cond(k, "indexed", ratio=ratio, blocks=True) for k in (1, 4, 6)]
    out += [Cond(k, s, g) for k in (4, 6) for g in ("similarity", "knn") for s in STYLES]
    out += [Cond(k, s, votes=votes) for k in (4, 6) for s in STYLES]
    return out


def core(ratio: float, votes: int) -> list[Cond]:
    return [Cond(1), *(Cond(k, s) for k in (4, 6) for s in STYLES), Cond(4, votes=votes), Cond(6, votes=votes)]


def dry_conditions(ratio: float, votes: int) -> list[Cond]:
    return [Cond(1), Cond(1, ratio=ratio), Cond(2), Cond(2, ratio=ratio), Cond(3), Cond(3, "auto_demo"),
            Cond(3, "auto_demo", "knn"), Cond(3, "indexed", "similarity"), Cond(3, votes=votes),
            Cond(2, ratio=ratio, blocks=True)]


def _csv(text: str | None, cast=str) -> list | None:
    return None if text is None else [cast(x.strip()) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="GSM8K folder (train.jsonl, test.jsonl)")
    ap.add_argument("--n", type=int, default=None, help="test questions (default 120; rounded up to whole blocks)")
    ap.add_argument("--block", type=int, default=None, help="questions per block, a multiple of every K (default 24)")
    ap.add_argument("--demos", type=int, default=None, help="train demonstrations (default 12)")
    ap.add_argument("--conditions", default=None,
                    help="'core' (default), 'grid', or comma-separated names such as k4-auto_demo-seq-full")
    ap.add_argument("--k", help="keep only these batch sizes, e.g. 1,4,6")
    ap.add_argument("--style", help="keep only these styles: indexed, auto_demo")
    ap.add_argument("--group", help="keep only these groupings: sequential, similarity, knn")
    ap.add_argument("--demo-mode", help="keep only these demonstrations: full, compressed (every block thinned), "
                                        "blocks (whole blocks dropped first)")
    ap.add_argument("--voting", choices=("with", "without"), help="keep only conditions with / without voting")
    ap.add_argument("--ratio", type=float, default=0.3, help="ratio of the compressed demonstrations")
    ap.add_argument("--votes", type=int, default=3, help="P, the most permutations of a voting condition")
    ap.add_argument("--max-tokens-per-item", type=int, default=256)
    ap.add_argument("--max-retries", type=int, default=1, help="re-asks of failed items (smaller batches)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--order", choices=("condition", "block"), default="condition",
                    help="condition: each condition over all blocks (its demonstration prefix is evaluated once); "
                         "block: every condition on a block before the next (a stopped run is paired sooner, but "
                         "each switch re-evaluates a ~2k-token prefix)")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    ap.add_argument("--n-ctx", type=int, default=8192,
                    help="context (K = 6 Auto-Demo with 12 demonstrations needs ~6k with its output budget)")
    ap.add_argument("--chat-format", default="chatml", help="llama_cpp.server --chat_format (Qwen2.5 uses ChatML)")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per call (one call answers K questions)")
    ap.add_argument("--dry", action="store_true", help="scripted server, mini data, stand-in compressor: seconds")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--work", type=Path, default=None, help="records folder (default results/quality_work)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    args.data = args.data or (DRY_DATA if args.dry else DEFAULT_DATA)
    args.n = args.n or (12 if args.dry else 120)
    args.block = args.block or (6 if args.dry else 24)
    args.demos = args.demos or (4 if args.dry else 12)
    if args.dry:
        args.work = args.work or Path(tempfile.mkdtemp(prefix="bench_batch_llm_dry_"))
    args.stem = "bench_batch_llm_dry" if args.dry else "bench_batch_llm"
    try:
        args.conds = select(args)
    except ValueError as exc:
        ap.error(str(exc))
    if bad := [c.k for c in args.conds if args.block % c.k]:
        ap.error(f"--block {args.block} is not a multiple of K = {sorted(set(bad))}")
    if args.votes < 2 or not 0 < args.ratio < 1 or args.n < 1:
        ap.error("--votes must be >= 2, --ratio in (0, 1), --n >= 1")
    return args


def select(args: argparse.Namespace) -> list[Cond]:
    """The conditions asked for, filtered, each with its K = 1 baseline (same demonstrations) added."""
    every = {c.name: c for c in grid(args.ratio, args.votes) + dry_conditions(args.ratio, args.votes)}
    spec = args.conditions or ("dry" if args.dry else "core")
    presets = {"core": core, "grid": grid, "dry": dry_conditions}
    if spec in presets:
        conds = presets[spec](args.ratio, args.votes)
    else:
        unknown = [n for n in _csv(spec) if n not in every]
        if unknown:
            raise ValueError(f"unknown conditions {unknown}; presets {sorted(presets)} or names such as "
                             f"{', '.join(list(every)[:4])} (full list: --conditions grid with --report-only)")
        conds = [every[n] for n in _csv(spec)]
    keep = {"k": _csv(args.k, int), "style": _csv(args.style), "group": _csv(args.group)}
    for field, allowed in keep.items():
        if allowed is not None:
            conds = [c for c in conds if getattr(c, field) in allowed]
    if args.demo_mode is not None:
        mode = {c: "full" if c.ratio is None else "blocks" if c.blocks else "compressed" for c in conds}
        conds = [c for c in conds if mode[c] in _csv(args.demo_mode)]
    if args.voting is not None:
        conds = [c for c in conds if (c.votes > 1) == (args.voting == "with")]
    if not conds:
        raise ValueError("no condition left after the filters")
    return list(dict.fromkeys([b for c in conds for b in (c.baseline, c)]))


# ---------------------------------------------------------------- the run


def work_dir(args: argparse.Namespace) -> Path:
    # What changes every result changes the folder; --n and the conditions only add to it.
    key = {"target": "dry" if args.dry else ALIAS, "data": args.data.name, "demos": args.demos, "block": args.block,
           "instruction": INSTRUCTION, "format": FORMAT, "max_tokens_per_item": args.max_tokens_per_item,
           "max_retries": args.max_retries, "seed": args.seed, "chat_format": args.chat_format}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    return (args.work or HERE / "results" / "quality_work") / f"batch-{digest}"


def blocks(samples: list, size: int) -> list[list]:
    return [samples[i : i + size] for i in range(0, len(samples), size)]


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def lenient(r, want: str) -> bool:
    """Right by the last number of the answer, for answers in the right place that missed 'The answer is N'
    (unparseable) or were cut off (truncated): tells format failures from wrong reasoning."""
    if r.ok:
        return same_number(r.final, want)
    if r.status not in ("unparseable", "truncated") or not r.answer:
        return False
    numbers = re.findall(r"-?\d[\d,]*\.?\d*", r.answer)
    return bool(numbers) and same_number(numbers[-1].replace(",", "").rstrip("."), want)


def same_number(a: str | None, b: str | None) -> bool:
    try:
        return a is not None and b is not None and math.isclose(float(a), float(b), abs_tol=1e-6)
    except ValueError:
        return False


class DryCompressor:
    """The dry run's stand-in for the scorer: drops every third plain word of each line (markers, numbers and the
    answer phrase kept), so the compressed-prefix path runs without loading a model."""

    cache_key = "dry-compressor-v1"

    def compress(self, prompt, ratio, *, keep=(), target_tokenizer=None):
        from lingua_compress.segment import PART_SEPARATOR, build_parts

        text, _ = build_parts(prompt)
        kept = re.compile(r"[\[\]\d:]|^(The|answer|is)$")

        def line(words: list[str]) -> str:
            return " ".join(w for j, w in enumerate(words) if j % 3 != 2 or kept.search(w))

        out = PART_SEPARATOR.join("\n".join(line(ln.split(" ")) for ln in part.split("\n"))
                                  for part in text.split(PART_SEPARATOR))
        return type("Result", (), {"text": out})()


def embedder_name(args: argparse.Namespace) -> str:
    from lingua_compress.batch.group import minilm_available

    return "tfidf" if args.dry or not minilm_available() else "all-MiniLM-L6-v2"


def tools(args: argparse.Namespace, conds: list[Cond]) -> dict:
    """Compressor and embedder, loaded only when a condition needs them."""
    out: dict = {"compressor": None, "embed": None}
    if any(c.ratio for c in conds):
        if args.dry:
            out["compressor"] = DryCompressor()
        else:
            from lingua_compress import Compressor

            out["compressor"] = Compressor()
    if any(c.group != "sequential" for c in conds):
        from lingua_compress.batch import MiniLMEmbedder, TfidfEmbedder

        out["embed"] = TfidfEmbedder() if embedder_name(args) == "tfidf" else MiniLMEmbedder()
    return out


def fingerprint(cond: Cond, embedder: str) -> str:
    """What a record depends on beyond the work folder: the embedder of similarity / kNN groups."""
    return embedder if cond.group != "sequential" else ""


def server_command(args: argparse.Namespace, port: int, work: Path, gold: dict[str, str], samples) -> list[str]:
    from llm_server import fake_command, llama_command

    if args.dry:
        answers = work / "dry_answers.json"
        answers.write_text(json.dumps({" ".join(s.fields[0][1].split()): final(gold[s.id]) for s in samples}))
        return fake_command(port, answers, wrong_from=3)
    from lingua_compress.models import cache_dir
    from quality_targets import QWEN_15B, assemble

    gguf = assemble(QWEN_15B, cache_dir() / "targets")  # sha256-checked once; see quality_targets
    return llama_command(gguf, port, alias=ALIAS, n_ctx=args.n_ctx, threads=args.threads,
                         chat_format=args.chat_format)


def run_block(ctx: dict, cond: Cond, block: list, index: int) -> None:
    """Ask one block under one condition and append a record per question (shares of the block's cost)."""
    from lingua_compress.batch import GSM8K_PATTERN, BatchConfig, BatchFormat, run_batched

    args, kit, gold = ctx["args"], ctx["kit"], ctx["gold"]
    cfg = BatchConfig(batch_size=cond.k, group=cond.group, seed=args.seed, ratio=cond.ratio, votes=cond.votes,
                      drop_blocks=cond.blocks,
                      max_tokens_per_item=args.max_tokens_per_item, max_retries=args.max_retries, concurrency=1)
    started = time.perf_counter()
    res = run_batched(block, ctx["llm"], demos=ctx["demos"], instruction=INSTRUCTION, config=cfg,
                      fmt=BatchFormat(style=cond.style, answer_pattern=GSM8K_PATTERN), compressor=kit["compressor"],
                      embed=kit["embed"], progress=ctx["bar"].update)
    wall = time.perf_counter() - started
    check_accounted(res, block)
    failed = [r.call_error for r in res.items.values() if r.call_error]
    if failed:  # the server's fault, not the model's: record nothing, so a rerun asks again
        raise RuntimeError(f"{cond.name}, block {index}: {len(failed)} call(s) failed: {failed[0]}")
    n, c = len(block), res.cost
    for s in block:
        r, v = res.items[s.id], res.votes.get(s.id)
        want = final(gold[s.id])
        ctx["store"].add({
            "cond": cond.name, "id": s.id, "block": index, "question_sha": sha(s.text), "status": r.status,
            "predicted": r.final, "gold": want, "correct": r.ok and same_number(r.final, want),
            "lenient": lenient(r, want), "slot": r.slot,
            "attempts": r.attempts, "votes": list(v.answers) if v else None,
            "prompt_tokens": round(c.prompt_tokens / n, 2), "completion_tokens": round(c.completion_tokens / n, 2),
            "calls": round(c.calls / n, 4), "seconds": round(wall / n, 3), "usage_source": c.usage_source,
            "prefix_key": res.prefix.key[:16], "prefix_compressed": res.prefix.compressed,
            "fp": fingerprint(cond, ctx["embedder"]), "note": r.note[:200], "text": (r.answer or "")[:1500]})


def check_accounted(res, block: list) -> None:
    """Every id of the block back exactly once, under its own id, with a known status: else stop the run."""
    from lingua_compress.batch import STATUSES

    ids = [s.id for s in block]
    if list(res.items) != ids or any(r.id != i or r.status not in STATUSES for i, r in res.items.items()):
        got = [(i, r.id, r.status) for i, r in res.items.items()]
        raise RuntimeError(f"ids not accounted for: sent {ids}, got {got}")


def pending(conds: list[Cond], parts: list[list], store: Store, embedder: str) -> list[tuple[int, Cond]]:
    """(block, condition) pairs with a question lacking a current record, block by block."""
    return [(b, c) for b, block in enumerate(parts) for c in conds
            if any((store.get(c.name, s.id) or {}).get("fp") != fingerprint(c, embedder) for s in block)]


def evaluate(args: argparse.Namespace, samples, demos, gold, store: Store, work: Path) -> None:
    """Every (block, condition) without records, in --order; records are appended block by block."""
    from tqdm import tqdm

    from lingua_compress.llm import OpenAIClient
    from llm_server import free_port, serve

    parts = blocks(samples, args.block)
    embedder = embedder_name(args)
    todo = pending(args.conds, parts, store, embedder)
    if not todo:
        return
    if args.order == "condition":
        rank = {c.name: k for k, c in enumerate(args.conds)}
        todo.sort(key=lambda t: (rank[t[1].name], t[0]))
    kit = tools(args, [c for _, c in todo])
    port = free_port()
    with serve(server_command(args, port, work, gold, samples), port, work / "server.log") as url, \
            tqdm(total=sum(len(parts[b]) for b, _ in todo), desc="batch-llm", file=sys.stderr, unit="q") as bar:
        llm = OpenAIClient(url, ALIAS, chat=True, api_key_env="", timeout_s=args.timeout, max_retries=1,
                           max_concurrency=1, extra_body={"repeat_penalty": 1.0, "top_k": 1, "seed": args.seed})
        ctx = {"args": args, "kit": kit, "gold": gold, "demos": demos, "llm": llm, "store": store, "bar": bar,
               "embedder": embedder}
        for b, cond in todo:
            bar.set_postfix_str(f"{cond.name} block {b}")
            run_block(ctx, cond, parts[b], b)


def run(args: argparse.Namespace) -> dict:
    n_blocks = math.ceil(args.n / args.block)
    samples, demos, gold = load(args.data, n_blocks * args.block, args.demos)
    if len(samples) < args.n:
        raise SystemExit(f"{args.data} has only {len(samples)} test questions; asked for {args.n}")
    work = work_dir(args)
    work.mkdir(parents=True, exist_ok=True)
    store = Store(work / "records.jsonl", ("cond", "id"))
    started = time.perf_counter()
    if not args.report_only:
        evaluate(args, samples, demos, gold, store, work)
    from batch_llm_report import report

    return report(args, samples, gold, store, work, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM -> SystemExit, so the server is stopped on the way out like on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
