"""Segmentation: a prompt becomes parts, sentences and word units, all as character offsets into one text.

Units are the smallest thing the compressor drops. They are whole words (hyphenated words and contractions
included), runs of punctuation, URLs, and single CJK characters, so a dropped unit never leaves half a word or
half a multi-byte character behind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .errors import ConfigError, InvalidPromptError

PART_KINDS = ("instruction", "context", "question")
PART_SEPARATOR = "\n\n"

CJK_CLASS = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
_URL = r"(?:https?://|www\.)[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]}]"
# A currency sign or percent glued to a number belongs to it: "$40" must not come out as "40".
_NUMBER = r"[$€£¥]\d+(?:[.,:/]\d+)*%?|\d+(?:[.,:/]\d+)*%"
_UNIT_RE = re.compile(rf"{_URL}|{_NUMBER}|{CJK_CLASS}|(?:(?!{CJK_CLASS})\w)+(?:[.,:/'’-](?:(?!{CJK_CLASS})\w)+)*|[^\w\s]+")
_URL_RE = re.compile(_URL)
_BLOCK_SPLIT_RE = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends at . ! ? (and CJK stops) followed by whitespace, or at a line break.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?。！？])\s+|\n+")
_IDENTIFIER_RE = re.compile(r"\d|_|[a-z][A-Z]")
_OPERATOR_RE = re.compile(r"[-+*/×÷=<>^()\[\]]+")
_VARIABLE_RE = re.compile(r"(?![aAI]$)[A-Za-z]")  # a one-letter unknown, not the words "a" and "I"


@dataclass(frozen=True)
class Prompt:
    """A structured prompt: an instruction, demonstrations (or retrieved context) and a question.

    The instruction and question are compressed lightly; demonstrations carry most of the cut and may be dropped
    whole by the coarse stage.
    """

    instruction: str = ""
    demonstrations: Sequence[str] = field(default_factory=tuple)
    question: str = ""

    def __post_init__(self) -> None:
        for name in ("instruction", "question"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InvalidPromptError(f"Prompt.{name} must be a str, got {type(value).__name__}: {value!r:.60}")
        demos = self.demonstrations
        if isinstance(demos, str):
            raise InvalidPromptError("Prompt.demonstrations must be a sequence of str, got a single str")
        demos = tuple(demos)
        for i, demo in enumerate(demos):
            if not isinstance(demo, str):
                raise InvalidPromptError(
                    f"Prompt.demonstrations[{i}] must be a str, got {type(demo).__name__}: {demo!r:.60}"
                )
        object.__setattr__(self, "demonstrations", demos)


@dataclass(frozen=True)
class Part:
    kind: str  # one of PART_KINDS
    start: int
    end: int


@dataclass(frozen=True)
class Segmented:
    """The whole prompt text and its structure. Unit arrays are parallel numpy arrays, one entry per unit."""

    text: str
    parts: tuple[Part, ...]
    sentences: np.ndarray  # [n_sentences, 2] char offsets
    unit_start: np.ndarray
    unit_end: np.ndarray
    unit_part: np.ndarray
    unit_sentence: np.ndarray
    protected: np.ndarray  # bool: never dropped by the token pass
    forced: np.ndarray  # bool: a user keep= match; its sentence and part are never dropped either

    @property
    def n_units(self) -> int:
        return len(self.unit_start)

    def part_kinds(self) -> np.ndarray:
        """Kind index (into PART_KINDS) of each unit."""
        kinds = np.array([PART_KINDS.index(p.kind) for p in self.parts], dtype=np.int64)
        return kinds[self.unit_part] if self.n_units else np.zeros(0, dtype=np.int64)


def _blocks(text: str, offset: int) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for m in _BLOCK_SPLIT_RE.finditer(text):
        if text[pos : m.start()].strip():
            spans.append((offset + pos, offset + m.start()))
        pos = m.end()
    if text[pos:].strip():
        spans.append((offset + pos, offset + len(text)))
    return spans


def build_parts(prompt: str | Prompt) -> tuple[str, tuple[Part, ...]]:
    """Join a prompt into one text and name its parts. A plain string's blank-line blocks become context parts."""
    if isinstance(prompt, str):
        return prompt, tuple(Part("context", s, e) for s, e in _blocks(prompt, 0))
    if not isinstance(prompt, Prompt):
        raise InvalidPromptError(
            f"prompt must be a str or a lingua_compress.Prompt, got {type(prompt).__name__}: {prompt!r:.60}"
        )
    pieces = [("instruction", prompt.instruction)]
    pieces += [("context", d) for d in prompt.demonstrations]
    pieces.append(("question", prompt.question))
    text, parts = "", []
    for kind, piece in pieces:
        if not piece.strip():
            continue
        if text:
            text += PART_SEPARATOR
        parts.append(Part(kind, len(text), len(text) + len(piece)))
        text += piece
    return text, tuple(parts)


def compile_keep(keep: Iterable[str | re.Pattern[str]]) -> list[re.Pattern[str]]:
    """Each keep entry as patterns: a compiled regex as is; a str both literally and as a regex if it is one."""
    if isinstance(keep, (str, re.Pattern)):
        keep = [keep]
    patterns: list[re.Pattern[str]] = []
    for item in keep:
        if isinstance(item, re.Pattern):
            patterns.append(item)
        elif isinstance(item, str) and item:
            patterns.append(re.compile(re.escape(item)))
            try:
                patterns.append(re.compile(item))
            except re.error:
                pass  # not a regex (e.g. "Q["): the literal match covers it
        else:
            raise ConfigError(f"keep entries must be non-empty str or re.Pattern, got {item!r}")
    return patterns


def _sentences(text: str, parts: tuple[Part, ...]) -> list[tuple[int, int]]:
    spans = []
    for part in parts:
        pos = part.start
        for m in _SENTENCE_END_RE.finditer(text, part.start, part.end):
            if m.start() > pos:
                spans.append((pos, m.start()))
            pos = m.end()
        if part.end > pos:
            spans.append((pos, part.end))
    return spans


def _protect_operators(text: str, starts: list[int], ends: list[int], protected: list[bool]) -> None:
    """Protect an operator between numbers on one line: "6 * 20 = 120" must not come out as "6 20 120"."""

    def mathy(i: int) -> bool:
        word = text[starts[i]:ends[i]]
        return bool(re.search(r"\d", word) or _OPERATOR_RE.fullmatch(word) or _VARIABLE_RE.fullmatch(word))

    for i in range(1, len(starts) - 1):
        if protected[i] or not _OPERATOR_RE.fullmatch(text[starts[i]:ends[i]]):
            continue
        if "\n" in text[ends[i - 1]:starts[i + 1]]:
            continue
        protected[i] = mathy(i - 1) and mathy(i + 1)


TEMPLATE_MAX_UNITS = 6


def _protect_template(text: str, parts: tuple[Part, ...], starts: list[int], ends: list[int],
                      part_idx: list[int], protected: list[bool]) -> None:
    """Protect line openings that most demonstrations share ("Question:", "Let's think step by step",
    "The answer is"): they are the format the target LLM copies, cheap, and predictable enough that the
    token pass would otherwise drop them first."""
    blocks = {i for i, p in enumerate(parts) if p.kind == "context"}  # a set: a long text has many blocks
    if len(blocks) < 3:
        return
    lines: list[tuple[int, list[int]]] = []  # (part, unit indices of one line)
    for i in range(len(starts)):
        if part_idx[i] in blocks and (not lines or lines[-1][0] != part_idx[i]
                                      or "\n" in text[ends[i - 1]:starts[i]]):
            lines.append((part_idx[i], []))
        if part_idx[i] in blocks:
            lines[-1][1].append(i)
    openings = [(part, units, [text[starts[u]:ends[u]] for u in units[:TEMPLATE_MAX_UNITS]]) for part, units in lines]
    seen: dict[tuple[str, ...], set[int]] = {}
    for part, _, words in openings:
        for n in range(1, len(words) + 1):
            seen.setdefault(tuple(words[:n]), set()).add(part)
    quorum = max(3, (len(blocks) + 1) // 2)
    for _, units, words in openings:
        n = max((n for n in range(1, len(words) + 1) if len(seen[tuple(words[:n])]) >= quorum), default=0)
        for u in units[:n]:
            protected[u] = True


def segment(
    prompt: str | Prompt,
    keep: Sequence[re.Pattern[str]] = (),
    protect_defaults: bool = True,
) -> Segmented:
    """Split a prompt into parts, sentences and units, marking protected units.

    Protected units are never dropped by the token pass: by default anything with a digit (numbers, amounts,
    dates, ids), identifiers (snake_case, camelCase) and URLs. Units overlapping a ``keep`` match are forced:
    the coarse stage keeps their sentence and part too, so they always survive.
    """
    text, parts = build_parts(prompt)
    sentences = _sentences(text, parts)
    starts, ends, part_idx, sent_idx, protected = [], [], [], [], []
    si = 0
    for pi, part in enumerate(parts):
        for m in _UNIT_RE.finditer(text, part.start, part.end):
            while si < len(sentences) - 1 and sentences[si][1] <= m.start():
                si += 1
            word = m.group()
            starts.append(m.start())
            ends.append(m.end())
            part_idx.append(pi)
            sent_idx.append(si)
            protected.append(protect_defaults and bool(_IDENTIFIER_RE.search(word) or _URL_RE.fullmatch(word)))
    if protect_defaults:
        _protect_operators(text, starts, ends, protected)
        _protect_template(text, parts, starts, ends, part_idx, protected)
    unit_start = np.array(starts, dtype=np.int64)
    unit_end = np.array(ends, dtype=np.int64)
    forced = np.zeros(len(starts), dtype=bool)
    for pattern in keep:
        for m in pattern.finditer(text):
            if m.end() > m.start():
                forced |= (unit_start < m.end()) & (unit_end > m.start())
    return Segmented(
        text=text,
        parts=parts,
        sentences=np.array(sentences, dtype=np.int64).reshape(-1, 2),
        unit_start=unit_start,
        unit_end=unit_end,
        unit_part=np.array(part_idx, dtype=np.int64),
        unit_sentence=np.array(sent_idx, dtype=np.int64),
        protected=np.array(protected, dtype=bool) | forced,
        forced=forced,
    )
