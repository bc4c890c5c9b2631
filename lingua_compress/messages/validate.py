"""Checks of a chat message list, before any copy or model work: each mistake named by its index."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidPromptError
from ..segment import check_text

_SHAPE = "{'role': 'user', 'content': '...'}"
_CONTENT = ("a str, None, or a list of content parts (dicts like {'type': 'text', 'text': '...'} or "
            "{'type': 'image_url', ...})")


def check_messages(messages: object) -> list[dict[str, Any]]:
    """``messages`` as a list, every message and content part checked; raises InvalidPromptError naming the first
    bad one and what is accepted."""
    if not isinstance(messages, (list, tuple)):
        raise InvalidPromptError(
            f"messages must be a list of dicts like {_SHAPE}, got {type(messages).__name__}: {messages!r:.60}"
        )
    for i, message in enumerate(messages):
        _check_message(i, message)
    return list(messages)


def _check_message(i: int, message: object) -> None:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise InvalidPromptError(f"{where} must be a dict like {_SHAPE}, got {type(message).__name__}: "
                                 f"{message!r:.60}")
    role = message.get("role")
    if not isinstance(role, str) or not role:
        got = "no 'role' key" if "role" not in message else f"role={role!r:.40}"
        raise InvalidPromptError(f"{where} has {got}: every message needs a non-empty str role such as 'system', "
                                 "'user', 'assistant' or 'tool'")
    content = message.get("content")
    if content is None:
        return
    if isinstance(content, str):
        check_text(content, f"{where}['content']")
        return
    if not isinstance(content, list):
        raise InvalidPromptError(f"{where}['content'] must be {_CONTENT}, got {type(content).__name__}: "
                                 f"{content!r:.60}")
    for j, part in enumerate(content):
        _check_part(f"{where}['content'][{j}]", part)


def _check_part(where: str, part: object) -> None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise InvalidPromptError(f"{where} must be a content part, a dict with a str 'type' such as "
                                 f"{{'type': 'text', 'text': '...'}}; got {type(part).__name__}: {part!r:.60}")
    if part["type"] == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidPromptError(f"{where} is a text part whose 'text' must be a str, got "
                                     f"{type(text).__name__}: {text!r:.60}")
        check_text(text, f"{where}['text']")
