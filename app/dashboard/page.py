"""The dashboard page: one self-contained HTML file (CSS and JavaScript inline,
charts drawn as SVG by hand), which polls ``/dashboard/data`` once a second."""

from __future__ import annotations

import functools
from pathlib import Path

PAGE = Path(__file__).with_name("dashboard.html")


@functools.cache
def page_html() -> str:
    """The page's HTML.

    >>> html = page_html()
    >>> "<script>" in html and '+ "/data"' in html  # polls <page path>/data
    True
    >>> any(s in html for s in ("http://", "https://", "src=", "@import"))  # nothing from outside
    False
    """
    return PAGE.read_text(encoding="utf-8")
