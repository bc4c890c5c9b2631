"""Segmentation on text the ASCII-minded splitter got wrong: combining marks and other scripts, CRLF and CR line
endings, invalid Unicode, e-mail addresses."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lingua_compress import CompressionConfig, Compressor, InvalidPromptError, Prompt
from lingua_compress.render import render
from lingua_compress.segment import build_parts, segment
from fakes import FakeScorer

pytestmark = pytest.mark.filterwarnings("ignore::lingua_compress.BudgetWarning")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
COMPRESSOR = Compressor(scorer=FakeScorer())
MARK = regex.compile(r"[\p{M}\p{GCB=Extend}\p{GCB=SpacingMark}\p{GCB=ZWJ}]")


def words(seg):
    return [seg.text[s:e] for s, e in zip(seg.unit_start, seg.unit_end)]


def nfd(s: str) -> str:
    return unicodedata.normalize("NFD", s)


def grapheme_bounds(text: str) -> set[int]:
    return {0, *(m.end() for m in regex.finditer(r"\X", text))}


# ---------------------------------------------------------------------------------------------- combining marks

@pytest.mark.parametrize("text, expected", [
    (nfd("C'était très agréable"), [nfd("C'était"), nfd("très"), nfd("agréable")]),
    ("वह अच्छा था", ["वह", "अच्छा", "था"]),
    ("ภาษาไทย สวัสดี", ["ภาษาไทย", "สวัสดี"]),
    ("مَرْحَبًا بِكُمْ", ["مَرْحَبًا", "بِكُمْ"]),
    ("می\u200cخواهم بروم", ["می\u200cخواهم", "بروم"]),  # a zero-width non-joiner inside a Persian word
    ("שָׁלוֹם עוֹלָם", ["שָׁלוֹם", "עוֹלָם"]),
    ("👨\u200d👩\u200d👧 family 👍🏽 🇫🇷", ["👨\u200d👩\u200d👧", "family", "👍🏽", "🇫🇷"]),
    ("東\u3099京", ["東\u3099", "京"]),  # a CJK character keeps its mark and is still its own unit
])
def test_a_word_keeps_its_combining_marks(text, expected):
    assert words(segment(text)) == expected


def test_orphan_marks_belong_to_no_unit():
    # Marks with no base (text start, after a line break or a space) cannot be half of any word: they are left
    # in the gaps, like whitespace, and never open or close an output.
    seg = segment("\u0301\u0308abc def\n\u0301ghi")
    assert words(seg) == ["abc", "def", "ghi"]
    out = COMPRESSOR.compress("\u0301abc def ghi jkl", 0.5).text
    assert not MARK.match(out) and not MARK.match(out[-1:])


def test_dropped_words_leave_no_marks_behind():
    text = nfd("C'était très agréable, vraiment très agréable et tout à fait charmant à voir. ") * 6
    for ratio in (0.2, 0.4, 0.6):
        out = COMPRESSOR.compress(text, ratio).text
        tokens = set(text.split()) | {w.rstrip(",.") for w in text.split()}
        assert all(w in tokens or w.rstrip(",.") in tokens for w in out.split()), out


# Atoms are whole words of one script; the generated text separates them with spaces, so the units must be
# exactly the atoms, and an output word must be one of them.
LATIN = st.text("abcdeéèêàçñöüï", min_size=1, max_size=8).flatmap(
    lambda w: st.sampled_from([unicodedata.normalize("NFC", w), nfd(w)]))
DEVANAGARI = st.lists(st.tuples(st.sampled_from("कखगचजटतदनपमयरलवसह"),
                                st.sampled_from(["", "\u094dष", "\u094dर"]),
                                st.sampled_from(["", "ा", "ि", "ी", "ु", "े", "ो", "\u094d"]),
                                st.sampled_from(["", "ं", "ँ"])), min_size=1, max_size=4
                      ).map(lambda xs: "".join("".join(x) for x in xs))
THAI = st.lists(st.tuples(st.sampled_from(["", "เ", "แ", "โ"]), st.sampled_from("กขคงจดตนบปมยรลวสห"),
                          st.sampled_from(["", "\u0e34", "\u0e35", "\u0e31", "\u0e38", "\u0e33", "า"]),
                          st.sampled_from(["", "\u0e48", "\u0e49"])), min_size=1, max_size=4
                ).map(lambda xs: "".join("".join(x) for x in xs))
ARABIC = st.lists(st.tuples(st.sampled_from("بتثجحخدرسشصلمنهوي"), st.sampled_from(["", "َ", "ُ", "ِ", "ْ", "ّ", "ً"]),
                            st.sampled_from([""] * 5 + ["\u200c"])), min_size=2, max_size=6
                  ).map(lambda xs: "".join("".join(x) for x in xs).strip("\u200c"))
HEBREW = st.lists(st.tuples(st.sampled_from("אבגדהוזחטיכלמנסעפצקרשת"), st.sampled_from(["", "ָ", "ַ", "ֹ", "ּ", "ׁ"])),
                  min_size=1, max_size=6).map(lambda xs: "".join("".join(x) for x in xs))
CJK = st.sampled_from("東京都大学日本語中文")
EMOJI = st.sampled_from(["👍", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "❤\ufe0f", "1\ufe0f\u20e3"])
PUNCT = st.sampled_from([",", ".", "!", "?", "—", "(", ")"])
ATOM = st.one_of(LATIN, LATIN, DEVANAGARI, THAI, ARABIC, HEBREW, CJK, EMOJI, PUNCT)
SPACED = st.lists(st.tuples(ATOM, st.sampled_from([" ", " ", "\n", "\n\n", "  "])), min_size=1, max_size=60)


def join_atoms(pairs) -> str:
    return "".join(a + s for a, s in pairs)


@SETTINGS
@given(SPACED)
def test_units_are_the_whole_words_of_any_script(pairs):
    assert words(segment(join_atoms(pairs))) == [a for a, _ in pairs]


def is_subsequence(sub: list[str], seq: list[str]) -> bool:
    it = iter(seq)
    return all(any(w == x for x in it) for w in sub)


@SETTINGS
@given(SPACED, st.sampled_from([0.15, 0.3, 0.5, 0.8]))
def test_compressed_words_are_whole_input_words_in_order(pairs, ratio):
    text = join_atoms(pairs)
    out = COMPRESSOR.compress(text, ratio).text
    assert is_subsequence(out.split(), [a for a, _ in pairs]), (text, out)
    assert not any(MARK.match(w) for w in out.split())


# Mixed scripts glued together with no spaces, and stray marks anywhere: units may be whole runs, but no unit
# and no kept span may start or end inside a grapheme cluster. (No stray virama: regex's \X joins "東्क" as one
# cluster, though UAX #29 joins across a virama only after an Indic consonant.)
GLUE = st.sampled_from(["", "", " ", "\n", ", ", "-", "\u0301", "\u0308", "\u200d", "\u200c", "@", "."])
GLUED = st.lists(st.tuples(ATOM, GLUE), min_size=1, max_size=40).map(join_atoms)


@SETTINGS
@given(GLUED)
def test_unit_edges_are_grapheme_boundaries(text):
    seg = segment(text)
    bounds = grapheme_bounds(text)
    assert set(seg.unit_start.tolist()) <= bounds and set(seg.unit_end.tolist()) <= bounds
    assert not any(MARK.match(w) for w in words(seg))


@SETTINGS
@given(GLUED, st.sampled_from([0.2, 0.5]))
def test_kept_spans_are_grapheme_aligned(text, ratio):
    res = COMPRESSOR.compress(text, ratio)
    bounds = grapheme_bounds(text)
    assert all(s in bounds and e in bounds for s, e in res.kept_spans)
    assert not MARK.match(res.text)


# ---------------------------------------------------------------------------------------------- line endings

def gsm8k_demos() -> list[str]:
    rows = [json.loads(line) for line in (Path(__file__).parent / "data/mini_gsm8k/train.jsonl").open()]
    demos = []
    for r in rows:
        steps, answer = r["answer"].split("\n#### ")
        steps = re.sub(r"<<[^>]*>>", "", steps)
        demos.append(f"Question: {r['question']}\nLet's think step by step\n{steps}\nThe answer is {answer}")
    return demos


LF_PROMPT = "\n\n".join(gsm8k_demos() * 2 + ["Question: Ann has 3 bags of 7 pears. How many pears?"])


class WordScorer(FakeScorer):
    """The fake scorer, but a token's id (so its score) depends on its text only, not on the line break before it:
    "\\r\\nQues" and "\\nQues" score the same, so CRLF and LF prompts must come out the same."""

    def tokenize(self, text):
        ids, offsets = super().tokenize(text)
        pieces = [text[s:e].strip() or "<ws>" for s, e in offsets.tolist()]
        return np.array([self._vocab.setdefault("w:" + p, len(self._vocab)) for p in pieces], dtype=np.int64), offsets


def test_crlf_and_cr_blocks_are_found():
    for nl in ("\r\n", "\r"):
        text, parts = build_parts(f"one{nl}{nl}two{nl}  {nl}three{nl}")
        assert [text[p.start:p.end].strip() for p in parts] == ["one", "two", "three"]


@pytest.mark.parametrize("nl", ["\r\n", "\r"])
def test_crlf_structure_matches_lf(nl):
    lf, other = segment(LF_PROMPT), segment(LF_PROMPT.replace("\n", nl))
    assert len(lf.parts) > 3  # meaningful: many blocks, so template protection and the coarse stage are on
    assert words(other) == words(lf)
    assert other.protected.tolist() == lf.protected.tolist() and lf.protected.any()
    assert other.unit_part.tolist() == lf.unit_part.tolist()
    assert other.unit_sentence.tolist() == lf.unit_sentence.tolist()


@pytest.mark.parametrize("nl", ["\r\n", "\r"])
@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_crlf_prompt_keeps_the_same_words_and_its_own_line_endings(nl, ratio):
    compressor = Compressor(scorer=WordScorer())
    lf = compressor.compress(LF_PROMPT, ratio).text
    other = compressor.compress(LF_PROMPT.replace("\n", nl), ratio).text
    # Meaningful: the LF run compresses and keeps at least two demonstrations' format lines (a part added to fill
    # the budget may keep only its first sentence and its answer line).
    assert len(lf) < len(LF_PROMPT) and min(lf.count("The answer is"), lf.count("Let's think step by step")) >= 2
    assert other.replace(nl, "\n") == lf
    stray = other.replace(nl, "")
    assert "\n" not in stray and "\r" not in stray  # no mixed line endings


def test_render_separator_uses_the_texts_line_ending():
    for nl in ("\n", "\r\n", "\r"):
        text = f"alpha beta{nl}{nl}gamma{nl}delta epsilon zeta"
        seg = segment(text, protect_defaults=False)
        out, _ = render(text, seg.unit_start, seg.unit_end, np.array([True, False, False, True, True, False]))
        assert out == f"alpha{nl}{nl}delta epsilon"
        out, _ = render(text, seg.unit_start, seg.unit_end, np.array([True, False, True, False, True, False]))
        assert out == f"alpha{nl}{nl}gamma{nl}epsilon"


def test_structured_prompt_with_crlf_parts_joins_with_crlf():
    text, _ = build_parts(Prompt(instruction="Solve.\r\nShow work.", demonstrations=["a\r\nb"], question="q?"))
    assert text == "Solve.\r\nShow work.\r\n\r\na\r\nb\r\n\r\nq?"


# ---------------------------------------------------------------------------------------------- bad input

def test_lone_surrogate_is_a_typed_error_naming_its_position():
    with pytest.raises(InvalidPromptError, match=r"U\+D800.*character 3"):
        segment("abc\ud800def")
    with pytest.raises(InvalidPromptError, match=r"demonstrations\[1\].*U\+DC00.*character 1"):
        Prompt(demonstrations=["fine", "x\udc00"])
    with pytest.raises(InvalidPromptError, match=r"question.*U\+D83D"):
        Prompt(question="\ud83d")
    with pytest.raises(InvalidPromptError, match="surrogate"):
        COMPRESSOR.compress("bad \ud800 text " * 5, 0.5)
    with pytest.raises(InvalidPromptError, match="surrogate"):
        COMPRESSOR.compress_prompt(["bad \ud800"], question="q")


def test_corpus_reject_reason_names_the_surrogate():
    from lingua_compress.corpus.worker import RecordCompressor, Task, WorkerSpec

    worker = RecordCompressor(WorkerSpec(None, "cpu", None, 0.5, None, "text", "short", 1))
    worker.compressor = COMPRESSOR
    outcome = worker(Task("k", 1, {"text": "a broken \udcff record"}))
    assert outcome.json_line is None
    # The reject reason is the typed error naming the position (not the tokenizer's "TextEncodeInput must be ..."),
    # and it is itself valid text for the rejects file.
    assert "InvalidPromptError" in outcome.error and "surrogate" in outcome.error and "character 9" in outcome.error
    outcome.error.encode("utf-8")


@pytest.mark.parametrize("bad", [None, 5])
def test_demonstrations_must_be_a_sequence(bad):
    with pytest.raises(InvalidPromptError, match=rf"demonstrations.*sequence of str.*{bad!r}"):
        Prompt(demonstrations=bad)


def test_emails_are_one_protected_unit():
    seg = segment("Write to alice@example.com or bob.smith+tag@mail.example.co.uk.")
    assert words(seg) == ["Write", "to", "alice@example.com", "or", "bob.smith+tag@mail.example.co.uk", "."]
    prot = dict(zip(words(seg), seg.protected.tolist()))
    assert prot["alice@example.com"] and prot["bob.smith+tag@mail.example.co.uk"] and not prot["Write"]
    assert not segment("alice@example.com", protect_defaults=False).protected.any()
    text = "Please send the signed report to alice@example.com before the meeting on Friday morning. " * 4
    token_pass_only = Compressor(scorer=FakeScorer(), config=CompressionConfig(coarse=False))
    out = token_pass_only.compress(text, 0.2).text
    assert out.count("alice@example.com") == 4 and "Friday" not in out


# ---------------------------------------------------------------------------------------------- ASCII fast path

ASCII_WORDS = st.sampled_from("the cat 3.14 $40 50% a@b.co x.y@mail.example.org https://a.io/x?q=1 www.b.com/ "
                              "it's well-known user_id Q[ ]: , . ! -- @ \\ ~".split())
ASCII_TEXT = st.one_of(
    st.text(st.characters(max_codepoint=127), max_size=80),
    st.lists(st.tuples(ASCII_WORDS, st.sampled_from(["", " ", "\n", "\r\n", "\t", "\x1c", "\x00"])), max_size=30
             ).map(join_atoms),
)


@settings(max_examples=300, deadline=None)
@given(ASCII_TEXT)
def test_ascii_fast_path_finds_the_same_units_as_the_unicode_pattern(text):
    from lingua_compress.segment import _ASCII_UNIT_RE, _UNIT_RE

    fast = [(m.span(), m.lastgroup) for m in _ASCII_UNIT_RE.finditer(text)]
    assert fast == [(m.span(), m.lastgroup) for m in _UNIT_RE.finditer(text)]
