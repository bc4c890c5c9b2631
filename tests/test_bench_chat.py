"""The chat benchmark's parts: conversation selection and cutting, truncation, LLMLingua's output cut back into
messages, and a dry end-to-end run on the embedded model (no Qwen, no llmlingua) that resumes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

from bench_chat import make_item, parse_args  # noqa: E402
from chat_methods import content_tokens, render, split_back, split_tail, truncate  # noqa: E402


def words(text: str) -> int:
    return len(text.split())


def turn(who: str, text: str) -> dict:
    return {"from": who, "value": text}


CHATS = [
    {"id": "a", "conversations": [
        turn("human", "I am planning a trip to Lisbon in May with two children aged six and nine years."),
        turn("gpt", "Lisbon in May is warm and dry. With children, the Oceanarium, the tram 28 ride and the Belem "
                    "tower are good choices, and the Gulbenkian garden has space to run around in the afternoon."),
        turn("human", "We also like museums about science and trains. Which ones would you suggest for a rainy day?"),
        turn("gpt", "The Pavilion of Knowledge is a hands-on science museum, and the railway museum in Entroncamento "
                    "is a short train ride away; both are fine on a rainy day and children love them."),
        turn("human", "Which of these is closest to the Oceanarium?"),
        turn("gpt", "The Pavilion of Knowledge: it is in the same park, a five minute walk from the Oceanarium."),
    ]},
    {"id": "b", "conversations": [
        turn("gpt", "Here is a function that adds two numbers: def add(a, b): return a + b. It works for ints and "
                    "floats, and also for strings, where it concatenates them in order."),
        turn("human", "How do I make it refuse strings and say why in the error message?"),
        turn("gpt", "Check the types first: if not isinstance(a, (int, float)) raise TypeError naming the bad value, "
                    "and do the same for b before adding them together."),
        turn("human", "Thanks. Can you show the final version?"),
        turn("gpt", "def add(a, b):\n    for x in (a, b):\n        if not isinstance(x, (int, float)):\n"
                    "            raise TypeError(f'not a number: {x!r}')\n    return a + b"),
    ]},
    {"id": "c", "conversations": [turn("human", "Hi!"), turn("gpt", "Hello! How can I help?")]},  # no history
    {"id": "d", "conversations": [
        turn("human", "Name three primary colours used in painting and explain how they are mixed on a palette."),
        turn("gpt", "Red, yellow and blue. Mixing two of them gives a secondary colour: orange, green or purple."),
        turn("human", "And in light, for screens?"),
        turn("gpt", "Red, green and blue: screens add light, so all three together make white."),
    ]},
]


def args_for(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"max_reply": 50, "max_context": 1000, "min_history": 5, "continuations": False, **kw})


def test_item_is_the_last_reply_after_the_history_it_follows():
    item, why = make_item(CHATS[0], words, args_for())
    assert why == "" and item["reply"].startswith("The Pavilion")
    assert [m["role"] for m in item["history"]] == ["user", "assistant", "user", "assistant", "user"]
    assert item["history"][-1]["content"] == "Which of these is closest to the Oceanarium?"
    assert make_item(CHATS[2], words, args_for())[0] is None  # nothing before the last user turn to compress


def test_a_tuning_set_never_shares_a_conversation_with_the_evaluation(tmp_path):
    from bench_chat import load_items

    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps({**c, "id": f"{c['id']}{k}"}) + "\n" for k in range(60) for c in CHATS))
    base = dict(data=data, max_reply=50, max_context=1000, min_history=5)
    evaluation = {it["id"] for it in load_items(args_for(**base, seed=0, n=100, disjoint_from=None), words)[0]}
    tuning, skipped = load_items(args_for(**base, seed=1, n=100, disjoint_from=0), words)
    assert len(evaluation) == 100 and len(tuning) == 180 - 100
    assert not evaluation & {it["id"] for it in tuning} and skipped["in the --disjoint-from seed's 100"] == 100


def test_continuations_keeps_only_conversations_that_end_asking_to_continue(tmp_path):
    from bench_chat import load_items

    item = make_item(CHATS[0], words, args_for())[0]
    k = max(i for i, m in enumerate(CHATS[0]["conversations"]) if m["value"].strip() == item["history"][-1]["content"])
    asks = ["continue", "Please continue from the above.", "continue to step 3", "Continue writing please",
            "Which one is closer?", "Continue the list with ten more museums in other cities, with opening hours"]
    rows = []
    for j, text in enumerate(asks):
        turns = [dict(m) for m in CHATS[0]["conversations"]]
        turns[k]["value"] = text
        rows.append({"id": f"c{j}", "conversations": turns})
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = dict(data=data, seed=0, n=100, disjoint_from=None)
    items, skipped = load_items(args_for(**base, continuations=True), words)
    assert sorted(it["id"] for it in items) == ["c0", "c1", "c2", "c3"]
    assert sum(skipped.values()) == 2
    assert len(load_items(args_for(**base), words)[0]) == 6


def test_long_histories_lose_their_oldest_messages_first():
    full, _ = make_item(CHATS[0], words, args_for())
    cap = words(render(full["history"])) + 10  # the system turn and the reply no longer fit beside all of it
    item, _ = make_item(CHATS[0], words, args_for(max_context=cap, max_reply=5))
    assert 0 < item["dropped_messages"] and item["history"] == full["history"][item["dropped_messages"]:]
    assert make_item(CHATS[0], words, args_for(max_context=12))[1].startswith("last user turn and reply")


@pytest.mark.parametrize("ratio", [0.5, 0.3, 0.1])
def test_truncate_keeps_the_last_user_turn_and_the_newest_tokens(ratio):
    history = make_item(CHATS[0], words, args_for())[0]["history"]
    out = truncate(history, ratio, words)
    assert out[-1] == history[-1]
    assert content_tokens(out, words) <= max(ratio * content_tokens(history, words), words(history[-1]["content"]))
    k = len(out)
    assert out[1:] == history[len(history) - k + 1:]  # the newer turns whole
    assert history[-k]["content"].endswith(out[0]["content"])  # the oldest kept one lost at most its head


def test_split_back_gives_each_turn_its_own_words():
    texts = ["Lisbon in May is warm and dry, good for children.", "Which museum is near the Oceanarium?",
             "The Pavilion of Knowledge, in the same park."]
    out = "Lisbon May warm dry children.\n\nPavilion Knowl same park."
    assert split_back(texts, out) == ["Lisbon May warm dry children.", "", "Pavilion Knowl same park."]
    assert split_back(texts, "") == ["", "", ""]


@pytest.mark.parametrize("cap", [0, 3, 5, 9, 13, 40])
def test_split_tail_keeps_trailing_lines_whole_and_never_cuts_a_fence(cap):
    text = ("Intro line here.\n```py\nx = 1\ny = 2\n```\nFirst sentence. Second one here. Third is last.\n"
            "Final line with five words\n")
    head, tail = split_tail(text, cap, words)
    assert head + tail == text
    assert words(tail) <= cap
    assert head.count("```") % 2 == 0  # the code block is on one side, whole
    if cap >= words(text):
        assert head == ""
    elif cap >= 5:
        assert tail.startswith("Final") or tail.startswith("First")


def test_split_tail_falls_back_to_sentences_of_a_long_last_line():
    head, tail = split_tail("Setup.\nOne two three. Four five. Six seven.", 4, words)
    assert (head, tail) == ("Setup.\nOne two three. ", "Four five. Six seven.")


def test_dry_defaults_drop_llmlingua_and_shrink_the_run():
    args = parse_args(["--dry"])
    assert args.target == "embedded" and "llmlingua" not in args.methods and args.n == 3 and args.ratios == [0.5]


def test_the_flat_ablation_is_accepted_and_fingerprinted_apart():
    from chat_methods import fingerprint

    assert parse_args(["--methods", "ours,ours-flat"]).methods == ["ours", "ours-flat"]
    assert fingerprint("ours") != fingerprint("ours-flat")
    assert len({fingerprint(m) for m in ("ours", "ours-tail", "ours-coarse")}) == 3
    assert parse_args(["--methods", "ours,ours-coarse"]).methods == ["ours", "ours-coarse"]
    with pytest.raises(SystemExit):
        parse_args(["--methods", "ours-sideways"])


@pytest.mark.model
def test_dry_run_is_paired_reports_and_resumes(tmp_path):
    import bench_chat

    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in CHATS))
    argv = ["--dry", "--data", str(data), "--n", "4", "--min-history", "8", "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "out")]
    assert bench_chat.main(argv) == 0
    report = json.loads((tmp_path / "out" / "bench_chat_dry.json").read_text())
    rows = {(r["method"], r["ratio"]): r for r in report["rows"]}
    assert set(rows) == {("full", 1.0), ("no-history", 0.0), ("ours", 0.5), ("truncate", 0.5)}
    meta = report["meta"]
    assert meta["paired_conversations"] == 3 and sum(meta["skipped"].values()) == 1  # "c": no history
    assert "keeps the last user turn" in meta["no_history"]
    assert rows[("full", 1.0)]["retention"] == 1.0 and rows[("no-history", 0.0)]["retention"] == 0.0
    for key in (("ours", 0.5), ("truncate", 0.5)):
        assert 0.25 < rows[key]["achieved"] <= 0.75 and rows[key]["n"] == 3
    assert set(rows[("ours", 0.5)]["vs"]) == {"truncate"} and meta["verdict"]["ratio"] == 0.5
    per = report["per_conversation"]
    assert [p["id"] for p in per] == ["a", "b", "d"] and all(set(p) >= {"ours@0.5", "truncate@0.5"} for p in per)
    gains = [p["history_gain_nats"] for p in per]  # the pooled retention is their weighted mean
    pooled = sum(g * p["ours@0.5"]["retention"] for g, p in zip(gains, per)) / sum(gains)
    assert pooled == pytest.approx(rows[("ours", 0.5)]["retention"], abs=0.01)
    best = sum(max(g * p["ours@0.5"]["retention"], g * p["truncate@0.5"]["retention"]) for g, p in zip(gains, per))
    ceiling = rows[("ours", 0.5)]["best_of"]["truncate"]["retention"]  # the better of the two, per conversation
    assert ceiling == pytest.approx(best / sum(gains), abs=0.01)
    assert ceiling >= max(rows[("ours", 0.5)]["retention"], rows[("truncate", 0.5)]["retention"]) - 1e-9
    lines = (tmp_path / "work" / "evals.jsonl").read_text().splitlines()
    assert len(lines) == 3 * 4
    (tmp_path / "out" / "bench_chat_dry.md").unlink()
    assert bench_chat.main(argv) == 0  # resumed: nothing computed twice
    assert (tmp_path / "work" / "evals.jsonl").read_text().splitlines() == lines
    md = (tmp_path / "out" / "bench_chat_dry.md").read_text()
    assert "| ours | 0.5 |" in md
    from lingua_compress.models import cpu_bf16_feature  # where the rows were made: it sets the scorer's dtype

    assert rows[("ours", 0.5)]["hosts"] == {cpu_bf16_feature(): 3} and f"ours 0.5: {cpu_bf16_feature()} 3" in md


def test_carry_keeps_a_score_only_for_the_same_compressed_history():
    from chat_carry import carry, out_digest

    item = {"id": "a", "digest": "d1"}
    msgs = [{"role": "user", "content": "hi"}]
    old = {"id": "a", "digest": "d1", "fp": "f1", "out": out_digest(msgs), "nll": 3.5, "compress_s": 9.0}
    new = carry(old, item, out_digest(msgs), "f2", 1.0)
    assert new == {**old, "fp": "f2", "compress_s": 1.0, "carried_from": "f1"}
    assert carry(new, item, out_digest(msgs), "f3", 1.0)["carried_from"] == "f1"  # where the score was made
    assert out_digest([{"content": "hi", "role": "user"}]) == out_digest(msgs)  # key order does not matter
    assert carry(old, item, out_digest([{"role": "user", "content": "hi!"}]), "f2", 1.0) is None  # another history
    assert carry(old, {"id": "a", "digest": "d2"}, out_digest(msgs), "f2", 1.0) is None  # the item's text changed
    assert carry({k: v for k, v in old.items() if k != "out"}, item, out_digest(msgs), "f2", 1.0) is None
    assert carry(old, item, out_digest(msgs), "f1", 1.0) is None and carry(None, item, "x", "f2", 1.0) is None


@pytest.mark.model
def test_backfilled_results_survive_a_code_change_that_leaves_the_history_unchanged(tmp_path, monkeypatch):
    import bench_chat

    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(c) + "\n" for c in CHATS))
    argv = ["--dry", "--data", str(data), "--n", "4", "--min-history", "8", "--methods", "ours,truncate",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    assert bench_chat.main(argv) == 0
    evals = tmp_path / "work" / "evals.jsonl"
    rows = [json.loads(x) for x in evals.read_text().splitlines()]
    made = {(r["method"], r["id"]): r for r in rows if r["method"] in ("ours", "truncate")}
    assert len(made) == 6 and all("out" in r for r in made.values())
    # Results from before digests were kept: the backfill gives each the digest today's code makes.
    evals.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "out"}) + "\n" for r in rows))
    assert bench_chat.main([*argv, "--backfill"]) == 0
    filled = {(r["method"], r["id"]): r for r in map(json.loads, evals.read_text().splitlines()) if "out" in r}
    assert {k: r["out"] for k, r in filled.items()} == {k: r["out"] for k, r in made.items()}
    # A library change that does not touch these histories: every score is carried, none made again.
    real = bench_chat.fingerprint
    monkeypatch.setattr(bench_chat, "fingerprint", lambda m: real(m) + ("-new" if m == "ours" else ""))
    assert bench_chat.main(argv) == 0
    last = {(r["method"], r["ratio"], r["id"]): r for r in map(json.loads, evals.read_text().splitlines())}
    ours = [r for k, r in last.items() if k[0] == "ours"]
    assert len(ours) == 3 and all(r["fp"].endswith("-new") and r["carried_from"] == real("ours") for r in ours)
    assert {r["id"]: r["nll"] for r in ours} == {r["id"]: r["nll"] for (m, _), r in made.items() if m == "ours"}
    assert not any("carried_from" in r for k, r in last.items() if k[0] != "ours")
