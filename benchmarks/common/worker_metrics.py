"""A worker's ``/metrics``, scraped into samples a benchmark can sum."""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int, timeout: float = 5.0) -> Samples:
    """Every sample of the exposition at 127.0.0.1:``port``, keyed by name and
    sorted labels. Raises OSError when the worker does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """The samples of ``name`` summed per value of ``label``."""
    out: dict[str, float] = {}
    for (n, labels), value in samples.items():
        if n == name:
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
    return out


def total(samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    """The sum of every sample of ``name``."""
    return sum(v for (n, _), v in samples.items() if n == name)
