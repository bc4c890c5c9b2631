"""Invariants of compress_messages over generated JSON documents, markdown with code, and message lists.

Each invariant runs three ways:
- 1,000 cases through ``Halving``, a model-free compressor that keeps every other word: fast enough for many cases,
  and exact enough to check string values word by word;
- 200-300 cases through the real pipeline on the model-free ``FakeScorer`` (real rendering, real kept spans);
- 20-25 cases through the tiny random-weight model (real transformers code paths).
"""

from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lingua_compress import Compressor, MessagesConfig, Prompt, compress_messages
from lingua_compress.messages.compress import elisions, ramp
from lingua_compress.result import CompressionResult, Timings
from fakes import FakeScorer

pytestmark = pytest.mark.filterwarnings("ignore::lingua_compress.BudgetWarning")


def _settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Halving:
    """Keeps every other whitespace-separated word of each demonstration, the first always; no model."""

    def __init__(self) -> None:
        self.scorer = FakeScorer()

    def compress(self, prompt, ratio=None, *, target_tokens=None, keep=(), target_tokenizer=None):
        demos = [prompt] if isinstance(prompt, str) else list(prompt.demonstrations)
        original, spans = "", []
        for demo in demos:
            original += "\n\n" if original else ""
            base = len(original)
            original += demo
            spans += [(base + m.start(), base + m.end()) for k, m in enumerate(re.finditer(r"\S+", demo)) if k % 2 == 0]
        text = ""
        for k, (s, e) in enumerate(spans):
            if k:
                text += "\n" if "\n" in original[spans[k - 1][1]:s] else " "
            text += original[s:e]
        count = lambda t: len(self.scorer.tokenize(t)[0])  # noqa: E731
        return CompressionResult(text, original, count(original), count(text), target_tokens or 0, tuple(spans), (),
                                 "fake", Timings(0.0, 0.0, 0))


HALVING = Halving()
PIPELINE = Compressor(scorer=FakeScorer())


@pytest.fixture(scope="module")
def tiny(scorer):
    return Compressor(scorer=scorer)


# ---- generators -------------------------------------------------------------------------------------------------

PLAIN_WORDS = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=8)
MARKUP_WORDS = st.sampled_from(["-", "#", "|", ">", "*", "1.", "`x y`", "[a](b)", "https://e.io/p", "<b>", ",", "."])
WORD = st.one_of(PLAIN_WORDS, PLAIN_WORDS, PLAIN_WORDS, MARKUP_WORDS)
SEP = st.sampled_from([" ", " ", " ", " ", "\n", "  ", "\n\n", "\t"])
def _prose(min_words: int, max_words: int) -> st.SearchStrategy[str]:
    return st.lists(st.tuples(WORD, SEP), min_size=min_words, max_size=max_words).map(
        lambda xs: "".join(w + s for w, s in xs).strip())


PROSE = st.one_of(_prose(0, 6), _prose(8, 40), _prose(8, 40))  # mostly long enough to be cut
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10), PROSE, PROSE)
JSON_VALUE = st.recursive(SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)), max_leaves=20)
JSON_DOC = st.one_of(st.lists(JSON_VALUE, max_size=5), st.dictionaries(st.text(max_size=8), JSON_VALUE, max_size=6))


@st.composite
def json_content(draw):
    """A JSON document as a message would carry it: whole content, or a fenced json block between prose."""
    doc = draw(JSON_DOC)
    text = json.dumps(doc, indent=draw(st.sampled_from([None, 2, 4])), ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        return doc, text, False
    return doc, f"{draw(PROSE)}\n\n```json\n{text}\n```\n\n{draw(PROSE)}", True


CODE_LINE = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=30).filter(
    lambda s: not re.fullmatch(r" {0,3}(`{3,}|~{3,}).*", s))


@st.composite
def code_block(draw):
    fence = draw(st.sampled_from(["```", "~~~", "````"]))
    info = draw(st.sampled_from(["", "python", "bash", "text"]))
    body = draw(st.lists(CODE_LINE, max_size=6))
    if draw(st.booleans()):
        return f"{fence}{info}\n" + "".join(line + "\n" for line in body) + f"{fence}\n"
    lines = draw(st.lists(st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)),
                                  min_size=1, max_size=20).filter(lambda s: not s[0].isspace()), min_size=1, max_size=4))
    return "".join(f"    {line}\n" for line in lines)


@st.composite
def markdown_with_code(draw):
    blocks = draw(st.lists(st.one_of(code_block(), PROSE.filter(bool).map(lambda p: ("prose", p))), min_size=1,
                           max_size=6))
    codes = [b for b in blocks if isinstance(b, str)]
    text = "\n".join(b if isinstance(b, str) else b[1] + "\n" for b in blocks)
    return text, codes


TEXT = st.one_of(PROSE, markdown_with_code().map(lambda t: t[0]), json_content().map(lambda t: t[1]))
PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}),
    st.fixed_dictionaries({"type": st.just("text"), "text": TEXT, "cache_control": st.just({"type": "ephemeral"})}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": st.text()})}),
    st.fixed_dictionaries({"type": st.just("input_audio"), "input_audio": st.just({"data": "AAAA", "format": "wav"})}),
)
TOOL_CALLS = st.lists(st.fixed_dictionaries({"id": st.text(max_size=5), "type": st.just("function"), "function":
                      st.fixed_dictionaries({"name": st.text(max_size=5), "arguments": TEXT})}), max_size=2)
EXTRA = {"name": st.text(max_size=6), "tool_calls": TOOL_CALLS, "tool_call_id": st.text(max_size=6),
         "weight": st.integers(), "metadata": JSON_VALUE}


@st.composite
def message(draw):
    role = draw(st.sampled_from(["system", "developer", "user", "user", "assistant", "tool", "function", "critic"]))
    content = draw(st.one_of(st.none(), TEXT, st.lists(PART, max_size=4)))
    items = [("role", role), ("content", content)]
    if draw(st.booleans()):
        items.pop(1)  # a message may have no content key at all
    items += [(k, draw(v)) for k, v in EXTRA.items() if draw(st.booleans())]
    return dict(draw(st.permutations(items)))


MESSAGES = st.lists(message(), max_size=6)
RATIO = st.sampled_from([0.1, 0.3, 0.5, 0.8])


# ---- invariants -------------------------------------------------------------------------------------------------

def words_in_order(out: str, original: str) -> bool:
    rest = iter(original.split())
    return all(w in rest for w in out.split())


def chars_in_order(out: str, original: str) -> bool:
    rest = iter(c for c in original if not c.isspace())
    return all(c in rest for c in out if not c.isspace())


def same_json(out, original, strings_ok) -> bool:
    """Same structure, keys (in order) and non-string values; strings only shortened."""
    if type(out) is not type(original):
        return False
    if isinstance(original, dict):
        return list(out) == list(original) and all(same_json(out[k], original[k], strings_ok) for k in original)
    if isinstance(original, list):
        return len(out) == len(original) and all(same_json(a, b, strings_ok) for a, b in zip(out, original))
    if isinstance(original, str):
        return strings_ok(out, original)
    return out == original


def check_json(compressor, doc, text, fenced, ratio, strings_ok, history=False) -> None:
    """The tool output parses as before; with ``history`` an older copy comes first, valid too unless elided."""
    older = [{"role": "tool", "content": text}, {"role": "assistant", "content": "Noted, calling it again."}]
    messages = [{"role": "system", "content": "Be brief."}, *(older if history else []),
                {"role": "tool", "content": text}, {"role": "user", "content": "Summarise the tool output."}]
    res = compress_messages(compressor, messages, ratio)
    for i in (1, 3) if history else (1,):
        out = res.messages[i]["content"]
        if res.per_message[i].elided:
            assert out == "" and i == 1, i  # only the older copy: the newest free message is never elided
            event("older copy elided")
            continue
        event("compressed" if out != text else "unchanged")
        body = re.search(r"```json\n(.*)\n```", out, re.DOTALL) if fenced else re.fullmatch(r"(.*)", out, re.DOTALL)
        assert body is not None, out
        assert same_json(json.loads(body.group(1)), doc, strings_ok)


def check_code(compressor, cases, ratio) -> None:
    """Every message's code blocks come back byte-identical and in order, unless the whole message was elided."""
    messages = [{"role": ("user", "assistant")[k % 2], "content": text} for k, (text, _) in enumerate(cases)]
    messages.append({"role": "user", "content": "What does the code do?"})
    res = compress_messages(compressor, messages, ratio)
    for (text, codes), out, stats in zip(cases, res.messages, res.per_message):
        out = out["content"]
        if stats.elided:
            assert out == "" and stats.index < len(cases) - 1, stats  # never the newest
            event("elided")
            continue
        event("compressed" if out != text else "unchanged")
        pos = 0
        for code in codes:
            at = out.find(code, pos)
            assert at >= 0, (code, out)
            pos = at + len(code)


def check_elided(res, messages, cfg) -> None:
    """Elided: text emptied, pinned messages never, and every older message the budget cut is elided too."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user" and m["role"] not in cfg.system_roles]
    # Cut by the ramp: not elided, not brought back into unspent budget (which may be older than an elided one).
    cut = [s.index for s in res.per_message if not s.elided and not s.restored and s.budget_ratio < 1.0]
    for s in res.per_message:
        if not s.elided:
            continue
        event("elided")
        assert messages[s.index]["role"] not in cfg.system_roles and s.index != (users or [None])[-1]
        assert all(j > s.index for j in cut), (s.index, cut)  # the oldest go whole, the newer are cut
        content = res.messages[s.index].get("content")
        assert s.compressed_tokens == 0 and s.budget_ratio == 0.0 and s.original_tokens > 0
        if isinstance(content, str):
            assert content == ""
        if isinstance(content, list):
            assert all(p["text"] == "" for p in content if p["type"] == "text")


def check_shape(compressor, messages, ratio) -> None:
    before = copy.deepcopy(messages)
    cfg = MessagesConfig(min_words=2)
    res = compress_messages(compressor, messages, ratio, config=cfg)
    check_elided(res, messages, cfg)
    assert messages == before  # the caller's list is untouched
    event("compressed" if res.messages != messages else "unchanged")
    assert len(res.messages) == len(messages) and len(res.per_message) == len(messages)
    for out, original in zip(res.messages, messages):
        assert list(out) == list(original)
        assert {k: v for k, v in out.items() if k != "content"} == {k: v for k, v in original.items() if k != "content"}
        content, was = out.get("content"), original.get("content")
        assert type(content) is type(was)
        if isinstance(was, str):
            assert chars_in_order(content, was)
        if isinstance(was, list):
            assert len(content) == len(was)
            for part, old in zip(content, was):
                assert list(part) == list(old)
                assert {k: v for k, v in part.items() if k != "text"} == {k: v for k, v in old.items() if k != "text"}
                if old["type"] == "text":
                    assert chars_in_order(part["text"], old["text"])
                else:
                    assert part == old
    assert res.compressed_tokens == sum(s.compressed_tokens for s in res.per_message)
    assert [s.role for s in res.per_message] == [m["role"] for m in messages]


# ---- JSON: output parses, keys and non-string values identical, strings shortened in order ----------------------

@pytest.mark.slow
@_settings(1000)
@given(json_content(), RATIO, st.booleans())
def test_json_halving_1000(case, ratio, history):
    """1,000 generated JSON documents (whole content or fenced, with or without an older copy): word-halving."""
    check_json(HALVING, *case, ratio, words_in_order, history)


@_settings(300)
@given(json_content(), RATIO, st.booleans())
def test_json_pipeline_300(case, ratio, history):
    """300 generated JSON documents through the real pipeline on the fake scorer."""
    check_json(PIPELINE, *case, ratio, chars_in_order, history)


@_settings(25)
@given(json_content(), RATIO, st.booleans())
def test_json_tiny_model_25(tiny, case, ratio, history):
    """25 generated JSON documents through the tiny model."""
    check_json(tiny, *case, ratio, chars_in_order, history)


# ---- code blocks: byte-identical, in order, in every message not elided whole ------------------------------------

CODE_TURNS = st.lists(markdown_with_code(), min_size=1, max_size=3)

@pytest.mark.slow
@_settings(1000)
@given(CODE_TURNS, RATIO)
def test_code_blocks_halving_1000(cases, ratio):
    """1,000 generated histories of markdown with fenced and indented code through the word-halving compressor."""
    check_code(HALVING, cases, ratio)


@_settings(200)
@given(CODE_TURNS, RATIO)
def test_code_blocks_pipeline_200(cases, ratio):
    """200 generated histories of markdown with code through the real pipeline on the fake scorer."""
    check_code(PIPELINE, cases, ratio)


@_settings(20)
@given(CODE_TURNS, RATIO)
def test_code_blocks_tiny_model_20(tiny, cases, ratio):
    """20 generated histories of markdown with code through the tiny model."""
    check_code(tiny, cases, ratio)


# ---- message lists: shape, roles, names, tool calls, extra keys, key order and length identical -----------------

@pytest.mark.slow
@_settings(1000)
@given(MESSAGES, RATIO)
def test_shape_halving_1000(messages, ratio):
    """1,000 generated message lists through the word-halving compressor."""
    check_shape(HALVING, messages, ratio)


@_settings(200)
@given(MESSAGES, RATIO)
def test_shape_pipeline_200(messages, ratio):
    """200 generated message lists through the real pipeline on the fake scorer."""
    check_shape(PIPELINE, messages, ratio)


@_settings(20)
@given(MESSAGES, RATIO)
def test_shape_tiny_model_20(tiny, messages, ratio):
    """20 generated message lists through the tiny model."""
    check_shape(tiny, messages, ratio)


# ---- tables: header, delimiter and pipes identical; each body cell a subsequence of its words -------------------

CELL_WORD = st.one_of(st.text(st.characters(categories=("L", "N")), min_size=1, max_size=8),
                      st.sampled_from(["`x y`", "[a](b)", ",", "48", "3.5"]))
CELL = st.lists(CELL_WORD, min_size=0, max_size=14).map(" ".join)


@st.composite
def markdown_table(draw) -> tuple[str, list[str], list[list[str]]]:
    """Prose, a table, prose; and the table's lines and body cells."""
    cols = draw(st.integers(1, 4))
    outer = cols == 1 or draw(st.booleans())  # "| a | b |" or "a | b" (one column without pipes is no table)
    rows = [[draw(CELL) for _ in range(cols)] for _ in range(draw(st.integers(1, 5)))]
    line = (lambda cells: "| " + " | ".join(cells) + " |") if outer else (lambda cells: " | ".join(cells))
    table = [line([f"Head{k}" for k in range(cols)]), line(["---"] * cols), *(line(r) for r in rows)]
    return f"{draw(PROSE)}\n\n" + "\n".join(table) + f"\n\n{draw(PROSE)}", table, rows


def check_table(compressor, case, ratio) -> None:
    text, table, rows = case
    messages = [{"role": "tool", "content": text}, {"role": "user", "content": "Which row matters?"}]
    out = compress_messages(compressor, messages, ratio).messages[0]["content"]
    at = out.find(table[0] + "\n" + table[1] + "\n")
    assert at >= 0, (table[:2], out)
    got = out[at:].split("\n")[:len(table)]
    for row_in, row_out, cells in zip(table[2:], got[2:], rows):
        assert row_out.count("|") == row_in.count("|"), (row_in, row_out)
        cells_out = row_out.split("|")[1:-1] if row_in.startswith("|") else row_out.split("|")
        assert len(cells_out) == len(cells)
        for cell_in, cell_out in zip(cells, cells_out):
            assert chars_in_order(cell_out, cell_in), (cell_in, cell_out)  # CJK characters are cut one by one
    event("cut" if got != table else "kept")


@pytest.mark.slow
@_settings(1000)
@given(markdown_table(), RATIO)
def test_tables_halving_1000(case, ratio):
    """1,000 generated markdown tables through the word-halving compressor."""
    check_table(HALVING, case, ratio)


@_settings(200)
@given(markdown_table(), RATIO)
def test_tables_pipeline_200(case, ratio):
    """200 generated markdown tables through the real pipeline on the fake scorer."""
    check_table(PIPELINE, case, ratio)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(0, 600), max_size=14), st.floats(0.05, 1.0), st.floats(0.0, 1.0))
def test_ramp_spends_the_budget_and_a_newer_message_keeps_no_less(sizes, recency, frac):
    weights = [recency ** age for age in range(len(sizes))]
    budget = frac * sum(sizes)
    shares = ramp(sizes, weights, budget)
    assert sum(shares) == pytest.approx(budget, rel=1e-9, abs=1e-6)
    assert all(0.0 <= s <= n + 1e-9 for s, n in zip(shares, sizes))
    kept = [s / n for s, n in zip(shares, sizes) if n]
    assert all(a >= b - 1e-9 for a, b in zip(kept, kept[1:]))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 600), st.integers(0, 600)), max_size=10), st.floats(0.05, 1.0),
       st.floats(-2000.0, 4000.0), st.sampled_from([0.0, 0.05, 0.1, 0.3]))
def test_elisions_drop_the_oldest_shreds_and_only_them(pairs, recency, room, below):
    sizes, fixed = [n for n, _ in pairs], [f for _, f in pairs]
    weights = [recency ** age for age in range(len(sizes))]
    dropped = elisions(sizes, fixed, weights, room, below)
    kept = len(sizes) - dropped
    assert dropped == 0 if below == 0 or len(sizes) < 2 else 0 <= dropped < len(sizes)

    def oldest_keeps(n: int) -> float:  # the share of its prose the ramp leaves the oldest of the first n
        left = room + sum(fixed[n:])
        if left < 0:
            return -1.0
        return ramp(sizes[:n], weights[:n], min(left, sum(sizes[:n])))[-1] / sizes[n - 1]

    for n in range(kept + 1, len(sizes) + 1):
        assert oldest_keeps(n) < below  # each dropped one would have been a shred
    if kept > 1 and below > 0:
        assert oldest_keeps(kept) >= below - 1e-9  # and the oldest one kept is not
