"""The batch CLI's files: questions in (ids unique and typed), answers out (one line per id, resumable).

Ids are JSON values, a string or an integer, and ``4`` and ``"4"`` are different ids; a line without an id
takes its line number (an integer). Internally an id is its canonical JSON text, so the two never meet.

The answers file holds one JSON line per id. A rerun rewrites it atomically first, keeping the lines of ids
already answered ``ok`` and dropping those it will ask again, and then appends one line per question it asks,
so every id appears once however often the job is rerun or killed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..corpus.io import to_json_line  # one writer of surrogate-safe JSON lines for both jobs
from ..errors import ConfigError

ID_FIELD = "id"
ANSWER_FIELDS = (ID_FIELD, "status")


def id_key(value: Any) -> str:
    """The id as canonical JSON text: ``4`` -> ``4``, ``"4"`` -> ``"4"``."""
    return json.dumps(value, ensure_ascii=False)


def id_value(key: str) -> Any:
    return json.loads(key)


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each non-blank line; a line that is not a JSON object is an error."""
    with open(path, "rb") as handle:
        for n, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}:{n} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n} is not valid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{n} is not a JSON object (got {type(row).__name__}); each line must "
                                  f"be one object")
            yield n, row


def row_id(path: Path, n: int, row: dict[str, Any], first: dict[str, tuple[int, bool]]) -> str:
    """The id key of line ``n`` (its line number when it has none), unique among the lines seen in ``first``
    (id key -> line and whether that line's id is its line number)."""
    derived = ID_FIELD not in row
    value: Any = n if derived else row[ID_FIELD]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ConfigError(f"{path}:{n} has id {value!r}: an id must be a string or an integer (4 and \"4\" "
                          f"are different ids), or leave the field out to use the line number")
    key = id_key(value)
    if key in first:
        m, m_derived = first[key]
        # Saying where a clashing id came from points at the fix: the line numbers of id-less lines are ids too.
        how = [f"line {k} has no 'id', so its id is its line number" for k, d in ((m, m_derived), (n, derived)) if d]
        raise ConfigError(f"{path}: line {n} has id {value!r}, which line {m} already has"
                          + (f" ({'; '.join(how)})" if how else "") + "; ids must be unique across the whole file")
    first[key] = (n, derived)
    return key


def check_paths(output: Path, inputs: Iterable[Path | None]) -> None:
    """Refuse missing inputs, and an output that is a directory or an input, before anything is read or asked."""
    for path in inputs:
        if path is not None and not path.is_file():
            raise ConfigError(f"{path} is not a file; give a JSONL file with one question (or demonstration) "
                              f"per line")
    if output.is_dir():
        raise ConfigError(f"-o {output} is a directory; give a file path for the answers JSONL, e.g. "
                          f"{output / 'answers.jsonl'}")
    if not output.parent.is_dir():
        raise ConfigError(f"-o {output}: the folder {output.parent} does not exist; create it or give another path")
    for path in inputs:
        if path is not None and output.exists() and path.exists() and output.resolve() == path.resolve():
            raise ConfigError(f"-o {output} is also an input file; give another path for the answers")


def load_answers(path: Path) -> dict[str, dict[str, Any]]:
    """The answers already in ``path`` by id key, one row per id: an ``ok`` row over any other, else the later.

    A torn last line (a killed run) is ignored; any other line that is not an answer row means ``path`` is not
    an answers file, and it is refused rather than rewritten.
    """
    rows: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return rows
    lines = path.read_bytes().splitlines(keepends=True)
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except ValueError:  # bad JSON or bad UTF-8
            if n == len(lines) and not raw.endswith(b"\n"):
                break  # cut by a killed run: its question is asked again
            raise ConfigError(f"{path}:{n} is not valid JSON, so {path} is not an answers file written by "
                              f"lingua-compress batch; give another -o path") from None
        if not isinstance(row, dict) or any(f not in row for f in ANSWER_FIELDS):
            raise ConfigError(f"{path}: line {n} is not an answer row (it lacks 'id' or 'status'), so it is not "
                              f"an answers file written by lingua-compress batch; give another -o path")
        key = id_key(row[ID_FIELD])
        if row.get("status") == "ok" or rows.get(key, {}).get("status") != "ok":
            rows[key] = row
    return rows


def rewrite_answers(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Replace ``path`` by ``rows`` atomically: a kill leaves the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(to_json_line(row) + "\n")
    os.replace(tmp, path)
