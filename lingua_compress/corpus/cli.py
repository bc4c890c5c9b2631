"""``lingua-compress corpus``: the corpus job from the command line; prints a JSON summary on stdout."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError, LinguaCompressError
from .engines import ENGINES

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lingua-compress corpus",
        description="Compress every record of a corpus once, offline. Resumable: rerun with --resume after "
                    "a crash or kill, and records already written are skipped.",
    )
    p.add_argument("-i", "--input", default="-",
                   help="JSONL file, '-' for stdin (default), or a folder or glob of .txt files (path = id)")
    p.add_argument("-o", "--output", required=True, help="output JSONL, appended to (required: it is the job state)")
    p.add_argument("--field", default="text", help="field holding the text to compress (default: text)")
    p.add_argument("--id-field", default="id", help="field holding each record's unique id (default: id)")
    p.add_argument("--output-field", default=None, help="field for the compressed text (default: <field>_compressed)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--ratio", type=float, default=None, help="kept/original tokens in (0, 1] (default: 0.3)")
    budget.add_argument("--target-tokens", type=int, default=None, help="token budget per record instead of --ratio")
    p.add_argument("--workers", type=int, default=1, help="parallel scorers (processes or Ray actors; default: 1)")
    p.add_argument("--threads-per-worker", type=int, default=None,
                   help="torch threads per worker (default: cores // workers)")
    p.add_argument("--engine", choices=ENGINES, default="local", help="local processes or Ray Data (default: local)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start a local Ray)")
    p.add_argument("--chunk-records", type=int, default=4096, help="records per Ray dataset (bounds memory)")
    p.add_argument("--resume", action="store_true", help="continue a killed or finished job: skip ids in --output")
    p.add_argument("--rejects", default=None, help="rejects JSONL (default: <output>.rejects.jsonl)")
    p.add_argument("--model", default=None, help="HF causal LM id or local path (default: embedded Gemma 3 270M)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: auto)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the corpus job; exit 0 when it finished (rejects included), 1 when it failed, 2 on bad usage."""
    from .job import compress_corpus

    args = build_parser().parse_args(argv)
    try:
        summary = compress_corpus(
            args.input, args.output, ratio=args.ratio, target_tokens=args.target_tokens, field=args.field,
            id_field=args.id_field, output_field=args.output_field, workers=args.workers,
            threads_per_worker=args.threads_per_worker, engine=args.engine, ray_address=args.ray_address,
            resume=args.resume, rejects=args.rejects, model=args.model, device=args.device,
            progress=False if args.quiet else None, chunk_records=args.chunk_records,
        )
    except ConfigError as exc:
        print(f"lingua-compress corpus: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (LinguaCompressError, OSError) as exc:
        print(f"lingua-compress corpus: failed: {exc}; rerun with --resume to continue", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("lingua-compress corpus: interrupted; rerun with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(json.dumps(summary.to_dict(), indent=2))
    return EXIT_OK
