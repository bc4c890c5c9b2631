"""compress_messages: a chat message list to a budget, role-aware and structure-safe.

Budget: system prompts and the last user turn keep at least their configured share of their prose, short older user
turns are kept; code, tables, JSON structure and non-text parts cost what they cost; every other message (older
turns, assistant replies, tool outputs) shares what is left on a recency ramp, newest first, each message's miss
carried to the next so the total lands near it. The oldest of those that the ramp would cut to a shred are elided
whole instead (text emptied, the message kept in place), as a chat client's context window drops them; any budget
that leaves unspent brings elided messages back, whole where they fit, else with their prose cut to what is left.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from ..config import check_budget
from ..counting import TokenCounter, make_counter, resolve_tokenizer
from ..errors import BudgetWarning, ConfigError
from .slots import compress_slots
from .structure import Counts, Piece, Splitter, render
from .types import MessagesConfig, MessagesResult, MessageStats
from .validate import check_messages

if TYPE_CHECKING:
    from ..api import Compressor


@dataclass
class _Plan:
    """One message: its texts split into pieces, the prose slots they share, and their token counts."""

    index: int
    role: str
    texts: list[tuple[int | None, list[Piece]]]  # (content part index, or None for a str content; pieces)
    slots: list[str] = field(default_factory=list)
    counts: Counts = field(default_factory=Counts)
    parts_passed: int = 0
    original_tokens: int = 0
    prose_tokens: int = 0
    outputs: list[str] = field(default_factory=list)
    budget_ratio: float = 1.0
    elided: bool = False
    restored: bool = False


def compress_messages(
    compressor: "Compressor",
    messages: Sequence[dict[str, Any]],
    ratio: float | None = None,
    *,
    target_tokens: int | None = None,
    config: MessagesConfig | None = None,
    target_tokenizer: Any = None,
) -> MessagesResult:
    """Compress an OpenAI-style chat message list to ``ratio`` x its content tokens (or to ``target_tokens``).

    The list comes back a deep copy in the same shape: roles, names, tool calls, key order and unknown keys
    unchanged; only text content (a str, or ``{"type": "text"}`` parts) is shortened, and within it only prose:
    code, tables, links, markdown markers and JSON structure are kept (see :class:`MessagesConfig`). By default
    system prompts and the last user turn are kept verbatim and older turns and tool outputs take the cut.

    Raises:
        InvalidPromptError: ``messages`` is not a list of messages, naming the first bad index.
        ConfigError: a bad ratio, budget, config or compressor.
    """
    cfg = config if config is not None else MessagesConfig()
    if not isinstance(cfg, MessagesConfig):
        raise ConfigError(f"config must be a MessagesConfig, got {type(cfg).__name__}")
    ratio, target_tokens = check_budget(ratio, target_tokens)
    checked = check_messages(messages)
    if not callable(getattr(compressor, "compress", None)):
        raise ConfigError(f"compressor must be a lingua_compress.Compressor, got {type(compressor).__name__}")
    tokenizer = resolve_tokenizer(target_tokenizer)  # a bad name fails before the model loads
    out = copy.deepcopy(checked)  # the caller's list is never touched; only copied text is replaced
    counter = make_counter(tokenizer, compressor.scorer if tokenizer is None else None)
    plans = [_plan(i, m, cfg, counter) for i, m in enumerate(out)]
    original = sum(p.original_tokens for p in plans)
    target = ratio * original if ratio is not None else float(target_tokens)
    _run(compressor, plans, _pinned(out, cfg), target, cfg, tokenizer, counter)
    stats = tuple(_write(m, p, counter) for m, p in zip(out, plans))
    compressed = sum(s.compressed_tokens for s in stats)
    _warn_off_budget(compressed, target, original)
    return MessagesResult(out, original, compressed, int(round(min(target, original))), stats, counter.name)


def _plan(index: int, message: dict[str, Any], cfg: MessagesConfig, counter: TokenCounter) -> _Plan:
    plan = _Plan(index, message["role"], [])
    splitter = Splitter(cfg, plan.slots, plan.counts)
    content = message.get("content")
    if isinstance(content, str):
        plan.texts.append((None, splitter.split(content)))
        plan.original_tokens = counter.count(content)
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if part["type"] != "text":
                plan.parts_passed += 1  # images, audio, files: nothing here can shorten them safely
                continue
            plan.texts.append((j, splitter.split(part["text"])))
            plan.original_tokens += counter.count(part["text"])
    plan.prose_tokens = counter.count("\n\n".join(plan.slots))
    plan.outputs = list(plan.slots)
    return plan


def _pinned(messages: list[dict[str, Any]], cfg: MessagesConfig) -> dict[int, float]:
    """The messages kept at a floor ratio of their own: system roles, and the last user turn."""
    pinned = {i: cfg.system_ratio for i, m in enumerate(messages) if m["role"] in cfg.system_roles}
    users = [i for i, m in enumerate(messages) if m["role"] == "user" and i not in pinned]
    if users:
        pinned[users[-1]] = cfg.last_user_ratio
    return pinned


def _run(compressor: Any, plans: list[_Plan], pinned: dict[int, float], target: float, cfg: MessagesConfig,
         tokenizer: Any, counter: TokenCounter) -> None:
    pinned = pinned | _short_users(plans, pinned, target, cfg)
    fixed = sum(_fixed(p) for p in plans)
    floor = sum(r * plans[i].prose_tokens for i, r in pinned.items())
    free = [p for p in reversed(plans) if p.index not in pinned]  # newest first: the oldest absorb the misses
    sizes = [p.prose_tokens for p in free]
    weights = _weights(sizes, cfg.recency)
    room = target - fixed - floor
    kept = len(free) - elisions(sizes, [_fixed(p) for p in free], weights, room, cfg.elide_below)
    for plan in free[kept:]:
        if plan.original_tokens:  # a message without text (tool calls only, an image) had nothing to elide
            plan.elided, plan.budget_ratio, room = True, 0.0, room + _fixed(plan)
    gone, free, sizes, weights = free[kept:], free[:kept], sizes[:kept], weights[:kept]
    # When the free messages can keep everything, the spare lifts the pinned ones towards verbatim.
    spare = sum((1 - r) * plans[i].prose_tokens for i, r in pinned.items())
    lift = min(1.0, max(0.0, (room - sum(sizes)) / spare)) if spare > 0 else 0.0
    cut = restore(gone, room - sum(sizes) - lift * spare, cfg.elide_below)
    for i, r in pinned.items():
        _compress(compressor, plans[i], (r + lift * (1 - r)) * plans[i].prose_tokens, cfg, tokenizer, counter)
    for plan, share in cut:
        _compress(compressor, plan, share, cfg, tokenizer, counter)
    budget = min(max(room, 0.0), float(sum(sizes)))
    for k, plan in enumerate(free):
        share = ramp(sizes[k:], weights[k:], budget)[0]
        budget = max(0.0, budget - _compress(compressor, plan, share, cfg, tokenizer, counter))


def _fixed(plan: _Plan) -> int:
    """What a message costs whatever its prose keeps: code, tables, JSON structure, markers."""
    return max(0, plan.original_tokens - plan.prose_tokens)


def elisions(sizes: Sequence[int], fixed: Sequence[int], weights: Sequence[float], room: float,
             below: float) -> int:
    """How many of the oldest free messages (the end of the newest-first lists) to drop whole.

    The oldest is dropped while the ramp would leave it less than ``below`` of its prose (or the budget is
    overdrawn): by then it is a shred, and its code, tables and markup still cost in full what the newer turns,
    which the next reply leans on, need. Dropping it frees its fixed cost for them. The newest is never dropped:
    this trims history, and a lone tool output or reply keeps its structure, over budget if need be.
    """
    kept = len(sizes)
    while kept > 1 and below > 0:
        level = _level(sizes[:kept], weights[:kept], max(room, 0.0))
        if room >= 0 and _share(level, weights[kept - 1]) >= below:
            break
        kept, room = kept - 1, room + fixed[kept - 1]
    return len(sizes) - kept


def restore(gone: Sequence[_Plan], unspent: float, below: float) -> list[tuple[_Plan, float]]:
    """Bring back, newest first, the elided messages the budget the others left unspent can pay for; returns the
    ones brought back cut, with the prose tokens each may keep.

    Elision is decided oldest first, each drop freeing its code and tables for the newer turns; when the last drop
    frees more than they can use, the budget would go unspent (asked 0.5, kept 0.385 on a bench_chat history whose
    newest elided reply was mostly code). First the messages that fit whole come back verbatim: an older user turn
    that states the task is worth its tokens. Then what is still unspent brings back the others whose structure
    (code, tables, markers) fits with at least ``below`` of their prose beside it, never a shred; such a message can
    be older than one left elided, whose code could not fit.
    """
    for plan in gone:
        if plan.elided and 0 < plan.original_tokens <= unspent:
            plan.elided, plan.restored, plan.budget_ratio = False, True, 1.0
            unspent -= plan.original_tokens
    cut = []
    for plan in gone:
        prose = unspent - _fixed(plan)
        if plan.elided and plan.prose_tokens > 0 and prose > 0 and prose >= below * plan.prose_tokens:
            plan.elided, plan.restored = False, True
            share = min(prose, float(plan.prose_tokens))
            cut.append((plan, share))
            unspent -= _fixed(plan) + share
    return cut


_MAX_AGE = 60  # past this many steps the weights would underflow; messages that old share alike


def _weights(sizes: list[int], recency: float) -> list[float]:
    """recency ** age, newest first, where age counts only newer messages with prose: "ok" or a code-only reply
    (nothing to cut) does not push the turns before it further back."""
    weights, age = [], 0
    for n in sizes:
        weights.append(max(recency ** min(age, _MAX_AGE), 1e-300))  # never 0: a message with prose has mass
        age += n > 0
    return weights


def ramp(sizes: Sequence[int], weights: Sequence[float], budget: float) -> list[float]:
    """Token shares of ``budget``: message i keeps ``min(1, c * weights[i])`` of its size, c set so they sum to it.

    ``weights`` must not increase along the list (newest first), so the messages that keep all of themselves are a
    prefix; the rest share what they leave in proportion to weight x size.
    """
    level = _level(sizes, weights, budget)
    return [n * _share(level, w) for n, w in zip(sizes, weights)]


def _level(sizes: Sequence[int], weights: Sequence[float], budget: float) -> float:
    """The c of :func:`ramp` (infinite when the budget covers every message whole)."""
    # Suffix sums, smallest terms first: subtracting from the total would cancel away the old messages' weights.
    mass = [0.0] * (len(sizes) + 1)
    for i in range(len(sizes) - 1, -1, -1):
        mass[i] = mass[i + 1] + weights[i] * sizes[i]
    left = float(budget)
    for i, (n, w) in enumerate(zip(sizes, weights)):
        if mass[i] <= 0:
            break  # nothing left to pay for
        c = left / mass[i]
        if c * w < 1.0:
            return c
        left -= n
    return math.inf


def _share(level: float, weight: float) -> float:
    return 1.0 if math.isinf(level) else min(1.0, level * weight)


def _short_users(plans: list[_Plan], pinned: dict[int, float], target: float, cfg: MessagesConfig) -> dict[int, float]:
    """Older user turns short enough to keep whole, shortest first, within a quarter of the budget."""
    short = sorted((p for p in plans if p.role == "user" and p.index not in pinned
                    and 0 < p.prose_tokens <= cfg.keep_user_tokens), key=lambda p: (p.prose_tokens, -p.index))
    kept, cost = {}, 0
    for p in short:
        if cost + p.prose_tokens > 0.25 * target:
            break
        kept[p.index], cost = 1.0, cost + p.prose_tokens
    return kept


def _compress(compressor: Any, plan: _Plan, budget: float, cfg: MessagesConfig, tokenizer: Any,
              counter: TokenCounter) -> int:
    """Compress one message's prose to about ``budget`` tokens; returns what it costs now."""
    tokens = int(round(budget))
    plan.budget_ratio = min(1.0, budget / plan.prose_tokens) if plan.prose_tokens else 1.0
    if not plan.slots or tokens >= plan.prose_tokens:
        return plan.prose_tokens
    plan.outputs, used = compress_slots(compressor, plan.slots, tokens, cfg.keep, tokenizer, counter)
    return used


def _write(message: dict[str, Any], plan: _Plan, counter: TokenCounter) -> MessageStats:
    """Put the compressed texts back into the copied message, in place, so key order stays as it was."""
    compressed = 0
    for part, pieces in plan.texts:
        text = "" if plan.elided else render(pieces, plan.outputs)
        if part is None:
            message["content"] = text
        else:
            message["content"][part]["text"] = text
        compressed += counter.count(text)
    c = Counts() if plan.elided else plan.counts  # an elided message left nothing alone but its other parts
    return MessageStats(plan.index, plan.role, plan.original_tokens, compressed, plan.budget_ratio,
                        c.code_blocks, c.json_documents, c.tables, plan.parts_passed, plan.elided, plan.restored)


def _warn_off_budget(compressed: int, target: float, original: int) -> None:
    if compressed > target + max(0.05 * target, 3):
        warnings.warn(
            f"the messages keep {compressed} tokens against a budget of {target:.0f} (of {original}): system "
            "prompts and the last user turn at their ratios, code, tables, JSON structure and protected words "
            "are kept; see result.per_message for where the tokens went",
            BudgetWarning, stacklevel=3,
        )
