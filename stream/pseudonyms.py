"""Optional pseudonymisation of user ids before they reach Redis.

With ``STREAMREC_USER_ID_HMAC_KEY`` set, every Redis key and stored value that would hold
a user id holds ``u1.<32 hex digits>`` instead: the first 128 bits of
HMAC-SHA256(key, user id). The mapping is deterministic (one user, one pseudonym, across
workers and restarts), cannot be reversed without the key, and changes completely with
the key (rotating the key forgets everyone at once). Published recommendations keep the
user id the producer sent: the consuming service needs it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from pydantic import SecretStr

__all__ = ["PREFIX", "pseudonymiser"]

#: Prefix of a pseudonym (the scheme's version).
PREFIX = "u1."


def pseudonymiser(key: SecretStr | None) -> Callable[[str], str]:
    """``user id -> pseudonym`` under ``key``; the identity when ``key`` is None.

    Example:
        >>> pseudonymise = pseudonymiser(SecretStr("k"))
        >>> pseudonymise("alice") == pseudonymise("alice") != pseudonymise("bob")
        True
        >>> pseudonymise("alice")
        'u1.ec631a55bb81f5b9dc96aa930a45628d'
    """
    if key is None:
        return _same
    secret = key.get_secret_value().encode("utf-8")

    def pseudonymise(user_id: str) -> str:
        digest = hmac.new(secret, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
        return PREFIX + digest[:32]

    return pseudonymise


def _same(user_id: str) -> str:
    return user_id
