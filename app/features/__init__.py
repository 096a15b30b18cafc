"""Features: the request's engineered vector, feature specs and transformers,
windowed aggregates, the feature store, the Parquet archive and training sets."""

from app.features.aggregate import METRICS, WindowAggregate
from app.features.archive import OutcomeArchive
from app.features.extraction import FeatureExtractor
from app.features.quantile_sketch import QuantileSketch
from app.features.request_vector import FEATURE_NAMES, TASK_TYPES, RequestVectorizer
from app.features.spec import FeatureSpec, FeatureSpecError
from app.features.store import FeatureStore
from app.features.training_set import build_training_set
from app.features.windows import Window, WindowedAggregates

__all__ = [
    "FEATURE_NAMES",
    "METRICS",
    "TASK_TYPES",
    "FeatureExtractor",
    "FeatureSpec",
    "FeatureSpecError",
    "FeatureStore",
    "OutcomeArchive",
    "QuantileSketch",
    "RequestVectorizer",
    "Window",
    "WindowAggregate",
    "WindowedAggregates",
    "build_training_set",
]
