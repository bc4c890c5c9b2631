"""Throughput and memory of the corpus job: local 1 worker, local 2 workers, Ray 2 actors, one torch thread each.

    python benchmarks/bench_corpus.py [DATA.jsonl] [--n 500] [--ratio 0.3] [--runs local:1:1,local:2:1,ray:2:1]

The corpus is the first --n GSM8K train solutions (field ``answer``; an ``id`` is added). Each run is a fresh
``python -m lingua_compress.corpus`` process, so worker start-up and model loading are included, as a user
would see them; records/s and tokens/s come from the job's own summary. steady_records_per_s leaves out the
time to the first record (start-up, model loading); Ray hands results back a block (16 records) at a time, so
its first record arrives late and its steady figure is inflated: compare Ray on records_per_s. Peak RSS is the
largest sum over the job's whole process tree (driver, workers, and Ray's own processes for the Ray run),
sampled every 0.2 s. The runs' outputs are compared record by record. Results are printed as JSON and saved
under --out, with a bar chart when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
DEFAULT_RUNS = "local:1:1,local:2:1,ray:2:1"


def build_corpus(data: Path, n: int, path: Path) -> int:
    """Write the first ``n`` records of ``data`` with an ``id``, streaming; returns how many were written."""
    count = 0
    with data.open(encoding="utf-8") as src, path.open("w", encoding="utf-8") as dst:
        for count, line in enumerate(src, 1):
            dst.write(json.dumps({"id": count, **json.loads(line)}) + "\n")
            if count == n:
                break
    return count


def tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_one(spec: str, corpus: Path, workdir: Path, args: argparse.Namespace) -> dict:
    engine, workers, threads = spec.split(":")
    out = workdir / f"{engine}-{workers}x{threads}.jsonl"
    cmd = [sys.executable, "-m", "lingua_compress.corpus", "-i", str(corpus), "-o", str(out), "--field", "answer",
           "--ratio", str(args.ratio), "--engine", engine, "--workers", workers, "--threads-per-worker", threads,
           "-q"]
    if args.model:
        cmd += ["--model", args.model]
    peak, started = 0, time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import psutil  # noqa: F401
        sample = True
    except ImportError:
        sample = False
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid)) if sample else 0
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{spec} failed ({proc.returncode}):\n{stderr[-3000:]}")
    summary = json.loads(stdout)
    return {
        "run": spec, "engine": engine, "workers": int(workers), "threads_per_worker": int(threads),
        "records": summary["records_out"], "rejected": summary["records_rejected"],
        "records_per_s": summary["records_per_s"], "tokens_per_s": summary["tokens_per_s"],
        "tokens_before": summary["tokens_before"], "tokens_after": summary["tokens_after"],
        "steady_records_per_s": summary["steady_records_per_s"], "start_s": summary["first_record_s"],
        "wall_s": summary["wall_s"], "process_s": time.perf_counter() - started,
        "peak_rss_mb": round(peak / 2**20, 1) if sample else None, "output": str(out),
    }


def same_records(paths: list[str]) -> bool:
    def load(path: str) -> dict:
        with open(path, encoding="utf-8") as fh:
            return {rec["id"]: rec for rec in map(json.loads, fh)}

    first = load(paths[0])
    return all(load(p) == first for p in paths[1:])


def plot(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([r["run"] for r in results], [r["records_per_s"] for r in results])
    ax.set_ylabel("records/s (start-up included)")
    ax.set_title("corpus job, GSM8K solutions, ratio 0.3")
    fig.tight_layout()
    fig.savefig(path)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA, help="JSONL with an 'answer' field")
    ap.add_argument("--n", type=int, default=500, help="records to compress (default 500)")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="engine:workers:threads, comma-separated")
    ap.add_argument("--model", default=None, help="scorer (default: the embedded Gemma 3 270M)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_corpus_") as tmp:
        workdir = Path(tmp)
        corpus = workdir / "corpus.jsonl"
        n = build_corpus(args.data, args.n, corpus)
        results = []
        for spec in args.runs.split(","):
            results.append(run_one(spec.strip(), corpus, workdir, args))
            print(json.dumps(results[-1]), flush=True)
        identical = same_records([r.pop("output") for r in results])
    by_run = {r["run"]: r for r in results}
    base = by_run.get("local:1:1")
    report = {
        "benchmark": "corpus", "data": str(args.data), "n": n, "ratio": args.ratio, "model": args.model or "default",
        "cpu_count": os.cpu_count(), "load_avg_1m_at_end": os.getloadavg()[0],
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "identical_records": identical,
        "runs": results,
        "speedup_vs_local_1": {r["run"]: r["records_per_s"] / base["records_per_s"] for r in results} if base else None,
    }
    if base and base["steady_records_per_s"]:  # local runs only: Ray's first record waits for a whole block
        report["steady_speedup_vs_local_1"] = {
            r["run"]: (r["steady_records_per_s"] or 0.0) / base["steady_records_per_s"]
            for r in results if r["engine"] == "local"}
    if "local:2:1" in by_run and "ray:2:1" in by_run:
        report["ray_vs_local_2"] = by_run["ray:2:1"]["records_per_s"] / by_run["local:2:1"]["records_per_s"]
    print(json.dumps(report, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_corpus.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, args.out / "bench_corpus.png")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
