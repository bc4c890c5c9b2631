"""Could a shallow scorer, trained to reproduce the whole one's surprisal, be the fast mode for fp32-only CPUs?
(issue 11: the next step the AVX2 floor and the tuned lens left)

    python benchmarks/check_distill.py [--layers 4] [--train-tokens 600000] [--minutes 60] [--dtype float32]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/check_distill.py --eval-only   # AVX2 timings

On a CPU without bf16 the body's matmuls floor a compression at several seconds (bench_compress's linear floor),
and neither a logit lens nor a tuned lens over the first layers came near the whole model's token scores
(check_early_exit.py, check_tuned_lens.py). This trains the cut itself. The student is the scorer's first
``--layers`` decoder layers and final norm, fine-tuned, and a small MLP that predicts the softmax's log-partition
from the last state, so a token's surprisal costs one dot product with its embedding row instead of a 32k-row head:

    student NLL(x_i) = lse_mlp(h_{i-1}) - softcap(h_{i-1} . e(x_i))

Loss: squared error against the whole model's NLL of the same tokens in the same 512-token chunks (text disjoint
from the evaluation: check_tuned_lens.fit_texts), plus, with --rank-weight, a pairwise term for their order. The
embedding table (and so the tied head) stays frozen and shared.
Then, as check_early_exit does, against the whole model in the same dtype: token NLL Pearson and sentence Spearman,
the kept characters' Jaccard at 0.5 / 0.2 / 0.1 and seconds per compression on bench_compress's 8-shot GSM8K prompt
and README prose; plus, for scale, the Pearson of a context-free score (each token id's mean NLL in training).
Work (targets, student weights) goes to --work and is reused. Writes check_distill.json.
Needs the embedded model; the tests cover the pieces on a tiny model.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_compress import DEFAULT_DATA, build_prompt  # noqa: E402
from check_early_exit import compare, cut_config, cut_stack, measure  # noqa: E402
from check_tuned_lens import fit_texts  # noqa: E402
from quality_report import emit, machine  # noqa: E402

CHUNK = 512  # tokens per training sequence, <bos> included
ENV_ISA = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")  # what an AVX2 emulation sets: recorded with the timings


class Student(torch.nn.Module):
    """A causal LM cut to its first layers, plus the log-partition MLP that stands in for its output softmax."""

    def __init__(self, lm, layers: int, hidden: int = 256, copy_lm: bool = True) -> None:
        super().__init__()
        self.lm = cut(copy.deepcopy(lm) if copy_lm else lm, layers)
        width = self.lm.config.hidden_size
        self.lse = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))
        self.lm.get_input_embeddings().weight.requires_grad_(False)  # the tied head: shared, exact, frozen
        self.softcap = getattr(self.lm.config, "final_logit_softcapping", None)

    def nll(self, hidden, targets):
        """Surprisal of ``targets[i]`` from ``hidden[i]``, the final state just before it (any leading shape)."""
        head = self.lm.get_output_embeddings().weight
        logit = (hidden * head[targets].to(hidden.dtype)).sum(-1).float()
        if self.softcap:
            logit = torch.tanh(logit / self.softcap) * self.softcap
        return self.lse(hidden.float()).squeeze(-1) - logit

    def forward(self, ids):
        """NLL of ``ids[:, 1:]`` given what precedes each (``ids[:, 0]`` is <bos>)."""
        hidden = self.lm.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
        return self.nll(hidden[:, :-1], ids[:, 1:])

    def use_lora(self, rank: int) -> None:
        """Train low-rank updates of the projections (and the norms, whole) instead of every weight: what would ship
        is then a few MB over the base model's own first layers."""
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x; not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            self.lm = get_peft_model(self.lm, cfg)
        for name, p in self.lm.named_parameters():
            if "norm" in name:
                p.requires_grad_(True)

    def merge(self) -> None:
        """Fold LoRA updates into the weights (plain linear layers again, as the CPU kernels expect)."""
        if hasattr(self.lm, "merge_and_unload"):
            self.lm = self.lm.merge_and_unload()

    def shipped(self) -> int:
        """Parameters a trained student adds to the base model: those trained."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trainable(self) -> tuple[list, list]:
        body = [p for n, p in self.lm.named_parameters() if p.requires_grad]
        return body, list(self.lse.parameters())


def cut(lm, layers: int):
    """``lm`` with its decoder stack cut to the first ``layers`` in place (final norm and head stay)."""
    cut_stack(lm.get_decoder(), layers)
    return lm


def chunks(scorer, texts: list[str], budget: int, width: int = CHUNK) -> np.ndarray:
    """``[n, width]`` ids: the texts' tokens as one stream (<eos> between texts), cut into rows behind a <bos>."""
    eos = scorer.tokenizer.eos_token_id
    stream: list[int] = []
    for text in texts:
        stream += scorer.tokenize(text)[0].tolist() + ([eos] if eos is not None else [])
        if len(stream) >= budget:
            break
    width -= 1
    rows = np.asarray(stream[: len(stream) // width * width], dtype=np.int64).reshape(-1, width)
    return np.concatenate([np.full((len(rows), 1), scorer._bos, dtype=np.int64), rows], axis=1)


def teacher_targets(scorer, rows: np.ndarray, path: Path | None = None) -> np.ndarray:
    """``[n, width - 1]`` NLL of each row's tokens under the whole model (cached at ``path``, resumed per row)."""
    done = np.load(path) if path is not None and path.exists() else np.zeros((0, rows.shape[1] - 1), np.float32)
    out = [done[: len(rows)]]
    t0 = time.perf_counter()
    for k in range(len(done), len(rows)):
        out.append(np.asarray(scorer.token_nll(rows[k, 1:]), dtype=np.float32)[None])
        if path is not None and (k % 50 == 49 or k == len(rows) - 1):
            np.save(path, np.concatenate(out))
            print(f"targets {k + 1}/{len(rows)} rows, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return np.concatenate(out)


def distill_loss(pred, target, rank_weight: float = 0.0, rank_temp: float = 1.0):
    """Squared error, plus ``rank_weight`` times a pairwise ordering loss within each row.

    The compressor keeps a window's most surprising tokens, so what it needs from a student is the order of the
    scores around the cut, which squared error weighs no more than the bulk of predictable tokens. The ordering
    term is RankNet's over every pair of tokens in a row, each pair weighted by how far apart the teacher puts them
    (a near tie costs little to swap): softplus(-sign(t_i - t_j) (s_i - s_j) / rank_temp).
    """
    mse = torch.nn.functional.mse_loss(pred, target)
    if rank_weight <= 0:
        return mse
    dt = target.unsqueeze(-1) - target.unsqueeze(-2)
    ds = (pred.unsqueeze(-1) - pred.unsqueeze(-2)) / rank_temp
    weight = dt.abs()
    pairs = torch.nn.functional.softplus(-torch.sign(dt) * ds)
    return mse + rank_weight * (weight * pairs).sum() / weight.sum().clamp_min(1e-9)


def train(student: Student, rows: np.ndarray, targets: np.ndarray, *, minutes: float, steps: int,
          batch: int = 8, lr: float = 1e-4, head_lr: float = 1e-3, seed: int = 0,
          rank_weight: float = 0.0, rank_temp: float = 1.0) -> dict:
    """Fit of the student's NLL to the targets (:func:`distill_loss`), for ``steps`` or ``minutes``, whichever
    ends first. Both learning rates follow a cosine over whichever bound is nearer; the body's also warms up over
    the first tenth, while the fresh head settles."""
    body, head = student.trainable()
    opt = torch.optim.AdamW([{"params": body, "lr": 0.0}, {"params": head, "lr": 0.0}], weight_decay=0.0)
    rng = np.random.default_rng(seed)
    with torch.no_grad():  # start the fresh head at the right level: its first steps then shape, not shift
        k = rng.choice(len(rows), size=min(len(rows), 2 * batch), replace=False)
        student.lse[-1].bias += float((torch.as_tensor(targets[k]) - student(torch.as_tensor(rows[k]))).mean())
    student.train()
    losses, t0, step = [], time.perf_counter(), 0
    while (frac := max(step / steps, (time.perf_counter() - t0) / (60 * minutes))) < 1.0:
        decay = 0.5 * (1 + np.cos(np.pi * frac))
        opt.param_groups[0]["lr"] = lr * decay * min(1.0, frac / 0.1)
        opt.param_groups[1]["lr"] = head_lr * decay
        pick = rng.choice(len(rows), size=min(batch, len(rows)), replace=False)
        loss = distill_loss(student(torch.as_tensor(rows[pick])), torch.as_tensor(targets[pick]),
                            rank_weight, rank_temp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(body + head, 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 25 == 0:
            print(f"step {step} loss {np.mean(losses[-25:]):.4f} {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    student.eval()
    return {"steps": step, "seconds": round(time.perf_counter() - t0, 1), "tokens_seen": int(step * batch * rows.shape[1]),
            "first_loss": round(float(np.mean(losses[:10])), 4) if losses else None,
            "last_loss": round(float(np.mean(losses[-10:])), 4) if losses else None}


def validate(student: Student, rows: np.ndarray, targets: np.ndarray) -> dict:
    with torch.inference_mode():
        pred = np.concatenate([student(torch.as_tensor(rows[k : k + 8])).numpy().ravel()
                               for k in range(0, len(rows), 8)])
    ref = targets.ravel()
    return {"tokens": int(ref.size), "mse": round(float(np.mean((pred - ref) ** 2)), 4),
            "pearson": round(float(np.corrcoef(pred, ref)[0, 1]), 4)}


def unigram_pearson(ids: np.ndarray, targets: np.ndarray, evals: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """For scale: the Pearson of a context-free score (each token id's mean NLL over ``ids``; an unseen id gets the
    overall mean) with the whole model's NLL, on each of ``evals`` (name: its ids and their NLL)."""
    total = np.bincount(ids.ravel(), targets.ravel().astype(np.float64))
    count = np.bincount(ids.ravel())
    mean = float(targets.mean())
    out = {}
    for name, (eval_ids, nll) in evals.items():
        guess = np.array([total[i] / count[i] if i < len(count) and count[i] else mean for i in eval_ids])
        out[name] = round(float(np.corrcoef(guess, nll)[0, 1]), 4)
    return out


def student_scorer(student: Student, tokenizer, dtype: str, pack: bool = True):
    """The student as a library scorer: the whole compressor pipeline (windows, KV cache, masks) over the cut stack,
    with each needed token's NLL from the student's formula instead of the restricted head."""
    from lingua_compress.models import LoadedModel
    from lingua_compress.scoring import CausalLMScorer

    want, table = getattr(torch, dtype), student.lm.get_input_embeddings().weight
    if any(p.dtype != want for p in student.lm.parameters() if p is not table):
        student.lm.to(want)  # a table kept in bf16 on the fp32 path (lowmem) stays so
    lm = student.lm.eval()
    scorer = CausalLMScorer(loaded=LoadedModel(lm, tokenizer, "student", "cpu", False, requested_dtype=dtype))
    scorer._base_blocks, scorer._base_heads = [], []  # the restricted head: the student's formula replaces it
    if pack:  # as the whole model's scorer is, so the timings compare kernels alike
        scorer._pack(True)

    def nll_from_hidden(hidden, targets):
        if len(targets) == 0:
            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            return student.nll(hidden.to(scorer._dtype), targets).cpu().numpy().astype(np.float32)

    scorer.nll_from_hidden = nll_from_hidden
    return scorer


def load_student(weights: Path, dtype: str = "float32", pack: bool = True, model: str | None = None):
    """A trained student (a file this script wrote) as a library scorer, its depth read from the weights;
    ``model``: the base it was cut from (default: the embedded scorer)."""
    student, tokenizer = read_student(weights, model)
    return student_scorer(student, tokenizer, dtype, pack)


def read_student(weights: Path, model: str | None = None) -> tuple[Student, object]:
    """A trained student and its tokenizer, its depth read from the weights: merged weights (a plain cut model) or
    an adapter (--lora: the updates, norms and log-partition head), merged over the base model's layers."""
    import re

    from lingua_compress.models import load_model

    state = torch.load(weights, weights_only=True)
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.search(r"\.layers\.(\d+)\.", k)))
    base = load_model(model, dtype="float32", bf16_embedding=False)
    student = Student(base.model, layers, copy_lm=False)  # the base is loaded for it alone
    lora = [v for k, v in state.items() if ".lora_A." in k]
    if lora:  # an adapter file (--lora): its updates over the base model's own layers, merged here
        student.use_lora(int(lora[0].shape[0]))
    missing = student.load_state_dict(state, strict=False).missing_keys
    if lora and any(".lora_" in k or k.startswith("lse.") for k in missing):
        raise ValueError(f"{weights}: an incomplete adapter (missing {missing[:3]})")
    student.merge()
    return student.eval(), base.tokenizer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--layers", type=int, default=4, help="decoder layers the student keeps (of 18)")
    ap.add_argument("--train-tokens", type=int, default=600_000)
    ap.add_argument("--val-rows", type=int, default=16, help="rows held out of training, for its own Pearson")
    ap.add_argument("--minutes", type=float, default=60.0, help="training time bound")
    ap.add_argument("--steps", type=int, default=1500, help="training steps bound")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--lora", type=int, default=0, help="train rank-R LoRA updates and the norms, not every weight")
    ap.add_argument("--rank-weight", type=float, default=0.0,
                    help="weight of the pairwise ordering term beside squared error (distill_loss)")
    ap.add_argument("--rank-temp", type=float, default=1.0, help="nats: the ordering term's scale")
    ap.add_argument("--dtype", default="float32", help="of the whole model and the student when measured")
    ap.add_argument("--eval-only", action="store_true", help="measure a student trained before (from --work)")
    ap.add_argument("--speed-only", action="store_true",
                    help="time an untrained --layers student (its speed does not depend on its weights), its table in "
                         "bf16 as the library's fp32 path keeps it, then the whole model, on bench_compress's prompt")
    ap.add_argument("--repeats", type=int, default=3, help="--speed-only: compressions per ratio (best kept)")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "lingua_compress" / "check_distill")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.rank_weight < 0 or args.rank_temp <= 0:  # a negative weight would reward misordering; 0 nats divides
        ap.error(f"--rank-weight must be >= 0 and --rank-temp > 0, got {args.rank_weight} and {args.rank_temp}")
    return args


def fit_student(args, rows: np.ndarray, targets: np.ndarray, report: dict) -> Student:
    from lingua_compress.models import load_model

    weights = args.work / f"{run_name(args)}.pt"
    train_rows, val_rows = rows[: -args.val_rows], rows[-args.val_rows :]
    train_t, val_t = targets[: -args.val_rows], targets[-args.val_rows :]
    if args.eval_only:
        student = read_student(weights)[0]
        report["train"] = json.loads(weights.with_suffix(".json").read_text())
    else:
        student = Student(load_model(None, dtype="float32", bf16_embedding=False).model, args.layers, copy_lm=False)
        if args.lora:
            student.use_lora(args.lora)
        shipped = student.shipped()
        report["train"] = train(student, train_rows, train_t, minutes=args.minutes, steps=args.steps,
                                batch=args.batch, lr=args.lr, head_lr=args.head_lr,
                                rank_weight=args.rank_weight, rank_temp=args.rank_temp)
        report["train"].update(trained_params=shipped, rank_weight=args.rank_weight, rank_temp=args.rank_temp)
        if args.lora:  # what would ship: a few MB, small enough to keep in results/ for a later session
            trained = {n for n, p in student.named_parameters() if p.requires_grad}
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save({k: v for k, v in student.state_dict().items() if k in trained},
                       args.out / f"{run_name(args)}_adapter.pt")
        student.merge()
        trained = {k: v for k, v in student.state_dict().items() if "embed_tokens" not in k and "lm_head" not in k}
        torch.save(trained, weights)
        weights.with_suffix(".json").write_text(json.dumps(report["train"]))
    report["validation"] = validate(student, val_rows, val_t)
    report["validation_unigram"] = unigram_pearson(train_rows[:, 1:], train_t,
                                                   {"val": (val_rows[:, 1:].ravel(), val_t.ravel())})
    return student


def run_name(args) -> str:
    return (f"check_distill_L{args.layers}" + (f"_lora{args.lora}" if args.lora else "")
            + (f"_rank{args.rank_weight:g}" if args.rank_weight > 0 else ""))


def time_compressions(compressor, prompt, repeats: int) -> dict:
    compressor.compress("A short warm-up text for the CPU kernels, not measured.", 0.5)
    out = {}
    for ratio in (0.5, 0.2, 0.1):
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            res = compressor.compress(prompt, ratio)
            runs.append(round(time.perf_counter() - t, 3))
        out[str(ratio)] = {"best_s": min(runs), "runs_s": runs, "tokens": [res.original_tokens, res.compressed_tokens]}
    return out


def load_first_layers(layers: int, dtype: str):
    """The embedded scorer's first ``layers`` decoder layers only (the rest never read from the checkpoint), as a
    shipped student would load, with the library's loading: the table kept in bf16 on the fp32 path, and the
    tokenizer's sources shed."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lingua_compress import lowmem
    from lingua_compress.models import default_model_path

    path = str(default_model_path())
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    cut_config(config, layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checkpoint's other layers are reported unused: they are meant to be
        lm = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.bfloat16, local_files_only=True,
                                                  attn_implementation="eager")
    if dtype == "float32" and not lowmem._upcast_all_but_table(lm, torch.float32):
        lm.float()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    lowmem.shed_tokenizer_sources(tokenizer)
    return lm.eval(), tokenizer


def speed_only(args) -> dict:
    """Seconds and peak RSS of a ``--layers`` student compressing bench_compress's prompt (untrained: the
    forwards cost the same whatever the weights), then of the whole model in the same process. Only the student's
    layers are loaded, its embedding table kept in bf16 as the library's fp32 path keeps the whole model's, so the
    peak is what a shipped student would need."""
    from bench_compress import peak_rss_mb

    from lingua_compress import Compressor

    prompt = build_prompt(args.data)[0]
    lm, tokenizer = load_first_layers(args.layers, args.dtype)
    student = Student(lm, args.layers, copy_lm=False).eval()
    fast = Compressor(scorer=student_scorer(student, tokenizer, args.dtype))
    report = {"backend": str(fast.scorer.backend), "linear_kernel": fast.scorer._kernel_name(), **machine(),
              "isa_env": {k: os.environ.get(k) for k in ENV_ISA},
              "torch_threads": torch.get_num_threads(), "layers": args.layers, "weights": "untrained",
              "student": time_compressions(fast, prompt, args.repeats)}
    report["student_peak_rss_mb"] = round(peak_rss_mb(), 1)
    del fast, student, lm
    report["whole_model"] = time_compressions(Compressor(dtype=args.dtype), prompt, args.repeats)
    report["speedup"] = {r: round(report["whole_model"][r]["best_s"] / report["student"][r]["best_s"], 2)
                         for r in report["student"]}
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.speed_only:
        emit(speed_only(args), args.out, f"check_distill_speed_L{args.layers}.json")
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    from lingua_compress import Compressor

    prompt = build_prompt(args.data)[0]
    texts = {"gsm8k_8shot": prompt, "readme_prose": (HERE.parent / "README.md").read_text()[:6000]}
    teacher = Compressor(dtype=args.dtype)
    teacher.compress("A short warm-up text for the CPU kernels, not measured.", 0.5)
    used = "\n".join([prompt.instruction, *prompt.demonstrations, prompt.question])
    rows = chunks(teacher.scorer, fit_texts(args.data, used, 8 * args.train_tokens), args.train_tokens)
    targets = teacher_targets(teacher.scorer, rows, args.work / f"targets_{args.dtype}.npy")
    report = {"backend": str(teacher.scorer.backend), **machine(), "isa_env": {k: os.environ.get(k) for k in ENV_ISA},
              "layers": args.layers, "train_rows": len(rows) - args.val_rows, "chunk": CHUNK}
    student = fit_student(args, rows, targets, report)
    base = measure(teacher, texts)
    evals = {name: (teacher.scorer.tokenize(row["text"])[0][: len(row["nll"])], row["nll"]) for name, row in base.items()}
    report["unigram_pearson"] = unigram_pearson(rows[: -args.val_rows, 1:], targets[: -args.val_rows], evals)
    fast = Compressor(scorer=student_scorer(student, teacher.scorer.tokenizer, args.dtype))
    fast.compress("A short warm-up text for the CPU kernels, not measured.", 0.5)
    report["student"] = compare(base, measure(fast, texts))
    emit(report, args.out, f"{run_name(args)}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
