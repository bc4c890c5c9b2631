"""Same compressions with and without the CPU path's prepacked linear layers (lingua_compress.cpu_kernels).

    python benchmarks/check_packed_linear.py [--data ../shared/data/gsm8k] [--out benchmarks/results]

Compresses bench_compress's 8-shot GSM8K prompt and the first 6,000 characters of the README (prose, markdown) at
ratios 0.5, 0.2 and 0.1 with ``Compressor()`` (packed where available) and ``Compressor(packed_linear=False)``, and
compares the outputs and every token's NLL: fp32 on a CPU without native bf16, bf16 on one with it (the AMX run
is kept as check_packed_linear_amx.json); writes check_packed_linear.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_compress import DEFAULT_DATA, build_prompt  # noqa: E402
from quality_report import emit, machine  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    from lingua_compress import Compressor

    prompt = build_prompt(args.data)[0]
    prose = (HERE.parent / "README.md").read_text()[:6000]
    packed, aten = Compressor(), Compressor(packed_linear=False)
    report = {"backends": [dataclasses.asdict(c.scorer.backend) for c in (packed, aten)], **machine(), "texts": {}}
    for name, text in (("gsm8k_8shot", prompt), ("readme_prose", prose)):
        rows = {}
        for ratio in (0.5, 0.2, 0.1):
            a, b = packed.compress(text, ratio), aten.compress(text, ratio)
            rows[str(ratio)] = {"same_text": a.text == b.text, "same_spans": a.kept_spans == b.kept_spans,
                                "compressed_tokens": [a.compressed_tokens, b.compressed_tokens]}
        ids = packed.scorer.tokenize(a.original)[0]
        x, y = packed.scorer.token_nll(ids), aten.scorer.token_nll(ids)
        rows["token_nll"] = {"tokens": len(ids), "pearson": float(np.corrcoef(x, y)[0, 1]),
                             "max_abs_diff": float(np.abs(x - y).max())}
        report["texts"][name] = rows
    emit(report, args.out, "check_packed_linear.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
