"""OpenAI's API, which llama-server speaks itself: requests and answers go through untouched.

Errors are OpenAI's JSON (``{"error": {"message", "type", "param", "code"}}``), in a stream its
``event: error``. A stream that waits for its model hears why in SSE comments (``: loading qwen3
12.3 s``); a chat stream whose client opts in (``X-Llamadock-Progress: reasoning``) also as
``reasoning_content`` deltas, which chat UIs show as the model's thinking.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from common.errors import ApiError

from .. import errors
from ..scheduling import progress
from ..auth import require_api_key
from ..proxy.exchange import relay_by_body
from .ollama_translation import OllamaRequestError, parse_keep_alive
from ..routes.table import RequestError, routed_body
from .schemas import EXAMPLES
from ..proxy.dialect import Asked, Client, UpstreamCall


class OpenAI:
    """``reasoning_progress``: its streams are chat completion chunks, so the wait can also be
    told as reasoning deltas (for the clients that ask)."""

    name = "openai"
    stream_type = b"text/event-stream"

    def __init__(self, reasoning_progress: bool = False) -> None:
        self.reasoning_progress = reasoning_progress

    def read(self, raw: bytes, request: Request) -> Asked:
        try:
            # A body without `model` reads as model "": the default model's, if one is set (exchange.resolve).
            fields = routed_body(raw, model_optional=True)  # the one parse of the body: model, stream, keep_alive
        except RequestError as exc:
            raise errors.bad_request(str(exc), exc.param) from None
        try:
            keep_alive = parse_keep_alive(fields.keep_alive)
        except OllamaRequestError as exc:
            raise errors.bad_request(str(exc), "keep_alive") from None
        reasoning = self.reasoning_progress and fields.stream and progress.wants_reasoning(
            dict(request.headers), dict(request.query_params))
        return Asked(model=fields.model, stream=fields.stream, keep_alive=keep_alive, reasoning_progress=reasoning)

    def candidates(self, model: str) -> tuple[str, ...]:
        return (model,)

    def request(self, asked: Asked, model: str, incoming: UpstreamCall) -> UpstreamCall:
        return incoming  # forwarded as it came: never parsed again, never re-encoded

    async def answer(self, asked: Asked, model: str, response, client: Client) -> None:
        await client.pass_through(response)

    def error_response(self, error: ApiError) -> Response:
        return error.response()

    def stream_error(self, error: ApiError) -> bytes:
        return error.sse_event()

    def tells_progress(self, asked: Asked) -> bool:
        return asked.stream

    def progress_event(self, asked: Asked, report: progress.Progress | None, waited_s: float, model: str,
                       stream_id: str) -> bytes:
        if report is None:  # admitted or refused this very moment: the wait ends next
            return progress.sse_comment(f"waiting for model {model} {waited_s:.1f} s")
        note = progress.sse_comment(report.text)
        if asked.reasoning_progress:
            note += progress.reasoning_chunk(progress.reasoning_text(report), model, f"chatcmpl-{stream_id}",
                                             int(time.time()))
        return note


CHAT = OpenAI(reasoning_progress=True)
PLAIN = OpenAI()

router = APIRouter(dependencies=[Depends(require_api_key)])


def body_doc(example_key: str, summary: str) -> dict:
    return {
        "summary": summary,
        "response_class": JSONResponse,
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object", "required": ["model"]},
                                                 "examples": EXAMPLES[example_key]}},
            }
        },
        "responses": {
            200: {"description": "The model's answer, as llama-server sent it (JSON, or SSE when `stream` is true)."},
            400: {"description": "Invalid JSON or no `model`."},
            401: {"description": "API keys are on and none or a wrong one was sent."},
            404: {"description": "No such model; the message lists the available ones."},
            413: {"description": "Body larger than LLAMADOCK_MAX_BODY_BYTES."},
            502: {"description": "The model's server refused the connection or broke off."},
            503: {"description": "The model is known but not ready, or the gateway has just started and does not "
                                 "know the model list yet (`Retry-After` says when to retry)."},
            504: {"description": "The model's server did not answer in time."},
        },
    }


@router.post("/v1/chat/completions", tags=["OpenAI"], **body_doc("chat", "Chat completion (stream or not)"))
async def chat_completions(request: Request):
    return await relay_by_body(request, CHAT, "chat/completions")


@router.post("/v1/completions", tags=["OpenAI"], **body_doc("completion", "Text completion"))
async def completions(request: Request):
    return await relay_by_body(request, PLAIN, "completions")


@router.post("/v1/embeddings", tags=["OpenAI"], **body_doc("embeddings", "Embeddings (the model's server needs --embeddings)"))
async def embeddings(request: Request):
    return await relay_by_body(request, PLAIN, "embeddings")


@router.post("/v1/responses", tags=["OpenAI"], **body_doc("responses", "OpenAI Responses API, where llama-server serves it"))
async def responses(request: Request):
    return await relay_by_body(request, PLAIN, "responses")
