"""One frozen settings object, read from arguments and the environment.

=============================  ===============================  ==========================================
argument                       environment variable             meaning
=============================  ===============================  ==========================================
``kafka``                      ``TRAINWIRE_KAFKA``              bootstrap servers; unset = embedded bus
``clickhouse``                 ``TRAINWIRE_CLICKHOUSE``         ``http(s)://user:pw@host:port/db``; unset
                                                                = embedded chdb under ``data_dir``
``data_dir``                   ``TRAINWIRE_DATA_DIR``           embedded log, spool and chdb data
                                                                (default ``./trainwire-data``)
``topic_prefix``               ``TRAINWIRE_TOPIC_PREFIX``       prefix of every topic (default
                                                                ``trainwire``)
``kafka_security_protocol``    ``TRAINWIRE_KAFKA_SECURITY_PROTOCOL``  PLAINTEXT, SSL, SASL_PLAINTEXT,
                                                                SASL_SSL
``kafka_sasl_mechanism``       ``TRAINWIRE_KAFKA_SASL_MECHANISM``  PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
``kafka_sasl_username``        ``TRAINWIRE_KAFKA_SASL_USERNAME``
``kafka_sasl_password``        ``TRAINWIRE_KAFKA_SASL_PASSWORD``  kept as :class:`Secret`, never printed
``kafka_ssl_cafile``           ``TRAINWIRE_KAFKA_SSL_CAFILE``   CA bundle for SSL
``kafka_ssl_certfile``         ``TRAINWIRE_KAFKA_SSL_CERTFILE`` client certificate (mutual TLS)
``kafka_ssl_keyfile``          ``TRAINWIRE_KAFKA_SSL_KEYFILE``  client key (mutual TLS)
=============================  ===============================  ==========================================

Arguments win over the environment; the CLI passes its flags as arguments.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trainwire.errors import ConfigError

ENV_PREFIX = "TRAINWIRE_"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*:)[^/\s'\"]*@")
_PASSWORD_PARAMETER = re.compile(r"(?P<head>(?<!\w)password=)[^&\s'\"]*", re.IGNORECASE)
MASK = "****"


def mask_secrets(text: str) -> str:
    """``text`` with every credential in it masked: URL passwords (any scheme) and ``password=`` parameters.

    The one masking function: every message, ``repr`` and log line that may hold a setting
    passes through it (``clickhouse://u:pw@host`` becomes ``clickhouse://u:****@host``).
    """
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _PASSWORD_PARAMETER.sub(lambda m: f"{m['head']}{MASK}", text)


@dataclass(frozen=True)
class Secret:
    """A string that does not show itself in ``repr`` or logs."""

    value: str = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    __str__ = __repr__


@dataclass(frozen=True)
class Settings:
    """Where events go and where they are stored. Build with :meth:`from_env`."""

    kafka: str | None = None
    clickhouse: str | None = None
    data_dir: Path = Path("trainwire-data")
    topic_prefix: str = "trainwire"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: Secret | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        if self.kafka_security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                "kafka_security_protocol",
                f"{self.kafka_security_protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}",
            )
        if self.clickhouse is not None and urlsplit(self.clickhouse).scheme not in ("http", "https"):
            raise ConfigError(
                "clickhouse", mask_secrets(f"{self.clickhouse!r} is not an http(s)://user:password@host:port/db URL")
            )
        if not self.topic_prefix or any(c in self.topic_prefix for c in " /\\"):
            raise ConfigError("topic_prefix", f"{self.topic_prefix!r} is not a valid Kafka topic prefix")

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return mask_secrets(f"Settings({fields})")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``TRAINWIRE_*`` variables, with ``overrides`` (not None) taking precedence."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw not in (None, ""):
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(", ".join(sorted(unknown)), "unknown setting")
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        password = values.get("kafka_sasl_password")
        if isinstance(password, str):
            values["kafka_sasl_password"] = Secret(password)
        return cls(**values)

    @property
    def embedded_bus(self) -> bool:
        """True when no Kafka bootstrap server is configured (the embedded local log is used)."""
        return not self.kafka

    @property
    def embedded_store(self) -> bool:
        """True when no ClickHouse server is configured (chdb under ``data_dir`` is used)."""
        return not self.clickhouse

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients: bootstrap servers and the security settings."""
        if not self.kafka:
            raise ConfigError("kafka", "no Kafka bootstrap servers configured (set TRAINWIRE_KAFKA or --kafka)")
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = self.kafka_sasl_password.value if self.kafka_sasl_password else None
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=self.kafka_ssl_cafile)
            if self.kafka_ssl_certfile:
                context.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
            options["ssl_context"] = context
        return options
