"""Parsing a batched completion back into per-sample answers: by the index in each marker, never by position.

A completion is cut into segments at line-start markers (``A[3]:``, ``**A[3]:**``, ``- Answer 3:``,
``Q[3]:`` ...). A segment runs to the next marker, so multi-line (chain-of-thought) answers stay whole, and the
index in the marker alone decides which sample a segment belongs to: reordered answers land right and a missing
one shifts nothing. Text that belongs to no slot (prose before the first marker, indices outside the batch, a
hallucinated next batch) is returned as ``extra`` and never attributed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Sequence

from .types import Batch, BatchFormat, ItemResult, ParsedBatch, Sample, SharedPrefix

_WORD = re.compile(r"\w+")
_MD = r"(?:\*\*|__)?"
ECHO_THRESHOLD = 0.5  # Dice overlap of echo and question words below which an echo names no question of ours
DEMO_COPY_MIN_WORDS = 5  # single answers shorter than this may equal a demo answer by chance (labels, numbers)


@dataclass(frozen=True)
class Segment:
    kind: str  # "a" (answer) or "q" (question / input field echo)
    index: int
    body: str
    start: int


@functools.lru_cache(maxsize=64)
def _marker_re(fmt: BatchFormat, field_tags: tuple[str, ...] = ()) -> re.Pattern[str]:
    answer_tags = {fmt.a_tag, "Answer"}
    question_tags = {fmt.q_tag, "Question", *(t for _, t in fmt.field_tags), *field_tags}
    alts = sorted(answer_tags | question_tags, key=len, reverse=True)
    tags = "|".join(re.escape(t) for t in alts)
    # A bare index ("Answer 3:") must be followed by a colon, so prose such as "A 3-year-old" is no marker.
    return re.compile(
        rf"^[ \t]*(?:[-*>#]+[ \t]+)?{_MD}[ \t]*(?P<tag>{tags})[ \t]*"
        rf"(?:\[[ \t]*(?P<i1>\d+)[ \t]*\]|\((?P<i2>\d+)\)|(?P<i3>\d+))[ \t]*{_MD}[ \t]*"
        rf"(?(i3):|[:.)-])[ \t]*{_MD}",
        re.M | re.I,
    )


def segments(text: str, fmt: BatchFormat, field_tags: tuple[str, ...] = ()) -> tuple[str, list[Segment]]:
    """Prose before the first marker, and the marked segments in text order. ``field_tags`` are the input
    field markers in use (``Premise``, ...), so an echoed field never runs into an answer."""
    answer_tags = {fmt.a_tag.lower(), "answer"}
    matches = list(_marker_re(fmt, field_tags).finditer(text))
    prose = text[: matches[0].start()] if matches else text
    segs = []
    for m, nxt in zip(matches, matches[1:] + [None]):
        body = text[m.end() : nxt.start() if nxt else len(text)]
        body = body.strip().removesuffix("**").removesuffix("__").strip()
        index = int(m.group("i1") or m.group("i2") or m.group("i3"))
        kind = "a" if m.group("tag").lower() in answer_tags else "q"
        segs.append(Segment(kind, index, body, m.start()))
    return prose, segs


def _cut_restart(segs: list[Segment], style: str) -> tuple[list[Segment], list[Segment]]:
    """Split off a hallucinated next batch: in indexed style question 1 after answers began, or A[1] again
    after other segments; in Auto-Demo style the first question echoed a second time."""
    # The first marker kind of a batch: an echo of Q[1] (Auto-Demo) or A[1] (indexed). It coming back after
    # other segments is a restart; other repeats are left to the conflict check, and reordering stays harmless.
    first_kind = "q" if style == "auto_demo" else "a"
    seen_first, seen_after, seen_answer = False, False, False
    for i, s in enumerate(segs):
        if style != "auto_demo" and s.kind == "q" and s.index == 1 and seen_answer:
            return segs[:i], segs[i:]  # question 1 after answers: the model began a batch of its own
        if s.kind == first_kind and s.index == 1:
            if seen_first and seen_after:
                return segs[:i], segs[i:]
            seen_first = bool(s.body)  # an empty prefilled marker followed by a newline is no answer yet
        elif seen_first:
            seen_after = True
        seen_answer |= s.kind == "a"
    return segs, []


def normalize(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".!")


def extract_final(answer: str, fmt: BatchFormat) -> str | None:
    """The final answer in ``answer``: the last match of ``fmt.answer_pattern``, or the whole text."""
    if fmt.answer_pattern is None:
        return answer.strip() or None
    matches = list(re.finditer(fmt.answer_pattern, answer))
    if not matches:
        return None
    return matches[-1].group(1).replace(",", "").strip() or None


def echo_score(echo: str, question: str) -> float:
    """Dice overlap of lowercase word sets: 1.0 for a verbatim repeat, robust to small paraphrases."""
    a, b = set(_WORD.findall(echo.lower())), set(_WORD.findall(question.lower()))
    return 2 * len(a & b) / (len(a) + len(b)) if a or b else 1.0


@functools.lru_cache(maxsize=64)
def demo_answer_blocks(prefix: SharedPrefix) -> tuple[tuple[str, ...], ...]:
    """Normalized answers of each demonstration block, as written originally and as sent (maybe compressed)."""
    blocks = [tuple(normalize(a) for a in block) for block in prefix.demo_answers]
    if prefix.fmt.style != "json":
        for block in prefix.blocks:
            _, segs = segments(block, prefix.fmt)
            blocks.append(tuple(normalize(s.body) for s in segs if s.kind == "a"))
    return tuple(b for b in blocks if b)


def parse_completion(
    completion: str,
    batch: Batch,
    samples: Sequence[Sample],
    fmt: BatchFormat,
    *,
    finish_reason: str | None = None,
    prefix: SharedPrefix | None = None,
) -> ParsedBatch:
    """Per-slot results for ``batch`` (``samples`` in slot order). Never raises on model output."""
    text = batch.prefill + (completion or "")
    if fmt.style == "json":
        from .parse_json import parse_json

        return parse_json(text, batch, fmt, finish_reason)
    tags = tuple(sorted({fmt.tag_for(name) for s in samples for name, _ in s.fields}))
    prose, segs = segments(text, fmt, tags)
    kept, cut = _cut_restart(segs, fmt.style)
    extra = [prose.strip()] if prose.strip() else []
    extra += [text[cut[0].start :].strip()] if cut else []
    n = batch.size
    answers: dict[int, list[str]] = {}
    echoes: dict[int, list[str]] = {}
    for s in kept:
        if not 1 <= s.index <= n:
            extra.append(f"[{s.index}] {s.body}")
            continue
        (answers if s.kind == "a" else echoes).setdefault(s.index, []).append(s.body)
    last = kept[-1] if kept else None
    truncated_slot = last.index if finish_reason == "length" and not cut and last and last.kind == "a" else None
    items = [
        _item(slot, batch.sample_ids[slot - 1], answers.get(slot, []), echoes.get(slot, []), samples, fmt,
              truncated=slot == truncated_slot)
        for slot in range(1, n + 1)
    ]
    items = _mark_demo_copies(items, prefix)
    return ParsedBatch(tuple(items), tuple(extra))


def _item(slot: int, sid: str, answers: list[str], echoes: list[str], samples: Sequence[Sample],
          fmt: BatchFormat, *, truncated: bool) -> ItemResult:
    echo = "\n".join(echoes) if echoes else None
    answers = [a for a in answers if a] or answers[:1]  # an empty prefilled marker does not conflict
    if not answers:
        return ItemResult(sid, slot, "missing", echo=echo, note="echoed but not answered" if echo else "")
    answer = answers[0]
    if len({normalize(a) for a in answers}) > 1:
        return ItemResult(sid, slot, "conflict", answer, None, echo, note=f"{len(answers)} different answers")
    final = extract_final(answer, fmt)
    if truncated:
        return ItemResult(sid, slot, "truncated", answer, final, echo, note="output hit max_tokens")
    if final is None:
        return ItemResult(sid, slot, "unparseable", answer, None, echo,
                          note="empty answer" if not answer else "answer_pattern not found")
    if fmt.style == "auto_demo" and echo is not None:
        own = echo_score(echo, samples[slot - 1].text)
        best = max(range(len(samples)), key=lambda j: echo_score(echo, samples[j].text))
        if own < ECHO_THRESHOLD or (best != slot - 1 and echo_score(echo, samples[best].text) > own):
            return ItemResult(sid, slot, "misaligned", answer, final, echo,
                              note=f"echo matches slot {best + 1} better (own overlap {own:.2f})")
    return ItemResult(sid, slot, "ok", answer, final, echo)


def _mark_demo_copies(items: list[ItemResult], prefix: SharedPrefix | None) -> list[ItemResult]:
    """A small model at large batch sizes tends to reproduce a demonstration block's answers: flag a run of at
    least two slots equal to a demo block's answers, and any long answer equal to a demo answer."""
    if prefix is None:
        return items
    blocks = demo_answer_blocks(prefix)
    flagged: set[int] = set()
    got = [normalize(r.answer) if r.answer is not None else None for r in items]
    for block in blocks:
        m = min(len(block), len(got))
        if m >= 2 and all(got[i] == block[i] for i in range(m)):
            flagged.update(range(m))
    every = {a for block in blocks for a in block if len(a.split()) >= DEMO_COPY_MIN_WORDS}
    flagged.update(i for i, a in enumerate(got) if a is not None and a in every)
    return [
        ItemResult(r.id, r.slot, "demo_copy", r.answer, r.final, r.echo, note="copies a demonstration answer")
        if i in flagged and r.status == "ok" else r
        for i, r in enumerate(items)
    ]
