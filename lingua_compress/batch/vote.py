"""Permutation voting with early stopping (BatchPrompt, Lin et al. 2023) on top of the batched run.

Round 1 asks the configured batches. Every later round asks the items still active again, permuted: each item
moves to a slot it has not held yet where it can (the next one after its last), and gets new partners: partition
groupings (``sequential``, ``random``) are re-dealt from a seeded shuffle of the active items; ``similarity``
regroups them by similarity (another seed), so partners stay alike; a ``knn`` batch keeps its members, rotated one
slot per round (only its target's answer is used). An answer is attributed
by the index of its marker in THAT round's batch, as in every run.

Only ``ok`` answers vote, by their final answer (normalised). The majority wins; a tie goes to the answer that came
first. An item retires as soon as its vote is decided (no other answer can still overtake or tie past the leader in
the rounds left, so stopping changes nothing), or, with ``vote_agree``, once that many of its answers agree:
cheaper, and close to BatchPrompt's confidence-guided early stopping, with agreement as the confidence signal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import LinguaCompressError
from .group import Embed, Group, default_embedder, make_groups
from .parse import normalize
from .types import ItemResult, Sample

Ask = Callable[[Sequence[Group]], list[ItemResult]]


@dataclass(frozen=True)
class ItemVotes:
    """One item's voting rounds: its final answer in each round it was asked (``None``: no ``ok`` answer that
    round), the winning answer and its votes, and whether it retired before the last permutation."""

    answers: tuple[str | None, ...]
    winner: str | None
    count: int
    retired_early: bool

    @property
    def rounds(self) -> int:
        return len(self.answers)


def _key(result: ItemResult) -> str | None:
    return normalize(result.final) if result.ok and result.final is not None else None


def standings(keys: Sequence[str | None]) -> list[tuple[str, int, int]]:
    """``(answer, votes, first round)`` of each answer given, best first: most votes, then the earliest."""
    seen: dict[str, list[int]] = {}
    for rnd, key in enumerate(keys):
        if key is not None:
            seen.setdefault(key, [0, rnd])[0] += 1
    return sorted(((k, c, f) for k, (c, f) in seen.items()), key=lambda t: (-t[1], t[2]))


def decided(keys: Sequence[str | None], remaining: int) -> bool:
    """Whether no answer can beat the leader in ``remaining`` more rounds (every one of them going to a single
    challenger, ties won by the answer that came first)."""
    ranks = standings(keys)
    if not ranks:
        return remaining == 0
    _, lead, first = ranks[0]
    if remaining > lead:  # an answer not given yet (later than the leader) could win outright
        return False
    return all(c + remaining < lead or (c + remaining == lead and first < f) for _, c, f in ranks[1:])


def retired(keys: Sequence[str | None], votes: int, agree: int | None) -> bool:
    ranks = standings(keys)
    if agree is not None and ranks and ranks[0][1] >= agree:
        return True
    return decided(keys, votes - len(keys))


def _deal(ids: Sequence[str], sizes: Sequence[int], slots: dict[str, list[int]],
          rng: np.random.Generator) -> list[tuple[str, ...]]:
    """``ids`` dealt into batches of ``sizes``: each item takes the slot after its last one when that slot is free
    and new to it, else the free slot it has held least often (then the nearest after its last one). Items are
    placed in a seeded random order, so partners change too."""
    free = {k: [j for j, n in enumerate(sizes) if k < n] for k in range(max(sizes, default=0))}
    cells: list[list[str | None]] = [[None] * n for n in sizes]
    order = [ids[j] for j in rng.permutation(len(ids))]
    width = len(free) or 1
    placed: set[str] = set()
    for first_pass in (True, False):
        for i in order:
            if i in placed:
                continue
            nxt = (slots[i][-1] + 1) % width if slots[i] else 0
            if first_pass:
                options = [nxt] if free.get(nxt) and nxt not in slots[i] else []
            else:
                options = sorted((k for k, js in free.items() if js),
                                 key=lambda k: (slots[i].count(k), (k - nxt) % width))
            if options:
                cells[free[options[0]].pop(0)][options[0]] = i
                placed.add(i)
    return [tuple(x for x in row if x is not None) for row in cells]


def round_groups(first: Sequence[Group], active: Sequence[Sample], slots: dict[str, list[int]], *, size: int,
                 strategy: str, seed: int, rnd: int, embed: Embed | None) -> list[Group]:
    """The batches of round ``rnd`` (2, 3, ...) over the ``active`` samples (in sample order); ``slots`` are the
    slots (0-based) each item held in earlier rounds.

    Positions move on: an item takes the slot after its previous one where it can, else the one it has held least,
    so within ``size`` rounds it meets every position. Partners come from a seeded shuffle (partitions), a fresh
    similarity partition (``similarity``), or stay (``knn``: the batch is rotated one slot per round)."""
    rng = np.random.default_rng([seed, rnd])
    wanted = {s.id for s in active}
    if strategy == "knn":
        return [Group(g.ids[(rnd - 1) % len(g.ids):] + g.ids[: (rnd - 1) % len(g.ids)], g.target_id)
                for g in first if g.target_id in wanted]
    if strategy == "similarity":
        groups = make_groups(active, size, "similarity", seed=seed + rnd, embed=embed)
        return [Group(_deal(g.ids, [len(g.ids)], slots, rng)[0]) for g in groups]
    m = -(-len(active) // size)
    sizes = [len(active) // m + (j < len(active) % m) for j in range(m)]  # balanced: sizes differ by at most 1
    return [Group(ids) for ids in _deal([s.id for s in active], sizes, slots, rng)]


def memo_embedder(embed: Embed | None) -> Embed:
    """``embed`` with a cache by text, so regrouping by similarity in each round embeds each question once."""
    inner = embed or default_embedder()
    cache: dict[str, np.ndarray] = {}

    def cached(texts: Sequence[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in cache))
        if todo:
            cache.update(zip(todo, np.asarray(inner(todo), dtype=np.float64)))
        return np.stack([cache[t] for t in texts]) if texts else np.zeros((0, 1))

    cached.name = getattr(inner, "name", "embed")  # type: ignore[attr-defined]
    return cached


def _collect(results: list[ItemResult], active: set[str], rnd: int) -> dict[str, ItemResult]:
    got: dict[str, ItemResult] = {}
    for r in results:
        if r.id not in active or r.id in got:
            raise LinguaCompressError(f"voting round {rnd}: result for id {r.id!r} is not one of this round's "
                                      f"items or came twice; no answer is attributed")
        got[r.id] = r
    if len(got) != len(active):
        missing = sorted(active - set(got))[:5]
        raise LinguaCompressError(f"voting round {rnd}: no result for ids {missing}")
    return got


def run_votes(samples: Sequence[Sample], first_groups: Sequence[Group], first: dict[str, ItemResult], ask: Ask,
              cfg: Any, embed: Embed | None) -> tuple[dict[str, ItemResult], dict[str, ItemVotes], tuple[int, ...]]:
    """Rounds 2..``cfg.votes`` over the items not yet retired; each item's result is its vote's winner (the round
    that first gave it), or, without any ``ok`` answer, its latest result. Returns results, votes and the calls
    of each round."""
    history = {s.id: [first[s.id]] for s in samples}
    calls = [len(first_groups)]
    # One by one at temperature 0 every permutation is the same prompt with the same reply: one round says it all.
    last = 1 if cfg.repeats_itself else cfg.votes
    for rnd in range(2, last + 1):
        active = [s for s in samples if not retired([_key(r) for r in history[s.id]], cfg.votes, cfg.vote_agree)]
        if not active:
            break
        slots = {s.id: [r.slot - 1 for r in history[s.id]] for s in active}
        groups = round_groups(first_groups, active, slots, size=cfg.batch_size, strategy=cfg.group, seed=cfg.seed,
                              rnd=rnd, embed=embed)
        calls.append(len(groups))
        for sid, r in _collect(ask(groups), {s.id for s in active}, rnd).items():
            history[sid].append(r)
    results, votes = {}, {}
    for s in samples:
        results[s.id], votes[s.id] = decide(history[s.id], cfg.votes)
    return results, votes, tuple(calls)


def decide(history: Sequence[ItemResult], max_rounds: int) -> tuple[ItemResult, ItemVotes]:
    """The voted result of one item from its per-round results (in round order)."""
    keys = [_key(r) for r in history]
    answers = tuple(r.final if k is not None else None for r, k in zip(history, keys))
    early = len(history) < max_rounds
    ranks = standings(keys)
    if not ranks:
        latest = next((r for r in reversed(history) if r.call_error is None), history[-1])
        return latest, ItemVotes(answers, None, 0, early)
    _, count, first = ranks[0]
    pick = history[first]
    note = f"voted {count} of {len(history)} round(s)" + (f"; {pick.note}" if pick.note else "")
    return replace(pick, note=note), ItemVotes(answers, pick.final, count, early)
