"""Rendering: kept units back into text, by their original character offsets.

Text between two kept neighbours is copied verbatim; where units were dropped in between, a single separator
stands in for them that keeps the line structure (a blank line, a line break or a space).
"""

from __future__ import annotations

import re

import numpy as np

from .segment import CJK_CLASS

_NEWLINE_RUN = re.compile(r"\n(?:[ \t\r\f\v]*\n)*")
_CJK = re.compile(CJK_CLASS)


def _separator(gap: str, left: str, right: str) -> str:
    runs = [m.group().count("\n") for m in _NEWLINE_RUN.finditer(gap)]
    if runs:
        return "\n\n" if max(runs) >= 2 else "\n"
    if any(c.isspace() for c in gap):
        return " "
    # A dropped unit glued two kept ones (e.g. "well-known" minus "-"): a space keeps them apart as words.
    if left.isalnum() and right.isalnum() and not _CJK.match(left) and not _CJK.match(right):
        return " "
    return ""


def render(
    text: str, starts: np.ndarray, ends: np.ndarray, keep: np.ndarray
) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The compressed text and the character spans of ``text`` it keeps."""
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        return "", ()
    out: list[str] = []
    spans: list[list[int]] = []
    prev = -2
    for i in idx.tolist():
        s, e = int(starts[i]), int(ends[i])
        if i == prev + 1 and spans:
            out.append(text[spans[-1][1] : s])
            spans[-1][1] = e
        else:
            if spans:
                out.append(_separator(text[spans[-1][1] : s], text[spans[-1][1] - 1], text[s]))
            spans.append([s, e])
        out.append(text[s:e])
        prev = i
    return "".join(out), tuple((a, b) for a, b in spans)
