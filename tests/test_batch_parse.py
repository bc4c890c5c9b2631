"""Parsing batched completions: by index, never by position. Table-driven cases and a hypothesis property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lingua_compress.batch import GSM8K_PATTERN, BatchFormat, Sample, build_batch, build_prefix, parse_completion
from lingua_compress.batch.types import STATUSES

FMT = BatchFormat(answer_pattern=GSM8K_PATTERN)
DEMOS = [Sample(f"d{i}", f"Demo question {i} about apples?", f"Count them, {i} apples. The answer is {i}.")
         for i in range(1, 7)]
QS = [Sample(f"q{i}", f"Question {i}: how many {w} are there?") for i, w in
      enumerate(["ducks", "cows", "pigs", "hens", "cats", "dogs", "owls", "bees", "ants", "rats", "elks"], 1)]


def _prefix(fmt=FMT, block=3):
    return build_prefix("Solve.", DEMOS, fmt, block_size=block, count_tokens=len)


def _parse(completion, n=3, fmt=FMT, finish=None, chat=False, block=3):
    prefix = _prefix(fmt, block)
    batch = build_batch(prefix, QS[:n], chat=chat)
    return parse_completion(completion, batch, QS[:n], fmt, finish_reason=finish, prefix=prefix)


def _statuses(parsed):
    return {r.id: (r.status, r.final) for r in parsed.items}


OK3 = {"q1": ("ok", "5"), "q2": ("ok", "7"), "q3": ("ok", "9")}

# (name, completion after the prefilled "A[1]:", finish_reason, expected {id: (status, final)})
CASES = [
    ("well formed", " The answer is 5.\nA[2]: The answer is 7.\nA[3]: The answer is 9.", None, OK3),
    ("reordered", " The answer is 5.\nA[3]: The answer is 9.\nA[2]: The answer is 7.", None, OK3),
    ("missing middle", " The answer is 5.\nA[3]: The answer is 9.", None,
     {"q1": ("ok", "5"), "q2": ("missing", None), "q3": ("ok", "9")}),
    ("middle unparseable", " The answer is 5.\nA[2]: I am not sure\nA[3]: The answer is 9.", None,
     {"q1": ("ok", "5"), "q2": ("unparseable", None), "q3": ("ok", "9")}),
    ("benign duplicate", " The answer is 5.\nA[2]: The answer is 7.\nA[2]: The answer is 7.\nA[3]: The answer is 9.",
     None, OK3),
    ("conflicting duplicate", " The answer is 5.\nA[2]: The answer is 7.\nA[2]: The answer is 8.\nA[3]: The answer is 9.",
     None, {"q1": ("ok", "5"), "q2": ("conflict", None), "q3": ("ok", "9")}),
    ("hallucinated next batch", " The answer is 5.\nA[2]: The answer is 7.\nA[3]: The answer is 9.\nQ[1]: More?\n"
     "Q[2]: x\nA[1]: The answer is 1.\nA[2]: The answer is 2.", None, OK3),
    ("restart without questions", " The answer is 5.\nA[2]: The answer is 7.\nA[1]: The answer is 1.\n"
     "A[3]: The answer is 3.", None, {"q1": ("ok", "5"), "q2": ("ok", "7"), "q3": ("missing", None)}),
    ("chain of thought over lines", " First 2 ducks.\nThen 3 more.\nThe answer is 5.\nA[2]: 3+4 = 7.\n"
     "So in total\nThe answer is 7.\nA[3]: The answer is 9.", None, OK3),
    ("markdown", " The answer is 5.\n**A[2]:** The answer is 7.\n- **A[3]**: The answer is 9.**", None, OK3),
    ("answer n variants", " The answer is 5.\nAnswer 2: The answer is 7.\nAnswer[3]: The answer is 9.", None, OK3),
    ("index out of range", " The answer is 5.\nA[2]: The answer is 7.\nA[3]: The answer is 9.\nA[4]: The answer is 4.",
     None, OK3),
    ("truncated last", " The answer is 5.\nA[2]: The answer is 7.\nA[3]: First we count", "length",
     {"q1": ("ok", "5"), "q2": ("ok", "7"), "q3": ("truncated", None)}),
    ("truncated before last", " The answer is 5.\nA[2]: The answer", "length",
     {"q1": ("ok", "5"), "q2": ("truncated", None), "q3": ("missing", None)}),
    ("empty completion", "", None, {"q1": ("unparseable", None), "q2": ("missing", None), "q3": ("missing", None)}),
    ("prose with no markers", "\nSure! Here you go.", None,
     {"q1": ("unparseable", None), "q2": ("missing", None), "q3": ("missing", None)}),
    ("a 3-year-old is no marker", " The answer is 5.\nA 3-year-old has 7.\nThe answer is 7.\nA[3]: The answer is 9.",
     None, {"q1": ("ok", "7"), "q2": ("missing", None), "q3": ("ok", "9")}),
    ("demo block copied", " Count them, 1 apples. The answer is 1.\nA[2]: Count them, 2 apples. The answer is 2.\n"
     "A[3]: Count them, 3 apples. The answer is 3.", None,
     {"q1": ("demo_copy", "1"), "q2": ("demo_copy", "2"), "q3": ("demo_copy", "3")}),
]


@pytest.mark.parametrize("name,completion,finish,expected", CASES, ids=[c[0] for c in CASES])
def test_parse_cases(name, completion, finish, expected):
    assert _statuses(_parse(completion, finish=finish)) == expected


def test_hallucinated_batch_goes_to_extra():
    parsed = _parse(" The answer is 5.\nA[2]: The answer is 7.\nA[3]: The answer is 9.\nQ[1]: More?")
    assert any("More?" in e for e in parsed.extra)


def test_indices_of_two_digits():
    lines = [f"A[{i}]: The answer is {i * 10}." for i in range(1, 12)]
    lines[0] = lines[0].removeprefix("A[1]:")
    lines[9], lines[10] = lines[10], lines[9]
    parsed = _parse("\n".join(lines), n=11)
    assert {r.id: r.final for r in parsed.items} == {f"q{i}": str(i * 10) for i in range(1, 12)}


def test_chat_has_no_prefill_and_prose_first():
    text = "Here are the answers:\nA[2]: The answer is 7.\nA[1]: The answer is 5.\nA[3]: The answer is 9."
    parsed = _parse(text, chat=True)
    assert _statuses(parsed) == OK3
    assert parsed.extra == ("Here are the answers:",)


def test_no_pattern_takes_whole_answer():
    fmt = BatchFormat()
    parsed = _parse(" positive\nA[3]: negative\nA[2]: neutral", fmt=fmt)
    assert [(r.id, r.final) for r in parsed.items] == [("q1", "positive"), ("q2", "neutral"), ("q3", "negative")]


# --- JSON style -----------------------------------------------------------------------------------------------

JFMT = BatchFormat(style="json", answer_pattern=GSM8K_PATTERN)
JSON_CASES = [
    ("plain", '"1": "The answer is 5.", "2": "The answer is 7.", "3": "The answer is 9."}', None, OK3),
    ("int-like keys and reorder", '"3": "The answer is 9.", "1": "The answer is 5.", "2": "The answer is 7."}',
     None, OK3),
    ("missing key", '"1": "The answer is 5.", "3": "The answer is 9."}', None,
     {"q1": ("ok", "5"), "q2": ("missing", None), "q3": ("ok", "9")}),
    ("cut off", '"1": "The answer is 5.", "2": "The answer is 7.", "3": "The ans', "length",
     {"q1": ("ok", "5"), "q2": ("ok", "7"), "q3": ("truncated", None)}),
]


@pytest.mark.parametrize("name,completion,finish,expected", JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_parse_json_cases(name, completion, finish, expected):
    assert _statuses(_parse(completion, fmt=JFMT, finish=finish)) == expected


def test_json_in_code_fence_keyed_by_id_in_chat():
    text = 'Sure.\n```json\n{"q2": "The answer is 7.", "q1": "The answer is 5.", "3": "The answer is 9."}\n```'
    assert _statuses(_parse(text, fmt=JFMT, chat=True)) == OK3


# --- Auto-Demo style ------------------------------------------------------------------------------------------

AFMT = BatchFormat(style="auto_demo", answer_pattern=GSM8K_PATTERN)


def _echo(i):
    return f"Question {i}: how many {['ducks', 'cows', 'pigs'][i - 1]} are there?"


def test_auto_demo_echo_ok_and_misaligned():
    text = (f" {_echo(1)}\nA[1]: The answer is 5.\nQ[2]: {_echo(3)}\nA[2]: The answer is 9.\n"
            f"Q[3]: {_echo(3)}\nA[3]: The answer is 9.")
    got = _statuses(_parse(text, fmt=AFMT))
    assert got == {"q1": ("ok", "5"), "q2": ("misaligned", "9"), "q3": ("ok", "9")}


def test_auto_demo_restart_is_cut_and_echo_only_is_missing():
    text = (f" {_echo(1)}\nA[1]: The answer is 5.\nQ[2]: {_echo(2)}\nQ[1]: {_echo(1)}\nA[1]: The answer is 6.\n"
            "A[2]: The answer is 7.")
    parsed = _parse(text, fmt=AFMT)
    assert _statuses(parsed)["q1"] == ("ok", "5")
    assert _statuses(parsed)["q2"] == ("missing", None)
    assert parsed.items[1].echo is not None


# --- property: no answer is ever attributed to the wrong id ----------------------------------------------------

NOISE = st.sampled_from(["", "Let me think.", "```", "---", "Note: numbers below.", "# Answers", "* * *",
                         "Q: what?", "answer follows", "(continued)"])


@st.composite
def corrupted(draw):
    n = draw(st.integers(1, 11))
    gold = {slot: draw(st.integers(100, 999)) * 100 + slot for slot in range(1, n + 1)}  # unique: slot < 100
    entries = [slot for slot in range(1, n + 1) if not draw(st.booleans()) or draw(st.integers(0, 4))]
    entries += draw(st.lists(st.sampled_from(range(1, n + 1)), max_size=3))  # duplicates (same text)
    entries = draw(st.permutations(entries))
    lines = []
    for slot in entries:
        md = draw(st.sampled_from(["{m}", "**{m}**", "- {m}", "{m}**", "### {m}"]))
        marker = md.format(m=draw(st.sampled_from([f"A[{slot}]:", f"Answer {slot}:", f"A({slot}):", f"A[ {slot} ]:"])))
        lines.append(f"{marker} Thinking {draw(NOISE)}\nThe answer is {gold[slot]}.")
        lines += [draw(NOISE) for _ in range(draw(st.integers(0, 2)))]
    return n, gold, "\n".join(lines)


@settings(max_examples=300, deadline=None)
@given(corrupted(), st.sampled_from([None, "stop", "length"]))
def test_property_no_misattribution(case, finish):
    n, gold, text = case
    prefix = _prefix()
    batch = build_batch(prefix, QS[:n], chat=True)
    parsed = parse_completion(text, batch, QS[:n], FMT, finish_reason=finish, prefix=prefix)
    assert [r.id for r in parsed.items] == [s.id for s in QS[:n]]  # every id accounted for, none lost
    for r in parsed.items:
        assert r.status in STATUSES
        if r.ok:
            assert r.final == str(gold[r.slot]), (r, text)
        # Whatever the status, no text attributed to this id holds another slot's gold answer.
        others = {str(v) for k, v in gold.items() if k != r.slot}
        assert not any(o in (r.answer or "") for o in others), (r, text)


def test_multi_field_samples_echoed_fields_do_not_leak_into_answers():
    fmt = BatchFormat(answer_pattern=r"(True|False)")
    nli = [Sample(f"n{i}", {"premise": f"Premise text {i}.", "hypothesis": f"Hypothesis {i}."}) for i in (1, 2)]
    demos = [Sample("d", {"premise": "It rains.", "hypothesis": "It is wet."}, "True")]
    prefix = build_prefix("Entailment?", demos, fmt, block_size=2, count_tokens=len)
    batch = build_batch(prefix, nli, chat=True)
    assert "Premise[1]: Premise text 1." in batch.prompt[-1]["content"]
    text = "A[1]: True\nPremise[2]: Premise text 2.\nHypothesis[2]: Hypothesis 2.\nA[2]: False"
    parsed = parse_completion(text, batch, nli, fmt)
    assert [(r.status, r.answer) for r in parsed.items] == [("ok", "True"), ("ok", "False")]


def test_public_names_exist():
    import lingua_compress.batch as batch
    import lingua_compress.llm as llm

    for module in (batch, llm):
        assert all(hasattr(module, name) for name in module.__all__)
