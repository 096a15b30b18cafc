"""Features: the request's engineered vector, as contextual policies see it."""

from app.features.request_vector import FEATURE_NAMES, TASK_TYPES, RequestVectorizer

__all__ = ["FEATURE_NAMES", "TASK_TYPES", "RequestVectorizer"]
