"""Optional API keys on /v1 and /upstream (off unless LLAMADOCK_API_KEYS is set)."""

from __future__ import annotations

from fastapi import Request

from common.auth import presented_bearer, secret_matches

from . import errors


def presented_key(request: Request) -> str | None:
    """The key a client sent: OpenAI clients use Bearer, Anthropic clients x-api-key."""
    return presented_bearer(request.headers.get("authorization")) or request.headers.get("x-api-key")


def key_is_valid(presented: str | None, keys: list[str]) -> bool:
    if not keys:
        return True
    if not presented:
        return False
    # Compare against every key so the time taken does not tell which one nearly matched.
    matches = [secret_matches(presented, key) for key in keys]
    return any(matches)


async def require_api_key(request: Request) -> None:
    keys = request.app.state.gateway.settings.api_keys
    if keys and not key_is_valid(presented_key(request), keys):
        raise errors.unauthorized()
