"""The README's session example runs as written, on the committed synthetic data."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

README = Path(__file__).resolve().parents[1] / "README.md"


def _session_example() -> str:
    """The Python block under the README's "Your own questions" heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Your own questions", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section holds one Python example"
    return blocks[0]


def test_readme_session_example_runs_as_written(tmp_path, monkeypatch, capsys):
    """Executed unchanged in a fresh folder (its relative workspace path lands there): it
    prepares, plans, charges its own demo ledger once and prints the schools per county."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_session_example(), str(README), "exec"), namespace)  # noqa: S102 - our README
    table = namespace["table"]
    assert isinstance(table, pd.DataFrame) and len(table) == 21  # every county, a public list
    assert {"county_name", "count", "count_lower", "count_upper"} <= set(table.columns)
    assert (table["count_lower"] <= table["count"]).all()
    assert len(namespace["s"].ledger().entries()) == 1
    assert (tmp_path / "data" / "workspace" / "my-questions" / "releases").is_dir()
    out = capsys.readouterr().out
    assert "Stockholm" in out
