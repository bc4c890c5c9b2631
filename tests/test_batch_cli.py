"""The batch CLI end to end against a loopback OpenAI-compatible server: answers, resume, cost summary."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lingua_compress.batch.cli import gsm8k_answer, main


@pytest.fixture
def arithmetic_server():
    calls = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append(body)
            last = body["messages"][-1]["content"]
            lines = [f"A[{i}]: {a} + {b} = {int(a) + int(b)}. The answer is {int(a) + int(b)}."
                     for i, a, b in re.findall(r"^Q\[(\d+)\]: What is (\d+) plus (\d+)\?$", last, re.M)]
            reply = {"choices": [{"message": {"content": "\n".join(reversed(lines))}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 50, "completion_tokens": 10}}
            payload = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", calls
    httpd.shutdown()
    httpd.server_close()


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cli_answers_resumes_and_summarises(tmp_path, arithmetic_server, capsys):
    url, calls = arithmetic_server
    _write(tmp_path / "q.jsonl", [{"id": f"x{i}", "question": f"What is {i} plus {i + 1}?"} for i in range(7)])
    _write(tmp_path / "d.jsonl", [{"question": f"What is {i} plus 1?", "answer": f"{i}+1=<<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}"}
                                  for i in range(4)])
    out = tmp_path / "a.jsonl"
    argv = [str(tmp_path / "q.jsonl"), "--demos", str(tmp_path / "d.jsonl"), "--batch-size", "3", "--gsm8k",
            "--base-url", url, "--model", "m", "-o", str(out), "--price-in", "1", "--price-out", "2", "--chunk", "3"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["id"]: r["answer"] for r in rows} == {f"x{i}": str(2 * i + 1) for i in range(7)}
    summary = json.loads(capsys.readouterr().out)
    assert summary["statuses"] == {"ok": 7}
    assert summary["cost"]["calls"] == 3 and summary["cost"]["usage_source"] == "api"
    assert summary["cost"]["usd"] == pytest.approx((150 * 1 + 30 * 2) / 1e6)
    assert "The answer is 1." in calls[0]["messages"][2]["content"]  # demo answers converted from '#### N'
    n_calls = len(calls)
    assert main(argv) == 0  # resume: everything already answered
    assert len(calls) == n_calls
    assert json.loads(capsys.readouterr().out)["skipped_already_ok"] == 7


def test_cli_bad_input_exit_code(tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text('{"id": 1, "text": "no question field"}\n')
    code = main([str(tmp_path / "q.jsonl"), "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                 "-o", str(tmp_path / "o.jsonl")])
    assert code == 2
    assert "--fields" in capsys.readouterr().err


def test_gsm8k_answer_conversion():
    assert gsm8k_answer("He has 2*3=<<2*3=6>>6.\nSo 6+1=<<6+1=7>>7\n#### 1,007") == \
        "He has 2*3=6. So 6+1=7 The answer is 1007."
