"""Feature transformers: deterministic, one per file.

Each has ``transform`` (one value → its encoded value or values); those with
learnt state have ``learn_one`` (online fit); ``inverse`` where the transform
is invertible. ``from_config`` builds one from a feature spec entry.
"""

from app.features.transformers.feature_hasher import FeatureHasher
from app.features.transformers.log_transform import LogTransform
from app.features.transformers.min_max_scaler import MinMaxScaler
from app.features.transformers.one_hot_encoder import OneHotEncoder
from app.features.transformers.standard_scaler import StandardScaler

__all__ = ["FeatureHasher", "LogTransform", "MinMaxScaler", "OneHotEncoder", "StandardScaler"]
