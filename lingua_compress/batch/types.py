"""Types of batch prompting: samples, the batch format, the shared prefix, batches and per-item results."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import ConfigError

# Per-item outcome. Everything but "ok" is a failure the runner may re-ask.
STATUSES = ("ok", "missing", "conflict", "unparseable", "truncated", "misaligned", "demo_copy")
STYLES = ("indexed", "json", "auto_demo")


@dataclass(frozen=True)
class Sample:
    """One question to ask: an id (unique in a run), one or several named input fields, and for
    demonstrations the answer (rationale included, e.g. "... The answer is 72.").

    ``Sample("q1", "How many ...?")`` has one field named ``question``; pass a mapping for several, e.g.
    ``{"premise": ..., "hypothesis": ...}``. Fields are stored as ``(name, text)`` pairs in order.
    """

    id: str
    input: Any
    answer: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError(f"Sample.id must be a non-empty str, got {self.id!r}")
        raw = self.input
        if isinstance(raw, str):
            fields: tuple[tuple[str, str], ...] = (("question", raw),)
        elif isinstance(raw, Mapping):
            fields = tuple((str(k), v) for k, v in raw.items())
        elif isinstance(raw, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in raw):
            fields = tuple((str(k), v) for k, v in raw)
        else:
            raise ConfigError(f"Sample.input must be a str or a mapping of field name -> str, got {raw!r:.60}")
        if not fields or any(not isinstance(v, str) for _, v in fields):
            raise ConfigError(f"Sample {self.id!r}: every input field must be a str, got {raw!r:.60}")
        if self.answer is not None and not isinstance(self.answer, str):
            raise ConfigError(f"Sample {self.id!r}: answer must be a str or None, got {self.answer!r:.60}")
        object.__setattr__(self, "input", fields)

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        return self.input

    @property
    def text(self) -> str:
        """All input fields joined, for embeddings and echo checks."""
        return "\n".join(v for _, v in self.fields)


@dataclass(frozen=True, kw_only=True)
class BatchFormat:
    """How questions and answers are written in a batched prompt.

    Attributes:
        style: "indexed" (Q[i] ... then A[i] ...), "json" (answers as {"1": ..., "2": ...}) or "auto_demo"
            (the model repeats Q[i] before each A[i], so its own earlier pairs act as demonstrations).
        q_tag, a_tag: marker names, written ``Q[1]:``.
        field_tags: tag per input field name for multi-field samples, e.g. (("premise", "Premise"),); the
            single default field ``question`` uses ``q_tag``.
        count_reminder: state the number of questions right before them (models drop items without it).
        prefill: end completion prompts with the first marker, so the model starts in the format.
        blank_line_stop: stop completion models at a blank line (the end of an answer block). Turn off when
            answers legitimately hold blank lines.
        answer_pattern: a regex with one group extracting the final answer from an answer's text (its last
            match counts); an answer without a match is "unparseable". None: the whole answer text.
        instruction_rule: whether the prefix states the format rule after the user's instruction.
    """

    style: str = "indexed"
    q_tag: str = "Q"
    a_tag: str = "A"
    field_tags: tuple[tuple[str, str], ...] = ()
    count_reminder: bool = True
    prefill: bool = True
    blank_line_stop: bool = True
    answer_pattern: str | None = None
    instruction_rule: bool = True

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ConfigError(f"BatchFormat.style={self.style!r} is not accepted; use one of {STYLES}")
        for name in ("q_tag", "a_tag"):
            tag = getattr(self, name)
            if not isinstance(tag, str) or not re.fullmatch(r"[A-Za-z][A-Za-z ]{0,30}", tag):
                raise ConfigError(f"BatchFormat.{name}={tag!r} must be letters (and spaces), e.g. 'Q'")
        if self.q_tag.lower() == self.a_tag.lower():
            raise ConfigError(f"q_tag and a_tag must differ, both are {self.q_tag!r}")
        if isinstance(self.field_tags, Mapping):
            object.__setattr__(self, "field_tags", tuple(self.field_tags.items()))
        if self.answer_pattern is not None:
            try:
                compiled = re.compile(self.answer_pattern)
            except re.error as exc:
                raise ConfigError(f"answer_pattern={self.answer_pattern!r} is not a valid regex: {exc}") from exc
            if compiled.groups != 1:
                raise ConfigError(f"answer_pattern={self.answer_pattern!r} must have exactly one group")

    def tag_for(self, field_name: str) -> str:
        if field_name == "question":
            return self.q_tag
        return dict(self.field_tags).get(field_name, field_name.replace("_", " ").title())


GSM8K_PATTERN = r"[Tt]he answer is:?\s*\$?\s*(-?[\d,]*\.?\d+)"


@dataclass(frozen=True)
class SharedPrefix:
    """Instruction + demonstrations in batched form, compressed (or not) once and reused byte-identically.

    ``blocks`` are the demonstration blocks as sent (compressed if ``compressed``); ``text`` is what completion
    prompts start with. ``demo_answers`` are the answers of each block (original and as sent), for the
    demo-copy check. ``key`` is the content hash the cache uses.
    """

    instruction: str
    blocks: tuple[str, ...]
    block_size: int
    fmt: BatchFormat
    original_text: str
    original_tokens: int
    tokens: int
    compressed: bool
    ratio: float | None
    key: str
    demo_answers: tuple[tuple[str, ...], ...] = ()

    @property
    def text(self) -> str:
        return "\n\n".join(p for p in (self.instruction, *self.blocks) if p)

    @property
    def kept_ratio(self) -> float:
        return self.tokens / self.original_tokens if self.original_tokens else 1.0


@dataclass(frozen=True)
class Batch:
    """One call: slot i (1-based) asks sample ``sample_ids[i-1]``. ``target_id`` is set in Auto-Demo kNN mode,
    where only the last slot's answer is used."""

    index: int
    sample_ids: tuple[str, ...]
    prompt: Any  # str for completion models, tuple of {"role", "content"} dicts for chat models
    stop: tuple[str, ...]
    max_tokens: int
    prefill: str = ""
    target_id: str | None = None

    @property
    def size(self) -> int:
        return len(self.sample_ids)


@dataclass(frozen=True)
class ItemResult:
    """What the parser made of one slot. ``answer`` is the whole answer text, ``final`` the extracted value
    (``answer_pattern``), ``echo`` the repeated question in Auto-Demo style. ``call_error`` is set (status
    "missing") when the call itself failed, so no answer was ever seen: the API's fault, not the model's."""

    id: str
    slot: int
    status: str
    answer: str | None = None
    final: str | None = None
    echo: str | None = None
    note: str = ""
    attempts: int = 1
    call_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class ParsedBatch:
    """Per-slot results of one completion, plus text that belonged to no slot (prose, a hallucinated next batch)."""

    items: tuple[ItemResult, ...]
    extra: tuple[str, ...] = field(default_factory=tuple)

    def by_id(self) -> dict[str, ItemResult]:
        return {r.id: r for r in self.items}


def check_samples(samples: Sequence[Sample]) -> tuple[Sample, ...]:
    """Samples as a tuple, with unique ids (answers are attributed by id)."""
    samples = tuple(samples)
    seen: set[str] = set()
    for s in samples:
        if not isinstance(s, Sample):
            raise ConfigError(f"expected lingua_compress.batch.Sample items, got {type(s).__name__}: {s!r:.60}")
        if s.id in seen:
            raise ConfigError(f"sample id {s.id!r} occurs twice; ids must be unique within a run")
        seen.add(s.id)
    return samples
