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
contextual policies see. See ``config/features.yaml``. Every key is checked
(app/config_schema.py): a problem is a :class:`FeatureSpecError` naming the
file and the key path.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.config_schema import (
    At,
    ConfigError,
    boolean,
    integer,
    known_keys,
    known_parameters,
    load_yaml,
    mapping,
    number,
    one_of,
    parameters,
    required,
    text,
)
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
ENCODERS: dict[str, Any] = {"one_hot": OneHotEncoder, "hashed": FeatureHasher}
TOP_KEYS = ("name", "version", "policy_vector", "windows", "features")
WINDOWS_KEYS = ("grace_seconds", "retention_seconds", "definitions")
WINDOW_KEYS = ("name", "size_seconds", "hop_seconds")
FEATURE_KEYS = ("name", "type", "source", "default")
NUMERIC_KEYS = ("range", "transform")


class FeatureSpecError(ConfigError):
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
        return cls.from_dict(load_yaml(path, FeatureSpecError), source=str(path))

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<dict>") -> FeatureSpec:
        at = At(source, error=FeatureSpecError)
        if not isinstance(doc, dict):
            raise at.fail("a feature spec must be a mapping")
        known_keys(doc, at, TOP_KEYS)
        required(doc, at, ("name", "version"))
        name = text(doc["name"], at / "name")
        version = integer(doc["version"], at / "version", lo=1)
        windows, grace_ms, retention_ms = _windows(doc.get("windows"), at / "windows")
        raw = doc.get("features") or []
        if not isinstance(raw, list):
            raise (at / "features").fail("'features' must be a list")
        window_names = {w.name for w in windows}
        features = tuple(
            _feature(f, (at / "features").item(i), window_names) for i, f in enumerate(raw)
        )
        names = [f.name for f in features]
        if len(set(names)) != len(names):
            raise (at / "features").fail("feature names must be distinct")
        # Content hash over the canonical document: any change that could
        # change a vector changes the hash, whatever the version says.
        canonical = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        return cls(
            name=name,
            version=version,
            features=features,
            policy_vector=boolean(doc.get("policy_vector", False), at / "policy_vector"),
            windows=windows,
            grace_ms=grace_ms,
            retention_ms=retention_ms,
            hash=hashlib.sha256(canonical).hexdigest()[:16],
            columns=[c for f in features for c in f.columns()],
        )


def _windows(raw: Any, at: At) -> tuple[tuple[Window, ...], int, int]:
    w = mapping(raw, at, optional=True)
    known_keys(w, at, WINDOWS_KEYS)
    raw_defs = w.get("definitions") or []
    if not isinstance(raw_defs, list):
        raise (at / "definitions").fail(f"expected a list of windows, got {raw_defs!r}")
    defs = tuple(_window(d, (at / "definitions").item(i)) for i, d in enumerate(raw_defs))
    defs = defs or DEFAULT_WINDOWS
    grace_ms, retention_ms = FeatureSpec.grace_ms, FeatureSpec.retention_ms
    if "grace_seconds" in w:
        grace_ms = int(number(w["grace_seconds"], at / "grace_seconds", lo=0) * 1000)
    if "retention_seconds" in w:
        retention_ms = int(number(w["retention_seconds"], at / "retention_seconds", lo=0) * 1000)
    if retention_ms < max(d.size_ms for d in defs) + grace_ms:
        raise (at / "retention_seconds").fail(
            "windows: retention must cover the longest window plus grace"
        )
    return defs, grace_ms, retention_ms


def _window(raw: Any, at: At) -> Window:
    d = mapping(raw, at)
    known_keys(d, at, WINDOW_KEYS)
    required(d, at, ("name", "size_seconds"))
    name = text(d["name"], at / "name")
    if "_" in name or "," in name:
        raise (at / "name").fail("window names may not contain '_' or ','")
    size = number(d["size_seconds"], at / "size_seconds", 0, lo_open=True)
    hop = number(d.get("hop_seconds", size), at / "hop_seconds", 0, size, lo_open=True)
    try:
        return Window(name, int(size * 1000), int(hop * 1000))
    except ValueError as exc:
        raise at.fail(str(exc)) from None


def _feature(f: Any, at: At, window_names: set[str]) -> FeatureDef:
    if not isinstance(f, dict):
        raise at.fail(f"each feature must be a mapping, got {f!r}")
    typ = one_of(f.get("type", "numeric"), at / "type", TYPES, what="feature type")
    extra = NUMERIC_KEYS if typ == "numeric" else parameters(ENCODERS[typ]) or ()
    known_keys(f, at, (*FEATURE_KEYS, *extra))
    name = text(f.get("name"), at / "name")
    if not isinstance(f.get("source"), str):
        raise (at / "source").fail(f"'source' must be a string, got {f.get('source')!r}")
    source = f["source"]
    _check_source(at / "source", source, window_names)
    if "default" not in f:
        raise (at / "default").fail("a 'default' is required (used when the value is missing)")
    default = f["default"]
    if typ == "numeric":
        return _numeric(at, name, source, default, f)
    if typ == "one_hot":
        required(f, at, ("categories",))
    try:
        encoder = ENCODERS[typ].from_config(f)
    except (KeyError, TypeError, ValueError) as exc:
        raise at.fail(str(exc)) from None
    return FeatureDef(name, typ, source, str(default), encoder=encoder)


def _numeric(at: At, name: str, source: str, default: Any, f: JSON) -> FeatureDef:
    default = number(default, at / "default")
    rng = f.get("range")
    if rng is not None:
        if not (isinstance(rng, list) and len(rng) == 2):
            raise (at / "range").fail("range must be [lo, hi] with lo ≤ hi")
        lo = number(rng[0], (at / "range").item(0))
        hi = number(rng[1], (at / "range").item(1), lo)
        rng = (lo, hi)
        if not lo <= default <= hi:
            raise (at / "default").fail(f"default {default:g} is outside range {list(rng)}")
    transform = None
    t = f.get("transform")
    if t is not None:
        t_at = at / "transform"
        if isinstance(t, str):
            t = {t: {}}
        if not isinstance(t, dict) or len(t) != 1:
            raise t_at.fail(f"transform must be one of {sorted(TRANSFORMS)}")
        kind, params = next(iter(t.items()))
        one_of(kind, t_at / kind, sorted(TRANSFORMS), what="transform")
        params = mapping(params, t_at / kind, optional=True)
        known_parameters(params, TRANSFORMS[kind], t_at / kind, kind)
        try:
            transform = TRANSFORMS[kind].from_config(dict(params))
        except (TypeError, ValueError) as exc:
            raise (t_at / kind).fail(str(exc)) from None
        if kind == "log" and (rng is None or rng[0] < 0):
            raise t_at.fail("a log transform needs a range with lo ≥ 0")
    if transform is not None and not math.isfinite(transform.transform(default)):
        raise (at / "default").fail("the default does not transform to a finite number")
    return FeatureDef(name, "numeric", source, default, rng, transform)


def _check_source(at: At, source: str, window_names: set[str]) -> None:
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
        raise at.fail(
            f"window source must be window.<{'|'.join(WINDOW_ENTITIES)}>."
            f"<metric>_<window> with a window in {sorted(window_names)}"
        )
    raise at.fail(
        f"source must be metadata.<key>, request.<{'|'.join(REQUEST_FIELDS)}> "
        "or window.<entity>.<feature>"
    )
