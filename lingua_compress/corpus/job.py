"""compress_corpus(): stream records in, compress them on an engine, append results, skip what is done."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, Iterator

from ..config import CompressionConfig, check_ratio, check_target_tokens
from ..errors import ConfigError
from .engines import ENGINES, check_engine, run_engine
from .io import Item, JsonlLog, check_source, count_records, id_key, iter_items, to_json_line
from .worker import Outcome, Task, WorkerSpec

DEFAULT_RATIO = 0.3


@dataclass(frozen=True)
class CorpusSummary:
    """What a corpus run did. Token counts and rates cover the records written by this run."""

    records_in: int  # input records read, rejects included
    records_out: int  # records written by this run
    records_skipped: int  # already in the output from an earlier run (``resume``)
    records_rejected: int  # see the rejects file for each line and reason
    tokens_before: int
    tokens_after: int
    wall_s: float
    output: str
    rejects: str
    engine: str
    workers: int
    repaired_bytes: int = 0  # a torn last line cut from the output on resume
    # Wall time to the first written record: start-up and model loading (with Ray, results arrive a block
    # of records at a time, so this also holds the first block's work).
    first_record_s: float | None = None

    @property
    def records_per_s(self) -> float:
        return self.records_out / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Original tokens compressed per second."""
        return self.tokens_before / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def steady_records_per_s(self) -> float | None:
        """Records/s after the first record: without start-up and model loading (local engine; see above)."""
        if self.first_record_s is None or self.records_out < 2 or self.wall_s <= self.first_record_s:
            return None
        return (self.records_out - 1) / (self.wall_s - self.first_record_s)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["records_per_s"] = self.records_per_s
        data["tokens_per_s"] = self.tokens_per_s
        data["steady_records_per_s"] = self.steady_records_per_s
        return data


@dataclass
class _Tally:
    read: int = 0
    written: int = 0
    skipped: int = 0
    rejected: int = 0
    before: int = 0
    after: int = 0
    first_line: dict[str, int] = dc_field(default_factory=dict)  # id -> line of its first occurrence
    first_written: float | None = None  # perf_counter() when the first record was written


def compress_corpus(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    ratio: float | None = None,
    target_tokens: int | None = None,
    field: str = "text",
    id_field: str = "id",
    output_field: str | None = None,
    workers: int = 1,
    threads_per_worker: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    resume: bool = False,
    rejects: str | os.PathLike[str] | None = None,
    model: str | None = None,
    device: str = "auto",
    config: CompressionConfig | None = None,
    progress: bool | None = None,
    chunk_records: int = 4096,
) -> CorpusSummary:
    """Compress every record of a corpus once, appending results to ``output`` (JSONL); resumable.

    ``source`` is a JSONL file, ``"-"`` for stdin, or a folder or glob of ``.txt`` files (the path is the id).
    Each output line is the input record plus ``output_field`` (default ``<field>_compressed``),
    ``original_tokens`` and ``compressed_tokens``. Bad records go to ``rejects`` (default
    ``<output>.rejects.jsonl``) with their line and reason, and the job goes on. With ``resume``, ids already
    in ``output`` are skipped and a torn last line from a killed run is cut off first. Without it, an
    existing non-empty ``output`` is an error rather than silently overwritten, and so is resuming with settings
    other than the job's (kept in ``<output>.job.json``). ``ratio`` defaults to 0.3.
    ``progress=None`` shows a bar on stderr only when it is a terminal.
    """
    started = time.perf_counter()
    source = os.fspath(source)
    out_path = Path(output)
    rej_path = Path(rejects) if rejects is not None else out_path.with_name(out_path.name + ".rejects.jsonl")
    spec = _worker_spec(ratio, target_tokens, field, id_field, output_field, workers, threads_per_worker,
                        model, device, config)
    _check_job(source, out_path, rej_path, engine, workers, resume, chunk_records)
    _check_settings(out_path.with_name(out_path.name + ".job.json"), spec, id_field, resume)
    out, rej, tally = JsonlLog(out_path), JsonlLog(rej_path), _Tally()
    done = {id_key(r[id_field]) for r in out.recover() if id_field in r} if resume else set()
    logged = {r.get("line") for r in rej.recover()} if resume else set()
    out.open(append=resume)
    rej.open(append=resume)
    bar = _progress_bar(source, progress)
    try:
        tasks = _tasks(iter_items(source, field, id_field), spec.added_fields, done, logged, rej, tally, bar)
        outcomes = run_engine(engine, tasks, spec, workers, ray_address=ray_address, chunk_records=chunk_records)
        for outcome in outcomes:
            _record(outcome, out, rej, logged, tally)
            bar.update(1)
            bar.set_postfix(saved_tokens=tally.before - tally.after, refresh=False)
    finally:
        bar.close()
        out.close()
        rej.close()
    first = None if tally.first_written is None else tally.first_written - started
    return CorpusSummary(tally.read, tally.written, tally.skipped, tally.rejected, tally.before, tally.after,
                         time.perf_counter() - started, str(out_path), str(rej_path), engine, workers,
                         out.repaired_bytes, first)


def _worker_spec(ratio: float | None, target_tokens: int | None, field: str, id_field: str,
                 output_field: str | None, workers: int, threads: int | None, model: str | None, device: str,
                 config: CompressionConfig | None) -> WorkerSpec:
    if ratio is not None and target_tokens is not None:
        raise ConfigError(f"give ratio or target_tokens, not both (got ratio={ratio!r}, "
                          f"target_tokens={target_tokens!r})")
    if target_tokens is None:
        ratio = check_ratio(DEFAULT_RATIO if ratio is None else ratio)
    else:
        target_tokens = check_target_tokens(target_tokens)
    for name, value in (("field", field), ("id_field", id_field)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name}={value!r} must be a non-empty string naming a JSON field")
    if field == id_field:
        raise ConfigError(f"field and id_field are both {field!r}: the id must be a separate field")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} must be an int >= 1")
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
    if config is not None and not isinstance(config, CompressionConfig):
        raise ConfigError(f"config must be a CompressionConfig, got {type(config).__name__}")
    return WorkerSpec(model, device, config, ratio, target_tokens, field, output_field or f"{field}_compressed",
                      threads)


def _check_job(source: str, out_path: Path, rej_path: Path, engine: str, workers: int, resume: bool,
               chunk_records: int) -> None:
    check_engine(engine)
    check_source(source)
    if isinstance(chunk_records, bool) or not isinstance(chunk_records, int) or chunk_records < 1:
        raise ConfigError(f"chunk_records={chunk_records!r} must be an int >= 1")
    _check_file_path(out_path, "output", "out.jsonl")
    _check_file_path(rej_path, "rejects", "rejects.jsonl")
    if out_path.resolve() == rej_path.resolve():
        raise ConfigError(f"the output and rejects files are the same path: {out_path}")
    if source != "-" and Path(source).is_file() and Path(source).resolve() == out_path.resolve():
        raise ConfigError(f"the output {out_path} is the input file")
    if not resume and out_path.exists() and out_path.stat().st_size > 0:
        raise ConfigError(f"output {out_path} already has records: pass resume=True (--resume) to continue "
                          f"that job, or remove the file to start over")


def _check_file_path(path: Path, what: str, example: str) -> None:
    # Caught here, a wrong path is a usage error with its fix; caught at the first write it looked like a
    # failed job and the advice was to resume it, which fails the same way.
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory: give a file path, e.g. {path / example}")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {path} cannot be created: {parent} is a file, not a folder")


def _check_settings(path: Path, spec: WorkerSpec, id_field: str, resume: bool) -> None:
    """Record the settings that shape the output next to it; a resume with other settings is refused,
    since it would mix records compressed two ways in one file."""
    settings = {"field": spec.field, "id_field": id_field, "output_field": spec.output_field, "ratio": spec.ratio,
                "target_tokens": spec.target_tokens, "model": spec.model,
                "config": asdict(spec.config or CompressionConfig())}
    if resume and path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None  # torn by a kill while it was written: it is rewritten below
        if isinstance(before, dict):
            changed = sorted(k for k in settings if k in before and before[k] != settings[k])
            if changed:
                raise ConfigError(
                    "resume with other settings than the job in progress: "
                    + ", ".join(f"{k}={settings[k]!r} (was {before[k]!r})" for k in changed)
                    + f"; use the same settings, or a new output file (settings are in {path})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a kill leaves the old file or the new one, never half of one


def _tasks(items: Iterator[Item], added: tuple[str, ...], done: set[str], logged: set[Any], rej: JsonlLog,
           tally: _Tally, bar: Any) -> Iterator[Task]:
    """Valid, not-yet-done records as tasks; rejects are written here, as the input streams past."""
    for item in items:
        tally.read += 1
        reason = item.reason
        clash = [name for name in added if item.record is not None and name in item.record]
        if reason is None and clash:
            reason = f"field {clash[0]!r} is already in the record and would be overwritten by the output"
        if item.key is not None:
            first = tally.first_line.setdefault(item.key, item.line)
            if first != item.line:
                reason = f"duplicate id {item.id!r} (first on line {first})"
        if reason is not None:
            _reject(rej, logged, tally, item.line, item.id, reason, item.source)
            bar.update(1)
        elif item.key in done:
            tally.skipped += 1
            bar.update(1)
        elif item.record is not None and item.key is not None:
            yield Task(item.key, item.line, item.record)


def _record(outcome: Outcome, out: JsonlLog, rej: JsonlLog, logged: set[Any], tally: _Tally) -> None:
    if outcome.json_line is None:
        _reject(rej, logged, tally, outcome.line, _id(outcome.key), outcome.error or "unknown error", None)
        return
    out.write(outcome.json_line)
    if tally.first_written is None:
        tally.first_written = time.perf_counter()
    tally.written += 1
    tally.before += outcome.original_tokens
    tally.after += outcome.compressed_tokens


def _reject(rej: JsonlLog, logged: set[Any], tally: _Tally, line: int, ident: Any, reason: str,
            source: str | None) -> None:
    tally.rejected += 1
    if line in logged:  # already logged by the run this one resumes
        return
    logged.add(line)
    entry = {"line": line, "id": ident, "reason": reason, "input": source}
    rej.write(to_json_line(entry))


def _id(key: str) -> Any:
    return json.loads(key)


def _progress_bar(source: str, progress: bool | None) -> Any:
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    total = count_records(source) if show else None
    return tqdm(total=total, unit="rec", desc="compressing", file=sys.stderr, disable=not show,
                dynamic_ncols=True, smoothing=0.1)


__all__ = ["CorpusSummary", "ENGINES", "compress_corpus"]
