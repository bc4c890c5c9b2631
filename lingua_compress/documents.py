"""Retrieval-augmented prompts: compress retrieved documents for a question and get each one back, compressed.

Each kept word is mapped back to its document by the part it was segmented into, never by searching the compressed
text, so documents never merge or split, whatever the compression did to the blank lines between them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .config import _is_bool
from .errors import ConfigError, InvalidPromptError
from .question_run import compress_question_aware
from .recovery import kept_units
from .render import render
from .result import CompressionResult
from .segment import Prompt, Segmented, build_parts, segment

if TYPE_CHECKING:
    from .api import Compressor


@dataclass(frozen=True)
class DocumentsResult:
    """What ``compress_documents`` returns. ``str(result)`` is ``text``, the prompt to send."""

    documents: tuple[str, ...]  # per input document, in input order: its compressed text, "" if it was dropped
    order: tuple[int, ...]  # the input indices of the documents in ``text``, in the order they appear there
    relevance: tuple[float, ...]  # per input document, higher = more relevant to the question (all 0.0 without one)
    text: str  # instruction, the kept documents in ``order``, question: joined as sent
    original_tokens: int
    compressed_tokens: int
    kept_ratio: float
    result: CompressionResult  # the underlying compression (its ``original`` has the documents in placed order)

    def __str__(self) -> str:
        return self.text

    def recover(self, response: str) -> str:
        """``response`` with names it copied from the compressed text spelled as in the original documents."""
        return self.result.recover(response)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the underlying result without its original text)."""
        return {"documents": list(self.documents), "order": list(self.order), "relevance": list(self.relevance),
                "text": self.text, "original_tokens": self.original_tokens,
                "compressed_tokens": self.compressed_tokens, "kept_ratio": self.kept_ratio,
                "result": self.result.to_dict()}


def compress_documents(
    compressor: "Compressor",
    docs: Sequence[str],
    question: str | None = None,
    ratio: float | None = None,
    *,
    target_tokens: int | None = None,
    question_aware: bool | None = None,
    reorder: str = "none",
    dynamic_ratio: float = 0.0,
    instruction: str = "",
    target_tokenizer: Any = None,
    keep: Any = (),
    retrieval_scores: Sequence[float] | None = None,
) -> DocumentsResult:
    """Compress ``docs`` (retrieved passages) for ``question``; see :meth:`Compressor.compress_documents`."""
    docs = check_documents(docs)
    prior = check_scores(retrieval_scores, len(docs))
    if question is not None and not isinstance(question, str):
        raise InvalidPromptError(f"question must be a str or None, got {type(question).__name__}: {question!r:.60}")
    question = question or ""
    if question_aware is None:
        question_aware = bool(question.strip())
    elif not _is_bool(question_aware):
        raise ConfigError(f"question_aware={question_aware!r} is not accepted: give True, False, or None (True "
                          "when a question is given)")
    prompt = Prompt(instruction=instruction, demonstrations=docs, question=question)
    if question_aware:
        # replace() validates: a bad reorder or dynamic_ratio raises a ConfigError naming it.
        config = replace(compressor.config, question_aware=True, reorder=reorder, dynamic_ratio=dynamic_ratio)
        ranked = compress_question_aware(compressor, config, prompt, ratio, target_tokens, keep, target_tokenizer,
                                         prior)
        return _documents(docs, ranked.result, ranked.seg, ranked.order, ranked.doc_part, ranked.relevance)
    if reorder != "none" or dynamic_ratio != 0.0 or prior is not None:
        raise ConfigError(f"reorder={reorder!r}, dynamic_ratio={dynamic_ratio!r} and retrieval_scores (given: "
                          f"{prior is not None}) follow the documents' relevance to a question: give a question (and "
                          "question_aware=True or None), or leave them at 'none', 0.0 and None")
    result = compressor.compress(prompt, ratio, target_tokens=target_tokens, keep=keep,
                                 target_tokenizer=target_tokenizer, question_aware=False)
    seg = segment(prompt, protect_defaults=compressor.config.protect_numbers)  # the same units as compress() saw
    order = range(len(docs))
    parts = iter(p for p, part in enumerate(seg.parts) if part.kind == "context")
    doc_part = [next(parts) if d.strip() else -1 for d in docs]  # segment() gives a blank document no part
    return _documents(docs, result, seg, order, doc_part, [0.0] * len(docs))


def _documents(docs: list[str], result: CompressionResult, seg: Segmented, order: Sequence[int],
               doc_part: Sequence[int], relevance: Sequence[float]) -> DocumentsResult:
    if seg.text != result.original:
        raise RuntimeError("compress_documents: the segmentation does not match the compressed prompt")  # a bug
    kept = kept_units(seg, result.kept_spans)
    texts = []
    for p in doc_part:
        texts.append(render(seg.text, seg.unit_start, seg.unit_end, kept & (seg.unit_part == p))[0] if p >= 0 else "")
    return DocumentsResult(
        documents=tuple(texts),
        order=tuple(i for i in order if texts[i]),
        relevance=tuple(float(r) for r in relevance),
        text=result.text,
        original_tokens=result.original_tokens,
        compressed_tokens=result.compressed_tokens,
        kept_ratio=result.kept_ratio,
        result=result,
    )


def split_documents(text: str) -> list[str]:
    """A text's blank-line-separated blocks, as documents (how a plain-str prompt's context is split)."""
    return [text[part.start : part.end] for part in build_parts(text)[1]]


def check_scores(scores: object, n: int) -> np.ndarray | None:
    """A retriever's scores, one finite real per document (higher = more relevant), as an array; None stays None."""
    if scores is None:
        return None
    if isinstance(scores, (str, bytes, bytearray, Mapping, Set)) or not isinstance(scores, Iterable):
        raise ConfigError(f"retrieval_scores={scores!r:.60} is not accepted: give one number per document "
                          "(higher = more relevant), or None")
    scores = list(scores)
    if len(scores) != n:
        raise ConfigError(f"retrieval_scores has {len(scores)} numbers for {n} documents: give one per document")
    for i, v in enumerate(scores):
        if _is_bool(v) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ConfigError(f"retrieval_scores[{i}]={v!r:.60} is not accepted: give a finite real number")
    return np.asarray(scores, dtype=np.float64)


def check_documents(docs: object) -> list[str]:
    """The documents: an ordered collection of str, at least one."""
    if isinstance(docs, (str, bytes, bytearray, Mapping, Set)) or not isinstance(docs, Iterable):
        raise InvalidPromptError(f"docs={docs!r:.60} is not accepted: give a list of str, one per document "
                                 "(a single str: wrap it in a list)")
    docs = list(docs)
    if not docs:
        raise ConfigError("docs=[] is not accepted: give at least one document")
    for i, doc in enumerate(docs):
        if not isinstance(doc, str):
            raise InvalidPromptError(f"docs[{i}]={doc!r:.60} ({type(doc).__name__}) is not accepted: each document "
                                     "must be a str")
    return docs
