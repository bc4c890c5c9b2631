"""Could the first layers of the scorer stand in for all of it on a slow CPU? (issue 11: a cheap coarse pass)

    python benchmarks/check_early_exit.py [--data ../shared/data/gsm8k] [--layers 18,12,9,6] [--out benchmarks/results]

Gemma 3 270M has 18 decoder layers, and on an fp32-only CPU its body's matmuls are most of a compression's time.
This keeps only the first L layers (then the final norm and the tied head, as a logit lens) and compares against the
whole model, on bench_compress's 8-shot GSM8K prompt and the first 6,000 characters of the README (prose,
markdown): every token's NLL (Pearson, and Spearman of sentence means: the coarse stage ranks sentences), the kept
text at ratios 0.5, 0.2 and 0.1 (Jaccard of the kept characters against the whole model's), and seconds per
compression. The issue's gate for an approximation: Pearson >= 0.995 and >= 95 % of the kept set identical at 0.2.
Writes check_early_exit.json. Needs the embedded model; not run by the tests (it only measures).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_compress import DEFAULT_DATA, build_prompt  # noqa: E402
from quality_report import emit, machine  # noqa: E402

RATIOS = (0.5, 0.2, 0.1)


def keep_first_layers(compressor, layers: int) -> None:
    """Cut the scorer's decoder stack to its first ``layers`` in place (the final norm and head stay)."""
    cut_stack(compressor.scorer._body, layers)


def cut_stack(body, layers: int) -> None:
    """Cut a decoder body (and its config, shared with the LM's) to its first ``layers`` in place."""
    import torch

    if not 1 <= layers <= len(body.layers):
        raise ValueError(f"--layers {layers}: the model has {len(body.layers)}")
    body.layers = torch.nn.ModuleList(list(body.layers)[:layers])
    cut_config(body.config, layers)


def cut_config(cfg, layers: int) -> None:
    """A model config cut to its first ``layers`` decoder layers in place."""
    cfg.num_hidden_layers = layers
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = list(cfg.layer_types)[:layers]


def kept_chars(text: str, spans) -> np.ndarray:
    mask = np.zeros(len(text), dtype=bool)
    for s, e in spans:
        mask[s:e] = True
    return mask & np.array([not c.isspace() for c in text])


def sentence_means(text: str, offsets: np.ndarray, nll: np.ndarray) -> np.ndarray:
    """Mean token NLL per sentence (a token belongs to the sentence its first character is in)."""
    ends = [m.end() for m in re.finditer(r"[.!?\n]+\s*", text)] + [len(text)]
    which = np.searchsorted(np.asarray(ends), offsets[: len(nll), 0], side="right")
    return np.array([nll[which == k].mean() for k in np.unique(which)])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def measure(compressor, texts: dict) -> dict:
    out = {}
    for name, prompt in texts.items():
        row = {}
        for ratio in RATIOS:
            t = time.perf_counter()
            res = compressor.compress(prompt, ratio)
            seconds = round(time.perf_counter() - t, 3)
            kept = kept_chars(res.original, res.kept_spans)
            row[ratio] = {"seconds": seconds, "kept": kept, "tokens": res.compressed_tokens}
        ids, offsets = compressor.scorer.tokenize(res.original)  # the prompt as one text, as it was scored
        row |= {"text": res.original, "nll": np.asarray(compressor.scorer.token_nll(ids), dtype=np.float64),
                "offsets": np.asarray(offsets)}
        out[name] = row
    return out


def compare(base: dict, other: dict) -> dict:
    rows = {}
    for name, a in base.items():
        b, text = other[name], a["text"]
        n = min(len(a["nll"]), len(b["nll"]))
        row = {"tokens": n, "token_nll_pearson": round(float(np.corrcoef(a["nll"][:n], b["nll"][:n])[0, 1]), 4),
               "sentence_nll_spearman": round(spearman(sentence_means(text, a["offsets"], a["nll"][:n]),
                                                       sentence_means(text, a["offsets"], b["nll"][:n])), 4)}
        for ratio in RATIOS:
            ka, kb = a[ratio]["kept"], b[ratio]["kept"]
            row[str(ratio)] = {"kept_jaccard": round(float((ka & kb).sum() / max((ka | kb).sum(), 1)), 4),
                               "seconds": b[ratio]["seconds"], "seconds_whole_model": a[ratio]["seconds"]}
        rows[name] = row
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--layers", default="18,12,9,6", help="descending; the first is the reference (all 18)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    layers = [int(x) for x in args.layers.split(",")]
    if layers != sorted(layers, reverse=True):
        ap.error("--layers must descend: the stack is cut in place, one model for all")
    from lingua_compress import Compressor

    texts = {"gsm8k_8shot": build_prompt(args.data)[0], "readme_prose": (HERE.parent / "README.md").read_text()[:6000]}
    compressor = Compressor()
    compressor.compress("A short warm-up text for the CPU kernels, not measured.", 0.5)
    keep_first_layers(compressor, layers[0])
    base = measure(compressor, texts)
    report = {"backend": str(compressor.scorer.backend), **machine(), "reference_layers": layers[0], "layers": {}}
    for n in layers[1:]:
        keep_first_layers(compressor, n)
        report["layers"][str(n)] = compare(base, measure(compressor, texts))
    emit(report, args.out, "check_early_exit.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
