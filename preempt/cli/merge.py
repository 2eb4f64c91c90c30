"""``preempt merge``: the shares' JSON documents (``--shard`` / torchrun, ``--save-json``) as one run's."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import EXIT_ERROR, EXIT_NOT_ROBUST, EXIT_OK, PreemptError
from .common import err_console, print_json, save_json
from .tables import summary_table, verify_table


def merge_cmd(
    files: list[Path] = typer.Argument(..., help="The shares' JSON files (robustify's or verify's --save-json)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the merged JSON here (default: stdout)."),
) -> None:
    """Merge the JSON of a job's shares into the document one run writes (rows in input order; verify's summary
    recomputed). Exit codes as the command merged: 0 all robust, 1 a file failed, 3 a photo not robust."""
    from ..pipeline.merge import kind, merge
    from ..pipeline.results import FileResult

    docs = []
    for f in files:
        try:
            docs.append((str(f), json.loads(f.read_text())))
        except (OSError, ValueError) as e:
            raise PreemptError(f"{f}: cannot read it as JSON ({getattr(e, 'strerror', None) or e})") from e
    doc = merge(docs)  # a MergeError (usage) says which shares do not belong together
    what = kind(doc)
    results = [FileResult.from_dict(r) for r in doc["images" if what == "verify" else "files"]]
    if what == "verify":
        err_console.print(verify_table(results, f"merged {len(files)} shares: verify on {doc['model']}",
                                       any(r.original for r in results)))
        s = doc["summary"]
        failed, broken = s["failed"], s["not_robust"]
    else:
        err_console.print(summary_table(results, title=f"merged {len(files)} shares: robustified into {doc['out']}/"))
        failed, broken = sum(r.status == "failed" for r in results), sum(r.breaks_claim for r in results)
    if output is None:
        print_json(doc)
    else:
        save_json(output, doc)
    raise typer.Exit(EXIT_ERROR if failed else EXIT_NOT_ROBUST if broken else EXIT_OK)
