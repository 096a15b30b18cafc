"""Checkpoints of a run, and taking the policies already done from them
(``--checkpoint``, ``--resume``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson


def load_done(paths: Sequence[str], mode: str, seeds: Sequence[int]) -> dict[str, dict[str, Any]]:
    """The policies of earlier runs' JSON (checkpoints or results) of the same mode and seeds."""
    done: dict[str, dict[str, Any]] = {"A": {}, "B": {}, "C": {}}
    for path in paths:
        doc = orjson.loads(Path(path).read_bytes())
        if doc.get("mode") != mode or doc.get("seeds") != list(seeds):
            raise SystemExit(
                f"{path}: a {doc.get('mode')} run with seeds {doc.get('seeds')}, "
                f"not {mode} with {list(seeds)}"
            )
        for w, rows in doc["results"].items():
            done[w].update(rows)
    return done


def write_checkpoint(
    path: Path, mode: str, seeds: Sequence[int], commit: str | None, table: dict[str, Any]
) -> None:
    """The results so far, replaced atomically: a run killed midway leaves a whole file."""
    doc = {"mode": mode, "seeds": list(seeds), "commit": commit, "results": table}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))
    tmp.replace(path)
