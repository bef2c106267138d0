"""Client authentication as nats-server does it: a token, or one user and password, checked
against CONNECT's ``auth_token`` / ``user`` / ``pass``; the configured secret may be a bcrypt
hash (``$2a$``/``$2b$``/``$2y$`` prefix, as nats-server accepts).

Pure decisions, no sockets: client.py asks ``needs_slow_check`` first and runs a bcrypt check
off the event loop, since one costs tens of milliseconds.
"""

from __future__ import annotations

import hmac
import re

import bcrypt

from mq9cluster.config import Settings

#: The -ERR text nats-server sends for a missing or wrong credential (and any op before CONNECT).
AUTH_VIOLATION = "Authorization Violation"
AUTH_TIMEOUT = "Authentication Timeout"

_BCRYPT = re.compile(r"^\$2[abxy]\$\d{2}\$.{53}$")


def is_bcrypt(secret: str) -> bool:
    """Whether a configured secret is a bcrypt hash rather than plain text (nats-server's test)."""
    return bool(_BCRYPT.match(secret))


def _secret_matches(configured: str, given: object) -> bool:
    if not isinstance(given, str) or not given:
        return False
    if is_bcrypt(configured):
        try:
            return bcrypt.checkpw(given.encode(), configured.encode())
        except ValueError:
            return False
    return hmac.compare_digest(configured.encode(), given.encode())


class Authenticator:
    """The credentials a node's clients must present; ``required`` is False when auth is off."""

    def __init__(self, token: str | None = None, user: str | None = None, password: str | None = None) -> None:
        self.token = token or None
        self.user = user or None
        self.password = password or None

    @classmethod
    def from_settings(cls, settings: Settings) -> "Authenticator":
        """The authenticator the options ask for."""
        return cls(settings.auth_token, settings.user, settings.password)

    @property
    def required(self) -> bool:
        """Whether clients must authenticate (INFO says ``auth_required``)."""
        return self.token is not None or self.user is not None

    @property
    def needs_slow_check(self) -> bool:
        """Whether ``check`` runs bcrypt (and so belongs off the event loop)."""
        secret = self.token if self.token is not None else self.password
        return secret is not None and is_bcrypt(secret)

    def check(self, options: dict) -> bool:
        """Whether CONNECT's options carry the right credentials (always True with auth off)."""
        if self.token is not None:
            return _secret_matches(self.token, options.get("auth_token"))
        if self.user is not None:
            user = options.get("user")
            user_ok = isinstance(user, str) and hmac.compare_digest(self.user.encode(), user.encode())
            return _secret_matches(self.password, options.get("pass")) and user_ok
        return True
