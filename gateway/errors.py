"""The errors the gateway answers itself, one factory each so a refusal reads the same wherever it
is raised; all are common.errors.ApiError, in OpenAI's format."""

from __future__ import annotations

from common.errors import ApiError


def model_not_found(name: str, available: list[str]) -> ApiError:
    listed = ", ".join(available) if available else "none (no model is configured)"
    return ApiError(
        404,
        f"The model '{name}' does not exist. Available models: {listed}.",
        code="model_not_found",
        param="model",
    )


def model_not_ready(name: str, state: str, reason: str | None, retry_after_s: int) -> ApiError:
    why = f": {reason}" if reason else ""
    return ApiError(
        503,
        f"The model '{name}' is {state}{why}. Retry in {retry_after_s} s.",
        type="server_error",
        code="model_not_ready",
        headers={"Retry-After": str(retry_after_s)},
    )


def model_list_pending(why: str | None) -> ApiError:
    """The gateway has not heard the model list yet (it just started, the orchestrator is
    still coming up): a model it cannot find may well exist, so this is no 404."""
    return ApiError(
        503,
        "The gateway does not know the model list yet" + (f" ({why})" if why else "") + ". Retry in 2 s.",
        type="server_error",
        code="model_list_pending",
        headers={"Retry-After": "2"},
    )


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, code="invalid_request", param=param)


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def body_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is larger than the gateway's limit of {limit} bytes "
        "(LLAMADOCK_MAX_BODY_BYTES).",
        code="request_too_large",
    )


def upstream_unreachable(name: str, detail: str) -> ApiError:
    return ApiError(502, f"The model '{name}' did not accept the request: {detail}.", type="server_error", code="upstream_unreachable")


def upstream_timeout(name: str, detail: str) -> ApiError:
    return ApiError(504, f"The model '{name}' did not answer in time: {detail}.", type="server_error", code="upstream_timeout")


def upstream_broken(name: str, detail: str) -> ApiError:
    return ApiError(502, f"The model '{name}' broke off its answer: {detail}.", type="server_error", code="upstream_broken")
