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
    """Its server took no connection (gone a moment ago, or its node lost): 503 with Retry-After, as
    its route is read again meanwhile and a retry finds it back, or started elsewhere."""
    return ApiError(503, f"The model '{name}' did not accept the request: {detail}. Retry shortly.",
                    type="server_error", code="upstream_unreachable", headers={"Retry-After": "2"})


def model_lost(name: str, why: str) -> ApiError:
    """Its server went with its node (a swarm node down or cut off): 503, as it is placed again."""
    return ApiError(503, f"The model '{name}' stopped answering: {why}. It is being started again where it "
                    "fits; retry.", type="server_error", code="model_node_lost", headers={"Retry-After": "5"})


def upstream_timeout(name: str, detail: str) -> ApiError:
    return ApiError(504, f"The model '{name}' did not answer in time: {detail}.", type="server_error", code="upstream_timeout")


def upstream_broken(name: str, detail: str) -> ApiError:
    return ApiError(502, f"The model '{name}' broke off its answer: {detail}.", type="server_error", code="upstream_broken")


# ---- providers (OpenAI-compatible servers in the upstreams file) ----------------------------------

def provider_unavailable(provider: str, url: str, detail: str | None) -> ApiError:
    """The provider is down: 503 with Retry-After (it may come back), naming it."""
    return ApiError(503, f"The provider '{provider}' ({url}) is not reachable" + (f": {detail}" if detail else "")
                    + ". Retry in 5 s.", type="server_error", code="provider_unavailable",
                    headers={"Retry-After": "5"})


def provider_auth_failed(provider: str, detail: str) -> ApiError:
    """The provider refused the key the gateway holds for it: its 401 passes on, as its other 4xx
    do, but the message says whose key it was (the provider's, from the upstreams file's
    `api_key_env`; the client's own key to the gateway was accepted). The variable's name is said,
    never its value."""
    return ApiError(401, f"The provider '{provider}' refused the gateway's credentials for it: {detail}. "
                    "Your key to llamadock was accepted; the provider's key is set in its `api_key_env` variable.",
                    type="authentication_error", code="provider_auth_failed")


def provider_failed(provider: str, detail: str, code: str = "provider_error") -> ApiError:
    """The provider answered, but not with something a client can use (garbage, too big, its own 5xx)."""
    return ApiError(502, f"The provider '{provider}' gave no usable answer: {detail}.", type="server_error", code=code)


def provider_timeout(provider: str, detail: str) -> ApiError:
    return ApiError(504, f"The provider '{provider}' did not answer in time: {detail}.", type="server_error",
                    code="provider_timeout")


def provider_refusal(status) -> ApiError:
    """A request for a provider's model, or a `provider:` name, while its last discovery failed."""
    reason = status.reason or "not reached yet"
    if status.code == "provider_auth_failed":
        return provider_auth_failed(status.name, reason)
    if status.code in ("provider_garbage", "provider_error"):
        return provider_failed(status.name, reason, status.code)
    return provider_unavailable(status.name, status.url, reason)
