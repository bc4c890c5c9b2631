"""Hardening of the batch CLI and runner: ids unique across the whole input and distinct by type, idempotent
reruns (each id once in the output, the bar counting each question once), and exit codes as documented."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lingua_compress.batch import GSM8K_PATTERN, BatchConfig, BatchFormat, Sample, run_batched
from lingua_compress.batch.cli import main, read_samples
from lingua_compress.errors import ConfigError, ModelLoadError
from lingua_compress.llm import Completion, LLMRequestError

QUESTION = re.compile(r"^Q\[(\d+)\]: What is (\d+) plus (\d+)\?$", re.M)


def question(i: int) -> str:
    return f"What is {i} plus {i + 1}?"


@pytest.fixture
def server():
    """An OpenAI-compatible chat server doing sums. ``state["status"]`` != 200 fails every call with that HTTP
    status; questions in ``state["drop_once"]`` are left unanswered the first time they are asked."""
    state = {"status": 200, "drop_once": set(), "calls": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["calls"].append(body)
            if state["status"] != 200:
                self._send(state["status"], {"error": {"message": "invalid api key"}})
                return
            lines = []
            for i, a, b in QUESTION.findall(body["messages"][-1]["content"]):
                q = f"What is {a} plus {b}?"
                if q in state["drop_once"]:
                    state["drop_once"].discard(q)
                    continue
                lines.append(f"A[{i}]: The answer is {int(a) + int(b)}.")
            self._send(200, {"choices": [{"message": {"content": "\n".join(lines)}, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 40, "completion_tokens": 8}})

        def _send(self, code, reply):
            payload = json.dumps(reply).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def argv(questions, out, url, *extra):
    return [str(questions), "--base-url", url, "--model", "m", "-o", str(out), "--gsm8k", "--batch-size", "4",
            *extra]


def typed(value):
    """A JSON value with its type, so that 4 and "4" compare different."""
    return (type(value).__name__, value)


class SumLLM:
    """A completion-mode fake answering sums; questions in ``drop_once`` are skipped the first time."""

    name = "sum"
    max_concurrency = 2
    chat = False

    def __init__(self, drop_once=()):
        self.drop_once, self.calls = set(drop_once), 0
        self.lock = threading.Lock()

    def complete(self, prompt, *, max_tokens, stop=(), temperature=0.0):
        with self.lock:
            self.calls += 1
        lines = []
        for i, a, b in QUESTION.findall(prompt.split("\n\n")[-1]):
            q = f"What is {a} plus {b}?"
            with self.lock:
                if q in self.drop_once:
                    self.drop_once.discard(q)
                    continue
            lines.append(f"A[{i}]: The answer is {int(a) + int(b)}.")
        text = "\n".join(lines)
        return Completion(text[len("A[1]:"):] if text.startswith("A[1]:") else "\n" + text, None, None, "stop")


# ------------------------------------------------------------------------------------------ ids

def test_duplicate_ids_far_apart_are_refused_before_any_call(tmp_path, server, capsys):
    rows = [{"id": f"x{i}", "question": question(i)} for i in range(40)]
    rows[39]["id"] = "x0"  # 39 lines after the first x0: in another 32-question chunk
    qs = write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "a.jsonl"
    assert main(argv(qs, out, server["url"], "--chunk", "32")) == 2
    err = capsys.readouterr().err
    assert "'x0'" in err and "line 1" in err and "line 40" in err
    assert server["calls"] == [] and not out.exists()


def test_int_and_str_ids_stay_distinct_and_resume_by_type(tmp_path, server, capsys):
    rows = [{"id": 4, "question": question(1)}, {"id": "4", "question": question(2)},
            {"question": question(3)},  # no id: its line number, 3 (an int)
            {"id": "3", "question": question(4)}]
    qs = write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "a.jsonl"
    assert main(argv(qs, out, server["url"])) == 0
    got = {typed(r["id"]): r["answer"] for r in read_rows(out)}
    assert got == {typed(4): "3", typed("4"): "5", typed(3): "7", typed("3"): "9"}
    capsys.readouterr()
    n_calls = len(server["calls"])
    assert main(argv(qs, out, server["url"])) == 0  # a rerun finds every id, of either type, done
    assert len(server["calls"]) == n_calls
    assert json.loads(capsys.readouterr().out)["skipped_already_ok"] == 4
    assert len(read_rows(out)) == 4


def test_missing_id_colliding_with_an_explicit_id_is_refused(tmp_path):
    qs = write_jsonl(tmp_path / "q.jsonl", [{"question": question(0)}, {"id": 1, "question": question(1)}])
    with pytest.raises(ConfigError, match=r"line 2 .*line 1.*no 'id'.*line number"):
        read_samples(qs, ["question"], None)


@pytest.mark.parametrize("bad", [None, 1.5, True, [1], {"a": 1}, ""])
def test_ids_of_other_types_are_refused_with_the_line(tmp_path, bad):
    qs = write_jsonl(tmp_path / "q.jsonl", [{"id": "ok", "question": "a?"}, {"id": bad, "question": "b?"}])
    with pytest.raises(ConfigError, match=r"q.jsonl:2 .*string or an integer"):
        read_samples(qs, ["question"], None)


ID_CHOICES = st.one_of(st.none(), st.integers(0, 6), st.sampled_from(["0", "1", "2", "3", "4", "a", "b"]))


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(ID_CHOICES, min_size=1, max_size=10))
def test_ids_are_unique_by_type_or_refused_naming_both_lines(tmp_path_factory, ids):
    """Property: every line gets its own typed id (missing = its line number), or the first clash is refused."""
    path = tmp_path_factory.mktemp("ids") / "q.jsonl"
    write_jsonl(path, [{"question": f"q{n}?"} if i is None else {"id": i, "question": f"q{n}?"}
                       for n, i in enumerate(ids, 1)])
    want = [typed(n if i is None else i) for n, i in enumerate(ids, 1)]
    first: dict = {}
    clash = None
    for n, key in enumerate(want, 1):
        if key in first:
            clash = (first[key], n)
            break
        first[key] = n
    if clash is not None:
        with pytest.raises(ConfigError) as info:
            read_samples(path, ["question"], None)
        assert f"line {clash[0]}" in str(info.value) and f"line {clash[1]}" in str(info.value)
        return
    samples = read_samples(path, ["question"], None)
    assert [typed(json.loads(s.id)) for s in samples] == want


# ------------------------------------------------------------------------------------------ reruns

def test_rerun_asks_again_only_failed_ids_and_writes_each_id_once(tmp_path, server, capsys):
    qs = write_jsonl(tmp_path / "q.jsonl", [{"id": f"x{i}", "question": question(i)} for i in range(6)])
    out = tmp_path / "a.jsonl"
    server["drop_once"] = {question(2)}
    assert main(argv(qs, out, server["url"], "--max-retries", "0")) == 1
    first = {r["id"]: r for r in read_rows(out)}
    assert first["x2"]["status"] == "missing" and len(first) == 6
    capsys.readouterr()
    n_calls = len(server["calls"])
    assert main(argv(qs, out, server["url"], "--max-retries", "0")) == 0
    assert len(server["calls"]) == n_calls + 1  # only x2 is asked again
    rows = read_rows(out)
    assert sorted(r["id"] for r in rows) == [f"x{i}" for i in range(6)]  # x2 once: its new line replaced the old
    assert all(r["status"] == "ok" for r in rows)
    summary = json.loads(capsys.readouterr().out)
    assert summary["statuses"] == {"ok": 6} and summary["skipped_already_ok"] == 5


def test_progress_bar_counts_each_question_once(tmp_path, server, capsys):
    qs = write_jsonl(tmp_path / "q.jsonl", [{"id": f"x{i}", "question": question(i)} for i in range(6)])
    server["drop_once"] = {question(1), question(4)}  # both asked twice: a re-ask must not move the bar
    assert main(argv(qs, tmp_path / "a.jsonl", server["url"], "--max-retries", "1")) == 0
    counts = [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+) \[", capsys.readouterr().err)]
    assert counts and counts[-1] == (6, 6) and all(a <= b for a, b in counts)


def test_rerun_after_a_torn_last_line_leaves_whole_lines(tmp_path, server):
    qs = write_jsonl(tmp_path / "q.jsonl", [{"id": f"x{i}", "question": question(i)} for i in range(5)])
    out = tmp_path / "a.jsonl"
    assert main(argv(qs, out, server["url"])) == 0
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - 20])  # killed in the middle of writing the last line
    assert main(argv(qs, out, server["url"])) == 0
    rows = read_rows(out)
    assert sorted(r["id"] for r in rows) == [f"x{i}" for i in range(5)] and all(r["status"] == "ok" for r in rows)


def test_an_output_that_is_not_an_answers_file_is_left_alone(tmp_path, server, capsys):
    qs = write_jsonl(tmp_path / "q.jsonl", [{"id": f"x{i}", "question": question(i)} for i in range(3)])
    before = qs.read_bytes()
    assert main(argv(qs, qs, server["url"])) == 2  # -o names the questions file itself
    assert qs.read_bytes() == before and server["calls"] == []
    other = write_jsonl(tmp_path / "other.jsonl", [{"id": "x0", "question": "not an answer"}])
    assert main(argv(qs, other, server["url"])) == 2
    assert "line 1" in capsys.readouterr().err and server["calls"] == []


def test_run_batched_reports_progress_once_per_sample():
    samples = [Sample(f"s{i}", f"What is {i} plus {i + 1}?") for i in range(7)]
    seen = []
    llm = SumLLM(drop_once={samples[0].text, samples[5].text})
    res = run_batched(samples, llm, config=BatchConfig(batch_size=3, max_retries=2),
                      fmt=BatchFormat(answer_pattern=GSM8K_PATTERN), progress=seen.append)
    assert res.status_counts == {"ok": 7} and llm.calls > 3
    assert sum(seen) == 7


# ------------------------------------------------------------------------------------------ exit codes

def test_api_failure_exits_3_as_documented(tmp_path, server, capsys):
    qs = write_jsonl(tmp_path / "q.jsonl", [{"id": f"x{i}", "question": question(i)} for i in range(3)])
    out = tmp_path / "a.jsonl"
    server["status"] = 401
    assert main(argv(qs, out, server["url"])) == 3
    captured = capsys.readouterr()
    assert "HTTP 401" in captured.err
    assert json.loads(captured.out)["statuses"] == {"missing": 3}
    assert all("call failed" in r["note"] for r in read_rows(out))
    server["status"] = 200
    assert main(argv(qs, out, server["url"])) == 0  # the rerun answers them, each once
    assert sorted(r["id"] for r in read_rows(out)) == ["x0", "x1", "x2"]


def test_unparseable_answers_exit_1_not_3(tmp_path, server):
    qs = write_jsonl(tmp_path / "q.jsonl", [{"id": "x0", "question": question(0)}])
    server["drop_once"] = {question(0)}
    assert main(argv(qs, tmp_path / "a.jsonl", server["url"], "--max-retries", "0")) == 1


def test_output_directory_is_a_usage_error(tmp_path, server, capsys):
    qs = write_jsonl(tmp_path / "q.jsonl", [{"id": "x0", "question": question(0)}])
    assert main(argv(qs, tmp_path, server["url"])) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "file" in err and server["calls"] == []


def test_model_load_failure_stops_the_run():
    class Unloadable(SumLLM):
        def complete(self, prompt, **kw):
            raise ModelLoadError("no model at /nowhere")

    with pytest.raises(ModelLoadError, match="/nowhere"):
        run_batched([Sample("a", "What is 1 plus 2?")], Unloadable(), count_tokens=len)


def test_a_call_that_fails_every_time_is_marked_as_a_call_failure():
    class Down(SumLLM):
        def complete(self, prompt, **kw):
            self.calls += 1
            raise LLMRequestError("HTTP 503")

    res = run_batched([Sample(f"s{i}", "What is 1 plus 2?") for i in range(3)], Down(),
                      config=BatchConfig(batch_size=2), count_tokens=len)
    assert res.call_failures == ("s0", "s1", "s2")
    assert all(r.call_error == "HTTP 503" and r.status == "missing" for r in res.items.values())


def test_output_in_a_missing_folder_is_a_usage_error(tmp_path, server, capsys):
    qs = write_jsonl(tmp_path / "q.jsonl", [{"id": "x0", "question": question(0)}])
    assert main(argv(qs, tmp_path / "nope" / "a.jsonl", server["url"])) == 2
    assert "does not exist" in capsys.readouterr().err and server["calls"] == []


def test_lone_surrogates_in_ids_and_answers_are_written_as_valid_utf8(tmp_path, server):
    qs = tmp_path / "q.jsonl"
    qs.write_text('{"id": "x\\ud800", "question": "What is 1 plus 2?"}\n')
    out = tmp_path / "a.jsonl"
    assert main(argv(qs, out, server["url"])) == 0
    rows = read_rows(out)  # read_text(encoding="utf-8") fails on a line that is not UTF-8
    assert [r["id"] for r in rows] == ["x\ud800"] and rows[0]["answer"] == "3"
    assert main(argv(qs, out, server["url"])) == 0 and len(read_rows(out)) == 1


def test_missing_questions_file_is_a_usage_error(tmp_path, server, capsys):
    assert main(argv(tmp_path / "nope.jsonl", tmp_path / "a.jsonl", server["url"])) == 2
    assert "nope.jsonl is not a file" in capsys.readouterr().err
