"""Question-aware compression (LongLLMLingua, arXiv 2310.06839): the question decides which documents stay and which
of their words do. Opt-in (``question_aware=True``); segmenting, budgets, the exact-count correction and rendering
are the question-agnostic pipeline's.

1. **Ranking** (coarse). A document's relevance is minus the mean NLL of the question written after it (followed by
   LongLLMLingua's "We can get the answer to this question in the given documents." unless ``question_hint`` is
   off): a document that makes the question predictable is about it. The coarse stage keeps documents by relevance
   instead of perplexity, ``reorder`` places them, and ``dynamic_ratio`` prunes the more relevant ones less. Scores
   the caller's retriever gave the documents (``retrieval_scores``) are fused in: the 270M scorer alone ranks the
   passage holding the answer first less often than a sentence-embedding retriever does (benchmarks/check_rank.py).
2. **Contrastive word scores** (fine). A token scores its NLL without the question minus its NLL with the question
   in front, so words the question makes predictable (its topic, common words included) rank high and are kept;
   plus ``surprisal_weight`` (0.5) x its NLL with the question in front. Contrast alone ranks an answer the scorer
   did not expect ("popularized by Sergio Leone" where it expects Savarkar) below the question's own words: the
   question makes it no likelier, or less. Still being surprising after the question is information too.
3. **Names whole**: the words of a capitalised run ("Pippa Middleton", "Archana Puran Singh") share the run's best
   score, so the token pass keeps a name whole or drops it whole. A surname is predictable after its first name and
   scored low alone; answers to factoid questions are such names, and half a name is not the answer.
4. **Recovery** of the names the target copies from the compressed text: :mod:`lingua_compress.recovery`.

Cost: one extra scoring pass at most. The ranking pass forwards each document with the question after it, in one
forward; the same pass gives the document's tokens their NLL without the question (the first term of the
difference). The contrastive pass puts the question into a KV cache and scores each document the coarse stage kept
after it, rolling back to the question after each. Neither materialises full-vocabulary logits (the Scorer's sessions
do the work). Measured once (this repo's 2-core CPU with AVX512-BF16, bf16, 1 torch thread, best of 4, the embedded
Gemma 3 270M): 20 retrieved passages plus instruction and question, 2,925 Gemma tokens. At ratio 0.25 the coarse
stage keeps about half the documents: 4,829 tokens scored instead of 2,925, 4.50 s against 3.05 s question-agnostic
(1.47x). At ratio 0.5 every document is kept and scored twice: 6,078 tokens, 5.57 s against 3.22 s (1.73x).

Word scores are one-shot per document, not conditioned on the compressed prefix as the question-agnostic token pass
is: both terms of the difference must see the same text, and conditioning both on the kept prefix would cost a
second pass over every token, with the question re-read for every window (LongLLMLingua's way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .config import REORDER_MODES
from .counting import first_visible, token_owners
from .errors import ConfigError
from .prune import unit_scores_from_tokens
from .segment import Segmented

if TYPE_CHECKING:
    from .scoring import Scorer, ScoringSession

# The lower-case words a name can carry between two capitalised ones ("Ludwig van Beethoven", "Rookie of the Year").
_NAME_PARTICLES = frozenset({"da", "de", "del", "della", "der", "di", "du", "la", "le", "van", "von", "bin", "ibn",
                             "al", "y", "of", "the"})
_MAX_PARTICLES = 2

# LongLLMLingua's ranking prompt: the question, then this line, scored after each document.
RANK_HINT = " We can get the answer to this question in the given documents."


@dataclass(frozen=True)
class PartTokens:
    """One part's text as the scorer tokenizes it on its own, and which of its units each token belongs to."""

    ids: np.ndarray
    need: np.ndarray  # tokens whose score is used: not whitespace, not in a protected unit
    owner: np.ndarray  # per token, the unit (index within the part) holding it; -1 for none
    cover: np.ndarray  # per unit, the token covering its first character

    def unit_scores(self, nll: np.ndarray) -> np.ndarray:
        """Mean token score of each unit of the part (NaN token scores are skipped)."""
        nll = np.where(self.owner >= 0, nll, np.nan)
        return unit_scores_from_tokens(nll, self.owner, 0, len(self.cover), self.cover)


NO_TOKENS = PartTokens(*(np.zeros(0, dtype=t) for t in (np.int64, bool, np.int64, np.int64)))


def part_tokens(scorer: "Scorer", seg: Segmented, p: int) -> PartTokens:
    """Part ``p`` tokenized on its own: each document is scored alone, wherever it is placed in the prompt."""
    part = seg.parts[p]
    text = seg.text[part.start : part.end]
    ids, offsets = scorer.tokenize(text)
    units = np.flatnonzero(seg.unit_part == p)
    starts, ends = seg.unit_start[units] - part.start, seg.unit_end[units] - part.start
    firsts = first_visible(text, offsets)
    owner = token_owners(text, offsets, starts, ends, firsts)
    cover = np.searchsorted(offsets[:, 0], starts, side="right") - 1
    protected = seg.protected[units]
    need = (firsts < offsets[:, 1]) & (owner >= 0)
    if len(units):
        need &= ~protected[np.maximum(owner, 0)]
    return PartTokens(np.asarray(ids, dtype=np.int64), need, owner, cover)


def text_tokens(scorer: "Scorer", text: str) -> PartTokens:
    """A text outside the prompt (the question as ranking suffix or prefix): every non-whitespace token scored."""
    ids, offsets = scorer.tokenize(text)
    need = first_visible(text, offsets) < offsets[:, 1]  # whitespace tokens say nothing about relevance
    no_units = np.full(len(ids), -1, dtype=np.int64)
    return PartTokens(np.asarray(ids, dtype=np.int64), need, no_units, np.zeros(0, dtype=np.int64))


def score_run(session: "ScoringSession", ids: np.ndarray, need: np.ndarray, chunk: int) -> np.ndarray:
    """NLL of ``ids`` after what ``session`` holds, in chunks of at most ``chunk`` tokens, every chunk kept."""
    parts = []
    for i in range(0, len(ids), chunk):
        parts.append(np.asarray(session.score(ids[i : i + chunk], need=need[i : i + chunk]), dtype=np.float64))
        session.keep(np.ones(len(parts[-1]), dtype=bool))
    return np.concatenate(parts) if parts else np.zeros(0)


def rank_documents(scorer: "Scorer", docs: Sequence[PartTokens], suffix: PartTokens,
                   chunk: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per document: its relevance (minus the mean NLL of ``suffix``, the question, written after it; lower NLL =
    more relevant) and its tokens' NLL given only the document before them.

    A document that fits one chunk is scored with the question in the same forward (a causal LM's scores of the
    document do not depend on what follows it): one forward per document.
    """
    relevance, plain = np.zeros(len(docs)), []
    for i, doc in enumerate(docs):
        session = scorer.session("reuse")
        n = len(doc.ids)
        if n <= chunk:
            nll = _score(session, np.concatenate([doc.ids, suffix.ids]), np.concatenate([doc.need, suffix.need]))
            plain.append(nll[:n])
            nll = nll[n:]
        else:
            plain.append(score_run(session, doc.ids, doc.need, chunk))
            nll = _score(session, suffix.ids, suffix.need)
        relevance[i] = -float(np.mean(nll[suffix.need])) if suffix.need.any() else 0.0
    return relevance, plain


def conditioned_nll(scorer: "Scorer", prefix: PartTokens, docs: Sequence[PartTokens],
                    chunk: int) -> list[np.ndarray]:
    """Each document's tokens' NLL with ``prefix`` (the question) in front of the document alone.

    Documents that fit one chunk share one session, in "recompute" mode so each is scored at the positions right
    after the question, then rolled back to it (nothing kept): the question is forwarded twice in all (with the
    first document, then again in front of the second, as recompute mode does with a kept prefix), not once per
    document. A longer document gets a session of its own.
    """
    out, shared = [], None
    for doc in docs:
        if len(doc.ids) == 0:
            out.append(np.zeros(0))
        elif len(doc.ids) > chunk:
            session = scorer.session("reuse")
            _score(session, prefix.ids, np.zeros(len(prefix.ids), dtype=bool), keep=True)
            out.append(score_run(session, doc.ids, doc.need, chunk))
        elif shared is None:  # the first: the question and the document in one forward, only the question kept
            shared = scorer.session("recompute")
            n = len(prefix.ids)
            nll = _score(shared, np.concatenate([prefix.ids, doc.ids]),
                         np.concatenate([np.zeros(n, dtype=bool), doc.need]), keep=np.arange(n + len(doc.ids)) < n)
            out.append(nll[n:])
        else:
            out.append(_score(shared, doc.ids, doc.need, keep=False))
    return out


def _score(session: "ScoringSession", ids: np.ndarray, need: np.ndarray, keep: object = False) -> np.ndarray:
    """One ``score`` call and its ``keep`` (True: all, False: none, or a mask), as float64."""
    nll = np.asarray(session.score(ids, need=need), dtype=np.float64)
    session.keep(np.broadcast_to(np.asarray(keep, dtype=bool), (len(ids),)).copy())
    return nll


def fuse(relevance: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The question ranking fused with a retriever's: the sum of each score's z-score over the documents.

    z-scores make the two commensurable whatever the retriever's scale (cosine, inner product, BM25); a retriever
    that rates every document alike adds nothing. On bench_rag's tuning items (20 passages, MiniLM cosines as the
    prior) this put the gold passage first in 94 % of prompts against 86 % for the question NLL alone.
    """
    def z(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        spread = x.std()
        return (x - x.mean()) / spread if spread > 0 else np.zeros_like(x)

    return z(relevance) + z(prior)


def reorder(relevance: Sequence[float], mode: str) -> list[int]:
    """Document indices in the order to place them: as given ("none"), most relevant first ("sort"), or most
    relevant at both ends ("two_ends": ranks 1, 3, 5, ... from the front, 2, 4, ... from the back)."""
    if mode not in REORDER_MODES:
        raise ConfigError(f"reorder={mode!r} is not accepted: give one of {REORDER_MODES}")
    ranked = sorted(range(len(relevance)), key=lambda i: -relevance[i])  # stable: ties keep the input order
    if mode == "none":
        return list(range(len(relevance)))
    if mode == "sort":
        return ranked
    return ranked[0::2] + ranked[1::2][::-1]


def dynamic_shares(costs: np.ndarray, relevance: np.ndarray, share: float, spread: float) -> np.ndarray:
    """Per document, the share of its words the token pass keeps: ``share`` plus a linear ramp by relevance rank
    from ``+spread`` (most relevant) to ``-spread`` (least), clipped to [0, 1], with the ramp's centre moved so that
    ``sum(costs * shares) == share * sum(costs)``: the total budget does not change."""
    costs = np.asarray(costs, dtype=np.float64)
    n = len(costs)
    if n < 2 or spread <= 0 or costs.sum() <= 0:
        return np.full(n, share)
    rank = np.empty(n)
    rank[np.argsort(-np.asarray(relevance), kind="stable")] = np.arange(n)
    offsets = spread * (1.0 - 2.0 * rank / (n - 1))
    goal = share * costs.sum()
    lo, hi = -1.0 - spread, 1.0 + spread  # all shares 0, all shares 1: the centre lies in between
    for _ in range(60):
        mid = (lo + hi) / 2
        if (costs * np.clip(mid + offsets, 0.0, 1.0)).sum() < goal:
            lo = mid
        else:
            hi = mid
    return np.clip(hi + offsets, 0.0, 1.0)


def name_runs(seg: Segmented) -> list[np.ndarray]:
    """Runs of two or more consecutive capitalised words within one sentence, with up to two particles ("van",
    "of the") between two of them: the units of each run, in order."""
    runs: list[np.ndarray] = []
    run: list[int] = []
    pending: list[int] = []  # particles after the run, joined only if a capitalised word follows them
    for u in range(seg.n_units):
        if run and seg.unit_sentence[u] != seg.unit_sentence[run[-1]]:
            _close(runs, run)
            run, pending = [], []
        word = seg.text[seg.unit_start[u] : seg.unit_end[u]]
        if word[:1].isupper():  # units are words: punctuation and brackets are units of their own
            run += pending + [u]  # in place: an all-capitals text is one long run
            pending = []
        elif run and len(pending) < _MAX_PARTICLES and word.lower() in _NAME_PARTICLES:
            pending.append(u)
        else:
            _close(runs, run)
            run, pending = [], []
    _close(runs, run)
    return runs


def _close(runs: list[np.ndarray], run: list[int]) -> None:
    if len(run) > 1:
        runs.append(np.array(run, dtype=np.int64))


def cohere_names(seg: Segmented, rank: np.ndarray) -> np.ndarray:
    """``rank`` with every unit of a name run (:func:`name_runs`) given the run's highest score."""
    out = rank.copy()
    for run in name_runs(seg):
        out[run] = rank[run].max()
    return out
