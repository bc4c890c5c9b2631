"""compress_messages by example: role-aware budgets, content parts, structure kept, errors, config, no mutation.

Most run on the tiny random-weight model (real transformers code paths, offline, about a second in all); a few use
small fakes where the test needs to know exactly what the compressor drops.
"""

from __future__ import annotations

import copy
import json
import re
import warnings

import pytest

import lingua_compress
from lingua_compress import (
    BudgetWarning,
    Compressor,
    ConfigError,
    InvalidPromptError,
    MessagesConfig,
    MessagesResult,
    MessageStats,
    compress_messages,
)
from lingua_compress.messages.slots import compress_slots, split_back
from lingua_compress.counting import make_counter
from fakes import FakeScorer

PROSE = ("Natalia sold clips to many of her friends in April, and then she sold half as many clips in May. "
         "Betty is saving money for a new wallet which costs a lot. Her parents give her some money for it. ")
SYSTEM = "You are a careful assistant. Answer the question with the number only, and explain nothing at all."
LAST = "Question: How many clips did Natalia sell altogether in April and May? Think step by step please."


@pytest.fixture(scope="module")
def tiny(scorer):
    return Compressor(scorer=scorer)


def chat() -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": PROSE * 2, "name": "ann"},
        {"role": "assistant", "content": PROSE * 2},
        {"role": "tool", "tool_call_id": "call_1", "content": PROSE * 2},
        {"role": "user", "content": LAST},
    ]


class DropAll:
    """A compressor that drops every word: shows what structure survives when all prose goes."""

    def __init__(self) -> None:
        self.scorer = FakeScorer()
        self.calls = 0

    def compress(self, prompt, ratio=None, *, target_tokens=None, keep=(), target_tokenizer=None):
        self.calls += 1
        return Compressor(scorer=self.scorer).compress(prompt, target_tokens=0)


# ---- role-aware budgets -------------------------------------------------------------------------------------------

def test_system_and_last_user_are_kept_and_older_turns_take_the_cut(tiny):
    messages = chat()
    res = compress_messages(tiny, messages, 0.5)
    assert res.messages[0]["content"] == SYSTEM and res.messages[-1]["content"] == LAST
    for i in (1, 2, 3):
        assert len(res.messages[i]["content"]) < len(messages[i]["content"])
    assert abs(res.compressed_tokens - res.target_tokens) <= max(0.05 * res.target_tokens, 5)
    assert res.kept_ratio == pytest.approx(res.compressed_tokens / res.original_tokens)
    assert [s.budget_ratio for s in res.per_message][0] == 1.0 and res.per_message[-1].budget_ratio == 1.0
    assert res.per_message[1].budget_ratio < 1.0
    counts = [len(tiny.scorer.tokenize(m["content"])[0]) for m in res.messages]
    assert [s.compressed_tokens for s in res.per_message] == counts
    assert res.compressed_tokens == sum(counts) and res.tokenizer.startswith("scorer:")


def test_role_ratios_compress_system_and_last_user_lightly_when_configured(tiny):
    cfg = MessagesConfig(system_ratio=0.6, last_user_ratio=0.7)
    res = compress_messages(tiny, chat(), 0.3, config=cfg)
    sys_stats, last_stats = res.per_message[0], res.per_message[-1]
    assert sys_stats.budget_ratio == pytest.approx(0.6) and last_stats.budget_ratio == pytest.approx(0.7)
    assert sys_stats.compressed_tokens < sys_stats.original_tokens
    assert res.per_message[2].budget_ratio < 0.6


def _alternating(turns: int) -> list[dict]:
    older = [{"role": "assistant" if i % 2 else "user", "content": PROSE * 2} for i in range(turns)]
    return [*older, {"role": "user", "content": LAST}]


def test_newer_turns_keep_more_of_their_prose_than_older_ones(tiny):
    messages = _alternating(5)
    res = compress_messages(tiny, messages, 0.4)
    asked = [s.budget_ratio for s in res.per_message[:-1]]
    assert asked == sorted(asked) and asked[0] < 0.5 * asked[-1]
    kept = [s.kept_ratio for s in res.per_message[:-1]]
    assert kept[-1] > kept[0]
    assert abs(res.compressed_tokens - res.target_tokens) <= max(0.05 * res.target_tokens, 5)
    flat = compress_messages(tiny, messages, 0.4, config=MessagesConfig(recency=1.0))
    even = [s.budget_ratio for s in flat.per_message[:-1]]
    assert max(even) - min(even) < 0.1  # only the carried misses differ
    assert abs(flat.compressed_tokens - flat.target_tokens) <= max(0.05 * flat.target_tokens, 5)


def test_a_short_older_user_turn_is_kept_whole(tiny):
    task = "Write a short poem about the sea, please."
    messages = [{"role": "user", "content": task}, {"role": "assistant", "content": PROSE * 3},
                {"role": "user", "content": LAST}]
    res = compress_messages(tiny, messages, 0.5)
    assert res.messages[0]["content"] == task and res.per_message[0].budget_ratio == 1.0
    off = compress_messages(tiny, messages, 0.5, config=MessagesConfig(keep_user_tokens=0))
    assert off.per_message[0].budget_ratio < 1.0 and off.messages[0]["content"] != task


def test_short_user_turns_kept_whole_cost_at_most_a_quarter_of_the_budget(tiny):
    ask = "Tell me more about that part."

    class Recording:
        scorer, asked = tiny.scorer, 0

        def compress(self, prompt, ratio=None, **kw):
            self.asked += ask in str(prompt.demonstrations)
            return tiny.compress(prompt, ratio, **kw)

    messages = [m for _ in range(30) for m in ({"role": "user", "content": ask},
                                               {"role": "assistant", "content": PROSE})]
    messages.append({"role": "user", "content": LAST})
    fake = Recording()
    res = compress_messages(fake, messages, 0.2, config=MessagesConfig(elide_below=0))  # else the oldest go whole
    whole = [i for i, m in enumerate(res.messages[:-1]) if m["role"] == "user" and m["content"] == ask]
    assert 0 < len(whole) and fake.asked > 0  # some kept by rule, the rest went to the compressor
    cost = sum(res.per_message[i].compressed_tokens for i in whole)
    assert cost <= 0.25 * res.target_tokens + len(fake.scorer.tokenize(ask)[0])  # at most one more kept as a share


CODE = "```python\n" + "".join(f"def step_{i}(x):\n    return x * {i} + {i}  # helper {i}\n" for i in range(12)) + "```\n"


def _with_old_code() -> list[dict]:
    return [{"role": "user", "content": PROSE * 2}, {"role": "assistant", "content": PROSE + "\n\n" + CODE},
            {"role": "user", "content": PROSE * 2}, {"role": "assistant", "content": PROSE * 2},
            {"role": "user", "content": LAST}]


def test_the_oldest_turns_cut_to_a_shred_are_elided_whole_and_the_budget_holds(tiny):
    messages = _with_old_code()
    res = compress_messages(tiny, messages, 0.3)
    elided = [s.index for s in res.per_message if s.elided]
    assert elided == list(range(len(elided))) and 1 in elided and 3 not in elided  # the oldest; never the newest
    for i in elided:
        s = res.per_message[i]
        assert res.messages[i]["content"] == "" and s.compressed_tokens == 0 and s.budget_ratio == 0.0
        assert s.code_blocks == 0 and s.original_tokens > 0
    assert abs(res.compressed_tokens - res.target_tokens) <= max(0.05 * res.target_tokens, 5)
    with pytest.warns(BudgetWarning):  # without elision the old code block alone costs most of the budget
        off = compress_messages(tiny, messages, 0.3, config=MessagesConfig(elide_below=0))
    assert not any(s.elided for s in off.per_message) and CODE in off.messages[1]["content"]
    assert res.per_message[3].compressed_tokens > off.per_message[3].compressed_tokens  # its room went to the newer


def test_budget_the_elisions_leave_unspent_brings_older_turns_back_whole(tiny):
    messages = _with_old_code()
    res = compress_messages(tiny, messages, 0.5)
    # The old code block cannot fit beside the newer turns, so its message goes; what that frees beyond their
    # needs brings the task-setting first turn back verbatim instead of leaving the budget unspent.
    assert [s.elided for s in res.per_message] == [False, True, False, False, False]
    assert res.messages[0] == messages[0] and res.per_message[0].budget_ratio == 1.0
    assert res.messages[2:] == messages[2:]
    assert 0.9 * res.target_tokens <= res.compressed_tokens <= res.target_tokens + 5


def test_unspent_budget_brings_an_older_turn_back_cut_when_a_newer_ones_code_cannot_fit(tiny):
    # bench_chat's jGTl8uD_5 in small: elision drops the oldest reply, then the big code block after it; what that
    # frees beyond the newest turns' needs cannot pay for the code, but can for the oldest reply's prose, cut.
    small = "```python\nx = 1\n```\n"
    messages = [{"role": "assistant", "content": PROSE * 8 + small}, {"role": "user", "content": "ok"},
                {"role": "assistant", "content": PROSE + "\n\n" + CODE * 3}, {"role": "user", "content": "and?"},
                {"role": "assistant", "content": PROSE * 2}, {"role": "user", "content": LAST}]
    before = compress_messages(tiny, messages, 0.3, config=MessagesConfig(elide_below=0.99))  # no room for cuts
    res = compress_messages(tiny, messages, 0.3)
    s = res.per_message
    assert s[2].elided and not s[0].elided and s[0].restored and 0.1 <= s[0].budget_ratio < 1.0
    assert res.messages[0]["content"] not in ("", messages[0]["content"]) and small in res.messages[0]["content"]
    assert res.messages[4] == messages[4] and not s[4].restored  # the newest reply was never elided
    assert before.per_message[0].elided and before.compressed_tokens < 0.8 * res.target_tokens
    assert 0.9 * res.target_tokens <= res.compressed_tokens <= res.target_tokens + 5


def test_an_elided_message_keeps_its_place_role_tool_calls_and_other_parts(tiny):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    messages = [{"role": "user", "content": [{"type": "text", "text": PROSE * 2}, image], "name": "ann"},
                {"role": "assistant", "content": PROSE + CODE, "tool_calls": call},
                {"role": "tool", "tool_call_id": "c1", "content": PROSE * 2},
                {"role": "user", "content": LAST}]
    res = compress_messages(tiny, messages, 0.2, config=MessagesConfig(recency=0.05))  # 0.3 brings 0 back cut
    assert [s.elided for s in res.per_message] == [True, True, False, False]
    assert res.messages[0] == {"role": "user", "content": [{"type": "text", "text": ""}, image], "name": "ann"}
    assert res.messages[1] == {"role": "assistant", "content": "", "tool_calls": call}
    assert res.per_message[0].parts_passed == 1


def test_a_message_without_text_is_never_called_elided(tiny):
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    messages = [{"role": "assistant", "content": None, "tool_calls": call},
                {"role": "tool", "tool_call_id": "c1", "content": PROSE * 2},
                {"role": "assistant", "content": PROSE},
                {"role": "user", "content": LAST}]
    res = compress_messages(tiny, messages, 0.3, config=MessagesConfig(recency=0.05))
    assert [s.elided for s in res.per_message] == [False, True, False, False]
    assert res.messages[0] == messages[0] and res.per_message[0].budget_ratio == 1.0


def test_spare_budget_lifts_the_pinned_messages_back_to_verbatim(tiny):
    cfg = MessagesConfig(system_ratio=0.5)
    res = compress_messages(tiny, chat(), 1.0, config=cfg)
    assert res.messages == chat() and res.compressed_tokens == res.original_tokens


def test_ratio_one_returns_the_messages_unchanged_without_compressing():
    fake = DropAll()
    res = compress_messages(fake, chat(), 1.0)
    assert res.messages == chat() and fake.calls == 0 and res.kept_ratio == 1.0


def test_target_tokens_and_the_method_on_compressor(tiny):
    res = tiny.compress_messages(chat(), target_tokens=120)
    assert isinstance(res, MessagesResult) and res.target_tokens == 120
    assert abs(res.compressed_tokens - 120) <= 8
    same = compress_messages(tiny, chat(), target_tokens=120)
    assert same.messages == res.messages  # deterministic, and the method is the function


def test_budget_that_the_kept_parts_exceed_warns_with_the_numbers(tiny):
    messages = [{"role": "system", "content": SYSTEM * 3}, {"role": "user", "content": "short " + LAST}]
    with pytest.warns(BudgetWarning, match=r"keep \d+ tokens against a budget of \d+"):
        res = compress_messages(tiny, messages, 0.2)
    assert res.messages == messages  # both pinned: nothing else to cut
    assert res.kept_ratio == 1.0


def test_counts_are_in_the_target_tokenizer_when_given(tiny):
    res = compress_messages(tiny, chat(), 0.5, target_tokenizer=str.split)
    assert res.original_tokens == sum(len(m["content"].split()) for m in chat())
    assert res.compressed_tokens == sum(len(m["content"].split()) for m in res.messages)
    assert abs(res.compressed_tokens - res.target_tokens) <= max(0.05 * res.target_tokens, 5)


# ---- content parts and structure ---------------------------------------------------------------------------------

def test_text_parts_are_compressed_and_other_parts_pass_through(tiny):
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
    parts = [{"type": "text", "text": PROSE * 2, "cache_control": {"type": "ephemeral"}}, image,
             {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}]
    messages = [{"role": "user", "content": parts}, {"role": "assistant", "content": None, "tool_calls": []},
                {"role": "user", "content": LAST}]
    res = compress_messages(tiny, messages, 0.5)
    out = res.messages[0]["content"]
    assert out[1:] == parts[1:] and list(out[0]) == list(parts[0]) and out[0]["cache_control"] == {"type": "ephemeral"}
    assert len(out[0]["text"]) < len(parts[0]["text"])
    assert res.per_message[0].parts_passed == 2 and res.messages[1] == messages[1]


MARKDOWN = """## Installing the package on a laptop

Some long introductory prose that tells the reader what the package does and why it is useful for everyone.

- the first item of the list says something rather long about clips and friends
- the second item links to [the guide](https://example.com/guide?a=1) for all the many details

| name | value |
|------|-------|
| clips | 48 |

```python
def total(april, may):
    return april + may  # never cut a word here
```

    indented = "code block"

Closing prose that can be dropped entirely because nobody reads the end of long messages anyway.
"""


def test_markdown_structure_survives_even_when_every_word_goes():
    fake = DropAll()
    messages = [{"role": "tool", "content": MARKDOWN}, {"role": "user", "content": "Which command?"}]
    with pytest.warns(BudgetWarning):  # code, table and link alone cost more than 10 %
        res = compress_messages(fake, messages, 0.1)
    out = res.messages[0]["content"]
    assert "| name | value |\n|------|-------|\n| clips | 48 |\n" in out
    assert '```python\ndef total(april, may):\n    return april + may  # never cut a word here\n```\n' in out
    assert '    indented = "code block"\n' in out
    assert "[the guide](https://example.com/guide?a=1)" in out
    # The emptied first item left no bare marker; the second keeps its marker for the link that stays.
    assert [line for line in out.splitlines() if line.startswith("-")] == [
        "-  [the guide](https://example.com/guide?a=1) "]
    stats = res.per_message[0]
    assert (stats.code_blocks, stats.tables, stats.json_documents) == (2, 1, 0)


def test_table_cells_lose_prose_and_the_table_keeps_its_shape():
    table = ("| Strategy | Description |\n| --- | --- |\n"
             "| Social media | Have an active presence on social platforms to share photos of dishes |\n"
             "| Local SEO | See `seo.md` for the many search engine settings of the website |\n| Price | 48 |\n")
    messages = [{"role": "assistant", "content": table}, {"role": "user", "content": "Which one first?"}]
    with pytest.warns(BudgetWarning):
        res = compress_messages(DropAll(), messages, 0.1)
    out = res.messages[0]["content"]
    assert out == ("| Strategy | Description |\n| --- | --- |\n| Social media |  |\n"
                   "| Local SEO | See `seo.md` for the many search engine settings of the website |\n| Price | 48 |\n")
    assert res.per_message[0].tables == 1


def test_markdown_markers_stay_at_line_starts(tiny):
    messages = [{"role": "tool", "content": MARKDOWN}, {"role": "user", "content": "Which command?"}]
    out = compress_messages(tiny, messages, 0.6).messages[0]["content"]
    for line in out.splitlines():
        if line.startswith("-"):
            assert line.startswith("- ")
    assert out.count("```") == 2


DOC = {
    "id": "tool-7", "count": 48, "ratio": 0.5, "ok": True, "missing": None, "tags": ["a", "b"],
    "summary": "Natalia sold clips to many of her friends in April and then she sold half as many clips in May.",
    "nested": [{"note": "Betty is saving money for a new wallet which costs a lot and her parents help."}, 3],
}


@pytest.mark.filterwarnings("ignore::lingua_compress.BudgetWarning")  # JSON structure alone costs more
@pytest.mark.parametrize("indent", [None, 2])
def test_json_content_keeps_keys_and_values_and_shortens_long_strings(tiny, indent):
    text = json.dumps(DOC, indent=indent)
    messages = [{"role": "tool", "content": text}, {"role": "user", "content": "Summarise."}]
    res = compress_messages(tiny, messages, 0.4)
    out = json.loads(res.messages[0]["content"])
    assert list(out) == list(DOC)
    assert {k: v for k, v in out.items() if k not in ("summary", "nested")} == {
        k: v for k, v in DOC.items() if k not in ("summary", "nested")}
    assert len(out["summary"]) < len(DOC["summary"]) and out["nested"][1] == 3
    assert res.per_message[0].json_documents == 1
    if indent:  # the document's own layout is kept: only string literals were replaced
        assert res.messages[0]["content"].startswith('{\n  "id": "tool-7",\n  "count": 48,')


@pytest.mark.filterwarnings("ignore::lingua_compress.BudgetWarning")  # JSON structure alone costs more
def test_fenced_json_is_compressed_inside_strings_only(tiny):
    text = "Here is the record the tool returned to us:\n\n```json\n" + json.dumps(DOC, indent=2) + "\n```\n"
    messages = [{"role": "assistant", "content": text}, {"role": "user", "content": "And?"}]
    out = compress_messages(tiny, messages, 0.3).messages[0]["content"]
    body = re.search(r"```json\n(.*)\n```", out, re.DOTALL).group(1)
    assert json.loads(body)["count"] == 48 and list(json.loads(body)) == list(DOC)


@pytest.mark.filterwarnings("ignore::lingua_compress.BudgetWarning")  # JSON structure alone costs more
def test_json_is_kept_verbatim_when_configured_and_non_ascii_escapes_stay_ascii(tiny):
    doc = {"text": "Caf\u00e9 owners sold many cups of coffee to their friends in April and also in May."}
    messages = [{"role": "tool", "content": json.dumps(doc)}, {"role": "user", "content": "ok"}]
    kept = compress_messages(tiny, messages, 0.3, config=MessagesConfig(compress_json=False))
    assert kept.messages == messages and kept.per_message[0].json_documents == 1
    cut = compress_messages(tiny, messages, 0.3).messages[0]["content"]
    assert cut.isascii() and json.loads(cut)["text"] != doc["text"]


@pytest.mark.parametrize("text, documents", [
    ('{"a": "' + "many words of prose here " * 4 + '"}\n[1, "' + "more words of prose here " * 4 + '"]\n', 2),
    ('{"note": "' + "a truncated tool output with many words " * 3 + '", "rest": "cut he', 1),
    ('\ufeff{"note": "' + "a document that starts with a byte order mark " * 3 + '"}', 1),
])
def test_json_lines_broken_json_and_byte_order_marks_are_never_mangled(text, documents):
    messages = [{"role": "tool", "content": text}, {"role": "user", "content": "ok"}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        res = compress_messages(DropAll(), messages, 0.3)
    out = res.messages[0]["content"]
    assert res.per_message[0].json_documents == documents
    if "truncated" in text:
        assert out == text  # does not parse: kept whole, never cut as prose
    else:
        assert len(out) < len(text)
        for line in out.splitlines():
            json.loads(line.lstrip("\ufeff"))


def test_cjk_prose_is_compressed_although_it_has_no_spaces(tiny):
    text = "東京は日本の首都です。多くの人が住んでいます。電車はとても便利で、毎日たくさんの人が使います。" * 2
    messages = [{"role": "assistant", "content": text}, {"role": "user", "content": "ok"}]
    out = compress_messages(tiny, messages, 0.5).messages[0]["content"]
    assert 0 < len(out) < len(text)


def test_a_message_is_compressed_in_one_call_and_split_back_by_kept_spans(tiny):
    slots = [PROSE, "A second paragraph about wallets and money and parents who give money.", PROSE[:80].strip()]
    counter = make_counter(None, tiny.scorer)
    outputs, used = compress_slots(tiny, slots, 40, (), None, counter)
    assert len(outputs) == 3 and 0 < used <= 60
    res = tiny.compress(lingua_compress.Prompt(demonstrations=slots), target_tokens=40)
    assert split_back(slots, res) == outputs  # the one-call path, not the per-slot fallback


def test_split_back_refuses_a_result_that_does_not_line_up(tiny):
    res = tiny.compress(lingua_compress.Prompt(demonstrations=["one two three four", "five six seven"]), 0.5)
    assert split_back(["one two three four", "something else"], res) is None


# ---- errors and config --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("messages, match", [
    ("hello", r"messages must be a list of dicts.*got str"),
    ({"role": "user", "content": "x"}, r"messages must be a list.*got dict"),
    (["hi"], r"messages\[0\] must be a dict"),
    ([{"role": "user", "content": "x"}, {"content": "x"}], r"messages\[1\] has no 'role' key"),
    ([{"role": 3, "content": "x"}], r"messages\[0\] has role=3"),
    ([{"role": "user", "content": 5}], r"messages\[0\]\['content'\] must be a str, None, or a list of content parts"),
    ([{"role": "user", "content": ["x"]}], r"messages\[0\]\['content'\]\[0\] must be a content part"),
    ([{"role": "user", "content": [{"text": "x"}]}], r"messages\[0\]\['content'\]\[0\] must be a content part"),
    ([{"role": "user", "content": [{"type": "text", "text": None}]}], r"\[0\] is a text part whose 'text' must be"),
    ([{"role": "user", "content": "bad \ud800 text"}], r"messages\[0\]\['content'\] contains a lone surrogate"),
])
def test_bad_messages_name_the_index_and_what_is_accepted(tiny, messages, match):
    with pytest.raises(InvalidPromptError, match=match):
        compress_messages(tiny, messages, 0.5)
    with pytest.raises(TypeError):  # InvalidPromptError is a TypeError too
        compress_messages(tiny, messages, 0.5)


@pytest.mark.parametrize("kwargs, match", [
    ({"system_ratio": 0}, r"system_ratio=0 is not accepted: give a number in \(0, 1\]"),
    ({"last_user_ratio": 1.5}, r"last_user_ratio=1.5"),
    ({"last_user_ratio": True}, r"last_user_ratio=True"),
    ({"min_words": 0}, r"min_words=0 is not accepted: give an int >= 1"),
    ({"recency": 0.0}, r"recency=0.0 is not accepted: give a number in \(0, 1\]"),
    ({"recency": float("nan")}, r"recency=nan"),
    ({"elide_below": -0.1}, r"elide_below=-0.1 is not accepted: give a number in \[0, 1\]"),
    ({"elide_below": "0.1"}, r"elide_below='0.1'"),
    ({"keep_user_tokens": -1}, r"keep_user_tokens=-1 is not accepted: give an int >= 0"),
    ({"json_min_words": 2.5}, r"json_min_words=2.5"),
    ({"keep_code": "yes"}, r"keep_code='yes' is not accepted: give True or False"),
    ({"compress_json": 1}, r"compress_json=1"),
    ({"system_roles": "system"}, r"system_roles='system' is not accepted: give a tuple of role names"),
    ({"system_roles": ("system", "")}, r"system_roles entry '' is not accepted"),
    ({"keep": (3,)}, r"keep entries must be non-empty str or re.Pattern"),
])
def test_config_validation_names_the_bad_value(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MessagesConfig(**kwargs)


def test_config_normalises_numbers_and_sequences():
    import numpy as np

    cfg = MessagesConfig(system_ratio=np.float32(0.5), min_words=np.int64(3), system_roles=["system"], keep="Q\\[")
    assert type(cfg.system_ratio) is float and type(cfg.min_words) is int
    assert cfg.system_roles == ("system",) and cfg.keep == ("Q\\[",)
    with pytest.raises(Exception):
        cfg.system_ratio = 0.7  # frozen


@pytest.mark.parametrize("call, match", [
    (lambda c: compress_messages(c, chat()), r"give exactly one of ratio or target_tokens"),
    (lambda c: compress_messages(c, chat(), 0.5, target_tokens=10), r"give exactly one"),
    (lambda c: compress_messages(c, chat(), 0), r"ratio=0 is not accepted"),
    (lambda c: compress_messages(c, chat(), target_tokens=-1), r"target_tokens=-1 is not accepted"),
    (lambda c: compress_messages(c, chat(), 0.5, config={"system_ratio": 1}), r"config must be a MessagesConfig"),
    (lambda c: compress_messages(object(), chat(), 0.5), r"compressor must be a lingua_compress.Compressor"),
])
def test_bad_arguments_raise_config_errors(tiny, call, match):
    with pytest.raises(ConfigError, match=match):
        call(tiny)


# ---- the caller's list --------------------------------------------------------------------------------------------

def test_input_is_not_mutated_and_the_result_shares_nothing_with_it(tiny):
    messages = chat() + [{"role": "user", "content": [{"type": "text", "text": PROSE}], "extra": {"k": [1]}}]
    messages[3]["tool_calls"] = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    before = copy.deepcopy(messages)
    res = compress_messages(tiny, tuple(messages), 0.4)
    assert messages == before and isinstance(res.messages, list)
    res.messages[5]["extra"]["k"].append(2)
    res.messages[5]["content"][0]["text"] = "changed"
    assert messages == before
    assert [list(m) for m in res.messages] == [list(m) for m in messages]


def test_empty_list_and_messages_without_text():
    res = compress_messages(DropAll(), [], 0.5)
    assert res.messages == [] and res.per_message == () and res.kept_ratio == 1.0
    messages = [{"role": "assistant", "tool_calls": [{"id": "x"}]}, {"role": "user", "content": None}]
    res = compress_messages(DropAll(), messages, 0.5)
    assert res.messages == messages and "content" not in res.messages[0]


def test_stats_and_result_are_frozen_typed_values(tiny):
    res = compress_messages(tiny, chat(), 0.5)
    assert all(isinstance(s, MessageStats) for s in res.per_message)
    assert res.per_message[1].kept_ratio < 1.0 and res.compression > 1.0
    data = res.to_dict()
    assert data["kept_ratio"] == res.kept_ratio and data["per_message"][0]["role"] == "system"
    json.dumps(data)
    with pytest.raises(Exception):
        res.original_tokens = 0


def test_public_names():
    for name in ("compress_messages", "MessagesConfig", "MessagesResult", "MessageStats"):
        assert name in lingua_compress.__all__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MessagesConfig()
