"""Tune a LoRA adapter on the scorer so its distribution moves toward the target LLM's (LLMLingua's alignment step).

LLMLingua instruction-tunes its small LM on text the target generated; here that is a LoRA adapter (peft) over the
attention and MLP projections, trained on the target's responses only, for a bounded number of steps or minutes,
on the CPU unless a GPU is present. The adapter is saved alone (a few MB) with a manifest naming the base model
by fingerprint, so it is never applied to another one.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..config import as_integral, as_real
from ..errors import ConfigError
from ..models import DEFAULT_MODEL, LoadedModel, default_model_path, load_model
from .load import ADAPTER_FILES, FORMAT, MANIFEST, model_fingerprint, require_peft
from .loss import TEMPLATE, Example, collate, encode_pair, response_nll
from .pairs import Pair

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_FINAL_LOSS_STEPS = 10  # the reported final loss averages the last steps: one batch's loss is noisy


@dataclass(frozen=True, kw_only=True)
class TuneConfig:
    """How long and how hard to tune. Defaults suit a few hundred pairs on a CPU in well under an hour.

    Attributes:
        steps: optimizer steps (an upper bound when ``max_minutes`` stops it first).
        max_minutes: wall-clock bound on the training loop (model loading and saving excluded); None: no bound.
        batch_size: pairs per step (small: a CPU step is seconds, and memory grows with it).
        lr: AdamW learning rate of the LoRA weights.
        rank, alpha, dropout: the LoRA update's rank, scale (alpha / rank) and dropout.
        target_modules: module names LoRA wraps (attention and MLP projections; the tied embedding/head is left
            alone so the scorer's vocabulary head stays shared and exact).
        max_length: tokens per example (prompt cut from the left, then response from the right).
        seed: seeds data order, LoRA initialisation and dropout.
        device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda[:N]`` or ``mps``.
        dtype: the base weights' dtype while training; float32 is exact and fast enough for a 270M model.
    """

    steps: int = 200
    max_minutes: float | None = None
    batch_size: int = 4
    lr: float = 2e-4
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    max_length: int = 512
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("batch_size", 1), ("rank", 1), ("max_length", 8)):
            value = as_integral(getattr(self, name))
            if value is None or value < low:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be an int >= {low}")
        if self.max_minutes is not None and not (as_real(self.max_minutes) or 0) > 0:
            raise ConfigError(f"max_minutes={self.max_minutes!r} must be a positive number of minutes, or None")
        if not 0 < (as_real(self.lr) or 0) < 1:
            raise ConfigError(f"lr={self.lr!r} must be a number in (0, 1)")
        if not (as_real(self.alpha) or 0) > 0:
            raise ConfigError(f"alpha={self.alpha!r} must be a positive number")
        dropout = as_real(self.dropout)
        if dropout is None or not 0 <= dropout < 1:
            raise ConfigError(f"dropout={self.dropout!r} must be a number in [0, 1)")
        if isinstance(self.target_modules, str) or not self.target_modules or \
                not all(isinstance(m, str) and m for m in self.target_modules):
            raise ConfigError(f"target_modules={self.target_modules!r} must be a non-empty tuple of module names")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed={self.seed!r} must be an int")
        from ..models import check_spec

        check_spec(None, self.device, self.dtype)


@dataclass(frozen=True)
class TuneResult:
    """What tuning did. ``model`` is the base model with the (unmerged) LoRA layers, for checks in memory."""

    path: Path
    manifest: dict[str, Any]
    losses: list[float] = field(repr=False)
    model: Any = field(repr=False, default=None)


def tune_adapter(pairs: Sequence[Pair], out: str | Path, *, config: TuneConfig | None = None,
                 model: str | None = None, loaded: LoadedModel | None = None, target: str = "",
                 progress: bool | None = None) -> TuneResult:
    """Tune a LoRA adapter on ``pairs`` and save it (adapter weights + ``manifest.json``) in directory ``out``.

    The base is ``loaded`` if given (its weights are changed in place: LoRA layers are injected), else
    ``model`` (a path or hub id; None: the embedded scorer) loaded in ``config.dtype`` on ``config.device``.
    ``target`` names the LLM the responses came from, for the manifest.
    """
    config = config or TuneConfig()
    require_peft()
    out = _check_out(Path(out))
    if not pairs:
        raise ConfigError("no prompt/response pairs to tune on")
    if loaded is None:
        loaded = load_model(model, device=config.device, dtype=config.dtype)
    examples = [encode_pair(loaded.tokenizer, p, config.max_length) for p in pairs]
    base = {"name": loaded.name, "path": _base_path(loaded), "fingerprint": model_fingerprint(loaded.model)}
    peft_model = _with_lora(loaded.model, config)
    losses, seconds, stopped_by = _train(loaded, examples, config, progress)
    manifest = _manifest(base, target, config, examples, losses, seconds, stopped_by, loaded.device)
    _save(peft_model, manifest, out)
    return TuneResult(out, manifest, losses, loaded.model)


def _check_out(out: Path) -> Path:
    # The directory is replaced as a whole; refuse to wipe one that holds anything but an adapter of ours.
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise ConfigError(f"output {str(out)!r} exists and is not an adapter directory; choose a new path")
    return out


def _base_path(loaded: LoadedModel) -> str:
    return str(default_model_path(convert=False)) if loaded.name == DEFAULT_MODEL else loaded.name


def _with_lora(lm: Any, config: TuneConfig) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)  # LoRA's A matrices are initialised randomly
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, bias="none",
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    try:
        with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x; not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            return get_peft_model(lm, lora)
    except ValueError as exc:  # peft's error when no module matches target_modules
        raise ConfigError(f"target_modules={config.target_modules!r} do not fit this model: {exc}") from None


def _batches(examples: list[Example], batch_size: int, seed: int) -> Iterator[list[Example]]:
    """Endless seeded epochs: each one a fresh shuffle, cut into batches (the last one may be short)."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    while True:
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            yield [examples[j] for j in order[i:i + batch_size]]


def _train(loaded: LoadedModel, examples: list[Example], config: TuneConfig,
           progress: bool | None) -> tuple[list[float], float, str]:
    import torch
    from tqdm.auto import tqdm

    lm = loaded.model
    params = [p for p in lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    deadline = None if config.max_minutes is None else time.perf_counter() + 60.0 * config.max_minutes
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=config.steps, desc="tune", unit="step", file=sys.stderr, disable=not show)
    losses: list[float] = []
    started, stopped_by = time.perf_counter(), "steps"
    lm.train()
    try:
        for batch in _batches(examples, config.batch_size, config.seed):
            if len(losses) >= config.steps:
                break
            if losses and deadline is not None and time.perf_counter() >= deadline:  # at least one step
                stopped_by = "max_minutes"
                break
            losses.append(_step(lm, collate(batch, pad, loaded.device), params, optimizer))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        bar.close()
        lm.eval()
    return losses, time.perf_counter() - started, stopped_by


def _step(lm: Any, batch: dict[str, Any], params: list[Any], optimizer: Any) -> float:
    import torch

    total, n = response_nll(lm, batch)
    loss = total / max(n, 1)  # mean over response tokens: long answers weigh by their length, not per pair
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)  # one odd batch must not wreck a short run
    optimizer.step()
    value = float(loss.detach())
    if not math.isfinite(value):
        raise ConfigError(f"the loss became {value} at lr={optimizer.param_groups[0]['lr']}; lower --lr")
    return value


def _manifest(base: dict[str, Any], target: str, config: TuneConfig, examples: list[Example], losses: list[float],
              seconds: float, stopped_by: str, device: str) -> dict[str, Any]:
    from .. import __version__

    tail = losses[-_FINAL_LOSS_STEPS:]
    return {
        "format": FORMAT,
        "library_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": base,
        "target": target,
        "steps": len(losses),
        "stopped_by": stopped_by,
        "first_loss": round(losses[0], 4) if losses else None,
        "final_loss": round(sum(tail) / len(tail), 4) if tail else None,
        "final_loss_steps": len(tail),
        "seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / len(losses), 3) if losses else None,
        "device": device,
        "pairs": len(examples),
        "response_tokens": sum(e.n_response for e in examples),
        "template": TEMPLATE,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
    }


def _save(peft_model: Any, manifest: dict[str, Any], out: Path) -> None:
    """Write into a sibling temp dir and swap it in: a kill mid-save leaves the old adapter or none, never half."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        peft_model.save_pretrained(str(work), safe_serialization=True)
        for extra in work.iterdir():  # peft also writes a model-card README; the adapter needs only its files
            if extra.name not in ADAPTER_FILES:
                extra.unlink() if extra.is_file() else shutil.rmtree(extra)
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
