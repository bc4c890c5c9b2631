"""Collect the target LLM's responses to the user's prompts: the training data of distribution alignment.

Any client with the :class:`~lingua_compress.llm.LLM` interface works: an OpenAI-compatible server
(:class:`~lingua_compress.llm.OpenAIClient`), a local GGUF (:class:`~lingua_compress.llm.LlamaCppLLM`), a fake
in tests. Resumable: prompts already in the pairs file are skipped, so a rerun after a crash, a kill or an
outage asks only the rest.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..config import as_integral, as_real
from ..errors import ConfigError
from ..llm.base import LLM, Completion, LLMRequestError
from .pairs import PairLog


@dataclass(frozen=True)
class CollectConfig:
    """How each prompt is sent.

    Attributes:
        max_tokens: the longest response asked for (longer ones are cut by the target; ``finish_reason`` says so).
        temperature: 0 (greedy) by default: the aligned scorer should learn the target's most likely answer.
        max_consecutive_failures: stop after this many prompts in a row fail (the target is down, not one
            prompt bad); isolated failures are counted, left out of the file, and asked again on a rerun.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    max_consecutive_failures: int = 3

    def __post_init__(self) -> None:
        if (as_integral(self.max_tokens) or 0) < 1:
            raise ConfigError(f"max_tokens={self.max_tokens!r} must be an int >= 1")
        temp = as_real(self.temperature)
        if temp is None or not 0.0 <= temp <= 2.0:
            raise ConfigError(f"temperature={self.temperature!r} must be a number in [0, 2]")
        if (as_integral(self.max_consecutive_failures) or 0) < 1:
            raise ConfigError(f"max_consecutive_failures={self.max_consecutive_failures!r} must be an int >= 1")


@dataclass(frozen=True)
class CollectSummary:
    """What one collection run did. ``prompts`` counts distinct prompts (a repeated prompt is asked once)."""

    path: str
    target: str
    prompts: int
    already_answered: int
    answered: int
    failed: int
    seconds: float
    first_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_responses(prompts: Sequence[str], llm: LLM, out: str | Path, *, config: CollectConfig | None = None,
                      progress: bool | None = None) -> CollectSummary:
    """Ask ``llm`` every prompt not yet in the pairs file ``out`` and append each answer as it arrives.

    Raises LLMRequestError when ``config.max_consecutive_failures`` prompts in a row fail; everything answered
    before that is in the file, and a rerun continues from there.
    """
    config = config or CollectConfig()
    if not isinstance(llm, LLM):
        raise ConfigError(f"llm must implement lingua_compress.llm.LLM (name, chat, max_concurrency, complete), "
                          f"got {type(llm).__name__}")
    unique = list(dict.fromkeys(prompts))  # a repeated prompt would only duplicate a training example
    started = time.perf_counter()
    with PairLog(out) as log:
        done = log.open()
        todo = [p for p in unique if p not in done]
        answered, failed, first_error = _run(todo, llm, log, config, _progress_bar(len(todo), progress))
    return CollectSummary(str(out), llm.name, len(unique), len(unique) - len(todo), answered, failed,
                          round(time.perf_counter() - started, 3), first_error)


def _progress_bar(total: int, progress: bool | None) -> Any:
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, desc="collect", unit="prompt", file=sys.stderr, disable=not show)


def _run(todo: list[str], llm: LLM, log: PairLog, config: CollectConfig, bar: Any) -> tuple[int, int, str | None]:
    answered = failed = streak = 0
    first_error: str | None = None
    try:
        for prompt, result in _answers(todo, llm, config):
            bar.update(1)
            if isinstance(result, Completion):
                log.append(_record(prompt, result, llm.name))
                answered, streak = answered + 1, 0
                continue
            failed, streak = failed + 1, streak + 1
            first_error = first_error or str(result)
            if streak >= config.max_consecutive_failures:
                raise LLMRequestError(f"{streak} prompts in a row failed (last: {result}); {answered} answers were "
                                      f"saved in {log.path}; rerun the same command to continue")
    finally:
        bar.close()
    return answered, failed, first_error


def _answers(todo: list[str], llm: LLM, config: CollectConfig) -> Iterator[tuple[str, Completion | Exception]]:
    """(prompt, completion or the error it raised), in completion order, at most ``max_concurrency`` in flight."""
    workers = max(1, int(getattr(llm, "max_concurrency", 1) or 1))
    if workers == 1:  # no threads: a local model is one forward pass at a time anyway
        for prompt in todo:
            yield prompt, _ask(llm, prompt, config)
        return
    pending = iter(todo)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        running: dict[Future[Completion | Exception], str] = {}
        while True:
            while len(running) < workers and (prompt := next(pending, None)) is not None:
                running[pool.submit(_ask, llm, prompt, config)] = prompt
            if not running:
                return
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                yield running.pop(future), future.result()


def _ask(llm: LLM, prompt: str, config: CollectConfig) -> Completion | Exception:
    message: Any = [{"role": "user", "content": prompt}] if llm.chat else prompt
    try:
        return llm.complete(message, max_tokens=config.max_tokens, temperature=config.temperature)
    except (LLMRequestError, ConfigError) as exc:  # this prompt failed; the caller decides whether to go on
        return exc


def _record(prompt: str, completion: Completion, target: str) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "response": completion.text,
        "target": target,
        "model": completion.model,
        "finish_reason": completion.finish_reason,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "latency_s": round(completion.latency_s, 3),
    }
