"""Corpus input and output: streamed readers with per-record validation, and crash-safe JSONL appenders.

Everything here streams: the input is read one record at a time and the output is appended one line at a
time, so memory stays bounded by the number of ids (kept for duplicate and resume checks), not the corpus.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

from ..errors import ConfigError, LinguaCompressError

_GLOB_CHARS = set("*?[")
_SNIPPET = 200


@dataclass(frozen=True)
class Item:
    """One input record: valid (``reason`` is None) or a reject with the reason."""

    line: int  # 1-based line number in a JSONL input, or 1-based file number for .txt inputs
    record: dict[str, Any] | None
    key: str | None  # the id as canonical JSON, so 1 and "1" are different ids
    reason: str | None = None
    source: str | None = None  # the raw line (for a reject) or the .txt path

    @property
    def id(self) -> Any:
        return json.loads(self.key) if self.key is not None else None


def id_key(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def to_json_line(obj: Any) -> str:
    """``obj`` as one JSON line that is always valid UTF-8. Non-ASCII text stays readable, but a lone surrogate
    (legal in JSON and in a Python str, not encodable in UTF-8) makes the line use ``\\u`` escapes instead, which
    load back to the same value; written as is, it would stop the whole job at the write."""
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj)
    return text


def _txt_paths(source: str) -> list[str] | None:
    """The sorted .txt files a folder or glob names, or None when ``source`` is a single file.

    A folder's files are named relative to it, so ids do not change when the folder is spelled or mounted
    differently on resume (or on another machine of a cluster).
    """
    if _GLOB_CHARS & set(source):
        return sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
    path = Path(source)
    if path.is_dir():
        return sorted(p.relative_to(path).as_posix() for p in path.rglob("*.txt") if p.is_file())
    if path.suffix == ".txt":
        return [source]
    return None


def check_source(source: str) -> None:
    if source == "-":
        return
    paths = _txt_paths(source)
    if paths is None and not Path(source).is_file():
        raise ConfigError(f"input {source!r} does not exist: give a JSONL file, '-' for stdin, "
                          f"or a folder or glob of .txt files")
    if paths == []:
        raise ConfigError(f"input {source!r} matches no .txt files")


def count_records(source: str) -> int | None:
    """How many records ``source`` holds (a streaming line count), or None for stdin."""
    if source == "-":
        return None
    paths = _txt_paths(source)
    if paths is not None:
        return len(paths)
    n, last = 0, b"\n"
    with open(source, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def iter_items(source: str, field: str, id_field: str) -> Iterator[Item]:
    """Yield every input record in order, validated for shape (duplicates are the caller's check)."""
    paths = None if source == "-" else _txt_paths(source)
    if paths is not None:
        folder = Path(source) if Path(source).is_dir() else Path()
        for n, path in enumerate(paths, 1):
            text = (folder / path).read_text(encoding="utf-8", errors="replace")
            yield _check({id_field: path, field: text}, n, field, id_field, path)
        return
    stream: IO[bytes] = sys.stdin.buffer if source == "-" else open(source, "rb")
    try:
        for n, raw in enumerate(stream, 1):
            if raw.strip():
                yield _parse_line(raw, n, field, id_field)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _parse_line(raw: bytes, n: int, field: str, id_field: str) -> Item:
    snippet = raw[:_SNIPPET].decode("utf-8", errors="replace").rstrip("\n")
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Item(n, None, None, f"malformed JSON: {exc}", snippet)
    if not isinstance(record, dict):
        return Item(n, None, None, f"not a JSON object (got {type(record).__name__})", snippet)
    return _check(record, n, field, id_field, snippet)


def _check(record: dict[str, Any], n: int, field: str, id_field: str, source: str) -> Item:
    ident = record.get(id_field)
    if id_field not in record:
        return Item(n, None, None, f"missing id field {id_field!r}", source)
    if isinstance(ident, bool) or not isinstance(ident, (str, int)):
        return Item(n, None, None, f"id field {id_field!r} must be a string or an integer, "
                                   f"got {type(ident).__name__}", source)
    key = id_key(ident)
    text = record.get(field)
    if field not in record:
        return Item(n, None, key, f"missing text field {field!r}", source)
    if not isinstance(text, str):
        return Item(n, None, key, f"text field {field!r} must be a string, got {type(text).__name__}", source)
    if not text.strip():
        return Item(n, None, key, f"empty text in field {field!r}", source)
    return Item(n, record, key, None, source)


class JsonlLog:
    """An append-only JSONL file that survives SIGKILL: one ``write`` per line, flushed at once.

    A kill can only leave a torn *last* line; :meth:`recover` cuts it off, so every line that remains is a
    whole record. The kernel keeps what was written even when the process dies, so no fsync is needed for
    process crashes (a power loss can still lose the last lines; they are redone on resume).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.repaired_bytes = 0
        self._fh: IO[bytes] | None = None

    def open(self, append: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab" if append else "wb", buffering=0)

    def recover(self) -> Iterator[dict[str, Any]]:
        """Cut off a torn last line, then yield the records already in the file (none if it is missing)."""
        if not self.path.exists():
            return
        good = 0
        with open(self.path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                try:
                    record = json.loads(raw) if raw.endswith(b"\n") else None
                except (UnicodeDecodeError, json.JSONDecodeError):
                    record = None
                if record is None or not isinstance(record, dict):
                    if fh.read(1):  # damage before the last line is not a crash artefact: stop, don't guess
                        raise LinguaCompressError(f"{self.path}: line {n} is not a JSON record and is not the "
                                                  f"last line; this file was not written by a corpus job")
                    break
                good = fh.tell()
                yield record
        size = self.path.stat().st_size
        if size > good:  # a torn last line from a killed run: drop it, its record is redone
            self.repaired_bytes = size - good
            os.truncate(self.path, good)

    def write(self, line: str) -> None:
        if self._fh is None:
            raise LinguaCompressError(f"{self.path} is not open")
        data = memoryview((line + "\n").encode("utf-8"))
        while data:  # a raw write may be partial
            data = data[self._fh.write(data) or 0 :]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
