import numpy as np
import pytest

from lingua_compress import InvalidPromptError, Prompt
from lingua_compress.render import render
from lingua_compress.segment import build_parts, compile_keep, segment


def words(seg):
    return [seg.text[s:e] for s, e in zip(seg.unit_start, seg.unit_end)]


def test_units_are_whole_words_numbers_urls_and_cjk():
    seg = segment("See https://x.org/a?b=1, it's 1,000.50 well-known 東京 user_id.")
    assert words(seg) == ["See", "https://x.org/a?b=1", ",", "it's", "1,000.50", "well-known", "東", "京", "user_id", "."]
    prot = dict(zip(words(seg), seg.protected))
    assert prot["https://x.org/a?b=1"] and prot["1,000.50"] and prot["user_id"]
    assert not prot["well-known"] and not prot["See"]


def test_plain_string_blocks_become_context_parts():
    text, parts = build_parts("one\n\n  \ntwo\n\nthree")
    assert [text[p.start : p.end] for p in parts] == ["one", "two", "three"]
    assert {p.kind for p in parts} == {"context"}


def test_structured_prompt_parts_and_separators():
    text, parts = build_parts(Prompt(instruction="Do it.", demonstrations=["a", "", "b"], question="q?"))
    assert text == "Do it.\n\na\n\nb\n\nq?"
    assert [p.kind for p in parts] == ["instruction", "context", "context", "question"]


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["a"]])
def test_non_string_prompt_is_a_typed_error(bad):
    with pytest.raises(InvalidPromptError, match=type(bad).__name__):
        segment(bad)


def test_prompt_fields_are_validated():
    with pytest.raises(InvalidPromptError, match=r"demonstrations\[1\]"):
        Prompt(demonstrations=["ok", 5])
    with pytest.raises(InvalidPromptError, match="single str"):
        Prompt(demonstrations="abc")


def test_keep_strings_match_literally_and_as_regex():
    pats = compile_keep(["Q[", r"\$\d+"])
    seg = segment("Q[1]: pay $40 now", pats, protect_defaults=False)
    kept = {w for w, p in zip(words(seg), seg.protected) if p}
    assert kept == {"Q", "[", "$40"}


def test_render_keeps_verbatim_gaps_and_line_structure():
    text = "alpha  beta\ngamma delta\n\nepsilon"
    seg = segment(text, protect_defaults=False)
    keep = np.array([True, True, False, True, True])
    out, spans = render(text, seg.unit_start, seg.unit_end, keep)
    assert out == "alpha  beta\ndelta\n\nepsilon"
    assert spans == ((0, 11), (18, 32))  # delta..epsilon are neighbours: one span, gap included


def test_render_never_glues_words_across_a_dropped_hyphen_or_cjk_gap():
    seg = segment("foo - bar", protect_defaults=False)
    out, _ = render("foo - bar", seg.unit_start, seg.unit_end, np.array([True, False, True]))
    assert out == "foo bar"
    seg = segment("東京都", protect_defaults=False)
    out, _ = render("東京都", seg.unit_start, seg.unit_end, np.array([True, False, True]))
    assert out == "東都"


def protected_words(seg):
    return [w for w, p in zip(words(seg), seg.protected) if p]


def test_operators_between_numbers_are_protected_on_one_line_only():
    seg = segment("He pays 6 * 20 = 120, so x = 26 - a lot.\n- item")
    assert protected_words(seg) == ["6", "*", "20", "=", "120", "=", "26"]  # "x" is no number; "- a" is no sum
    seg = segment("Buicks:4(3+2x)=12+8x")
    assert all(seg.protected)


def test_line_openings_shared_by_most_demonstrations_are_protected():
    demos = [f"Question: {q}?\nLet's think step by step\nShe has {n} of them.\nThe answer is {n}"
             for q, n in (("how many cats", 3), ("count the dogs", 4), ("what about birds", 5), ("fish", 6))]
    seg = segment(Prompt(demonstrations=demos, question="Question: and owls?"))
    prot = protected_words(seg)
    assert prot.count("Question") == 4 and prot.count("answer") == 4 and prot.count("Let's") == 4
    assert prot.count("think") == 4 and "count" not in prot and "cats" not in prot
    assert "She" in prot and "has" in prot  # "She has" opens a line in every demonstration
    two = segment(Prompt(demonstrations=demos[:2]))  # too few demonstrations to call anything a template
    assert "Question" not in protected_words(two)
    off = segment(Prompt(demonstrations=demos), protect_defaults=False)
    assert not off.protected.any()


def test_an_answer_phrase_that_ends_most_demonstrations_mid_line_is_protected_with_its_letter():
    # BIG-Bench Hard's CoT ends each exemplar "... So the answer is (B)." on the reasoning's last line.
    demos = [f"Q: {q}?\nA: Let's think step by step.\n{r} So the answer is ({x})."
             for q, r, x in (("Which is red", "Red comes first.", "A"), ("Who is tall", "Tom, by far.", "B"),
                             ("Pick the oldest", "It is Ann.", "C"))]
    prot = protected_words(segment(Prompt(demonstrations=demos)))
    text = " ".join(prot)
    assert all(f"So the answer is ( {x} )." in text for x in "ABC")
    assert text.count("think step by step .") == 3  # "A: Let's think step by step." is 8 units, all format
    assert "first" not in prot and "Tom" not in prot and "Ann" not in prot and prot.count("is") == 3
    once = [demos[0], "Q: Why?\nA: Because it is red.", "Q: When?\nA: Now, as it is late."]
    assert "answer" not in protected_words(segment(Prompt(demonstrations=once)))  # one demonstration is no format
