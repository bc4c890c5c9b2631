"""run_batched: group, build, call, parse by index, re-ask failures in smaller batches, and account for cost."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError, LinguaCompressError, ModelLoadError
from ..llm.base import Completion, rough_token_count
from .cost import CostReport, Prices
from .group import STRATEGIES, Embed, Group, make_groups
from .pack import build_batch, build_prefix, prompt_text
from .parse import parse_completion
from .types import STATUSES, Batch, BatchFormat, ItemResult, Sample, SharedPrefix, check_samples
from .vote import ItemVotes, memo_embedder, run_votes

RETRY_DEFAULT = tuple(s for s in STATUSES if s != "ok")


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """How a batched run is shaped.

    Attributes:
        batch_size: questions per call.
        group: "sequential", "random" (seeded), "similarity" (balanced partition by embeddings) or "knn"
            (Auto-Demo retrieval: one call per item with its nearest neighbours before it).
        ratio: compress the shared instruction + demonstrations to this share of their tokens, once.
        drop_blocks: that compression may drop whole demonstration blocks (the compressor's coarse stage, by
            perplexity), then thin the kept ones; False keeps every block and thins words only. Measured with
            Qwen2.5-Coder-1.5B on GSM8K at 0.3 (benchmarks/results/bench_batch_llm.md): at K = 4, 35.8 % against
            26.7 % for thinning every block, at about half its prompt tokens (n = 120).
        demo_block_size: demonstrations per block in the prefix; default ``batch_size`` (Cheng et al.).
        max_tokens_per_item: output budget per question; a call gets ``batch_size`` times this (twice in
            Auto-Demo style, for the echo).
        max_retries: rounds of re-asking items whose status is in ``retry_statuses``.
        retry_batch_size: batch size of re-asks; default half the batch size (at least 1).
        concurrency: calls in flight; default the client's ``max_concurrency``.
        votes: permutation voting (BatchPrompt): ask each batch in up to this many seeded permutations of its
            items and keep each item's majority answer (ties: the earliest); 1 asks once. See :mod:`.vote`.
        vote_agree: also retire an item once this many of its answers agree (saves calls, may change the
            outcome); None retires an item only once the rounds left cannot change its vote.
    """

    batch_size: int = 4
    group: str = "sequential"
    seed: int = 0
    ratio: float | None = None
    drop_blocks: bool = True
    demo_block_size: int | None = None
    max_tokens_per_item: int = 256
    max_retries: int = 1
    retry_batch_size: int | None = None
    retry_statuses: tuple[str, ...] = RETRY_DEFAULT
    temperature: float = 0.0
    concurrency: int | None = None
    votes: int = 1
    vote_agree: int | None = None

    @property
    def repeats_itself(self) -> bool:
        """One question a call, greedy: asking again sends the same prompt and gets the same reply."""
        return self.batch_size == 1 and self.temperature == 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_tokens_per_item"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be an int >= 1")
        for name in ("demo_block_size", "retry_batch_size", "concurrency"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name}={value!r} must be None or an int >= 1")
        if not isinstance(self.drop_blocks, bool):
            raise ConfigError(f"drop_blocks={self.drop_blocks!r} is not accepted: give True or False")
        if self.group not in STRATEGIES:
            raise ConfigError(f"group={self.group!r} is not accepted; use one of {STRATEGIES}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries={self.max_retries!r} must be an int >= 0")
        bad = [s for s in self.retry_statuses if s not in STATUSES]
        if bad:
            raise ConfigError(f"retry_statuses has {bad}; accepted: {STATUSES}")
        if isinstance(self.votes, bool) or not isinstance(self.votes, int) or self.votes < 1:
            raise ConfigError(f"votes={self.votes!r} must be an int >= 1: the most permutations each batch is "
                              f"asked in (1: no voting)")
        agree = self.vote_agree
        if agree is not None and (isinstance(agree, bool) or not isinstance(agree, int)
                                  or not 1 <= agree <= self.votes):
            raise ConfigError(f"vote_agree={agree!r} must be None (retire an item once its vote is decided) or an "
                              f"int from 1 to votes={self.votes}")


@dataclass(frozen=True)
class RunResult:
    """Per-id results (in sample order), the cost report and the prefix every call shared. With voting,
    ``votes`` holds each id's rounds and ``round_calls`` the calls of each round (re-asks after the vote are
    ``cost.retry_calls``; ``cost.calls`` counts every call)."""

    items: Mapping[str, ItemResult]
    cost: CostReport
    prefix: SharedPrefix
    extra: tuple[str, ...] = field(default_factory=tuple)
    votes: Mapping[str, ItemVotes] = field(default_factory=dict)
    round_calls: tuple[int, ...] = ()

    @property
    def answers(self) -> dict[str, str | None]:
        """Final answers of the items that ended ``ok`` (others are absent)."""
        return {i: r.final for i, r in self.items.items() if r.ok}

    @property
    def status_counts(self) -> dict[str, int]:
        return dict(Counter(r.status for r in self.items.values()))

    @property
    def call_failures(self) -> tuple[str, ...]:
        """Ids whose call failed on every attempt (no answer was ever seen), in sample order."""
        return tuple(i for i, r in self.items.items() if r.call_error is not None)


@dataclass
class _Tally:
    calls: int = 0
    retry_calls: int = 0
    api_prompt: int = 0
    api_completion: int = 0
    with_usage: int = 0
    counted_prompt: int = 0
    counted_completion: int = 0


class _Run:
    def __init__(self, samples: tuple[Sample, ...], llm: Any, prefix: SharedPrefix, cfg: BatchConfig,
                 count: Callable[[str], int], progress: Callable[[int], None] | None) -> None:
        self.by_id = {s.id: s for s in samples}
        self.llm, self.prefix, self.cfg, self.count = llm, prefix, cfg, count
        self.progress = progress
        self.reported: set[str] = set()  # ids the progress callback has counted: re-asks must not count again
        self.lock = threading.Lock()
        self.tally = _Tally()
        self.extra: list[str] = []
        self.chat = bool(getattr(llm, "chat", False))

    def batch(self, group: Group, index: int) -> Batch:
        members = [self.by_id[i] for i in group.ids]
        return build_batch(self.prefix, members, index=index, chat=self.chat,
                           max_tokens_per_item=self.cfg.max_tokens_per_item, target_id=group.target_id)

    def call(self, batch: Batch) -> list[ItemResult]:
        members = [self.by_id[i] for i in batch.sample_ids]
        try:
            comp = self.llm.complete(batch.prompt, max_tokens=batch.max_tokens, stop=batch.stop,
                                     temperature=self.cfg.temperature)
        except ModelLoadError:
            raise  # no call can succeed: stop the run rather than fail every batch the same way
        except LinguaCompressError as exc:  # one failed call must not lose the other batches' answers
            comp = None
            items = [ItemResult(s.id, k, "missing", note=f"call failed: {exc}", call_error=str(exc))
                     for k, s in enumerate(members, 1)]
        else:
            parsed = parse_completion(comp.text, batch, members, self.prefix.fmt,
                                      finish_reason=comp.finish_reason, prefix=self.prefix)
            items = list(parsed.items)
            self.extra.extend(parsed.extra)
        self._account(batch, comp)
        if batch.target_id is not None:
            items = [r for r in items if r.id == batch.target_id]
        self._report_progress(items)
        return items

    def _report_progress(self, items: Sequence[ItemResult]) -> None:
        if self.progress is None:
            return
        with self.lock:  # calls run on several threads
            new = {r.id for r in items} - self.reported
            self.reported |= new
        if new:
            self.progress(len(new))

    def _account(self, batch: Batch, comp: Completion | None) -> None:
        t = self.tally
        t.calls += 1
        t.counted_prompt += self.count(prompt_text(batch.prompt))
        if comp is None:
            return
        t.counted_completion += self.count(comp.text)
        if comp.prompt_tokens is not None and comp.completion_tokens is not None:
            t.with_usage += 1
            t.api_prompt += comp.prompt_tokens
            t.api_completion += comp.completion_tokens
        else:
            t.api_prompt += self.count(prompt_text(batch.prompt))
            t.api_completion += self.count(comp.text)

    def run_groups(self, groups: Sequence[Group]) -> list[ItemResult]:
        batches = [self.batch(g, i) for i, g in enumerate(groups)]
        workers = self.cfg.concurrency or int(getattr(self.llm, "max_concurrency", 1) or 1)
        if workers <= 1 or len(batches) <= 1:
            return [r for b in batches for r in self.call(b)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return [r for rs in pool.map(self.call, batches) for r in rs]


def run_batched(
    samples: Sequence[Sample],
    llm: Any,
    *,
    demos: Sequence[Sample] = (),
    instruction: str = "",
    config: BatchConfig = BatchConfig(),
    fmt: BatchFormat = BatchFormat(),
    compressor: Any = None,
    embed: Embed | None = None,
    count_tokens: Callable[[str], int] | None = None,
    prices: Prices | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Ask every sample through ``llm`` in batches and return per-id results plus a cost report.

    ``llm`` is any :class:`lingua_compress.llm.LLM`. Token accounting uses ``count_tokens``, else the client's
    ``count_tokens`` (the local model's tokenizer), else a word/punctuation estimate. Every sample ends with a
    result: ``ok`` or the reason it is not.
    """
    samples = check_samples(samples)
    demos = check_samples(demos)
    if not isinstance(config, BatchConfig):
        raise ConfigError(f"config must be a BatchConfig, got {type(config).__name__}")
    count, tok_name = _counter(count_tokens, llm)
    prefix = build_prefix(instruction, demos, fmt, block_size=config.demo_block_size or config.batch_size,
                          ratio=config.ratio, compressor=compressor, count_tokens=count,
                          drop_blocks=config.drop_blocks)
    run = _Run(samples, llm, prefix, config, count, progress)
    if config.votes > 1 and config.group == "similarity":
        embed = memo_embedder(embed)  # each round regroups by similarity: embed every question once
    groups = make_groups(samples, config.batch_size, config.group, seed=config.seed, embed=embed)
    results = {r.id: r for r in run.run_groups(groups)}
    votes, round_calls = {}, (len(groups),)
    if config.votes > 1:
        results, votes, round_calls = run_votes(samples, groups, results, run.run_groups, config, embed)
    first_calls = run.tally.calls
    retry_size = config.retry_batch_size or max(1, config.batch_size // 2)
    # One by one at temperature 0, a re-ask sends the very same prompt and gets the very same reply: only a failed
    # call is worth asking again then.
    same_prompt = config.repeats_itself and retry_size == 1
    for attempt in range(2, config.max_retries + 2):
        failed = [s for s in samples if results[s.id].status in config.retry_statuses
                  and not (same_prompt and results[s.id].call_error is None)]
        if not failed:
            break
        retry = make_groups(failed, retry_size, "sequential")
        for r in run.run_groups(retry):
            # A re-ask replaces the earlier result only when it did better (an answer, or at least a reply where
            # the call had failed); the attempt count is kept either way.
            before = results[r.id]
            keep = r if r.ok or (before.call_error is not None and r.call_error is None) else before
            results[r.id] = replace(keep, attempts=attempt)
    run.tally.retry_calls = run.tally.calls - first_calls
    cost = _report(samples, demos, instruction, fmt, prefix, run, count, tok_name, prices)
    ordered = {s.id: results[s.id] for s in samples}
    return RunResult(ordered, cost, prefix, tuple(run.extra), {s.id: votes[s.id] for s in samples if s.id in votes},
                     round_calls)


def _counter(count_tokens: Callable[[str], int] | None, llm: Any) -> tuple[Callable[[str], int], str]:
    if count_tokens is not None:
        return count_tokens, getattr(count_tokens, "__name__", "custom")
    own = getattr(llm, "count_tokens", None)
    if callable(own):
        return own, f"{getattr(llm, 'name', 'llm')} tokenizer"
    return rough_token_count, "estimated (words and punctuation)"


def _report(samples: tuple[Sample, ...], demos: tuple[Sample, ...], instruction: str, fmt: BatchFormat,
            prefix: SharedPrefix, run: _Run, count: Callable[[str], int], tok_name: str,
            prices: Prices | None) -> CostReport:
    t = run.tally
    plain = build_prefix(instruction, demos, fmt, block_size=1, count_tokens=count)
    base = sum(count(prompt_text(build_batch(plain, [s], chat=run.chat).prompt)) for s in samples)
    base_c = sum(count(prompt_text(build_batch(prefix, [s], chat=run.chat).prompt)) for s in samples)
    source = "api" if t.with_usage == t.calls and t.calls else ("estimated" if not t.with_usage else "mixed")
    usd = baseline_usd = None
    if prices is not None:
        usd = prices.usd(t.api_prompt, t.api_completion)
        # The baseline is counted in the accounting tokenizer; bring it to the billed scale of this run.
        scale = t.api_prompt / t.counted_prompt if t.counted_prompt else 1.0
        baseline_usd = prices.usd(base * scale, t.api_completion)
    return CostReport(
        n_samples=len(samples), calls=t.calls, retry_calls=t.retry_calls, prompt_tokens=t.api_prompt,
        completion_tokens=t.api_completion, usage_source=source, counted_prompt_tokens=t.counted_prompt,
        counted_completion_tokens=t.counted_completion, tokenizer=tok_name,
        prefix_tokens_original=prefix.original_tokens, prefix_tokens=prefix.tokens, baseline_calls=len(samples),
        baseline_prompt_tokens=base, baseline_compressed_prompt_tokens=base_c, usd=usd, baseline_usd=baseline_usd,
    )
