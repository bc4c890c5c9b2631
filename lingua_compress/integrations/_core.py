"""What both adapters share, free of either framework: their settings, the one call into the library, which
documents survive. The adapters only translate their framework's documents to and from plain strings.

Only pydantic is imported here (both frameworks build on pydantic 2); neither framework is.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import check_ratio, check_target_tokens
from ..errors import ConfigError
from ..segment import compile_keep


class LinguaSettings(BaseModel):
    """The adapters' fields, checked at construction: loading is lazy, mistakes should not be."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    compressor: Any = Field(
        default=None,
        description="A lingua_compress.Compressor (or anything with its compress_documents); None: the "
        "process-wide default, built on first use, so adapters in one process share one model.",
    )
    ratio: float = Field(default=0.5, description="Kept tokens / original tokens over all documents, in (0, 1].")
    target_tokens: Optional[int] = Field(default=None, description="A token budget over all documents; "
                                         "replaces ratio when set.")
    question_aware: bool = Field(default=True, description="Use the query as the question documents are "
                                 "ranked and compressed against.")
    drop_empty: bool = Field(default=True, description="Leave out documents compressed to nothing.")
    keep: tuple[Any, ...] = Field(default=(), description="Strings or regexes never cut (see Compressor.compress).")
    target_tokenizer: Any = Field(default=None, description="The target LLM's tokenizer; budgets are counted in it.")
    use_retrieval_scores: bool = Field(default=False, description="Fuse each document's retrieval score (higher = "
                                       "more relevant) into the question ranking: every document must have one.")

    @field_validator("use_retrieval_scores", "question_aware", "drop_empty", mode="before")
    @classmethod
    def _check_flag(cls, value: object) -> bool:
        if not isinstance(value, bool):  # pydantic would read "no" or 0 as False
            raise ValueError(f"{value!r} is not accepted: give True or False")
        return value

    # mode="before": pydantic would otherwise coerce first (True -> 1.0, "0.5" -> 0.5); the library refuses those.
    @field_validator("ratio", mode="before")
    @classmethod
    def _check_ratio(cls, value: object) -> float:
        return check_ratio(value)

    @field_validator("target_tokens", mode="before")
    @classmethod
    def _check_target_tokens(cls, value: object) -> Optional[int]:
        return None if value is None else check_target_tokens(value)

    @field_validator("keep", mode="before")
    @classmethod
    def _check_keep(cls, value: Any) -> tuple[Any, ...]:
        items = (value,) if isinstance(value, str) else tuple(value)
        compile_keep(items)  # raises ConfigError naming a bad entry
        return items

    def compress_texts(self, texts: Sequence[str], query: Optional[str],
                       scores: Optional[Sequence[Optional[float]]] = None) -> list[str]:
        """Each text compressed on its own, in input order ("" where the library dropped a document whole);
        ``scores``: the retriever's, one per text, fused into the ranking when ``use_retrieval_scores`` is on.

        Blank texts (an image node, an empty page) are not sent: there is nothing to compress, and they must not
        count against the other documents' budget. They come back unchanged.
        """
        live = [i for i, t in enumerate(texts) if t.strip()]
        out = list(texts)
        if not live:
            return out
        kwargs = self._call_kwargs(query)
        if self.use_retrieval_scores and kwargs["question"].strip():  # scores rank against a question only
            missing = [i for i in live if scores is None or scores[i] is None]
            if missing:
                raise ConfigError(f"use_retrieval_scores=True but document {missing[0]} has no retrieval score: "
                                 "give every document one, or set use_retrieval_scores=False")
            kwargs["retrieval_scores"] = [scores[i] for i in live]
        compressed = tuple(self._resolve().compress_documents([texts[i] for i in live], **kwargs).documents)
        if len(compressed) != len(live):  # a mismatch would attach text to the wrong document's metadata
            raise RuntimeError(f"compress_documents returned {len(compressed)} documents for {len(live)}")
        for i, text in zip(live, compressed):
            out[i] = text
        return out

    def survivors(self, originals: Sequence[str], compressed: Sequence[str]) -> list[int]:
        """Indices of the documents to hand back, in input order. With ``drop_empty`` a document cut to nothing
        is left out, as LangChain's filters and extractors do; one that was blank to begin with is always kept,
        since compression did not empty it."""
        return [i for i, (o, c) in enumerate(zip(originals, compressed))
                if not (self.drop_empty and o.strip() and not c.strip())]

    def _call_kwargs(self, query: Optional[str]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"question": (query or "") if self.question_aware else ""}
        if self.target_tokens is not None:  # the library takes exactly one of the two
            kwargs["target_tokens"] = self.target_tokens
        else:
            kwargs["ratio"] = self.ratio
        # Forwarded only when set, so the default call is the plain documented one.
        if self.keep:
            kwargs["keep"] = self.keep
        if self.target_tokenizer is not None:
            kwargs["target_tokenizer"] = self.target_tokenizer
        return kwargs

    def _resolve(self) -> Any:
        if self.compressor is not None:
            return self.compressor
        from ..api import default_compressor  # on use: building an adapter must load nothing

        return default_compressor()
