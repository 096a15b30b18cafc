"""Feature specs, extraction and lineage on decisions."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml

from app.decider import Decider
from app.features.extraction import FeatureExtractor
from app.features.request_vector import FEATURE_NAMES, RequestVectorizer
from app.features.spec import FeatureSpec, FeatureSpecError
from app.features.store import FeatureStore
from app.policies.config import PoliciesConfig
from app.records import Decision, Request

ROOT = Path(__file__).resolve().parents[1]
DOC = yaml.safe_load((ROOT / "config" / "features.yaml").read_text())


def req(i: int = 0, **meta: object) -> Request:
    return Request(
        request_id=f"r{i}",
        tenant_id="acme",
        task_type="code",
        created_at=1_700_000_000_000 + i,
        input_tokens=900,
        priority=3,
        metadata=dict(meta),
    )


def test_example_spec_loads_with_lineage_and_columns() -> None:
    spec = FeatureSpec.load(ROOT / "config" / "features.yaml")
    assert spec.lineage["name"] == "llmopt-default" and spec.lineage["version"] == 1
    assert spec.columns[:4] == [
        "user_tier=free",
        "user_tier=pro",
        "user_tier=enterprise",
        "user_tier=other",
    ]
    assert len(spec.columns) == 12 and not spec.policy_vector


def test_hash_changes_with_content_not_with_key_order() -> None:
    a = FeatureSpec.from_dict(DOC)
    b = FeatureSpec.from_dict(dict(reversed(list(DOC.items()))))
    changed = copy.deepcopy(DOC)
    changed["features"][1]["range"] = [0, 5000]
    assert a.hash == b.hash
    assert FeatureSpec.from_dict(changed).hash != a.hash


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"version": 0}, "version"),
        ({"features": [{"name": "x", "source": "metadata.x"}]}, "default"),
        ({"features": [{"name": "x", "source": "header.x", "default": 0}]}, "source"),
        (
            {"features": [{"name": "x", "source": "metadata.x", "default": 5, "range": [0, 1]}]},
            "outside",
        ),
        (
            {
                "features": [
                    {"name": "x", "source": "metadata.x", "default": 0, "transform": "sqrt"}
                ]
            },
            "transform",
        ),
        (
            {"features": [{"name": "x", "source": "window.tenant.mean_reward_9h", "default": 0}]},
            "window",
        ),
        (
            {
                "features": [
                    {"name": "x", "type": "one_hot", "source": "metadata.x", "default": "a"}
                ]
            },
            "categories",
        ),
        ({"features": [{"name": "x", "source": "metadata.x", "default": 0}] * 2}, "distinct"),
        ({"extra": 1}, "unknown"),
    ],
)
def test_bad_specs_are_rejected_saying_why(patch: dict, message: str) -> None:
    with pytest.raises(FeatureSpecError, match=message):
        FeatureSpec.from_dict({**DOC, **patch})


def test_extraction_hand_computed_with_defaults_counted() -> None:
    x = FeatureExtractor(FeatureSpec.from_dict(DOC))
    v = x.values(req(tier="pro", context_docs=99, region="eu"))
    assert v[:4] == [0.0, 1.0, 0.0, 0.0]
    assert v[4] == pytest.approx(math.log(100) / math.log(10_001))
    assert sum(v[5:9]) == 1.0
    # Windows: no lookup → defaults (reward 0.5, p95 2000 ms log-scaled, rate 0).
    assert v[9] == 0.5 and v[10] == pytest.approx(math.log1p(2000) / math.log1p(600_000))
    assert x.defaults[("tenant_mean_reward", "missing")] == 1
    bad = x.values(req(tier=3, context_docs=10**6, region=None))
    assert bad[4] == 0.0 and x.defaults[("context_docs", "out_of_range")] == 1
    assert bad[:4] == [0.0, 0.0, 0.0, 1.0], "a non-category value is 'other', not a default"
    assert x.defaults[("region", "missing")] == 1
    x.values(req(context_docs=float("nan")))
    x.values(req(context_docs="12"))
    assert x.defaults[("context_docs", "invalid")] == 2


def test_window_features_are_read_from_the_store() -> None:
    spec = FeatureSpec.from_dict(DOC)
    store = FeatureStore.for_spec(spec)
    for t in range(0, 400_000, 500):
        store.observe("tenant=acme", {"k": "o", "t": t, "reward": 0.8, "latency_ms": 1000.0})
    x = FeatureExtractor(spec, lookup=store.get_feature)
    v = x.values(req())
    assert v[9] == pytest.approx(0.8)
    assert abs(math.expm1(v[10] * math.log1p(600_000)) - 1000) <= 10  # p95 within 1 %


def test_no_spec_keeps_the_13_dim_vector_and_the_spec_vector_extends_it_when_asked() -> None:
    r = req(tier="pro")
    base = RequestVectorizer().row(r)
    assert FeatureExtractor(FeatureSpec.from_dict(DOC)).row(r) == base
    wide = FeatureExtractor(FeatureSpec.from_dict({**DOC, "policy_vector": True}))
    assert wide.row(r)[:13] == base and len(wide.row(r)) == 13 + 12 == wide.dim


def _config(algorithm: str) -> PoliciesConfig:
    return PoliciesConfig.from_dict(
        {
            "policies": {
                "p": {
                    "algorithm": algorithm,
                    "arms": [{"name": "a", "model": "m1"}, {"name": "b", "model": "m2"}],
                }
            }
        }
    )


@pytest.mark.parametrize("algorithm", ["thompson_sampling", "lin_ucb"])
def test_decisions_log_vector_spec_values_and_lineage(algorithm: str) -> None:
    spec = FeatureSpec.from_dict(DOC)
    d = Decider(_config(algorithm), seed=0, extractor=FeatureExtractor(spec))
    reqs = [req(i, tier="enterprise", region="us") for i in range(5)]
    for r, doc in zip(reqs, d.decide(reqs, now_ms=1), strict=True):
        assert isinstance(doc, dict)
        dec = Decision.from_dict(doc)  # the record (and schema) accept it
        assert dec.features == RequestVectorizer().row(r) and len(dec.features) == len(
            FEATURE_NAMES
        )
        sf = dec.spec_features
        assert sf is not None and {k: sf[k] for k in ("name", "version", "hash")} == spec.lineage
        assert sf["values"][:4] == [0.0, 0.0, 1.0, 0.0]


def test_without_a_spec_decisions_are_unchanged() -> None:
    doc = Decider(_config("thompson_sampling"), seed=0).decide([req()], now_ms=1)[0]
    assert isinstance(doc, dict) and "spec_features" not in doc and "features" not in doc


def test_distribution_summaries_per_column() -> None:
    x = FeatureExtractor(FeatureSpec.from_dict(DOC), summary_interval_s=3600)
    d = Decider(_config("thompson_sampling"), seed=0, extractor=x)
    reqs = [req(i, context_docs=i) for i in range(100)]
    d.decide(reqs, now_ms=1)
    s = x.publish_summaries()
    assert s["bias"] == {"count": 100.0, "mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0}
    col = [math.log1p(i) / math.log1p(10_000) for i in range(100)]
    assert s["context_docs"]["mean"] == pytest.approx(sum(col) / 100)
    assert s["context_docs"]["max"] == pytest.approx(col[-1])
    assert x.publish_summaries() == {}, "each interval starts afresh"


def test_a_misspelt_key_names_its_path_and_the_nearest_key(tmp_path: Path) -> None:
    path = tmp_path / "features.yaml"
    doc = {
        **DOC,
        "features": [{"name": "x", "source": "metadata.x", "default": 0, "rnage": [0, 1]}],
    }
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(FeatureSpecError) as info:
        FeatureSpec.load(path)
    assert str(info.value).startswith(
        f"{path}: features[0].rnage: unknown key 'rnage' (did you mean 'range'?)"
    ), info.value
