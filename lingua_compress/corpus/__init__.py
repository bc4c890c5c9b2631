"""Offline corpus shrinking: a resumable, parallel job over JSONL or .txt files, locally or on Ray.

Layout follows the job: ``io`` (stream records in, append results crash-safely), ``worker`` (one record
through one compressor), ``engines`` (local processes, Ray Data actors), ``job`` (compress_corpus), ``cli``.
"""

from .cli import main
from .job import CorpusSummary, compress_corpus

__all__ = ["CorpusSummary", "compress_corpus", "main"]
