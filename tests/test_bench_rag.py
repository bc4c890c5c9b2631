"""The RAG benchmark's parts: answer matching, item and distractor construction, and a dry end-to-end run on the
embedded model (no Qwen, no llmlingua, no MiniLM) that must answer or give a status for every condition and resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_rag  # noqa: E402


def _rows(tmp_path: Path, n: int = 30) -> Path:
    """A small stand-in for nq_conflicts_1500.jsonl: item i's passage names its answer; a few mention others'."""
    path = tmp_path / "nq.jsonl"
    with path.open("w") as f:
        for i in range(n):
            extra = f" Also Person {i - 1} Smith was there." if i % 7 == 0 and i else ""
            f.write(json.dumps({"id": f"q{i}", "question": f"who did thing {i}?",
                                "passage": f"Thing {i} was done by Person {i} Smith in the year {1900 + i}.{extra}",
                                "answer": f"Person {i} Smith", "parametric_answer": f"Real {i} Jones"}) + "\n")
    return path


@pytest.mark.parametrize("needle, hay, found", [
    ("Ed Begley , Jr.", "It was Ed Begley, Jr. who played him", True),
    ("Al", "Albert did it", False),
    ("New York", "new york city", True),
    ("1984", "In 1984 .", True),
    ("", "anything", False),
])
def test_contains_matches_whole_normalised_words(needle, hay, found):
    assert bench_rag.contains(needle, hay) is found


def test_first_line_is_the_short_answer():
    assert bench_rag.first_line("\n  Priyal Gor\nQuestion: next") == "Priyal Gor"
    assert bench_rag.first_line("   \n") == ""


def test_items_are_seeded_prefixes_and_distractors_never_leak_the_answer(tmp_path):
    path = _rows(tmp_path)
    items, rows = bench_rag.load_items(path, 5, seed=0)
    more, _ = bench_rag.load_items(path, 8, seed=0)
    assert more[:5] == items  # a larger --n extends the same list
    assert bench_rag.load_items(path, 5, seed=1)[0] != items
    for item in items:
        others = bench_rag.distractors(item, rows, 6, seed=0)
        assert len(others) == 5 and item["passage"] not in others
        assert not any(bench_rag.contains(item["answer"], o) for o in others)
        assert others == bench_rag.distractors(item, rows, 6, seed=0)
        for k, pos, where in ((6, "start", 0), (6, "middle", 3), (6, "end", 5), (3, "end", 2)):
            docs, gold = bench_rag.documents(item, others, k, pos)
            assert len(docs) == k and gold == where and docs[gold] == item["passage"]
            assert [d for d in docs if d != item["passage"]] == others[:k - 1]  # k passages nest in larger k


def test_prompt_puts_documents_between_instruction_and_question():
    head, tail = bench_rag.prompt_parts("doc one\n\ndoc two", "who?")
    assert head.startswith(bench_rag.INSTRUCTION) and head.endswith("doc two")
    assert tail == "\n\nQuestion: who?\nAnswer:"
    assert bench_rag.prompt_parts("", "who?")[0] == bench_rag.INSTRUCTION


def test_truncate_and_full_conditions_are_named_once():
    args = bench_rag.parse_args(["--dry", "--ratios", "0.5,0.25", "--methods", "ours-qa,truncate,full"])
    assert bench_rag.conditions(args) == [("ours-qa", 0.5), ("ours-qa", 0.25), ("truncate", 0.5),
                                          ("truncate", 0.25), ("full", 1.0)]
    assert bench_rag.parse_args(["--dry"]).methods == ["ours-qa", "ours-agnostic", "embed", "truncate", "full"]


def test_judged_conditions_run_first():
    args = bench_rag.parse_args(["--passages", "10,20", "--ratios", "0.5,0.25,0.1"])
    assert [bench_rag.phase(args, 20, m, r) for m, r in (("ours-qa", 0.25), ("embed", 0.1), ("full", 1.0))] == [0] * 3
    assert [bench_rag.phase(args, k, m, r) for k, m, r in ((20, "ours-qa", 0.5), (10, "full", 1.0))] == [1, 1]


@pytest.mark.model
def test_dry_run_answers_every_condition_and_resumes(tmp_path):
    data = Path(__file__).parent / "data" / "mini_nq" / "nq_conflicts_mini.jsonl"  # tests never read ../shared
    argv = ["--dry", "--data", str(data), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    assert bench_rag.main(argv) == 0
    report = json.loads((tmp_path / "out" / "bench_rag_dry.json").read_text())
    args = bench_rag.parse_args(argv)
    conds = bench_rag.conditions(args)
    records = next((tmp_path / "work").glob("rag-*/records.jsonl"))
    lines = records.read_text().splitlines()
    recs = {(r["item"], r["k"], r["method"], r["ratio"]): r for r in map(json.loads, lines)}
    items = {r["item"] for r in recs.values()}
    assert len(items) == args.n and len(recs) == len(lines) == args.n * len(args.passages) * len(conds)
    for rec in recs.values():  # every item answered, or a status saying why not
        assert rec["status"] in ("ok", "error", "too_long")
        if rec["status"] == "ok":
            assert isinstance(rec["reply"], str) and isinstance(rec["correct"], bool)
            assert rec["tokens"] <= rec["full_tokens"] and isinstance(rec["survived"], bool)
    assert {r["position"] for r in recs.values()} == set(bench_rag.POSITIONS)
    rows = {(r["method"], r["ratio"]): r for r in report["rows"]}
    assert set(rows) == set(conds)
    assert rows[("full", 1.0)]["survival"] == 1.0 and rows[("full", 1.0)]["achieved"] == 1.0
    for (method, ratio), row in rows.items():
        if method != "full" and row["n"]:
            assert abs(row["achieved"] - ratio) < 0.1, (method, row["achieved"])
    assert {d["vs"] for d in report["paired"] if d["method"] == "ours-qa"} == {"full", "embed", "truncate",
                                                                              "ours-agnostic"}
    md = (tmp_path / "out" / "bench_rag_dry.md").read_text()
    assert "| 3 | ours-qa | 0.5 |" in md
    from lingua_compress.models import cpu_bf16_feature  # where the records were made: it sets the scorer's dtype

    assert rows[("ours-qa", 0.5)]["hosts"] == {cpu_bf16_feature(): args.n}
    assert f"ours-qa 0.5: {cpu_bf16_feature()} {args.n}" in md
    assert bench_rag.main(argv) == 0  # resumed: nothing is computed twice
    assert records.read_text().splitlines() == lines


@pytest.mark.model
def test_rag_speed_check_dry_times_both_modes_per_item(tmp_path):
    import check_rag_speed

    report = check_rag_speed.main(["--dry", "--data", str(_rows(tmp_path)), "--out", str(tmp_path / "out"),
                                   "--ratios", "0.5", "--threads", "1"])
    (rec,) = report["records"]
    for mode in ("ours-agnostic", "ours-qa"):
        assert rec[mode]["s"] > 0 and rec[mode]["scored_tokens"] > 0 and 0 < rec[mode]["kept_ratio"] <= 1
    assert rec["qa_over_agnostic"] == pytest.approx(rec["ours-qa"]["s"] / rec["ours-agnostic"]["s"], rel=0.01)
    summary = report["summary"]["0.5"]
    assert summary["n"] == 1 and summary["qa_over_agnostic_median"] == rec["qa_over_agnostic"]
    assert json.loads((tmp_path / "out" / "check_rag_speed_dry.json").read_text())["records"] == report["records"]


def test_disjoint_items_never_meet_the_evaluation_set(tmp_path):
    path = _rows(tmp_path, 260)
    held = {r["id"] for r in bench_rag.load_items(path, 200, seed=0)[0]}
    items, _ = bench_rag.load_items(path, 40, seed=1, disjoint_from=0)
    assert len(items) == 40 and not held & {r["id"] for r in items}
    assert bench_rag.load_items(path, 50, seed=1, disjoint_from=0)[0][:40] == items  # a larger --n extends it
    args = bench_rag.parse_args(["--seed", "1", "--disjoint-from", "0"])
    assert args.stem == "bench_rag_seed1" and bench_rag.work_dir(args) != bench_rag.work_dir(
        bench_rag.parse_args(["--seed", "1"]))
    assert "ours-qa-doc" not in bench_rag.parse_args([]).methods  # an ablation runs only when named


@pytest.mark.model
def test_whole_document_ablation_runs_beside_ours_on_tuning_items(tmp_path):
    argv = ["--dry", "--data", str(_rows(tmp_path, 230)), "--seed", "1", "--disjoint-from", "0", "--n", "1",
            "--methods", "ours-qa,ours-qa-doc,full", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "o")]
    assert bench_rag.main(argv) == 0
    report = json.loads((tmp_path / "o" / "bench_rag_dry.json").read_text())
    assert report["meta"]["disjoint_from"] == 0
    assert {d["vs"] for d in report["paired"] if d["method"] == "ours-qa-doc"} == {"ours-qa", "full"}
    recs = [json.loads(x) for x in next((tmp_path / "work").glob("rag-*/records.jsonl")).read_text().splitlines()]
    doc = [r for r in recs if r["method"] == "ours-qa-doc"]
    # Whole documents only: under the budget by up to a document, never over it.
    assert len(doc) == 1 and all(r["status"] == "ok" and 0 < r["achieved"] <= 0.52 for r in doc)


def test_settled_methods_stop_and_keep_their_own_items_in_the_report(tmp_path, monkeypatch):
    import rag_report
    from bench_quality import Store

    with pytest.raises(SystemExit):  # only a method that is run can be settled
        bench_rag.parse_args(["--methods", "ours-qa,full", "--settled", "truncate"])
    args = bench_rag.parse_args(["--passages", "20", "--ratios", "0.25", "--methods", "ours-qa,truncate,full",
                                 "--settled", "truncate"])
    assert args.settled == ["truncate"]
    store = Store(tmp_path / "records.jsonl", ("item", "k", "method", "ratio"))
    items = [{"id": f"q{i}"} for i in range(5)]
    for i, item in enumerate(items):
        for method, ratio in bench_rag.conditions(args):
            if method == "truncate" and i >= 2:  # settled after two items
                continue
            store.add({"item": item["id"], "k": 20, "method": method, "ratio": ratio, "status": "ok",
                       "fp": bench_rag.fingerprint(method, args),
                       "correct": method != "truncate" or i == 0, "parametric": False, "survived": True,
                       "achieved": ratio, "position": "start", **dict.fromkeys(rag_report.SECONDS, 1.0)})
    rows, diffs, paired = rag_report.tables(args, items, bench_rag.conditions(args), store)
    assert paired == {20: 5}  # the open methods pair on all five items, not on the settled one's two
    assert {r["method"]: r["n"] for r in rows} == {"ours-qa": 5, "truncate": 2, "full": 5}
    vs = {d["vs"]: d["accuracy"] for d in diffs}
    assert vs["truncate"]["n"] == 2 and vs["full"]["n"] == 5  # each difference on the items both sides finished
    assert vs["truncate"]["diff"] == pytest.approx(0.5)

    def no_target(args):
        raise AssertionError("a settled method's missing items were scheduled")

    monkeypatch.setattr(bench_rag, "load_rag_target", no_target)
    bench_rag.evaluate(args, items, [], bench_rag.conditions(args), store, tmp_path)  # nothing left to do


def test_conditions_run_after_the_judged_ones_pair_apart_and_leave_their_n_alone(tmp_path):
    import rag_report
    from bench_quality import Store

    args = bench_rag.parse_args(["--passages", "10,20", "--ratios", "0.5,0.25", "--methods", "ours-qa,full"])
    store = Store(tmp_path / "records.jsonl", ("item", "k", "method", "ratio"))
    items = [{"id": f"q{i}"} for i in range(6)]
    for i, item in enumerate(items):
        for k in (10, 20):
            for method, ratio in bench_rag.conditions(args):
                if bench_rag.phase(args, k, method, ratio) == 1 and i >= 2:  # the later phase: two items so far
                    continue
                store.add({"item": item["id"], "k": k, "method": method, "ratio": ratio, "status": "ok",
                           "fp": bench_rag.fingerprint(method, args), "correct": True, "parametric": False,
                           "survived": True, "achieved": ratio, "position": "start",
                           **dict.fromkeys(rag_report.SECONDS, 1.0)})
    rows, diffs, paired = rag_report.tables(args, items, bench_rag.conditions(args), store)
    assert paired == {10: 2, 20: 6}
    n = {(r["passages"], r["method"], r["ratio"]): r["n"] for r in rows}
    assert n[(20, "ours-qa", 0.25)] == n[(20, "full", 1.0)] == 6  # the judged conditions keep every item
    assert n[(20, "ours-qa", 0.5)] == n[(10, "ours-qa", 0.25)] == n[(10, "full", 1.0)] == 2
