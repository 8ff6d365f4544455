"""Providers: any OpenAI-compatible server (LM Studio, Ollama, vLLM, another llama-server or
llamadock, a cloud API) as a source of models, declared in the upstreams file::

    providers:
      lmstudio:
        url: http://127.0.0.1:1234        # with or without /v1
        api_key_env: LMSTUDIO_API_KEY     # the environment variable holding its key (optional)
        models: ["qwen*"]                 # which of its models to serve (globs; default: all)
        rename: {qwen2.5-7b-instruct: qwen7b}

Its models are what its ``GET /v1/models`` lists (refreshed every ``refresh_s``): each is routed
as ``provider:model`` and, where no other model claims it, by the bare name. Our own models win a
clash. Everything here is pure: the effects (the discovery calls) are provider_source.py's.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import replace
from typing import Mapping, Sequence

from pydantic import BaseModel, Field, field_validator

from contract.listing import ModelState

from .table import ModelRoute, ProviderStatus, RouteTable

PROVIDER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # no ':' (it separates provider from model)


class ProviderEntry(BaseModel):
    model_config = {"extra": "forbid"}  # a misspelt key is said, not silently ignored

    url: str = Field(pattern=r"^https?://[^/]")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="Name of the environment variable that holds its API key.")
    models: list[str] = Field(default_factory=list, description="Globs of its model ids to serve; empty: all.")
    rename: dict[str, str] = Field(default_factory=dict, description="Its model id -> the name served here.")
    refresh_s: float = Field(15.0, gt=0, description="How often its /v1/models is read again.")
    timeout_s: float = Field(120.0, gt=0, description="Longest wait for its first byte, and between pieces.")
    max_answer_bytes: int = Field(32 * 2**20, gt=0, description="Largest whole (not streamed) answer taken.")

    @field_validator("url")
    @classmethod
    def _base(cls, url: str) -> str:
        """The server's root: apps are told `http://host:1234/v1`, and people copy that."""
        url = url.rstrip("/")
        return url[:-3] if url.endswith("/v1") else url

    @field_validator("rename")
    @classmethod
    def _no_colon(cls, rename: dict[str, str]) -> dict[str, str]:
        for new in rename.values():
            if not new or ":" in new:
                raise ValueError(f"rename: '{new}' is no model name (it must be non-empty, without ':')")
        return rename


class DiscoveryError(ValueError):
    """A /v1/models answer that is no OpenAI model list."""


def model_ids(body: bytes) -> list[str]:
    """The model ids of an OpenAI ``GET /v1/models`` answer: ``{"data": [{"id": ...}, ...]}``."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise DiscoveryError(f"its /v1/models is not JSON ({body[:60]!r})") from None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise DiscoveryError("its /v1/models has no 'data' list (not an OpenAI-compatible server?)")
    ids = [item.get("id") for item in data if isinstance(item, dict)]
    if any(not isinstance(i, str) or not i for i in ids) or len(ids) != len(data):
        raise DiscoveryError("its /v1/models lists entries without an 'id'")
    return list(dict.fromkeys(ids))  # in its order, once each


def served(entry: ProviderEntry, ids: Sequence[str]) -> dict[str, str]:
    """Its model id -> the name it is served by here, after the filter and the renames."""
    kept = [i for i in ids if not entry.models or any(fnmatch.fnmatchcase(i, g) for g in entry.models)]
    return {i: entry.rename.get(i, i).replace(":", "-") for i in kept}  # `a:b` would read as provider:model


def provider_routes(name: str, entry: ProviderEntry, ids: Sequence[str], status: ProviderStatus,
                    auth_header: bytes | None, created: Mapping[str, int]) -> list[ModelRoute]:
    """Its models as routes, `name:model`, each with its bare name as a candidate alias (``combine``
    keeps it where unambiguous), in the provider's state."""
    return [ModelRoute(name=f"{name}:{shown}", url=entry.url, aliases=(shown,), state=status.state,
                       reason=status.reason and f"provider {name}: {status.reason}",
                       created=created.get(model_id, 0), provider=name, upstream_model=model_id,
                       auth_header=auth_header, timeout_s=entry.timeout_s,
                       max_answer_bytes=entry.max_answer_bytes)
            for model_id, shown in served(entry, ids).items()]


def combine(own: Sequence[ModelRoute], provided: Sequence[ModelRoute],
            providers: Mapping[str, ProviderStatus]) -> RouteTable:
    """One table of our own models and the providers' models. A provider's model keeps its bare
    name only when neither one of ours (name or alias, any case) nor another provider's model
    claims it: ours win, and a name two providers share is theirs only with the prefix."""
    claimed = {key.casefold() for route in own for key in (route.name, *route.aliases)}
    counts: dict[str, int] = {}
    for route in provided:
        for alias in route.aliases:
            counts[alias.casefold()] = counts.get(alias.casefold(), 0) + 1
    kept = [replace(route, aliases=tuple(a for a in route.aliases
                                         if a.casefold() not in claimed and counts[a.casefold()] == 1))
            for route in provided]
    return RouteTable.of([*own, *kept], providers)


def status_of(name: str, entry: ProviderEntry, error: str | None, code: str | None, models: int) -> ProviderStatus:
    """A provider's state from its last discovery: ready when it listed its models; down (stopped)
    when it could not be reached; failed when it answered but not usably (key, garbage)."""
    if error is None:
        return ProviderStatus(name, entry.url, ModelState.READY, None, None, models)
    state = ModelState.STOPPED if code in ("provider_unavailable", "provider_timeout") else ModelState.FAILED
    return ProviderStatus(name, entry.url, state, error, code, models)


def key_header(entry: ProviderEntry, environ: Mapping[str, str]) -> tuple[bytes | None, str | None]:
    """The Authorization header for it, from the environment; or why there is none when it needs one."""
    if entry.api_key_env is None:
        return None, None
    key = environ.get(entry.api_key_env, "")
    if not key:
        return None, f"its API key variable {entry.api_key_env} is not set in the gateway's environment"
    return b"Bearer " + key.encode("latin-1", "replace"), None
