"""Join the JSON documents of a job's shares (:mod:`preempt.pipeline.shard`) into the document one run writes.

Each share's document carries ``"shard": {"index", "count", "positions"}`` (``positions``: each row's index
among the job's inputs).  :func:`merge` checks that every share is there once and that they ran the same
job, puts the rows back in input order, and for ``preempt verify`` recomputes the summary from the rows.
"""
from __future__ import annotations

import time
from typing import Any

from ..errors import UsageError
from .results import FileResult


class MergeError(UsageError):
    """The documents are not the shares of one job; str() says which and why."""


def shard_doc(doc: dict, shard, results: list[FileResult]) -> dict:
    """``doc`` (a robustify or verify document) marked as ``shard``'s share, with each row's input position."""
    if shard is None:
        return doc
    return {**doc, "shard": {**shard.to_dict(), "positions": [r.position for r in results]}}


def kind(doc: dict) -> str:
    """``verify`` or ``robustify``: which command wrote this document."""
    if "summary" in doc and "images" in doc:
        return "verify"
    if "files" in doc and "config" in doc:
        return "robustify"
    raise MergeError("not a preempt robustify or verify JSON document")


_SAME = {"verify": ("model", "attack"), "robustify": ("model", "config", "out")}


def merge(docs: list[tuple[str, dict]]) -> dict:
    """``docs``: (name, document) per share, in any order.  Returns the one-run document."""
    if not docs:
        raise MergeError("no documents to merge")
    kinds = {kind(d) for _, d in docs}
    if len(kinds) > 1:
        raise MergeError("documents of robustify and of verify cannot be merged together")
    what = kinds.pop()
    shards = _check_shares(docs)
    first = shards[0][1]
    for name, d in shards[1:]:
        for key in _SAME[what]:
            if d.get(key) != first.get(key):
                raise MergeError(f"{name}: another {key} than {shards[0][0]} (not a share of the same job)")
    rows_key = "images" if what == "verify" else "files"
    rows: list[tuple[int, dict]] = []
    for name, d in shards:
        pos = d["shard"].get("positions") or []
        if len(pos) != len(d[rows_key]):
            raise MergeError(f"{name}: {len(d[rows_key])} rows but {len(pos)} positions")
        rows += list(zip(pos, d[rows_key]))
    rows.sort(key=lambda pr: (pr[0] is None, pr[0] if pr[0] is not None else 0))
    merged_rows = [r for _, r in rows]
    out = {k: v for k, v in first.items() if k != "shard"}
    if what == "robustify":
        return {**out, "files": merged_rows}
    from .report import summarize

    results = [FileResult.from_dict(r) for r in merged_rows]
    doc = summarize(results, first["attack"], model=first["model"], device=first["device"])
    doc["flags"] = _merged_flags([d.get("flags", []) for _, d in shards])
    doc["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return doc


def _check_shares(docs: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The documents sorted by share, after checking that each of 0 … N-1 is there exactly once."""
    for name, d in docs:
        if "shard" not in d:
            raise MergeError(f"{name}: not a share (written without --shard or torchrun); nothing to merge it with")
    counts = {d["shard"]["count"] for _, d in docs}
    if len(counts) > 1:
        raise MergeError(f"shares of different splits ({', '.join(f'N={c}' for c in sorted(counts))})")
    n = counts.pop()
    seen: dict[int, str] = {}
    for name, d in docs:
        k = d["shard"]["index"]
        if k in seen:
            raise MergeError(f"{name}: share {k}/{n} again (also {seen[k]})")
        seen[k] = name
    missing = [str(k) for k in range(n) if k not in seen]
    if missing:
        raise MergeError(f"share(s) {', '.join(missing)} of {n} missing: run them (they resume) and merge again")
    return sorted(docs, key=lambda nd: nd[1]["shard"]["index"])


def _merged_flags(per_share: list[list[dict]]) -> list[dict[str, Any]]:
    """One honesty flag per name: raised if any share raised it (its detail), else the first share's."""
    out: dict[str, dict] = {}
    for flags in per_share:
        for f in flags:
            name = str(f.get("name"))
            if name not in out or (f.get("raised") and not out[name].get("raised")):
                out[name] = f
    return list(out.values())
