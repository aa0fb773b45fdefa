"""What an experiment script printed, kept per command in bench/results/<name>.json and shown in
bench/results/<name>.md (a BENCHMARKS.md part): `say` prints and keeps a line, `save` stores
this run's lines under its command (the last run of each command) and renders the section."""

from __future__ import annotations

import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
OUTPUT: list[str] = []  # what this run printed


def say(line: str) -> None:
    print(line, flush=True)
    OUTPUT.append(line)


def save(name: str, header: list[str], command: str, seconds: float, threads: int) -> None:
    """Keep this command's output and write `name`.md: `header`, then every command's lines."""
    from imgret.core.atomic import read_json, write_json, write_text

    log_path = RESULTS / f"{name}.json"
    log = read_json(log_path) if log_path.exists() else {}
    log[command] = {
        "date": time.strftime("%Y-%m-%d"), "seconds": round(seconds),
        "machine": f"{platform.machine()}, {threads} threads", "output": OUTPUT,
    }  # fmt: skip
    write_json(log_path, log)
    lines = list(header)
    for cmd, run in log.items():
        lines += ["", f"`{cmd}` ({run['date']}, {run['seconds']} s, {run['machine']}):", ""]
        lines += [f"    {line}" for line in run["output"]]
    write_text(RESULTS / f"{name}.md", "\n".join(lines) + "\n")
