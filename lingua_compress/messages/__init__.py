"""Chat messages and structure-safe content, on top of the compressor's public API.

Layout follows the flow: ``validate`` (the message list, each mistake named by index) -> ``structure`` (each text
into verbatim pieces and prose slots: code, JSON, markdown) -> ``slots`` (one message's prose compressed in one
call and cut back per slot) -> ``compress`` (role-aware budgets, results). ``types`` holds the config and results.
"""

from .compress import compress_messages
from .types import MessagesConfig, MessagesResult, MessageStats

__all__ = ["MessageStats", "MessagesConfig", "MessagesResult", "compress_messages"]
