"""Memory and CPU of a process and all its descendants, sampled by a separate process.

The sampler runs as its own process (`python -m bench.proctree ROOT LOG INTERVAL`), outside
the tree it measures, so that reading /proc costs the measured processes nothing. Every
INTERVAL seconds it appends a line to LOG: the time, the proportional set size of the tree
(shared pages, such as libraries and Ray's object store, counted once), ROOT's CPU-seconds
and those of every descendant seen so far (each at its last sample). `ProcessTree` starts it
and reads the log: the peak memory and the CPU spent between two moments.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def sample(root: int, tick: int, cpu: dict[int, float], me: int) -> int:
    """One sample: updates `cpu` (pid -> CPU-seconds, the root's included) and returns the
    tree's PSS in bytes."""
    parents = {}
    fields_of = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                text = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            parents[int(entry.name)] = int(fields[1])
            fields_of[int(entry.name)] = fields
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent and p != me]
        tree.update(kids)
        frontier += kids
    pss = 0
    for pid in tree:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        pss += next(int(line.split()[1]) * 1024 for line in rollup.splitlines()
                    if line.startswith("Pss:"))  # fmt: skip
        f = fields_of[pid]
        cpu[pid] = (int(f[11]) + int(f[12])) / tick
    return pss


def run(root: int, log: Path, interval: float) -> None:
    tick, me = os.sysconf("SC_CLK_TCK"), os.getpid()
    cpu: dict[int, float] = {}
    with open(log, "a", buffering=1) as out:
        while os.path.exists(f"/proc/{root}"):
            pss = sample(root, tick, cpu, me)
            others = sum(c for pid, c in cpu.items() if pid != root)
            out.write(f"{time.time():.3f} {pss} {cpu.get(root, 0.0):.3f} {others:.3f}\n")
            time.sleep(interval)


class ProcessTree:
    """The sampler of this process's tree, and what its log says about a time range."""

    def __init__(self, log: Path, interval: float = 0.2) -> None:
        self.log = log
        log.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "bench.proctree", str(os.getpid()), str(log), str(interval)]
        self.proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parent.parent)
        self.interval = interval
        while not log.exists() or not log.read_text():
            time.sleep(0.05)

    def _lines(self) -> list[tuple[float, ...]]:
        return [tuple(float(v) for v in line.split())
                for line in self.log.read_text().splitlines()]  # fmt: skip

    def cpu_at(self, at: float) -> tuple[float, float]:
        """(the root's, its descendants') CPU-seconds at time `at`, interpolated between the
        samples around it (waiting for the sample after it)."""
        while True:
            lines = self._lines()
            after = next((i for i, line in enumerate(lines) if line[0] >= at), None)
            if after is not None:
                break
            time.sleep(self.interval / 2)
        t1, _, root1, kids1 = lines[after]
        if after == 0:
            return root1, kids1
        t0, _, root0, kids0 = lines[after - 1]
        w = (at - t0) / (t1 - t0) if t1 > t0 else 1.0
        return root0 + w * (root1 - root0), kids0 + w * (kids1 - kids0)

    def window(self, start: float, end: float) -> dict[str, float]:
        """Seconds, the root's CPU and all CPU (root and descendants) from `start` to `end`."""
        (r0, k0), (r1, k1) = self.cpu_at(start), self.cpu_at(end)
        return {"seconds": end - start, "driver": r1 - r0, "all": r1 + k1 - r0 - k0}

    def peak(self, start: float, end: float) -> int:
        """The largest PSS of the tree sampled between `start` and `end`."""
        return int(max((line[1] for line in self._lines() if start <= line[0] <= end),
                       default=0))  # fmt: skip

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


if __name__ == "__main__":
    run(int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
