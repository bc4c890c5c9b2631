"""Segmentation: a prompt becomes parts, sentences and word units, all as character offsets into one text.

Units are the smallest thing the compressor drops. They are whole words (hyphenated words and contractions
included), runs of punctuation, URLs, e-mail addresses, and single CJK characters, so a dropped unit never leaves
half a word or half a multi-byte character behind. Units are grapheme-aware: a letter keeps its combining marks
(Devanagari vowel signs and virama, Thai vowels, Arabic harakat, decomposed accents), and ZWJ/ZWNJ sequences and
emoji sequences stay whole. Marks with no base (at the start of the text or after whitespace) belong to no unit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import regex

from .errors import ConfigError, InvalidPromptError

PART_KINDS = ("instruction", "context", "question")
PART_SEPARATOR = "\n\n"  # between a Prompt's parts when they have no line breaks of their own

_CJK_RANGES = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
CJK_CLASS = rf"[{_CJK_RANGES}]"
_URL = r"(?:https?://|www\.)[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]}]"
_JOIN = r"[.,:/'’\-\u05be\u05f3\u05f4]"  # inside a word: "well-known", "it's", "3.14"; Hebrew maqaf and geresh


def _unit_pattern(word: str, word_cont: str, symbol: str, cjk: str = "", ext: str = "") -> str:
    """The unit regex over its character classes, each the inside of a ``[...]``: a word's first character, its
    later ones, punctuation and symbols, CJK characters, and what extends the grapheme cluster before it."""
    x = f"[{ext}]" if ext else ""
    w, wx = f"[{word}]", f"[{word_cont}]"
    email = rf"{w}[{word_cont}.%+\-]*@{w}[{word_cont}\-]*(?:\.{w}[{word_cont}\-]*)+"
    # A currency sign or percent glued to a number belongs to it: "$40" must not come out as "40".
    number = rf"(?:[$€£¥]\d+(?:[.,:/]\d+)*%?|\d+(?:[.,:/]\d+)*%)" + (f"(?!{x})" if ext else "")
    cjk_unit = f"|[{cjk}]{x}*" if cjk else ""  # one character (CJK words have no spaces between them)
    symbols = f"[{symbol}](?:[{symbol}]|{x})*" if ext else f"[{symbol}]+"
    return rf"(?P<url>{_URL})|(?P<email>{email})|{number}{cjk_unit}|{w}{wx}*(?:{_JOIN}{w}{wx}*)*|{symbols}"


# What continues the grapheme cluster before it (UAX #29 Extend, SpacingMark, ZWJ: marks, ZWNJ, emoji modifiers).
# Classes instead of \X: a unit is a base character followed by these, which is \X for every cluster a unit can
# start with, and scans several times faster. Nothing starts with them, so a mark with no base opens no unit.
_EXT = r"\p{M}\p{GCB=Extend}\p{GCB=SpacingMark}\p{GCB=ZWJ}"
_WORD_CHARS = r"\p{L}\p{N}_\p{GCB=Prepend}"
_UNIT_RE = regex.compile(_unit_pattern(
    word=rf"[{_WORD_CHARS}]--[{_CJK_RANGES}{_EXT}]",
    word_cont=rf"[[{_WORD_CHARS}{_EXT}]--[{_CJK_RANGES}]]",
    symbol=rf"[^\s\u200b{_WORD_CHARS}{_CJK_RANGES}{_EXT}]",  # ZWSP separates Thai and Khmer words: a gap
    cjk=rf"[{_CJK_RANGES}]--[{_EXT}]",
    ext=_EXT,
), regex.V1)
# The same units for ASCII text, where no character extends another: the stdlib engine is ~3x faster than regex's.
_ASCII_UNIT_RE = re.compile(_unit_pattern("A-Za-z0-9_", "A-Za-z0-9_", r"^\sA-Za-z0-9_"), re.ASCII)
_PROTECTED_KINDS = ("url", "email")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")
_BLOCK_SPLIT_RE = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends at . ! ? (and CJK stops) followed by whitespace, or at a line break.
_SENTENCE_END_RE = re.compile(r"(?<=[.!?。！？])\s+|\n\s*")
_IDENTIFIER_RE = re.compile(r"\d|_|[a-z][A-Z]")
_OPERATOR_RE = re.compile(r"[-+*/×÷=<>^()\[\]]+")
_VARIABLE_RE = re.compile(r"(?![aAI]$)[A-Za-z]")  # a one-letter unknown, not the words "a" and "I"
# A line's label ("Question:", "Final answer:") and the few-shot answer phrases a target copies.
# Words are bounded and must be space-separated, so a long line without a colon costs linear time.
_OPENING_RE = re.compile(r"^[ \t]*[A-Za-z][A-Za-z'’]{0,24}(?:[ \t]+[A-Za-z][A-Za-z'’]{0,24}){0,2}[ \t]*:(?=\s|$)"
                         r"|^[ \t]*(?:So )?[Tt]he answer is\b|\bLet's think step by step\b", re.M)


# The answer phrase of few-shot CoT and its option letter: "So the answer is (B)", "the answer is 12".
_ANSWER_PHRASE_RE = re.compile(r"\b(?:[Ss]o )?[Tt]he answer is(?:\s+\([A-Z]\))?")


def line_view(text: str) -> str:
    """``text`` with CRLF and CR line breaks as LF, same length, so that offsets found in it index ``text``.

    The structural regexes (blocks, sentences, lines) read this view; units and rendering use ``text`` itself.
    """
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n ").replace("\r", "\n")


def line_break(text: str) -> str:
    """The first line break ``text`` uses (CRLF, CR or LF); LF when it has none."""
    m = _LINE_BREAK_RE.search(text)
    return m.group() if m else "\n"


def check_text(text: str, name: str) -> None:
    """Reject text that is not valid Unicode: a lone surrogate (left by a bad decode) breaks every tokenizer."""
    m = _SURROGATE_RE.search(text)
    if m:
        i = m.start()
        raise InvalidPromptError(
            f"{name} contains a lone surrogate U+{ord(m.group()):04X} at character {i} "
            f"(near {ascii(text[max(0, i - 20) : i + 20])}); it is not valid Unicode, usually left by decoding "
            "bytes with errors='surrogateescape'. Pass valid text, e.g. decode with errors='replace'"
        )


@dataclass(frozen=True)
class Prompt:
    """A structured prompt: an instruction, demonstrations (or retrieved context) and a question.

    The instruction and question are compressed lightly; demonstrations carry most of the cut and may be dropped
    whole by the coarse stage. ``demonstrations`` is a sequence of str; pass ``()`` for none (``None`` is rejected:
    taking it as empty would hide a missing retrieval result).
    """

    instruction: str = ""
    demonstrations: Sequence[str] = field(default_factory=tuple)
    question: str = ""

    def __post_init__(self) -> None:
        for name in ("instruction", "question"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InvalidPromptError(f"Prompt.{name} must be a str, got {type(value).__name__}: {value!r:.60}")
            check_text(value, f"Prompt.{name}")
        demos = self.demonstrations
        if isinstance(demos, str):
            raise InvalidPromptError("Prompt.demonstrations must be a sequence of str, got a single str: wrap it in "
                                     "a list")
        if not isinstance(demos, Iterable):
            raise InvalidPromptError(f"Prompt.demonstrations must be a sequence of str (() for none), got "
                                     f"{type(demos).__name__}: {demos!r:.60}")
        demos = tuple(demos)
        for i, demo in enumerate(demos):
            if not isinstance(demo, str):
                raise InvalidPromptError(
                    f"Prompt.demonstrations[{i}] must be a str, got {type(demo).__name__}: {demo!r:.60}"
                )
            check_text(demo, f"Prompt.demonstrations[{i}]")
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
    salient: np.ndarray  # bool: format words the token pass keeps first, while its budget allows

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
    """Join a prompt into one text and name its parts. A plain string's blank-line blocks become context parts.

    A Prompt's parts are joined by a blank line in the line ending they use, so a CRLF prompt stays CRLF.
    """
    if isinstance(prompt, str):
        check_text(prompt, "prompt")
        return prompt, tuple(Part("context", s, e) for s, e in _blocks(line_view(prompt), 0))
    if not isinstance(prompt, Prompt):
        raise InvalidPromptError(
            f"prompt must be a str or a lingua_compress.Prompt, got {type(prompt).__name__}: {prompt!r:.60}"
        )
    pieces = [("instruction", prompt.instruction)]
    pieces += [("context", d) for d in prompt.demonstrations]
    pieces.append(("question", prompt.question))
    breaks = (line_break(p) for _, p in pieces if "\r" in p or "\n" in p)
    separator = next(breaks, "\n") * 2
    text, parts = "", []
    for kind, piece in pieces:
        if not piece.strip():
            continue
        if text:
            text += separator
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


TEMPLATE_MAX_UNITS = 8


def _protect_template(text: str, parts: tuple[Part, ...], starts: list[int], ends: list[int],
                      part_idx: list[int], protected: list[bool]) -> bool:
    """Protect line openings that most demonstrations share ("Question:", "Let's think step by step",
    "The answer is"): they are the format the target LLM copies, cheap, and predictable enough that the
    token pass would otherwise drop them first. False where there are too few demonstrations to tell."""
    blocks = {i for i, p in enumerate(parts) if p.kind == "context"}  # a set: a long text has many blocks
    if len(blocks) < 3:
        return False
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
    _protect_answer_phrases(text, parts, blocks, quorum, starts, ends, protected)
    return True


def _protect_answer_phrases(text: str, parts: tuple[Part, ...], blocks: set[int], quorum: int,
                            starts: list[int], ends: list[int], protected: list[bool]) -> None:
    """Protect "So the answer is (B)" where most demonstrations end that way mid-line (BIG-Bench Hard's CoT): the
    target copies the phrase, and measured on BBH the token pass cut it to "So the is (B" and "the answer is ()",
    which the target then wrote back. Line openings are :func:`_protect_template`'s; this is the phrase anywhere."""
    hits = [(i, m.span()) for i in sorted(blocks)
            for m in _ANSWER_PHRASE_RE.finditer(text, parts[i].start, parts[i].end)]
    if len({i for i, _ in hits}) < quorum:
        return
    unit_start = np.asarray(starts, dtype=np.int64)
    for _, (a, b) in hits:
        lo, hi = np.searchsorted(unit_start, a, side="right") - 1, np.searchsorted(unit_start, b, side="left")
        for u in range(max(lo, 0), hi):
            if ends[u] > a:
                protected[u] = True


def _openings(text: str, starts: np.ndarray, ends: np.ndarray, protected: np.ndarray) -> np.ndarray:
    """Units of line labels and answer phrases, for prompts too short for :func:`_protect_template` to learn
    their format from repetition (a single worked example). Not protected: a tight budget must still be met
    (protecting them made short prompts overshoot), so the token pass takes them first instead."""
    spans = np.array([m.span() for m in _OPENING_RE.finditer(text)], dtype=np.int64).reshape(-1, 2)
    if not len(spans):
        return np.zeros(len(starts), dtype=bool)
    # Matches do not overlap and come in order: a unit overlaps the first match ending after its start, if any.
    first = np.searchsorted(spans[:, 1], starts, side="right")
    hit = first < len(spans)
    hit[hit] = spans[first[hit], 0] < ends[hit]
    return hit & ~protected


def segment(
    prompt: str | Prompt,
    keep: Sequence[re.Pattern[str]] = (),
    protect_defaults: bool = True,
) -> Segmented:
    """Split a prompt into parts, sentences and units, marking protected units.

    Protected units are never dropped by the token pass: by default anything with a digit (numbers, amounts,
    dates, ids), identifiers (snake_case, camelCase), URLs and e-mail addresses. Units overlapping a ``keep`` match
    are forced: the coarse stage keeps their sentence and part too, so they always survive.
    """
    text, parts = build_parts(prompt)
    view = line_view(text)  # line structure in CRLF or CR text reads like LF; offsets stay those of text
    sentences = _sentences(view, parts)
    unit_re = _ASCII_UNIT_RE if text.isascii() else _UNIT_RE
    starts, ends, part_idx, sent_idx, protected = [], [], [], [], []
    si = 0
    for pi, part in enumerate(parts):
        for m in unit_re.finditer(text, part.start, part.end):
            while si < len(sentences) - 1 and sentences[si][1] <= m.start():
                si += 1
            word = m.group()
            starts.append(m.start())
            ends.append(m.end())
            part_idx.append(pi)
            sent_idx.append(si)
            protected.append(protect_defaults
                             and (m.lastgroup in _PROTECTED_KINDS or bool(_IDENTIFIER_RE.search(word))))
    templated = False
    if protect_defaults:
        _protect_operators(view, starts, ends, protected)
        templated = _protect_template(view, parts, starts, ends, part_idx, protected)
    unit_start = np.array(starts, dtype=np.int64)
    unit_end = np.array(ends, dtype=np.int64)
    salient = np.zeros(len(starts), dtype=bool)
    if protect_defaults and not templated:
        salient = _openings(view, unit_start, unit_end, np.array(protected, dtype=bool))
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
        salient=salient & ~forced,
    )
