"""API dialects: the ways a client may speak to the gateway (OpenAI, Anthropic, Ollama), over one
exchange (gateway/proxy/exchange.py) that does the same for all of them: resolve the model, take the
scheduler's ticket, wait for the go, call the model's llama-server, map its failures, release.

A dialect says only what differs: how to read the model, stream and keep_alive from a body; how a
request becomes the /v1 call llama-server takes and how its answer comes back (both untouched for
OpenAI and Anthropic); its error JSON and its in-stream error event; what a waiting client is told.

A new API surface is one module with a dialect and the routes it serves, and one ``Surface`` line
in gateway/app.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from fastapi import APIRouter, Request
from starlette.responses import Response

from common.errors import ApiError

if TYPE_CHECKING:
    from ..scheduling.progress import Progress
    from .upstream import UpstreamResponse


@dataclass(frozen=True)
class Asked:
    """What a request asks for, as its dialect read it."""

    model: str  # the name as the client sent it
    stream: bool = False  # the client asked for a stream
    keep_alive: float | None = None  # seconds the model stays loaded after this (-1: pinned)
    reasoning_progress: bool = False  # the client asked to see the wait as the model's reasoning
    body: object = None  # the body as the dialect parsed it, for its own translation


@dataclass(frozen=True)
class UpstreamCall:
    """One HTTP request to a model's llama-server (the client's credentials are dropped on the way)."""

    method: str
    target: str  # path and query on the model's server
    headers: Sequence[tuple[bytes, bytes]]
    body: bytes


class Client(Protocol):
    """The client's side of an exchange, as an answer translation writes to it."""

    started: float  # perf_counter() when the request arrived
    admitted_at: float  # perf_counter() when the scheduler let it go
    headers_sent: bool  # the client has a status already (it waited on a stream, or start() was called)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None: ...

    async def send(self, body: bytes, more: bool = True) -> None: ...

    async def respond(self, response: Response) -> None:
        """A whole answer (one JSON object) as the response."""

    async def fail(self, error: ApiError, kind: str) -> None:
        """The error in the dialect's shape: a response, or an in-stream event once started."""

    def count(self, piece: bytes) -> None:
        """An upstream piece seen (time to first token, streamed tokens)."""

    async def pass_through(self, response: UpstreamResponse) -> None:
        """The model's answer to the client as it came, byte for byte."""


class Dialect(Protocol):
    name: str
    stream_type: bytes  # the content type of its streams (headers sent while a stream waits)

    def read(self, raw: bytes, request: Request) -> Asked:
        """The body read: model, stream, keep_alive; an ApiError (400) saying what is wrong."""

    def candidates(self, model: str) -> Sequence[str]:
        """The names to look the model up by, in order."""

    def request(self, asked: Asked, model: str, incoming: UpstreamCall) -> UpstreamCall:
        """The call to llama-server for ``incoming`` (the client's request as it came); ``model``
        is the route table's name for it."""

    async def answer(self, asked: Asked, model: str, response: UpstreamResponse, client: Client) -> None:
        """llama-server's answer, written to the client in the dialect's shape."""

    def error_response(self, error: ApiError) -> Response:
        """The error before any byte of an answer: its JSON, status and headers."""

    def stream_error(self, error: ApiError) -> bytes:
        """The error as the last event of a stream already under way."""

    def tells_progress(self, asked: Asked) -> bool:
        """Whether the client is told what it waits for while it waits."""

    def progress_event(self, asked: Asked, report: Progress | None, waited_s: float, model: str,
                       stream_id: str) -> bytes:
        """What a waiting client is told now (``report`` None: it is being let through this moment)."""


@dataclass(frozen=True)
class Surface:
    """One API surface: its dialect and its routes. ``prefix``: paths whose every error (401,
    no such route, bad input) is answered in this dialect, even where no route of it matched."""

    dialect: Dialect
    routers: tuple[APIRouter, ...]
    prefix: str | None = None


def dialect_for(surfaces: Sequence[Surface], path: str, default: Dialect) -> Dialect:
    """The dialect that answers errors on ``path``: the surface with the longest prefix of it."""
    claims = [s for s in surfaces if s.prefix and path.startswith(s.prefix)]
    return max(claims, key=lambda s: len(s.prefix or "")).dialect if claims else default
