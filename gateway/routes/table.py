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

# The provider names apps put before a model of ours (`llamacpp:qwen3`, as llama.cpp's own tools
# and some IDE plugins write it, or the stack's own name): they mean one of our own models.
OWN_PROVIDERS = ("llamacpp", "llama.cpp", "llama-cpp", "llamadock")


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
    files: tuple[str, ...] = ()  # the GGUF file(s) it serves, so a request may name the file
    provider: str | None = None  # the OpenAI-compatible server it comes from; None: one of our own
    upstream_model: str | None = None  # the name its server knows it by (sent as `model`), if not ours
    auth_header: bytes | None = field(default=None, repr=False)  # sent to its server; never shown or logged
    timeout_s: float | None = None  # a provider's bound on its first byte and on each pause in its answer
    max_answer_bytes: int | None = None  # a provider's largest whole (not streamed) answer


@dataclass(frozen=True)
class ProviderStatus:
    """One provider as its last model discovery left it (no key in it: this is shown in /status)."""

    name: str
    url: str
    state: ModelState = ModelState.STARTING
    reason: str | None = None  # why it is not ready, in words
    code: str | None = None  # provider_unavailable, provider_auth_failed, provider_garbage, provider_error
    models: int = 0


@dataclass(frozen=True)
class Found:
    """A model a requested name resolved to, and by which rule (``default``: it named none)."""

    route: ModelRoute
    by: str  # name, alias, case, own_provider, file, default


def file_key(name: str) -> str:
    """A GGUF file name as a request may give it: any folder, `.gguf` and case dropped."""
    base = name.rsplit("/", 1)[-1]
    return (base[:-5] if base.lower().endswith(".gguf") else base).casefold()


@dataclass(frozen=True)
class RouteTable:
    """An immutable view of every model the gateway can route to, indexed by name and alias."""

    routes: tuple[ModelRoute, ...] = ()
    _index: Mapping[str, ModelRoute] = field(default_factory=dict, repr=False, compare=False)
    _folded: Mapping[str, ModelRoute] = field(default_factory=dict, repr=False, compare=False)
    _files: Mapping[str, ModelRoute] = field(default_factory=dict, repr=False, compare=False)
    providers: Mapping[str, ProviderStatus] = field(default_factory=dict)

    @classmethod
    def of(cls, routes: list[ModelRoute] | tuple[ModelRoute, ...],
           providers: Mapping[str, ProviderStatus] | None = None) -> "RouteTable":
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
        files: dict[str, ModelRoute] = {}
        for route in routes:
            for name in route.files:
                files.setdefault(file_key(name), route)
        return cls(tuple(routes), MappingProxyType(index), MappingProxyType(folded), MappingProxyType(files),
                   MappingProxyType(dict(providers or {})))

    def resolve(self, requested: str) -> ModelRoute | None:
        """The model a name means, by every rule but the default model (``find``)."""
        found = self.find(requested)
        return found.route if found else None

    def find(self, requested: str, default: str | None = None) -> Found | None:
        """The model a requested name means, in this order: exact name or alias; the same ignoring
        case; `llamacpp:NAME` (or another of OWN_PROVIDERS) for one of our own models; the GGUF file
        a model of ours serves (`qwen3-8b-q4_k_m.gguf`, with or without `.gguf`); and last, with
        ``default`` set, that model, for a name nothing else matched (or no name at all)."""
        if requested:
            route = self._index.get(requested)
            if route is not None:
                return Found(route, "name" if route.name == requested else "alias")
            route = self._folded.get(requested.casefold())
            if route is not None:
                return Found(route, "case")
            prefix, colon, rest = requested.partition(":")
            if colon and rest and prefix.casefold() in OWN_PROVIDERS:
                inner = self.find(rest)
                if inner is not None and inner.route.provider is None:
                    return Found(inner.route, "own_provider")
            route = self._files.get(file_key(requested))
            if route is not None and route.provider is None:
                return Found(route, "file")
        if default:
            chosen = self.find(default)
            if chosen is not None:
                return Found(chosen.route, "default")
        return None

    def provider_of(self, requested: str) -> ProviderStatus | None:
        """The provider a `provider:model` name names, if it is one of ours."""
        prefix, colon, _ = requested.partition(":")
        return self.providers.get(prefix) if colon else None

    def get(self, name: str) -> ModelRoute | None:
        """The model of that exact name (not an alias): how a route is found again by its own name."""
        route = self._index.get(name)
        return route if route is not None and route.name == name else None

    def names(self) -> list[str]:
        return [route.name for route in self.routes]

    def with_route(self, route: ModelRoute) -> "RouteTable":
        """The same table with one model's entry replaced (by name)."""
        return RouteTable.of([route if r.name == route.name else r for r in self.routes], self.providers)


def wire_model(route: ModelRoute, substituted: bool) -> str | None:
    """The `model` a request must carry to the route's server, when not the one it came with: a
    provider's own name for its model, and the name of the model that really answers when the
    default model stood in (llama-server names the request's model in its answer, so the answer
    then says who answered). None: the body goes as it came."""
    if route.upstream_model is not None:
        return route.upstream_model
    return route.name if substituted else None


def with_model(body: bytes, model: str) -> bytes:
    """``body`` with its `model` set to ``model``; re-encoded only when that changes it. A body that
    is not a JSON object (a raw passthrough) goes as it came."""
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        return body
    if not isinstance(payload, dict) or payload.get("model") == model:
        return body
    payload["model"] = model
    return json.dumps(payload, ensure_ascii=False).encode()


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


def routed_body(body: bytes, model_optional: bool = False) -> RoutedBody:
    """The ``model`` (and whether a stream is asked for) of a JSON request body, or
    RequestError saying what is wrong. ``model_optional`` (a default model is set): a body with no
    `model` reads as model "" (the default model answers it)."""
    if not body:
        raise RequestError("The request body is empty; send a JSON object with a 'model' field.")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(payload, dict):
        raise RequestError("The request body must be a JSON object.")
    model = payload.get("model")
    if model is None and model_optional:
        model = ""
    elif model is None:
        raise RequestError("You must provide a model parameter.", param="model")
    if not isinstance(model, str) or (not model.strip() and not (model_optional and model == "")):
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
