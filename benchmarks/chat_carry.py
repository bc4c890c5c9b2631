"""bench_chat: a result whose method's code changed, but whose compressed history did not, keeps its score.

A method's fingerprint hashes whole library files, so a change off the chat path (a new argument of another entry
point in the same module) marks every result stale, and rescoring costs the target's full NLL pass per condition.
Each result therefore records a digest of the compressed messages it scored (``out``). When the code changes, the
history is compressed again (seconds); if the digest is unchanged the reply's NLL is too, and the result is carried
over under the new fingerprint, with ``carried_from`` naming the old one. Results made before digests were kept are
given theirs by :func:`backfill`, compressing again with the code that made them (their fingerprint is current).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable

Messages = list[dict[str, Any]]


def out_digest(messages: Messages) -> str:
    return hashlib.sha1(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def carry(old: dict | None, item: dict, out: str, fp: str, compress_s: float) -> dict | None:
    """``old`` under fingerprint ``fp`` if it scored this item's text compressed to the same messages, else None."""
    if not old or old.get("out") != out or old.get("digest") != item["digest"] or old.get("fp") == fp:
        return None
    return {**old, "fp": fp, "compress_s": compress_s, "carried_from": old.get("carried_from", old["fp"])}


def backfill(store: Any, items: list[dict], done: dict, make: Callable[[str], Any], count: Callable,
             progress: Callable[[str], None] | None = None) -> int:
    """Give every current result without a digest its digest: the history compressed again by today's code, which
    is the code that made the result (its fingerprint is current). Returns how many were filled."""
    by_id = {it["id"]: it for it in items}
    fns: dict[str, Any] = {}
    filled = 0
    for key, row in list(done.items()):
        method, ratio, cid = key
        if "out" in row or method in ("full", "no-history") or cid not in by_id:
            continue
        if method not in fns:
            fns[method] = make(method)
        t = time.perf_counter()
        messages = fns[method](by_id[cid]["history"], ratio, count)
        new = {**row, "out": out_digest(messages), "backfill_s": round(time.perf_counter() - t, 3)}
        store.add(new)
        done[key] = new
        filled += 1
        if progress:
            progress(f"{method} {ratio} {cid}: {new['out']}")
    return filled
