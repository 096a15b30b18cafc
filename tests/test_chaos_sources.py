"""The chaos harness tells a run whose workers were restarted into edited
sources from a run of one tree: such a run does not pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import chaos


def _results(digest: str, started: list[str]) -> dict[str, Any]:
    check = {"check": "faults", "pass": True, "failures": [], "details": {}}
    return {
        "checks": [check],
        "deployments": {},
        "source_digest": digest,
        "source_digests_started": started,
    }


def test_a_run_of_one_tree_passes_and_one_with_edited_sources_does_not() -> None:
    p = chaos.Params.make(True, 0)
    same = _results("a", ["a"])
    chaos.evaluate(same, p, {"faults"})
    assert same["pass"] and not same["sources_changed_during_run"]

    edited = _results("a", ["a", "b"])
    chaos.evaluate(edited, p, {"faults"})
    assert edited["sources_changed_during_run"]
    assert not edited["pass"]


def test_the_digest_follows_the_worker_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "agents").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "app" / "x.py").write_text("A = 1\n")
    monkeypatch.setattr(chaos, "ROOT", tmp_path)
    first = chaos.source_digest()
    (tmp_path / "docs" / "notes.md").write_text("not a source\n")
    assert chaos.source_digest() == first
    (tmp_path / "agents" / "y.py").write_text("B = 2\n")
    second = chaos.source_digest()
    assert second != first
    (tmp_path / "app" / "x.py").write_text("A = 3\n")
    assert chaos.source_digest() not in (first, second)
