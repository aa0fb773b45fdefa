"""The README's "From Python" example runs as written, on a small generated folder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import CLASSES, pattern_image

README = Path(__file__).resolve().parent.parent / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### From Python") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python example in the From Python section"
    return match.group(1)


def test_the_readme_python_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(8):
            pattern_image(cls, rng).save(tmp_path / "photos" / cls / f"{i}.png")
    pattern_image("stripes", rng).save(tmp_path / "query.jpg")
    monkeypatch.chdir(tmp_path)
    exec(compile(_example(), str(README), "exec"), {})  # noqa: S102 - our own README
    out = capsys.readouterr().out.strip().splitlines()
    hits = [f for f in (line.split() for line in out) if len(f) == 4 and f[3].endswith(".png")]
    assert [int(h[0]) for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0][2] == "stripes"  # the nearest image is of the query's kind
    assert out[-1].startswith("[") and (tmp_path / "collection" / "collection.json").is_file()
