"""What a worker needs for features, from its settings: the spec (if any),
the windowed feature store, and the extractor ``select_arm`` decides with."""

from __future__ import annotations

from app.features.extraction import FeatureExtractor
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
    return spec, store, FeatureExtractor(spec, lookup=store.get_feature)
