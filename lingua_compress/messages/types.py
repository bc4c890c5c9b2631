"""The settings and results of compressing a chat message list."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from ..config import as_integral, as_real
from ..errors import ConfigError
from ..result import TokenSavings
from ..segment import compile_keep


@dataclass(frozen=True, kw_only=True)
class MessagesConfig:
    """How :func:`compress_messages` spends a budget over a message list.

    Attributes:
        system_roles: roles kept at ``system_ratio`` (system prompts and their successors).
        system_ratio: the prose of system messages keeps at least this share of its tokens (1.0: verbatim).
        last_user_ratio: the prose of the last user message keeps at least this share (1.0: verbatim).
            Every other message (older turns, assistant replies, tool outputs) shares what is left of the budget.
        recency: how that rest is shared: each step back in the history multiplies a message's share of its own
            prose by this, newest first, a message keeping at most all of it (1.0: every older message keeps the
            same share). The next reply leans most on the latest turns (it often repeats their phrasing), so they
            are cut least. In bench_chat's pilot (4 conversations) 0.25 kept more of the reply's likelihood than
            0.5, and 0.5 more than an even share.
        keep_user_tokens: older user turns of at most this many prose tokens are kept verbatim ("now in French"
            or the task itself costs little and steers every reply after it), as long as together they cost at
            most a quarter of the budget; 0 turns this off.
        elide_below: an older message that the ramp would leave less than this share of its prose is elided whole
            instead, oldest first: its text content becomes "" (the message, its role, tool calls and non-text
            parts stay in place) and ``per_message`` marks it. A shred of an old turn helps the next reply less
            than the newer turns its code, tables and markup would take the budget from. Pinned messages (system,
            last user, short user turns) and the newest of the others are never elided. Budget the elisions
            leave unspent brings elided messages back, newest first: verbatim those that fit whole, then those whose
            code and tables fit with at least this share of their prose beside them, that prose cut. 0 turns
            this off: then every message keeps its code, tables and JSON structure whatever the budget.
        keep_code: keep fenced and indented code blocks verbatim; off, their bodies are compressed as prose.
        compress_json: compress long prose strings inside JSON documents; off, JSON is kept verbatim.
        min_words: prose pieces with fewer words are kept verbatim (headings, labels, short list items).
        json_min_words: JSON string values with fewer words are kept verbatim (ids, names, enums).
        keep: strings or regexes never cut, as in :meth:`Compressor.compress`.
    """

    system_roles: tuple[str, ...] = ("system", "developer")
    system_ratio: float = 1.0
    last_user_ratio: float = 1.0
    recency: float = 0.25
    keep_user_tokens: int = 32
    elide_below: float = 0.1
    keep_code: bool = True
    compress_json: bool = True
    min_words: int = 4
    json_min_words: int = 8
    keep: tuple[str | re.Pattern[str], ...] = ()

    def __post_init__(self) -> None:
        self._real("system_ratio", lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")
        self._real("last_user_ratio", lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")
        self._real("recency", lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")
        self._real("elide_below", lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
        self._integral("keep_user_tokens", lambda v: v >= 0, "an int >= 0")
        self._integral("min_words", lambda v: v >= 1, "an int >= 1")
        self._integral("json_min_words", lambda v: v >= 1, "an int >= 1")
        for name in ("keep_code", "compress_json"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"{name}={value!r} is not accepted: give True or False")
            object.__setattr__(self, name, bool(value))
        object.__setattr__(self, "system_roles", _roles(self.system_roles))
        keep = (self.keep,) if isinstance(self.keep, (str, re.Pattern)) else self.keep
        if not isinstance(keep, Iterable):
            raise ConfigError(f"keep={self.keep!r:.60} is not accepted: give a tuple of str or re.Pattern")
        keep = tuple(keep)
        compile_keep(keep)  # raises ConfigError naming a bad entry
        object.__setattr__(self, "keep", keep)

    def _real(self, name: str, ok: Callable[[float], bool], accepted: str) -> None:
        value = getattr(self, name)
        number = as_real(value)
        if number is None or not ok(number):
            raise ConfigError(f"{name}={value!r} is not accepted: give {accepted}")
        object.__setattr__(self, name, number)

    def _integral(self, name: str, ok: Callable[[int], bool], accepted: str) -> None:
        value = getattr(self, name)
        number = as_integral(value)
        if number is None or not ok(number):
            raise ConfigError(f"{name}={value!r} is not accepted: give {accepted}")
        object.__setattr__(self, name, number)


def _roles(value: object) -> tuple[str, ...]:
    # A bare str would iterate into one-letter roles and silently match nothing.
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(f"system_roles={value!r:.60} is not accepted: give a tuple of role names, e.g. ('system',)")
    roles = tuple(value)
    for role in roles:
        if not isinstance(role, str) or not role:
            raise ConfigError(f"system_roles entry {role!r:.40} is not accepted: each role is a non-empty str")
    return roles


@dataclass(frozen=True)
class MessageStats:
    """What happened to one message. Token counts cover its text content (the only thing compressed).

    ``budget_ratio`` is the share of the message's compressible prose the compressor was asked to keep (1.0: left
    verbatim). The counts say what was left alone: code blocks, JSON documents (only their long prose strings are
    compressed; JSON-like text that does not parse is kept whole), tables, and content parts that are not text
    (images, audio, files), passed through untouched. An ``elided`` message had its text emptied whole (see
    :attr:`MessagesConfig.elide_below`): its counts are then 0 but for the parts passed. A ``restored`` message was
    elided, then brought back (whole, or its prose cut to ``budget_ratio``) into budget the elisions left unspent.
    """

    index: int
    role: str
    original_tokens: int
    compressed_tokens: int
    budget_ratio: float
    code_blocks: int = 0
    json_documents: int = 0
    tables: int = 0
    parts_passed: int = 0
    elided: bool = False
    restored: bool = False

    @property
    def kept_ratio(self) -> float:
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0


@dataclass(frozen=True)
class MessagesResult(TokenSavings):
    """What :func:`compress_messages` returns: the messages in the caller's shape, and the counts achieved.

    ``target_tokens`` is the budget asked for; ``compressed_tokens`` what was reached. They differ when the parts
    kept by rule (system prompts and the last user turn at their ratios, code, tables, JSON structure) cost more
    than the budget; ``per_message`` says where the tokens went.
    """

    messages: list[dict[str, Any]]
    original_tokens: int
    compressed_tokens: int
    target_tokens: int
    per_message: tuple[MessageStats, ...]
    tokenizer: str  # the tokenizer the counts are in

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the derived ratios included."""
        data = asdict(self)
        data["per_message"] = [asdict(s) | {"kept_ratio": s.kept_ratio} for s in self.per_message]
        data["kept_ratio"] = self.kept_ratio
        data["compression"] = self.compression if math.isfinite(self.compression) else None
        return data
