"""The ops view: a history of the metrics topic and the page that shows it.

- :class:`MetricsHistory` — bounded in-memory history of metric snapshots,
  drift events and alerts, turned into rates, quantiles and shares.
- :func:`histogram_quantile` — quantiles from Prometheus histogram buckets.
- :func:`page_html` — the self-contained dashboard page (HTML, CSS and JS
  inline; no outside service or CDN).
"""

from app.dashboard.history import MetricsHistory
from app.dashboard.page import page_html
from app.dashboard.quantile import histogram_quantile

__all__ = ["MetricsHistory", "histogram_quantile", "page_html"]
