"""Outcomes with their feature vectors → Parquet, partitioned by date and policy.

Layout (hive-style, readable with ``pyarrow.dataset.dataset(root, partitioning="hive")``)::

    <root>/date=2025-01-31/policy=<policy_id>/part-<first decided_at>-<uuid>.parquet

``date`` is the UTC date of ``decided_at``. Each file holds every field of
the outcome event but ``workflow`` as a column (see :data:`SCHEMA`;
``components`` is a struct, ``features`` a list, ``spec_features`` a struct
with the spec's lineage and values). Delivery is at-least-once: after a crash a batch may
be written twice, so readers dedupe by ``request_id``
(:func:`app.features.training_set.build_training_set` does).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from app.records import InvalidEvent

JSON = dict[str, Any]

COMPONENTS = pa.struct(
    [
        ("quality", pa.float64()),
        ("cost_usd", pa.float64()),
        ("latency_ms", pa.float64()),
        ("error", pa.bool_()),
        ("feedback", pa.float64()),
    ]
)
SPEC_FEATURES = pa.struct(
    [
        ("name", pa.string()),
        ("version", pa.int64()),
        ("hash", pa.string()),
        ("values", pa.list_(pa.float64())),
    ]
)
REWARD_TERMS = pa.struct(
    [
        (
            "weights",
            pa.struct([(c, pa.float64()) for c in ("quality", "cost", "latency", "feedback")]),
        ),
        ("function", pa.string()),
        ("function_error", pa.string()),
    ]
)
# Written out rather than derived, so that no change to the records changes
# the files silently; tests/test_archive.py checks it against the outcome's
# declaration in app/records.py.
SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("tenant_id", pa.string()),
        ("policy_id", pa.string()),
        ("policy_version", pa.int64()),
        ("arm", pa.string()),
        ("available_arms", pa.list_(pa.string())),
        ("propensity", pa.float64()),
        ("explored", pa.bool_()),
        ("reward", pa.float64()),
        ("defaulted", pa.bool_()),
        ("decided_at", pa.int64()),
        ("outcome_at", pa.int64()),
        ("components", COMPONENTS),
        ("features", pa.list_(pa.float64())),
        ("spec_features", SPEC_FEATURES),
        ("rewarded_at", pa.int64()),
        ("reward_terms", REWARD_TERMS),
        ("parameters", pa.string()),  # JSON: their names and kinds vary by arm
        ("experiment_id", pa.string()),
        ("variant", pa.string()),
        ("task_type", pa.string()),
        ("schema_version", pa.int64()),
    ]
)
_DAY_MS = 86_400_000


def utc_date(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms // _DAY_MS * 86_400, dt.UTC).date().isoformat()


def to_table(outcomes: list[JSON]) -> pa.Table:
    """Outcome documents → an Arrow table of :data:`SCHEMA` (column-wise:
    one list per column, several times faster than row-wise building)."""
    cols: dict[str, Any] = {}
    for name in SCHEMA.names:
        if name == "components":
            cols[name] = [o.get("components") or {} for o in outcomes]
        elif name == "schema_version":
            cols[name] = [o.get("schema_version", 1) for o in outcomes]
        elif name == "parameters":
            cols[name] = [
                orjson.dumps(o["parameters"]).decode() if o.get("parameters") else None
                for o in outcomes
            ]
        else:
            cols[name] = [o.get(name) for o in outcomes]
    return pa.Table.from_pydict(cols, schema=SCHEMA)


class OutcomeArchive:
    """Writes batches of outcome documents under ``root``.

    >>> import tempfile, pyarrow.dataset as ds
    >>> root = tempfile.mkdtemp()
    >>> o = {"request_id": "r1", "tenant_id": "t", "policy_id": "p", "policy_version": 3,
    ...      "arm": "a", "available_arms": ["a", "b"], "propensity": 0.5, "explored": True,
    ...      "reward": 0.9, "defaulted": False, "decided_at": 0, "outcome_at": 5,
    ...      "components": {"quality": 0.9}, "features": [1.0, 0.2]}
    >>> [p.split("/")[-3:-1] for p in map(str, OutcomeArchive(root).write([o]))]
    [['date=1970-01-01', 'policy=p']]
    >>> t = ds.dataset(root, partitioning="hive").to_table()
    >>> t.num_rows, t["components"][0].as_py()["quality"], t["policy"][0].as_py()
    (1, 0.9, 'p')
    """

    def __init__(self, root: str | Path, compression: str = "zstd") -> None:
        self.root = Path(root)
        self.compression = compression
        self.rows_written = 0

    def write(self, outcomes: list[JSON]) -> list[Path]:
        """One file per (date, policy) in the batch; returns the paths."""
        groups: dict[tuple[str, str], list[JSON]] = defaultdict(list)
        for o in outcomes:
            groups[(utc_date(o["decided_at"]), o["policy_id"])].append(o)
        paths = []
        for (date, policy), rows in groups.items():
            folder = self.root / f"date={date}" / f"policy={policy}"
            folder.mkdir(parents=True, exist_ok=True)
            first = min(r["decided_at"] for r in rows)
            path = folder / f"part-{first}-{uuid.uuid4().hex[:12]}.parquet"
            tmp = path.with_suffix(".tmp")
            pq.write_table(to_table(rows), tmp, compression=self.compression)
            tmp.rename(path)  # readers never see a half-written file
            paths.append(path)
            self.rows_written += len(rows)
        return paths


def archive_row(raw: bytes) -> dict[str, Any]:
    """A valid outcome message → the document to archive, or
    :class:`InvalidEvent` when the archive's layout cannot hold it."""
    doc: dict[str, Any] = orjson.loads(raw)
    try:
        utc_date(doc["decided_at"])
    except (ValueError, OverflowError, OSError):
        raise InvalidEvent("invalid_value", "'decided_at' is beyond year 9999") from None
    pid = doc["policy_id"]
    if pid in (".", "..") or "/" in pid or "\\" in pid or "\0" in pid:
        raise InvalidEvent("invalid_value", "'policy_id' cannot name an archive directory")
    return doc
