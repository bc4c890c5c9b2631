"""An aligned adapter on disk: its manifest, the base model's fingerprint, and applying it to a loaded scorer.

An adapter directory holds peft's ``adapter_config.json`` and ``adapter_model.safetensors`` (LoRA weights only,
a few MB) and our ``manifest.json``. The manifest names the base scorer by a fingerprint of its weights: a LoRA
delta means nothing on another model, and applying it there would silently give wrong scores, so that is refused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelLoadError

MANIFEST = "manifest.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FORMAT = "lingua_compress.adapter/1"
INSTALL_HINT = 'pip install "lingua_compress[align]"'
# Architecture fields only: dtype, attention implementation and library versions differ between a training load
# (fp32) and a scoring load (bf16 on some CPUs) of the very same weights.
_CONFIG_KEYS = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings")
_SAMPLE = 1 << 16  # elements hashed per sampled tensor: a fingerprint in milliseconds, not a full-weights hash


def peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None


def require_peft() -> None:
    if not peft_available():
        raise ModelLoadError(f"aligned adapters need the 'peft' package, which is not installed; run: {INSTALL_HINT}")


def check_adapter(adapter: object) -> Path | None:
    """Check an ``adapter=`` argument without loading a model: the directory, its files and its manifest."""
    if adapter is None:
        return None
    if not isinstance(adapter, (str, os.PathLike)) or not os.fspath(adapter):
        raise ConfigError(f"adapter={adapter!r:.80} is not accepted: give the directory written by "
                          f"'lingua-compress align', or None")
    path = Path(os.fspath(adapter)).expanduser()
    missing = [name for name in (MANIFEST, *ADAPTER_FILES) if not (path / name).is_file()]
    if missing:
        raise ConfigError(f"adapter={str(path)!r} is not an aligned adapter directory: it lacks {', '.join(missing)} "
                          f"(write one with 'lingua-compress align')")
    read_manifest(path)
    require_peft()
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    file = Path(path) / MANIFEST
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"adapter manifest {str(file)!r} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"adapter manifest {str(file)!r} is not a {FORMAT} manifest")
    base = manifest.get("base_model")
    if not isinstance(base, dict) or not isinstance(base.get("fingerprint"), str):
        raise ConfigError(f"adapter manifest {str(file)!r} does not name its base model's fingerprint")
    return manifest


def model_fingerprint(lm: Any) -> str:
    """A short hash naming a model's weights: its architecture fields and strided samples of a few tensors
    (embedding, first, middle and last parameter), rounded to bf16 so fp32 and bf16 loads of the same
    checkpoint agree. Compute it on the base weights, before any adapter is applied."""
    import torch

    h = hashlib.sha256()
    config = lm.config.to_dict()
    h.update(json.dumps({k: config.get(k) for k in _CONFIG_KEYS}, sort_keys=True).encode())
    # LoRA layers (if injected) are skipped and their wrapped weights named as before injection.
    named = sorted(((n.replace(".base_layer", ""), p) for n, p in lm.named_parameters() if "lora_" not in n),
                   key=lambda item: item[0])
    picks = sorted({0, len(named) // 2, len(named) - 1})
    chosen = [("embed", lm.get_input_embeddings().weight)] + [named[i] for i in picks]
    for name, weight in chosen:
        flat = weight.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLE)
        sample = flat[::step][:_SAMPLE].to(device="cpu", dtype=torch.bfloat16).view(torch.int16)
        h.update(f"{name}:{tuple(weight.shape)}".encode())
        h.update(sample.numpy().tobytes())
    return "sha256:" + h.hexdigest()[:32]


def apply_adapter(lm: Any, adapter: str | Path, base_name: str = "") -> Any:
    """The model with the adapter's LoRA deltas merged into its weights (no adapter overhead when scoring).

    Raises ModelLoadError, naming both fingerprints, when the adapter was tuned on another base model.
    """
    path = check_adapter(adapter)
    manifest = read_manifest(path)
    have, want = model_fingerprint(lm), manifest["base_model"]["fingerprint"]
    if have != want:
        raise ModelLoadError(
            f"adapter {str(path)!r} was tuned for base model {manifest['base_model'].get('name')!r} "
            f"(fingerprint {want}), but the scorer is {base_name or '?'!r} (fingerprint {have}); refusing to apply "
            f"it: retune it on this model, or load the model it was tuned for")
    from peft import PeftModel

    try:
        with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x; not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            merged = PeftModel.from_pretrained(lm, str(path)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"adapter {str(path)!r} could not be applied: {' '.join(str(exc).split())[:400]}") \
            from exc
    return merged.eval()
