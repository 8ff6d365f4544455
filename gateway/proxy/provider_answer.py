"""A provider's answer, screened before it reaches the client.

Our own llama-servers are trusted to answer like llama-server; a provider is any server, so its
answer is held to bounds: each pause is at most its ``timeout_s`` (a stalled stream ends with a
504 event, never a hang), a whole answer is at most ``max_answer_bytes`` and must be JSON (else
502), and its errors come back in our OpenAI format, naming it: its 4xx as they are (the
client's request was at fault), a refused key as 401 ``provider_auth_failed`` (naming whose key), its 5xx as 502.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from common.errors import ApiError

from .. import errors
from .upstream import UpstreamBrokenError, UpstreamResponse, UpstreamTimeout

ERROR_BODY_BYTES = 64 * 1024  # enough of an error body to say what it was


class AnswerTooLarge(UpstreamBrokenError):
    pass


class Guarded:
    """An UpstreamResponse whose pieces must each come within ``idle_s``; a whole answer may be
    taken in first (``buffer``) and is then handed on from memory."""

    def __init__(self, response: UpstreamResponse, idle_s: float) -> None:
        self._response = response
        self.idle_s = idle_s
        self.status = response.status
        self.headers = response.headers
        self._held: list[bytes] | None = None

    def header(self, name: bytes) -> bytes | None:
        return self._response.header(name)

    async def next_piece(self) -> bytes | None:
        if self._held is not None:
            return self._held.pop(0) if self._held else None
        # asyncio.timeout, not wait_for: on 3.11, wait_for loses a cancel (the client gone) that
        # lands as a piece arrives, and a stream a client left would then run to its end.
        try:
            async with asyncio.timeout(self.idle_s):
                return await self._response.next_piece()
        except TimeoutError:
            raise UpstreamTimeout(f"nothing for {self.idle_s:g} s in the middle of its answer") from None

    async def pipe_to(self, sink: Callable[[bytes], bool], drain: Callable[[], Awaitable[None]]) -> None:
        while (piece := await self.next_piece()) is not None:
            if not sink(piece):
                await drain()

    async def read(self) -> bytes:
        parts = []
        while (piece := await self.next_piece()) is not None:
            parts.append(piece)
        return b"".join(parts)

    async def buffer(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes (AnswerTooLarge beyond), kept to be handed on."""
        parts, size = [], 0
        while (piece := await self.next_piece()) is not None:
            size += len(piece)
            if size > limit:
                raise AnswerTooLarge(f"its answer is larger than {limit} bytes")
            parts.append(piece)
        self._held = parts
        return b"".join(parts)

    def close(self) -> None:
        self._response.close()


def error_from(provider: str, status: int, body: bytes) -> ApiError:
    """A provider's error answer in our format (pure)."""
    message, code, param = None, None, None
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    detail = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(detail, dict):
        message, code, param = detail.get("message"), detail.get("code"), detail.get("param")
    elif isinstance(detail, str):
        message = detail  # Ollama's and some others' {"error": "..."}
    if not isinstance(message, str) or not message:
        message = body[:300].decode("utf-8", "replace").strip() or "no message"
    if status in (401, 403):
        return errors.provider_auth_failed(provider, f"HTTP {status}: {message}")
    if 400 <= status < 500:
        return ApiError(status, f"The provider '{provider}' refused the request: {message}",
                        code=code if isinstance(code, str) else "provider_rejected",
                        param=param if isinstance(param, str) else None)
    return errors.provider_failed(provider, f"HTTP {status}: {message}")


def is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


async def screen(response: Guarded, provider: str, max_bytes: int) -> ApiError | None:
    """Why this answer must not go to the client as it is, or None (then it may: a stream as it
    comes, a whole answer from memory)."""
    if response.status >= 400:
        return error_from(provider, response.status, (await _head(response)))
    if (response.header(b"content-type") or b"").startswith(b"text/event-stream"):
        return None
    try:
        body = await response.buffer(max_bytes)
    except AnswerTooLarge as exc:
        return errors.provider_failed(provider, str(exc), "provider_answer_too_large")
    if not is_json(body):
        return errors.provider_failed(provider, f"its answer is not JSON ({body[:60]!r})", "provider_garbage")
    return None


async def _head(response: Guarded) -> bytes:
    try:
        return await response.buffer(ERROR_BODY_BYTES)
    except AnswerTooLarge:
        return b""
