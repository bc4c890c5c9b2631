"""Kill the corpus job with SIGKILL at three points, resume each time, and check every id is written once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_corpus_support import read_jsonl, write_corpus
from tiny import save_tiny_model

N = 300
KILL_AFTER = (15, 90, 170)  # output lines present when each kill lands (later runs start from more)
WORKERS = (1, 2, 1)  # one run with two workers (more tasks in flight); one is cheaper to start on 2 cores

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL and process groups")


def _start(corpus: Path, out: Path, model: Path, resume: bool, workers: int = 1) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lingua_compress.corpus", "-i", str(corpus), "-o", str(out), "--ratio", "0.5",
           "--workers", str(workers), "--threads-per-worker", "1", "--model", str(model), "--device", "cpu", "-q"]
    if resume:
        cmd.append("--resume")
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    # A session of its own, so that cleanup can reach any worker the kill orphans.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _kill_when(proc: subprocess.Popen, out: Path, lines: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while _lines(out) < lines:
        if proc.poll() is not None:
            pytest.fail(f"the job ended before the kill point ({_lines(out)} lines): {proc.stderr.read()!r}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no kill point within {timeout} s ({_lines(out)} lines)")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # only the job's main process, as a user's kill -9 would
    proc.wait()
    return _lines(out)


def _reap(proc: subprocess.Popen) -> None:
    """Orphaned workers leave by themselves (they watch their parent); wait for that, then make sure."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("worker processes outlived the killed job by 10 s")


def test_kill_9_three_times_then_resume_writes_every_id_once(tmp_path):
    model = save_tiny_model(tmp_path / "tiny")
    corpus = write_corpus(tmp_path / "in.jsonl", N)
    out = tmp_path / "out.jsonl"
    seen = []
    for n, at in enumerate(KILL_AFTER):
        proc = _start(corpus, out, model, resume=n > 0, workers=WORKERS[n])
        seen.append(_kill_when(proc, out, at))
        _reap(proc)
    final = _start(corpus, out, model, resume=True)
    stdout, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, stderr.decode()
    ids = [rec["id"] for rec in read_jsonl(out)]  # also fails on any torn or corrupt line
    assert len(ids) == len(set(ids)), "an id was written twice"
    assert set(ids) == {f"doc-{i}" for i in range(N)}, "an id was lost"
    assert seen[0] < seen[1] < seen[2] < N, seen  # each kill landed mid-run, later than the one before
