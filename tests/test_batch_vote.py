"""Permutation voting: majority and tie rules, early stopping, cost of every round, and no answer lost, duplicated
or attributed to another question whatever the permutations and the scripted answers."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_batch_cli import arithmetic_server  # noqa: F401  (a fixture: the loopback OpenAI-compatible server)
from test_batch_runner import DEMOS, FMT, FakeLLM, toy, words

from lingua_compress.batch import BatchConfig, ItemVotes, Sample, TfidfEmbedder, run_batched
from lingua_compress.batch.cli import main as batch_main
from lingua_compress.batch.group import make_groups
from lingua_compress.batch.vote import decided, retired, round_groups, standings
from lingua_compress.errors import ConfigError
from lingua_compress.llm import Completion

Q_LINE = re.compile(r"^Q\[(\d+)\]: (.*)$", re.M)
QNUM = re.compile(r"^Item (\d+):")


class Scripted:
    """A chat target whose answer to question ``q`` at slot ``s`` (its ``seen``-th time asked) is
    ``answer(q, s, seen)``, None leaving the slot out. Logs every (question, slot, answer) in call order."""

    name, chat, max_concurrency = "scripted", True, 1

    def __init__(self, answer):
        self.answer = answer
        self.seen = defaultdict(int)
        self.log, self.calls = [], 0

    def complete(self, prompt, *, max_tokens, stop=(), temperature=0.0):
        self.calls += 1
        lines = []
        for slot, text in Q_LINE.findall(prompt[-1]["content"]):
            q = int(QNUM.match(text).group(1))
            a = self.answer(q, int(slot), self.seen[q])
            self.seen[q] += 1
            self.log.append((q, int(slot), a))
            if a is not None:
                lines.append(f"A[{slot}]: Some work. The answer is {a}.")
        return Completion("\n".join(lines), 10, 5, "stop")


def items(n):
    return [Sample(f"id{q}", f"Item {q}: what is the value of thing {q} {'x' * (q % 3)}?") for q in range(n)]


def run(samples, llm, **cfg):
    return run_batched(samples, llm, demos=DEMOS[:2], config=BatchConfig(**cfg), fmt=FMT, count_tokens=words,
                       embed=TfidfEmbedder())


def test_majority_and_ties_to_the_earliest():
    assert standings(["5", "7", "7", None]) == [("7", 2, 1), ("5", 1, 0)]
    assert standings(["5", "7"])[0][0] == "5"  # tie: the earlier answer leads
    assert not decided(["5"], 2) and decided(["5", "5"], 1) and not decided(["5", "7"], 1)
    assert decided(["7", "5", "5"], 0) and not decided(["7", "5"], 1)
    assert decided([None, None], 0) and not decided([None], 1)
    assert retired(["5"], 3, 1) and not retired(["5"], 3, None) and retired(["5", "5"], 5, 2)


def test_answers_by_question_text_every_position_agree_and_stop_early():
    samples = items(10)
    llm = Scripted(lambda q, s, seen: str(q * 3))
    res = run(samples, llm, batch_size=4, votes=5)
    assert res.answers == {f"id{q}": str(q * 3) for q in range(10)}
    # Three agreeing rounds out of five decide every vote: rounds 4 and 5 are never asked.
    assert res.round_calls == (3, 3, 3) and res.cost.calls == 9 == llm.calls
    assert all(v.answers == (str(q * 3),) * 3 and v.retired_early and v.count == 3
               for q, v in enumerate(res.votes.values()))
    plain = run(samples, Scripted(lambda q, s, seen: str(q * 3)), batch_size=4, votes=5, vote_agree=2)
    assert plain.round_calls == (3, 3) and plain.cost.calls == 6  # agreement retires after two rounds
    one = run(samples, Scripted(lambda q, s, seen: str(q * 3)), batch_size=4)
    assert one.votes == {} and one.round_calls == (3,) and one.cost.calls == 3


def test_voting_fixes_a_position_bias():
    # A target that gets the first slot of every batch wrong: batching alone loses those items.
    def answer(q, slot, seen):
        return str(q * 3 + (1 if slot == 1 else 0))

    samples = items(24)
    gold = {f"id{q}": str(q * 3) for q in range(24)}

    def correct(res):
        return sum(res.answers.get(i) == g for i, g in gold.items())

    plain = run(samples, Scripted(answer), batch_size=4, max_retries=0)
    voted = run(samples, Scripted(answer), batch_size=4, votes=5, max_retries=0)
    assert correct(plain) == 18
    # Retired items shrink the later rounds, so some slots must be held twice: not every item can be saved.
    assert correct(voted) >= 21
    assert voted.cost.calls == sum(voted.round_calls) > plain.cost.calls
    assert voted.cost.prompt_tokens == 10 * voted.cost.calls  # every round is billed


@pytest.mark.parametrize("group", ["sequential", "random", "similarity"])
def test_every_item_meets_every_position_while_all_stay_active(group):
    samples = items(12)
    first = make_groups(samples, 4, group, seed=3, embed=TfidfEmbedder())
    slots = {i: [k] for g in first for k, i in enumerate(g.ids)}
    partners = {i: set(g.ids) for g in first for i in g.ids}
    for rnd in (2, 3, 4):
        groups = round_groups(first, samples, slots, size=4, strategy=group, seed=3, rnd=rnd, embed=TfidfEmbedder())
        assert sorted(i for g in groups for i in g.ids) == sorted(s.id for s in samples)
        for g in groups:
            for k, i in enumerate(g.ids):
                slots[i].append(k)
                partners[i] |= set(g.ids)
    assert all(sorted(v) == [0, 1, 2, 3] for v in slots.values())
    if group != "similarity":
        assert all(len(p) > 4 for p in partners.values())  # new partners too


def test_failures_keep_an_item_active_and_end_with_a_status():
    # Item 0 is never answered, item 1 only from its third time on: nothing is lost, both end with a status.
    def answer(q, slot, seen):
        if q == 0 or (q == 1 and seen < 2):
            return None
        return str(q)

    samples = items(5)
    res = run(samples, Scripted(answer), batch_size=2, votes=3, max_retries=1)
    assert list(res.items) == [s.id for s in samples]
    assert res.items["id0"].status == "missing" and res.votes["id0"].answers == (None, None, None)
    assert res.votes["id1"].answers == (None, None, "1") and res.items["id1"].final == "1"
    assert res.items["id1"].ok and "voted 1 of 3" in res.items["id1"].note
    assert res.cost.retry_calls == 1  # id0 alone, re-asked after the vote


def test_completion_mode_with_prefill_and_knn():
    samples, gold = toy(8)
    res = run_batched(samples, FakeLLM(gold), demos=DEMOS, config=BatchConfig(batch_size=3, votes=3),
                      fmt=FMT, count_tokens=words)
    assert res.answers == {f"id{i}": str(2 * i) for i in range(8)}
    knn = Scripted(lambda q, s, seen: str(100 * q + s))
    res = run(items(6), knn, batch_size=3, group="knn", votes=3)
    for q in range(6):  # the kNN target's answer is taken from its own slot in each permutation
        assert all(int(a) // 100 == q for a in res.votes[f"id{q}"].answers)
    assert res.cost.calls == sum(res.round_calls) and res.round_calls[0] == 6


def test_similarity_regroups_without_losing_items():
    samples = items(12)
    res = run(samples, Scripted(lambda q, s, seen: str(100 * q + s)), batch_size=4, group="similarity", votes=3)
    assert set(res.items) == {s.id for s in samples} and res.status_counts == {"ok": 12}
    assert all(int(a) // 100 == int(i[2:]) for i, v in res.votes.items() for a in v.answers)


@pytest.mark.parametrize("kw, match", [
    ({"votes": 0}, "votes=0 must be an int >= 1"),
    ({"votes": True}, "votes=True"),
    ({"votes": 2.0}, "votes=2.0"),
    ({"votes": 3, "vote_agree": 4}, "vote_agree=4 .* from 1 to votes=3"),
    ({"votes": 3, "vote_agree": 0}, "vote_agree=0"),
])
def test_bad_vote_settings(kw, match):
    with pytest.raises(ConfigError, match=match):
        BatchConfig(**kw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 13),
    size=st.integers(1, 5),
    votes=st.integers(1, 4),
    agree=st.one_of(st.none(), st.integers(1, 4)),
    seed=st.integers(0, 10_000),
    group=st.sampled_from(["sequential", "random", "similarity", "knn"]),
    table=st.dictionaries(st.tuples(st.integers(0, 12), st.integers(1, 5), st.integers(0, 6)),
                          st.one_of(st.none(), st.integers(0, 2)), max_size=60),
)
def test_no_id_lost_duplicated_or_misattributed(n, size, votes, agree, seed, group, table):
    agree = None if agree is None or agree > votes else agree

    def answer(q, slot, seen):  # answers encode their question: 1000 q + a scripted choice, or nothing
        choice = table.get((q, slot, seen), 1)
        return None if choice is None else str(1000 * q + choice)

    llm = Scripted(answer)
    samples = items(n)
    res = run(samples, llm, batch_size=size, votes=votes, vote_agree=agree, group=group, seed=seed, max_retries=0)
    assert list(res.items) == [s.id for s in samples]
    assert res.cost.calls == llm.calls == sum(res.round_calls)
    for i, r in res.items.items():
        q = int(i[2:])
        assert r.id == i
        assert r.final is None or int(r.final) // 1000 == q  # never another question's answer
        if votes == 1:
            continue
        v = res.votes[i]
        assert 1 <= v.rounds <= votes
        assert all(a is None or int(a) // 1000 == q for a in v.answers)
        if group != "knn":  # each round asks every member once: the votes are exactly what the target said
            said = [a for qq, _, a in llm.log if qq == q]
            assert list(v.answers) == said
        if v.winner is not None:
            assert r.final == v.winner and r.ok
            assert v.count == max(v.answers.count(a) for a in set(v.answers) - {None})


def test_cli_bad_vote_agree_exit_code(tmp_path, capsys):
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps({"id": i, "question": f"What is {i} plus 1?"}) + "\n" for i in range(3)))
    code = batch_main([str(q), "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "-o", str(tmp_path / "o"),
                       "--votes", "2", "--vote-agree", "3"])
    assert code == 2 and "vote_agree=3" in capsys.readouterr().err


def test_cli_votes_round_trip(tmp_path, capsys, arithmetic_server):
    url, calls = arithmetic_server
    q = tmp_path / "q.jsonl"
    q.write_text("".join(json.dumps({"id": i, "question": f"What is {i} plus {i + 1}?"}) + "\n" for i in range(5)))
    out = tmp_path / "a.jsonl"
    assert batch_main([str(q), "--base-url", url, "--model", "m", "-o", str(out), "--gsm8k", "--batch-size", "2",
                       "--votes", "3"]) == 0
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert {i: r["answer"] for i, r in rows.items()} == {i: str(2 * i + 1) for i in range(5)}
    assert all(r["votes"] == [r["answer"]] * 2 for r in rows.values())  # two agreeing rounds decide 3 votes
    assert json.loads(capsys.readouterr().out)["cost"]["calls"] == len(calls) == 6


def test_one_by_one_greedy_reasks_only_failed_calls():
    # K = 1 at temperature 0: the re-ask prompt is identical, so only a failed call is asked again.
    samples = items(3)
    res = run(samples, Scripted(lambda q, s, seen: None if q == 1 else str(q)), batch_size=1, max_retries=2)
    assert res.items["id1"].status == "missing" and res.cost.calls == 3 and res.cost.retry_calls == 0
    res = run(samples, Scripted(lambda q, s, seen: None if q == 1 else str(q)), batch_size=1, max_retries=1,
              temperature=0.7)
    assert res.cost.retry_calls == 1
    res = run(samples, Scripted(lambda q, s, seen: str(q)), batch_size=1, votes=3)  # nothing to permute
    assert res.round_calls == (3,) and all(v.rounds == 1 and v.retired_early for v in res.votes.values())


def test_item_votes_rounds():
    assert ItemVotes(("1", None), "1", 1, True).rounds == 2
