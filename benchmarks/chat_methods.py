"""Ways to shorten a chat history for bench_chat: ours (compress_messages), truncation, LLMLingua; and the two ends.

Every method gets the history (OpenAI-style messages, ending with the last user turn), a ratio and the target's
token counter, and returns the messages to send. The budget is ratio x the history's content tokens in the target's
tokenizer (as compress_messages counts it: no template tokens), and every method keeps the last user turn whole.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import re
import warnings
from pathlib import Path
from typing import Callable

Count = Callable[[str], int]
Messages = list[dict[str, str]]
FORMAT = "chatml-v1"  # bump when rendering or item selection changes: cached results are then not reused


def render(messages: Messages) -> str:
    """Qwen's ChatML turns, as its chat template writes them."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def content_tokens(messages: Messages, count: Count) -> int:
    """What budgets are counted in, as compress_messages counts them: content only, no template tokens."""
    return sum(count(m["content"]) for m in messages)


def no_history(history: Messages, ratio: float, count: Count) -> Messages:
    return history[-1:]


def full_history(history: Messages, ratio: float, count: Count) -> Messages:
    return list(history)


def _older_budget(history: Messages, ratio: float, count: Count) -> tuple[float, int]:
    """Tokens the turns before the last user turn may keep (the budget minus that turn), and what they have."""
    room = ratio * content_tokens(history, count) - count(history[-1]["content"])
    return room, content_tokens(history[:-1], count)


def _tail_within(text: str, room: float, count: Count) -> str:
    """The most trailing words of ``text`` that fit ``room`` tokens."""
    words = re.findall(r"\S+\s*", text)
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count("".join(words[-mid:]).strip()) <= room:
            lo = mid
        else:
            hi = mid - 1
    return "".join(words[-lo:]).strip() if lo else ""


def truncate(history: Messages, ratio: float, count: Count) -> Messages:
    """Drop the oldest tokens: keep the last user turn, then older turns newest first, the oldest kept cut at a word."""
    room, _ = _older_budget(history, ratio, count)
    kept: Messages = []
    for m in reversed(history[:-1]):
        if room <= 0:
            break
        n = count(m["content"])
        if n > room:
            tail = _tail_within(m["content"], room, count)
            kept += [{**m, "content": tail}] if tail else []
            break
        kept.append(m)
        room -= n
    return kept[::-1] + history[-1:]


class Ours:
    def __init__(self, model: str | None = None, **config: object) -> None:
        from lingua_compress import Compressor, MessagesConfig

        self.compressor = Compressor(model)
        self.compressor.scorer  # load now: compression seconds exclude the model load
        self.config = MessagesConfig(**config)

    def __call__(self, history: Messages, ratio: float, count: Count) -> Messages:
        from lingua_compress import BudgetWarning

        with warnings.catch_warnings():  # an overshoot is measured (achieved ratio), not warned about per item
            warnings.simplefilter("ignore", BudgetWarning)
            res = self.compressor.compress_messages(history, ratio, config=self.config,
                                                    target_tokenizer=lambda t: [0] * count(t))
        return res.messages


class OursCompression(Ours):
    """Tuning prototype: ours with the compressor's coarse-to-fine split set otherwise (``CompressionConfig``
    fields) and ``MessagesConfig`` at its defaults. Does keeping whole lines and sentences verbatim serve a reply
    that copies the history's phrasing better than thinning every line?"""

    def __init__(self, **compression: object) -> None:
        from lingua_compress import CompressionConfig, Compressor, MessagesConfig

        self.compressor = Compressor(config=CompressionConfig(**compression))
        self.compressor.scorer  # load now, as Ours does
        self.config = MessagesConfig()


# A last user turn that asks for more of the previous reply ("continue", "Please continue from the above.",
# "continue to step 3"): the next reply picks up where that one stopped. 22 of sharegpt_400's conversations end so.
CONTINUE = re.compile(r"^\W*(please\W+)?(continue|go on|keep going)\b.{0,25}$", re.I | re.S)

_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+")


def split_tail(text: str, cap: float, count: Count) -> tuple[str, str]:
    """``text`` cut in two where the tail is the most trailing lines (outside code fences), or failing that the most
    trailing sentences of the last line, that fit ``cap`` tokens. ("", text) when all of it fits; (text, "") when
    nothing does."""
    if count(text) <= cap:
        return "", text
    lines = text.splitlines(keepends=True)
    fences = [0]
    for line in lines:
        fences.append(fences[-1] + line.lstrip().startswith(("```", "~~~")))
    best = len(lines)
    for i in range(len(lines) - 1, 0, -1):
        if fences[i] % 2:
            continue  # inside a fenced block: its code stays whole on one side
        if count("".join(lines[i:])) > cap:
            break
        best = i
    if best < len(lines):
        return "".join(lines[:best]), "".join(lines[best:])
    last = lines[-1]
    if fences[-1] % 2 or fences[-2] % 2:
        return text, ""
    cuts = [m.end() for m in _SENTENCE_END.finditer(last)]
    for c in cuts:
        if count(last[c:]) <= cap:
            return "".join(lines[:-1]) + last[:c], last[c:]
    return text, ""


class OursTail(Ours):
    """Prototype, measured on the tuning set before any library change: ours with the end of the newest assistant
    turn kept verbatim (up to ``share`` of the budget), since the next reply often picks up where it stopped
    ("continue"), and the rest of the history compressed by compress_messages to what is left."""

    def __init__(self, share: float = 0.2, **config: object) -> None:
        super().__init__(**config)
        self.share = share

    def __call__(self, history: Messages, ratio: float, count: Count) -> Messages:
        from lingua_compress import BudgetWarning

        budget = ratio * content_tokens(history, count)
        k = next((i for i in range(len(history) - 2, -1, -1) if history[i]["role"] == "assistant"), None)
        if k is None:
            return super().__call__(history, ratio, count)
        head, tail = split_tail(history[k]["content"], self.share * budget, count)
        room = budget - count(tail)
        if not tail or room <= count(history[-1]["content"]):
            return super().__call__(history, ratio, count)
        trimmed = [*history[:k], {**history[k], "content": head}, *history[k + 1:]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BudgetWarning)
            res = self.compressor.compress_messages(trimmed, target_tokens=int(room), config=self.config,
                                                    target_tokenizer=lambda t: [0] * count(t))
        out = res.messages
        kept = out[k]["content"]
        glue = "" if not kept or kept[-1].isspace() else ("\n" if head.endswith("\n") else " ")
        out[k] = {**out[k], "content": kept + glue + tail}
        return out


_WORD = re.compile(r"\w+|[^\w\s]")


def split_back(texts: list[str], out: str) -> list[str]:
    """Cut LLMLingua's one output string back into one piece per input text.

    LLMLingua joins its contexts and returns a single string (its own separator option assumes LLaMA's newline id,
    and its structured mode refuses text with "<"), so each output word is matched to the input's words and owned
    by the text it came from. Matching blocks are monotone, so each text's words form one contiguous stretch.
    """
    starts, pos = [], 0
    for t in texts:
        starts.append(pos)
        pos += len(t) + 2
    src = [(m.group(), sum(s <= m.start() for s in starts) - 1) for m in _WORD.finditer("\n\n".join(texts))]
    dst = list(_WORD.finditer(out))
    owner: list[int | None] = [None] * len(dst)
    matcher = difflib.SequenceMatcher(None, [w for w, _ in src], [m.group() for m in dst], autojunk=False)
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            owner[b + k] = src[a + k][1]
    last = next((o for o in owner if o is not None), 0)
    for k, o in enumerate(owner):  # a word cut to a non-word belongs with the matched word before it
        owner[k] = last = o if o is not None else last
    pieces = [""] * len(texts)
    for k, m in enumerate(dst):
        if k == 0 or owner[k] != owner[k - 1]:
            end = next((dst[j].start() for j in range(k, len(dst)) if owner[j] != owner[k]), len(out))
            pieces[owner[k]] = out[m.start():end].strip()
    return pieces


class LLMLinguaChat:
    """LLMLingua 0.2.2 as shipped, on the turns before the last user turn, given as its contexts (one per turn)."""

    def __init__(self, cache: Path) -> None:
        from quality_methods import LLMLingua

        self.pc = LLMLingua(cache).pc  # the quality benchmark's setup: same Gemma weights, current transformers

    def __call__(self, history: Messages, ratio: float, count: Count) -> Messages:
        room, older = _older_budget(history, ratio, count)
        if room <= 0:
            return history[-1:]
        if room >= older:
            return list(history)
        texts = [m["content"] for m in history[:-1]]
        # Its rate is the share of these turns to keep, the same share the budget leaves them; defaults otherwise.
        out = self.pc.compress_prompt(texts, instruction="", question="", rate=room / older)["compressed_prompt"]
        pieces = split_back(texts, out)
        return [{**m, "content": p} for m, p in zip(history[:-1], pieces) if p] + history[-1:]


# Modules compress_messages never runs (question-aware compression, documents, recovery, the CLI): a change there
# does not redo ours' chat results.
NOT_ON_THE_MESSAGES_PATH = frozenset({"question.py", "question_run.py", "documents.py", "recovery.py", "cli.py",
                                      "__main__.py"})
# The budget as compress_messages shared it before its recency ramp and short-user-turn rule: an ablation.
FLAT = {"recency": 1.0, "keep_user_tokens": 0}
# Ablations of ours' MessagesConfig: how steep should the ramp be (recency 0.25 by default), and should the oldest
# turns it cuts to a shred be elided whole (below 0.1 of their prose by default; never, or below 0.3)?
VARIANTS = {"ours-flat": FLAT, "ours-half": {"recency": 0.5}, "ours-steeper": {"recency": 0.1},
            "ours-noelide": {"elide_below": 0.0}, "ours-elide-more": {"elide_below": 0.3}}
# Ablations of the compressor under ours: the coarse stage (whole lines, then sentences) alone spends the budget.
COMPRESSION_VARIANTS = {"ours-coarse": {"context_budget_factor": 1.0, "sentence_budget_factor": 1.0}}


def fingerprint(method: str) -> str:
    """Changes when a method's code (or library) changes, so only that method's results are recomputed."""
    if method == "ours" or method in VARIANTS or method in COMPRESSION_VARIANTS or method == "ours-tail":
        import lingua_compress

        root = Path(lingua_compress.__file__).parent
        files = [p for p in root.glob("*.py") if p.name not in NOT_ON_THE_MESSAGES_PATH] + [*root.glob("messages/*.py")]
        code = inspect.getsource(Ours) + "".join(p.read_text() for p in sorted(files))
        code += repr(VARIANTS[method]) if method in VARIANTS else ""
        code += inspect.getsource(OursTail) + inspect.getsource(split_tail) if method == "ours-tail" else ""
        if method in COMPRESSION_VARIANTS:
            code += repr(COMPRESSION_VARIANTS[method]) + inspect.getsource(OursCompression)
    elif method == "llmlingua":
        from importlib.metadata import version

        import quality_methods

        code = (version("llmlingua") + inspect.getsource(LLMLinguaChat) + inspect.getsource(split_back)
                + inspect.getsource(quality_methods.LLMLingua) + inspect.getsource(quality_methods._LegacyKV))
    else:
        fn = {"truncate": truncate, "full": full_history, "no-history": no_history}[method]
        code = inspect.getsource(fn) + inspect.getsource(_older_budget) + inspect.getsource(_tail_within)
    return hashlib.sha1((FORMAT + code).encode()).hexdigest()[:12]


def make_method(method: str, cache: Path) -> Callable[[Messages, float, Count], Messages]:
    if method == "ours":
        return Ours()
    if method in VARIANTS:
        return Ours(**VARIANTS[method])
    if method == "ours-tail":
        return OursTail()
    if method in COMPRESSION_VARIANTS:
        return OursCompression(**COMPRESSION_VARIANTS[method])
    if method == "llmlingua":
        return LLMLinguaChat(cache)
    return {"truncate": truncate, "full": full_history, "no-history": no_history}[method]
