"""Who may open the UI: HTTP basic credentials, and the rule that only loopback may go without them."""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
from dataclasses import dataclass, field

from trainwire.errors import ConfigError

AUTH_ENV = "TRAINWIRE_UI_AUTH"
"""The environment variable that may hold ``user:password`` instead of ``--auth``."""


@dataclass(frozen=True)
class Credentials:
    """A user name and password for HTTP basic authentication (the password is never shown)."""

    user: str
    password: str = field(repr=False)

    @classmethod
    def parse(cls, text: str, source: str = "--auth") -> Credentials:
        """``user:password`` as credentials; a malformed value is a :class:`ConfigError` naming ``source``."""
        user, sep, password = text.partition(":")
        if not sep or not user or not password:
            raise ConfigError(source, "expected user:password with neither part empty")
        return cls(user, password)

    @classmethod
    def from_option(cls, value: str | None) -> Credentials | None:
        """The credentials of ``--auth`` if given, else of ``TRAINWIRE_UI_AUTH``, else None."""
        if value:
            return cls.parse(value)
        env = os.environ.get(AUTH_ENV)
        return cls.parse(env, AUTH_ENV) if env else None

    def accepts(self, authorization: str | None) -> bool:
        """True when an ``Authorization`` header carries these credentials."""
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        same_user = secrets.compare_digest(user.encode(), self.user.encode())
        return secrets.compare_digest(password.encode(), self.password.encode()) and same_user


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, credentials: Credentials | None) -> None:
    """Refuse to serve completions beyond this machine without credentials (a :class:`ConfigError`)."""
    if credentials is None and not is_loopback(host):
        raise ConfigError(
            "--host",
            f"serving on {host} would show every prompt and completion to anyone who can reach it; "
            f"pass --auth user:password (or set {AUTH_ENV}), or bind 127.0.0.1",
        )
