"""The exception hierarchy: catch ``LinguaCompressError`` for anything this library raises on purpose."""

from __future__ import annotations


class LinguaCompressError(Exception):
    """Base class of every error raised by lingua_compress."""


class ConfigError(LinguaCompressError, ValueError):
    """A setting or argument has a value outside what is accepted."""


class InvalidPromptError(LinguaCompressError, TypeError):
    """The prompt is not a ``str`` or a :class:`~lingua_compress.Prompt`."""


class ModelLoadError(LinguaCompressError, OSError):
    """The scoring model could not be found, converted or loaded."""


class BatchParseError(LinguaCompressError, ValueError):
    """A batched answer could not be parsed back into per-question answers."""


class BudgetWarning(UserWarning):
    """The requested budget could not be met, e.g. protected spans alone exceed it."""
