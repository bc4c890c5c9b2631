"""The target-LLM protocol: one small method, so an HTTP API, a local model or a test fake fit alike."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

from ..errors import LinguaCompressError

Message = Mapping[str, str]
_ROUGH_TOKEN = re.compile(r"\w+|[^\w\s]")


class LLMRequestError(LinguaCompressError):
    """A target-LLM call failed for good (after the allowed retries), or its reply could not be read."""


@dataclass(frozen=True)
class Completion:
    """One reply. Token counts are ``None`` where the backend did not report them."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None  # "stop", "length", ...
    model: str = ""
    latency_s: float = 0.0
    retries: int = 0


@runtime_checkable
class LLM(Protocol):
    """What batch prompting needs from a target model.

    ``chat`` says whether ``complete`` takes chat messages (a sequence of ``{"role", "content"}``) or a plain
    completion prompt (``str``). ``max_concurrency`` is how many calls may run at once.
    """

    name: str
    chat: bool
    max_concurrency: int

    def complete(self, prompt: str | Sequence[Message], *, max_tokens: int, stop: Sequence[str] = (),
                 temperature: float = 0.0) -> Completion:
        """Generate a reply to ``prompt``."""


def rough_token_count(text: str) -> int:
    """Words and punctuation marks: a tokenizer-free estimate, labelled "estimated" wherever it is used."""
    return len(_ROUGH_TOKEN.findall(text))


def messages_to_text(messages: Sequence[Message]) -> str:
    """Chat messages as one plain prompt, for base models without a chat template."""
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop sequence (excluded), and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def check_prompt(prompt: Any, chat: bool) -> None:
    from ..errors import ConfigError

    if chat and isinstance(prompt, str):
        raise ConfigError("this client is in chat mode: pass a list of {'role', 'content'} messages, not a str")
    if not chat and not isinstance(prompt, str):
        raise ConfigError(f"this client is in completion mode: pass a str prompt, got {type(prompt).__name__}")
