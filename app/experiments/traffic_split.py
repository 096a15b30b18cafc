"""Sticky hashed assignment of keys (tenants, users) to variants."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

_SCALE = float(2**64)


def bucket(key: str, salt: str) -> float:
    """A key's point in [0, 1) for an experiment named ``salt``.

    blake2b of the salt and the key, so every process, host and Python
    version agrees (Python's ``hash()`` is salted per process). A different
    salt gives an independent split, so the same users are not always the
    treated ones in every experiment.

    >>> bucket("tenant-42", "exp-1") == bucket("tenant-42", "exp-1")
    True
    >>> round(bucket("tenant-42", "exp-1"), 6)
    0.048738
    """
    digest = hashlib.blake2b(
        salt.encode() + b"\x1f" + key.encode(), digest_size=8, person=b"llmopt-split"
    ).digest()
    return int.from_bytes(digest, "big") / _SCALE


class TrafficSplit:
    """Which variant a key gets, stable across processes and restarts.

    ``shares`` gives each treatment variant its fraction of the traffic; the
    ``control`` gets the rest. Treatments take consecutive ranges of the
    key's :func:`bucket` from 0 up, in the order given, and the control the
    range above them. So with one treatment (a rollout), raising its share
    from 5% to 10% keeps every key of the first 5% in the treatment and only
    moves control keys over; lowering it moves only treatment keys back.
    With several treatments the same holds for the last one listed; changing
    an earlier one's share shifts those after it.

    Examples
    --------
    >>> split = TrafficSplit("rollout-7", "champion", {"challenger": 0.05})
    >>> keys = [f"user-{i}" for i in range(10_000)]
    >>> first = {k for k in keys if split.assign(k) == "challenger"}
    >>> round(len(first) / len(keys), 2)
    0.05
    >>> wider = split.with_shares({"challenger": 0.10})
    >>> second = {k for k in keys if wider.assign(k) == "challenger"}
    >>> first <= second, round(len(second) / len(keys), 2)
    (True, 0.1)
    """

    def __init__(self, salt: str, control: str, shares: Mapping[str, float]) -> None:
        if not salt:
            raise ValueError("salt must be a non-empty string (the experiment's name)")
        if control in shares:
            raise ValueError(f"the control {control!r} gets the rest: give it no share")
        total = 0.0
        for name, share in shares.items():
            if not (math.isfinite(share) and 0.0 <= share <= 1.0):
                raise ValueError(f"share of {name!r} must be in [0, 1], got {share}")
            total += share
        if total > 1.0 + 1e-12:
            raise ValueError(f"shares add up to {total:g} > 1")
        self.salt = salt
        self.control = control
        self.shares = dict(shares)
        self._edges: list[tuple[float, str]] = []
        upper = 0.0
        for name, share in self.shares.items():
            upper += share
            self._edges.append((upper, name))

    @property
    def variants(self) -> tuple[str, ...]:
        return (self.control, *self.shares)

    def with_shares(self, shares: Mapping[str, float]) -> TrafficSplit:
        """The same split with new shares (the next rollout stage)."""
        return TrafficSplit(self.salt, self.control, shares)

    def assign(self, key: str) -> str:
        """The variant of ``key``."""
        u = bucket(key, self.salt)
        for upper, name in self._edges:
            if u < upper:
                return name
        return self.control

    def assign_many(self, keys: Iterable[str]) -> list[str]:
        return [self.assign(k) for k in keys]

    def to_dict(self) -> dict[str, Any]:
        return {"salt": self.salt, "control": self.control, "shares": dict(self.shares)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrafficSplit:
        return cls(
            str(d["salt"]), str(d["control"]), {str(k): float(v) for k, v in d["shares"].items()}
        )
