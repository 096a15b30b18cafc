"""The feature spec: custom features from request metadata (and windowed
aggregates), declared in YAML, with a lineage of name, version and content hash.

A feature has a ``type`` — ``numeric``, ``one_hot`` or ``hashed`` — and a
``source``: ``metadata.<key>`` (the request's metadata), ``request.<field>``
(``input_tokens``, ``priority``, ``task_type``) or
``window.<tenant|task_type>.<feature>`` (a windowed aggregate from the feature
store, e.g. ``window.tenant.mean_reward_5m``). Numeric features may declare a
valid ``range: [lo, hi]`` and a ``transform`` (``log``, ``standard``,
``min_max``); every feature has a ``default`` used when the value is missing
or invalid. ``policy_vector: true`` appends the spec's columns to the vector
contextual policies see. See ``config/features.yaml``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from app.features.aggregate import METRICS
from app.features.transformers import (
    FeatureHasher,
    LogTransform,
    MinMaxScaler,
    OneHotEncoder,
    StandardScaler,
)
from app.features.windows import DEFAULT_WINDOWS, Window

JSON = dict[str, Any]
TYPES = ("numeric", "one_hot", "hashed")
TRANSFORMS: dict[str, Any] = {
    "log": LogTransform,
    "standard": StandardScaler,
    "min_max": MinMaxScaler,
}
REQUEST_FIELDS = ("input_tokens", "priority", "task_type")
WINDOW_ENTITIES = ("tenant", "task_type")


class FeatureSpecError(ValueError):
    """A feature spec that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class FeatureDef:
    name: str
    type: str
    source: str
    default: Any
    range: tuple[float, float] | None = None
    transform: Any = None  # a transformer with .transform(x) → float
    encoder: Any = None  # OneHotEncoder / FeatureHasher for categorical types

    @property
    def width(self) -> int:
        return 1 if self.type == "numeric" else int(self.encoder.width)

    def columns(self) -> list[str]:
        return [self.name] if self.type == "numeric" else list(self.encoder.names(self.name))


@dataclass(frozen=True)
class FeatureSpec:
    """A parsed spec. ``lineage`` is what every decision logs.

    >>> s = FeatureSpec.from_dict({"name": "demo", "version": 2, "features": [
    ...     {"name": "tier", "type": "one_hot", "source": "metadata.tier",
    ...      "categories": ["free", "pro"], "default": "free"}]})
    >>> s.columns, s.lineage["name"], s.lineage["version"], len(s.lineage["hash"])
    (['tier=free', 'tier=pro', 'tier=other'], 'demo', 2, 16)
    """

    name: str
    version: int
    features: tuple[FeatureDef, ...]
    policy_vector: bool = False
    windows: tuple[Window, ...] = DEFAULT_WINDOWS
    grace_ms: int = 5_000
    retention_ms: int = 3_600_000
    hash: str = ""
    columns: list[str] = field(default_factory=list)

    @property
    def lineage(self) -> JSON:
        return {"name": self.name, "version": self.version, "hash": self.hash}

    @classmethod
    def load(cls, path: str | Path) -> FeatureSpec:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise FeatureSpecError(f"{path}: {exc}") from None
        try:
            return cls.from_dict(doc)
        except FeatureSpecError as exc:
            raise FeatureSpecError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, doc: Any) -> FeatureSpec:
        if not isinstance(doc, dict):
            raise FeatureSpecError("a feature spec must be a mapping")
        unknown = set(doc) - {"name", "version", "policy_vector", "windows", "features"}
        if unknown:
            raise FeatureSpecError(f"unknown key(s) {sorted(unknown)}")
        name, version = doc.get("name"), doc.get("version")
        if not isinstance(name, str) or not name:
            raise FeatureSpecError("'name' must be a non-empty string")
        if type(version) is not int or version < 1:
            raise FeatureSpecError("'version' must be a positive integer")
        windows, grace_ms, retention_ms = _windows(doc.get("windows") or {})
        raw = doc.get("features") or []
        if not isinstance(raw, list):
            raise FeatureSpecError("'features' must be a list")
        window_names = {w.name for w in windows}
        features = tuple(_feature(f, i, window_names) for i, f in enumerate(raw))
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise FeatureSpecError("feature names must be distinct")
        # Content hash over the canonical document: any change that could
        # change a vector changes the hash, whatever the version says.
        canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        return cls(
            name=name,
            version=version,
            features=features,
            policy_vector=bool(doc.get("policy_vector", False)),
            windows=windows,
            grace_ms=grace_ms,
            retention_ms=retention_ms,
            hash=hashlib.sha256(canonical).hexdigest()[:16],
            columns=[c for f in features for c in f.columns()],
        )


def _windows(w: Any) -> tuple[tuple[Window, ...], int, int]:
    if not isinstance(w, dict):
        raise FeatureSpecError("'windows' must be a mapping")
    try:
        defs = (
            tuple(
                Window(
                    str(d["name"]),
                    int(float(d["size_seconds"]) * 1000),
                    int(float(d.get("hop_seconds", d["size_seconds"])) * 1000),
                )
                for d in w.get("definitions", [])
            )
            or DEFAULT_WINDOWS
        )
        grace_ms = int(float(w.get("grace_seconds", 5)) * 1000)
        retention_ms = int(float(w.get("retention_seconds", 3600)) * 1000)
    except (KeyError, TypeError, ValueError) as exc:
        raise FeatureSpecError(f"windows: {exc}") from None
    if any("_" in d.name or "," in d.name for d in defs):
        raise FeatureSpecError("window names may not contain '_' or ','")
    if retention_ms < max(d.size_ms for d in defs) + grace_ms or grace_ms < 0:
        raise FeatureSpecError("windows: retention must cover the longest window plus grace")
    return defs, grace_ms, retention_ms


def _feature(f: Any, i: int, window_names: set[str]) -> FeatureDef:
    where = f"features[{i}]"
    if not isinstance(f, dict):
        raise FeatureSpecError(f"{where} must be a mapping")
    name, typ, source = f.get("name"), f.get("type", "numeric"), f.get("source")
    if not isinstance(name, str) or not name:
        raise FeatureSpecError(f"{where}: 'name' must be a non-empty string")
    where = f"feature {name!r}"
    if typ not in TYPES:
        raise FeatureSpecError(f"{where}: type must be one of {TYPES}")
    if not isinstance(source, str):
        raise FeatureSpecError(f"{where}: 'source' must be a string")
    _check_source(where, source, window_names)
    if "default" not in f:
        raise FeatureSpecError(f"{where}: a 'default' is required (used when the value is missing)")
    default = f["default"]
    try:
        if typ == "numeric":
            return _numeric(where, name, source, default, f)
        encoder = OneHotEncoder.from_config(f) if typ == "one_hot" else FeatureHasher.from_config(f)
    except (KeyError, TypeError, ValueError) as exc:
        raise FeatureSpecError(f"{where}: {exc}") from None
    return FeatureDef(name, typ, source, str(default), encoder=encoder)


def _numeric(where: str, name: str, source: str, default: Any, f: JSON) -> FeatureDef:
    if isinstance(default, bool) or not isinstance(default, int | float):
        raise FeatureSpecError(f"{where}: a numeric feature's default must be a number")
    rng = f.get("range")
    if rng is not None:
        if not (isinstance(rng, list) and len(rng) == 2 and float(rng[0]) <= float(rng[1])):
            raise FeatureSpecError(f"{where}: range must be [lo, hi] with lo ≤ hi")
        rng = (float(rng[0]), float(rng[1]))
        if not rng[0] <= default <= rng[1]:
            raise FeatureSpecError(f"{where}: default {default} is outside range {list(rng)}")
    transform = None
    t = f.get("transform")
    if t is not None:
        if isinstance(t, str):
            t = {t: {}}
        if not isinstance(t, dict) or len(t) != 1 or next(iter(t)) not in TRANSFORMS:
            raise FeatureSpecError(f"{where}: transform must be one of {sorted(TRANSFORMS)}")
        kind, params = next(iter(t.items()))
        transform = TRANSFORMS[kind].from_config(params or {})
        if kind == "log" and (rng is None or rng[0] < 0):
            raise FeatureSpecError(f"{where}: a log transform needs a range with lo ≥ 0")
    if transform is not None and not math.isfinite(transform.transform(float(default))):
        raise FeatureSpecError(f"{where}: the default does not transform to a finite number")
    return FeatureDef(name, "numeric", source, float(default), rng, transform)


def _check_source(where: str, source: str, window_names: set[str]) -> None:
    kind, _, rest = source.partition(".")
    if kind == "metadata" and rest:
        return
    if kind == "request" and rest in REQUEST_FIELDS:
        return
    if kind == "window":
        entity, _, feature = rest.partition(".")
        metric, _, window = feature.rpartition("_")
        if entity in WINDOW_ENTITIES and metric in METRICS and window in window_names:
            return
        raise FeatureSpecError(
            f"{where}: window source must be window.<{'|'.join(WINDOW_ENTITIES)}>."
            f"<metric>_<window> with a window in {sorted(window_names)}"
        )
    raise FeatureSpecError(
        f"{where}: source must be metadata.<key>, request.<{'|'.join(REQUEST_FIELDS)}> "
        "or window.<entity>.<feature>"
    )
