"""Strict checks shared by every config file loader.

An unknown key, a wrong type or a value out of range is a :class:`ConfigError`
that names the file and the key path, ``config/policies.yaml:
policies.default.hyperparmeters: unknown key 'hyperparmeters' (did you mean
'hyperparameters'?)``. Each loader raises its own subclass.

>>> at = At("policies.yaml") / "policies" / "main"
>>> known_keys({"fallback-arm": "x"}, at, {"fallback_arm", "arms"})
Traceback (most recent call last):
...
app.config_schema.ConfigError: policies.yaml: policies.main.fallback-arm: unknown key \
'fallback-arm' (did you mean 'fallback_arm'?); allowed: arms, fallback_arm
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A problem in a config file: ``source: key.path: what is wrong``.

    ``ConfigError("message")`` alone works too, for problems with no one key."""

    def __init__(self, problem: str, source: str = "", path: str = "") -> None:
        self.problem, self.source, self.path = problem, source, path
        super().__init__(": ".join(part for part in (source, path, problem) if part))


@dataclass(frozen=True)
class At:
    """A place in a config document: its file (``source``), the key path to
    the value, and the error class the file's loader raises."""

    source: str
    path: str = ""
    error: type[ConfigError] = ConfigError

    def __truediv__(self, key: object) -> At:
        return replace(self, path=f"{self.path}.{key}" if self.path else str(key))

    def item(self, index: int) -> At:
        return replace(self, path=f"{self.path}[{index}]")

    def fail(self, problem: str) -> ConfigError:
        return self.error(problem, self.source, self.path)


def did_you_mean(word: object, options: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest option, or ``""``."""
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def mapping(value: Any, at: At, *, optional: bool = False) -> Mapping[str, Any]:
    """``value`` as a mapping; ``optional``: a missing (``None``) value is ``{}``."""
    if value is None and optional:
        return {}
    if not isinstance(value, Mapping):
        raise at.fail(f"expected a mapping, got {_kind(value)}")
    return value


def known_keys(d: Mapping[str, Any], at: At, allowed: Collection[str], noun: str = "key") -> None:
    """Refuse the first key of ``d`` not in ``allowed``, naming the nearest one."""
    for key in d:
        if key not in allowed:
            raise (at / key).fail(
                f"unknown {noun} {key!r}{did_you_mean(key, allowed)}; "
                f"allowed: {', '.join(sorted(allowed)) or 'none'}"
            )


def required(d: Mapping[str, Any], at: At, keys: Collection[str]) -> None:
    for key in keys:
        if key not in d:
            raise (at / key).fail(f"'{key}' is required")


def one_of(value: Any, at: At, choices: Collection[str], what: str = "") -> str:
    """``value`` if it is one of ``choices``; ``what`` names the kind of value
    (``algorithm``) in the error, else the error says "must be one of"."""
    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        listed = ", ".join(choices)
        raise at.fail(
            f"unknown {what} {value!r}{hint}; known: {listed}"
            if what
            else f"must be one of {listed}, got {value!r}{hint}"
        )
    return value


def number(
    value: Any,
    at: At,
    lo: float = -math.inf,
    hi: float = math.inf,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """A finite int or float in the range (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise at.fail(f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise at.fail(f"must be a finite number, got {value!r}")
    if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
        raise at.fail(f"must be in {_interval(lo, hi, lo_open, hi_open)}, got {value!r}")
    return float(value)


def integer(value: Any, at: At, lo: float = -math.inf, hi: float = math.inf) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise at.fail(f"must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise at.fail(f"must be an integer in {_interval(lo, hi, False, False)}, got {value!r}")
    return value


def boolean(value: Any, at: At) -> bool:
    if not isinstance(value, bool):
        raise at.fail(f"must be true or false, got {value!r}")
    return value


def text(value: Any, at: At) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise at.fail(f"must be a non-empty string, got {value!r}")
    return value


def parameters(target: Callable[..., Any], skip: Collection[str] = ()) -> tuple[str, ...] | None:
    """The keyword parameters ``target`` accepts (``None``: any, it takes
    ``**kwargs``), read from its signature."""
    names = []
    for p in inspect.signature(target).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return None
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip:
            names.append(p.name)
    return tuple(names)


def known_parameters(
    params: Mapping[str, Any],
    target: Callable[..., Any],
    at: At,
    owner: str,
    skip: Collection[str] = (),
    noun: str = "parameter",
    prefix: str = "",
) -> None:
    """Refuse a parameter that ``target``'s signature does not take, naming
    the valid ones; ``owner`` names what takes them (``thompson_sampling``)."""
    valid = parameters(target, skip)
    if valid is None:
        return
    for key in params:
        if key not in valid:
            raise (at / key).fail(
                f"{prefix}{owner} has no {noun} {key!r}{did_you_mean(key, valid)}; "
                f"valid: {', '.join(valid) or 'none'}"
            )


def load_yaml(path: Path | str, error: type[ConfigError] = ConfigError) -> Any:
    """The parsed document of a YAML file; a missing or malformed file is an ``error``."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise error("file does not exist", str(path)) from None
    except OSError as exc:
        raise error(f"cannot be read: {exc.strerror or exc}", str(path)) from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise error(f"not valid YAML: {detail}", str(path)) from None


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _interval(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    return f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
