"""Errors in OpenAI's format, so OpenAI clients raise their usual exceptions.

    {"error": {"message": "...", "type": "...", "param": null, "code": "..."}}
"""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse


class GatewayError(Exception):
    """An error the gateway answers itself, in OpenAI's error format."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.extra = extra or {}  # more fields inside "error" (clients ignore fields they do not know)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code,
                          **self.extra}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def sse_event(self, anthropic: bool = False) -> bytes:
        """The error as one SSE event, for a stream that already started."""
        if anthropic:
            payload = {"type": "error", "error": {"type": "api_error", "message": self.message}}
        else:
            payload = self.body()
        return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"


def model_not_found(name: str, available: list[str]) -> GatewayError:
    listed = ", ".join(available) if available else "none (no model is configured)"
    return GatewayError(
        404,
        f"The model '{name}' does not exist. Available models: {listed}.",
        code="model_not_found",
        param="model",
    )


def model_not_ready(name: str, state: str, reason: str | None, retry_after_s: int) -> GatewayError:
    why = f": {reason}" if reason else ""
    return GatewayError(
        503,
        f"The model '{name}' is {state}{why}. Retry in {retry_after_s} s.",
        type="server_error",
        code="model_not_ready",
        headers={"Retry-After": str(retry_after_s)},
    )


def model_list_pending(why: str | None) -> GatewayError:
    """The gateway has not heard the model list yet (it just started, the orchestrator is
    still coming up): a model it cannot find may well exist, so this is no 404."""
    return GatewayError(
        503,
        "The gateway does not know the model list yet" + (f" ({why})" if why else "") + ". Retry in 2 s.",
        type="server_error",
        code="model_list_pending",
        headers={"Retry-After": "2"},
    )


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


def unauthorized() -> GatewayError:
    return GatewayError(
        401,
        "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def body_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"The request body is larger than the gateway's limit of {limit} bytes "
        "(LLAMADOCK_MAX_BODY_BYTES).",
        code="request_too_large",
    )


def upstream_unreachable(name: str, detail: str) -> GatewayError:
    return GatewayError(502, f"The model '{name}' did not accept the request: {detail}.", type="server_error", code="upstream_unreachable")


def upstream_timeout(name: str, detail: str) -> GatewayError:
    return GatewayError(504, f"The model '{name}' did not answer in time: {detail}.", type="server_error", code="upstream_timeout")


def upstream_broken(name: str, detail: str) -> GatewayError:
    return GatewayError(502, f"The model '{name}' broke off its answer: {detail}.", type="server_error", code="upstream_broken")
