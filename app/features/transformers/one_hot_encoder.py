"""One-hot encoding of a categorical value over a fixed category list."""

from __future__ import annotations

from typing import Any


class OneHotEncoder:
    """One column per category, plus ``other`` for anything else when
    ``handle_unknown='other'`` (with ``'ignore'`` an unknown value is all zeros).
    The category list is fixed (the spec's): the layout never depends on data.

    >>> e = OneHotEncoder(["free", "pro"])
    >>> e.names("tier"), e.transform("pro"), e.transform("gold"), e.inverse([0.0, 1.0, 0.0])
    (['tier=free', 'tier=pro', 'tier=other'], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], 'pro')
    """

    def __init__(self, categories: list[str], handle_unknown: str = "other") -> None:
        if not categories or len(set(categories)) != len(categories):
            raise ValueError("categories must be a non-empty list of distinct values")
        if handle_unknown not in ("other", "ignore"):
            raise ValueError("handle_unknown must be 'other' or 'ignore'")
        self.categories = list(categories)
        self.handle_unknown = handle_unknown
        self._index = {c: i for i, c in enumerate(self.categories)}
        self.width = len(categories) + (handle_unknown == "other")

    def names(self, prefix: str) -> list[str]:
        extra = ["other"] if self.handle_unknown == "other" else []
        return [f"{prefix}={c}" for c in [*self.categories, *extra]]

    def transform(self, value: Any) -> list[float]:
        out = [0.0] * self.width
        i = self._index.get(str(value) if value is not None else None)  # type: ignore[arg-type]
        if i is None and self.handle_unknown == "other":
            i = self.width - 1
        if i is not None:
            out[i] = 1.0
        return out

    def inverse(self, row: list[float]) -> str | None:
        """The category of a one-hot row; ``None`` for unknown/all-zero rows."""
        i = max(range(self.width), key=row.__getitem__)
        return self.categories[i] if row[i] > 0 and i < len(self.categories) else None

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> OneHotEncoder:
        return cls([str(x) for x in c["categories"]], str(c.get("handle_unknown", "other")))
