"""Do the scorer's compute paths keep the fp32 scorer's scores and kept text? (issue 11's accuracy gate)

    python benchmarks/check_backend.py [--data ../shared/data/gsm8k] [--out benchmarks/results]

Compresses bench_compress's 8-shot GSM8K prompt and the first 6,000 characters of the README (prose, markdown) at
ratios 0.5, 0.2 and 0.1 with each compute path this CPU can run, and compares every token's NLL (Pearson) and the
kept characters (Jaccard) against the reference: fp32, ATen's linear, eager attention (the exact path), and against
the previous bf16 default (ATen's linear, eager). On a CPU computing bf16 the paths are the bf16 ones: ATen or
oneDNN-prepacked linear, eager or sdpa attention, plus fp32 with sdpa; on another CPU, fp32 with each kernel. The
gate for a path that is not exact: Pearson >= 0.995 and kept Jaccard >= 0.95 at 0.2. Seconds are single runs, for
orientation only (bench_compress times). Writes check_backend.json. Needs the embedded model; not run by the tests.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_compress import DEFAULT_DATA, build_prompt  # noqa: E402
from check_early_exit import compare, measure  # noqa: E402
from quality_report import emit, machine  # noqa: E402

REFERENCE = "float32/aten/eager"
PREVIOUS = "bfloat16/aten/eager"  # the bf16 CPU default before its linear layers were packed too


def paths(bf16: bool) -> list[str]:
    """dtype/linear/attention names; the reference first."""
    if bf16:
        return [REFERENCE, "float32/aten/sdpa", PREVIOUS, "bfloat16/packed/eager", "bfloat16/packed/sdpa"]
    return [REFERENCE, "float32/aten/sdpa", "float32/packed/eager", "float32/packed/sdpa"]


def compressor(path: str):
    from lingua_compress import Compressor

    dtype, linear, attention = path.split("/")
    c = Compressor(dtype=dtype, packed_linear=linear == "packed", attention=attention)
    c.compress("A short warm-up text for the CPU kernels, not measured.", 0.5)
    return c


def gate(row: dict) -> bool:
    return row["token_nll_pearson"] >= 0.995 and row["0.2"]["kept_jaccard"] >= 0.95


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    from lingua_compress.models import cpu_bf16_feature

    texts = {"gsm8k_8shot": build_prompt(args.data)[0], "readme_prose": (HERE.parent / "README.md").read_text()[:6000]}
    measured, backends = {}, {}
    for path in paths(cpu_bf16_feature() != "none"):
        c = compressor(path)
        backends[path] = str(c.scorer.backend)
        measured[path] = measure(c, texts)
        del c
        gc.collect()  # one model at a time
    report = {**machine(), "reference": REFERENCE, "backends": backends, "vs_reference": {}, "vs_previous": {}}
    for path in measured:
        if path != REFERENCE:
            rows = compare(measured[REFERENCE], measured[path])
            report["vs_reference"][path] = {**rows, "gate": all(gate(r) for r in rows.values())}
        if PREVIOUS in measured and path != PREVIOUS:
            report["vs_previous"][path] = compare(measured[PREVIOUS], measured[path])
    emit(report, args.out, "check_backend.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
