"""Speed, memory and ratio precision of compress() on an 8-shot GSM8K chain-of-thought prompt.

    python benchmarks/bench_compress.py [--data ../shared/data/gsm8k] [--repeats 3] [--out benchmarks/results]
    python benchmarks/bench_compress.py --dtype float32        # the path of a CPU without native bf16
    python benchmarks/bench_compress.py --dtype float32 --packed-linear off --suffix _aten   # ATen's linear
    python benchmarks/bench_compress.py --attention sdpa --suffix _sdpa     # torch's fused attention kernel
    python benchmarks/bench_compress.py --dry                  # wiring check: one short demonstration, 1 repeat

Builds the prompt from 8 train demonstrations with their worked solutions (calculator annotations removed,
"####" written as "The answer is") plus one test question, about 2,400 scorer tokens. Compresses it at ratios
0.5, 0.2 and 0.1, interleaved, best of --repeats (this machine's timings are noisy; the load average is recorded),
and prints one JSON object per run plus a summary; results are saved as JSON. Model load is excluded from the
timings; the default model is converted (if needed) in a subprocess so its conversion peak does not count.

The limit it is measured against, in the same run: one plain forward pass of the same model, dtype and device over
the same prompt tokens (one call, no cache), then the scorer's own head (its vocabulary mode) for every token, best
of the same repeats. ``ours_over_one_pass`` is compression seconds / that; with the CPU's flags, torch's threads and
the scorer's backend it makes a number taken on a noisy shared machine comparable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from quality_report import machine  # noqa: E402  (CPU model, count, and the flags that pick the scorer's dtype)

DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "gsm8k"
RATIOS = (0.5, 0.2, 0.1)
INSTRUCTION = "Please reference the following examples to answer the math question."


def clean(answer: str) -> str:
    return re.sub(r"<<[^>]*>>", "", answer).replace("#### ", "The answer is ")


def demonstrations(data: Path, shots: int = 8, min_lines: int = 8) -> tuple[list[str], list[dict]]:
    """Long worked solutions, as in LLMLingua's CoT example: the first train rows with >= min_lines lines."""
    train = [json.loads(line) for line in (data / "train.jsonl").open()]
    rows = [r for r in train if r["answer"].count("\n") >= min_lines][:shots]
    return [f"Question: {r['question']}\nLet's think step by step\n{clean(r['answer'])}" for r in rows], rows


def build_prompt(data: Path, shots: int = 8, test_index: int = 2):
    from lingua_compress import Prompt

    test = [json.loads(line) for line in (data / "test.jsonl").open()]
    demos, rows = demonstrations(data, shots)
    question = f"Question: {test[test_index]['question']}"
    return Prompt(instruction=INSTRUCTION, demonstrations=demos, question=question), rows, test[test_index]


def numbers_check(prompt, rows, result) -> dict:
    """Every number of the question, and of each kept demonstration's final answer line, must survive."""
    question_numbers = re.findall(r"\d+(?:[.,]\d+)*", prompt.question)
    missing_q = [n for n in question_numbers if n not in result.text]
    kept_demos, missing_answers = 0, []
    for demo, row in zip(prompt.demonstrations, rows):
        span = (result.original.find(demo), result.original.find(demo) + len(demo))
        if not any(s < span[1] and e > span[0] for s, e in result.kept_spans):
            continue
        kept_demos += 1
        answer = row["answer"].split("####")[-1].strip()
        if f"The answer is {answer}" not in result.text and f"answer is {answer}" not in result.text \
                and not re.search(rf"\b{re.escape(answer)}\b", result.text):
            missing_answers.append(answer)
    return {"question_numbers": len(question_numbers), "question_numbers_missing": missing_q,
            "kept_demonstrations": kept_demos, "answers_missing": missing_answers}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def one_pass(scorer, text: str) -> tuple[float, float]:
    """Seconds of the body over ``text``'s tokens in one call, and of body plus the scorer's head over every token:
    what a single non-iterative scoring pass costs at least. Logits only as the scorer computes them (no
    [tokens, vocab] tensor: 2.6 GB for this prompt in fp32)."""
    import torch

    ids = [scorer._bos] + scorer.tokenize(text)[0].tolist()
    x = torch.as_tensor(ids, device=scorer._head.device)[None]
    t = time.perf_counter()
    with torch.inference_mode():
        hidden = scorer._body(input_ids=x, use_cache=False).last_hidden_state[0]
        body_s = time.perf_counter() - t
        scorer.nll_from_hidden(hidden[:-1], x[0, 1:])
    return body_s, time.perf_counter() - t


def chunked_pass(scorer, text: str) -> float:
    """Seconds of ``token_nll`` over ``text``: every token scored once, forwarded in 512-token chunks through the
    KV cache, head on every token. The floor for any window-by-window scorer: the single pass above pays attention
    quadratic in the whole prompt (eager), which windows never do, so on long prompts it is no lower bound."""
    ids = scorer.tokenize(text)[0]
    t = time.perf_counter()
    scorer.token_nll(ids)
    return time.perf_counter() - t


def linear_floor(scorer, n_tokens: int, rows: int, repeats: int) -> dict:
    """The time the body's linear layers alone need to forward ``n_tokens`` on this machine, in ``rows``-token
    matmuls through the model's own layers and kernels (one layer timed per distinct shape, best of ``repeats``),
    and the rate that implies. Nothing that sends every token through every layer of this model, in this dtype and
    kernel, can be faster: near this floor, only fewer forwarded tokens or a smaller model help."""
    import torch

    from lingua_compress.cpu_kernels import PackedLinear

    shapes: dict[tuple, list] = {}
    for module in scorer._body.modules():
        if isinstance(module, (torch.nn.Linear, PackedLinear)):
            shapes.setdefault((module.out_features, module.in_features, type(module)), []).append(module)
    seconds, flops = 0.0, 0
    with torch.inference_mode():
        for (out_f, in_f, _), layers in shapes.items():
            x = torch.randn(rows, in_f, dtype=scorer._dtype, device=scorer._head.device)
            layers[0](x)  # first-call allocation
            best = float("inf")
            for _ in range(max(1, repeats)):
                t = time.perf_counter()
                layers[0](x)
                best = min(best, time.perf_counter() - t)
            seconds += best * len(layers) * n_tokens / rows
            flops += 2 * out_f * in_f * len(layers) * n_tokens
    return {"linear_floor_s": seconds, "linear_gflop": round(flops / 1e9, 1),
            "linear_gflops_per_s": round(flops / seconds / 1e9, 1) if seconds else None, "linear_rows": rows}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--suffix", default="", help="results file bench_compress{SUFFIX}.json (e.g. _avx2)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    ap.add_argument("--bf16-embedding", default="auto", choices=("auto", "on", "off"),
                    help="on the fp32 path, keep the embedding table in bf16 (Compressor(bf16_embedding=...))")
    ap.add_argument("--packed-linear", default="auto", choices=("auto", "on", "off"),
                    help="on the CPU, oneDNN-prepacked linear layers (Compressor(packed_linear=...))")
    ap.add_argument("--attention", default="eager", choices=("eager", "sdpa"),
                    help="the scorer's attention kernel (Compressor(attention=...))")
    ap.add_argument("--dry", action="store_true", help="one short demonstration, 1 repeat, bench_compress_dry.json")
    args = ap.parse_args(argv)
    if args.dry:
        args.repeats = 1
    return args


def time_runs(compressor, prompt, repeats: int) -> tuple[dict[float, list], list, float]:
    """Best-of timings per ratio, interleaved, with one plain and one chunked forward pass after each round."""
    compressor.compress(prompt, 0.5)  # warm-up: first-call allocations and kernel selection
    runs: dict[float, list] = {r: [] for r in RATIOS}
    passes, rss_before_pass = [], None
    for _ in range(repeats):
        for ratio in RATIOS:  # interleaved, so drift in machine load hits every ratio alike
            t = time.perf_counter()
            res = compressor.compress(prompt, ratio)
            runs[ratio].append((time.perf_counter() - t, res))
        rss_before_pass = rss_before_pass or peak_rss_mb()  # the one pass's own peak is not the compressor's
        passes.append((*one_pass(compressor.scorer, res.original), chunked_pass(compressor.scorer, res.original)))
    return runs, passes, rss_before_pass


def ratio_row(ratio: float, runs: list, prompt, rows, pass_s: float, chunked_s: float, floor_s: float) -> dict:
    wall, res = min(runs, key=lambda x: x[0])
    return {
        "ratio_requested": ratio,
        "ratio_achieved": round(res.kept_ratio, 4),
        "ratio_error_pct": round(100 * (res.kept_ratio - ratio) / ratio, 2),
        "original_tokens": res.original_tokens,
        "compressed_tokens": res.compressed_tokens,
        "target_tokens": res.target_tokens,
        "wall_s_best": round(wall, 3),
        "wall_s_all": [round(w, 3) for w, _ in runs],
        "tokens_per_s": round(res.original_tokens / wall, 1),
        "ours_over_one_pass": round(wall / pass_s, 2),
        "ours_over_chunked_pass": round(wall / chunked_s, 2),
        "ours_over_linear_floor": round(wall / floor_s, 2),
        "scored_tokens": res.timings.scored_tokens,
        "parts": [p.__dict__ for p in res.parts],
        **numbers_check(prompt, rows, res),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.model is None:  # convert (if needed) outside this process: its 3 GB peak is not ours
        code = "from lingua_compress.models import default_model_path; default_model_path()"
        subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)

    from lingua_compress import Compressor

    prompt, rows, _ = build_prompt(args.data, shots=1 if args.dry else 8)
    compressor = Compressor(args.model, dtype=args.dtype,
                            bf16_embedding={"auto": None, "on": True, "off": False}[args.bf16_embedding],
                            packed_linear={"auto": None, "on": True, "off": False}[args.packed_linear],
                            attention=args.attention)
    t0 = time.perf_counter()
    compressor.scorer
    load_s = time.perf_counter() - t0
    runs, passes, rss_before_pass = time_runs(compressor, prompt, args.repeats)
    body_s, pass_s, chunked_s = (min(p[i] for p in passes) for i in range(3))
    last = runs[RATIOS[-1]][-1][1]
    floor = linear_floor(compressor.scorer, last.timings.scored_tokens, compressor.config.window_tokens,
                         max(3, args.repeats))
    report = []
    for ratio in RATIOS:
        report.append(ratio_row(ratio, runs[ratio], prompt, rows, pass_s, chunked_s, floor["linear_floor_s"]))
        print(json.dumps(report[-1]))
    summary = {
        "benchmark": "bench_compress",
        "model": compressor.scorer.name,
        "model_load_s": round(load_s, 2),
        "peak_rss_mb": round(rss_before_pass, 1),
        "peak_rss_mb_with_one_pass": round(peak_rss_mb(), 1),
        "one_pass_s": round(pass_s, 3),
        "one_pass_body_s": round(body_s, 3),
        "one_pass_head": f"scorer head, vocab={compressor.scorer.vocab}, every token",
        "chunked_pass_s": round(chunked_s, 3),
        **floor,
        "linear_floor_s": round(floor["linear_floor_s"], 4),
        "backend": dataclasses.asdict(compressor.scorer.backend),
        "torch_threads": torch_threads(),
        **machine(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "repeats": args.repeats,
        "dry": args.dry,
        "runs": report,
        "sample_0.2": next(r for w, r in runs[0.2]).text,
    }
    print(json.dumps({k: v for k, v in summary.items() if k not in ("runs", "sample_0.2")}))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "bench_compress_dry.json" if args.dry else f"bench_compress{args.suffix}.json"
    (args.out / name).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
