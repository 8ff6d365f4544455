"""The one error type both services answer with, in OpenAI's format, and the one set of handlers
that turns every failure into it: ours, FastAPI's validation, Starlette's 404 and 405, the
unexpected.

    {"error": {"message": "...", "type": "...", "param": null, "code": "..."}}

OpenAI clients raise their usual exceptions on it, and since the gateway forwards the
orchestrator's errors unchanged, one shape on both sides means one parser in the CLI.
"""

from __future__ import annotations

import json
import logging
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

# Where FastAPI found a bad value: the first element of a validation error's `loc`, not part of its name.
_LOCATIONS = ("body", "path", "query", "header", "cookie")


class ApiError(Exception):
    """An error a service answers itself; ``status`` is the HTTP status it answers with.

    ``type`` defaults to OpenAI's split: ``invalid_request_error`` for the client's mistakes
    (status < 500), ``server_error`` for ours. ``extra`` adds fields inside "error" (clients
    ignore the ones they do not know), e.g. ``log_tail``: a model server's last log lines when it
    failed to start, kept only when there are some.
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        *,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict | None = None,
        log_tail: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        if log_tail:
            self.extra["log_tail"] = list(log_tail)

    @property
    def log_tail(self) -> list[str]:
        return self.extra.get("log_tail", [])

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code,
                          **self.extra}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def sse_event(self) -> bytes:
        """The error as one SSE event, for a stream that already started (its status is sent)."""
        return b"event: error\ndata: " + json.dumps(self.body()).encode() + b"\n\n"


def validation_error(exc: RequestValidationError, prefix: str, code: str) -> ApiError:
    """400 naming every problem as ``where: what`` (``name: String should match pattern ...``);
    ``param`` is the first one's field."""
    problems: list[str] = []
    params: list[str | None] = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where = ".".join(loc[1:] if loc and loc[0] in _LOCATIONS else loc)
        what = err.get("msg", "invalid")
        problems.append(f"{where}: {what}" if where else what)
        params.append(where or None)
    return ApiError(400, f"{prefix}: {'; '.join(problems) or 'invalid'}.", code, params[0] if params else None)


def http_error(request: Request, exc: StarletteHTTPException) -> ApiError:
    """Starlette's own refusals (no such route, wrong method), with their status and headers (``Allow``)."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}.", code,
                    headers=getattr(exc, "headers", None))


def install_error_handlers(
    app: FastAPI,
    *,
    service: str,
    validation_prefix: str,
    validation_code: str,
    render: Callable[[Request, ApiError], Response] | None = None,
) -> None:
    """Answer every error on ``app`` as an ApiError: raised ones as they are, FastAPI's validation
    as a 400 (``validation_prefix: where: what; ...``, ``validation_code``), Starlette's HTTP
    errors with their status, anything else as a logged 500 naming ``service``.

    ``render`` turns the error into the response (default: OpenAI's JSON); the gateway's
    /api/* answers in Ollama's shape through it.
    """
    log = logging.getLogger(f"llamadock.{service}")

    def answer(request: Request, error: ApiError) -> Response:
        return render(request, error) if render is not None else error.response()

    async def on_api_error(request: Request, exc: ApiError) -> Response:
        return answer(request, exc)

    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return answer(request, validation_error(exc, validation_prefix, validation_code))

    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return answer(request, http_error(request, exc))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return answer(request, ApiError(500, f"The {service} failed unexpectedly: {type(exc).__name__}: {exc}.",
                                        "internal_error"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
