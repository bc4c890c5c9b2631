"""Building batched prompts: the shared prefix (compressed once, cached) and one prompt per batch.

Completion prompt, indexed style, two questions per block::

    <instruction + format rule>

    Q[1]: <demo question>          one block per ``block_size`` demonstrations (Cheng et al. regroup the
    Q[2]: <demo question>          demonstrations into blocks of the batch's shape)
    A[1]: <demo answer>
    A[2]: <demo answer>

    (2 questions; answer each, A[1] to A[2].)
    Q[1]: <question>
    Q[2]: <question>
    A[1]:                          the prefill: the model starts inside the format

Everything up to the blank line before the batch is the prefix: identical bytes in every call, which also lets
provider prompt caches hit.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import warnings
from dataclasses import replace
from typing import Any, Callable, Sequence

from ..errors import BudgetWarning, ConfigError
from .types import Batch, BatchFormat, Sample, SharedPrefix

CountTokens = Callable[[str], int]
_BLANK_RUN = re.compile(r"\n\s*\n")
_RULES = {
    "indexed": "Each block lists questions {q}[1], {q}[2], ...; answer every one, in order, each answer starting "
    "on a new line with {a}[i]: for question {q}[i].",
    "auto_demo": "Each block lists questions {q}[1], {q}[2], ...; under Answers:, for each i in order, first "
    "repeat question {q}[i] exactly after {q}[i]:, then answer it after {a}[i]:.",
    "json": 'Each block lists questions {q}[1], {q}[2], ...; answer all of them in one JSON object on the line '
    '{a}:, mapping each number to its answer, e.g. {a}: {{"1": "...", "2": "..."}}.',
}
_ANSWERS_HEADER = "Answers:"
_CACHE_SIZE = 64
_Compressed = tuple[str, tuple[str, ...], tuple[int, ...]]  # instruction and blocks as sent, indices of the kept blocks
_cache: dict[str, _Compressed] = {}
_cache_lock = threading.Lock()


def one_block(text: str) -> str:
    """Text with blank lines removed: blank lines separate blocks, so none may occur inside one."""
    return _BLANK_RUN.sub("\n", text.strip())


def question_lines(samples: Sequence[Sample], fmt: BatchFormat) -> list[str]:
    return [f"{fmt.tag_for(name)}[{slot}]: {one_block(text)}"
            for slot, s in enumerate(samples, 1) for name, text in s.fields]


def demo_block(demos: Sequence[Sample], fmt: BatchFormat) -> str:
    """One demonstration block in the batched shape of ``fmt``."""
    lines = question_lines(demos, fmt)
    answers = [one_block(d.answer or "") for d in demos]
    if fmt.style == "indexed":
        lines += [f"{fmt.a_tag}[{i}]: {a}" for i, a in enumerate(answers, 1)]
    elif fmt.style == "json":
        lines.append(f"{fmt.a_tag}: " + json.dumps({str(i): a for i, a in enumerate(answers, 1)}, ensure_ascii=False))
    else:
        lines.append(_ANSWERS_HEADER)
        for slot, (d, a) in enumerate(zip(demos, answers), 1):
            lines += [f"{fmt.tag_for(name)}[{slot}]: {one_block(text)}" for name, text in d.fields]
            lines.append(f"{fmt.a_tag}[{slot}]: {a}")
    return "\n".join(lines)


def instruction_text(instruction: str, fmt: BatchFormat) -> str:
    rule = _RULES[fmt.style].format(q=fmt.q_tag, a=fmt.a_tag) if fmt.instruction_rule else ""
    return one_block("\n".join(p for p in (instruction.strip(), rule) if p))


def marker_keep(fmt: BatchFormat, extra: Sequence[str] = ()) -> list[Any]:
    """What the compressor must never cut: index markers, the answers header, and answer phrases."""
    tags = "|".join(re.escape(t) for t in {fmt.q_tag, fmt.a_tag, *(t for _, t in fmt.field_tags)})
    keep: list[Any] = [re.compile(rf"(?:{tags})\[\d+\]:"), re.compile(rf"^{re.escape(fmt.a_tag)}:", re.M),
                       _ANSWERS_HEADER, "The answer is", "So the answer is"]
    return keep + [e for e in extra if e]


def _prefix_key(instruction: str, demos: Sequence[Sample], fmt: BatchFormat, block_size: int,
                ratio: float | None, compressor: Any, drop_blocks: bool) -> str:
    ident = None
    if compressor is not None and ratio is not None:
        scorer = getattr(compressor, "_scorer", None)
        ident = [type(compressor).__module__ + "." + type(compressor).__qualname__,
                 repr(getattr(compressor, "config", None)), repr(getattr(compressor, "_spec", None)),
                 getattr(scorer, "name", None) if scorer is not None else None,
                 getattr(compressor, "cache_key", None)]
    payload = [instruction, [[d.id, list(map(list, d.fields)), d.answer] for d in demos], repr(fmt),
               block_size, ratio, ident, drop_blocks]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, default=str).encode()).hexdigest()


def clear_prefix_cache() -> None:
    with _cache_lock:
        _cache.clear()


def build_prefix(
    instruction: str,
    demos: Sequence[Sample],
    fmt: BatchFormat = BatchFormat(),
    *,
    block_size: int,
    ratio: float | None = None,
    compressor: Any = None,
    count_tokens: CountTokens,
    keep: Sequence[str] = (),
    target_tokenizer: Any = None,
    drop_blocks: bool = True,
) -> SharedPrefix:
    """The shared prefix for batches of ``block_size``; with ``ratio`` and ``compressor`` its instruction and
    demonstrations are compressed once (cached by content hash + compressor identity + settings). With
    ``drop_blocks`` the compression may drop whole demonstration blocks first and thin the kept ones; otherwise
    every block stays and loses words only."""
    if not isinstance(block_size, int) or block_size < 1:
        raise ConfigError(f"block_size={block_size!r} must be an int >= 1")
    if ratio is not None and not (isinstance(ratio, (int, float)) and 0.0 < ratio <= 1.0):
        raise ConfigError(f"ratio={ratio!r} must be a number in (0, 1] or None (no compression)")
    if ratio is not None and ratio < 1.0 and compressor is None:
        raise ConfigError(f"ratio={ratio!r} needs a compressor (e.g. lingua_compress.Compressor())")
    demos = tuple(demos)
    for d in demos:
        if not d.answer:
            raise ConfigError(f"demonstration {d.id!r} has no answer; demonstrations need one")
    instr = instruction_text(instruction, fmt)
    blocks = tuple(demo_block(demos[i : i + block_size], fmt) for i in range(0, len(demos), block_size))
    original = SharedPrefix(instr, blocks, block_size, fmt, "", 0, 0, False, None, "")
    original_text = original.text
    key = _prefix_key(instruction, demos, fmt, block_size, ratio, compressor, drop_blocks)
    sent_instr, sent_blocks, kept, compressed = instr, blocks, tuple(range(len(blocks))), False
    if ratio is not None and ratio < 1.0 and blocks:
        with _cache_lock:
            hit = _cache.get(key)
        if hit is None:
            hit = _compress(instr, blocks, fmt, ratio, compressor, keep, target_tokenizer, drop_blocks)
            with _cache_lock:
                if len(_cache) >= _CACHE_SIZE:
                    _cache.pop(next(iter(_cache)))
                _cache[key] = hit
        sent_instr, sent_blocks, kept = hit
        compressed = (sent_instr, sent_blocks) != (instr, blocks)
    answers = tuple(tuple(one_block(d.answer or "") for d in demos[i * block_size : (i + 1) * block_size])
                    for i in kept)
    result = SharedPrefix(sent_instr, sent_blocks, block_size, fmt, original_text, count_tokens(original_text),
                          0, compressed, ratio, key, answers)
    return replace(result, tokens=count_tokens(result.text))


def _markers(text: str, fmt: BatchFormat) -> list[str]:
    return [m.group() for p in marker_keep(fmt)[:2] for m in p.finditer(text)]


def _compress(instr: str, blocks: tuple[str, ...], fmt: BatchFormat, ratio: float, compressor: Any,
              keep: Sequence[str], target_tokenizer: Any, drop_blocks: bool) -> _Compressed:
    from ..segment import Prompt

    kept, budget = tuple(range(len(blocks))), {"ratio": ratio}
    if drop_blocks:
        kept, budget = _choose_blocks(instr, blocks, ratio, compressor, target_tokenizer)
    prompt = Prompt(instruction=instr, demonstrations=[blocks[i] for i in kept], question="")
    result = _configured(compressor, coarse=False).compress(prompt, **budget, keep=marker_keep(fmt, keep),
                                                            target_tokenizer=target_tokenizer)
    pieces = str(result.text).split("\n\n")
    want = ([instr] if instr else []) + [blocks[i] for i in kept]
    if len(pieces) != len(want) or any(_markers(p, fmt) != _markers(w, fmt) for p, w in zip(pieces, want)):
        # The parser and the model both rely on the block structure; never send a prefix that lost it.
        warnings.warn("compressing the shared prefix changed its block or marker structure; sending it "
                      "uncompressed", BudgetWarning, stacklevel=3)
        return instr, blocks, tuple(range(len(blocks)))
    if instr:
        return pieces[0], tuple(pieces[1:]), kept
    return "", tuple(pieces), kept


def _choose_blocks(instr: str, blocks: tuple[str, ...], ratio: float, compressor: Any,
                   target_tokenizer: Any) -> tuple[tuple[int, ...], dict[str, Any]]:
    """The blocks the compressor's coarse stage keeps whole, and the whole prefix's budget in tokens.

    A separate pass without the marker patterns: ``keep=`` matches force their part, so with them every block
    would stay. Only which blocks survive is used; the kept ones are then thinned with their markers protected."""
    from ..api import Compressor
    from ..segment import Prompt

    if not isinstance(compressor, Compressor) or len(blocks) < 2:
        return tuple(range(len(blocks))), {"ratio": ratio}  # a custom compressor has no coarse stage to ask
    chooser = _configured(compressor, coarse=True)
    with warnings.catch_warnings():  # its text is not sent: a budget warning about it would mislead
        warnings.simplefilter("ignore", BudgetWarning)
        result = chooser.compress(Prompt(instruction=instr, demonstrations=blocks, question=""), ratio,
                                  target_tokenizer=target_tokenizer)
    kept = _kept_blocks(result, blocks) or tuple(range(len(blocks)))
    if len(kept) == len(blocks):
        return kept, {"ratio": ratio}
    return kept, {"target_tokens": result.target_tokens}


def _kept_blocks(result: Any, blocks: tuple[str, ...]) -> tuple[int, ...]:
    """Indices of the blocks any kept character of ``result`` comes from."""
    kept, pos = [], 0
    for i, block in enumerate(blocks):
        start = result.original.find(block, pos)
        if start < 0:  # not laid out verbatim: cannot tell
            return ()
        pos = start + len(block)
        if any(s < pos and e > start for s, e in result.kept_spans):
            kept.append(i)
    return tuple(kept)


def _configured(compressor: Any, coarse: bool) -> Any:
    # A block must stay whole: the coarse stage's sentence filter and fill may drop single lines of a block (a Q[2]
    # line without its A[2]), so our own Compressor runs without them, on the same (already loaded) scorer.
    from ..api import Compressor

    if not isinstance(compressor, Compressor):
        return compressor
    cfg = compressor.config
    wanted = replace(cfg, coarse=cfg.coarse and coarse, coarse_sentences=False)
    return compressor if wanted == cfg else Compressor(scorer=compressor.scorer, config=wanted)


def stop_sequences(fmt: BatchFormat, chat: bool) -> tuple[str, ...]:
    """Stops derived from the prefill: the first marker can never legitimately appear again, so seeing it means
    the model started a new batch of its own."""
    q, a = fmt.q_tag, fmt.a_tag
    if chat:
        return (f"\n{q}[",) if fmt.style == "indexed" else ()
    stops = {"indexed": (f"\n{q}[", f"\n{a}[1]:"), "json": (f"\n{q}[",), "auto_demo": (f"\n{q}[1]:",)}[fmt.style]
    return stops + (("\n\n",) if fmt.blank_line_stop else ())


def prefill_marker(fmt: BatchFormat, chat: bool) -> str:
    if chat or not fmt.prefill:
        return ""
    first_field = fmt.q_tag
    return {"indexed": f"{fmt.a_tag}[1]:", "json": f"{fmt.a_tag}: {{", "auto_demo": f"{first_field}[1]:"}[fmt.style]


def reminder(n: int, fmt: BatchFormat) -> str:
    s = "s" if n != 1 else ""
    return f"({n} question{s}; answer each, {fmt.a_tag}[1] to {fmt.a_tag}[{n}].)"


def build_batch(
    prefix: SharedPrefix,
    samples: Sequence[Sample],
    *,
    index: int = 0,
    chat: bool = False,
    max_tokens_per_item: int = 256,
    target_id: str | None = None,
) -> Batch:
    """The prompt (text, or chat messages) asking ``samples`` in slot order after ``prefix``."""
    if not samples:
        raise ConfigError("a batch needs at least one sample")
    if not isinstance(max_tokens_per_item, int) or max_tokens_per_item < 1:
        raise ConfigError(f"max_tokens_per_item={max_tokens_per_item!r} must be an int >= 1")
    fmt = prefix.fmt
    n = len(samples)
    lines = ([reminder(n, fmt)] if fmt.count_reminder else []) + question_lines(samples, fmt)
    pre = prefill_marker(fmt, chat)
    if chat:
        prompt: Any = chat_messages(prefix, "\n".join(lines))
    else:
        tail = lines + ([_ANSWERS_HEADER] if fmt.style == "auto_demo" else []) + ([pre] if pre else [])
        prompt = "\n\n".join(p for p in (prefix.text, "\n".join(tail)) if p)
    # The echo roughly doubles the output in Auto-Demo style; a too-small budget silently drops the last items.
    per_item = max_tokens_per_item * (2 if fmt.style == "auto_demo" else 1)
    return Batch(index, tuple(s.id for s in samples), prompt, stop_sequences(fmt, chat), per_item * n + 8,
                 pre, target_id)


def _split_block(block: str, fmt: BatchFormat) -> tuple[str, str]:
    if fmt.style == "auto_demo":
        pattern = rf"^{re.escape(_ANSWERS_HEADER)}\s*$"
    elif fmt.style == "json":
        pattern = rf"^{re.escape(fmt.a_tag)}:"
    else:
        pattern = rf"^{re.escape(fmt.a_tag)}\[\d+\]:"
    m = re.search(pattern, block, re.M)
    if m is None:
        return block, ""
    answer_start = m.end() if fmt.style == "auto_demo" else m.start()
    return block[: m.start()].rstrip(), block[answer_start:].strip()


def chat_messages(prefix: SharedPrefix, user_text: str) -> tuple[dict[str, str], ...]:
    """System = instruction and format rule; each demonstration block a user/assistant turn; then the batch."""
    messages = [{"role": "system", "content": prefix.instruction}] if prefix.instruction else []
    for block in prefix.blocks:
        question, answer = _split_block(block, prefix.fmt)
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": user_text})
    return tuple(messages)


def prompt_text(prompt: Any) -> str:
    """A prompt as one text (chat messages joined), for token counting."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in prompt)
