"""compress() on a GPU (issue 11): seconds per prompt, tokens/s through compress_batch, and where the time goes
(kernel launches, GPU-busy time against wall time), for eager and sdpa attention. Random weights, real shapes.

    python benchmarks/bench_gpu.py --make-kit                 # here: the kit, benchmarks/gpu_kit/ (~33 MB, ignored)
    python benchmarks/bench_gpu.py --kit benchmarks/gpu_kit --out "$OUT"     # on the GPU machine (carry the kit)
    python benchmarks/bench_gpu.py --dry                      # wiring check on the CPU: the kit's model shrunk

The GPU machine cannot receive the real 536 MB checkpoint, and speed does not depend on the weights, so the kit holds
only Gemma 3 270M's config, its tokenizer and bench_compress's 8-shot GSM8K prompt (2,487 scorer tokens); the run
builds the model from the config with random weights (bf16 on a GPU), saves it next to the tokenizer and loads it
through ``Compressor(model=that folder)``, the library's own path. Per attention kernel: the best of ``--repeats``
of one ``compress()`` at 0.5 / 0.2 / 0.1 after a warm-up, one plain forward pass over the same tokens, and
``compress_batch`` over ``--batch`` prompts (the demonstrations rotated, so no two are the same text) as tokens/s, one
prompt after another and with ``--batch-size`` prompts' forwards batched (and how many kept the same text); then
one compression at 0.2 under torch's profiler: kernels launched, the GPU's busy time and the host's wall time.
Writes bench_gpu.json (``--dry``: bench_gpu_dry.json). Targets: <= 0.1 s per prompt, >= 50k tokens/s batched.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from quality_report import emit, machine  # noqa: E402

KIT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
RATIOS = (0.5, 0.2, 0.1)
SHRUNK = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 1,
          "num_key_value_heads": 1, "head_dim": 64, "layer_types": ["sliding_attention", "full_attention"]}


def make_kit(kit: Path, data: Path) -> Path:
    """The config and tokenizer of the default scorer, and the benchmark prompt, in ``kit``."""
    from bench_compress import build_prompt

    from lingua_compress.models import default_model_path

    kit.mkdir(parents=True, exist_ok=True)
    source = default_model_path()
    for name in KIT_FILES:
        shutil.copy(source / name, kit / name)
    prompt = build_prompt(data)[0]
    (kit / "prompt.json").write_text(json.dumps({"instruction": prompt.instruction, "question": prompt.question,
                                                 "demonstrations": list(prompt.demonstrations)}, indent=1))
    return kit


def random_model(kit: Path, folder: Path, shrink: bool) -> Path:
    """Gemma 3 from the kit's config with random weights, saved with the kit's tokenizer into ``folder``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(kit, trust_remote_code=False)
    for key, value in (SHRUNK.items() if shrink else ()):
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, trust_remote_code=False)
    model.save_pretrained(folder)
    for name in KIT_FILES[2:]:
        shutil.copy(kit / name, folder / name)
    return folder


def prompts(kit: Path, n: int) -> list:
    """The kit's prompt, and n - 1 more with its demonstrations rotated (same length, different text)."""
    from lingua_compress import Prompt

    p = json.loads((kit / "prompt.json").read_text())
    demos = p["demonstrations"]
    return [Prompt(instruction=p["instruction"], question=p["question"],
                   demonstrations=demos[k % len(demos):] + demos[:k % len(demos)]) for k in range(n)]


def synced(device: str):
    import torch

    return (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)


def best_of(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return min(times)


def plain_pass(scorer, text: str):
    """One forward of the model's body over ``text``'s tokens, no cache: the floor a single pass sets."""
    import torch

    ids = torch.as_tensor([scorer._bos] + scorer.tokenize(text)[0].tolist(), device=scorer._head.device)[None]

    def run() -> None:
        with torch.inference_mode():
            scorer._body(input_ids=ids, use_cache=False)
    return run


def profile(compressor, prompt, device: str) -> dict:
    """Kernels launched and device-busy time during one compression at 0.2, against its wall time."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync = synced(device)
    sync()
    t = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        compressor.compress(prompt, 0.2)
        sync()
    wall = time.perf_counter() - t
    events = prof.events()
    kernels = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    launches = sum(e.name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch") for e in events)
    syncs = sum(e.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync") for e in events)
    busy = sum(getattr(e, "device_time", 0.0) for e in kernels) / 1e6  # microseconds
    return {"wall_s": round(wall, 4), "kernels": len(kernels), "launch_calls": launches, "sync_or_copy_calls": syncs,
            "device_busy_s": round(busy, 4), "device_busy_share": round(busy / wall, 3) if wall else None,
            "cpu_ops": sum(getattr(e, "device_type", None) == torch.autograd.DeviceType.CPU for e in events)}


def measure(folder: Path, kit: Path, attention: str, args: argparse.Namespace) -> dict:
    from lingua_compress import Compressor

    c = Compressor(model=str(folder), device=args.device, attention=attention)
    scorer = c.scorer
    device = str(scorer._head.device)
    sync = synced(device)
    prompt = prompts(kit, 1)[0]
    first = c.compress(prompt, 0.5)  # warm-up: allocator, kernels, caches
    row = {"attention": attention, "backend": asdict(first.backend) if first.backend else None,
           "prompt_tokens": first.original_tokens, "runs": []}
    for ratio in RATIOS:
        s = best_of(lambda: c.compress(prompt, ratio), args.repeats, sync)
        row["runs"].append({"ratio": ratio, "wall_s_best": round(s, 4)})
    row["one_pass_s"] = round(best_of(plain_pass(scorer, str(first.original)), args.repeats, sync), 4)
    batch = prompts(kit, args.batch)
    texts, spans = {}, {}
    for size in (1, args.batch_size):  # one prompt after another, then the batched forwards (library default)
        sync()
        t = time.perf_counter()
        results = c.compress_batch(batch, 0.2, batch_size=size)
        sync()
        wall = time.perf_counter() - t
        tokens = sum(r.original_tokens for r in results)
        texts[size] = [r.text for r in results]
        spans[size] = [_kept_chars(r.kept_spans) for r in results]
        row["batch" if size == 1 else "batched"] = {
            "prompts": len(batch), "batch_size": size, "ratio": 0.2, "wall_s": round(wall, 3), "tokens": tokens,
            "tokens_per_s": round(tokens / wall, 1), "s_per_prompt": round(wall / len(batch), 4)}
    # Batched kernels round differently: how many prompts kept exactly the text they keep one at a time.
    row["batched"]["same_text"] = sum(a == b for a, b in zip(texts[1], texts[args.batch_size]))
    row["batched"]["kept_jaccard_mean"] = round(sum(len(a & b) / max(len(a | b), 1) for a, b in
                                                    zip(spans[1], spans[args.batch_size])) / len(batch), 4)
    row["profile_0.2"] = profile(c, prompt, device)
    return row


def _kept_chars(kept_spans) -> set[int]:
    return {i for start, end in kept_spans for i in range(start, end)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kit", type=Path, default=HERE / "gpu_kit")
    ap.add_argument("--make-kit", action="store_true", help="write the kit (needs the converted default scorer)")
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data" / "gsm8k")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--attention", default="eager,sdpa")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16, help="compress_batch's batch_size for the batched run")
    ap.add_argument("--dry", action="store_true", help="the kit's model shrunk, 1 repeat, 3 prompts, 2 a batch")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.make_kit:
        print(make_kit(args.kit, args.data))
        return 0
    if not (args.kit / "prompt.json").exists():
        ap.error(f"no kit at {args.kit}: run with --make-kit first (here, where the default scorer is)")
    if args.dry:
        args.repeats, args.batch, args.batch_size = 1, 3, 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = random_model(args.kit, Path(tmp), shrink=args.dry)
        rows = [measure(folder, args.kit, a, args) for a in args.attention.split(",") if a]
    report = {"rows": rows, "dry": args.dry, "weights": "random (speed does not depend on them)",
              "wall_s": round(time.perf_counter() - started, 1), "machine": machine(), "gpu": gpu_name()}
    emit(report, args.out, "bench_gpu_dry.json" if args.dry else "bench_gpu.json")
    return 0


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


if __name__ == "__main__":
    raise SystemExit(main())
