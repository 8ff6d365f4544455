"""Which web pages may call the gateway from another origin (CORS), from LLAMADOCK_CORS_ORIGINS.

A chat UI served from another port, a playground page or a browser extension calls the gateway
with ``fetch``: the browser first sends a preflight (OPTIONS) and reads the answer's CORS headers.
Starlette's CORSMiddleware answers it; this only turns the setting into its options. The default
is Ollama's: pages on this machine (``http://localhost:*``, ``http://127.0.0.1:*``), any port.
Entries: ``*`` (any origin), an exact origin, or one with ``*`` for a port (``:*``) or a part of
the host (``https://*.example.com``). Empty: no CORS headers, as before.
"""

from __future__ import annotations

import re
from typing import Sequence

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from common.errors import ApiError

# What a page may send: any header it asks for (Starlette then names them back, which covers
# `Authorization` and `x-api-key` even with credentials; OpenAI's browser SDK sends a dozen
# `x-stainless-*` ones, so no fixed list would do).
ALLOW_HEADERS = ["*"]
# What a page may read of an answer besides the basic headers.
EXPOSE_HEADERS = ["x-llamadock-model", "retry-after", "content-type", "x-request-id"]


def origin_pattern(origin: str) -> str:
    """One entry as a regular expression: ``:*`` any port (or none), another ``*`` one host label."""
    pattern = re.escape(origin.rstrip("/"))
    pattern = re.sub(r":\\\*$", r"(:[0-9]+)?", pattern)
    return pattern.replace(r"\*", r"[^./:]+")


def cors_options(origins: Sequence[str]) -> dict | None:
    """CORSMiddleware's options for these origins, or None (CORS off)."""
    origins = [o.strip() for o in origins if o.strip()]
    if not origins:
        return None
    # allow_private_network: Chrome asks before a page on a public origin (a hosted chat UI) may
    # call an address on this machine or network, which is where the gateway is.
    options: dict = {"allow_methods": ["*"], "allow_headers": ALLOW_HEADERS, "expose_headers": EXPOSE_HEADERS,
                     "allow_credentials": True, "allow_private_network": True, "max_age": 600}
    if "*" in origins:
        return {**options, "allow_origins": ["*"]}
    exact = [o.rstrip("/") for o in origins if "*" not in o]
    wild = [origin_pattern(o) for o in origins if "*" in o]
    return {**options, "allow_origins": exact, "allow_origin_regex": "|".join(wild) or None}


class Cors(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in OpenAI's error format, as every other
    refusal here is (the browser refuses the page's call either way)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code != 400:
            return answer
        origin = request_headers.get("origin")
        error = ApiError(400, f"Cross-origin call from {origin} refused: {answer.body.decode()}. Allowed origins "
                         "are set by LLAMADOCK_CORS_ORIGINS.", code="cors_refused")
        response = error.response()
        if "vary" in answer.headers:  # caches must still tell one origin's answer from another's
            response.headers["vary"] = answer.headers["vary"]
        return response


def install_cors(app: FastAPI, origins: Sequence[str]) -> None:
    options = cors_options(origins)
    if options is not None:
        app.add_middleware(Cors, **options)
