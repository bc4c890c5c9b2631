"""Engines: run tasks through N scorers and yield outcomes as they finish (in any order).

``local`` uses worker processes on this machine; ``ray`` uses Ray Data with an actor pool, locally or on a
cluster. Both hold one :class:`RecordCompressor` per worker, so they write identical records.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import multiprocessing as mp
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Iterable, Iterator

from ..errors import ConfigError, LinguaCompressError
from .worker import Outcome, RecordCompressor, Task, WorkerSpec

ENGINES = ("local", "ray")
_RECORDS_PER_BLOCK = 16  # Ray pays a per-block cost that dominates tiny blocks on few cores (models.md §5)
_RAY_BATCH = 4

_worker: RecordCompressor | None = None


def run_engine(engine: str, tasks: Iterable[Task], spec: WorkerSpec, workers: int, *,
               ray_address: str | None = None, chunk_records: int = 4096) -> Iterator[Outcome]:
    if engine == "local":
        return run_local(tasks, spec, workers)
    if engine == "ray":
        return run_ray(tasks, spec, workers, address=ray_address, chunk_records=chunk_records)
    raise ConfigError(f"engine={engine!r} is not accepted: use one of {ENGINES}")


def check_engine(engine: str) -> None:
    """Fail before any work when the engine is unknown or its extra is not installed."""
    if engine not in ENGINES:
        raise ConfigError(f"engine={engine!r} is not accepted: use one of {ENGINES}")
    if engine == "ray":
        _import_ray()


# ---------------------------------------------------------------------------------------------- local

def _init_local(spec: WorkerSpec) -> None:
    global _worker
    _exit_with_parent()
    _worker = RecordCompressor(spec)


def _exit_with_parent() -> None:
    # A SIGKILLed job cannot tell its pool to stop, and an orphaned worker would block on the task queue
    # forever; each worker watches its parent and leaves when the parent is gone.
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _run_local_chunk(tasks: list[Task]) -> list[Outcome]:
    if _worker is None:
        raise LinguaCompressError("corpus worker used before its initializer ran")
    return _worker.many(tasks)


def _chunk_size(spec: WorkerSpec) -> int:
    """Tasks per submission: a GPU worker batches their forwards (lingua_compress.batching), a CPU one gains
    nothing from it and would only hold records back from the others."""
    from ..batching import GPU_BATCH
    from ..models import resolve_device

    return 1 if resolve_device(spec.device).startswith("cpu") else GPU_BATCH


def run_local(tasks: Iterable[Task], spec: WorkerSpec, workers: int) -> Iterator[Outcome]:
    """Spawned worker processes (fork is unsafe with torch), at most ``2 * workers`` submissions in flight, each
    one task (CPU) or a chunk of them (GPU)."""
    source = iter(tasks)
    first = next(source, None)
    if first is None:  # nothing to do (e.g. a finished job resumed): don't start workers
        return
    source = itertools.chain([first], source)
    chunk = _chunk_size(spec)
    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_local, initargs=(spec,))
    pending: set[Future[list[Outcome]]] = set()
    try:
        while True:
            # Bounded submission: pulling the whole task stream up front would read the corpus into memory.
            for _ in range(max(0, 2 * workers - len(pending))):
                tasks_now = list(itertools.islice(source, chunk))
                if not tasks_now:
                    break
                pending.add(pool.submit(_run_local_chunk, tasks_now))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield from future.result()
    except BrokenProcessPool as exc:
        raise LinguaCompressError(f"a corpus worker process died ({exc}); out of memory? Fewer --workers "
                                  f"need less memory") from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------------ ray

class _RayCompressor:
    """The Ray Data UDF: constructed once per actor, so each actor loads the scorer once."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.worker = RecordCompressor(spec)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        outs = self.worker.many([Task(str(k), int(n), json.loads(p))
                                 for k, n, p in zip(batch["key"], batch["line"], batch["payload"], strict=True)])
        return {
            "key": np.array([o.key for o in outs], dtype=object),
            "line": np.array([o.line for o in outs], dtype=np.int64),
            "json_line": np.array([o.json_line or "" for o in outs], dtype=object),
            "original_tokens": np.array([o.original_tokens for o in outs], dtype=np.int64),
            "compressed_tokens": np.array([o.compressed_tokens for o in outs], dtype=np.int64),
            "error": np.array([o.error or "" for o in outs], dtype=object),
        }


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError("engine='ray' needs Ray Data: pip install 'lingua_compress[ray]'") from exc
    return ray


def run_ray(tasks: Iterable[Task], spec: WorkerSpec, workers: int, *, address: str | None = None,
            chunk_records: int = 4096) -> Iterator[Outcome]:
    """Ray Data, one actor (one scorer) per worker; ``address=None`` starts a private local Ray.

    The input is fed in chunks of ``chunk_records`` so memory stays bounded; each chunk is one dataset,
    so its actor pool (and model load) is paid once per chunk.
    """
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else max(workers, os.cpu_count() or 1),
                 include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)  # else Ray Data logs a line per dataset (and per chunk) over the bar
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the job's own bar reports progress; Ray's would interleave with it
    ctx.print_on_execution_start = False
    try:
        source = iter(tasks)
        while chunk := list(itertools.islice(source, chunk_records)):
            yield from _ray_chunk(ray, chunk, spec, workers)
    except ray.exceptions.RayError as exc:
        raise LinguaCompressError(f"the Ray job failed: {exc}") from exc
    finally:
        data_log.setLevel(level)
        if started:
            ray.shutdown()


def _ray_chunk(ray: Any, chunk: list[Task], spec: WorkerSpec, workers: int) -> Iterator[Outcome]:
    rows = [{"key": t.key, "line": t.line, "payload": json.dumps(t.record, ensure_ascii=False)} for t in chunk]
    blocks = min(len(rows), max(workers, math.ceil(len(rows) / _RECORDS_PER_BLOCK)))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map_batches(_RayCompressor, fn_constructor_args=(spec,), batch_size=_RAY_BATCH, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
    for row in ds.iter_rows():
        yield Outcome(str(row["key"]), int(row["line"]), row["json_line"] or None, int(row["original_tokens"]),
                      int(row["compressed_tokens"]), row["error"] or None)
