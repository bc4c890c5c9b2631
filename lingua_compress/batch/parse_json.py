"""JSON-style answers ({"1": ..., "2": ...}): keyed by slot number or sample id, never by position."""

from __future__ import annotations

import json
import re
from typing import Any

from .types import Batch, BatchFormat, ItemResult, ParsedBatch

# Complete "key": "value" pairs, for salvaging an object cut off by max_tokens.
_PAIR = re.compile(r'"([^"\\]{1,64})"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _first_object(text: str) -> tuple[dict[str, Any] | None, int, int]:
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, end = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj, m.start(), end
    return None, -1, -1


def _slot_of(key: str, batch: Batch) -> int | None:
    key = str(key).strip()
    m = re.fullmatch(r"(?:[A-Za-z ]*\[)?\s*(\d+)\s*\]?", key)
    if m:
        return int(m.group(1))
    if key in batch.sample_ids:  # keyed by sample id
        return batch.sample_ids.index(key) + 1
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def parse_json(text: str, batch: Batch, fmt: BatchFormat, finish_reason: str | None) -> ParsedBatch:
    from .parse import extract_final

    obj, start, end = _first_object(text)
    salvaged = obj is None
    extra: list[str] = []
    if obj is None:
        pairs = _PAIR.findall(text)
        obj = {k: json.loads(f'"{v}"') for k, v in pairs}
    else:
        extra = [t.strip() for t in (text[:start], text[end:]) if t.strip() and t.strip() not in ("```", "```json")]
    found: dict[int, str] = {}
    for key, value in obj.items():
        slot = _slot_of(key, batch)
        if slot is None or not 1 <= slot <= batch.size:
            extra.append(f"{key}: {_text(value)}")
            continue
        found[slot] = _text(value)
    items = []
    for slot, sid in enumerate(batch.sample_ids, 1):
        if slot not in found:
            note = "output hit max_tokens" if finish_reason == "length" else ("no JSON object" if not obj else "")
            status = "truncated" if finish_reason == "length" and salvaged else "missing"
            items.append(ItemResult(sid, slot, status, note=note))
            continue
        answer = found[slot]
        final = extract_final(answer, fmt)
        status = "ok" if final is not None else "unparseable"
        items.append(ItemResult(sid, slot, status, answer, final, note="salvaged from broken JSON" if salvaged else ""))
    return ParsedBatch(tuple(items), tuple(extra))
