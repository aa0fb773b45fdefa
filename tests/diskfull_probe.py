"""Run by tests/test_collection_crash.py as root of a private mount namespace (`unshare -rm`):
index a folder onto a small tmpfs filled to several levels; after each run, check that the
collection is consistent and holds no temporary file, free the space and index again.

usage: python diskfull_probe.py PHOTOS MODEL MOUNTPOINT; prints one line per level:
``free N: rc R ok`` (or ``... FAIL why``).
"""

from __future__ import annotations

import contextlib
import gc
import io
import shutil
import subprocess
import sys
from pathlib import Path

from imgret.cli import main
from imgret.store.check import check_collection
from imgret.store.opening import open_collection

LEVELS = [0, 4 << 10, 12 << 10, 24 << 10, 48 << 10, 96 << 10, 192 << 10, 384 << 10, 768 << 10,
          1536 << 10]  # bytes left free on the 2 MB tmpfs


def _run(*args: object) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([str(a) for a in args])
    gc.collect()
    return rc, err.getvalue()


def _consistent(coll: Path) -> str | None:
    """Why the collection is not consistent (None when it is, or when there is none)."""
    temps = [p.name for p in coll.rglob(".*.tmp")]
    if temps:
        return f"temporary files left: {temps}"
    if not (coll / "collection.json").exists():
        return None
    try:
        open_collection(coll).close()
        report = check_collection(coll)
    except Exception as e:  # noqa: BLE001 - reported as the probe's result
        return f"{type(e).__name__}: {e}"
    gc.collect()
    return "; ".join(f"{f.file}: {f.problem}" for f in report.findings if f.damage) or None


def main_() -> int:
    photos, model, mnt = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    mnt.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]).returncode:
        print("cannot mount")
        return 0
    failed = 0
    for free in LEVELS:
        coll, filler = mnt / "coll", mnt / "filler"
        shutil.rmtree(coll, ignore_errors=True)
        filler.unlink(missing_ok=True)
        room = shutil.disk_usage(mnt).free - free
        with open(filler, "wb") as f:
            f.write(bytes(max(room, 0)))
        args = ("index", photos, "--out", coll, "--model", model, "--workers", "0",
                "--chunk-size", "5")  # fmt: skip
        rc, err = _run(*args)
        why = None
        if rc not in (0, 2):
            why = f"exit code {rc}"
        elif "Traceback" in err or (rc == 2 and "no space left" not in err):
            why = f"message: {err.strip()[-300:]}"
        elif rc == 2 and len(err.strip().splitlines()) != 1 + err.count("to embed"):
            why = f"not one line: {err.strip()[-300:]}"
        why = why or _consistent(coll)
        filler.unlink()
        rc2, err2 = _run(*args)
        if why is None and rc2 != 0:
            why = f"the run after freeing space failed: {err2.strip()[-300:]}"
        if why is None:
            with open_collection(coll) as c:
                why = None if len(c) == 24 else f"{len(c)} images after the second run"
        failed += why is not None
        print(f"free {free}: rc {rc} " + ("ok" if why is None else f"FAIL {why}"), flush=True)
        if rc == 2:
            print(f"  {err.strip().splitlines()[-1]}")
    subprocess.run(["umount", str(mnt)])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_())
