"""Every policy class in :mod:`app.policies`, by algorithm name.

Discovered by importing each module of the package, so adding an algorithm
is adding a file: the config, the generic contract tests and the benchmarks
pick it up.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from app.policies.base import Policy

_NOT_POLICIES = {"base", "config", "guardrails", "registry"}


@cache
def algorithms() -> dict[str, type[Policy]]:
    import app.policies as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_POLICIES and not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    found: dict[str, type[Policy]] = {}
    stack = list(Policy.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        name = getattr(cls, "algorithm", None)
        if name and not getattr(cls, "__abstractmethods__", None):
            if name in found and found[name] is not cls:
                raise RuntimeError(f"two policies call themselves {name!r}")
            found[name] = cls
    return dict(sorted(found.items()))
