"""The coarse stage on number-heavy demonstrations: protected words count k times, the undershoot is filled with
whole sentences of one part, and nothing is scattered over dropped parts."""

import re

import numpy as np
import pytest

from lingua_compress import CompressionConfig, Compressor, Prompt
from lingua_compress import budget as B
from lingua_compress.errors import ConfigError
from lingua_compress.segment import segment
from fakes import FakeScorer


def demo(i: int) -> str:
    # About half of each demonstration is protected (numbers, equations, the format lines).
    a, b = 10 + i, 3 + i
    return (
        f"Question: Farmer number {i} keeps {a} hens in the barn and buys {b} more at the weekly market. "
        f"How many hens does the farmer have now?\nLet's think step by step\n"
        f"The farmer started with {a} hens and bought {b} more.\n{a} + {b} = {a + b}\n"
        f"The answer is {a + b}"
    )


DEMOS = [demo(i) for i in range(8)]


@pytest.fixture(scope="module")
def fake():
    return Compressor(scorer=FakeScorer())


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", text)


def test_coarse_costs_count_protected_units_k_times():
    costs = np.array([2.0, 3.0, 5.0])
    protected = np.array([True, False, True])
    assert B.coarse_costs(costs, protected, 2.0).tolist() == [4.0, 3.0, 10.0]
    assert B.coarse_costs(costs, protected, 1.0).tolist() == costs.tolist()


@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_kept_demonstrations_keep_at_least_one_in_k_of_their_free_words(fake, ratio):
    """Counting protected words at face value kept all eight demonstrations at 0.5 and left a skeleton of
    numbers (~15 % of their words); now fewer are kept, and those read as sentences."""
    k = fake.config.context_budget_factor
    res = fake.compress(Prompt(demonstrations=DEMOS), ratio)
    kept = [d for d in DEMOS if d.splitlines()[3] in res.text]  # the equation line is protected: it marks a kept part
    assert 0 < len(kept) < len(DEMOS)
    free_in = sum(len(words(d)) for d in kept)
    free_out = len(words(res.text))
    assert free_out >= free_in / k * 0.9, (free_out, free_in)
    assert abs(res.compressed_tokens - res.target_tokens) <= max(0.02 * res.target_tokens, 3)


def test_undershoot_is_filled_from_one_part_not_scattered(fake):
    """When the parts kept whole cost less than the budget, the rest comes from one dropped part (its answer
    line and its first sentences), not from single words of every dropped part."""
    res = fake.compress(Prompt(demonstrations=DEMOS), 0.1)
    blocks = [b for b in res.text.split("\n\n") if b.strip()]
    assert len(blocks) <= 3, blocks
    for block in blocks:
        assert block.startswith("Question:") or block.startswith("The answer is"), block
    assert abs(res.compressed_tokens - res.target_tokens) <= max(0.02 * res.target_tokens, 3)


@pytest.mark.filterwarnings("ignore::lingua_compress.errors.BudgetWarning")  # whole parts may leave an undershoot
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5])
def test_whole_parts_only_keeps_every_line_of_a_kept_part_and_nothing_of_a_dropped_one(fake, ratio):
    """coarse_sentences=False (batch prompting's demonstration blocks): no sentence filter, no fill, and the
    exact-count correction adds nothing from a dropped part, so each part is whole-or-nothing at the line level."""
    whole = Compressor(scorer=fake.scorer, config=CompressionConfig(coarse_sentences=False))
    res = whole.compress(Prompt(demonstrations=DEMOS), ratio)
    touched = [d for d in DEMOS if any(s < res.original.find(d) + len(d) and e > res.original.find(d)
                                       for s, e in res.kept_spans)]
    assert 0 < len(touched) < len(DEMOS)
    for d in touched:  # every line of a kept part survives in some form (its equation line is protected)
        assert d.splitlines()[3] in res.text and f"The answer is {d.split()[-1]}" in res.text
    assert len([b for b in res.text.split("\n\n") if b.strip()]) == len(touched)
    assert res.compressed_tokens <= res.target_tokens + max(0.02 * res.target_tokens, 3)
    with pytest.raises(ConfigError, match="coarse_sentences"):
        CompressionConfig(coarse_sentences="no")


def test_fill_takes_the_first_sentences_and_the_answer_line():
    seg = segment(Prompt(demonstrations=DEMOS[:3]), [], protect_defaults=True)
    costs = np.ones(seg.n_units)
    scores = np.zeros(seg.n_units)
    scores[seg.unit_part == 1] = 5.0  # part 1 ranks first among the dropped ones
    alive = seg.unit_part == 0
    budget = alive.sum() + 20
    fill = B.fill_contexts(seg, costs, scores, alive, budget)
    assert fill.any() and not (fill & alive).any()
    assert set(seg.unit_part[fill]) == {1}
    sents = np.unique(seg.unit_sentence[fill])
    part_sents = np.unique(seg.unit_sentence[seg.unit_part == 1])
    assert part_sents[-1] in sents and part_sents[0] in sents
    assert costs[fill].sum() >= 20  # it reaches the budget; the token pass trims the sentence that overshoots


def test_fill_adds_nothing_when_the_kept_parts_reach_the_budget():
    seg = segment(Prompt(demonstrations=DEMOS[:3]), [], protect_defaults=True)
    costs = np.ones(seg.n_units)
    alive = seg.unit_part <= 1
    fill = B.fill_contexts(seg, costs, np.zeros(seg.n_units), alive, float(alive.sum()))
    assert not fill.any()


def test_a_slack_too_small_for_a_fill_adds_no_fragment():
    """A slack worth a few words must not open a dropped part: the token pass would cut its first sentence and its
    answer line to "Question: Farmer\nThe answer is 13", an answer with nothing before it, paid for by thinning
    the kept part. Slack of half the first and last sentences' cost or more still fills."""
    seg = segment(Prompt(demonstrations=DEMOS[:3]), [], protect_defaults=True)
    costs = np.ones(seg.n_units)
    scores = np.zeros(seg.n_units)
    scores[seg.unit_part == 1] = 5.0
    alive = seg.unit_part == 0
    sents = np.unique(seg.unit_sentence[seg.unit_part == 1])
    least = sum(costs[seg.unit_sentence == s].sum() for s in (sents[0], sents[-1]))
    for slack in (0.4, 1.0, B.FILL_MIN_SHARE * least - 0.5):
        assert not B.fill_contexts(seg, costs, scores, alive, alive.sum() + slack).any(), slack
    assert B.fill_contexts(seg, costs, scores, alive, alive.sum() + B.FILL_MIN_SHARE * least).any()


def test_a_sentence_of_protected_words_only_is_never_filtered():
    seg = segment(Prompt(demonstrations=["Tom has 3 apples and eats some of them slowly.\n3 + 4 = 7\n"
                                         "Nothing else happens in this story at all.\nThe answer is 7"]),
                  [], protect_defaults=True)
    costs = np.ones(seg.n_units)
    scores = np.where(seg.protected, 0.0, 1.0)
    alive = B.filter_sentences(seg, costs, scores, np.ones(seg.n_units, dtype=bool), 6.0)
    kept = " ".join(seg.text[s:e] for s, e, a in zip(seg.unit_start, seg.unit_end, alive) if a)
    assert "3 + 4 = 7" in kept and "The answer is 7" in kept


def test_old_rule_is_still_reachable_with_k_one(fake):
    """k = 1 keeps only what fits the budget itself: the token pass then has (nearly) nothing to remove."""
    res = Compressor(scorer=FakeScorer(), config=CompressionConfig(context_budget_factor=1.0)).compress(
        Prompt(demonstrations=DEMOS), 0.5)
    assert abs(res.compressed_tokens - res.target_tokens) <= max(0.02 * res.target_tokens, 3)



@pytest.mark.parametrize("factor", [1.0, 2.0, 3.5])
def test_sentence_filter_trims_to_its_own_factor_not_the_part_selections(monkeypatch, factor):
    # Parts are chosen at context_budget_factor; the sentence filter then gets sentence_budget_factor x budget.
    seen = []
    real = B.filter_sentences

    def spy(seg, costs, scores, alive, budget):
        seen.append(budget)
        return real(seg, costs, scores, alive, budget)

    monkeypatch.setattr(B, "filter_sentences", spy)
    cfg = CompressionConfig(context_budget_factor=1.0, sentence_budget_factor=factor)
    res = Compressor(scorer=FakeScorer(), config=cfg).compress(Prompt(demonstrations=DEMOS), 0.3)
    assert len(seen) == 1
    # Demonstrations only: the context's budget is the whole target.
    assert seen[0] == pytest.approx(factor * res.target_tokens, rel=0.05)


def test_a_relevance_ranking_always_takes_its_best_item_and_otherwise_fills_as_before():
    _best_then_greedy, _greedy = B._best_then_greedy, B._greedy
    scores = np.array([3.0, 2.0, 1.0])
    too_long = np.array([5.0, 1.0, 1.0])  # the best alone outruns the budget of 3
    assert _greedy(too_long, scores, 3.0).tolist() == [False, True, True]
    assert _best_then_greedy(too_long, scores, 3.0).tolist() == [True, False, False]
    fits = np.array([1.0, 5.0, 1.0])  # the best fits: the same as the knapsack-style greedy
    assert _best_then_greedy(fits, scores, 3.0).tolist() == _greedy(fits, scores, 3.0).tolist() == [True, False, True]
