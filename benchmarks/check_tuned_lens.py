"""Would a learned affine map from an early layer to the last one (a "tuned lens") let the first layers stand in
for the whole scorer on a slow CPU? (issue 11: the fast mode the AVX2 floor asks for)

    python benchmarks/check_tuned_lens.py [--layers 4,6,9,12] [--fit-tokens 60000] [--out benchmarks/results]

check_early_exit.py cut the stack and read the early hidden state through the final norm and head (a logit lens):
token NLL Pearson 0.20-0.57 against the whole model, far from the issue's gate. This fits, per cut, one affine map
from the cut layer's scale-normalised hidden state to the whole model's final normed state (ridge least squares on
text disjoint from the evaluation: GSM8K train questions and answers past the benchmark prompt's, counterfactual-NQ
passages, ShareGPT turns), then compares as check_early_exit does: token NLL Pearson, sentence Spearman, the kept
characters' Jaccard at 0.5 / 0.2 / 0.1 and seconds per compression, for the raw cut and the lensed cut.
Writes check_tuned_lens.json. Needs the embedded model; not run by the tests (it only measures).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_compress import DEFAULT_DATA, build_prompt  # noqa: E402
from check_early_exit import compare, keep_first_layers, measure  # noqa: E402
from quality_report import emit, machine  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data"
CHUNK = 1024


def fit_texts(gsm8k: Path, used: str, limit_chars: int) -> list[str]:
    """Round-robin over three sources so every kind of text is in the fit, none of it in the evaluation."""
    sources = [[], [], []]
    for line in (gsm8k / "train.jsonl").open():
        row = json.loads(line)
        if row["question"] not in used:
            sources[0].append(f"Question: {row['question']}\nAnswer: {row['answer']}")
    for line in (SHARED / "nq_conflicts_1500.jsonl").open():
        sources[1].append(json.loads(line)["passage"])
    for line in (SHARED / "sharegpt_400.jsonl").open():
        conv = json.loads(line)
        turns = conv.get("conversations") or conv.get("messages") or []
        sources[2].append("\n\n".join(str(t.get("value") or t.get("content") or "") for t in turns)[:6000])
    out, total = [], 0
    for group in zip(*sources):
        for text in group:
            out.append(text)
            total += len(text)
        if total >= limit_chars:
            break
    return out


class Recorder:
    """Forward hooks that keep each chosen layer's output hidden state (batch row 0)."""

    def __init__(self, layers, wanted: list[int]) -> None:
        self.states: dict[int, list[np.ndarray]] = {k: [] for k in wanted}
        self.handles = [layers[k - 1].register_forward_hook(self._hook(k)) for k in wanted]

    def _hook(self, k: int):
        def hook(_module, _inputs, output):
            h = output[0] if isinstance(output, tuple) else output
            self.states[k].append(h[0].float().numpy())
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def rms_normalise(h: np.ndarray) -> np.ndarray:
    return h / np.sqrt((h.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6)


def collect(compressor, texts: list[str], layers: list[int], budget: int) -> tuple[dict, np.ndarray]:
    """Each cut layer's states and the final normed state, over ``budget`` tokens (chunks of CHUNK, BOS first)."""
    scorer = compressor.scorer
    body = scorer._body
    rec = Recorder(body.layers, layers)
    finals, seen = [], 0
    with torch.inference_mode():
        for text in texts:
            ids = scorer.tokenize(text)[0][: CHUNK - 1]
            x = torch.as_tensor(np.concatenate([[scorer._bos], ids]), dtype=torch.long)[None]
            finals.append(body(input_ids=x, use_cache=False).last_hidden_state[0].float().numpy())
            seen += x.shape[1]
            if seen >= budget:
                break
    rec.close()
    return {k: np.concatenate(v) for k, v in rec.states.items()}, np.concatenate(finals)


def fit_lens(h: np.ndarray, target: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """W, b minimising |rms_normalise(h) W + b - target|^2 + ridge |W|^2 (float64 normal equations)."""
    x = np.concatenate([rms_normalise(h), np.ones((len(h), 1))], axis=1)
    gram = x.T @ x
    gram[:-1, :-1] += ridge * len(h) * np.eye(h.shape[1])
    sol = np.linalg.solve(gram, x.T @ target.astype(np.float64))
    return sol[:-1].astype(np.float32), sol[-1].astype(np.float32)


class LensNorm(torch.nn.Module):
    """Stands in for the body's final norm after the cut: the fitted map already lands in normed space."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, dtype) -> None:
        super().__init__()
        self.register_buffer("w", torch.as_tensor(weight))
        self.register_buffer("b", torch.as_tensor(bias))
        self.dtype = dtype

    def forward(self, h):
        x = h.float()
        return ((x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)) @ self.w + self.b).to(self.dtype)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--layers", default="12,9,6,4", help="cuts to try, descending (the stack is cut in place)")
    ap.add_argument("--fit-tokens", type=int, default=60000)
    ap.add_argument("--ridge", type=float, default=1e-4)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    layers = [int(x) for x in args.layers.split(",")]
    if layers != sorted(layers, reverse=True):
        ap.error("--layers must descend")
    from lingua_compress import Compressor

    prompt = build_prompt(args.data)[0]
    texts = {"gsm8k_8shot": prompt, "readme_prose": (HERE.parent / "README.md").read_text()[:6000]}
    compressor = Compressor()
    compressor.compress("A short warm-up text for the CPU kernels, not measured.", 0.5)
    used = "\n".join([prompt.instruction, *prompt.demonstrations, prompt.question])
    states, final = collect(compressor, fit_texts(args.data, used, 40 * args.fit_tokens), layers, args.fit_tokens)
    base = measure(compressor, texts)
    body, norm = compressor.scorer._body, compressor.scorer._body.norm
    report = {"backend": str(compressor.scorer.backend), **machine(), "fit_tokens": len(final), "ridge": args.ridge,
              "layers": {}}
    for n in layers:
        keep_first_layers(compressor, n)
        body.norm = norm
        raw = compare(base, measure(compressor, texts))
        w, b = fit_lens(states[n], final, args.ridge)
        body.norm = LensNorm(w, b, compressor.scorer._dtype)
        lensed = compare(base, measure(compressor, texts))
        report["layers"][str(n)] = {"logit_lens": raw, "tuned_lens": lensed}
        print(n, json.dumps({k: v["token_nll_pearson"] for k, v in lensed.items()}), file=sys.stderr)
        emit(report, args.out, "check_tuned_lens.json")  # after each cut: a long run stopped early keeps its rows
    body.norm = norm
    emit(report, args.out, "check_tuned_lens.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
