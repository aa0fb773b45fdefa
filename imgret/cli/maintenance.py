"""Commands that look after a collection: check (and repair), compact, failures."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="verify a collection's files; --repair rebuilds what can be rebuilt",
        description="Verify collection.json, meta.sqlite (SQLite's integrity check), every "
        "embedding chunk against the manifest (present, shape, checksum), every item's row and "
        "the FAISS index. Prints what is wrong; exit code 0 when nothing is, 1 when something "
        "is. --repair rebuilds the index from the chunks and the manifest from the chunk files, "
        "drops items whose embeddings are lost (the next `imgret index` embeds their files "
        "again) and deletes leftovers of interrupted runs. Image files are never touched.",
    )
    p.add_argument("collection", help="collection folder")
    p.add_argument("--repair", action="store_true", help="repair what is wrong")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "compact",
        help="rewrite a collection's chunks without the rows of removed images",
        description="Removing images leaves their embeddings in the chunk files; compaction "
        "rewrites the chunks without them and rebuilds the index (crash-safe: interrupted, the "
        "collection keeps its old chunks). It runs by itself when more than a quarter of the "
        "rows are dead.",
    )
    p.add_argument("collection", help="collection folder")
    p.set_defaults(func=_cmd_compact)

    p = sub.add_parser(
        "failures",
        help="list every file a collection skipped, with the reason",
        description="Every file `imgret index`/`add` could not decode, with the reason. They "
        "are not tried again until they change.",
    )
    p.add_argument("collection", help="collection folder")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=_cmd_failures)


def _cmd_check(a: argparse.Namespace) -> int:
    from ..core.paths import display
    from ..jobs.maintenance import check

    report = check(a.collection, repair=a.repair)
    done = "repaired" if report.repaired else "--repair"
    for f in report.findings:
        kind = "problem" if f.damage else "note"
        print(f"{kind}: {f.file}: {f.problem}" + (f" ({done}: {f.repair})" if f.repair else ""))
    if report.reembed:
        print(f"{len(report.reembed):,} image(s) to embed again (`imgret index` on the "
              "collection's folder, or `imgret add`), e.g.:")  # fmt: skip
        for key in report.reembed[:5]:
            print(f"  {display(key)}")
    state = "damaged" if report.damaged else "sound"
    if report.repaired:
        state = "repaired" if report.damaged else "tidied"
    print(f"{report.path}: {state}; {report.items:,} images")
    return 1 if report.damaged and not report.repaired else 0


def _cmd_compact(a: argparse.Namespace) -> int:
    from ..jobs.maintenance import compact

    r = compact(a.collection, log=lambda _: None)
    if r.rows_before == r.rows_after:
        print(f"{a.collection}: nothing to compact ({r.rows_after:,} rows, none removed)")
        return 0
    print(f"{a.collection}: {r.rows_before:,} rows in {r.chunks_before} chunk(s) -> "
          f"{r.rows_after:,} in {r.chunks_after}; index {r.index}; "
          f"{r.bytes_freed / 1e6:,.1f} MB freed")  # fmt: skip
    return 0


def _cmd_failures(a: argparse.Namespace) -> int:
    from ..core.paths import display
    from ..jobs.maintenance import failures

    found = failures(a.collection)
    if a.json:
        print(json.dumps([{"key": display(k), "reason": r} for k, r in found], indent=2))
        return 0
    for key, reason in found:
        name = display(key)
        print(reason if reason.startswith(name) else f"{name}: {reason}")
    print(f"{len(found)} file(s) skipped", file=sys.stderr)
    return 0
