"""Join bench/results/*.md into BENCHMARKS.md, in the order of PARTS (then any others)."""

from __future__ import annotations

import re
from pathlib import Path

PARTS = ("quality", "pretrained", "label_free_heads", "scale", "throughput", "web")
ROOT = Path(__file__).resolve().parent.parent
HEADER = """# imgret benchmarks

Every figure below was produced by a command in this repository; each section names its
command and the machine it ran on. `make bench` re-runs them all and rewrites this file
(`make bench-quick` runs smaller settings). Protocols: ../shared/BENCHMARKS.md (mAP@k, P@k,
query/database splits). Timings are compared only with baselines measured in the same run.
"""


def main() -> None:
    results = ROOT / "bench" / "results"
    files = {p.stem: p for p in sorted(results.glob("*.md"))}
    order = [files[p] for p in PARTS if p in files] + [
        f for name, f in files.items() if name not in PARTS
    ]
    text = HEADER + "".join("\n" + _from_root(f.read_text(encoding="utf-8")).strip() + "\n"
                            for f in order)  # fmt: skip
    out = ROOT / "BENCHMARKS.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out} from {len(order)} part(s)")


def _from_root(part: str) -> str:
    """A part's pictures, linked beside it (bench/results/), linked from the repository root."""
    return re.sub(r"\]\(([\w.-]+\.png)\)", r"](bench/results/\1)", part)


if __name__ == "__main__":
    main()
