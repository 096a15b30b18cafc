"""Who is calling, and which tenants it may act for.

A caller is known by the bearer token it sends to the web endpoints, or, on
Kafka, by the SASL principal a gateway forwards in a header: Kafka does not
tell a consumer who produced a record, so the principal must come from a
gateway that authenticated the producer (docs/security.md). One file,
``LLMOPT_WEB_TOKENS_FILE`` (YAML or JSON), maps both to callers::

    "4b1d…(a random token)": {name: gateway-eu, tenants: [acme, globex]}
    "9e07…(another token)": {name: ops, tenants: "*"}
    "principal:gateway-us": {name: gateway-us, tenants: [initech]}

A key ``principal:<name>`` is a principal, any other key a bearer token of
at least ``min_token_chars`` characters. ``tenants`` is a list of tenant ids
or ``"*"`` (every tenant). A request or reward whose caller may not act for
its tenant is refused as ``tenant_not_allowed``.

Tokens are compared in constant time and never appear in an error, a log
line or a repr: entries are named by their position and ``name``.

>>> access = TenantAccess.from_document(
...     {"0123456789abcdef": {"name": "eu", "tenants": ["acme"]},
...      "principal:gw": {"name": "gw", "tenants": "*"}}, "tokens.yaml", 16)
>>> access.by_token("0123456789abcdef")
Caller(name='eu', tenants=frozenset({'acme'}))
>>> access.by_token("0123456789abcdeX") is None
True
>>> access.by_principal("gw").may_act_for("anyone")
True
>>> check_caller(access.by_token("0123456789abcdef"), "globex")
Traceback (most recent call last):
...
app.records.InvalidEvent: tenant_not_allowed: caller 'eu' may not act for this tenant
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from app.config_schema import At, ConfigError, known_keys, mapping, required, text
from app.records import InvalidEvent

PRINCIPAL_PREFIX = "principal:"
ALL_TENANTS = "*"
_ENTRY_KEYS = ("name", "tenants")


class TenantAccessError(ConfigError):
    """A tenants file that cannot be used."""


@dataclass(frozen=True, slots=True)
class Caller:
    """A caller's name (for logs and dead letters; never its token) and the
    tenants it may act for (None: every tenant)."""

    name: str
    tenants: frozenset[str] | None

    def may_act_for(self, tenant_id: str) -> bool:
        return self.tenants is None or tenant_id in self.tenants


# The single LLMOPT_WEB_TOKEN: an operator's token, for every tenant.
ADMIN = Caller("admin", None)


def check_caller(caller: Caller | None, tenant_id: str) -> None:
    """Refuse an event whose caller may not act for its tenant (None: no
    caller is known, as when the deployment asks for no identity)."""
    if caller is not None and not caller.may_act_for(tenant_id):
        raise InvalidEvent(
            "tenant_not_allowed", f"caller {caller.name!r} may not act for this tenant"
        )


class TenantAccess:
    """Bearer tokens and principals → callers."""

    def __init__(self, tokens: Mapping[str, Caller], principals: Mapping[str, Caller]) -> None:
        self._tokens = [(token.encode(), caller) for token, caller in tokens.items()]
        self._principals = dict(principals)

    def __repr__(self) -> str:  # the tokens stay out of reprs
        return f"TenantAccess({len(self._tokens)} tokens, {len(self._principals)} principals)"

    def __bool__(self) -> bool:
        return bool(self._tokens or self._principals)

    @property
    def has_tokens(self) -> bool:
        return bool(self._tokens)

    @property
    def has_principals(self) -> bool:
        return bool(self._principals)

    def by_token(self, given: str) -> Caller | None:
        """The caller whose token ``given`` is. Every token is compared, each
        in constant time, so the time taken says nothing of which matched
        or how closely."""
        found = None
        raw = given.encode()
        for token, caller in self._tokens:
            if hmac.compare_digest(raw, token):
                found = caller
        return found

    def by_principal(self, name: str) -> Caller | None:
        return self._principals.get(name)

    @classmethod
    def from_document(cls, doc: Any, source: str, min_token_chars: int) -> TenantAccess:
        at = At(source, error=TenantAccessError)
        entries = mapping(doc, at)
        tokens: dict[str, Caller] = {}
        principals: dict[str, Caller] = {}
        for i, (key, value) in enumerate(entries.items()):
            # Named by position: the key may be a secret.
            here = at / f"entry {i + 1}"
            if not isinstance(key, str):
                raise here.fail("a key must be a token or principal:<name> (a string)")
            caller = _caller(value, here)
            if key.startswith(PRINCIPAL_PREFIX):
                principals[text(key.removeprefix(PRINCIPAL_PREFIX), here)] = caller
            elif len(key) < min_token_chars:
                raise here.fail(
                    f"the token of {caller.name!r} is shorter than {min_token_chars} characters; "
                    "use a random one, e.g. `openssl rand -hex 32`"
                )
            else:
                tokens[key] = caller
        return cls(tokens, principals)

    @classmethod
    def load(cls, path: str | Path, min_token_chars: int) -> TenantAccess:
        """The tenants file at ``path``; a :class:`TenantAccessError` that
        names the file and the entry, and never quotes a token."""
        source = str(path)
        try:
            doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise TenantAccessError(f"cannot be read: {exc.strerror or exc}", source) from None
        except UnicodeDecodeError:
            raise TenantAccessError("is not UTF-8 text", source) from None
        except yaml.YAMLError as exc:
            # Only the position: YAML's own message quotes the line, which may hold a token.
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise TenantAccessError(f"not valid YAML or JSON{where}", source) from None
        return cls.from_document(doc, source, min_token_chars)


def _caller(value: Any, at: At) -> Caller:
    entry = mapping(value, at)
    known_keys(entry, at, _ENTRY_KEYS)
    required(entry, at, _ENTRY_KEYS)
    name = text(entry["name"], at / "name")
    tenants = entry["tenants"]
    if tenants == ALL_TENANTS:
        return Caller(name, None)
    if not isinstance(tenants, list) or not tenants:
        raise (at / "tenants").fail(f'must be a non-empty list of tenant ids or "{ALL_TENANTS}"')
    return Caller(name, frozenset(text(t, (at / "tenants").item(j)) for j, t in enumerate(tenants)))
