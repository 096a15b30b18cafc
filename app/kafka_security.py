"""How a Kafka client of the project authenticates: the ``LLMOPT_KAFKA_SECURITY_*``,
``LLMOPT_KAFKA_SASL_*`` and ``LLMOPT_KAFKA_SSL_*`` settings as the keyword
arguments of aiokafka's producer, consumer and admin client.

Every client the project creates takes them (``**kafka_security(settings)``);
the Faust application gets the same through its ``broker_credentials``
(:func:`app.stream.app.faust_settings`). The settings are checked when they
are read (:class:`~app.settings.Settings`), so a client here fails only on a
certificate or key file that is not PEM.

>>> kafka_security(Settings())
{'security_protocol': 'PLAINTEXT'}
>>> kw = kafka_security(Settings(
...     kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
...     kafka_sasl_username="llmopt", kafka_sasl_password="s3cret"))
>>> sorted(kw)
['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol']
"""

from __future__ import annotations

import ssl
from typing import Any

from app.settings import PREFIX, Settings, SettingsError


def kafka_security(settings: Settings | None = None) -> dict[str, Any]:
    """aiokafka's security arguments for ``settings`` (None: read from the
    environment, for code that is handed only a bootstrap address)."""
    s = settings if settings is not None else Settings.from_env()
    protocol = s.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        # aiokafka's SCRAM takes its credentials from the sasl_plain_* arguments too.
        kwargs.update(
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_plain_username=s.kafka_sasl_username,
            sasl_plain_password=s.sasl_password(),
        )
    if protocol.endswith("SSL"):
        kwargs["ssl_context"] = ssl_context(s)
    return kwargs


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context: brokers verified against the CA file (or the
    system's CAs, as managed clusters' certificates need), hostname checked
    unless switched off, and the client certificate presented when set."""
    s = settings
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=s.kafka_ssl_cafile or None
        )
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(
            f"{PREFIX}KAFKA_SSL_CAFILE: {s.kafka_ssl_cafile} holds no usable CA certificate "
            f"({_reason(exc)}); set a PEM file"
        ) from None
    context.check_hostname = s.kafka_ssl_check_hostname
    if s.kafka_ssl_certfile:
        try:
            context.load_cert_chain(s.kafka_ssl_certfile, s.kafka_ssl_keyfile or None)
        except (ssl.SSLError, OSError) as exc:
            raise SettingsError(
                f"{PREFIX}KAFKA_SSL_CERTFILE: {s.kafka_ssl_certfile} (with "
                f"{PREFIX}KAFKA_SSL_KEYFILE={s.kafka_ssl_keyfile or '-'}) is not a usable "
                f"certificate and key ({_reason(exc)}); set PEM files, the key unencrypted"
            ) from None
    return context


def _reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
