"""One settings object, read from environment variables prefixed ``LLMOPT_``."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from app.faults import FaultSpecError
from app.faults import parse as parse_faults
from app.records import MAX_DEADLINE_MS
from app.tenant_access import TenantAccess

PREFIX = "LLMOPT_"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Shorter bearer tokens could be guessed by trying.
WEB_TOKEN_MIN_CHARS = 16
ROOT = Path(__file__).resolve().parent.parent
# The shipped config files: the defaults of the settings below, of the
# loaders' ``load()`` and of `llmopt config check`.
CONFIG_DIR = ROOT / "config"
POLICIES_PATH = CONFIG_DIR / "policies.yaml"
SIMULATOR_PATH = CONFIG_DIR / "simulator.yaml"
DRIFT_PATH = CONFIG_DIR / "drift.yaml"
FEATURES_PATH = CONFIG_DIR / "features.yaml"


class SettingsError(ValueError):
    """A setting with a value it cannot take; the message names the variable
    and says what to set instead."""


@dataclass(frozen=True)
class Settings:
    """Every field can be set as ``LLMOPT_<FIELD>`` (upper case).

    ``kafka_bootstrap`` empty means "no cluster configured": the CLI then runs
    the embedded broker and switches on its profile (``embedded_broker``).
    """

    kafka_bootstrap: str = ""
    embedded_broker: bool = False
    # How every Kafka client of the project (worker, SDK, CLI) authenticates
    # (app/kafka_security.py). SASL_* need a mechanism, a username and a
    # password, the password given directly or as a file (a mounted secret);
    # SSL and SASL_SSL verify the brokers against ssl_cafile (empty: the
    # system's CAs) and present ssl_certfile/ssl_keyfile when set (mutual TLS).
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_sasl_password_file: str = ""
    kafka_ssl_cafile: str = ""
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    kafka_ssl_check_hostname: bool = True
    app_id: str = "llmopt"
    # Appended to every topic name (``llmopt.requests.v1.<namespace>``): isolates
    # replays and test runs sharing a cluster.
    topic_namespace: str = ""
    # A worker that finds topics of topics.yaml missing (a broker that lost its
    # logs) creates them again, as `llmopt topics apply` would; off: /health
    # reports them (503) until they exist. Faust's table changelogs are created
    # again either way, as at a worker's start.
    auto_create_topics: bool = True
    data_dir: Path = ROOT / "data"
    policies_path: Path = POLICIES_PATH
    topics_path: Path = ROOT / "topics.yaml"
    simulator_path: Path = SIMULATOR_PATH
    # Drift/anomaly detectors, alert rules and adaptation per policy (read at start).
    drift_path: Path = DRIFT_PATH
    # When web_token (or web_token_file) is set, every web endpoint but
    # /health wants ``Authorization: Bearer <token>`` (app/web_auth.py);
    # binding to any address but loopback requires it.
    web_host: str = "127.0.0.1"
    web_token: str = field(default="", repr=False)
    web_token_file: str = ""
    # Callers and the tenants each may act for (app/tenant_access.py): bearer
    # tokens of the web endpoints, and principal:<name> entries for the
    # principal a gateway forwards in principal_header on Kafka records.
    web_tokens_file: str = ""
    principal_header: str = ""
    # A fixed port (not 0, "any free port"): `llmopt run` polls /health there
    # and a worker's metrics carry it as part of the worker's id.
    web_port: int = 6066
    worker_roles: str = "decide,join,learn"
    # Features (docs/features.md): a YAML feature spec (empty: none, decisions
    # keep the 13 engineered features; config/features.yaml is an example);
    # where archive_outcomes writes Parquet (empty: <data_dir>/archive), and
    # how often / how many rows per flush.
    feature_spec_path: str = ""
    archive_dir: str = ""
    archive_flush_seconds: float = 5.0
    archive_batch_max: int = 20000
    log_level: str = "info"
    # text: the logging library's lines; json: one JSON object per line
    # (app/log_format.py).
    log_format: str = "text"
    max_event_bytes: int = 64 * 1024
    # Decision hot path: how many requests one batch may hold and how long the
    # fetch may wait to fill it. Small waits keep p99 low at modest rates.
    decide_batch_max: int = 2000
    # -1: the broker profile's choice (2 ms on Kafka; 20 ms on the embedded
    # broker, whose fetch cost grows with a partition's history until a 2 ms
    # fetch returns nothing and the consumer stalls).
    decide_fetch_wait_ms: int = -1
    # A request still undecided this long after its created_at gets its
    # policy's fallback arm (fallback_reason "deadline"); a request's own
    # deadline_ms wins. 0: no deadline.
    decision_deadline_ms: int = 0
    producer_linger_ms: int = 1
    # The agents' own producer (table changelogs, outcomes, snapshots): off
    # the decision path, so it waits longer to fill larger batches; on the
    # embedded broker each produce request costs more than its records.
    agents_linger_ms: int = 10
    join_timer_interval_seconds: float = 0.5
    # How often a worker checks the policies file for changes (no restart needed).
    policies_reload_seconds: float = 2.0
    # A reward whose decision the join has not seen is held at least
    # join_orphan_hold_seconds and until the join has read the decisions
    # partition past where that decision would be; a decision past its wait
    # time defaults only once the join has read the rewards partition past
    # where its reward would be. join_max_hold_seconds bounds both when the
    # join is behind. How long a finished request still recognises duplicate
    # and late rewards: join_done_retention_seconds.
    join_orphan_hold_seconds: float = 10.0
    join_max_hold_seconds: float = 900.0
    join_done_retention_seconds: float = 3600.0
    # How long the learner remembers an applied request id (counted in
    # outcome time), to apply an outcome the join emitted twice only once.
    # The join re-emits an outcome only while it keeps the finished request,
    # so this must cover join_done_retention_seconds + join_max_hold_seconds.
    applied_requests_retention_seconds: float = 5400.0
    # The learner applies a drift event once it has processed the outcomes
    # the drift was detected on; this bounds the wait when it cannot get
    # there (another cluster's offsets, an offset past the partition's end).
    # 0: no wait (drifts are applied as they are read).
    drift_max_hold_seconds: float = 30.0
    # Ingress: a request's reply_to must name a topic with this prefix (which
    # must already exist: the worker never creates topics by producing).
    reply_topic_prefix: str = "llmopt.replies."
    # A Kafka header, set by a trusted gateway, that carries the tenant of
    # each request and reward (empty: the payload's tenant_id is taken as is).
    tenant_header: str = ""
    # When set, each decision carries a reward_token (an HMAC of tenant and
    # request id under this secret) that its reward must echo.
    reward_token_secret: str = field(default="", repr=False)
    # Distinct values a label of one metric family may take; later values
    # are counted under "other" (app/metrics.py).
    metric_label_values_max: int = 1000
    # Ops view: how often a worker publishes its metrics to the metrics topic
    # (0: never), and how many points of history (one per publishing interval)
    # it keeps from that topic to serve /dashboard (0: no dashboard).
    metrics_publish_seconds: float = 2.0
    dashboard_history_points: int = 300
    # How often the experiments' evaluator publishes each running
    # experiment's result (stage changes and stops go out at once).
    experiment_result_seconds: float = 5.0
    # Faults injected on purpose, for the chaos checks (app/faults.py), e.g.
    # kill_mid_batch:join_rewards:3,crash_policy_update:0.001; empty: none.
    faults: str = ""
    # Real-Kafka defaults; the embedded profile below overrides them.
    session_timeout_seconds: float = 30.0
    heartbeat_interval_seconds: float = 3.0
    rebalance_timeout_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.web_port < 65536:
            raise SettingsError(
                f"{PREFIX}WEB_PORT: {self.web_port} is not a usable port; set a port number "
                f"from 1 to 65535 such as {Settings.web_port}"
            )
        if not 0 <= self.decision_deadline_ms <= MAX_DEADLINE_MS:
            raise SettingsError(
                f"{PREFIX}DECISION_DEADLINE_MS: {self.decision_deadline_ms} is not a deadline; "
                f"set milliseconds from 1 to {MAX_DEADLINE_MS}, or 0 for none"
            )
        floor = self.join_done_retention_seconds + self.join_max_hold_seconds
        if self.applied_requests_retention_seconds < floor:
            raise SettingsError(
                f"{PREFIX}APPLIED_REQUESTS_RETENTION_SECONDS: "
                f"{self.applied_requests_retention_seconds:g} is shorter than the join keeps a "
                f"finished request (JOIN_DONE_RETENTION_SECONDS + JOIN_MAX_HOLD_SECONDS = "
                f"{floor:g}); set at least {floor:g}"
            )
        try:
            parse_faults(self.faults)
        except FaultSpecError as exc:
            raise SettingsError(f"{PREFIX}FAULTS: {exc}") from None
        if self.metric_label_values_max < 1:
            raise SettingsError(
                f"{PREFIX}METRIC_LABEL_VALUES_MAX: {self.metric_label_values_max} is not a "
                f"cap; set at least 1, such as {Settings.metric_label_values_max}"
            )
        self._check_kafka_security()
        self._check_web_access()
        self._check_tenant_access()

    def _check_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise SettingsError(
                f"{PREFIX}KAFKA_SECURITY_PROTOCOL: {protocol!r} is not a security protocol; "
                f"set one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if protocol != "PLAINTEXT" and self.embedded_broker:
            raise SettingsError(
                f"{PREFIX}KAFKA_SECURITY_PROTOCOL: the embedded broker speaks PLAINTEXT only; "
                f"unset it, or set {PREFIX}KAFKA_BOOTSTRAP to a cluster that speaks {protocol}"
            )
        sasl = {
            "KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
            "KAFKA_SASL_PASSWORD_FILE": self.kafka_sasl_password_file,
        }
        tls = {
            "KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        # A setting the protocol would ignore is a mistake, not a no-op.
        for names, used in ((sasl, protocol.startswith("SASL_")), (tls, protocol.endswith("SSL"))):
            unused = [PREFIX + n for n, v in names.items() if v and not used]
            if unused:
                raise SettingsError(
                    f"{unused[0]}: set, but {PREFIX}KAFKA_SECURITY_PROTOCOL={protocol} does not "
                    f"use it; unset it or set a protocol that does"
                )
        if protocol.startswith("SASL_"):
            mechanism = self.kafka_sasl_mechanism
            if mechanism not in SASL_MECHANISMS:
                given = f"{mechanism!r} is not a SASL mechanism" if mechanism else "not set"
                raise SettingsError(
                    f"{PREFIX}KAFKA_SASL_MECHANISM: {given}; {protocol} needs one of "
                    f"{', '.join(SASL_MECHANISMS)}"
                )
            if not self.kafka_sasl_username:
                raise SettingsError(
                    f"{PREFIX}KAFKA_SASL_USERNAME: not set; {protocol} needs the SASL username"
                )
            _one_secret(
                "KAFKA_SASL_PASSWORD",
                self.kafka_sasl_password,
                self.kafka_sasl_password_file,
                f"{protocol} needs the SASL password",
            )
        for name, path in tls.items():
            if path and not Path(path).is_file():
                raise SettingsError(
                    f"{PREFIX}{name}: {path} is not a file; set the path of a PEM file"
                )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise SettingsError(
                f"{PREFIX}KAFKA_SSL_KEYFILE: set without {PREFIX}KAFKA_SSL_CERTFILE; set the "
                "client certificate it belongs to"
            )

    def _check_web_access(self) -> None:
        if self.web_token or self.web_token_file:
            token = _one_secret("WEB_TOKEN", self.web_token, self.web_token_file, "")
            if len(token) < WEB_TOKEN_MIN_CHARS:
                raise SettingsError(
                    f"{PREFIX}WEB_TOKEN: shorter than {WEB_TOKEN_MIN_CHARS} characters; set a "
                    "random one, e.g. `openssl rand -hex 32`"
                )
        elif not is_loopback(self.web_host) and not self._file_has_tokens():
            raise SettingsError(
                f"{PREFIX}WEB_HOST: {self.web_host} is not a loopback address, so the web "
                f"endpoints need a bearer token; set {PREFIX}WEB_TOKEN (or "
                f"{PREFIX}WEB_TOKEN_FILE, or tokens in {PREFIX}WEB_TOKENS_FILE), or bind to "
                "127.0.0.1"
            )

    def _tenant_access(self) -> TenantAccess | None:
        if not self.web_tokens_file:
            return None
        try:
            return TenantAccess.load(self.web_tokens_file, WEB_TOKEN_MIN_CHARS)
        except ValueError as exc:
            raise SettingsError(f"{PREFIX}WEB_TOKENS_FILE: {exc}") from None

    def _file_has_tokens(self) -> bool:
        access = self._tenant_access()
        return access is not None and access.has_tokens

    def _check_tenant_access(self) -> None:
        access = self._tenant_access()
        if self.principal_header and not (access is not None and access.has_principals):
            raise SettingsError(
                f"{PREFIX}PRINCIPAL_HEADER: set, but no {PREFIX}WEB_TOKENS_FILE names a "
                "principal:<name> entry; list the principals and their tenants there"
            )

    def sasl_password(self) -> str:
        """The SASL password, from its variable or its file."""
        return _secret(self.kafka_sasl_password, self.kafka_sasl_password_file)

    def web_bearer_token(self) -> str:
        """The token the web endpoints want ("": none), from its variable or its file."""
        return _secret(self.web_token, self.web_token_file)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _parse(f.name, f.type, raw)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def unknown_variables(cls, env: dict[str, str] | None = None) -> list[str]:
        """``LLMOPT_*`` variables that set nothing (misspelt, say).
        ``LLMOPT_TEST_*`` belong to the test suite."""
        env = dict(os.environ if env is None else env)
        known = {PREFIX + f.name.upper() for f in fields(cls)}
        return sorted(
            k
            for k in env
            if k.startswith(PREFIX) and k not in known and not k.startswith(PREFIX + "TEST_")
        )

    @property
    def bootstrap(self) -> str:
        if not self.kafka_bootstrap:
            raise RuntimeError(
                "no Kafka cluster configured: set LLMOPT_KAFKA_BOOTSTRAP=host:port, "
                "or use `llmopt run`, which starts the embedded broker"
            )
        return self.kafka_bootstrap

    @property
    def roles(self) -> set[str]:
        return {r.strip() for r in self.worker_roles.split(",") if r.strip()}

    @property
    def decide_fetch_wait(self) -> int:
        if self.decide_fetch_wait_ms >= 0:
            return self.decide_fetch_wait_ms
        return 20 if self.embedded_broker else 2

    def broker_profile(self) -> dict[str, Any]:
        """Consumer-group timings; the embedded broker needs short ones:
        its JoinGroup waits half the session timeout (rounded up to whole
        seconds), and a member that comes back after a kill or a clean
        leave waits for its old membership's session to run out first
        (docs/chaos.md#recovery-after-a-kill)."""
        if self.embedded_broker:
            return {"session_timeout": 3.0, "heartbeat_interval": 0.5, "rebalance_timeout": 10.0}
        return {
            "session_timeout": self.session_timeout_seconds,
            "heartbeat_interval": self.heartbeat_interval_seconds,
            "rebalance_timeout": self.rebalance_timeout_seconds,
        }


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another host name: it may resolve to any interface
        return False


def _secret(value: str, path: str) -> str:
    """A secret set directly or as a file; a file's final line break (as
    editors and ``echo`` write it) is not part of it."""
    if value or not path:
        return value
    return Path(path).read_text(encoding="utf-8").rstrip("\r\n")


def _one_secret(name: str, value: str, path: str, needed: str) -> str:
    """The secret named ``name``, given once, by value or by file; the
    messages never quote it."""
    variable, file_variable = PREFIX + name, PREFIX + name + "_FILE"
    if value and path:
        raise SettingsError(f"{variable}: set together with {file_variable}; set only one")
    if path:
        try:
            secret = _secret("", path)
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise SettingsError(
                f"{file_variable}: cannot read {path} ({reason}); set the path of a readable file"
            ) from None
        if not secret:
            raise SettingsError(f"{file_variable}: {path} is empty; write the secret into it")
        return secret
    if not value:
        raise SettingsError(f"{variable}: not set; {needed}, in {variable} or {file_variable}")
    return value


def _parse(name: str, typ: Any, raw: str) -> Any:
    typ = str(typ)
    variable = PREFIX + name.upper()
    default = getattr(Settings, name)
    try:
        if typ == "bool":
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
        if typ == "Path":
            return Path(raw)
        return raw
    except ValueError:
        if typ == "bool":
            problem, hint = "a boolean", "set true or false (or 1/0, yes/no)"
        elif typ == "int":
            example = "a port number" if name.endswith("_port") else "an integer"
            problem, hint = "an integer", f"set {example} such as {default}"
        else:
            problem, hint = "a float", f"set a number such as {default}"
        raise SettingsError(f"{variable}: {raw!r} is not {problem}; {hint}") from None
