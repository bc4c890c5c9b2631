"""The corpus job: bad input goes to rejects, resume skips what is done, torn output is repaired, and
neither worker counts nor engines change the records. Workers are real spawned processes on the tiny model."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sys

import pytest
from test_corpus_support import read_jsonl, records_by_id, write_corpus
from tiny import save_tiny_model

from lingua_compress.corpus import CorpusSummary, compress_corpus, main
from lingua_compress.errors import ConfigError, LinguaCompressError

N_GOOD = 24
BAD_LINES = (
    '{"id": "empty", "text": "   "}',
    '{"id": "broken", "text": "half a rec',
    '{"id": "doc-3", "text": "a duplicate id"}',
    '{"text": "no id here"}',
    '{"id": "no-text", "body": "wrong field"}',
    '{"id": "number", "text": 42}',
    '{"id": ["list"], "text": "an id that is not a string"}',
    '"just a string"',
    '{"id": "clash", "text": "Natalia sold clips.", "compressed_tokens": 3}',
)
# line numbers (the good records come first) and the reason each bad line must get
EXPECTED_REJECTS = {
    N_GOOD + 1: "empty text", N_GOOD + 2: "malformed JSON", N_GOOD + 3: "duplicate id 'doc-3' (first on line 4)",
    N_GOOD + 4: "missing id field", N_GOOD + 5: "missing text field", N_GOOD + 6: "must be a string, got int",
    N_GOOD + 7: "must be a string or an integer", N_GOOD + 8: "not a JSON object",
    N_GOOD + 9: "would be overwritten",
}


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny_model")))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "in.jsonl", N_GOOD, BAD_LINES)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, tiny_path, corpus):
    """One full run with 2 workers, shared by the tests that inspect its files."""
    out = tmp_path_factory.mktemp("two") / "out.jsonl"
    summary = compress_corpus(corpus, out, ratio=0.5, workers=2, model=tiny_path, device="cpu")
    return summary, out


def test_bad_records_go_to_rejects_and_the_job_goes_on(two_workers):
    summary, out = two_workers
    assert isinstance(summary, CorpusSummary)
    assert (summary.records_in, summary.records_out, summary.records_rejected) == (
        N_GOOD + len(BAD_LINES), N_GOOD, len(BAD_LINES))
    rejects = {r["line"]: r for r in read_jsonl(out.with_name("out.jsonl.rejects.jsonl"))}
    assert set(rejects) == set(EXPECTED_REJECTS)
    for line, reason in EXPECTED_REJECTS.items():
        assert reason in rejects[line]["reason"], rejects[line]
    assert rejects[N_GOOD + 1]["id"] == "empty" and rejects[N_GOOD + 2]["id"] is None


def test_output_keeps_every_input_field_and_adds_counts(two_workers, corpus):
    summary, out = two_workers
    got = records_by_id(out)
    assert set(got) == {f"doc-{i}" for i in range(N_GOOD)}
    for i in range(N_GOOD):
        rec = got[f"doc-{i}"]
        assert rec["meta"] == {"n": i} and rec["text"].startswith(f"Record {i}.")
        assert isinstance(rec["text_compressed"], str) and rec["text_compressed"]
        assert 0 < rec["compressed_tokens"] < rec["original_tokens"]
    assert summary.tokens_before == sum(r["original_tokens"] for r in got.values())
    assert summary.tokens_after == sum(r["compressed_tokens"] for r in got.values())
    data = summary.to_dict()
    assert data["records_per_s"] > 0 and data["tokens_per_s"] > 0 and json.dumps(data)


def test_resume_of_a_finished_job_writes_nothing_twice(two_workers, corpus, tmp_path, capsys):
    _, done = two_workers
    out = tmp_path / "out.jsonl"
    shutil.copy(done, out)
    shutil.copy(done.with_name("out.jsonl.rejects.jsonl"), tmp_path / "out.jsonl.rejects.jsonl")
    summary = compress_corpus(corpus, out, ratio=0.5, resume=True, model="never-loaded", device="cpu",
                              progress=True)
    bar = capsys.readouterr().err
    assert "compressing: 100%" in bar and f"{N_GOOD + len(BAD_LINES)}/{N_GOOD + len(BAD_LINES)}" in bar
    assert (summary.records_out, summary.records_skipped, summary.records_rejected) == (0, N_GOOD, len(BAD_LINES))
    assert out.read_bytes() == done.read_bytes()
    assert len(read_jsonl(tmp_path / "out.jsonl.rejects.jsonl")) == len(BAD_LINES)


def test_resume_repairs_a_torn_line_and_one_worker_matches_two(two_workers, tiny_path, corpus, tmp_path):
    """Half the job done by 2 workers (1 thread each), killed mid-write; the rest by 1 worker (2 threads)."""
    _, done = two_workers
    lines = done.read_bytes().splitlines(keepends=True)
    half = N_GOOD // 2
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"".join(lines[:half]) + lines[half][: len(lines[half]) // 2])
    summary = compress_corpus(corpus, out, ratio=0.5, workers=1, resume=True, model=tiny_path, device="cpu")
    assert summary.repaired_bytes == len(lines[half]) // 2
    assert (summary.records_out, summary.records_skipped) == (N_GOOD - half, half)
    assert records_by_id(out) == records_by_id(done)
    by_line = lambda r: r["line"]  # noqa: E731
    assert sorted(read_jsonl(tmp_path / "out.jsonl.rejects.jsonl"), key=by_line) == sorted(
        read_jsonl(done.with_name("out.jsonl.rejects.jsonl")), key=by_line)


def test_resume_with_other_settings_is_refused(two_workers, corpus, tmp_path):
    _, done = two_workers
    out = tmp_path / "out.jsonl"
    shutil.copy(done, out)
    shutil.copy(done.with_name("out.jsonl.job.json"), tmp_path / "out.jsonl.job.json")
    with pytest.raises(ConfigError, match=r"ratio=0.3 \(was 0.5\)"):
        compress_corpus(corpus, out, ratio=0.3, resume=True, model="never-loaded")


def test_damage_before_the_last_line_is_refused(corpus, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "doc-0"}\nnot json\n{"id": "doc-1"}\n')
    with pytest.raises(LinguaCompressError, match="line 2 is not a JSON record"):
        compress_corpus(corpus, out, resume=True, model="never-loaded")


def test_existing_output_is_not_overwritten_without_resume(corpus, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "doc-0"}\n')
    with pytest.raises(ConfigError, match="--resume"):
        compress_corpus(corpus, out, model="never-loaded")
    assert main(["-i", str(corpus), "-o", str(out), "-q"]) == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"ratio": 0.0}, "ratio"), ({"ratio": 0.5, "target_tokens": 10}, "not both"), ({"target_tokens": -1}, "target"),
    ({"workers": 0}, "workers"), ({"engine": "spark"}, "engine"), ({"field": "id"}, "separate field"),
    ({"threads_per_worker": 0}, "threads_per_worker"), ({"chunk_records": 0}, "chunk_records"),
])
def test_bad_options_raise_config_error(corpus, tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        compress_corpus(corpus, tmp_path / "out.jsonl", model="never-loaded", **kwargs)


def test_missing_input_is_a_usage_error(tmp_path, capsys):
    assert main(["-i", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_stdin_input_through_the_cli(two_workers, corpus, tmp_path, monkeypatch, capsys):
    _, done = two_workers
    out = tmp_path / "out.jsonl"
    shutil.copy(done, out)  # all done already: this exercises stdin reading and resume without a model
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(corpus.read_bytes())))
    assert main(["-i", "-", "-o", str(out), "--resume", "--ratio", "0.5", "--model", "never-loaded"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records_skipped"] == N_GOOD and summary["records_rejected"] == len(BAD_LINES)


def test_txt_folder_uses_paths_as_ids(tiny_path, tmp_path, capsys):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("Weng earns $12 an hour for babysitting. The answer is 72.")
    (folder / "sub" / "b.txt").write_text("Betty is saving money for a new wallet which costs $100.")
    (folder / "empty.txt").write_text("\n")
    (folder / "skip.md").write_text("not a txt file")
    out = tmp_path / "out.jsonl"
    code = main(["-i", str(folder), "-o", str(out), "--workers", "1", "--model", tiny_path, "--device", "cpu", "-q"])
    assert code == 0
    got = records_by_id(out)
    assert set(got) == {"a.txt", "sub/b.txt"}  # relative to the folder: stable however it is spelled
    assert got["a.txt"]["text"].startswith("Weng earns")
    rejects = read_jsonl(tmp_path / "out.jsonl.rejects.jsonl")
    assert [r["id"] for r in rejects] == ["empty.txt"]
    assert json.loads(capsys.readouterr().out)["records_in"] == 3
    # the same folder spelled another way resumes onto the same ids; a glob names files as it matched them
    assert main(["-i", f"{tmp_path}/./docs/", "-o", str(out), "--resume", "--model", tiny_path, "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["records_skipped"] == 2
    glob_out = tmp_path / "glob.jsonl"
    assert main(["-i", str(folder / "e*.txt"), "-o", str(glob_out), "--model", "never-loaded", "-q",
                 "--rejects", str(tmp_path / "glob.rejects.jsonl")]) == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "glob.rejects.jsonl")] == [str(folder / "empty.txt")]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="the optional extra lingua_compress[ray] is not installed")
def test_ray_engine_writes_the_same_records_as_local(two_workers, tiny_path, corpus, tmp_path):
    _, local = two_workers
    out = tmp_path / "out.jsonl"
    summary = compress_corpus(corpus, out, ratio=0.5, workers=2, threads_per_worker=1, engine="ray",
                              model=tiny_path, device="cpu")
    assert (summary.engine, summary.records_out, summary.records_rejected) == ("ray", N_GOOD, len(BAD_LINES))
    assert records_by_id(out) == records_by_id(local)
    by_line = lambda r: r["line"]  # noqa: E731
    assert sorted(read_jsonl(tmp_path / "out.jsonl.rejects.jsonl"), key=by_line) == sorted(
        read_jsonl(local.with_name("out.jsonl.rejects.jsonl")), key=by_line)


@pytest.mark.parametrize("flag", ["-o", "--rejects"])
@pytest.mark.parametrize("resume", [False, True])
def test_a_directory_for_output_or_rejects_is_a_usage_error(corpus, tmp_path, capsys, flag, resume):
    args = {"-o": str(tmp_path / "out.jsonl"), "--rejects": str(tmp_path / "rej.jsonl")}
    args[flag] = str(tmp_path)
    argv = ["-i", str(corpus), "-q", "--model", "never-loaded", *[x for kv in args.items() for x in kv]]
    assert main(argv + (["--resume"] if resume else [])) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} is a directory" in err and "give a file path" in err
    assert "--resume" not in err  # rerunning cannot help


class _RaisingCompressor:
    """Stands in for a Compressor that refuses text with a lone surrogate, naming its position."""

    def compress(self, text, ratio, *, target_tokens=None):
        from types import SimpleNamespace

        from lingua_compress.errors import InvalidPromptError

        for pos, ch in enumerate(text):
            if "\ud800" <= ch <= "\udfff":
                raise InvalidPromptError(f"text has a lone surrogate {ch!r} at position {pos}; it is not valid "
                                         f"Unicode text")
        return SimpleNamespace(text=text[: len(text) // 2], original_tokens=len(text), compressed_tokens=len(text) // 2)


def _in_process_engine(engine, tasks, spec, workers, **kwargs):
    from lingua_compress.corpus.worker import RecordCompressor

    worker = RecordCompressor(spec)
    worker.compressor = _RaisingCompressor()
    return (worker(task) for task in tasks)


SURROGATE_LINES = (
    '{"id": "good", "text": "Natalia sold clips."}',
    '{"id": "bad", "text": "Natalia \\ud800 sold clips."}',  # a lone surrogate in the text
    '{"id": "x\\ud800", "text": "Weng earns money."}',  # ... in the id of a good record
    '{"id": "y\\ud800", "text": "   "}',  # ... in the id of a rejected record
)


def test_lone_surrogates_are_rejected_with_the_compressor_message(tmp_path, monkeypatch):
    import lingua_compress.corpus.job as job

    monkeypatch.setattr(job, "run_engine", _in_process_engine)
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(SURROGATE_LINES) + "\n")
    out = tmp_path / "out.jsonl"
    summary = compress_corpus(src, out, model="never-loaded", progress=False)
    assert (summary.records_out, summary.records_rejected) == (2, 2)
    assert set(records_by_id(out)) == {"good", "x\ud800"}  # written as valid UTF-8 (\u escapes), read back the same
    rejects = {r["line"]: r for r in read_jsonl(tmp_path / "out.jsonl.rejects.jsonl")}
    assert rejects[2]["reason"] == ("compression failed: InvalidPromptError: text has a lone surrogate '\\ud800' at "
                                    "position 8; it is not valid Unicode text")
    assert rejects[4]["id"] == "y\ud800" and "empty text" in rejects[4]["reason"]
    # a resume reads those lines back and finds everything done
    again = compress_corpus(src, out, model="never-loaded", progress=False, resume=True)
    assert (again.records_out, again.records_skipped, again.records_rejected) == (0, 2, 2)


def test_lone_surrogate_through_the_cli_and_a_real_worker(tiny_path, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(SURROGATE_LINES) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["-i", str(src), "-o", str(out), "--model", tiny_path, "--device", "cpu", "-q"]) == 0
    assert set(records_by_id(out)) == {"good", "x\ud800"}
    reason = {r["line"]: r["reason"] for r in read_jsonl(tmp_path / "out.jsonl.rejects.jsonl")}[2]
    assert reason.startswith("compression failed: ") and "\n" not in reason and "Traceback" not in reason
