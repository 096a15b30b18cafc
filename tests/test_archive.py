"""Outcomes → Parquet (date × policy) → read back field for field."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from app.features.archive import SCHEMA, OutcomeArchive
from app.features.training_set import build_training_set
from app.records import REWARD_COMPONENTS, FieldSpec, Outcome, Reward, spec_of

DAY = 86_400_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY  # a UTC midnight (2023-11-14)


def outcomes(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        o = Outcome(
            request_id=f"r{i}",
            tenant_id=f"t{i % 3}",
            policy_id=f"p{i % 2}",
            policy_version=i,
            arm=rng.choice(["a", "b/c"]),
            available_arms=["a", "b/c"],
            propensity=rng.random(),
            explored=rng.random() < 0.3,
            reward=rng.random(),
            defaulted=i % 7 == 0,
            decided_at=T0 + i * DAY // n * 2,
            outcome_at=T0 + i * 1000 + 5,
            components={} if i % 7 == 0 else {"quality": 0.5, "latency_ms": 800.0, "error": False},
            features=[1.0, rng.random()] if i % 2 else None,
            spec_features={"name": "s", "version": 2, "hash": "abc", "values": [0.5]}
            if i % 3
            else None,
            parameters={"temperature": rng.random(), "max_tokens": 512} if i % 4 else None,
            reward_terms={
                "weights": {"quality": 0.6, "cost": 0.375, "latency": 0.15, "feedback": 0.0}
            }
            if i % 5 == 0
            else None,
        )
        out.append(o.to_dict())
    return out


def test_every_outcome_field_round_trips_through_the_partitioned_files(tmp_path: Path) -> None:
    docs = outcomes(500)
    paths = OutcomeArchive(tmp_path).write(docs)
    parts = sorted({tuple(p.relative_to(tmp_path).parts[:2]) for p in paths})
    assert parts == [
        (f"date={d}", f"policy={p}") for d in ("2023-11-14", "2023-11-15") for p in ("p0", "p1")
    ]
    assert not list(tmp_path.rglob("*.tmp"))
    assert pq.read_schema(paths[0]).remove_metadata() == SCHEMA
    table = ds.dataset(tmp_path, partitioning="hive").to_table()
    assert table.num_rows == 500
    rows = {r["request_id"]: r for r in table.to_pylist()}
    for doc in docs:
        row = rows[doc["request_id"]]
        assert row["policy"] == doc["policy_id"]
        back = {k: v for k, v in row.items() if k in SCHEMA.names and v is not None}
        back["components"] = {k: v for k, v in row["components"].items() if v is not None}
        if "parameters" in back:
            back["parameters"] = orjson.loads(back["parameters"])
        if "reward_terms" in back:  # a struct: absent members come back as nulls
            back["reward_terms"] = {k: v for k, v in back["reward_terms"].items() if v is not None}
        assert Outcome.from_dict(back).to_dict() == doc


def test_a_day_of_one_policy_is_read_without_touching_the_rest(tmp_path: Path) -> None:
    OutcomeArchive(tmp_path).write(outcomes(400))
    one = ds.dataset(tmp_path / "date=2023-11-15" / "policy=p1").to_table()
    assert one.num_rows == 100 and set(one["policy_id"].to_pylist()) == {"p1"}


def test_duplicated_batches_count_once_in_a_training_set(tmp_path: Path) -> None:
    archive = OutcomeArchive(tmp_path)
    docs = outcomes(50)
    archive.write(docs)
    archive.write(docs[:20])  # redelivered after a crash
    table = ds.dataset(tmp_path, partitioning="hive").to_table()
    assert table.num_rows == 70 and archive.rows_written == 70
    assert build_training_set(table, []).num_rows == 50


ARROW_TYPES = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "strings": pa.list_(pa.string()),
    "numbers": pa.list_(pa.float64()),
}


def arrow_type(spec: FieldSpec) -> pa.DataType:
    if spec.kind == "nested":
        return pa.struct([(name, arrow_type(sub)) for name, sub, _ in spec.fields])
    return ARROW_TYPES[spec.kind]


def test_the_columns_are_the_outcome_fields_as_declared() -> None:
    """A column per field of the outcome record (but ``workflow``, which the archive
    leaves out), of the type its declaration gives; ``components`` a struct of the
    reward's components."""
    reward_fields = {f.name: f for f in dataclasses.fields(Reward)}
    components = pa.struct(
        [(name, arrow_type(spec_of(reward_fields[name]))) for name in REWARD_COMPONENTS]
    )
    expected = []
    for f in dataclasses.fields(Outcome):
        if f.name == "workflow":
            continue
        if f.name == "schema_version":
            expected.append((f.name, pa.int64()))
        elif f.name == "components":
            expected.append((f.name, components))
        elif f.name == "parameters":
            expected.append((f.name, pa.string()))  # as JSON
        else:
            expected.append((f.name, arrow_type(spec_of(f))))
    assert pa.schema(expected) == SCHEMA
