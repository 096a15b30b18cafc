"""A benchmark's result: the JSON file, the tables and the verdict line.

Every result records the benchmark, the commit, when it started and the
machine (``run_header``); ``report`` writes it to
``benchmarks/results/<benchmark>-<short commit>[-quick].json`` and prints
``overall: PASS`` or ``overall: FAIL`` as the last line, so that a run can be
judged from its tail.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common.machine import ROOT, git_commit, machine_info, short_commit

RESULTS_DIR = ROOT / "benchmarks" / "results"
JSON_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_header(benchmark: str, *packages: str) -> dict[str, Any]:
    """The fields every result starts with: ``benchmark``, ``commit``,
    ``started_at`` and ``machine`` (with the versions of ``packages``)."""
    return {
        "benchmark": benchmark,
        "commit": git_commit(),
        "started_at": utc_now(),
        "machine": machine_info(*packages),
    }


def result_path(benchmark: str, commit: str | None, quick: bool) -> Path:
    return RESULTS_DIR / f"{benchmark}-{short_commit(commit)}{'-quick' if quick else ''}.json"


def dump_json(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=JSON_OPTIONS)


def write_result(doc: dict[str, Any], path: Path) -> Path:
    """Writes ``doc`` as JSON to ``path``; the commit, the start time and the
    machine are filled in if the benchmark did not record them, and the load
    average at the end is added."""
    doc.setdefault("commit", git_commit())
    doc.setdefault("started_at", utc_now())
    doc.setdefault("machine", machine_info())
    doc["machine"].setdefault("loadavg_end", list(os.getloadavg()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dump_json(doc) + b"\n")
    return path


def verdict_line(passed: bool | None) -> str:
    """``overall: PASS`` or ``overall: FAIL`` against the benchmark's targets
    (None: no target was measured, e.g. a run of a subset)."""
    return "overall: " + {True: "PASS", False: "FAIL", None: "n/a (no target measured)"}[passed]


def report(
    doc: dict[str, Any],
    text: str,
    passed: bool | None,
    path: Path | None,
    json_stdout: bool = False,
) -> None:
    """Ends a run: records ``passed`` in ``doc`` as ``pass``, writes it to
    ``path`` (None: not saved), prints ``text`` (the tables) and the verdict
    line last. On stdout; with ``json_stdout`` the JSON goes to stdout and
    the tables and the verdict to stderr."""
    doc["pass"] = passed
    out = sys.stderr if json_stdout else sys.stdout
    if path is not None:
        write_result(doc, path)
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        text += f"\nresults written to {shown}"
    print(text, file=out, flush=True)
    if json_stdout:
        sys.stdout.buffer.write(dump_json(doc) + b"\n")
        sys.stdout.flush()
    print(verdict_line(passed), file=out, flush=True)
