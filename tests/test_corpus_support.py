"""Helpers shared by the corpus tests (no tests here): a small corpus and output readers."""

from __future__ import annotations

import json
from pathlib import Path

from tiny import CORPUS


def corpus_texts(n: int) -> list[str]:
    """``n`` distinct short texts built from the tiny model's training sentences."""
    out = []
    for i in range(n):
        parts = [CORPUS[(i + k) % len(CORPUS)] for k in range(2 + i % 3)]
        out.append(f"Record {i}. " + " ".join(parts))
    return out


def write_corpus(path: Path, n: int, extra_lines: tuple[str, ...] = ()) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, text in enumerate(corpus_texts(n)):
            fh.write(json.dumps({"id": f"doc-{i}", "text": text, "meta": {"n": i}}) + "\n")
        for line in extra_lines:
            fh.write(line + "\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def records_by_id(path: Path) -> dict:
    """Output records by id, failing on a duplicate id."""
    out: dict = {}
    for rec in read_jsonl(path):
        assert rec["id"] not in out, f"duplicate id {rec['id']!r} in {path}"
        out[rec["id"]] = rec
    return out
