"""Structure-safe content: a text becomes pieces kept verbatim and prose slots the compressor may cut.

Kept verbatim: fenced and indented code, table headers, pipes and delimiter rows (only the prose of body cells is
cut), link and URL text, inline code, HTML tags, markdown markers (headings, list items, quotes) and lines without
words. JSON (a whole text, or a fenced ``json`` block) keeps its keys, numbers, literals, whitespace and escapes
byte for byte: only long prose string values become slots, and their literals are rebuilt with ``json.dumps``, so
the document always parses. Whatever is not recognised as
prose is kept: over-keeping costs tokens, mangling structure costs correctness.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Union

from ..segment import CJK_CLASS
from .types import MessagesConfig


@dataclass(frozen=True)
class Keep:
    """Verbatim text. With ``line`` set, it belongs to that prose slot's line and goes when the slot comes back
    empty, so a dropped list item leaves no bare marker or empty line behind."""

    text: str
    line: int = -1


@dataclass(frozen=True)
class Prose:
    slot: int  # index into the slots list the pieces were split with


@dataclass(frozen=True)
class JsonString:
    literal: str  # the string literal as written, quotes and escapes included
    value: str
    pieces: tuple["Piece", ...]


@dataclass(frozen=True)
class JsonDoc:
    text: str  # the document as written: returned if the rebuilt one ever failed to parse
    pieces: tuple["Piece", ...]


Piece = Union[Keep, Prose, JsonString, JsonDoc]


@dataclass
class Counts:
    code_blocks: int = 0
    json_documents: int = 0
    tables: int = 0


_LINE = re.compile(r"[^\n]*\n|[^\n]+")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})([^\n]*)")
_INDENTED = re.compile(r"(?: {4}| {0,3}\t)[ \t]*\S")
_WORDY = re.compile(r"[^\W_]")
_CJK = re.compile(CJK_CLASS)
_TABLE_DELIMITER = re.compile(r"\s*\|?(?:\s*:?-+:?\s*\|)+(?:\s*:?-+:?\s*)?")
_LINK_DEFINITION = re.compile(r" {0,3}\[[^\]\n]+\]:")
_SETEXT_UNDERLINE = re.compile(r"=+|-+")
# Heading, quote, list and task markers: kept, with the whitespace after them, before a line's prose.
_MARKER = re.compile(r"(?:>[ \t]*|(?:#{1,6}|[-*+]|\d{1,9}[.)]|\[[ xX]\])(?:[ \t]+|$))+")
_INLINE = re.compile(
    r"(`+)[^`\n]*?\1"  # inline code
    r"|!?\[[^\]\n]*\]\([^)\n]*\)|!?\[[^\]\n]*\]\[[^\]\n]*\]"  # links and images, inline and by reference
    r"|<(?:https?://|mailto:)[^>\s]*>|</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>\n]*)?/?>"  # autolinks, HTML tags
    r"|(?:https?://|www\.)\S+"
    r"|\{[^{}\n]*\}"  # template placeholders and inline objects: "{name}" must not lose a brace
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_KEY_COLON = re.compile(r"[ \t\r\n]*:")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_QUOTED_KEY = re.compile(r'"\s*:')
_JSON_SPACE = "\ufeff \t\r\n"  # a byte-order mark too: json.loads refuses one, and files often start with it


def json_kind(text: str) -> str | None:
    """What JSON ``text`` is: "doc" (an object or array), "lines" (JSON Lines), "deep" (nested too deeply to parse
    here), "broken" (starts like JSON and has quoted keys but does not parse: a truncated tool output), else None.
    Only "doc" and "lines" are compressed; the rest is kept verbatim, since prose rules would mangle it."""
    body = text.lstrip(_JSON_SPACE)
    if body[:1] not in ("{", "["):
        return None
    try:
        json.loads(body)
    except RecursionError:
        return "deep"
    except ValueError:
        lines = [line for line in body.splitlines() if line.strip()]
        if len(lines) > 1 and all(_parses(line) for line in lines):
            return "lines"
        return "broken" if _QUOTED_KEY.search(body) else None
    return "doc"


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return text.lstrip(_JSON_SPACE)[:1] in ("{", "[")


class Splitter:
    """Splits the texts of one message into pieces, appending their prose to ``slots`` (compressed together)."""

    def __init__(self, cfg: MessagesConfig, slots: list[str], counts: Counts, depth: int = 0) -> None:
        self.cfg, self.slots, self.counts, self.depth = cfg, slots, counts, depth

    def split(self, text: str) -> list[Piece]:
        kind = json_kind(text)
        if kind is None:
            return self._markdown(text)
        if kind != "lines" or not self.cfg.compress_json:
            self.counts.json_documents += 1
            return [self._json(text)] if kind == "doc" and self.cfg.compress_json else [Keep(text)]
        pieces: list[Piece] = []
        for line in _LINE.findall(text):
            if _parses(line):
                self.counts.json_documents += 1
                pieces.append(self._json(line))
            else:
                pieces.append(Keep(line))
        return pieces

    def prose(self, text: str) -> Piece:
        """A prose slot for ``text`` (no edge whitespace), or Keep where it is too short to be worth cutting."""
        if _words(text) < self.cfg.min_words or not _WORDY.search(text):
            return Keep(text)
        self.slots.append(text)
        return Prose(len(self.slots) - 1)

    def _json(self, text: str) -> JsonDoc:
        pieces: list[Piece] = []
        pos = 0
        # Outside string literals valid JSON has no quote, so a left-to-right scan finds every literal.
        for m in _STRING.finditer(text):
            if _KEY_COLON.match(text, m.end()):
                continue
            value = json.loads(m.group())
            sub = self._json_value(value)
            if sub is None:
                continue
            pieces += [Keep(text[pos : m.start()]), JsonString(m.group(), value, tuple(sub))]
            pos = m.end()
        pieces.append(Keep(text[pos:]))
        return JsonDoc(text, tuple(pieces))

    def _json_value(self, value: str) -> list[Piece] | None:
        """Pieces of a string value worth compressing, else None (the literal stays as written)."""
        if _words(value) < self.cfg.json_min_words or _SURROGATE.search(value) or json_kind(value):
            return None
        sub = Splitter(self.cfg, self.slots, self.counts, self.depth + 1)._markdown(value)
        return sub if any(isinstance(p, Prose) for p in sub) else None

    def _markdown(self, text: str) -> list[Piece]:
        lines = _LINE.findall(text)
        pieces: list[Piece] = []
        para: list[str] = []  # consecutive plain prose lines: one slot, so a paragraph is cut as a whole
        i, prev_blank = 0, True
        while i < len(lines):
            kind, j = _classify(lines, i)
            if kind == "plain":
                para.append(lines[i])
            else:  # the paragraph first: slots are numbered in reading order, the order the compressor reads them
                pieces += self._whole_lines("".join(para)) + self._block(kind, lines[i:j], prev_blank)
                para = []
            prev_blank = not lines[j - 1].strip()
            i = j
        return pieces + self._whole_lines("".join(para))

    def _block(self, kind: str, lines: list[str], prev_blank: bool) -> list[Piece]:
        if kind == "fence":
            return self._fenced(lines, _FENCE.match(lines[0]).group(2))
        if kind == "line":
            return self._text_line(lines[0])
        if kind == "indented":
            self.counts.code_blocks += int(prev_blank)  # after text, indented lines continue it: kept, not counted
        elif kind == "table" and _is_table(lines):
            self.counts.tables += 1
            return self._table(lines)
        return [Keep("".join(lines))]

    def _table(self, lines: list[str]) -> list[Piece]:
        """A table keeps its header row, delimiter row and every pipe; only the prose inside body cells is cut.
        A cell with inline code, a link or an escaped pipe is kept whole: its pipes and spans must not move."""
        pieces: list[Piece] = [Keep(lines[0])]
        for line in lines[1:]:
            if _TABLE_DELIMITER.fullmatch(line.rstrip("\r\n")) or "\\|" in line:
                pieces.append(Keep(line))
                continue
            cells = line.split("|")
            edges = (not line.lstrip().startswith("|"), not line.rstrip().endswith("|"))  # outer cells without pipes
            for k, cell in enumerate(cells):
                is_cell = 0 < k < len(cells) - 1 or (k == 0 and edges[0]) or (k == len(cells) - 1 and edges[1])
                if is_cell and not _inline_spans(cell.strip()):
                    pieces += self._fragment(cell)
                else:
                    pieces.append(Keep(cell))
                if k < len(cells) - 1:
                    pieces.append(Keep("|"))
        return pieces

    def _fenced(self, lines: list[str], info: str) -> list[Piece]:
        closed = len(lines) > 1 and _is_close(lines[-1], lines[0])
        opening, closing = lines[0], (lines[-1] if closed else "")
        body = "".join(lines[1:-1] if closed else lines[1:])
        kind = json_kind(body) if info.strip().split()[:1] in (["json"], ["JSON"]) else None
        if kind is not None:
            self.counts.json_documents += 1
            if self.depth == 0 and self.cfg.compress_json and kind == "doc":
                return [Keep(opening), self._json(body), Keep(closing)]
            return [Keep("".join(lines))]
        if self.cfg.keep_code:
            self.counts.code_blocks += 1
            return [Keep("".join(lines))]
        return [Keep(opening), *self._whole_lines(body), Keep(closing)]

    def _text_line(self, line: str) -> list[Piece]:
        """Pieces of one line with a marker or inline verbatim spans."""
        lead = len(line) - len(line.lstrip())
        marker = _MARKER.match(line, lead)
        start = marker.end() if marker else lead
        body = line[start:].rstrip()
        end = start + len(body)
        spans = _inline_spans(body)
        if not spans:  # the marker goes with its prose: a list item cut to nothing leaves no "- " behind
            return self._slot_line(line[:start], body, line[end:])
        pieces: list[Piece] = [Keep(line[:start])]
        pos = 0
        for s, e in spans + [(len(body), len(body))]:
            pieces += self._fragment(body[pos:s]) + [Keep(body[s:e])]
            pos = e
        return [p for p in pieces + [Keep(line[end:])] if not (isinstance(p, Keep) and not p.text)]

    def _fragment(self, text: str) -> list[Piece]:
        """Prose between verbatim spans of a line: its edge whitespace always stays, so neighbours never touch."""
        core = text.strip()
        if not core:
            return [Keep(text)]
        lead = text[: len(text) - len(text.lstrip())]
        return [Keep(lead), self.prose(core), Keep(text[len(lead) + len(core):])]

    def _whole_lines(self, text: str) -> list[Piece]:
        """Whole lines of prose as one slot; their indentation and line break go when the slot comes back empty."""
        core = text.strip()
        if not core:
            return [Keep(text)] if text else []
        lead = text[: len(text) - len(text.lstrip())]
        return self._slot_line(lead, core, text[len(lead) + len(core):])

    def _slot_line(self, head: str, core: str, tail: str) -> list[Piece]:
        piece = self.prose(core) if core else Keep("")
        line = piece.slot if isinstance(piece, Prose) else -1
        return [p for p in (Keep(head, line), piece, Keep(tail, line)) if not (isinstance(p, Keep) and not p.text)]


def _words(text: str) -> int:
    # CJK text has no spaces between words: each character counts, as the compressor drops them one by one.
    return len(text.split()) + len(_CJK.findall(text))


def _classify(lines: list[str], i: int) -> tuple[str, int]:
    """The kind of block starting at line ``i`` and where it ends."""
    line = lines[i]
    fence = _FENCE.match(line)
    if fence and (fence.group(1)[0] == "~" or "`" not in fence.group(2)):
        return "fence", _fence_end(lines, i, fence.group(1))
    if _INDENTED.match(line):
        return "indented", _run(lines, i, lambda s: bool(_INDENTED.match(s)), blanks=True)
    if "|" in line:
        return "table", _run(lines, i, lambda s: "|" in s, blanks=False)
    if (not line.strip() or not _WORDY.search(line) or _LINK_DEFINITION.match(line)
            or (i + 1 < len(lines) and _SETEXT_UNDERLINE.fullmatch(lines[i + 1].strip()))):
        return "keep", i + 1  # a setext heading's text stays with its underline
    lead = len(line) - len(line.lstrip())
    if _MARKER.match(line, lead) or _inline_spans(line[lead:].rstrip()):
        return "line", i + 1
    return "plain", i + 1


def _run(lines: list[str], i: int, member, blanks: bool) -> int:
    """End of the run of lines from ``i`` that are members; with ``blanks``, blank lines inside it join it."""
    j = i + 1
    while j < len(lines):
        if member(lines[j]):
            j += 1
        elif blanks and not lines[j].strip():
            k = j
            while k < len(lines) and not lines[k].strip():
                k += 1
            if k < len(lines) and member(lines[k]):
                j = k
            else:
                break
        else:
            break
    return j


def _fence_end(lines: list[str], i: int, fence: str) -> int:
    """End of a fenced block opened at ``i``: after its closing line, or the end of the text if never closed."""
    for j in range(i + 1, len(lines)):
        if _is_close(lines[j], lines[i], fence):
            return j + 1
    return len(lines)


def _is_close(line: str, opening: str, fence: str | None = None) -> bool:
    if fence is None:
        m = _FENCE.match(opening)
        fence = m.group(1) if m else "```"
    stripped = line.strip()
    return (len(line) - len(line.lstrip(" ")) <= 3 and len(stripped) >= len(fence)
            and stripped == fence[0] * len(stripped))


def _is_table(lines: list[str]) -> bool:
    return any(_TABLE_DELIMITER.fullmatch(s.rstrip("\r\n")) for s in lines) or sum(
        s.lstrip().startswith("|") for s in lines) >= 2


def _inline_spans(body: str) -> list[tuple[int, int]]:
    """Verbatim spans of a line, widened to whitespace on both sides: a word glued to a link stays with it, so
    cutting the prose next to it can never fuse two words."""
    spans: list[tuple[int, int]] = []
    for m in _INLINE.finditer(body):
        s, e = m.start(), m.end()
        while s > 0 and not body[s - 1].isspace():
            s -= 1
        while e < len(body) and not body[e].isspace():
            e += 1
        if spans and s <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(e, spans[-1][1]))
        else:
            spans.append((s, e))
    return spans


def render(pieces: tuple[Piece, ...] | list[Piece], outputs: list[str]) -> str:
    """The text of ``pieces`` with each prose slot replaced by its compressed output."""
    out: list[str] = []
    for p in pieces:
        if isinstance(p, Keep):
            if p.line < 0 or outputs[p.line]:
                out.append(p.text)
        elif isinstance(p, Prose):
            out.append(outputs[p.slot])
        elif isinstance(p, JsonString):
            value = render(p.pieces, outputs)
            out.append(p.literal if value == p.value else json.dumps(value, ensure_ascii=p.literal.isascii()))
        else:
            out.append(_checked_json(render(p.pieces, outputs), p.text))
    return "".join(out)


def _checked_json(text: str, original: str) -> str:
    # Literals are swapped for json.dumps output, so this always parses; checked anyway, as the promise is absolute.
    try:
        json.loads(text.lstrip(_JSON_SPACE))
    except (ValueError, RecursionError):
        return original
    return text
