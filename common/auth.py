"""The one bearer-token check: the gateway's admin endpoints, its API keys and the orchestrator's
API all compare secrets the same way, in constant time, so how long a refusal takes never tells
how much of a guess was right."""

from __future__ import annotations

import hmac


def presented_bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case, as RFC 7235
    has it); None when the header is absent or another scheme."""
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def secret_matches(given: str | None, expected: str) -> bool:
    """``given == expected`` in constant time; an empty ``expected`` (no secret configured) matches nothing."""
    # Bytes, not str: compare_digest refuses str with non-ASCII characters, which a header may carry.
    return bool(expected) and hmac.compare_digest((given or "").encode(), expected.encode())


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` as its bearer token."""
    return secret_matches(presented_bearer(authorization), token)
