"""What one worker does with one record, shared by every engine so that they write identical records."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..config import CompressionConfig
from ..errors import ConfigError, ModelLoadError
from .io import to_json_line

ORIGINAL_TOKENS = "original_tokens"
COMPRESSED_TOKENS = "compressed_tokens"


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs to build its compressor; small and picklable."""

    model: str | None
    device: str
    config: CompressionConfig | None
    ratio: float | None
    target_tokens: int | None
    field: str
    output_field: str
    threads: int

    def __post_init__(self) -> None:
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ConfigError(f"threads_per_worker={self.threads!r} must be an int >= 1")

    @property
    def added_fields(self) -> tuple[str, ...]:
        return (self.output_field, ORIGINAL_TOKENS, COMPRESSED_TOKENS)


@dataclass(frozen=True)
class Task:
    key: str
    line: int
    record: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """A compressed record as its final JSON line, or the reason it was rejected."""

    key: str
    line: int
    json_line: str | None
    original_tokens: int = 0
    compressed_tokens: int = 0
    error: str | None = None


class RecordCompressor:
    """Holds one Compressor (its scorer loads on the first record) and turns tasks into outcomes."""

    def __init__(self, spec: WorkerSpec) -> None:
        # Parallel workers share the cores: each gets its slice of threads, set before the model loads.
        import torch
        from transformers.utils import logging as hf_logging

        from ..api import Compressor

        torch.set_num_threads(spec.threads)
        hf_logging.disable_progress_bar()  # the job draws its own bar; N workers' load bars would garble it
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.spec = spec
        self.compressor = Compressor(model=spec.model, device=spec.device, config=spec.config)

    def many(self, tasks: list[Task]) -> list[Outcome]:
        """Outcomes of ``tasks`` in order; on a GPU their forwards are batched (:mod:`lingua_compress.batching`)."""
        from ..batching import auto_batch_size, map_batched

        if len(tasks) < 2:
            return [self(task) for task in tasks]  # the scorer loads on the first record, not here
        scorer = self.compressor.scorer
        return map_batched(scorer, self, tasks, auto_batch_size(scorer))

    def __call__(self, task: Task) -> Outcome:
        spec = self.spec
        try:
            res = self.compressor.compress(task.record[spec.field], spec.ratio, target_tokens=spec.target_tokens)
        except ModelLoadError:
            raise  # the whole job is broken, not this record
        except Exception as exc:  # one bad record must not stop an hours-long job; it goes to the rejects
            return Outcome(task.key, task.line, None, error=f"compression failed: {type(exc).__name__}: {exc}")
        out = dict(task.record)
        out[spec.output_field] = res.text
        out[ORIGINAL_TOKENS] = res.original_tokens
        out[COMPRESSED_TOKENS] = res.compressed_tokens
        line = to_json_line(out)
        return Outcome(task.key, task.line, line, res.original_tokens, res.compressed_tokens)
