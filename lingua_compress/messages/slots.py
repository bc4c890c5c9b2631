"""Compress the prose slots of one message in one call, and cut the result back into one output per slot.

The slots go in as the demonstrations of a :class:`~lingua_compress.Prompt`, so the compressor sees the whole
message at once. The result is split back by its ``kept_spans`` (character spans of the joined prompt), never by
searching for a separator in the compressed text: a separator the compressor dropped or merged cannot shift a
slot's output into its neighbour. Where anything fails to line up, each slot is compressed on its own instead.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..counting import TokenCounter
from ..result import CompressionResult
from ..segment import Prompt


def compress_slots(compressor: Any, slots: Sequence[str], budget: int, keep: tuple, tokenizer: Any,
                   counter: TokenCounter) -> tuple[list[str], int]:
    """Each slot compressed so that together they cost about ``budget`` tokens; and what they cost joined."""
    res = compressor.compress(Prompt(demonstrations=list(slots)), target_tokens=budget, keep=keep,
                              target_tokenizer=tokenizer)
    outputs = split_back(slots, res)
    if outputs is not None:
        return outputs, res.compressed_tokens
    costs = [counter.count(s) for s in slots]
    total = max(sum(costs), 1)
    outputs = [compressor.compress(s, target_tokens=int(round(budget * c / total)), keep=keep,
                                   target_tokenizer=tokenizer).text for s, c in zip(slots, costs)]
    return outputs, sum(counter.count(o) for o in outputs)


def split_back(slots: Sequence[str], res: CompressionResult) -> list[str] | None:
    """The compressed text of each slot, or None where the result does not line up with the slots.

    Slots start and end with non-space characters and are joined by whitespace, and the compressor writes kept
    spans verbatim with only whitespace between them; so each is found by a forward search that cannot stop early.
    """
    bounds = _locate(slots, res.original)
    placed = _locate([res.original[s:e] for s, e in res.kept_spans], res.text)
    if bounds is None or placed is None:
        return None
    outputs, k = [], 0
    spans = res.kept_spans
    for a, b in bounds:
        while k < len(spans) and spans[k][1] <= a:
            k += 1
        first = last = None
        j = k
        while j < len(spans) and spans[j][0] < b:
            s, e = spans[j]
            at = placed[j][0] - s  # offset from the original to the compressed text inside this span
            first = max(s, a) + at if first is None else first
            last = min(e, b) + at
            j += 1
        outputs.append("" if first is None else res.text[first:last])
    if not all(_subsequence(o, s) for o, s in zip(outputs, slots)):
        return None
    return outputs


def _locate(pieces: Sequence[str], text: str) -> list[tuple[int, int]] | None:
    """Where each piece sits in ``text``, in order, with only whitespace around and between them."""
    found, pos = [], 0
    for piece in pieces:
        at = text.find(piece, pos)
        if at < 0 or text[pos:at].strip():
            return None
        found.append((at, at + len(piece)))
        pos = at + len(piece)
    return found if not text[pos:].strip() else None


def _subsequence(out: str, original: str) -> bool:
    """The non-space characters of ``out`` appear in ``original`` in order: nothing was invented or reordered."""
    rest = iter(c for c in original if not c.isspace())
    return all(c in rest for c in out if not c.isspace())
