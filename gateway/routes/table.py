"""Pure routing decisions: which model a request names, and where that model is.

No I/O here: the registry hands over an immutable ``RouteTable`` and these
functions answer from it, so every rule is tested without a server. (The orchestrator's
"catalog" is something else: the models declared in config/models.yaml.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from contract.listing import ModelState


@dataclass(frozen=True)
class ModelRoute:
    """One model as the gateway sees it."""

    name: str
    url: str | None  # base URL of its llama-server, e.g. http://tiny-a:8080
    aliases: tuple[str, ...] = ()
    state: ModelState = ModelState.STOPPED
    reason: str | None = None  # why it is not ready, in words
    pids: tuple[int, ...] = ()  # host PIDs of its server, for VRAM attribution
    created: int = 0  # unix time the model became known (OpenAI's `created`)
    kv_key: str | None = None  # what its server's saved slots are known by (contract ModelStatus.kv_key)
    run_id: str | None = None  # one run of its server: instance and start time (a restart is another run)


@dataclass(frozen=True)
class RouteTable:
    """An immutable view of every model the gateway can route to, indexed by name and alias."""

    routes: tuple[ModelRoute, ...] = ()
    _index: Mapping[str, ModelRoute] = field(default_factory=dict, repr=False, compare=False)
    _folded: Mapping[str, ModelRoute] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, routes: list[ModelRoute] | tuple[ModelRoute, ...]) -> "RouteTable":
        """Build the index. Names win over aliases; the first claim on a name wins."""
        index: dict[str, ModelRoute] = {}
        for route in routes:
            index.setdefault(route.name, route)
        for route in routes:
            for alias in route.aliases:
                index.setdefault(alias, route)
        folded: dict[str, ModelRoute] = {}
        for key, route in index.items():
            folded.setdefault(key.casefold(), route)
        return cls(tuple(routes), MappingProxyType(index), MappingProxyType(folded))

    def resolve(self, requested: str) -> ModelRoute | None:
        """Exact name or alias first, then the same ignoring case."""
        return self._index.get(requested) or self._folded.get(requested.casefold())

    def get(self, name: str) -> ModelRoute | None:
        """The model of that exact name (not an alias): how a route is found again by its own name."""
        route = self._index.get(name)
        return route if route is not None and route.name == name else None

    def names(self) -> list[str]:
        return [route.name for route in self.routes]

    def with_route(self, route: ModelRoute) -> "RouteTable":
        """The same table with one model's entry replaced (by name)."""
        return RouteTable.of([route if r.name == route.name else r for r in self.routes])


class RequestError(ValueError):
    """The request does not say which model it is for, or is not JSON."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class RoutedBody:
    """What the gateway reads from a /v1 request body, parsed once."""

    model: str
    stream: bool
    keep_alive: object = None  # llamadock's extension: seconds the model stays loaded (-1: pinned)


def routed_body(body: bytes) -> RoutedBody:
    """The ``model`` (and whether a stream is asked for) of a JSON request body, or
    RequestError saying what is wrong."""
    if not body:
        raise RequestError("The request body is empty; send a JSON object with a 'model' field.")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(payload, dict):
        raise RequestError("The request body must be a JSON object.")
    model = payload.get("model")
    if model is None:
        raise RequestError("You must provide a model parameter.", param="model")
    if not isinstance(model, str) or not model.strip():
        raise RequestError("'model' must be a non-empty string.", param="model")
    return RoutedBody(model=model, stream=payload.get("stream") is True, keep_alive=payload.get("keep_alive"))


def model_from_body(body: bytes) -> str:
    """The ``model`` field of a JSON request body, or RequestError saying what is wrong."""
    return routed_body(body).model


def asks_for_stream(body: bytes) -> bool:
    """Whether a raw passthrough body asks for a stream (only how waiting is reported
    depends on it). Never raises: /upstream forwards any body, JSON object or not."""
    if b'"stream"' not in body:
        return False
    try:
        payload = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8: the model's server judges it
        return False
    return isinstance(payload, dict) and payload.get("stream") is True


def retry_after_s(state: ModelState) -> int:
    """How long to tell a client to wait before trying a model that is not ready."""
    return {ModelState.STARTING: 2, ModelState.STOPPED: 10, ModelState.FAILED: 30}.get(state, 5)
