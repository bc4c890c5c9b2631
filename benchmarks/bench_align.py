"""Does distribution alignment change the scorer? Held-out perplexity before/after, and kept-set overlap.

    python benchmarks/bench_align.py --pairs PAIRS.jsonl [--adapter DIR | --steps 200 --max-minutes 30]
                                     [--holdout 0.2] [--ratio 0.2] [--model SCORER] [--out FILE]
    python benchmarks/bench_align.py --dry [--model PATH] [--steps 2]      # toy pairs, seconds: checks the wiring

PAIRS is what ``lingua-compress align`` collected (prompt/response JSONL). A seeded split holds out ``--holdout``
of the pairs; the adapter is tuned on the rest (or ``--adapter`` is used as given: it should have been tuned
without the held-out pairs). Reported: the scorer's mean NLL and perplexity on the held-out responses without and
with the adapter (fp32, response tokens only), and the Jaccard overlap of the characters ``compress()`` keeps
at ``--ratio`` on the held-out prompts with and without it (1.0: the adapter changes nothing that is kept).
Prints JSON and writes it to ``--out`` (default results/bench_align.json, or results/bench_align_dry.json).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from lingua_compress.align import Pair, TuneConfig, read_manifest, read_pairs, tune_adapter  # noqa: E402
from lingua_compress.align.evaluate import compare_perplexity, kept_overlap  # noqa: E402

MANIFEST_KEYS = ("base_model", "target", "steps", "stopped_by", "first_loss", "final_loss", "seconds",
                 "seconds_per_step", "device", "pairs", "response_tokens")


def toy_pairs(n: int = 10) -> list[Pair]:
    """Arithmetic questions answered in one fixed style: a pattern a few steps can start to learn."""
    rng = random.Random(0)
    out = []
    for _ in range(n):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        out.append(Pair(f"Question: Natalia sold {a} clips in April and {b} clips in May. How many in total?",
                        f"Natalia sold {a} + {b} = {a + b} clips. The answer is {a + b}."))
    return out


def split(pairs: list[Pair], holdout: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_held = min(len(pairs) - 1, max(1, round(holdout * len(pairs))))
    held = sorted(order[:n_held])
    return [pairs[i] for i in sorted(order[n_held:])], [pairs[i] for i in held]


def _adapter(args: argparse.Namespace, train: list[Pair], workdir: Path) -> tuple[str, dict[str, Any], float]:
    if args.adapter:
        return str(args.adapter), read_manifest(args.adapter), 0.0
    started = time.perf_counter()
    config = TuneConfig(steps=args.steps, max_minutes=args.max_minutes, batch_size=args.batch_size, lr=args.lr,
                        device=args.device, seed=args.seed)
    out = args.keep_adapter or workdir / "adapter"
    result = tune_adapter(train, out, config=config, model=args.model, target=args.target, progress=False)
    return str(result.path), result.manifest, time.perf_counter() - started


def run(args: argparse.Namespace) -> dict[str, Any]:
    from lingua_compress import Compressor
    from lingua_compress.models import load_model

    pairs = toy_pairs() if args.dry else read_pairs(args.pairs)
    # A given adapter tuned on other pairs (``--holdout 1``) is measured on every pair here.
    train, held = ([], pairs) if args.adapter and args.holdout >= 1 else split(pairs, args.holdout, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        adapter, manifest, tune_s = _adapter(args, train, Path(tmp))
        started = time.perf_counter()
        loaded = load_model(args.model, device=args.device, dtype="float32")  # exact NLL for the comparison
        ppl = compare_perplexity(loaded, held, adapter)
        del loaded
        prompts = [p.prompt for p in held[: args.n_overlap]]
        overlap = kept_overlap(prompts, args.ratio, Compressor(args.model, device=args.device),
                               Compressor(args.model, device=args.device, adapter=adapter))
        eval_s = time.perf_counter() - started
    return {
        "mode": "dry" if args.dry else "full",
        "pairs": {"train": len(train), "heldout": len(held)},
        "adapter": None if not (args.adapter or args.keep_adapter) else adapter,
        "manifest": {k: manifest.get(k) for k in MANIFEST_KEYS},
        "perplexity": ppl,
        "overlap": overlap,
        "seconds": {"tune": round(tune_s, 2), "evaluate": round(eval_s, 2)},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=Path, help="prompt/response JSONL from 'lingua-compress align'")
    ap.add_argument("--dry", action="store_true", help="toy pairs and --steps (default 2): checks the wiring")
    ap.add_argument("--adapter", type=Path, help="evaluate this adapter instead of tuning one")
    ap.add_argument("--keep-adapter", type=Path, help="save the adapter tuned here (default: thrown away)")
    ap.add_argument("--model", default=None, help="base scorer (default: the embedded Gemma 3 270M)")
    ap.add_argument("--target", default="", help="target name for the manifest")
    ap.add_argument("--holdout", type=float, default=0.2,
                    help="share of the pairs held out (default 0.2); with --adapter, 1 measures on all of them")
    ap.add_argument("--ratio", type=float, default=0.2)
    ap.add_argument("--n-overlap", type=int, default=20, help="held-out prompts compressed for the overlap")
    ap.add_argument("--steps", type=int, default=None, help="tuning steps (default: 200, or 2 with --dry)")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not args.dry and args.pairs is None:
        ap.error("give --pairs PAIRS.jsonl, or --dry")
    args.steps = args.steps or (2 if args.dry else 200)
    args.out = args.out or HERE / "results" / ("bench_align_dry.json" if args.dry else "bench_align.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
