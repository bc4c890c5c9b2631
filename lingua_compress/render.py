"""Rendering: kept units back into text, by their original character offsets.

Text between two kept neighbours is copied verbatim; where units were dropped in between, a single separator
stands in for them that keeps the line structure (a blank line, a line break or a space), written with the line
break the gap itself uses, so a CRLF or CR prompt never comes back with mixed line endings.
"""

from __future__ import annotations

import re

import numpy as np
import regex

from .segment import CJK_CLASS, line_break, line_view

_BLANK_LINE = re.compile(r"\n[ \t\f\v]*\n")
# A letter, digit or mark (a word may end in a vowel sign or virama), outside CJK, whose words have no spaces.
_WORDISH = regex.compile(rf"(?!{CJK_CLASS})[\p{{L}}\p{{N}}\p{{M}}]")


def _separator(gap: str, left: str, right: str) -> str:
    if "\n" in gap or "\r" in gap:
        return line_break(gap) * (2 if _BLANK_LINE.search(line_view(gap)) else 1)
    if any(c.isspace() for c in gap):
        return " "
    # A dropped unit glued two kept ones (e.g. "well-known" minus "-"): a space keeps them apart as words.
    if _WORDISH.match(left) and _WORDISH.match(right):
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
