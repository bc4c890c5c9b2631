"""Prompt files in, prompt/response pairs out: the data of distribution alignment.

A prompts file is JSONL (one object a line with a ``"prompt"`` string) or plain text (one prompt a line). The pairs
file is append-only JSONL written one fsynced line at a time, so a killed collection loses at most the line being
written; that torn last line is ignored on reading and cut off before the next append.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

from ..errors import ConfigError, LinguaCompressError

PROMPT_FORMATS = ("auto", "jsonl", "text")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_SNIPPET = 120


@dataclass(frozen=True)
class Pair:
    """One prompt and the target LLM's response to it."""

    prompt: str
    response: str


def read_prompts(path: str | Path, fmt: str = "auto", field: str = "prompt") -> list[str]:
    """The prompts of ``path`` in file order, blank lines skipped.

    ``fmt="auto"``: ``.jsonl``/``.ndjson`` files are JSONL, ``.txt`` files are text, anything else is JSONL when
    its first non-blank line starts with ``{``. A line that breaks the format raises ConfigError naming it.
    """
    if fmt not in PROMPT_FORMATS:
        raise ConfigError(f"prompt format {fmt!r} is not supported; use one of {PROMPT_FORMATS}")
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"prompts file {str(path)!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"prompts file {str(path)!r} is not UTF-8 text (byte offset {exc.start})") from None
    jsonl = fmt == "jsonl" or (fmt == "auto" and _looks_jsonl(path, lines))
    prompts = [_prompt_from_line(path, n, line, field) if jsonl else line
               for n, line in enumerate(lines, 1) if line.strip()]
    if not prompts:
        raise ConfigError(f"prompts file {str(path)!r} holds no prompts")
    return prompts


def _looks_jsonl(path: Path, lines: list[str]) -> bool:
    if path.suffix.lower() in _JSONL_SUFFIXES:
        return True
    if path.suffix.lower() == ".txt":
        return False
    first = next((line for line in lines if line.strip()), "")
    return first.lstrip().startswith("{")


def _prompt_from_line(path: Path, n: int, line: str, field: str) -> str:
    where = f"{path}:{n}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc.msg}): {line[:_SNIPPET]!r}") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: a JSON object with a {field!r} field is expected, got {type(record).__name__}")
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: field {field!r} must be a non-empty string, got {value!r:.60}")
    return value


def read_pairs(path: str | Path) -> list[Pair]:
    """The pairs of a pairs file (a torn last line is skipped; damage elsewhere raises ConfigError)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"pairs file {str(path)!r} does not exist; collect responses first")
    pairs = [_pair(path, n, rec) for n, rec in _records(path)]
    if not pairs:
        raise ConfigError(f"pairs file {str(path)!r} holds no prompt/response pairs")
    return pairs


def pair_targets(path: str | Path) -> list[str]:
    """The distinct ``target`` names recorded in a pairs file, in order of first appearance."""
    names = (rec.get("target") for _, rec in _records(Path(path)))
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))


def _pair(path: Path, n: int, record: dict[str, Any]) -> Pair:
    prompt, response = record.get("prompt"), record.get("response")
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise ConfigError(f"{path}:{n}: a pair needs string fields 'prompt' and 'response'")
    return Pair(prompt, response)


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for every whole line; stops at a torn last line."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            record = _parse(raw)
            if record is None:
                if raw.endswith(b"\n") or fh.read(1):
                    # A crash can only tear the last line; a bad line with more after it was edited by hand.
                    raise ConfigError(f"{path}:{n}: not a JSON object line, and not a torn last line either")
                return
            yield n, record


def _parse(raw: bytes) -> dict[str, Any] | None:
    # A torn line is a cut JSON object, which never parses; a whole last line without its newline (a file
    # written by hand) does, and is kept.
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def to_json_line(obj: Any) -> str:
    """One JSON line that is always valid UTF-8 (a lone surrogate in a str falls back to ``\\u`` escapes)."""
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj)
    return text


class PairLog:
    """The append-only pairs file: :meth:`open` repairs a torn tail and returns the prompts already answered."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh: IO[bytes] | None = None

    def open(self) -> set[str]:
        """Open for appending; the answered prompts (a torn last line is cut off first, its prompt is redone)."""
        done: set[str] = set()
        if self.path.exists():
            for _, record in _records(self.path):
                if isinstance(record.get("prompt"), str):
                    done.add(record["prompt"])
            self._repair_tail()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab", buffering=0)
        return done

    def _repair_tail(self) -> None:
        """Cut a torn last line off and end the file with a newline, so the next line starts on its own."""
        good, ends_newline = 0, True
        with open(self.path, "rb") as fh:
            for raw in fh:
                if raw.strip() and _parse(raw) is None:
                    break
                good, ends_newline = fh.tell(), raw.endswith(b"\n")
        if self.path.stat().st_size > good:
            os.truncate(self.path, good)
        if not ends_newline:
            with open(self.path, "ab") as fh:
                fh.write(b"\n")

    def append(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            raise LinguaCompressError(f"{self.path} is not open")
        data = memoryview((to_json_line(record) + "\n").encode("utf-8"))
        while data:  # a raw write may be partial
            data = data[self._fh.write(data) or 0:]
        # fsync: a response cost an API call; a power loss should not lose more than the line in flight.
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "PairLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
