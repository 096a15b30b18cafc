"""What a worker needs for features, from its settings: the spec (if any),
the windowed feature store, and the extractor ``select_arm`` decides with."""

from __future__ import annotations

from app import metrics
from app.features.extraction import FeatureExtractor, Lookup
from app.features.spec import FeatureSpec
from app.features.store import FeatureStore
from app.settings import Settings


def build_features(
    settings: Settings,
) -> tuple[FeatureSpec | None, FeatureStore, FeatureExtractor | None]:
    """No spec: an empty store with the default windows and no extractor
    (decisions keep the 13 engineered features).

    >>> spec, store, extractor = build_features(Settings())
    >>> spec is None, extractor is None, "mean_reward_5m" in store.feature_names
    (True, True, True)
    """
    if not settings.feature_spec_path:
        return None, FeatureStore(), None
    spec = FeatureSpec.load(settings.feature_spec_path)
    store = FeatureStore.for_spec(spec)
    return spec, store, FeatureExtractor(spec, lookup=window_lookup(store))


def window_lookup(store: FeatureStore) -> Lookup:
    """``store.get_feature``, counting the lookups that find no value by why
    (``llmopt_feature_window_misses_total``): the entity has no final window
    yet, or the store was still reading what existed at the start
    (``store.complete`` false)."""
    no_window = metrics.FEATURE_WINDOW_MISSES.labels("no_window")
    not_caught_up = metrics.FEATURE_WINDOW_MISSES.labels("not_caught_up")
    get = store.get_feature

    def lookup(entity: str, name: str) -> float | None:
        value = get(entity, name)
        if value is None:
            (no_window if store.complete else not_caught_up).inc()
        return value

    return lookup
