"""Opening meta.sqlite: the schema and its upgrade, and SQLite failures as clear errors.

A missing, unreadable or malformed database is a DamagedError naming the file and
`imgret check --repair`; a full disk is a DiskFullError. Both are UserErrors, printed without a
traceback.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ..core.atomic import fsync_dir
from ..core.errors import DamagedError, DiskFullError

__all__ = ["SCHEMA_VERSION", "connect", "translated", "repair_hint", "upgrade_schema"]

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    row INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    size INTEGER,
    mtime_ns INTEGER,
    sha256 TEXT,
    label TEXT,
    cluster INTEGER
);
CREATE TABLE IF NOT EXISTS chunks (
    name TEXT PRIMARY KEY,
    first_row INTEGER NOT NULL,
    n_rows INTEGER NOT NULL,
    sha256 TEXT
);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY,
    size INTEGER,
    mtime_ns INTEGER,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS clustering (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    k INTEGER NOT NULL,
    inertia REAL NOT NULL,
    elbow TEXT,
    centroids BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


def repair_hint(folder: Path) -> str:
    return f"run `imgret check --repair {folder}` to repair the collection"


def _nearly_full(folder: Path) -> bool:
    """Whether `folder`'s disk has (almost) no space left: SQLite may then report a failed
    write to its shared-memory file as an I/O error rather than as a full disk."""
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def _translate(path: Path, e: sqlite3.Error) -> Exception:
    """A SQLite error as the error to raise: damaged file, full disk, or itself."""
    msg = str(e)
    if isinstance(e, sqlite3.OperationalError) and ("disk is full" in msg or (
        "disk I/O error" in msg and _nearly_full(path.parent)
    )):  # fmt: skip
        return DiskFullError(path)
    damaged = type(e) is sqlite3.DatabaseError or any(
        s in msg for s in ("malformed", "not a database", "no such table", "no such column",
                           "disk I/O error", "unable to open")
    )  # fmt: skip
    if damaged:
        return DamagedError(path, f"the collection's metadata is unreadable ({msg})",
                            repair_hint(path.parent))  # fmt: skip
    return e


@contextlib.contextmanager
def translated(path: Path) -> Iterator[None]:
    """Run SQLite statements with their failures translated (see the module docstring)."""
    try:
        yield
    except sqlite3.Error as e:
        raise _translate(path, e) from None


def connect(path: Path, *, create: bool = False) -> tuple[sqlite3.Connection, int]:
    """(connection, schema version) of meta.sqlite; `create` makes a new one (it must not exist).

    Opening never creates a missing database: that is a damaged collection, not an empty one.
    """
    path = Path(path)
    if not create and not path.is_file():
        raise DamagedError(path, "missing (the collection's metadata: its images and their "
                           "embedding rows)", repair_hint(path.parent))  # fmt: skip
    mode = "rwc" if create else "rw"
    with translated(path):
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True,
                                 isolation_level=None, check_same_thread=False)  # fmt: skip
        except sqlite3.OperationalError:
            if create:
                raise
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                 isolation_level=None, check_same_thread=False)  # fmt: skip
        try:
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA synchronous=FULL")
            if create:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
                fsync_dir(path.parent)
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            # A valid SQLite file that is not ours (or an empty one) has no items table.
            db.execute("SELECT 1 FROM items LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
    if version > SCHEMA_VERSION:
        db.close()
        raise DamagedError(path, f"metadata schema {version} is newer than this imgret reads "
                           f"({SCHEMA_VERSION})", "upgrade imgret")  # fmt: skip
    return db, version


def upgrade_schema(db: sqlite3.Connection, path: Path, version: int) -> int:
    """Bring a schema-1 database to the current schema (the caller holds the write lock)."""
    if version >= SCHEMA_VERSION:
        return version
    with translated(path):
        db.execute("BEGIN IMMEDIATE")
        try:
            cols = [r[1] for r in db.execute("PRAGMA table_info(chunks)").fetchall()]
            if "sha256" not in cols:
                db.execute("ALTER TABLE chunks ADD COLUMN sha256 TEXT")
            db.execute("CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, "
                       "value INTEGER NOT NULL)")  # fmt: skip
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return SCHEMA_VERSION
